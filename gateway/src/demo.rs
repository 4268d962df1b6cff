//! Demo data: a small, deterministic UK region — GP practices, trusts, clinicians and patients
//! with valid (test-range) NHS numbers, encounters, problems, results, allergies, medication and
//! discharge summaries — loaded through the same transaction path as any publisher's data.
//! Ids are fixed, so loading twice changes nothing.

use fhir_models::NhsNumber;
use fhir_models::system::{NHS_NUMBER, NHS_NUMBER_VERIFICATION_STATUS_EXTENSION, ODS_ORGANIZATION_CODE, SNOMED_CT};
use serde_json::{Value, json};

/// A tiny deterministic generator (SplitMix64), so demo data is the same on every machine.
pub(crate) struct Sequence(u64);

impl Sequence {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

pub struct Practice {
    pub ods: &'static str,
    pub name: &'static str,
}

pub const PRACTICES: [Practice; 3] = [
    Practice { ods: "Y90001", name: "Riverside Medical Practice" },
    Practice { ods: "Y90002", name: "Hillview Surgery" },
    Practice { ods: "Y90003", name: "Canal Street Health Centre" },
];

pub const TRUSTS: [Practice; 2] = [
    Practice { ods: "R9Z", name: "Northgate University Hospitals NHS Foundation Trust" },
    Practice { ods: "R8Y", name: "Southbank Community Healthcare NHS Trust" },
];

const GIVEN: [&str; 12] = ["Olivia", "Amelia", "Isla", "Ava", "Mohammed", "Noah", "Oliver", "George", "Priya", "Chen", "Siobhan", "Kwame"];
const FAMILY: [&str; 12] =
    ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Khan", "Patel", "Evans", "Thomas", "O'Brien", "Nowak"];
const TOWNS: [(&str, &str); 4] = [("Leeds", "LS1"), ("Bradford", "BD1"), ("Wakefield", "WF1"), ("Harrogate", "HG1")];
const PROBLEMS: [(&str, &str); 5] = [
    ("44054006", "Type 2 diabetes mellitus"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive lung disease"),
    ("49436004", "Atrial fibrillation"),
];

/// Who demo patient `index` is: the same person in every source format (the FHIR demo bundles,
/// the synthetic GP extracts), registered at practice `index % 3`.
pub struct Person {
    pub given: &'static str,
    pub family: &'static str,
    pub female: bool,
    /// `yyyy-MM-dd`.
    pub birth_date: String,
    pub birth_year: u64,
    pub practice: &'static Practice,
}

pub fn person(index: usize) -> Person {
    let mut sequence = Sequence::new(0x5045_5253_4f4e ^ index as u64);
    let given = *sequence.pick(&GIVEN);
    let family = *sequence.pick(&FAMILY);
    let birth_year = 1935 + sequence.below(70);
    let birth_date = format!("{birth_year}-{:02}-{:02}", 1 + sequence.below(12), 1 + sequence.below(28));
    Person { given, family, female: sequence.below(2) == 0, birth_date, birth_year, practice: &PRACTICES[index % PRACTICES.len()] }
}

/// The `n`th NHS number in the test range (999 000 0000 upwards) with a valid check digit.
pub fn test_nhs_number(n: u64) -> NhsNumber {
    let mut candidate = 999_000_000u64 + n * 7;
    loop {
        let text = format!("{candidate:09}");
        let mut digits = [0u8; 10];
        for (slot, byte) in digits.iter_mut().zip(text.bytes()) {
            *slot = byte - b'0';
        }
        if let Some(check) = NhsNumber::check_digit(&digits) {
            return NhsNumber::parse(&format!("{text}{check}")).expect("a computed check digit is valid");
        }
        candidate += 1;
    }
}

fn put(resource: Value) -> Value {
    let url = format!("{}/{}", resource["resourceType"].as_str().unwrap_or_default(), resource["id"].as_str().unwrap_or_default());
    json!({"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}})
}

fn snomed(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": SNOMED_CT, "code": code, "display": display}], "text": display})
}

fn organization(practice: &Practice, kind: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "id": format!("ods-{}", practice.ods),
        "identifier": [{"system": ODS_ORGANIZATION_CODE, "value": practice.ods}],
        "active": true,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov", "display": kind}]}],
        "name": practice.name,
    })
}

/// The reference data: practices, trusts and one clinician each.
pub fn reference_bundle() -> Value {
    let mut entries = Vec::new();
    for practice in &PRACTICES {
        entries.push(put(organization(practice, "GP practice")));
    }
    for trust in &TRUSTS {
        entries.push(put(organization(trust, "NHS trust")));
    }
    for (index, practice) in PRACTICES.iter().chain(TRUSTS.iter()).enumerate() {
        entries.push(put(json!({
            "resourceType": "Practitioner",
            "id": format!("demo-practitioner-{index}"),
            "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": format!("5550{:08}", index + 1)}],
            "name": [{"family": FAMILY[index % FAMILY.len()], "given": [GIVEN[(index + 5) % GIVEN.len()]], "prefix": ["Dr"]}],
        })));
        entries.push(put(json!({
            "resourceType": "PractitionerRole",
            "id": format!("demo-role-{index}"),
            "practitioner": {"reference": format!("Practitioner/demo-practitioner-{index}")},
            "organization": {"reference": format!("Organization/ods-{}", practice.ods)},
            "code": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode", "code": "R8000", "display": "Clinical Practitioner Access Role"}]}],
        })));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// One transaction Bundle per patient: the patient and their record.
pub fn patient_bundles(count: usize) -> Vec<Value> {
    let mut sequence = Sequence(2026);
    (0..count).map(|index| patient_bundle(index, &mut sequence)).collect()
}

fn patient_bundle(index: usize, sequence: &mut Sequence) -> Value {
    let patient_id = format!("demo-patient-{index}");
    let nhs_number = test_nhs_number(index as u64).to_string();
    let Person { given, family, female, birth_date, birth_year, practice } = person(index);
    let trust_index = index % TRUSTS.len();
    let trust = &TRUSTS[trust_index];
    let (town, district) = *sequence.pick(&TOWNS);
    let gender = if female { "female" } else { "male" };
    let subject = json!({"reference": format!("Patient/{patient_id}")});
    let admitted_day = 1 + sequence.below(20);
    let admitted = format!("2026-{:02}-{admitted_day:02}", 1 + sequence.below(9));
    let discharged = format!("{}-{:02}", &admitted[..7], admitted_day + 1 + sequence.below(6));
    let (problem_code, problem_display) = *sequence.pick(&PROBLEMS);
    let systolic = 110 + sequence.below(60);
    let diastolic = 65 + sequence.below(30);

    let mut entries = vec![
        put(json!({
            "resourceType": "Patient",
            "id": patient_id,
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
            "identifier": [{
                "extension": [{
                    "url": NHS_NUMBER_VERIFICATION_STATUS_EXTENSION,
                    "valueCodeableConcept": {"coding": [{
                        "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                        "code": "01", "display": "Number present and verified"}]}
                }],
                "system": NHS_NUMBER, "value": nhs_number
            }],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": gender,
            "birthDate": birth_date,
            "address": [{"use": "home", "line": [format!("{} Station Road", 1 + sequence.below(200))], "city": town,
                         "postalCode": format!("{district} {}AB", 1 + sequence.below(9))}],
            "generalPractitioner": [{"reference": format!("Organization/ods-{}", practice.ods)}],
            "managingOrganization": {"reference": format!("Organization/ods-{}", practice.ods)},
        })),
        put(json!({
            "resourceType": "Encounter",
            "id": format!("demo-encounter-{index}"),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"},
            "type": [snomed("183452005", "Emergency hospital admission")],
            "subject": subject,
            "period": {"start": format!("{admitted}T09:30:00Z"), "end": format!("{discharged}T16:00:00Z")},
            "serviceProvider": {"reference": format!("Organization/ods-{}", trust.ods)},
            "participant": [{"individual": {"reference": format!("Practitioner/demo-practitioner-{}", PRACTICES.len() + trust_index)}}],
        })),
        put(json!({
            "resourceType": "Condition",
            "id": format!("demo-condition-{index}"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
            "code": snomed(problem_code, problem_display),
            "subject": subject,
            "onsetDateTime": format!("{}", (birth_year + 18 + sequence.below(20)).min(2025)),
        })),
        put(json!({
            "resourceType": "Observation",
            "id": format!("demo-bp-{index}"),
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": snomed("75367002", "Blood pressure"),
            "subject": subject,
            "encounter": {"reference": format!("Encounter/demo-encounter-{index}")},
            "effectiveDateTime": format!("{admitted}T10:00:00Z"),
            "component": [
                {"code": snomed("271649006", "Systolic blood pressure"),
                 "valueQuantity": {"value": systolic, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": snomed("271650006", "Diastolic blood pressure"),
                 "valueQuantity": {"value": diastolic, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
            ],
        })),
        put(json!({
            "resourceType": "MedicationStatement",
            "id": format!("demo-medication-{index}"),
            "status": "active",
            "medicationCodeableConcept": snomed("325278007", "Metformin 500mg modified-release tablets"),
            "subject": subject,
            "effectivePeriod": {"start": admitted},
            "dosage": [{"text": "One tablet twice a day with food"}],
        })),
        put(json!({
            "resourceType": "DocumentReference",
            "id": format!("demo-discharge-{index}"),
            "status": "current",
            "type": snomed("373942005", "Discharge summary"),
            "subject": subject,
            "date": format!("{discharged}T16:30:00Z"),
            "custodian": {"reference": format!("Organization/ods-{}", trust.ods)},
            "author": [{"reference": format!("Organization/ods-{}", trust.ods)}],
            "content": [{"attachment": {
                "contentType": "text/plain",
                "data": base64_text(&format!("Discharge summary for {given} {family}. Admitted {admitted} with {problem_display}; discharged {discharged}.")),
                "title": "Discharge summary"}}],
            "context": {"encounter": [{"reference": format!("Encounter/demo-encounter-{index}")}]},
        })),
    ];
    if index.is_multiple_of(3) {
        entries.push(put(json!({
            "resourceType": "AllergyIntolerance",
            "id": format!("demo-allergy-{index}"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
            "code": snomed("91936005", "Allergy to penicillin"),
            "patient": subject,
        })));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn base64_text(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_nhs_numbers_are_valid_distinct_and_in_the_test_range() {
        let numbers: Vec<NhsNumber> = (0..200).map(test_nhs_number).collect();
        assert!(numbers.iter().all(NhsNumber::is_test_range));
        let mut unique = numbers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), numbers.len());
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(patient_bundles(3), patient_bundles(3));
    }

    #[test]
    fn encodes_base64() {
        assert_eq!(base64_text("Man"), "TWFu");
        assert_eq!(base64_text("Ma"), "TWE=");
        assert_eq!(base64_text("M"), "TQ==");
    }
}
