//! The audit trail: every HTTP request — permitted, refused or failed — appends one FHIR
//! `AuditEvent` to a hash-chained, append-only log before its answer leaves
//! (docs/information-governance.md, "Audit").
//!
//! While a request runs, what it did is noted in an [`AuditNote`] held in a task-local, so the
//! layers that know (the requester extractor, `enforce::authorize`, the release of resources)
//! record it without the note being passed through every function. The middleware [`audit`]
//! turns the note and the response status into an `AuditEvent` and waits until the
//! [`AuditTrail`] has committed it; if it cannot, the answer is a 503 instead (fail closed: no
//! answer without its record). The trail's writer commits events in batches, one chain for every
//! instance: each record's hash covers the previous record's hash, its sequence number, its time
//! and its JSON, so `hie-gateway audit verify` finds any record edited, deleted or reordered.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::store::{SqlStore, StoreError};

tokio::task_local! {
    static NOTE: Arc<Mutex<AuditNote>>;
}

/// Text that is mostly a fixed code (kept without allocating) but read back as owned.
pub type Code = Cow<'static, str>;

/// Who asked, as the audit trail keeps it (a snapshot of the requester at the time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Who {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ods: Option<String>,
    /// `clinician`, `patient` or `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub self_claimed: bool,
}

/// What one request did, noted as it runs; with the request and its answer, it is the record
/// the trail stores and hashes (compact JSON, rendered as a FHIR `AuditEvent` when read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditNote {
    /// The request: method, and path with query (which may name a patient or an NHS number:
    /// kept for auditors, never shown to patients).
    pub method: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The status of the answer.
    pub status: u16,
    pub who: Who,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The rule that decided: the refusing one, or the permitting one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Patients named or whose records were returned.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub patients: BTreeSet<String>,
    /// `Type/id/_history/version` of every resource returned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub returned: Vec<String>,
    /// The rules that withheld resources the request reached (not which resources).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub withheld: BTreeSet<Code>,
    /// `Type/id/_history/version` of every version the request wrote.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<String>,
    /// What an earlier filing of the same input wrote (a re-send writes nothing): the targets of
    /// its Provenance. Recorded so that a write whose own record could not be written (its
    /// sender was told to send again) is in the trail once the re-send is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filed_before: Vec<String>,
}

/// Note a version written (or a deletion) and the patients whose record it is in.
pub fn record_written(reference: String, patients: &[String]) {
    record(|note| {
        note.written.push(reference);
        note.patients.extend(patients.iter().cloned());
    });
}

/// Note what an earlier filing of the same input wrote, and whose records those are in.
pub fn record_filed_before(targets: &[String]) {
    record(|note| {
        note.patients.extend(
            targets.iter().filter_map(|target| target.strip_prefix("Patient/")).map(|id| id.split('/').next().unwrap_or(id).to_owned()),
        );
        note.filed_before.extend(targets.iter().cloned());
    });
}

/// Note something about the running request; nothing happens outside a request (the command
/// line, the MLLP feed).
pub fn record(change: impl FnOnce(&mut AuditNote)) {
    let _ = NOTE.try_with(|note| {
        if let Ok(mut note) = note.lock() {
            change(&mut note);
        }
    });
}

/// Note who is asking.
pub fn record_requester(requester: &consent::Requester) {
    use consent::Principal;
    record(|note| {
        let who = &mut note.who;
        if let Some(client) = &requester.client {
            who.client = Some(client.name.clone());
            who.client_ods = Some(client.ods.to_string());
        }
        match &requester.principal {
            Some(Principal::Clinician(clinician, _)) => {
                who.kind = Some(Cow::Borrowed("clinician"));
                who.subject = Some(clinician.subject.clone());
                who.organisation = Some(clinician.organisation.to_string());
                who.role = clinician.role.clone();
                who.purpose = Some(Cow::Borrowed(clinician.purpose.code()));
                who.reason = clinician.reason.clone();
                who.self_claimed = clinician.self_claimed;
            }
            Some(Principal::System(system, _)) => {
                who.kind = Some(Cow::Borrowed("system"));
                who.subject = Some(system.subject.clone());
                who.organisation = Some(system.organisation.to_string());
                who.purpose = Some(Cow::Borrowed(system.purpose.code()));
            }
            Some(Principal::Patient(patient, _)) => {
                who.kind = Some(Cow::Borrowed("patient"));
                who.subject = Some(patient.subject.clone());
            }
            None => {}
        }
    });
}

