//! Search by `_id` and token parameters, paging, and unknown parameters.

use reqwest::Method;
use serde_json::json;
use tests::TestApp;

async fn five_patients(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for (index, number) in ["9912003888", "9690937286", "9690938533", "9449305552", "9434765919"].iter().enumerate() {
        let mut patient = tests::fixture("resources/Patient.json");
        patient["identifier"][0]["value"] = json!(number);
        patient["gender"] = json!(if index % 2 == 0 { "female" } else { "male" });
        ids.push(app.create(&patient).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_searches_follow_the_spec() {
    let app = TestApp::spawn().await;
    let ids = five_patients(&app).await;
    let total = |path: String| {
        let app = &app;
        async move {
            let answer = app.get(&app.trust, &path).await;
            answer.assert_status(200);
            answer.body["total"].as_i64().unwrap()
        }
    };
    assert_eq!(total("Patient?gender=female".into()).await, 3);
    assert_eq!(total("Patient?gender=female,male".into()).await, 5, "a comma is OR");
    assert_eq!(total("Patient?gender=female&gender=male".into()).await, 0, "a repeated parameter is AND");
    assert_eq!(total("Patient?gender:not=female".into()).await, 2);
    assert_eq!(total("Patient?identifier=9690937286".into()).await, 1, "a code alone matches any system");
    assert_eq!(total("Patient?identifier=|9690937286".into()).await, 0, "|code matches only a missing system");
    assert_eq!(total("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|".into()).await, 5, "system| matches any code");
    assert_eq!(total(format!("Patient?_id={},{}", ids[0], ids[1])).await, 2);
    assert_eq!(total(format!("Patient?_id={}&gender=male", ids[0])).await, 0);
    let summary = app.get(&app.trust, "Patient?gender=female&_total=none").await;
    assert!(summary.body.get("total").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_follows_next_links_and_refuses_tampered_ones() {
    let app = TestApp::spawn().await;
    five_patients(&app).await;
    let first = app.get(&app.trust, "Patient?gender=female,male&_count=2").await;
    assert_eq!(first.body["total"], 5);
    assert_eq!(first.body["entry"].as_array().unwrap().len(), 2);
    let all = app.search_all(&app.trust, "Patient?gender=female,male&_count=2").await;
    assert_eq!(all.len(), 5);
    let mut ids: Vec<&str> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no resource is repeated across pages");

    let next = first.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"].as_str().unwrap().to_owned();
    // widening the query behind a cursor is refused
    let widened = next.replace("gender=female%2Cmale", "gender=female%2Cmale%2Cother");
    assert_ne!(widened, next);
    app.get(&app.trust, &widened).await.assert_status(400).assert_outcome();
    let forged = next.replace("_cursor=", "_cursor=9");
    app.get(&app.trust, &forged).await.assert_status(400);
    // the self link repeats what was used
    let self_link = first.body["link"][0]["url"].as_str().unwrap();
    assert!(self_link.contains("_count=2") && self_link.contains("gender="), "{self_link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameters_are_listed_or_refused() {
    let app = TestApp::spawn().await;
    five_patients(&app).await;
    let lenient = app.get(&app.trust, "Patient?gender=male&shoe-size=9").await;
    lenient.assert_status(200);
    assert_eq!(lenient.body["total"], 2);
    let entries = lenient.body["entry"].as_array().unwrap();
    let outcome = entries.iter().find(|e| e["search"]["mode"] == "outcome").expect("an outcome entry lists the ignored parameter");
    assert!(outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("shoe-size"));
    assert!(!lenient.body["link"][0]["url"].as_str().unwrap().contains("shoe-size"), "self shows only what was used");
    let strict = app.send(&app.trust, Method::GET, "Patient?gender=male&shoe-size=9", None, &[("Prefer", "handling=strict")]).await;
    strict.assert_status(400).assert_outcome();
    app.get(&app.trust, "Patient?_count=lots").await.assert_status(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_search_takes_a_form() {
    let app = TestApp::spawn().await;
    five_patients(&app).await;
    let response = app
        .trust
        .post(app.url("Patient/_search"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9449305552")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bundle: serde_json::Value = response.json().await.unwrap();
    assert_eq!(bundle["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_and_elements_return_subsets_marked_as_such() {
    let app = TestApp::spawn().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Jane</div>"});
    patient["maritalStatus"] = json!({"text": "Married"});
    let id = app.create(&patient).await;
    let subsetted =
        |resource: &serde_json::Value| resource["meta"]["tag"].as_array().into_iter().flatten().any(|tag| tag["code"] == "SUBSETTED");
    let page = app.get(&app.trust, &format!("Patient?_id={id}&_summary=true")).await;
    let resource = &page.body["entry"][0]["resource"];
    assert!(resource.get("name").is_some() && resource.get("birthDate").is_some(), "{resource}");
    assert!(resource.get("maritalStatus").is_none() && resource.get("text").is_none(), "not summary elements: {resource}");
    assert!(subsetted(resource) && resource["id"] == id.as_str());

    let page = app.get(&app.trust, &format!("Patient?_id={id}&_elements=gender,maritalStatus")).await;
    let resource = page.body["entry"][0]["resource"].as_object().unwrap();
    let mut keys: Vec<&str> = resource.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["gender", "id", "maritalStatus", "meta", "resourceType"]);

    let page = app.get(&app.trust, &format!("Patient?_id={id}&_summary=data")).await;
    let resource = &page.body["entry"][0]["resource"];
    assert!(resource.get("text").is_none() && resource.get("maritalStatus").is_some() && subsetted(resource));
    let page = app.get(&app.trust, &format!("Patient?_id={id}&_summary=text")).await;
    let resource = &page.body["entry"][0]["resource"];
    assert!(resource.get("text").is_some() && resource.get("name").is_none());

    let page = app.get(&app.trust, &format!("Patient?_id={id}&_summary=false")).await;
    assert!(!subsetted(&page.body["entry"][0]["resource"]), "a whole resource is not marked");
    let count = app.get(&app.trust, "Patient?_summary=count").await;
    assert_eq!(count.body["total"], 1);
    assert!(count.body.get("entry").is_none());
}

/// Keyset paging: a `next` link continues after the last resource seen, whatever was added or
/// removed meanwhile: nothing is repeated and nothing still there is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_stays_correct_while_data_changes() {
    let app = TestApp::spawn().await;
    let family = |name: &str| {
        let mut patient = tests::fixture("resources/Patient.json");
        patient.as_object_mut().unwrap().remove("identifier");
        patient["name"] = json!([{"family": name}]);
        patient
    };
    let mut ids = std::collections::HashMap::new();
    for name in ["Bravo", "Charlie", "Delta", "Echo", "Foxtrot"] {
        ids.insert(name, app.create(&family(name)).await);
    }
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"]["name"][0]["family"].as_str().unwrap().to_owned())
            .collect()
    };
    let link = |page: &serde_json::Value, relation: &str| {
        page["link"].as_array().unwrap().iter().find(|l| l["relation"] == relation).map(|l| l["url"].as_str().unwrap().to_owned())
    };
    let first = app.get(&app.trust, "Patient?_sort=family&_count=2").await.body;
    assert_eq!(names(&first), ["Bravo", "Charlie"]);
    // Meanwhile: one added before the first page, one on the next page removed, one added at the end.
    app.create(&family("Alpha")).await;
    app.delete(&app.trust, &format!("Patient/{}", ids["Delta"])).await.assert_status(204);
    app.create(&family("Golf")).await;
    let second = app.get(&app.trust, &link(&first, "next").unwrap()).await.body;
    assert_eq!(names(&second), ["Echo", "Foxtrot"]);
    let third = app.get(&app.trust, &link(&second, "next").unwrap()).await.body;
    assert_eq!(names(&third), ["Golf"]);
    assert!(link(&third, "next").is_none());
    // Going back from the second page finds what now precedes it, Alpha included.
    let back = app.get(&app.trust, &link(&second, "previous").unwrap()).await.body;
    assert_eq!(names(&back), ["Bravo", "Charlie"]);
    let back = app.get(&app.trust, &link(&back, "previous").unwrap()).await.body;
    assert_eq!(names(&back), ["Alpha"]);
    assert!(link(&back, "previous").is_none());
}

/// On PostgreSQL the hot searches can be answered from indexes: with sequential scans priced
/// out, no plan falls back to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_searches_use_indexes_on_postgres() {
    let app = TestApp::spawn().await;
    if app.backend != tests::Backend::Postgres {
        return;
    }
    let store = app.store().await;
    let limits = gateway::configuration::Settings::default().limits;
    for (type_name, query) in [
        ("Patient", "identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552"),
        ("Patient", "family=smi&given=jo"),
        ("Patient", "name:exact=Smith"),
        ("Patient", "birthdate=ge1970&_sort=-birthdate"),
        ("DocumentReference", "patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552&type=http://snomed.info/sct|373942005"),
        ("Observation", "patient=Patient/p1&date=ge2024-01-01&_sort=-date&_count=50"),
        ("Observation", "code:text=heart&value-quantity=gt100|http://unitsofmeasure.org|/min"),
        ("Observation", "code-value-quantity=http://loinc.org|8480-6$gt140"),
        ("Patient", "_has:Observation:patient:code=8867-4"),
        ("ValueSet", "url:below=http://fixtures.example/ValueSet"),
        ("Encounter", "subject=Patient/p1&_lastUpdated=gt2024-01-01"),
    ] {
        let params: Vec<(String, String)> =
            query.split('&').map(|pair| pair.split_once('=').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap()).collect();
        let resource_type = fhir_models::ResourceType::parse(type_name).unwrap();
        let parsed = gateway::fhir::parse_search(resource_type, &params, &limits, gateway::fhir::Handling::Strict).unwrap();
        let plan = store.explain_page(&parsed.query).await.unwrap();
        assert!(!plan.contains("Seq Scan"), "{type_name}?{query} scans a table:\n{plan}");
    }
}
