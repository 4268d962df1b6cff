//! Discharge summaries → FHIR R4 transaction Bundle, one document at a time on one core:
//! `cargo bench -p gateway --bench discharge`. Each iteration reads the document (CDA: XML DOM;
//! ITK3: JSON), builds the R4 document and its entries, and serialises the Bundle to JSON bytes,
//! as the ingest path does. The documents are the synthetic generator's first summary.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::synthetic::discharge::discharge_summaries;
use gateway::translate::{Format, translate_document};

fn translate(c: &mut Criterion) {
    let mut group = c.benchmark_group("discharge");
    group.throughput(Throughput::Elements(1));
    for (format, name) in [(Format::Cda, "CDA discharge summary to Bundle JSON"), (Format::Itk3, "ITK3 discharge summary to Bundle JSON")] {
        let (_, document) = discharge_summaries(format, &[0]).remove(0);
        group.bench_function(name, |b| {
            b.iter(|| {
                serde_json::to_vec(
                    &translate_document(format, std::hint::black_box(&document), time::OffsetDateTime::UNIX_EPOCH).unwrap().bundle,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
