//! The patient portal (`/portal/`) end to end: a real browser (Debian chromium driven by
//! playwright-core, `tests/tools/portal/journey.mjs`) signs a patient in at a real OpenID
//! provider (`oidc-provider`, authorization code + PKCE, the portal authenticating with
//! `private_key_jwt`), reads their record, reloads, signs out. With Redis, a second gateway
//! instance sharing the database and Redis honours the same session and its sign-out.

use std::path::Path;
use std::process::Command;

use gateway::auth::dev::SigningIssuer;
use gateway::configuration::{IssuerKind, Settings};
use serde_json::{Value, json};
use tests::{TEST_AUDIENCE, TestApp, TestOptions};

use super::openid_provider::{Provider, tools_dir};

const SESSION_COOKIE: &str = "__Host-hie-portal";

/// What the browser saw on one journey.
fn journey(tools: &Path, chromium: &Path, portal: &str, login: &str, extra: &[&str]) -> Value {
    let output = Command::new("node")
        .arg(tools.join("portal/journey.mjs"))
        .args(["--portal", portal, "--login", login, "--chromium"])
        .arg(chromium)
        .args(extra)
        .output()
        .expect("node runs the browser journey");
    assert!(output.status.success(), "journey failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("journey said {}", String::from_utf8_lossy(&output.stdout)))
}

fn text(snapshot: &Value) -> &str {
    snapshot["text"].as_str().unwrap_or_default()
}

/// A port for the gateway, known before it starts, so the provider can register its callback.
fn reserve_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct PortalSetup {
    provider: Provider,
    key_file: std::path::PathBuf,
}

fn configure_portal(settings: &mut Settings, setup_issuer: &str, entry: gateway::configuration::IssuerEntry, key_file: &Path) {
    settings.auth.issuers.insert(0, entry);
    settings.portal.issuer = Some(setup_issuer.to_owned());
    settings.portal.client_id = Some("hie-portal".into());
    settings.portal.private_key_file = Some(key_file.to_owned());
    if let Ok(redis) = std::env::var("HIE_TEST_REDIS_URL") {
        settings.redis.url = Some(redis);
    }
}

fn start_provider(tools: &Path, dir: &Path, port: u16) -> PortalSetup {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let key_file = dir.join("portal.key");
    std::fs::write(&key_file, &pem).unwrap();
    let key = SigningIssuer::from_pem("hie-portal", IssuerKind::Patient, pem.as_bytes()).unwrap();
    let provider = Provider::start(
        tools,
        dir,
        "portal",
        &json!({
            "audience": TEST_AUDIENCE,
            "clients": [{"client_id": "hie-portal", "type": "confidential", "jwks": key.jwks(),
                         "redirect_uris": [format!("https://127.0.0.1:{port}/portal/callback")],
                         "scope": "openid profile patient/*.rs patient/Consent.cud"}],
            "accounts": {
                "patient-1": {"nhs_number": "9449305552", "identity_proofing_level": "P9", "family_name": "Fixture"},
                "patient-p5": {"nhs_number": "9449305552", "identity_proofing_level": "P5", "family_name": "Fixture"}
            }
        }),
    );
    PortalSetup { provider, key_file }
}

/// A gateway on `port` whose portal signs people in at the test provider.
async fn spawn_with_portal(setup: &PortalSetup, port: u16) -> TestApp {
    let (issuer, entry, key_file) = (setup.provider.issuer.clone(), setup.provider.entry(IssuerKind::Patient), setup.key_file.clone());
    TestApp::spawn_with(TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(move |settings| {
            settings.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
            configure_portal(settings, &issuer, entry, &key_file);
        })),
    })
    .await
}

