//! HL7 v2 → FHIR R4 transaction Bundle, one message at a time on one core:
//! `cargo bench -p gateway --bench hl7v2`. Targets: ADT^A01 ≤ 20 µs (50,000/s), ORU^R01 with
//! 10 OBX ≤ 50 µs (20,000/s). Each iteration parses, translates and serialises the Bundle to
//! JSON bytes, as the ingest path does.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::translate::hl7v2;

const ADT_A01: &str = "MSH|^~\\&|PAS|RRK|HIE|HIE|20240305101500||ADT^A01^ADT_A01|M000123|P|2.4\r\
EVN|A01|20240305101500\r\
PID|1||9449305552^^^NHS^NH~K100234^^^RRK^MR||TAYLOR^OLIVIA^JANE^^MS^^L||19800101|F|||1 High Street^Flat 2^Leeds^West Yorkshire^LS1 1AA^GBR^H||0113 496 0000^PRN^PH~^NET^Internet^olivia@example.org|07700 900123^WPN^CP||||||||A|||||||||01\r\
PD1|||Leeds Central Practice^^Y90001|G1234567^SMITH^JOHN^^^DR\r\
NK1|1|TAYLOR^JAMES|SPO^Spouse^HL70063|1 High Street^^Leeds^^LS1 1AA^GBR|0113 496 0001\r\
PV1|1|I|WARD4^A^1^RRK||||C123456^JONES^ANN^^^DR^^^GMC|C654321^PATEL^RAJ^^^DR^^^GMC||MED||||19|||C123456^JONES^ANN^^^DR^^^GMC||V100234^^^RRK^VN|||||||||||||||||||||||||20240305100000\r\
PV2|||R07.9^Chest pain, unspecified^I10";

fn oru_r01() -> String {
    let mut message = String::from(
        "MSH|^~\\&|LIMS|RRK|HIE|HIE|20240306090000||ORU^R01^ORU_R01|L000456|P|2.5.1\r\
         PID|1||9449305552^^^NHS^NH~K100234^^^RRK^MR||TAYLOR^OLIVIA||19800101|F\r\
         PV1|1|O|OPD||||C123456^JONES^ANN^^^DR^^^GMC\r\
         ORC|RE|PL77^ICE|FL88^LIMS\r\
         OBR|1|PL77^ICE|FL88^LIMS|FBC^Full blood count^L|||20240306080000|||||||||C123456^JONES^ANN||||||20240306085500|||F\r",
    );
    let analytes = [
        ("718-7", "Haemoglobin", "131", "g/L", "115-165"),
        ("6690-2", "White cell count", "6.2", "10*9/L", "4.0-11.0"),
        ("777-3", "Platelets", "250", "10*9/L", "150-450"),
        ("789-8", "Red cell count", "4.5", "10*12/L", "3.8-5.8"),
        ("4544-3", "Haematocrit", "0.40", "L/L", "0.37-0.47"),
        ("787-2", "MCV", "89", "fL", "80-100"),
        ("785-6", "MCH", "29", "pg", "27-32"),
        ("751-8", "Neutrophils", "3.9", "10*9/L", "2.0-7.5"),
        ("731-0", "Lymphocytes", "1.8", "10*9/L", "1.5-4.0"),
        ("742-7", "Monocytes", "0.4", "10*9/L", "0.2-0.8"),
    ];
    for (index, (code, name, value, unit, range)) in analytes.iter().enumerate() {
        message.push_str(&format!("OBX|{}|NM|{code}^{name}^LN||{value}|{unit}^^UCUM|{range}|N|||F|||20240306080000\r", index + 1));
    }
    message
}

fn translate(c: &mut Criterion) {
    let oru = oru_r01();
    let mut group = c.benchmark_group("hl7v2");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ADT^A01 to Bundle JSON", |b| {
        b.iter(|| serde_json::to_vec(&hl7v2::translate(std::hint::black_box(ADT_A01)).unwrap().bundle).unwrap())
    });
    group.bench_function("ORU^R01 (10 OBX) to Bundle JSON", |b| {
        b.iter(|| serde_json::to_vec(&hl7v2::translate(std::hint::black_box(&oru)).unwrap().bundle).unwrap())
    });
    group.bench_function("ADT^A01 parse only", |b| {
        b.iter(|| hl7v2::Message::parse(std::hint::black_box(ADT_A01)).unwrap().segments().len())
    });
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
