//! Validation cost per resource: `cargo bench -p conformance`.

use conformance::Validator;
use criterion::{Criterion, criterion_group, criterion_main};
use fhir_models::ResourceType;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/resources/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn validate(c: &mut Criterion) {
    let validator = Validator::embedded().unwrap();
    for name in ["Patient", "Observation", "Encounter", "DocumentReference", "Composition"] {
        let resource = fixture(name);
        let resource_type = ResourceType::parse(name).unwrap();
        // first use compiles the type's validator
        assert!(validator.validate(resource_type, &resource).is_acceptable());
        c.bench_function(&format!("validate {name}"), |b| b.iter(|| validator.validate(resource_type, std::hint::black_box(&resource))));
    }
}

criterion_group!(benches, validate);
criterion_main!(benches);
