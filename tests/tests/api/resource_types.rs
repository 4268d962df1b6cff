//! Each of the resource types the product lives on, through its whole lifecycle.

use reqwest::Method;
use serde_json::{Value, json};
use tests::TestApp;

/// Create, read back identical, search by `_id` and identifier, update, vread, history, delete.
async fn lifecycle(type_name: &str) {
    let app = TestApp::spawn().await;
    let resource = tests::fixture(&format!("resources/{type_name}.json"));

    let created = app.post(&app.trust, type_name, &resource).await;
    created.assert_status(201);
    let id = created.body["id"].as_str().unwrap().to_owned();

    let read = app.get(&app.trust, &format!("{type_name}/{id}")).await;
    read.assert_status(200);
    let mut content = read.body.clone();
    content.as_object_mut().unwrap().remove("id");
    content.as_object_mut().unwrap().remove("meta");
    assert_eq!(content, resource, "{type_name} reads back as written");

    let by_id = app.get(&app.trust, &format!("{type_name}?_id={id}")).await;
    assert_eq!(by_id.body["total"], 1, "{}", by_id.text);

    if let Some(identifier) = first_identifier(&resource) {
        let by_identifier = app.get(&app.trust, &format!("{type_name}?identifier={identifier}")).await;
        by_identifier.assert_status(200);
        assert_eq!(by_identifier.body["total"], 1, "{type_name}?identifier={identifier}: {}", by_identifier.text);
        assert_eq!(by_identifier.body["entry"][0]["resource"]["id"], id.as_str());
        let other = app.get(&app.trust, &format!("{type_name}?identifier=urn:other|nothing")).await;
        assert_eq!(other.body["total"], 0);
    }

    let mut changed = read.body.clone();
    changed["meta"] = json!({"tag": [{"system": "https://fixtures.example.nhs.uk/tags", "code": "reviewed"}]});
    let updated = app.send(&app.trust, Method::PUT, &format!("{type_name}/{id}"), Some(&changed), &[("If-Match", "W/\"1\"")]).await;
    updated.assert_status(200);
    assert_eq!(updated.body["meta"]["versionId"], "2");
    assert_eq!(updated.body["meta"]["tag"][0]["code"], "reviewed");
    let tagged = app.get(&app.trust, &format!("{type_name}?_tag=https://fixtures.example.nhs.uk/tags|reviewed")).await;
    assert_eq!(tagged.body["total"], 1, "{}", tagged.text);

    let v1 = app.get(&app.trust, &format!("{type_name}/{id}/_history/1")).await;
    v1.assert_status(200);
    assert!(v1.body["meta"].get("tag").is_none());
    let history = app.get(&app.trust, &format!("{type_name}/{id}/_history")).await;
    assert_eq!(history.body["entry"].as_array().unwrap().len(), 2);

    app.delete(&app.trust, &format!("{type_name}/{id}")).await.assert_status(204);
    app.get(&app.trust, &format!("{type_name}/{id}")).await.assert_status(410);
    assert_eq!(app.get(&app.trust, &format!("{type_name}?_id={id}")).await.body["total"], 0);
}

fn first_identifier(resource: &Value) -> Option<String> {
    let identifier = match &resource["identifier"] {
        Value::Array(items) => items.first()?.clone(),
        Value::Object(_) => resource["identifier"].clone(),
        _ => return None,
    };
    Some(format!("{}|{}", identifier["system"].as_str()?, identifier["value"].as_str()?))
}

macro_rules! lifecycle_tests {
    ($($name:ident => $type_name:literal,)*) => {
        /// The resource types the product lives on.
        pub const PRODUCT_TYPES: &[&str] = &[$($type_name),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                lifecycle($type_name).await;
            }
        )*
    };
}

lifecycle_tests! {
    patient_lifecycle => "Patient",
    practitioner_lifecycle => "Practitioner",
    practitioner_role_lifecycle => "PractitionerRole",
    organization_lifecycle => "Organization",
    location_lifecycle => "Location",
    encounter_lifecycle => "Encounter",
    episode_of_care_lifecycle => "EpisodeOfCare",
    condition_lifecycle => "Condition",
    allergy_intolerance_lifecycle => "AllergyIntolerance",
    medication_statement_lifecycle => "MedicationStatement",
    medication_request_lifecycle => "MedicationRequest",
    medication_lifecycle => "Medication",
    immunization_lifecycle => "Immunization",
    observation_lifecycle => "Observation",
    diagnostic_report_lifecycle => "DiagnosticReport",
    procedure_lifecycle => "Procedure",
    document_reference_lifecycle => "DocumentReference",
    composition_lifecycle => "Composition",
    binary_lifecycle => "Binary",
    consent_lifecycle => "Consent",
    audit_event_lifecycle => "AuditEvent",
    provenance_lifecycle => "Provenance",
    care_plan_lifecycle => "CarePlan",
    service_request_lifecycle => "ServiceRequest",
    flag_lifecycle => "Flag",
    list_lifecycle => "List",
}
