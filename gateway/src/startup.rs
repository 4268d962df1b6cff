//! Wiring: the store, the FHIR service, the API server (HTTPS, mutual TLS) and the ops server
//! (plain HTTP on a private port). Tests build an [`Application`] on port 0.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Compress, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;

use crate::clients::ClientRegistry;
use crate::configuration::Settings;
use crate::fhir::{FhirService, PagingKey};
use crate::http::{self, AppState};
use crate::metrics::{Metrics, observe};
use crate::rate_limit::RateLimiter;
use crate::store::{CachedStore, FhirStore, ReadCache, SqlStore, sql_store::StoreOptions};

pub struct Application {
    port: u16,
    ops_port: u16,
    base_url: String,
    server: Server,
    ops_server: Server,
    store: Arc<SqlStore>,
    state: web::Data<AppState>,
    mllp: Option<(std::net::TcpListener, Arc<crate::mllp::MllpService>)>,
    metrics: Arc<Metrics>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        rustls::crypto::ring::default_provider().install_default().ok();
        crate::auth::install_crypto();
        let store = Arc::new(
            SqlStore::connect(&StoreOptions {
                url: &settings.database.url,
                max_connections: settings.database.max_connections,
                acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
            })
            .await?,
        );
        if settings.database.migrate_on_start {
            store.migrate().await?;
        }
        let clients = ClientRegistry::new(&settings.clients)?;
        if clients.is_empty() {
            tracing::warn!("no API clients are registered: only /metadata will answer; see `hie-gateway certs client`");
        }
        // Each type's validator compiles on its first use (a few milliseconds, about 1 MB).
        let validator = Arc::new(conformance::Validator::embedded().context("the embedded FHIR schema does not load")?);

        let listener =
            TcpListener::bind(settings.server.listen).with_context(|| format!("failed to listen on {}", settings.server.listen))?;
        let port = listener.local_addr()?.port();
        let ops_listener =
            TcpListener::bind(settings.server.ops_listen).with_context(|| format!("failed to listen on {}", settings.server.ops_listen))?;
        let ops_port = ops_listener.local_addr()?.port();
        let base_url = settings.fhir_base_url(listener.local_addr()?);

        let paging_secret = paging_secret(&settings)?;
        let cache = (settings.cache.read_cache_bytes > 0).then(|| Arc::new(ReadCache::new(settings.cache.read_cache_bytes)));
        store.start_background_tasks(cache.clone());
        let fhir_store: crate::store::SharedStore = match cache {
            Some(cache) => Arc::new(CachedStore::new(store.clone(), cache)),
            None => store.clone(),
        };
        let fhir = FhirService {
            store: fhir_store,
            validator,
            base_url: base_url.clone(),
            limits: settings.limits.clone(),
            paging: PagingKey::new(&paging_secret),
            policy: settings.policy(),
            resource_facts: Default::default(),
        };
        let authenticator = Arc::new(authenticator(&settings, &base_url)?);
        authenticator.load_keys().await;
        let capability_statement = crate::fhir::capability_statement(&fhir, &authenticator.describe());
        let rate_limiter = Arc::new(RateLimiter::new(settings.limits.requests_per_minute_per_client, None));
        let fhir = Arc::new(fhir);
        let ingest = Arc::new(crate::ingest::Hl7v2Ingest::new(fhir.clone(), store.clone(), &settings.mllp, "http"));
        let sign_in = crate::portal::SignIn::from_settings(&settings.portal, &settings.auth.issuers, &base_url)?;
        let audit_key = crate::audit::AuditKey::load(&settings.audit)?;
        crate::audit::check_key(&store, &audit_key, &settings.audit.key_file).await?;
        let audit = crate::audit::AuditTrail::start(store.clone(), audit_key);
        let portal = Arc::new(crate::portal::Portal::new(sign_in, Duration::from_secs(settings.portal.session_idle_minutes.max(1) * 60)));
        // Rate limits and portal sessions are shared through Redis when it is configured.
        if let Some(url) = &settings.redis.url {
            let (limiter, portal) = (rate_limiter.clone(), portal.clone());
            crate::rate_limit::attach_redis(url.clone(), move |connection| {
                limiter.set_redis(connection.clone());
                portal.sessions.set_redis(connection);
            })
            .await?;
        }
        let content_security_policy = portal.content_security_policy().to_owned();
        let state = web::Data::new(AppState {
            fhir: fhir.clone(),
            clients,
            authenticator,
            rate_limiter,
            capability_statement,
            ingest,
            portal,
            audit,
            code_maps: std::sync::Arc::new(settings.translation.code_maps()?),
        });
        let app_state = state.clone();
        let mut metrics = Metrics::new();
        metrics.register_store_operations(store.operations_counter());
        metrics.register_audit(&app_state.audit.metrics);
        let mllp = if settings.mllp.enabled {
            let listener = TcpListener::bind(settings.mllp.listen)
                .with_context(|| format!("failed to listen for MLLP on {}", settings.mllp.listen))?;
            listener.set_nonblocking(true)?;
            let service = Arc::new(crate::mllp::MllpService {
                ingest: crate::ingest::Hl7v2Ingest::new(fhir.clone(), store.clone(), &settings.mllp, "mllp"),
                settings: settings.mllp.clone(),
                metrics: Default::default(),
                audit: app_state.audit.clone(),
            });
            metrics.register_mllp(&service.metrics);
            Some((listener, service))
        } else {
            None
        };
        let metrics = Arc::new(metrics);

