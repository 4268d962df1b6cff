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
    assert!(params.contains(&"identifier") && params.contains(&"_id"));
    assert!(!params.contains(&"name"), "string search is not supported yet, so it is not advertised");
    let system: Vec<&str> = rest["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(system, vec!["transaction", "batch", "history-system"]);
}
