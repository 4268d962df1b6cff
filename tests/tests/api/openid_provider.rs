//! End to end against a real OpenID provider on loopback (npm `oidc-provider`, started from
//! `tests/tools/oidc/provider.mjs`): SMART backend services (`client_credentials` with
//! `private_key_jwt`), a patient's authorization code + PKCE login, and key rotation at the
//! provider while the gateway runs. The gateway finds the provider's keys by OpenID discovery.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use gateway::auth::dev::SigningIssuer;
use gateway::configuration::{IssuerEntry, IssuerKind};
use serde_json::{Value, json};
use tests::{TEST_AUDIENCE, TestApp, TestOptions, https_client_with_token};

/// A running provider; killed (stdin closed) when dropped.
pub(crate) struct Provider {
    pub(crate) issuer: String,
    child: Child,
}

impl Provider {
    pub(crate) fn start(tools: &Path, dir: &Path, name: &str, config: &Value) -> Self {
        let config_file = dir.join(format!("{name}.json"));
        std::fs::write(&config_file, serde_json::to_vec(config).unwrap()).unwrap();
        let mut child = Command::new("node")
            .arg(tools.join("oidc/provider.mjs"))
            .arg(&config_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts the OpenID provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the provider prints its issuer");
        let issuer = serde_json::from_str::<Value>(&line).unwrap_or_else(|_| panic!("provider said {line:?}"))["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        Self { issuer, child }
    }

    pub(crate) fn entry(&self, kind: IssuerKind) -> IssuerEntry {
        IssuerEntry {
            issuer: self.issuer.clone(),
            audience: TEST_AUDIENCE.into(),
            kind,
            jwks_file: None,
            jwks_url: None,
            discovery_url: Some(format!("{}/.well-known/openid-configuration", self.issuer)),
            ca_file: None,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SMART backend services: a client assertion signed with the client's own key.
async fn client_credentials(issuer: &str, client_id: &str, key: &SigningIssuer, scope: &str) -> Value {
    let http = reqwest::Client::new();
    let token_endpoint = format!("{issuer}/token");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let assertion = key.sign(&json!({
        "iss": client_id, "sub": client_id, "aud": token_endpoint,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 120,
    }));
    let response = http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "token endpoint: {}", response.text().await.unwrap());
    response.json().await.unwrap()
}

pub(crate) fn tools_dir() -> Option<PathBuf> {
    tests::require_tool("HIE_TEST_TOOLS_DIR")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_services_with_private_key_jwt_and_key_rotation_at_the_provider() {
    let Some(tools) = tools_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let client_key = SigningIssuer::generate("trust-publisher", IssuerKind::System).unwrap();
    let provider = Provider::start(
        &tools,
        dir.path(),
        "backend",
        &json!({
            "audience": TEST_AUDIENCE,
            "clients": [{"client_id": "trust-publisher", "type": "backend", "jwks": client_key.jwks(),
                         "scope": "system/*.cruds", "claims": {"requesting_organization": "R9Z"}}],
            "accounts": {}
        }),
    );
    let entry = provider.entry(IssuerKind::System);
    let app = TestApp::spawn_with(TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(move |settings| {
            settings.auth.issuers.push(entry);
            settings.auth.jwks_refresh_min_secs = 0;
        })),
    })
    .await;
    assert_eq!(app.pki.trust.entry.ods.as_ref(), "R9Z");

    let token = client_credentials(&provider.issuer, "trust-publisher", &client_key, "system/*.cruds").await;
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    let publisher = https_client_with_token(&app.pki, Some(&app.pki.trust), Some(&access_token));
    let created = app.post(&publisher, "Patient", &tests::fixture("resources/Patient.json")).await;
    created.assert_status(201);
    let id = created.body["id"].as_str().unwrap();
    app.get(&publisher, &format!("Patient/{id}")).await.assert_status(200);
    // The same token on the GP's certificate (another organisation) is refused.
    let elsewhere = https_client_with_token(&app.pki, Some(&app.pki.gp), Some(&access_token));
    app.get(&elsewhere, &format!("Patient/{id}")).await.assert_status(403).assert_outcome();

    // The provider rotates its signing key and withdraws the old one; the gateway, still
    // running, follows discovery to the new key on the first token that names it.
    let rotated: Value =
        reqwest::Client::new().post(format!("{}/test/rotate-keys", provider.issuer)).send().await.unwrap().json().await.unwrap();
    let new_token = client_credentials(&provider.issuer, "trust-publisher", &client_key, "system/*.cruds").await;
    let new_access_token = new_token["access_token"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&new_access_token).unwrap();
    assert_eq!(header.kid.as_deref(), rotated["kid"].as_str(), "new tokens are signed with the new key");
    let publisher = https_client_with_token(&app.pki, Some(&app.pki.trust), Some(&new_access_token));
    app.get(&publisher, &format!("Patient/{id}")).await.assert_status(200);
    // The withdrawn key no longer verifies anything.
    let stale = https_client_with_token(&app.pki, Some(&app.pki.trust), Some(&access_token));
    app.get(&stale, &format!("Patient/{id}")).await.assert_status(401).assert_outcome();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_signs_in_with_authorization_code_and_pkce_and_reads_their_own_record() {
    let Some(tools) = tools_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let redirect = "http://127.0.0.1:9/callback";
    let provider = Provider::start(
        &tools,
        dir.path(),
        "patients",
        &json!({
            "audience": TEST_AUDIENCE,
            "clients": [{"client_id": "patient-app", "type": "public", "redirect_uris": [redirect], "scope": "openid profile patient/*.rs"}],
            "accounts": {
                "patient-1": {"nhs_number": "9449305552", "identity_proofing_level": "P9", "family_name": "Smith"},
                "patient-p5": {"nhs_number": "9449305552", "identity_proofing_level": "P5", "family_name": "Smith"}
            }
        }),
    );
    let entry = provider.entry(IssuerKind::Patient);
    let app = TestApp::spawn_with(TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        // First, so that it is the issuer smart-configuration offers to sign people in with.
        configure: Some(Box::new(move |settings| settings.auth.issuers.insert(0, entry))),
    })
    .await;
    let smart = app.get(&app.anonymous, ".well-known/smart-configuration").await.body;
    assert_eq!(smart["issuer"], provider.issuer.as_str());
    assert_eq!(smart["authorization_endpoint"], format!("{}/auth", provider.issuer));
    assert_eq!(smart["token_endpoint"], format!("{}/token", provider.issuer));
    let statement = app.get(&app.anonymous, "metadata").await.body;
    let oauth = &statement["rest"][0]["security"]["extension"][0];
    assert_eq!(oauth["extension"][0], json!({"url": "authorize", "valueUri": format!("{}/auth", provider.issuer)}));
    let mine = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut other = tests::fixture("resources/Patient.json");
    other["identifier"][0]["value"] = json!("9690937286");
    let theirs = app.create(&other).await;

    let sign_in = |login: &str| {
        let output = Command::new("node")
            .arg(tools.join("oidc/authorize.mjs"))
            .args(["--issuer", &provider.issuer, "--client-id", "patient-app", "--redirect-uri", redirect])
            .args(["--login", login, "--scope", "openid profile patient/*.rs"])
            .output()
            .expect("node runs the login");
        assert!(output.status.success(), "login failed: {}", String::from_utf8_lossy(&output.stderr));
        let response: Value = serde_json::from_slice(&output.stdout).unwrap();
        response["access_token"].as_str().unwrap().to_owned()
    };
    let token = sign_in("patient-1");
    // No client certificate: a patient's token is the one way in without one.
    let patient = https_client_with_token(&app.pki, None, Some(&token));
    app.get(&patient, &format!("Patient/{mine}")).await.assert_status(200);
    app.get(&patient, &format!("Patient/{theirs}")).await.assert_status(404).assert_outcome();
    let search = app.get(&patient, "Patient?_total=accurate").await;
    assert_eq!(search.body["total"], 1);
    // Identity proven to P5 only: no record access.
    let p5 = https_client_with_token(&app.pki, None, Some(&sign_in("patient-p5")));
    app.get(&p5, &format!("Patient/{mine}")).await.assert_status(403).assert_outcome();
}
