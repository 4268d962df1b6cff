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
            let answer = app.get(&app.gp, &path).await;
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
    let summary = app.get(&app.gp, "Patient?gender=female&_total=none").await;
    assert!(summary.body.get("total").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_follows_next_links_and_refuses_tampered_ones() {
    let app = TestApp::spawn().await;
    five_patients(&app).await;
    let first = app.get(&app.gp, "Patient?gender=female,male&_count=2").await;
    assert_eq!(first.body["total"], 5);
    assert_eq!(first.body["entry"].as_array().unwrap().len(), 2);
    let all = app.search_all(&app.gp, "Patient?gender=female,male&_count=2").await;
    assert_eq!(all.len(), 5);
    let mut ids: Vec<&str> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no resource is repeated across pages");

    let next = first.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"].as_str().unwrap().to_owned();
    // widening the query behind a cursor is refused
    let widened = next.replace("gender=female%2Cmale", "gender=female%2Cmale%2Cother");
    assert_ne!(widened, next);
    app.get(&app.gp, &widened).await.assert_status(400).assert_outcome();
    let forged = next.replace("_cursor=", "_cursor=9");
    app.get(&app.gp, &forged).await.assert_status(400);
    // the self link repeats what was used
    let self_link = first.body["link"][0]["url"].as_str().unwrap();
    assert!(self_link.contains("_count=2") && self_link.contains("gender="), "{self_link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameters_are_listed_or_refused() {
    let app = TestApp::spawn().await;
    five_patients(&app).await;
    let lenient = app.get(&app.gp, "Patient?gender=male&shoe-size=9").await;
    lenient.assert_status(200);
    assert_eq!(lenient.body["total"], 2);
    let entries = lenient.body["entry"].as_array().unwrap();
    let outcome = entries.iter().find(|e| e["search"]["mode"] == "outcome").expect("an outcome entry lists the ignored parameter");
    assert!(outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("shoe-size"));
    assert!(!lenient.body["link"][0]["url"].as_str().unwrap().contains("shoe-size"), "self shows only what was used");
    let strict = app.send(&app.gp, Method::GET, "Patient?gender=male&shoe-size=9", None, &[("Prefer", "handling=strict")]).await;
    strict.assert_status(400).assert_outcome();
    app.get(&app.gp, "Patient?_count=lots").await.assert_status(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_search_takes_a_form() {
    let app = TestApp::spawn().await;
    five_patients(&app).await;
    let response = app
        .gp
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