/// A record waiting for its place in the chain, serialised by the request that made it, so the
/// one writer only numbers, hashes and stores.
struct Pending {
    event: String,
    patients: Vec<String>,
    recorded: i64,
    done: oneshot::Sender<Result<(), String>>,
}

/// The writer of the audit trail: appends are queued and committed in batches by one task.
#[derive(Clone)]
pub struct AuditTrail {
    sender: mpsc::Sender<Pending>,
    store: Arc<SqlStore>,
    pub metrics: AuditMetrics,
}

/// What the writer did, for `/metrics`: how many events in how many commits, and the time the
/// commits took (operators watch the answer time the trail adds).
#[derive(Clone, Default)]
pub struct AuditMetrics {
    pub events: prometheus_client::metrics::counter::Counter,
    pub commits: prometheus_client::metrics::counter::Counter,
    pub commit_seconds: prometheus_client::metrics::counter::Counter<f64, std::sync::atomic::AtomicU64>,
    pub failures: prometheus_client::metrics::counter::Counter,
    /// HTTP requests whose record is committed, and those refused (503) because it could not
    /// be: together, every request the API answered (`hie_http_requests_total`).
    pub recorded_requests: prometheus_client::metrics::counter::Counter,
    pub unrecorded: prometheus_client::metrics::counter::Counter,
}

/// The most events one commit takes.
const MAX_BATCH: usize = 512;

impl AuditTrail {
    pub fn start(store: Arc<SqlStore>, key: AuditKey) -> Self {
        let (sender, mut receiver) = mpsc::channel::<Pending>(8 * MAX_BATCH);
        let writer = store.clone();
        let metrics = AuditMetrics::default();
        let counted = metrics.clone();
        tokio::spawn(async move {
            // The chain's head as this writer last left it (read from the store when unknown).
            let mut head: Option<(i64, String)> = None;
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (records, waiting): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| ((p.event, p.recorded, p.patients), p.done)).unzip();
                let events = records.len();
                let started = std::time::Instant::now();
                let result = match writer.append_audit(&key, head.take(), &records).await {
                    Ok(next) => {
                        head = Some(next);
                        Ok(())
                    }
                    Err(error) => Err(error.to_string()),
                };
                counted.commit_seconds.inc_by(started.elapsed().as_secs_f64());
                counted.commits.inc();
                if result.is_ok() {
                    counted.events.inc_by(events as u64);
                }
                if let Err(error) = &result {
                    counted.failures.inc();
                    tracing::error!(%error, events, "audit records could not be written");
                }
                for done in waiting {
                    let _ = done.send(result.clone());
                }
            }
        });
        Self { sender, store, metrics }
    }

    /// Events about these patients, newest first, below a sequence number, as FHIR AuditEvents.
    pub async fn about(&self, patient_ids: &[String], before: Option<i64>, limit: i64) -> Result<Vec<(i64, Value)>, StoreError> {
        let records = self.store.audit_for_patients(patient_ids, before, limit).await?;
        Ok(records.iter().map(|record| (record.seq, record.event())).collect())
    }

    /// Append a request's record and wait until it is durable.
    pub async fn append(&self, note: &AuditNote, recorded: i64) -> Result<(), String> {
        let event = serde_json::to_string(note).map_err(|error| error.to_string())?;
        let patients = note.patients.iter().cloned().collect();
        let (done, wait) = oneshot::channel();
        self.sender.send(Pending { event, patients, recorded, done }).await.map_err(|_| "the audit writer stopped".to_owned())?;
        wait.await.map_err(|_| "the audit writer stopped".to_owned())?
    }
}