        let tls = crate::tls::server_config(&settings.tls)?;
        let workers = settings.server.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let api_metrics = metrics.clone();
        let server = HttpServer::new(move || {
            let metrics = api_metrics.clone();
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(crate::rate_limit::limit))
                // Outside the rate limit, so a request it refuses is recorded too.
                .wrap(from_fn(crate::audit::audit))
                .wrap(Compress::default())
                .wrap(from_fn(move |request, next| observe(metrics.clone(), request, next)))
                .configure(http::configure)
                .configure(|config| crate::portal::configure(config, &content_security_policy))
                .default_service(web::to(http::not_found))
        })
        .on_connect(crate::tls::record_peer_certificate)
        // Longer than clients' pool idle timeouts, so a client never reuses a connection the
        // server is closing.
        .keep_alive(Duration::from_secs(75))
        // Answers leave at once, not after Nagle's algorithm waits for an ACK (40 ms stalls).
        .tcp_nodelay(true)
        .client_request_timeout(Duration::from_secs(30))
        .workers(workers)
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .listen_rustls_0_23(listener, tls)?
        .run();

        let ops_store = store.clone();
        let ops_metrics = metrics.clone();
        let ops_server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(OpsState { store: ops_store.clone(), metrics: ops_metrics.clone() }))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_text))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(ops_listener)?
        .run();

        let mllp_port = mllp.as_ref().and_then(|(listener, _)| listener.local_addr().ok()).map(|a| a.port());
        tracing::info!(port, ops_port, mllp_port, backend = store.backend(), base_url = %base_url, "gateway listening");
        Ok(Self { port, ops_port, base_url, server, ops_server, store, state: app_state, mllp, metrics })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// The MLLP listener's port, when it is enabled.
    pub fn mllp_port(&self) -> Option<u16> {
        self.mllp.as_ref().and_then(|(listener, _)| listener.local_addr().ok()).map(|address| address.port())
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The FHIR layer over this application's store (what every ingest path files through).
    pub fn fhir(&self) -> Arc<FhirService> {
        self.state.fhir.clone()
    }

    /// What `/metrics` on the ops port exports.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until the API server stops (a signal, or its handle), then stop the ops server and
    /// close the database pools.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let ops_handle = self.ops_server.handle();
        let ops = tokio::spawn(self.ops_server);
        let mllp = match self.mllp {
            Some((listener, service)) => Some(tokio::spawn(crate::mllp::serve(tokio::net::TcpListener::from_std(listener)?, service))),
            None => None,
        };
        let result = self.server.await;
        // A message cut off here is neither committed nor acknowledged: its sender sends it again.
        if let Some(mllp) = mllp {
            mllp.abort();
        }
        ops_handle.stop(true).await;
        let _ = ops.await;
        self.store.close().await;
        tracing::info!("gateway stopped");
        result
    }
}

/// The key that signs paging links: configured, or kept in the data directory beside SQLite.
fn paging_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &settings.server.paging_secret {
        anyhow::ensure!(secret.len() >= 32, "server.paging_secret must be at least 32 characters");
        return Ok(secret.as_bytes().to_vec());
    }
    if settings.is_postgres() {
        // Instances sharing a database must share the key; without one configured, links are
        // valid on this instance until it restarts.
        tracing::warn!("server.paging_secret is not set: paging links are signed with a per-process key");
        return Ok(ring_random_bytes());
    }
    let path = std::path::Path::new(settings.database.url.trim_start_matches("sqlite://").trim_start_matches("sqlite:"))
        .with_file_name("paging.key");
    if let Ok(existing) = std::fs::read(&path)
        && existing.len() >= 32
    {
        return Ok(existing);
    }
    let secret = ring_random_bytes();
    std::fs::write(&path, &secret).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(secret)
}

fn ring_random_bytes() -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system random source works");
    bytes
}

struct OpsState {
    store: Arc<SqlStore>,
    metrics: Arc<Metrics>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready when the database answers.
async fn readyz(state: web::Data<OpsState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unavailable\n")
        }
    }
}

async fn metrics_text(state: web::Data<OpsState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.encode())
}

