//! The black-box test harness: a real gateway on port 0, over mutual TLS, against a fresh
//! SQLite file or a fresh PostgreSQL database.
//!
//! - `HIE_TEST_DATABASE=sqlite|postgres` picks the backend (default sqlite).
//! - `HIE_TEST_POSTGRES_URL` is the server to create test databases on
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own database,
//!   named with `HIE_TEST_DB_PREFIX` (default `hie_test`) so the test script can drop them.
//! - `TEST_LOG=1` shows the gateway's logs.

use std::path::PathBuf;
use std::str::FromStr;

use consent::ClientKind;
use fhir_models::OdsCode;
use gateway::auth::dev::SigningIssuer;
use gateway::certs::DevPki;
use gateway::configuration::{ClientEntry, IssuerEntry, IssuerKind, Settings};
use gateway::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_env() -> Self {
        match std::env::var("HIE_TEST_DATABASE").as_deref() {
            Ok("postgres") => Self::Postgres,
            Ok("sqlite") | Err(_) => Self::Sqlite,
            Ok(other) => panic!("HIE_TEST_DATABASE must be sqlite or postgres, not {other:?}"),
        }
    }
}

pub fn postgres_server_url() -> String {
    std::env::var("HIE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Create an empty PostgreSQL database for one test and return its URL.
pub async fn fresh_postgres_database() -> String {
    let server = postgres_server_url();
    let prefix = std::env::var("HIE_TEST_DB_PREFIX").unwrap_or_else(|_| "hie_test".into());
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut connection = sqlx::PgConnection::connect(&server).await.expect("PostgreSQL for the tests is reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut connection).await.expect("create a test database");
    connection.close().await.ok();
    let options = sqlx::postgres::PgConnectOptions::from_str(&server).expect("valid URL");
    let host = options.get_host();
    let port = options.get_port();
    let user = options.get_username();
    format!("postgres://{user}@{host}:{port}/{name}")
}

/// Certificate and key files of a test client.
#[derive(Clone)]
pub struct ClientFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub entry: ClientEntry,
}

/// A development PKI for one test: the gateway's CA and server certificate, registered clients,
/// a client the CA signed but nobody registered, and a client from another CA.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
    pub gp: ClientFiles,
    pub trust: ClientFiles,
    pub portal: ClientFiles,
    pub unregistered: ClientFiles,
    pub foreign: ClientFiles,
}

fn issue(pki: &DevPki, name: &str, ods: &str, kind: ClientKind) -> ClientFiles {
    let issued = pki.issue_client(name, &OdsCode::parse(ods).unwrap(), kind).unwrap();
    ClientFiles { certificate: issued.certificate, key: issued.private_key, entry: issued.entry }
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::new(dir.path().join("certs"));
        pki.init(&[], false).unwrap();
        // Names are unique per test: shared state (Redis rate-limit counters) is keyed by them.
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let gp = issue(&pki, &format!("test-gp-{suffix}"), "Y90001", ClientKind::GpSystem);
        let trust = issue(&pki, &format!("test-trust-{suffix}"), "R9Z", ClientKind::Trust);
        let portal = issue(&pki, &format!("test-portal-{suffix}"), "X26", ClientKind::Portal);
        let unregistered = issue(&pki, &format!("test-unregistered-{suffix}"), "Y90009", ClientKind::GpSystem);
        let other = DevPki::new(dir.path().join("other-ca"));
        other.init(&[], false).unwrap();
        let foreign = issue(&other, "test-foreign", "Y90001", ClientKind::GpSystem);
        Self { dir, pki, gp, trust, portal, unregistered, foreign }
    }

    pub fn registered(&self) -> Vec<ClientEntry> {
        vec![self.gp.entry.clone(), self.trust.entry.clone(), self.portal.entry.clone()]
    }

    /// Issue one more client certificate from the test CA. Register it by pushing its `entry`
    /// to `settings.clients` (in `TestOptions::configure`) and spawn with
    /// [`TestApp::spawn_with_pki`]. The name gets a unique suffix, as the built-in clients do.
    pub fn issue_client(&self, name: &str, ods: &str, kind: ClientKind) -> ClientFiles {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        issue(&self.pki, &format!("{name}-{suffix}"), ods, kind)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The audience test tokens are minted for (an issuer entry's `audience`).
pub const TEST_AUDIENCE: &str = "https://gateway.test/fhir/r4";

/// Token issuers for one test, one per kind, with their keys published as JWKS files.
pub struct TestIssuers {
    pub clinician: SigningIssuer,
    pub patient: SigningIssuer,
    pub system: SigningIssuer,
}

impl TestIssuers {
    pub fn new() -> Self {
        let make = |kind: IssuerKind| SigningIssuer::generate(format!("https://{}-issuer.test", kind.as_str()), kind).unwrap();
        Self { clinician: make(IssuerKind::Clinician), patient: make(IssuerKind::Patient), system: make(IssuerKind::System) }
    }

    /// Write the JWKS files into `dir` and return the `[[auth.issuers]]` entries.
    pub fn entries(&self, dir: &std::path::Path) -> Vec<IssuerEntry> {
        [&self.clinician, &self.patient, &self.system]
            .into_iter()
            .map(|issuer| {
                let file = dir.join(format!("{}-issuer.jwks.json", issuer.kind.as_str()));
                std::fs::write(&file, serde_json::to_vec(&issuer.jwks()).unwrap()).unwrap();
                IssuerEntry {
                    issuer: issuer.issuer.clone(),
                    audience: TEST_AUDIENCE.into(),
                    kind: issuer.kind,
                    jwks_file: Some(file),
                    jwks_url: None,
                    discovery_url: None,
                    ca_file: None,
                }
            })
            .collect()
    }

    /// A clinician's token for `ods`, with `scope`, for direct care.
    pub fn clinician_token(&self, ods: &str, scope: &str) -> String {
        self.clinician.mint(
            TEST_AUDIENCE,
            "clinician-1",
            7200,
            &serde_json::json!({"scope": scope, "requesting_organization": ods, "requesting_practitioner_role": "R8000", "purpose_of_use": "TREAT"}),
        )
    }

    pub fn system_token(&self, ods: &str, scope: &str) -> String {
        self.system.mint(TEST_AUDIENCE, "publisher-1", 7200, &serde_json::json!({"scope": scope, "requesting_organization": ods}))
    }

    pub fn patient_token(&self, nhs_number: &str, level: &str) -> String {
        self.patient.mint(
            TEST_AUDIENCE,
            &format!("nhs-login-{nhs_number}"),
            7200,
            &serde_json::json!({"scope": "openid patient/*.rs", "nhs_number": nhs_number, "identity_proofing_level": level}),
        )
    }
}

impl Default for TestIssuers {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTP client that trusts the test CA and presents `identity`, if any.
pub fn https_client(pki: &TestPki, identity: Option<&ClientFiles>) -> reqwest::Client {
    https_client_with_token(pki, identity, None)
}

/// As [`https_client`], sending `Authorization: Bearer <token>` on every request unless the
/// request sets its own.
pub fn https_client_with_token(pki: &TestPki, identity: Option<&ClientFiles>, token: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.pki.ca_certificate()).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .pool_idle_timeout(std::time::Duration::from_secs(20));
    if let Some(files) = identity {
        let mut pem = std::fs::read(&files.certificate).unwrap();
        pem.extend(std::fs::read(&files.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        builder = builder.default_headers(headers);
    }
    builder.build().unwrap()
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first issue's expression, for OperationOutcome bodies.
    pub fn expressions(&self) -> Vec<String> {
        self.body["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|issue| issue["expression"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    }

    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(self.status.as_u16(), expected, "unexpected status; body: {}", self.text);
        self
    }

    #[track_caller]
    pub fn assert_outcome(&self) -> &Self {
        assert_eq!(self.body["resourceType"], "OperationOutcome", "expected an OperationOutcome: {}", self.text);
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/fhir+json")),
            "content type: {:?}",
            self.header("content-type")
        );
        self
    }
}

/// Settings for a gateway on port 0 with the test PKI, its registered clients and the test
/// token issuers.
pub fn test_settings(pki: &TestPki, issuers: &TestIssuers, database_url: String) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.ops_listen = "127.0.0.1:0".parse().unwrap();
    settings.server.paging_secret = Some("a test paging secret that is long enough".into());
    settings.server.workers = Some(2);
    settings.server.shutdown_timeout_secs = 1;
    settings.tls.certificate = pki.pki.server_certificate();
    settings.tls.private_key = pki.pki.server_key();
    settings.tls.client_ca = pki.pki.ca_certificate();
    settings.tls.generate_dev_certificates = false;
    settings.database.url = database_url;
    settings.clients = pki.registered();
    settings.auth.dev_issuers = Some(false);
    settings.auth.issuers = issuers.entries(pki.dir.path());
    settings.mllp.listen = "127.0.0.1:0".parse().unwrap();
    // One key for every test gateway, as the instances of one deployment share theirs: tests
    // that start a second instance on the same database need no more set-up.
    let key_file = pki.dir.path().join("audit.key");
    if !key_file.exists() {
        std::fs::write(&key_file, format!("{}\n", "7e57".repeat(16))).unwrap();
    }
    settings.audit.key_file = key_file;
    settings
}

pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub ops: String,
    pub pki: TestPki,
    pub issuers: TestIssuers,
    /// The GP system's certificate with a clinician's token (`user/*.cruds`).
    pub gp: reqwest::Client,
    /// The trust's certificate with its publishing system's token (`system/*.cruds`).
    pub trust: reqwest::Client,
    /// The portal's certificate, no token.
    pub portal: reqwest::Client,
    pub anonymous: reqwest::Client,
    pub unregistered: reqwest::Client,
    pub database_url: String,
    /// `127.0.0.1:port` of the MLLP listener.
    pub mllp: String,
    /// The FHIR layer of the running gateway, for ingest paths that have no network listener
    /// (extract files).
    pub fhir: std::sync::Arc<gateway::fhir::FhirService>,
    /// The running gateway's metrics, read when the test ends (every request audited).
    metrics: std::sync::Arc<gateway::metrics::Metrics>,
    handle: actix_web_handle::Handle,
}

mod actix_web_handle {
    /// Stops the server when the test ends.
    pub struct Handle(pub Option<tokio::task::JoinHandle<std::io::Result<()>>>);
}

/// Adjusts the settings a test gateway starts with.
pub type Configure = Box<dyn FnOnce(&mut Settings)>;

pub struct TestOptions {
    pub backend: Backend,
    pub database_url: Option<String>,
    pub configure: Option<Configure>,
}

impl TestApp {
    /// A gateway on the backend `HIE_TEST_DATABASE` names.
    pub async fn spawn() -> Self {
        Self::spawn_with(TestOptions { backend: Backend::from_env(), database_url: None, configure: None }).await
    }

    pub async fn spawn_with(options: TestOptions) -> Self {
        Self::spawn_with_pki(TestPki::new(), options).await
    }

    /// As [`TestApp::spawn_with`], with a PKI the test made first (to issue more clients).
    pub async fn spawn_with_pki(pki: TestPki, options: TestOptions) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            gateway::telemetry::init(&gateway::configuration::LogSettings { format: "pretty".into(), level: "debug".into() });
        }
        let issuers = TestIssuers::new();
        let database_url = match (&options.database_url, options.backend) {
            (Some(url), _) => url.clone(),
            (None, Backend::Sqlite) => format!("sqlite://{}", pki.dir.path().join("hie.db").display()),
            (None, Backend::Postgres) => fresh_postgres_database().await,
        };
        let mut settings = test_settings(&pki, &issuers, database_url.clone());
        if let Some(configure) = options.configure {
            configure(&mut settings);
        }
        let application = Application::build(settings).await.expect("the gateway starts");
        let port = application.port();
        let ops_port = application.ops_port();
        let mllp = format!("127.0.0.1:{}", application.mllp_port().unwrap_or(0));
        let fhir = application.fhir();
        let metrics = application.metrics();
        let join = tokio::spawn(application.run_until_stopped());
        Self {
            backend: options.backend,
            base: format!("https://127.0.0.1:{port}/fhir/r4"),
            ops: format!("http://127.0.0.1:{ops_port}"),
            gp: https_client_with_token(&pki, Some(&pki.gp), Some(&issuers.clinician_token(pki.gp.entry.ods.as_ref(), "user/*.cruds"))),
            trust: https_client_with_token(
                &pki,
                Some(&pki.trust),
                Some(&issuers.system_token(pki.trust.entry.ods.as_ref(), "system/*.cruds")),
            ),
            portal: https_client(&pki, Some(&pki.portal)),
            anonymous: https_client(&pki, None),
            unregistered: https_client(&pki, Some(&pki.unregistered)),
            database_url,
            mllp,
            fhir,
            metrics,
            pki,
            issuers,
            handle: actix_web_handle::Handle(Some(join)),
        }
    }

    /// A connection of its own to the gateway's database (close it when done).
    pub async fn store(&self) -> gateway::store::SqlStore {
        gateway::store::SqlStore::connect(&gateway::store::sql_store::StoreOptions {
            url: &self.database_url,
            max_connections: Some(1),
            acquire_timeout: std::time::Duration::from_secs(5),
        })
        .await
        .unwrap()
    }

    /// What the gateway keeps in its dead-letter store, newest first.
    pub async fn rejected_inputs(&self) -> Vec<gateway::store::RejectedInput> {
        let store = self.store().await;
        let kept = store.rejected_inputs(1_000).await.unwrap();
        store.close().await;
        kept
    }

    /// The key the gateway's audit trail is written with (made when it started).
    pub fn audit_key(&self) -> gateway::audit::AuditKey {
        let settings = gateway::configuration::AuditSettings { key_file: self.pki.dir.path().join("audit.key"), generate_key: false };
        gateway::audit::AuditKey::load(&settings).expect("the gateway made its audit key")
    }

    /// The audit trail as FHIR AuditEvents, oldest first.
    pub async fn audit_events(&self) -> Vec<Value> {
        let store = self.store().await;
        let records = store.audit_records(0, 100_000).await.unwrap();
        store.close().await;
        records.iter().map(gateway::audit::AuditRecord::event).collect()
    }

    /// Run a statement against the test database directly (to tamper with what is stored, or
    /// to make it look as an older version left it).
    pub async fn execute_sql(&self, sql: &str) {
        use sqlx::Connection;
        if self.database_url.starts_with("postgres") {
            let mut connection = sqlx::PgConnection::connect(&self.database_url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut connection).await.unwrap();
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut connection).await.unwrap();
        }
    }

    /// What the gateway's `/metrics` says now.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_owned() } else { format!("{}/{}", self.base, path.trim_start_matches('/')) }
    }

    /// Send a request and read the answer.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.header("Content-Type", "application/fhir+json").body(serde_json::to_vec(body).unwrap());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        Answer { status, headers, body, text }
    }

    pub async fn get(&self, client: &reqwest::Client, path: &str) -> Answer {
        self.send(client, Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, client: &reqwest::Client, path: &str, body: &Value) -> Answer {
        self.send(client, Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, client: &reqwest::Client, path: &str, body: &Value) -> Answer {
        self.send(client, Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete(&self, client: &reqwest::Client, path: &str) -> Answer {
        self.send(client, Method::DELETE, path, None, &[]).await
    }

    /// Create a resource as the trust and return its id.
    pub async fn create(&self, resource: &Value) -> String {
        let type_name = resource["resourceType"].as_str().unwrap();
        let answer = self.post(&self.trust, type_name, resource).await;
        answer.assert_status(201);
        answer.body["id"].as_str().unwrap().to_owned()
    }

    /// Store the fixture patients' practice (`Organization/fixture-practice`, which
    /// `resources/Patient.json` names as its general practitioner) as the GP system's own
    /// organisation: the GP then has a legitimate relationship (registration) with them.
    pub async fn register_fixture_patients_with_the_gp(&self) {
        let practice = serde_json::json!({
            "resourceType": "Organization",
            "id": "fixture-practice",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": self.pki.gp.entry.ods.to_string()}],
            "name": "The fixture practice"
        });
        let answer = self.put(&self.trust, "Organization/fixture-practice", &practice).await;
        assert!(answer.status.is_success(), "the practice is stored: {}", answer.text);
    }

    /// What the store holds for a search (`Type?params`), read directly and unscoped: for tests
    /// that check what a feed or an extract filed, not what some requester may see. Up to 1,000
    /// resources, with the store's total.
    pub async fn stored(&self, path: &str) -> (i64, Vec<Value>) {
        let (type_name, query) = path.split_once('?').unwrap_or((path, ""));
        let resource_type = fhir_models::ResourceType::parse(type_name).expect("a resource type");
        let mut params = gateway::fhir::parse_query_string(query);
        params.push(("_count".into(), "1000".into()));
        params.push(("_total".into(), "accurate".into()));
        let mut limits = self.fhir.limits.clone();
        limits.max_count = limits.max_count.max(1000);
        let parsed = gateway::fhir::parse_search(resource_type, &params, &limits, gateway::fhir::Handling::Strict).expect("a valid search");
        let page = self.fhir.store.search(&parsed.query).await.expect("the store answers");
        let resources =
            page.matches.iter().map(|version| serde_json::from_slice(version.content.as_deref().unwrap_or(b"null")).unwrap()).collect();
        (page.total.unwrap_or_default(), resources)
    }

    /// Every entry's resource of a searchset, following `next` links.
    pub async fn search_all(&self, client: &reqwest::Client, path: &str) -> Vec<Value> {
        let mut resources = Vec::new();
        let mut next = Some(self.url(path));
        while let Some(url) = next {
            let answer = self.get(client, &url).await;
            answer.assert_status(200);
            for entry in answer.body["entry"].as_array().into_iter().flatten() {
                if entry["search"]["mode"] == "match" {
                    resources.push(entry["resource"].clone());
                }
            }
            next = answer.body["link"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|link| link["relation"] == "next")
                .and_then(|link| link["url"].as_str().map(str::to_owned));
        }
        resources
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(join) = self.handle.0.take() {
            join.abort();
        }
        // Every test checks, as it ends, that every request its gateway answered has its audit
        // record (or was refused because the record could not be written).
        if !std::thread::panicking() {
            let (answered, recorded, unrecorded) = audit_coverage(&self.metrics.encode());
            assert!(
                answered <= recorded + unrecorded,
                "{answered} requests answered, {recorded} audited, {unrecorded} refused for want of an audit record"
            );
        }
    }
}

/// From the metrics text: HTTP requests the API answered, those whose audit record was
/// committed, and those refused because it could not be. Both are counted before the request
/// is, so `answered <= recorded + unrecorded` holds at every instant.
pub fn audit_coverage(metrics: &str) -> (u64, u64, u64) {
    let sum = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (sum("hie_http_requests_total"), sum("hie_audit_recorded_requests_total"), sum("hie_audit_unrecorded_requests_total"))
}

/// Test fixtures in `tests/fixtures`.
pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(relative)
}

pub fn fixture(relative: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture_path(relative)).unwrap()).unwrap()
}

