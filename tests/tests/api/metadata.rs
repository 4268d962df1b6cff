use serde_json::json;
use tests::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_open_and_lists_what_works() {
    let app = TestApp::spawn().await;
    let answer = app.get(&app.anonymous, "metadata").await;
    answer.assert_status(200);
    let statement = &answer.body;
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let rest = &statement["rest"][0];
    let resources = rest["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146, "every R4 resource type is served");
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let interactions: Vec<&str> = patient["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    for code in ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"] {
        assert!(interactions.contains(&code), "{code}");
    }
    let params: Vec<&str> = patient["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["identifier", "_id", "_lastUpdated", "name", "birthdate", "general-practitioner", "_sort", "_summary"] {
        assert!(params.contains(&name), "{name}");
    }
    let observation = resources.iter().find(|r| r["type"] == "Observation").unwrap();
    let params: Vec<&str> = observation["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(params.contains(&"code-value-quantity"));
    assert!(!params.contains(&"code-value-string"), "token$string composites are not indexed, so not advertised");
    assert!(observation["searchInclude"].as_array().unwrap().contains(&json!("Observation:subject")));
    assert!(patient["searchRevInclude"].as_array().unwrap().contains(&json!("Observation:subject")));
    let system: Vec<&str> = rest["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(system, vec!["transaction", "batch", "history-system"]);
}

/// Every search parameter the CapabilityStatement advertises for the types the product lives on
/// is accepted with `Prefer: handling=strict`: the statement lists exactly what works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_search_parameter_is_accepted() {
    let app = TestApp::spawn().await;
    let statement = app.get(&app.anonymous, "metadata").await.body;
    let mut checked = 0;
    for resource in statement["rest"][0]["resource"].as_array().unwrap() {
        let type_name = resource["type"].as_str().unwrap();
        if !crate::resource_types::PRODUCT_TYPES.contains(&type_name) {
            continue;
        }
        for param in resource["searchParam"].as_array().unwrap() {
            let name = param["name"].as_str().unwrap();
            let query = match name {
                "_count" => "_count=5".to_owned(),
                "_total" => "_total=accurate".to_owned(),
                "_sort" => "_sort=_id".to_owned(),
                "_summary" => "_summary=count".to_owned(),
                "_elements" => "_elements=id".to_owned(),
                "_id" => "_id=x".to_owned(),
                "_lastUpdated" => "_lastUpdated=gt2000".to_owned(),
                _ => format!("{name}:missing=true"),
            };
            let answer =
                app.send(&app.trust, reqwest::Method::GET, &format!("{type_name}?{query}"), None, &[("Prefer", "handling=strict")]).await;
            assert_eq!(answer.status, 200, "{type_name}?{query}: {}", answer.text);
            checked += 1;
        }
    }
    assert!(checked > 500, "checked {checked} parameters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_configuration_describes_the_registered_issuers_truthfully() {
    let app = TestApp::spawn().await;
    let answer = app.get(&app.anonymous, ".well-known/smart-configuration").await;
    answer.assert_status(200);
    assert!(answer.header("content-type").unwrap().starts_with("application/json"));
    let smart = &answer.body;
    assert_eq!(smart["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(smart["grant_types_supported"], json!(["authorization_code", "client_credentials"]));
    assert_eq!(smart["token_endpoint_auth_methods_supported"], json!(["private_key_jwt"]));
    assert_eq!(smart["issuer"], app.issuers.patient.issuer.as_str(), "the patient issuer signs people in");
    let capabilities = smart["capabilities"].as_array().unwrap();
    for capability in ["permission-v2", "permission-patient", "permission-user", "client-confidential-asymmetric"] {
        assert!(capabilities.contains(&json!(capability)), "{capability}");
    }
    let issuers: Vec<(&str, &str)> = smart["hie_gateway_issuers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|issuer| (issuer["issuer"].as_str().unwrap(), issuer["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        issuers,
        vec![
            (app.issuers.clinician.issuer.as_str(), "clinician"),
            (app.issuers.patient.issuer.as_str(), "patient"),
            (app.issuers.system.issuer.as_str(), "system")
        ]
    );
    // JWKS-file issuers have no endpoints to advertise, so none are invented.
    assert!(smart.get("authorization_endpoint").is_none());
    let statement = app.get(&app.anonymous, "metadata").await.body;
    let security = &statement["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    assert!(security["description"].as_str().unwrap().contains("bearer tokens"));
}
