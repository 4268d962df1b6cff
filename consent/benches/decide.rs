//! What deciding one resource costs: `cargo bench -p consent --bench decide` (issue budget:
//! 2 µs per resource). The facts are ready, as the gateway has them once per response: the
//! resource's (read from its JSON) and its patient's (loaded once for the page).

use consent::access::Relationship;
use consent::directives::directive_rows;
use consent::relationships::RelationshipKind;
use consent::{AccessPolicy, PatientFacts, PurposeOfUse, ResourceFacts, Scope, Viewer, decide};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const NOW: i64 = 1_800_000_000_000_000;

fn patient() -> PatientFacts {
    let consent = json!({"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p1"},
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "provision": {"type": "permit", "provision": [
            {"type": "deny", "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                "reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RXB"}}}]},
            {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "MedicationStatement"}]}]}});
    PatientFacts {
        id: "p1".into(),
        relationships: vec![
            Relationship { kind: RelationshipKind::Encounter, orgs: vec!["RXA".into()], ends: Some(NOW - 400 * 86_400_000_000) },
            Relationship { kind: RelationshipKind::Referral, orgs: vec!["RXC".into()], ends: Some(NOW - 10 * 86_400_000_000) },
            Relationship { kind: RelationshipKind::Registered, orgs: vec!["A81001".into()], ends: None },
        ],
        directives: directive_rows(&consent).unwrap().into_iter().map(|row| (1, row)).collect(),
    }
}

fn observation(source: &str, labels: &[&str]) -> ResourceFacts {
    ResourceFacts {
        resource_type: "Observation".into(),
        id: "o1".into(),
        source: Some(source.into()),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        patients: vec!["p1".into()],
        ..Default::default()
    }
}

fn decisions(c: &mut Criterion) {
    let policy = AccessPolicy::default();
    let facts = patient();
    let lookup = |id: &str| (id == facts.id).then_some(&facts);
    let clinician =
        Scope::new(&policy, &[], Viewer::Clinician { org: "A81001".into(), purpose: PurposeOfUse::Treatment, claimed: vec![] }, NOW);
    let shared = observation("RXA", &[]);
    c.bench_function("decide: a clinician, a related patient with two wishes, permitted", |b| {
        b.iter(|| decide(std::hint::black_box(&clinician), std::hint::black_box(&shared), lookup))
    });
    let sensitive = observation("RXA", &["HIV"]);
    c.bench_function("decide: a clinician, a sensitive record, withheld", |b| {
        b.iter(|| decide(std::hint::black_box(&clinician), std::hint::black_box(&sensitive), lookup))
    });
    let unrelated =
        Scope::new(&policy, &[], Viewer::Clinician { org: "RXB".into(), purpose: PurposeOfUse::Treatment, claimed: vec![] }, NOW);
    c.bench_function("decide: a clinician the patient dissented from, withheld", |b| {
        b.iter(|| decide(std::hint::black_box(&unrelated), std::hint::black_box(&shared), lookup))
    });
    let own = Scope::new(&policy, &[], Viewer::Patient { own: vec!["p1".into()] }, NOW);
    c.bench_function("decide: the patient, their own record", |b| {
        b.iter(|| decide(std::hint::black_box(&own), std::hint::black_box(&shared), lookup))
    });
    let value = json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-11-01T10:00:00Z", "valueQuantity": {"value": 72, "unit": "/min"},
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}});
    let observation_type = fhir_models::ResourceType::parse("Observation").unwrap();
    c.bench_function("facts of a resource read from its JSON (once per resource, beside decide)", |b| {
        b.iter(|| ResourceFacts::from_resource(&policy, observation_type, "o1", Some("RXA"), std::hint::black_box(&value)))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
