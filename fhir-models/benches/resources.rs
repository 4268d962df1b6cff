//! Per-resource costs on the write path: `cargo bench -p fhir-models`.

use criterion::{Criterion, criterion_group, criterion_main};
use fhir_models::ResourceType;
use fhir_models::json::{StoredMeta, stamp_resource};
use fhir_models::search::extract;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../tests/fixtures/resources/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn resources(c: &mut Criterion) {
    for name in ["Patient", "Observation", "Encounter"] {
        let bytes = fixture(name);
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let resource_type = ResourceType::parse(name).unwrap();
        c.bench_function(&format!("parse {name}"), |b| b.iter(|| serde_json::from_slice::<Value>(std::hint::black_box(&bytes)).unwrap()));
        c.bench_function(&format!("extract index {name}"), |b| b.iter(|| extract(resource_type, "id-1", std::hint::black_box(&value))));
        let stamp = StoredMeta { id: "id-1", version_id: 3, last_updated: "2026-11-22T10:00:00.000000Z" };
        c.bench_function(&format!("stamp {name}"), |b| b.iter(|| stamp_resource(std::hint::black_box(&bytes), &stamp).unwrap()));
    }
}

criterion_group!(benches, resources);
criterion_main!(benches);