/// Run `work` with `note` as the running request's note, and return what was noted.
pub async fn noted<T>(note: AuditNote, work: impl Future<Output = T>) -> (T, AuditNote) {
    let note = Arc::new(Mutex::new(note));
    let output = NOTE.scope(note.clone(), work).await;
    // The work is over: nothing else holds the note now.
    let note = std::mem::take(&mut *note.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    (output, note)
}

/// Middleware: run the request with a note, then record it before the answer leaves.
pub async fn audit(request: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = request.app_data::<web::Data<crate::http::AppState>>().cloned() else {
        return next.call(request).await.map(ServiceResponse::map_into_boxed_body);
    };
    let target = match request.query_string() {
        "" => request.path().to_owned(),
        query => format!("{}?{query}", request.path()),
    };
    let mut note = AuditNote {
        method: request.method().to_string(),
        target,
        address: request.peer_addr().map(|address| address.ip().to_string()),
        ..Default::default()
    };
    if let Some(certificate) = request.conn_data::<crate::tls::PeerCertificate>()
        && let Some(client) = state.clients.identify(certificate)
    {
        note.who.client = Some(client.name.clone());
        note.who.client_ods = Some(client.ods.to_string());
    }
    // (The rate limit further in answers its refusals as responses, so they are recorded too;
    // an error from further in is recorded with the status actix will answer it with.)
    let (response, mut note) = noted(note, next.call(request)).await;
    note.status = match &response {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.as_response_error().status_code().as_u16(),
    };
    let recorded = fhir_models::datetime::to_micros(time::OffsetDateTime::now_utc());
    match state.audit.append(&note, recorded).await {
        Ok(()) => {
            state.audit.metrics.recorded_requests.inc();
            response.map(ServiceResponse::map_into_boxed_body)
        }
        Err(error) => {
            state.audit.metrics.unrecorded.inc();
            tracing::error!(%error, "answer withheld: its audit record could not be written");
            let refused = ApiError::Unavailable("the audit trail cannot record this request now; try again".into());
            match response {
                Ok(response) => Ok(ServiceResponse::new(response.into_parts().0, refused.error_response())),
                Err(_) => Err(refused.into()),
            }
        }
    }
}

const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The gateway's own flags on events: emergency access and self-claimed relationships, which
/// privacy officers review and patients see.
pub const FLAG_SYSTEM: &str = "https://hie-gateway.nhs.example/CodeSystem/audit-flag";
/// NHS RBAC job role codes (R-codes) as the gateway records them.
const JOB_ROLE: &str = "https://hie-gateway.nhs.example/CodeSystem/nrbac-job-role";
const SUBJECT: &str = "https://hie-gateway.nhs.example/Id/token-subject";

/// The FHIR AuditEvent of a stored record: its sequence number is its id.
pub fn event(note: &AuditNote, seq: i64, recorded: time::OffsetDateTime) -> Value {
    let (method, target, status) = (note.method.as_str(), note.target.as_str(), note.status);
    let who = &note.who;
    let action = match method {
        "POST" | "MLLP" if note.interaction.as_deref().is_some_and(|i| i != "create") => "E",
        "POST" => "C",
        "PUT" | "PATCH" => "U",
        "DELETE" => "D",
        _ => "R",
    };
    let outcome = match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    // No path or query here (they may name a patient or an NHS number): the query entity keeps
    // them for auditors, and patients see this description.
    let mut outcome_desc = format!("{status} {}", note.interaction.as_deref().unwrap_or(method));
    if let Some(resource_type) = &note.resource_type {
        outcome_desc.push(' ');
        outcome_desc.push_str(resource_type);
    }
    if let Some(rule) = &note.rule {
        outcome_desc.push_str("; rule ");
        outcome_desc.push_str(rule);
    }
    if !note.withheld.is_empty() {
        outcome_desc.push_str("; withheld by ");
        outcome_desc.push_str(&note.withheld.iter().map(|rule| rule.as_ref()).collect::<Vec<_>>().join(", "));
    }
    let mut requestor =
        json!({"requestor": true, "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]}});
    if let Some(subject) = &who.subject {
        requestor["who"] =
            json!({"identifier": {"system": format!("{SUBJECT}/{}", who.kind.as_deref().unwrap_or("unknown")), "value": subject}});
    } else {
        requestor["who"] = json!({"display": "not identified"});
    }
    if let Some(role) = &who.role {
        requestor["role"] = json!([{"coding": [{"system": JOB_ROLE, "code": role}]}]);
    }
    if let Some(address) = &note.address {
        requestor["network"] = json!({"address": address, "type": "2"});
    }
    if let Some(purpose) = &who.purpose {
        requestor["purposeOfUse"] = json!([{"coding": [{"system": ACT_REASON, "code": purpose}]}]);
    }
    let mut agents = vec![requestor];
    if let Some(organisation) = who.organisation.as_ref().or(who.client_ods.as_ref()) {
        agents.push(json!({
            "requestor": false,
            "type": {"coding": [{"system": DICOM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": {"system": fhir_models::system::ODS_ORGANIZATION_CODE, "value": organisation}}
        }));
    }
    if let Some(client) = &who.client {
        agents.push(json!({
            "requestor": false,
            "type": {"coding": [{"system": DICOM, "code": "110150", "display": "Application"}]},
            "who": {"display": client}
        }));
    }
    let mut entities: Vec<Value> = note
        .patients
        .iter()
        .map(|patient| {
            json!({
                "what": {"reference": format!("Patient/{patient}")},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
            })
        })
        .collect();
    entities.push(json!({
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
        "query": base64::engine::general_purpose::STANDARD.encode(format!("{method} {target}"))
    }));
    entities.extend(note.returned.iter().map(|reference| {
        json!({
            "what": {"reference": reference},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            "description": "returned"
        })
    }));
    for (references, description) in [(&note.written, "written"), (&note.filed_before, "filed earlier by the same input")] {
        entities.extend(references.iter().map(|reference| {
            json!({
                "what": {"reference": reference},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
                "description": description
            })
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": seq.to_string(),
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "action": action,
        "recorded": fhir_models::datetime::format_instant(recorded),
        "outcome": outcome,
        "outcomeDesc": outcome_desc,
        "agent": agents,
        "source": {"observer": {"display": "HIE Gateway"}, "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
        "entity": entities
    });
    if let Some(interaction) = &note.interaction {
        event["subtype"] = json!([{"system": INTERACTION, "code": interaction}]);
    }
    if let Some(purpose) = &who.purpose {
        let mut purpose_of_event = json!({"coding": [{"system": ACT_REASON, "code": purpose}]});
        if let Some(reason) = &who.reason {
            purpose_of_event["text"] = json!(reason);
        }
        event["purposeOfEvent"] = json!([purpose_of_event]);
    }
    let mut flags = Vec::new();
    if matches!(who.purpose.as_deref(), Some("ETREAT" | "BTG")) {
        flags.push(json!({"system": FLAG_SYSTEM, "code": "emergency-access", "display": "Emergency access"}));
    }
    if who.self_claimed {
        flags.push(json!({"system": FLAG_SYSTEM, "code": "self-claimed-relationship", "display": "Self-claimed legitimate relationship"}));
    }
    if !flags.is_empty() {
        event["meta"] = json!({"tag": flags});
    }
    event
}

/// One record of the trail as stored.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub seq: i64,
    pub recorded: i64,
    /// The record as hashed: an [`AuditNote`]'s JSON (records written before this form were
    /// stored as FHIR AuditEvents, and are read as they are).
    pub text: String,
    pub previous: String,
    pub hash: String,
}

/// How records written before the compact form begin.
const FHIR_RECORD: &str = "{\"resourceType\":\"AuditEvent\"";

impl AuditRecord {
    /// The record as a FHIR AuditEvent.
    pub fn event(&self) -> Value {
        if self.text.starts_with(FHIR_RECORD) {
            return serde_json::from_str(&self.text).unwrap_or(Value::Null);
        }
        let note: AuditNote = serde_json::from_str(&self.text).unwrap_or_default();
        // A time out of range (only a tampered row holds one; `verify` names it) reads as the epoch.
        let recorded = time::OffsetDateTime::UNIX_EPOCH.checked_add(time::Duration::microseconds(self.recorded));
        event(&note, self.seq, recorded.unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
    }

    /// The patients the record names.
    fn patients(&self) -> BTreeSet<String> {
        if !self.text.starts_with(FHIR_RECORD) {
            return serde_json::from_str::<AuditNote>(&self.text).map(|note| note.patients).unwrap_or_default();
        }
        let event: Value = serde_json::from_str(&self.text).unwrap_or(Value::Null);
        event["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entity| entity["role"]["code"] == "1")
            .filter_map(|entity| entity["what"]["reference"].as_str()?.strip_prefix("Patient/").map(str::to_owned))
            .collect()
    }
}

/// The key the trail's hashes are keyed with (HMAC-SHA-256). Without it, a record cannot be
/// edited and the chain after it recomputed to hide the edit: `audit verify` would find every
/// recomputed hash wrong.
#[derive(Clone)]
pub struct AuditKey(ring::hmac::Key);

/// How a keyed hash is written: the algorithm, then the hex of the tag. Hashes written before
/// the trail was keyed are bare hex (SHA-256): `verify` accepts them only up to the record the
/// operator names (anyone could write a whole trail of them).
pub const KEYED_PREFIX: &str = "hmac-sha256:";

impl AuditKey {
    /// The smallest key accepted, in bytes (HMAC-SHA-256's block-size-independent strength).
    pub const MIN_BYTES: usize = 32;

    pub fn new(secret: &[u8]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// The key in `settings.key_file`; made (32 random bytes, readable by this user only) when
    /// the file is missing and `settings.generate_key` allows it.
    pub fn load(settings: &crate::configuration::AuditSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = &settings.key_file;
        if !path.exists() {
            anyhow::ensure!(
                settings.generate_key,
                "the audit key file {} is missing: restore it (the trail cannot be checked without it), or set \
                 audit.generate_key = true to start a new key",
                path.display()
            );
            let mut secret = [0u8; Self::MIN_BYTES];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| anyhow::anyhow!("no randomness for the audit key"))?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
            }
            // Created only if still missing: two instances starting at once keep one key.
            if create_secret(path, &format!("{}\n", hex(&secret)))
                .with_context(|| format!("failed to write the audit key to {}", path.display()))?
            {
                tracing::warn!(file = %path.display(), "made a new audit key: keep a copy apart from the database and its backups");
            }
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("failed to read the audit key {}", path.display()))?;
        let secret = unhex(text.trim()).with_context(|| format!("the audit key {} is not hex", path.display()))?;
        anyhow::ensure!(
            secret.len() >= Self::MIN_BYTES,
            "the audit key {} holds {} bytes; it needs at least {}",
            path.display(),
            secret.len(),
            Self::MIN_BYTES
        );
        Ok(Self::new(&secret))
    }
}

/// Write `contents` to a new file readable by this user only; `false` when the file exists.
/// Written whole to a file of its own first, then linked into place (which fails if the file
/// exists), so another process never reads a key half-written.
fn create_secret(path: &std::path::Path, contents: &str) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let draft = path.with_extension(format!("new-{}", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&draft)?;
    let written = file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).and_then(|()| std::fs::hard_link(&draft, path));
    let _ = std::fs::remove_file(&draft);
    match written {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(text.len().is_multiple_of(2) && text.is_ascii(), "an odd number of hex digits");
    (0..text.len()).step_by(2).map(|at| Ok(u8::from_str_radix(&text[at..at + 2], 16)?)).collect()
}

/// What a record's hash covers: the previous record's hash, its sequence number, its time and
/// its text, each on its own line.
fn chained_text(previous: &str, seq: i64, recorded: i64, text: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(previous.len() + text.len() + 48);
    message.extend_from_slice(previous.as_bytes());
    message.extend_from_slice(format!("\n{seq}\n{recorded}\n").as_bytes());
    message.extend_from_slice(text.as_bytes());
    message
}

/// The hash of a record: an HMAC under the trail's key.
pub fn chain_hash(key: &AuditKey, previous: &str, seq: i64, recorded: i64, text: &str) -> String {
    let tag = ring::hmac::sign(&key.0, &chained_text(previous, seq, recorded, text));
    format!("{KEYED_PREFIX}{}", hex(tag.as_ref()))
}

/// Refuse to extend a trail this key did not write: its last record's hash must be this key's
/// (or unkeyed, from before the trail was keyed). Every instance of a gateway uses one key; an
/// instance started with another would begin a stretch of the chain that never verifies.
pub async fn check_key(store: &SqlStore, key: &AuditKey, key_file: &std::path::Path) -> anyhow::Result<()> {
    let (seq, _) = store.audit_head().await?;
    // A head naming no record is for `audit verify` to report.
    let Some(last) = store.audit_records(seq - 1, 1).await?.pop().filter(|record| record.seq == seq) else { return Ok(()) };
    if !last.hash.starts_with(KEYED_PREFIX) {
        // Said on every start until keyed records follow: the number belongs in the operator's
        // own records, apart from the database, since the unkeyed records cannot prove it.
        tracing::warn!(
            unkeyed_until = seq,
            "the audit trail's records up to {seq} were written before it was keyed: check it with \
             `hie-gateway audit verify --unkeyed-until {seq}`, and note that number somewhere apart from the database"
        );
        return Ok(());
    }
    if chain_hash(key, &last.previous, last.seq, last.recorded, &last.text) != last.hash {
        anyhow::bail!(
            "the audit key in {} is not the key the audit trail was written with (its last record, {seq}, does not verify): \
             give every instance of the gateway the same key file; `hie-gateway audit verify` checks the whole trail",
            key_file.display()
        );
    }
    Ok(())
}

/// The hash records had before the trail was keyed (plain SHA-256): still checked, so a trail
/// begun by an older gateway verifies, but anyone could recompute it.
fn unkeyed_hash(previous: &str, seq: i64, recorded: i64, text: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, &chained_text(previous, seq, recorded, text)).as_ref())
}

/// The hash a chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What `audit verify` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `unkeyed`: the records at the start written before the trail was keyed.
    Intact {
        records: i64,
        head: String,
        unkeyed: i64,
    },
    Broken {
        at: i64,
        reason: String,
    },
}

/// Walk the trail in order and check every link under `key`; then that the head names the last
/// record. Records up to `unkeyed_until` may carry the unkeyed hashes of a gateway older than
/// the key; no other record may.
pub async fn verify(store: &SqlStore, key: &AuditKey, unkeyed_until: i64) -> Result<Verdict, StoreError> {
    let mut unkeyed = 0;
    let mut expected_seq = 1;
    let mut previous = GENESIS.to_owned();
    let mut after = 0;
    loop {
        let records = store.audit_records(after, 2_000).await?;
        let Some(last) = records.last() else { break };
        // The patient index is not in the chain; it must say what each hashed event says.
        let mut indexed: std::collections::BTreeMap<i64, BTreeSet<String>> = std::collections::BTreeMap::new();
        for (seq, patient) in store.audit_patient_rows(after, last.seq).await? {
            indexed.entry(seq).or_default().insert(patient);
        }
        after = last.seq;
        for record in records {
            if record.seq != expected_seq {
                let reason = if record.seq > expected_seq {
                    format!("record {expected_seq} is missing (the next record is {})", record.seq)
                } else {
                    format!("record {} is out of order", record.seq)
                };
                return Ok(Verdict::Broken { at: expected_seq, reason });
            }
            if record.previous != previous {
                return Ok(Verdict::Broken {
                    at: record.seq,
                    reason: format!(
                        "record {} does not follow record {}: it was reordered, or one before it was edited",
                        record.seq,
                        record.seq - 1
                    ),
                });
            }
            let expected = if record.hash.starts_with(KEYED_PREFIX) {
                chain_hash(key, &record.previous, record.seq, record.recorded, &record.text)
            } else if record.seq <= unkeyed_until && unkeyed == record.seq - 1 {
                unkeyed += 1;
                unkeyed_hash(&record.previous, record.seq, record.recorded, &record.text)
            } else {
                return Ok(Verdict::Broken {
                    at: record.seq,
                    reason: format!(
                        "record {} has an unkeyed hash: it was written without the audit key (a trail begun by a gateway older \
                         than the key is checked with --unkeyed-until and the last record that gateway wrote)",
                        record.seq
                    ),
                });
            };
            if expected != record.hash {
                return Ok(Verdict::Broken {
                    at: record.seq,
                    reason: format!(
                        "record {} was edited: its hash does not match its content (or the key is not the one it was written with)",
                        record.seq
                    ),
                });
            }
            if indexed.remove(&record.seq).unwrap_or_default() != record.patients() {
                return Ok(Verdict::Broken {
                    at: record.seq,
                    reason: format!(
                        "the patient index of record {} was changed: it no longer lists the patients the record names",
                        record.seq
                    ),
                });
            }
            previous = record.hash;
            expected_seq += 1;
        }
    }
    let (head_seq, head_hash) = store.audit_head().await?;
    let last = expected_seq - 1;
    if head_seq != last || head_hash != previous {
        return Ok(Verdict::Broken {
            at: last + 1,
            reason: format!("the trail ends at record {last} but its head names record {head_seq}: records were removed from its end"),
        });
    }
    Ok(Verdict::Intact { records: last, head: previous, unkeyed })
}

/// `GET /fhir/r4/$access-log`: the signed-in patient's "who looked at my record" — the audit
/// events about their own record, newest first, each as [`for_patient`] shows it.
pub async fn access_log(
    trail: &AuditTrail,
    service: &crate::fhir::FhirService,
    permit: &crate::enforce::Permitted,
    params: &[(String, String)],
) -> Result<crate::fhir::FhirResponse, ApiError> {
    use fhir_models::bundle::EntryParts;
    use fhir_models::outcome::IssueType;
    let Some(consent::Principal::Patient(patient, _)) = &permit.requester().principal else {
        return Err(ApiError::Forbidden {
            code: consent::DenyCode::AccessDenied,
            rule: "access-log",
            message: "the access log of a record is its patient's; organisations' audits are kept by the operators".into(),
        });
    };
    let mut count = 20usize;
    let mut cursor = None;
    for (name, value) in params {
        match name.as_str() {
            "_count" => {
                count = crate::fhir::parse_count(value)?.clamp(1, 100);
            }
            "_cursor" => cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            _ => return Err(ApiError::invalid_at(IssueType::NotSupported, name.as_str(), format!("$access-log takes _count; not {name}"))),
        }
    }
    let own = crate::fhir::access::patients_with_nhs_number(service, &patient.nhs_number.to_string()).await?;
    let canonical = crate::fhir::PagingKey::canonical("access-log", &[("_count".into(), count.to_string())]);
    let before =
        match &cursor {
            Some(cursor) => Some(service.paging.verify(&canonical, cursor).map(|position| position.key).ok_or_else(|| {
                ApiError::invalid_at(IssueType::Value, "_cursor", "the paging link was altered or belongs to another query")
            })?),
            None => None,
        };
    let mut events = trail.about(&own, before, count as i64 + 1).await?;
    let more = events.len() > count;
    events.truncate(count);
    let base = format!("{}/$access-log?_count={count}", service.base_url);
    let link = |key: i64| {
        let position = crate::store::Position { values: Vec::new(), key, backward: false };
        format!(
            "{base}&_cursor={}",
            percent_encoding::utf8_percent_encode(&service.paging.sign(&canonical, &position), percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let self_link = match before {
        Some(key) => link(key),
        None => base.clone(),
    };
    let next_link = events.last().filter(|_| more).map(|(seq, _)| link(*seq));
    let links = crate::fhir::page_links(&self_link, None, None, next_link.as_deref());
    let mut writer = service.bundle_writer("searchset", None, &links);
    for (seq, event) in &events {
        let shown = serde_json::to_vec(&for_patient(event, &own)).map_err(|e| ApiError::Internal(e.into()))?;
        let full_url = format!("{}/AuditEvent/{seq}", service.base_url);
        writer.entry(EntryParts { full_url: Some(&full_url), resource: Some(&shown), search_mode: Some("match"), ..Default::default() });
    }
    Ok(crate::fhir::FhirResponse::ok(writer.finish()))
}

/// An event as its patient sees it: who, which organisation, when, why and with what outcome;
/// the query and the resources returned are left out (a search may have named others).
pub fn for_patient(event: &Value, own: &[String]) -> Value {
    let mut event = event.clone();
    if let Some(entities) = event.get_mut("entity").and_then(Value::as_array_mut) {
        entities.retain(|entity| {
            entity["what"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).is_some_and(|id| own.iter().any(|o| o == id))
        });
    }
    if let Some(agents) = event.get_mut("agent").and_then(Value::as_array_mut) {
        for agent in agents {
            if let Some(agent) = agent.as_object_mut() {
                agent.remove("network");
            }
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> AuditNote {
        AuditNote {
            method: "GET".into(),
            target: "/fhir/r4/Observation?patient=p1".into(),
            address: Some("127.0.0.1".into()),
            status: 200,
            who: Who {
                client: Some("gp-system".into()),
                client_ods: Some("A81001".into()),
                kind: Some("clinician".into()),
                subject: Some("u1".into()),
                organisation: Some("A81001".into()),
                role: Some("R8000".into()),
                purpose: Some("ETREAT".into()),
                reason: Some("unconscious in A&E".into()),
                self_claimed: false,
            },
            interaction: Some("search-type".into()),
            resource_type: Some("Observation".into()),
            rule: Some("token-scopes".into()),
            patients: ["p1".to_owned(), "p2".to_owned()].into_iter().collect(),
            returned: vec!["Observation/o1/_history/1".into()],
            withheld: Default::default(),
            written: Vec::new(),
            filed_before: Vec::new(),
        }
    }

    #[test]
    fn an_event_says_who_what_why_and_how_it_ended_and_flags_emergencies() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let event = event(&note(), 7, now);
        assert_eq!(event["id"], "7");
        assert_eq!(event["recorded"], "2027-01-15T08:00:00.000000Z");
        assert_eq!(event["action"], "R");
        assert_eq!(event["outcome"], "0");
        assert_eq!(event["subtype"][0]["code"], "search-type");
        assert_eq!(event["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert_eq!(event["purposeOfEvent"][0]["text"], "unconscious in A&E");
        assert_eq!(event["meta"]["tag"][0]["code"], "emergency-access");
        assert_eq!(event["agent"][0]["network"]["address"], "127.0.0.1");
        assert_eq!(event["agent"][1]["who"]["identifier"]["value"], "A81001");
        assert_eq!(event["outcomeDesc"], "200 search-type Observation; rule token-scopes");
        let entities = event["entity"].as_array().unwrap();
        assert_eq!(entities.len(), 4, "two patients, the query, one resource");
        let query = base64::engine::general_purpose::STANDARD.decode(entities[2]["query"].as_str().unwrap()).unwrap();
        assert_eq!(query, b"GET /fhir/r4/Observation?patient=p1");
        let seen_by_p1 = for_patient(&event, &["p1".into()]);
        let kept: Vec<&str> = seen_by_p1["entity"].as_array().unwrap().iter().filter_map(|e| e["what"]["reference"].as_str()).collect();
        assert_eq!(kept, ["Patient/p1"], "a patient sees neither the query nor other patients");
        assert!(seen_by_p1["agent"][0].get("network").is_none());
        let conformance = conformance::Validator::embedded().unwrap();
        let report = conformance.validate(fhir_models::ResourceType::parse("AuditEvent").unwrap(), &event);
        assert!(report.is_acceptable(), "{report:?}");
    }

    #[test]
    fn a_record_is_stored_compact_and_read_back_as_the_same_event() {
        let text = serde_json::to_string(&note()).unwrap();
        assert!(text.len() < 600, "{} bytes: {text}", text.len());
        assert_eq!(serde_json::from_str::<AuditNote>(&text).unwrap(), note());
        let record = AuditRecord { seq: 7, recorded: 1_800_000_000_000_000, text, previous: GENESIS.into(), hash: String::new() };
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(record.event(), event(&note(), 7, now));
        assert_eq!(record.patients(), note().patients);
        // A record written as a FHIR AuditEvent (before the compact form) is read as it is.
        let fhir = serde_json::to_string(&event(&note(), 7, now)).unwrap();
        let older = AuditRecord { text: fhir, ..record };
        assert_eq!(older.event(), event(&note(), 7, now));
        assert_eq!(older.patients(), note().patients);
    }

    #[test]
    fn the_chain_hash_covers_every_part() {
        let key = AuditKey::new(&[7; 32]);
        let base = chain_hash(&key, GENESIS, 1, 10, "{}");
        assert_ne!(base, chain_hash(&key, GENESIS, 2, 10, "{}"));
        assert_ne!(base, chain_hash(&key, GENESIS, 1, 11, "{}"));
        assert_ne!(base, chain_hash(&key, GENESIS, 1, 10, "{ }"));
        assert_ne!(base, chain_hash(&key, &base, 1, 10, "{}"));
        // Only the key makes it: the same content under another key, or unkeyed, differs.
        assert_ne!(base, chain_hash(&AuditKey::new(&[8; 32]), GENESIS, 1, 10, "{}"));
        assert_ne!(base.trim_start_matches(KEYED_PREFIX), unkeyed_hash(GENESIS, 1, 10, "{}"));
        assert!(base.starts_with(KEYED_PREFIX) && base.len() == KEYED_PREFIX.len() + 64, "{base}");
    }

    #[test]
    fn the_key_is_made_once_kept_private_and_refused_when_short_or_missing() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::configuration::AuditSettings { key_file: dir.path().join("keys/audit.key"), generate_key: true };
        // Instances starting at once end up with one key between them.
        let racing: Vec<AuditKey> = std::thread::scope(|threads| {
            let started: Vec<_> = (0..4).map(|_| threads.spawn(|| AuditKey::load(&settings).unwrap())).collect();
            started.into_iter().map(|thread| thread.join().unwrap()).collect()
        });
        let tags: std::collections::BTreeSet<String> = racing.iter().map(|key| chain_hash(key, GENESIS, 1, 1, "x")).collect();
        assert_eq!(tags.len(), 1, "one key");
        let leftovers = std::fs::read_dir(settings.key_file.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no drafts left beside the key");
        let made = AuditKey::load(&settings).unwrap();
        let again = AuditKey::load(&settings).unwrap();
        assert_eq!(chain_hash(&made, GENESIS, 1, 1, "x"), chain_hash(&again, GENESIS, 1, 1, "x"), "the same key, read back");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&settings.key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by the gateway's user only: {mode:o}");
        }
        std::fs::write(&settings.key_file, "abcd\n").unwrap();
        assert!(AuditKey::load(&settings).err().unwrap().to_string().contains("at least 32"));
        std::fs::write(&settings.key_file, "not hex at all, not hex at all, not hex at all, not hex at all!").unwrap();
        assert!(AuditKey::load(&settings).is_err());
        let missing = crate::configuration::AuditSettings { key_file: dir.path().join("gone.key"), generate_key: false };
        assert!(AuditKey::load(&missing).err().unwrap().to_string().contains("missing"));
        assert!(!missing.key_file.exists());
    }
}
