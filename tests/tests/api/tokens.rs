//! Bearer tokens: who is asking, bound to the client certificate, with SMART scopes. Every
//! attack of issue 5 is refused with the right status and an OperationOutcome that does not
//! echo the token, and no refused write reaches the store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::auth::dev::SigningIssuer;
use gateway::configuration::IssuerKind;
use reqwest::Method;
use serde_json::{Value, json};
use tests::{TEST_AUDIENCE, TestApp, TestOptions, https_client, https_client_with_token};

const NHS_NUMBER: &str = "9449305552";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Clinician claims for the GP's organisation, valid now.
fn clinician_claims(app: &TestApp) -> Value {
    json!({
        "iss": app.issuers.clinician.issuer,
        "aud": TEST_AUDIENCE,
        "sub": "clinician-1",
        "iat": now(),
        "exp": now() + 600,
        "scope": "user/*.cruds",
        "requesting_organization": app.pki.gp.entry.ods.as_ref(),
        "requesting_practitioner_role": "R8000",
        "purpose_of_use": "TREAT",
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

/// RFC 8705 `x5t#S256` of a client's certificate: base64url of its SHA-256 (the registered
/// fingerprint is that hash in hex).
fn thumbprint(client: &tests::ClientFiles) -> String {
    let hex = client.entry.fingerprint.as_deref().unwrap();
    let bytes: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// GET `path` with the GP's certificate and `token`.
async fn get_as_gp(app: &TestApp, token: &str, path: &str) -> tests::Answer {
    let client = https_client(&app.pki, Some(&app.pki.gp));
    let authorization = format!("Bearer {token}");
    app.send(&client, Method::GET, path, None, &[("Authorization", authorization.as_str())]).await
}

#[track_caller]
fn assert_refused(answer: &tests::Answer, status: u16, token: &str, expected: &str) {
    answer.assert_status(status).assert_outcome();
    let diagnostics = answer.body["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(diagnostics.contains(expected), "expected {expected:?} in {diagnostics:?}");
    assert!(!token.is_empty() && !answer.text.contains(token), "the response echoes the token");
    assert!(!answer.text.contains(NHS_NUMBER), "the refusal leaks data: {}", answer.text);
    if status == 401 {
        assert!(answer.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "401 needs WWW-Authenticate: Bearer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_alone_no_longer_reads_patient_data() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    let certificate_only = https_client(&app.pki, Some(&app.pki.gp));
    for path in [format!("Patient/{id}"), "Patient".to_owned(), format!("Patient/{id}/_history")] {
        let answer = app.get(&certificate_only, &path).await;
        answer.assert_status(401).assert_outcome();
        assert!(answer.body["issue"][0]["diagnostics"].as_str().unwrap().contains("bearer token is required"));
    }
    let created = app.post(&certificate_only, "Patient", &tests::fixture("resources/Patient.json")).await;
    created.assert_status(401);
    assert_eq!(app.search_all(&app.trust, "Patient").await.len(), 1, "the refused create stored nothing");
    // with a token the same certificate reads
    app.get(&app.gp, &format!("Patient/{id}")).await.assert_status(200);
    // the CapabilityStatement stays open
    app.get(&certificate_only, "metadata").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_refused_with_401() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    let path = format!("Patient/{id}");
    let good = clinician_claims(&app);
    let header_none = encode_part(&json!({"alg": "none", "typ": "JWT"}));
    let unsigned = format!("{header_none}.{}.", encode_part(&good));

    // HS256 "signed" with the issuer's public key: the algorithm-confusion attack.
    let public_jwks = serde_json::to_vec(&app.issuers.clinician.jwks()).unwrap();
    let hs256_header =
        jsonwebtoken::Header { kid: Some(app.issuers.clinician.kid.clone()), ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256) };
    let confused = jsonwebtoken::encode(&hs256_header, &good, &jsonwebtoken::EncodingKey::from_secret(&public_jwks)).unwrap();

    let rogue = SigningIssuer::generate(app.issuers.clinician.issuer.clone(), IssuerKind::Clinician).unwrap();
    let unknown_kid = rogue.sign(&good);
    let stranger = SigningIssuer::generate("https://stranger.test", IssuerKind::Clinician).unwrap();
    let wrong_issuer = stranger.sign(&with(good.clone(), json!({"iss": "https://stranger.test"})));
    let sign = |claims: Value| app.issuers.clinician.sign(&claims);
    // a valid signature over claims whose signature part was cut off and replaced
    let mut tampered = sign(with(good.clone(), json!({"scope": "user/Patient.r"})));
    let (signed_part, _) = tampered.rsplit_once('.').unwrap();
    let other_signature = sign(good.clone()).rsplit_once('.').unwrap().1.to_owned();
    tampered = format!("{signed_part}.{other_signature}");
    let oversized = sign(with(good.clone(), json!({"padding": "x".repeat(9000)})));

    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-jwt".into(), "not a well-formed JWT"),
        ("three garbage parts", "abc.def.ghi".into(), "not a well-formed JWT"),
        ("alg none", unsigned, "unsigned"),
        ("HS256 with the public key", confused, "symmetric"),
        ("unknown kid", unknown_kid, "not in its issuer's key set"),
        ("unregistered issuer", wrong_issuer, "issuer is not registered"),
        ("bad signature", tampered, "signature does not verify"),
        ("wrong audience", sign(with(good.clone(), json!({"aud": "https://another-gateway.test/fhir/r4"}))), "not meant for this gateway"),
        ("expired", sign(with(good.clone(), json!({"exp": now() - 3600}))), "expired"),
        ("not yet valid", sign(with(good.clone(), json!({"nbf": now() + 3600}))), "not valid yet"),
        ("no exp", sign(with(good.clone(), json!({"exp": null}))), "no exp claim"),
        ("no organisation", sign(with(good.clone(), json!({"requesting_organization": null}))), "requesting_organization"),
        ("malformed scope", sign(with(good.clone(), json!({"scope": "user/Patient.xyz"}))), "scope claim is not valid"),
        ("oversized", oversized, "larger than"),
    ];
    for (name, token, expected) in cases {
        let answer = get_as_gp(&app, &token, &path).await;
        assert_eq!(answer.status.as_u16(), 401, "{name}: {}", answer.text);
        assert_refused(&answer, 401, &token, expected);
    }
    // A refused write stores nothing.
    let client = https_client_with_token(&app.pki, Some(&app.pki.gp), Some("not-a-jwt"));
    app.post(&client, "Patient", &tests::fixture("resources/Patient.json")).await.assert_status(401);
    assert_eq!(app.search_all(&app.trust, "Patient").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_tolerated_within_the_configured_leeway() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let just_expired = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"exp": now() - 20})));
    get_as_gp(&app, &just_expired, "Patient").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_to_the_organisation_and_certificate_they_were_issued_for() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    let path = format!("Patient/{id}");
    // The GP's token on the trust's certificate: organisation mismatch.
    let gp_token = app.issuers.clinician_token(app.pki.gp.entry.ods.as_ref(), "user/*.rs");
    let on_trust = https_client_with_token(&app.pki, Some(&app.pki.trust), Some(&gp_token));
    assert_refused(&app.get(&on_trust, &path).await, 403, &gp_token, "not the organisation the client certificate is registered to");
    // A certificate-bound token (RFC 8705 cnf.x5t#S256) replayed on another certificate.
    let bound = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"cnf": {"x5t#S256": thumbprint(&app.pki.trust)}})));
    assert_refused(&get_as_gp(&app, &bound, &path).await, 401, &bound, "bound to a different client certificate");
    let bound_here = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"cnf": {"x5t#S256": thumbprint(&app.pki.gp)}})));
    get_as_gp(&app, &bound_here, &path).await.assert_status(200);
    // Verified once and remembered, it is still checked against each connection's certificate.
    get_as_gp(&app, &bound_here, &path).await.assert_status(200);
    let replayed = https_client_with_token(&app.pki, Some(&app.pki.trust), Some(&bound_here));
    assert_refused(&app.get(&replayed, &path).await, 401, &bound_here, "bound to a different client certificate");
    // A clinician token without any client certificate.
    let no_certificate = https_client_with_token(&app.pki, None, Some(&gp_token));
    assert_refused(&app.get(&no_certificate, &path).await, 401, &gp_token, "registered client certificate");
    // A certificate the CA signed but nobody registered, with a good token.
    let unregistered = https_client_with_token(&app.pki, Some(&app.pki.unregistered), Some(&gp_token));
    app.get(&unregistered, &path).await.assert_status(403).assert_outcome();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_is_trusted_for_its_own_kind_only() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    // patient claims from the clinician issuer
    let mixed =
        app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"nhs_number": NHS_NUMBER, "identity_proofing_level": "P9"})));
    assert_refused(&get_as_gp(&app, &mixed, "Patient").await, 403, &mixed, "trusted for its own kind only");
    // clinician claims from the patient issuer
    let from_patient_issuer = app.issuers.patient.mint(
        TEST_AUDIENCE,
        "p",
        600,
        &json!({"scope": "patient/*.rs", "nhs_number": NHS_NUMBER, "identity_proofing_level": "P9", "requesting_organization": "Y90001"}),
    );
    let anonymous = https_client_with_token(&app.pki, None, Some(&from_patient_issuer));
    assert_refused(&app.get(&anonymous, "Patient").await, 403, &from_patient_issuer, "trusted for its own kind only");
    // system scopes in a clinician's token
    let system_scoped = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"scope": "system/*.cruds"})));
    assert_refused(&get_as_gp(&app, &system_scoped, "Patient").await, 403, &system_scoped, "only user/ scopes");
    // a patient token without nhs_number
    let anonymous_patient =
        app.issuers.patient.mint(TEST_AUDIENCE, "p", 600, &json!({"scope": "patient/*.rs", "identity_proofing_level": "P9"}));
    let client = https_client_with_token(&app.pki, None, Some(&anonymous_patient));
    assert_refused(&app.get(&client, "Patient").await, 401, &anonymous_patient, "nhs_number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_access_must_give_a_reason() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    let path = format!("Patient/{id}");
    let no_reason = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"purpose_of_use": "ETREAT"})));
    assert_refused(&get_as_gp(&app, &no_reason, &path).await, 403, &no_reason, "must give a reason");
    let blank_reason = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"purpose_of_use": "BTG", "reason": "  "})));
    assert_refused(&get_as_gp(&app, &blank_reason, &path).await, 403, &blank_reason, "must give a reason");
    let with_reason =
        app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"purpose_of_use": "ETREAT", "reason": "unconscious in ED"})));
    get_as_gp(&app, &with_reason, &path).await.assert_status(200);
    let unknown_purpose = app.issuers.clinician.sign(&with(clinician_claims(&app), json!({"purpose_of_use": "SNOOPING"})));
    assert_refused(&get_as_gp(&app, &unknown_purpose, &path).await, 401, &unknown_purpose, "purpose_of_use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_each_interaction_before_any_data_is_touched() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let patient = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut observation = tests::fixture("resources/Observation.json");
    observation["subject"] = json!({"reference": format!("Patient/{patient}")});
    let observation = app.create(&observation).await;
    let token = app.issuers.clinician_token(app.pki.gp.entry.ods.as_ref(), "user/Patient.rs");
    let reader = https_client_with_token(&app.pki, Some(&app.pki.gp), Some(&token));
    app.get(&reader, &format!("Patient/{patient}")).await.assert_status(200);
    app.get(&reader, "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552").await.assert_status(200);
    // outside the scopes: the same 403 whether or not the target exists
    let existing = app.get(&reader, &format!("Observation/{observation}")).await;
    let missing = app.get(&reader, "Observation/does-not-exist").await;
    assert_refused(&existing, 403, &token, "do not permit read on Observation");
    assert_eq!((existing.status, &existing.body), (missing.status, &missing.body), "a refusal must not reveal existence");
    let update = app.put(&reader, &format!("Patient/{patient}"), &tests::fixture("resources/Patient.json")).await;
    assert_refused(&update, 403, &token, "do not permit update on Patient");
    assert_refused(&app.delete(&reader, &format!("Patient/{patient}")).await, 403, &token, "do not permit delete");
    assert_refused(&app.post(&reader, "Patient", &tests::fixture("resources/Patient.json")).await, 403, &token, "do not permit create");
    // inside a transaction, each entry is checked
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": format!("Observation/{observation}")}}
    ]});
    app.post(&reader, "", &bundle).await.assert_status(403).assert_outcome();
    // nothing changed
    app.get(&app.gp, &format!("Observation/{observation}")).await.assert_status(200);
    let patient_now = app.get(&app.gp, &format!("Patient/{patient}")).await;
    assert_eq!(patient_now.body["meta"]["versionId"], "1");
    assert_eq!(app.search_all(&app.trust, "Patient").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_may_not_carry_scopes_the_client_is_not_registered_for() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    // The portal is registered for patient/*.rs; a patient token asking to write is refused.
    let greedy = app.issuers.patient.mint(
        TEST_AUDIENCE,
        "p",
        600,
        &json!({"scope": "patient/*.cruds", "nhs_number": NHS_NUMBER, "identity_proofing_level": "P9"}),
    );
    let portal = https_client_with_token(&app.pki, Some(&app.pki.portal), Some(&greedy));
    assert_refused(&app.get(&portal, "Observation").await, 403, &greedy, "wider than the client is registered for");
    // Within the registration it is fine.
    let modest = app.issuers.patient_token(NHS_NUMBER, "P9");
    let portal = https_client_with_token(&app.pki, Some(&app.pki.portal), Some(&modest));
    app.get(&portal, "Observation").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p9_patient_reads_their_own_record_and_nothing_else() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let mine = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut someone_else = tests::fixture("resources/Patient.json");
    someone_else["identifier"][0]["value"] = json!("9690937286");
    let theirs = app.create(&someone_else).await;
    let mut my_observation = tests::fixture("resources/Observation.json");
    my_observation["subject"] = json!({"reference": format!("Patient/{mine}")});
    let my_observation = app.create(&my_observation).await;
    let mut their_observation = tests::fixture("resources/Observation.json");
    their_observation["subject"] = json!({"reference": format!("Patient/{theirs}")});
    let their_observation = app.create(&their_observation).await;

    // No client certificate: the patient's token is the one way in.
    let token = app.issuers.patient_token(NHS_NUMBER, "P9");
    let patient = https_client_with_token(&app.pki, None, Some(&token));
    app.get(&patient, &format!("Patient/{mine}")).await.assert_status(200);
    app.get(&patient, &format!("Observation/{my_observation}")).await.assert_status(200);
    app.get(&patient, &format!("Observation/{my_observation}/_history/1")).await.assert_status(200);
    // Another patient's record is "not found", exactly like a missing one.
    let other = app.get(&patient, &format!("Observation/{their_observation}")).await;
    other.assert_status(404).assert_outcome();
    let missing = app.get(&patient, "Observation/no-such-observation").await;
    assert_eq!(other.status, missing.status);
    app.get(&patient, &format!("Patient/{theirs}")).await.assert_status(404);
    // Searches and their totals count only the patient's own record.
    let everything = app.get(&patient, "Observation?_total=accurate").await;
    everything.assert_status(200);
    assert_eq!(everything.body["total"], 1);
    assert_eq!(everything.body["entry"][0]["resource"]["id"], my_observation.as_str());
    let patients = app.get(&patient, "Patient?_total=accurate").await;
    assert_eq!(patients.body["total"], 1);
    assert!(!patients.text.contains("9690937286"));
    let compartment = app.get(&patient, &format!("Patient/{theirs}/Observation?_total=accurate")).await;
    assert_eq!(compartment.body["total"], 0);
    // Includes reach only what the patient may see: their own Patient, not another's.
    let included = app.get(&patient, "Observation?_include=Observation:subject&_revinclude=Provenance:target").await;
    included.assert_status(200);
    let ids: Vec<&str> = included.body["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, [my_observation.as_str(), mine.as_str()], "{}", included.text);
    let theirs_included = app.get(&patient, &format!("Patient?_id={theirs}&_revinclude=Observation:subject")).await;
    assert_eq!(theirs_included.body["entry"], serde_json::Value::Null, "{}", theirs_included.text);
    // Patients read; they do not write, delete or browse history.
    app.post(&patient, "Observation", &tests::fixture("resources/Observation.json")).await.assert_status(403);
    app.get(&patient, "Observation/_history").await.assert_status(403);

    // Identity proven only to P5: no record access.
    let p5 = app.issuers.patient_token(NHS_NUMBER, "P5");
    let p5_client = https_client_with_token(&app.pki, None, Some(&p5));
    assert_refused(&app.get(&p5_client, &format!("Patient/{mine}")).await, 403, &p5, "P9");
    // A patient with no record in the store sees nothing.
    let stranger = app.issuers.patient_token("9690938533", "P9");
    let stranger = https_client_with_token(&app.pki, None, Some(&stranger));
    let nothing = app.get(&stranger, "Observation?_total=accurate").await;
    assert_eq!(nothing.body["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_picked_up_without_a_restart() {
    let app = TestApp::spawn_with(TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(|settings| settings.auth.jwks_refresh_min_secs = 0)),
    })
    .await;
    let jwks_file = app.pki.dir.path().join("clinician-issuer.jwks.json");
    let rotated = SigningIssuer::generate(app.issuers.clinician.issuer.clone(), IssuerKind::Clinician).unwrap();
    let token = rotated.sign(&clinician_claims(&app));
    assert_refused(&get_as_gp(&app, &token, "Patient").await, 401, &token, "not in its issuer's key set");
    // The issuer publishes the new key (the old one withdrawn).
    std::fs::write(&jwks_file, serde_json::to_vec(&rotated.jwks()).unwrap()).unwrap();
    get_as_gp(&app, &token, "Patient").await.assert_status(200);
    let old = app.issuers.clinician.sign(&clinician_claims(&app));
    get_as_gp(&app, &old, "Patient").await.assert_status(401);
}

/// The store's operation counter (ops port `/metrics`).
async fn store_operations(app: &TestApp) -> u64 {
    let text = reqwest::get(format!("{}/metrics", app.ops)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("hie_store_operations_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .expect("hie_store_operations_total is exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_never_reach_the_store() {
    let app = TestApp::spawn_with(TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        // The read cache would answer reads without the store; count every request's store use.
        configure: Some(Box::new(|settings| settings.cache.read_cache_bytes = 0)),
    })
    .await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    let path = format!("Patient/{id}");
    let good = clinician_claims(&app);
    let sign = |claims: Value| app.issuers.clinician.sign(&claims);
    let attacks = vec![
        "not-a-jwt".to_owned(),
        format!("{}.{}.", encode_part(&json!({"alg": "none"})), encode_part(&good)),
        sign(with(good.clone(), json!({"aud": "https://elsewhere.test"}))),
        sign(with(good.clone(), json!({"exp": now() - 3600}))),
        sign(with(good.clone(), json!({"requesting_organization": "R9Z"}))),
        sign(with(good.clone(), json!({"purpose_of_use": "BTG"}))),
        sign(with(good.clone(), json!({"scope": "user/Observation.rs"}))),
        sign(with(good.clone(), json!({"purpose_of_use": "HRESCH"}))),
    ];
    let before = store_operations(&app).await;
    for token in &attacks {
        let answer = get_as_gp(&app, token, &path).await;
        assert!(matches!(answer.status.as_u16(), 401 | 403), "{}", answer.text);
        let client = https_client_with_token(&app.pki, Some(&app.pki.gp), Some(token));
        let answer = app.post(&client, "Patient", &tests::fixture("resources/Patient.json")).await;
        assert!(matches!(answer.status.as_u16(), 401 | 403), "{}", answer.text);
    }
    let certificate_only = https_client(&app.pki, Some(&app.pki.gp));
    app.get(&certificate_only, &path).await.assert_status(401);
    assert_eq!(store_operations(&app).await, before, "a refused request touched the store");
    // The counter does count: an accepted read uses the store.
    get_as_gp(&app, &sign(good), &path).await.assert_status(200);
    assert!(store_operations(&app).await > before);
}