/// Whether the test must run its external part (tools installed by `scripts/test.sh`): in CI a
/// missing tool is a failure, on a developer's machine the test says what it skipped.
pub fn require_tool(variable: &str) -> Option<PathBuf> {
    match std::env::var(variable) {
        Ok(path) => Some(PathBuf::from(path)),
        Err(_) if std::env::var("CI").is_ok() => panic!("{variable} is not set; scripts/test.sh sets it up"),
        Err(_) => {
            eprintln!("skipped: {variable} is not set (run scripts/test.sh to install the test tools)");
            None
        }
    }
}

/// One validator's verdict on one resource.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Verdict {
    pub index: usize,
    pub ok: bool,
    #[serde(default)]
    pub issues: Vec<String>,
}

/// Run an NDJSON validator command (`tests/tools/validate-*.{mjs,py}`) over resources.
pub fn run_validator(program: &std::path::Path, script: &std::path::Path, resources: &[Value]) -> Vec<Verdict> {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {}: {e}", program.display()));
    let mut input = Vec::new();
    for resource in resources {
        serde_json::to_writer(&mut input, resource).unwrap();
        input.push(b'\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "{} {} failed", program.display(), script.display());
    let verdicts: Vec<Verdict> =
        String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(verdicts.len(), resources.len(), "one verdict per resource");
    verdicts
}

/// The independent validators: `(name, program, script)`.
pub fn independent_validators(tools: &std::path::Path) -> Vec<(&'static str, PathBuf, PathBuf)> {
    vec![
        ("medplum", PathBuf::from("node"), tools.join("validate-medplum.mjs")),
        ("fhir.resources", tools.join(".venv/bin/python"), tools.join("validate_fhir_resources.py")),
    ]
}

/// An HL7 v2 sender on one MLLP connection: sends a message, waits for its ACK.
pub struct MllpSender {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl MllpSender {
    pub async fn connect(address: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(address).await.expect("the MLLP listener accepts");
        stream.set_nodelay(true).unwrap();
        Self { stream, buffer: Vec::new() }
    }

    /// Send raw bytes as they are (for framing tests).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Send one message (segments joined with `\r`) and return its ACK's text.
    pub async fn send(&mut self, message: &str) -> String {
        self.write_raw(&gateway::mllp::frame(message.as_bytes())).await;
        self.read_ack().await.expect("an ACK for every message")
    }

    /// The next ACK, or `None` when the gateway closed the connection.
    pub async fn read_ack(&mut self) -> Option<String> {
        use tokio::io::AsyncReadExt;
        loop {
            if let gateway::mllp::Frame::Message { start, end, consumed } = gateway::mllp::find_frame(&self.buffer, 1 << 24) {
                let text = String::from_utf8(self.buffer[start..end].to_vec()).unwrap();
                self.buffer.drain(..consumed);
                return Some(text);
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(std::time::Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .expect("an ACK within 30 s")
                .ok()?;
            if read == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// A segment of an ACK (`MSA`, `ERR`), split into fields.
pub fn ack_segment(ack: &str, id: &str) -> Option<Vec<String>> {
    ack.split('\r').find(|segment| segment.starts_with(id)).map(|segment| segment.split('|').map(str::to_owned).collect())
}