/// The configured token issuers, plus the development ones when `auth.dev_issuers` is on.
fn authenticator(settings: &Settings, audience: &str) -> anyhow::Result<crate::auth::Authenticator> {
    let mut issuers = settings.auth.issuers.clone();
    if settings.dev_issuers() {
        let dir = settings.tls.client_ca.parent().unwrap_or(std::path::Path::new("."));
        issuers.extend(crate::auth::dev::DevIssuers::new(dir).ensure(audience)?);
        tracing::warn!(
            dir = %dir.display(),
            "development token issuers are trusted (auth.dev_issuers); `hie-gateway token` mints tokens for them. Turn this off anywhere real"
        );
    }
    if issuers.is_empty() {
        tracing::warn!("no token issuers are registered ([[auth.issuers]]): only patient-free endpoints will answer");
    }
    crate::auth::Authenticator::new(&settings.auth, &issuers)
}

/// Load the demo region through the transaction path, as a registered trust would publish it.
pub async fn load_demo(application: &Application, patients: usize) -> anyhow::Result<()> {
    use consent::{ClientKind, Principal, PurposeOfUse, RegisteredClient, Requester, SmartScopes, SystemUser};
    use fhir_models::interaction::Interaction;

    // As a trust's publishing system would: its certificate and a system token.
    let ods = fhir_models::OdsCode::parse(crate::demo::TRUSTS[0].ods)?;
    let scopes = SmartScopes::parse_claim("system/*.cruds")?;
    let publisher = Requester::client(RegisteredClient {
        name: "demo-loader".into(),
        kind: ClientKind::Trust,
        ods: ods.clone(),
        scopes: scopes.clone(),
        secondary_uses: Vec::new(),
    })
    .with_principal(Principal::System(
        SystemUser { subject: "demo-loader".into(), organisation: ods, purpose: PurposeOfUse::Treatment },
        scopes,
    ));
    let permit = crate::enforce::authorize(publisher, Interaction::Transaction, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bundles = std::iter::once(crate::demo::reference_bundle()).chain(crate::demo::patient_bundles(patients));
    let mut loaded = 0;
    for bundle in bundles {
        let bytes = serde_json::to_vec(&bundle)?;
        crate::fhir::batch_or_transaction(&application.state.fhir, &permit, bytes, crate::fhir::ReturnPreference::Minimal)
            .await
            .map_err(|error| anyhow::anyhow!("demo data was refused: {}", String::from_utf8_lossy(&error.outcome().to_json_bytes())))?;
        loaded += 1;
    }
    // Each practice's GP record, as an extract filed through the extract ingest path.
    let maps = crate::translate::codes::CodeMaps::demo();
    for (number, practice) in crate::demo::PRACTICES.iter().enumerate() {
        let registered: Vec<usize> = (0..patients).filter(|index| index % crate::demo::PRACTICES.len() == number).collect();
        if registered.is_empty() {
            continue;
        }
        // Practices 1 and 3 run EMIS Web, practice 2 SystmOne.
        let (format, extract) = match number % 2 {
            0 => (crate::translate::Format::EmisCsv, crate::synthetic::emis_extract(practice, &registered, "20260301120000")),
            _ => (crate::translate::Format::SystmOneCsv, crate::synthetic::systmone_extract(practice, &registered, "20260301120000")),
        };
        let report = crate::ingest::file_extract(&application.state.fhir, format, &extract, &maps, None, "demo")
            .await
            .map_err(|error| anyhow::anyhow!("the demo GP extract was refused: {error}"))?;
        anyhow::ensure!(
            report.refused.is_empty() && report.retry.is_empty(),
            "demo GP extract not filed: {:?} {:?}",
            report.refused,
            report.retry
        );
    }
    // Each patient's discharge summary from their trust, as CDA, ITK3 or R4 in turn.
    for index in 0..patients {
        use crate::translate::Format;
        let format = [Format::Cda, Format::Itk3, Format::Fhir][index % 3];
        let (name, bytes) = crate::synthetic::discharge::discharge_summaries(format, &[index]).remove(0);
        let state = &application.state;
        match crate::ingest::file_document(&state.fhir, state.ingest.dead_letters(), format, &bytes, None, "demo", false).await {
            crate::ingest::DocumentOutcome::Filed(_)
            | crate::ingest::DocumentOutcome::Duplicate(_)
            | crate::ingest::DocumentOutcome::Superseded(_) => {}
            crate::ingest::DocumentOutcome::Rejected(error) => anyhow::bail!("the demo discharge summary {name} was refused: {error}"),
            crate::ingest::DocumentOutcome::Retry(reason) => anyhow::bail!("the demo discharge summary {name} was not filed: {reason}"),
        }
    }
    tracing::info!(
        bundles = loaded,
        patients,
        gp_extracts = crate::demo::PRACTICES.len(),
        discharge_summaries = patients,
        "demo data loaded"
    );
    Ok(())
}