fn observation(patient: &str, words: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "subject": {"reference": format!("Patient/{patient}")},
           "code": {"text": words}, "effectiveDateTime": "2024-05-01", "valueQuantity": {"value": 131, "unit": "g/L"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_signs_in_through_the_portal_in_a_browser_reads_only_their_record_and_signs_out() {
    let Some(tools) = tools_dir() else { return };
    let Some(chromium) = tests::require_tool("HIE_TEST_CHROMIUM") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = reserve_port();
    let setup = start_provider(&tools, dir.path(), port);
    let app = spawn_with_portal(&setup, port).await;
    let mine = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut other = tests::fixture("resources/Patient.json");
    other["identifier"][0]["value"] = json!("9690937286");
    other["name"][0]["family"] = json!("Elsewhere");
    let theirs = app.create(&other).await;
    app.create(&observation(&mine, "Haemoglobin MY-RESULT")).await;
    app.create(&observation(&theirs, "Haemoglobin OTHER-RESULT")).await;
    let portal = format!("https://127.0.0.1:{port}/portal/");

    let seen = journey(&tools, &chromium, &portal, "patient-1", &["--wish-not-with", "r9z"]);
    // Not signed in: the sign-in page, with the portal's security headers.
    assert_eq!(seen["start"]["status"], 200);
    assert!(text(&seen["start"]).contains("Sign in"), "{}", seen["start"]);
    let headers = &seen["start"]["headers"];
    let policy = headers["content-security-policy"].as_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'") && policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["strict-transport-security"].as_str().unwrap().starts_with("max-age="));
    // Sign-in happened at the provider, not on a page of the gateway's.
    assert!(seen["provider_login_url"].as_str().unwrap().starts_with(&format!("{}/interaction/", setup.provider.issuer)));

    // Signed in: their own record, nobody else's.
    let record = &seen["record"];
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["url"], portal.as_str());
    let page = text(record);
    for expected in ["Fern Fixture", "944 930 5552", "1980-05-17", "Haemoglobin MY-RESULT", "131 g/L", "Sign out"] {
        assert!(page.contains(expected), "the record page lacks {expected:?}:\n{page}");
    }
    for withheld in ["OTHER-RESULT", "969 093 7286", "Elsewhere"] {
        assert!(!page.contains(withheld), "the record page shows another patient's {withheld:?}:\n{page}");
    }
    // The browser holds only an opaque session cookie, out of scripts' reach; the sign-in
    // cookie is gone once used.
    // (Cookies ignore ports, so the provider's own cookies on 127.0.0.1 are in the jar too.)
    let cookies: Vec<&Value> =
        seen["cookies"].as_array().unwrap().iter().filter(|c| c["name"].as_str().unwrap().starts_with("__Host-hie")).collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(*cookies[0], json!({"name": SESSION_COOKIE, "httpOnly": true, "secure": true, "sameSite": "Lax", "path": "/"}));
    assert!(!seen["session_cookie"].as_str().unwrap().contains('.'), "the cookie is not a token");
    assert!(text(&seen["reloaded"]).contains("Haemoglobin MY-RESULT"), "the session holds across a reload");
    // The patient's sharing choices, changed through the form and withdrawn again, and who has
    // looked at the record (the patient's own earlier page loads, at least).
    assert!(page.contains("Who your record is shared with") && page.contains("Who has looked at your record"), "{page}");
    let wished = text(&seen["wished"]);
    assert_eq!(seen["wished"]["status"], 200, "{}", seen["wished"]);
    assert!(wished.contains("Do not share with R9Z"), "the saved choice is listed:\n{wished}");
    assert!(wished.contains("Shown"), "the access log lists the earlier page loads:\n{wished}");
    let withdrawn = text(&seen["withdrawn"]);
    assert!(
        !withdrawn.contains("Do not share with R9Z") && withdrawn.contains("shared with the organisations caring for you"),
        "{withdrawn}"
    );
    // Signed out: the cookie is gone and the portal asks for sign-in again.
    assert!(text(&seen["signed_out"]).contains("You have signed out."), "{}", seen["signed_out"]);
    assert!(!seen["cookies_after_sign_out"].as_array().unwrap().iter().any(|name| name == SESSION_COOKIE));
    assert!(text(&seen["after"]).contains("Sign in"));
    assert!(!text(&seen["after"]).contains("944 930 5552"));
    assert_eq!(seen["csp_violations"], json!([]), "no page was blocked by its own Content-Security-Policy");

    // Identity proven to P5 only: signed in, but the record is refused, with the reason.
    let p5 = journey(&tools, &chromium, &portal, "patient-p5", &[]);
    assert_eq!(p5["record"]["status"], 403, "{}", p5["record"]);
    assert!(text(&p5["record"]).contains("P9"), "{}", p5["record"]);
    assert!(!text(&p5["record"]).contains("MY-RESULT"));

    // Cancelled at the provider: back at the portal, told so, not signed in.
    let cancelled = journey(&tools, &chromium, &portal, "patient-1", &["--cancel"]);
    assert_eq!(cancelled["cancelled"]["status"], 400, "{}", cancelled["cancelled"]);
    assert!(text(&cancelled["cancelled"]).contains("Sign-in was cancelled."));

    // With Redis: a second instance (same database, same Redis) honours the session a browser
    // started on the first, and a sign-out there ends it on the first too.
    if std::env::var("HIE_TEST_REDIS_URL").is_err() {
        return;
    }
    let kept = journey(&tools, &chromium, &portal, "patient-1", &["--keep"]);
    let cookie = format!("{SESSION_COOKIE}={}", kept["session_cookie"].as_str().unwrap());
    let (issuer, entry, key_file) = (setup.provider.issuer.clone(), setup.provider.entry(IssuerKind::Patient), setup.key_file.clone());
    let second = TestApp::spawn_with(TestOptions {
        backend: app.backend,
        database_url: Some(app.database_url.clone()),
        configure: Some(Box::new(move |settings| configure_portal(settings, &issuer, entry, &key_file))),
    })
    .await;
    let second_portal = second.base.replace("/fhir/r4", "/portal/");
    let browserless = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let page = browserless.get(&second_portal).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Haemoglobin MY-RESULT") && page.contains("944 930 5552"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    let signed_out =
        browserless.post(format!("{second_portal}logout")).header("cookie", &cookie).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(signed_out.status(), 200);
    let first = browserless.get(&portal).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(first.contains("Your session has ended") && !first.contains("MY-RESULT"), "{first}");
}

#[tokio::test]
async fn the_portal_refuses_forged_callbacks_cookies_and_cross_site_sign_outs() {
    // Not configured for sign-in: it says so instead of failing obscurely.
    let app = TestApp::spawn().await;
    let portal = app.base.replace("/fhir/r4", "/portal/");
    let browserless =
        reqwest::Client::builder().danger_accept_invalid_certs(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = browserless.get(format!("{portal}login")).send().await.unwrap();
    assert_eq!(login.status(), 404);
    assert!(login.text().await.unwrap().contains("no patient sign-in configured"));
    let bare = browserless.get(portal.trim_end_matches('/')).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/portal/");

    // A made-up session cookie is no session.
    let forged = browserless.get(&portal).header("cookie", format!("{SESSION_COOKIE}=made-up")).send().await.unwrap();
    assert_eq!(forged.status(), 200);
    assert!(forged.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let body = forged.text().await.unwrap();
    assert!(body.contains("Your session has ended") && body.contains("id=\"sign-in\""), "{body}");

    // A sign-out posted from another site is refused.
    let cross_site = browserless
        .post(format!("{portal}logout"))
        .header("origin", "https://evil.example")
        .header("cookie", format!("{SESSION_COOKIE}=made-up"))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);

    // Unknown portal pages are the portal's own 404, with its headers.
    let missing = browserless.get(format!("{portal}nothing-here")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-frame-options"], "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_the_browser_did_not_start_is_refused() {
    let Some(tools) = tools_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = reserve_port();
    let setup = start_provider(&tools, dir.path(), port);
    let app = spawn_with_portal(&setup, port).await;
    let portal = app.base.replace("/fhir/r4", "/portal/");
    let browserless =
        reqwest::Client::builder().danger_accept_invalid_certs(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Starting a sign-in sends the browser to the provider with PKCE S256, state and nonce.
    let login = browserless.get(format!("{portal}login")).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let location = reqwest::Url::parse(login.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&format!("{}/auth?", setup.provider.issuer)), "{location}");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["client_id"], "hie-portal");
    assert_eq!(query["redirect_uri"], format!("https://127.0.0.1:{port}/portal/callback"));
    assert!(query["state"].len() >= 16 && query["nonce"].len() >= 16);
    let sign_in_cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(sign_in_cookie.starts_with("__Host-hie-portal-sign-in="));

    // Without the cookie of the browser that started it: refused.
    let stray = browserless.get(format!("{portal}callback?code=x&state={}", query["state"])).send().await.unwrap();
    assert_eq!(stray.status(), 400);
    assert!(stray.text().await.unwrap().contains("not started in this browser"));
    // With the cookie but another state: refused, and the sign-in is spent.
    let wrong_state =
        browserless.get(format!("{portal}callback?code=x&state=not-the-state")).header("cookie", &sign_in_cookie).send().await.unwrap();
    assert_eq!(wrong_state.status(), 400);
    assert!(wrong_state.text().await.unwrap().contains("does not belong to the sign-in"));
    let replay = browserless
        .get(format!("{portal}callback?code=x&state={}", query["state"]))
        .header("cookie", &sign_in_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400, "a sign-in can be finished once only");
    assert!(replay.text().await.unwrap().contains("not started in this browser"));
}
