//! Filing translated records: the one path every ingest channel (MLLP, `hie-gateway ingest`,
//! replay of refused inputs) takes from a source message to committed FHIR resources.
//!
//! A message is translated, then committed through the same transaction code as a FHIR
//! transaction Bundle, as the publishing organisation's system, and only then answered `AA`.
//! A message that cannot be filed is answered `AE`/`AR` with an ERR segment and kept in the
//! dead-letter store; one that cannot be filed *now* (database down) is answered `AR` and not
//! kept, because the sender still has it and will send it again. A re-sent message (same
//! sender and MSH-10, same bytes) is answered `AA` and changes nothing.

use std::sync::Arc;

use consent::{ClientKind, Principal, PurposeOfUse, RegisteredClient, Requester, SmartScopes, SystemUser};
use fhir_models::interaction::Interaction;
use fhir_models::{OdsCode, ResourceType};

use crate::configuration::MllpSettings;
use crate::error::ApiError;
use crate::fhir::FhirService;
use crate::store::{RejectedInput, SqlStore, StoredVersion};
use crate::translate::hl7v2::ack::{AckCode, acknowledgement, unavailable};
use crate::translate::hl7v2::{self, ErrorCode, Header, Hl7Error, Location, Message};

/// Files HL7 v2 messages.
pub struct Hl7v2Ingest {
    fhir: Arc<FhirService>,
    store: Arc<SqlStore>,
    organisation: OdsCode,
    processing_ids: Vec<String>,
    /// Recorded with refused inputs: `mllp`, `cli`.
    channel: &'static str,
}

/// What became of one message.
#[derive(Debug)]
pub enum Outcome {
    /// Committed.
    Filed,
    /// Already filed, byte for byte: nothing written.
    Duplicate,
    /// Refused, and kept in the dead-letter store.
    Rejected(Hl7Error),
    /// Not filed now (the database is unavailable); the sender should send it again.
    Retry(Hl7Error),
}

/// A message's ACK, and the HTTP status of the same outcome (the audit trail records both):
/// 200 filed, 422 refused (AE), 400 refused whole (AR), 503 not filed now (AR, send again).
pub struct Handled {
    pub code: AckCode,
    pub ack: String,
    pub status: u16,
}

impl Hl7v2Ingest {
    pub fn new(fhir: Arc<FhirService>, store: Arc<SqlStore>, settings: &MllpSettings, channel: &'static str) -> Self {
        Self { fhir, store, organisation: settings.organisation.clone(), processing_ids: settings.processing_ids.clone(), channel }
    }

    /// Process one message and return its ACK.
    pub async fn handle(&self, bytes: &[u8]) -> Handled {
        let text = hl7v2::message::decode(bytes);
        let header = Message::parse(&text).ok().and_then(|message| hl7v2::header(&message).ok());
        let outcome = self.process(bytes, true).await;
        let (code, error, note, status) = match outcome {
            Outcome::Filed => (AckCode::Accept, None, None, 200),
            Outcome::Duplicate => (AckCode::Accept, None, Some("duplicate of a message already filed; nothing changed"), 200),
            Outcome::Rejected(error) => {
                let code = AckCode::for_error(&error);
                (code, Some(error), None, if code == AckCode::Error { 422 } else { 400 })
            }
            Outcome::Retry(error) => (AckCode::Reject, Some(error), None, 503),
        };
        Handled { code, ack: acknowledgement(header.as_ref(), code, error.as_ref(), note, &now_hl7(), &ack_control_id()), status }
    }

    /// Translate and commit one message; keep it in the dead-letter store when it is refused
    /// and `keep_rejected` says so (a replay keeps the row it came from instead).
    pub async fn process(&self, bytes: &[u8], keep_rejected: bool) -> Outcome {
        self.process_as(bytes, keep_rejected, None).await
    }

    /// Like [`process`](Self::process), publishing as `publisher` (an authenticated client)
    /// instead of the organisation MSH-4 names.
    pub async fn process_as(&self, bytes: &[u8], keep_rejected: bool, publisher: Option<Requester>) -> Outcome {
        let publisher_ods = publisher.as_ref().and_then(|requester| requester.client.as_ref()).map(|client| client.ods.to_string());
        let text = hl7v2::message::decode(bytes);
        let (header, result) = match Message::parse(&text) {
            Ok(message) => {
                let header = hl7v2::header(&message).ok();
                let result = match header.clone() {
                    Some(header) => self.file(&message, header, publisher).await,
                    None => Err(Failure::Rejected(internal("MSH cannot be read"))),
                };
                (header, result)
            }
            Err(error) => (None, Err(Failure::Rejected(error))),
        };
        match result {
            Ok(outcome) => outcome,
            Err(Failure::Rejected(error)) => {
                tracing::info!(
                    control_id = header.as_ref().map(|h| h.control_id.as_str()).unwrap_or(""),
                    location = %error.location,
                    code = error.code.code(),
                    "HL7 v2 message refused"
                );
                if keep_rejected && !self.keep(header.as_ref(), bytes, &error, publisher_ods).await {
                    // Not kept, so not refused either: the sender must send it again.
                    return Outcome::Retry(unavailable("the gateway cannot keep refused messages just now; send this message again later"));
                }
                Outcome::Rejected(error)
            }
            Err(Failure::Retry(error)) => Outcome::Retry(error),
        }
    }

    async fn file(&self, message: &Message<'_>, header: Header, publisher: Option<Requester>) -> Result<Outcome, Failure> {
        if !self.processing_ids.contains(&header.processing_id) {
            return Err(Failure::Rejected(Hl7Error::new(
                ErrorCode::UnsupportedProcessingId,
                message.msh().locate(11),
                format!(
                    "processing id {:?} is not filed here (mllp.processing_ids: {})",
                    header.processing_id,
                    self.processing_ids.join(", ")
                ),
            )));
        }
        let translated = hl7v2::translate_parsed(message, header).map_err(Failure::Rejected)?;
        match filed_before(&self.fhir, &translated.provenance_id, &translated.digest).await.map_err(|e| Failure::retry(&e))? {
            None => {}
            Some(PriorFiling::Same) => return Ok(Outcome::Duplicate),
            Some(PriorFiling::Different) => {
                return Err(Failure::Rejected(Hl7Error::new(
                    ErrorCode::DuplicateKey,
                    message.msh().locate(10),
                    format!(
                        "MSH-10 {:?} from {} was already used for a different message; control ids must be unique per sender",
                        translated.header.control_id,
                        translated.header.sender()
                    ),
                )));
            }
        }
        let requester = publisher.unwrap_or_else(|| self.requester(&translated.header));
        // The audit record names the organisation the message is filed as, not MSH-4's text.
        crate::audit::record_requester(&requester);
        let permit = crate::enforce::authorize(requester, Interaction::Transaction, None)
            .map_err(|error| Failure::Rejected(internal(&format!("the feed is not permitted to write: {error}"))))?;
        commit(&self.fhir, &permit, &translated.bundle).await.map(|()| Outcome::Filed)
    }

    /// The feed writes as a trust's publishing system would: the sending facility's ODS code
    /// when MSH-4 is one, else the configured organisation.
    fn requester(&self, header: &Header) -> Requester {
        let ods = header
            .sending_facility
            .split('^')
            .next()
            .and_then(|code| OdsCode::parse(code).ok())
            .unwrap_or_else(|| self.organisation.clone());
        self.system_requester(ods, format!("{}:{}", self.channel, header.sender()))
    }

    /// The publisher of a replayed input that an authenticated client sent: that client's
    /// organisation again, not the one MSH-4 claims.
    pub fn publisher_for(&self, ods: &str) -> Option<Requester> {
        replay_publisher(self.channel, ods)
    }

    /// The dead-letter store refused inputs are kept in.
    pub fn dead_letters(&self) -> &SqlStore {
        &self.store
    }

    fn system_requester(&self, ods: OdsCode, subject: String) -> Requester {
        publishing_system(self.channel, ClientKind::Trust, ods, subject)
    }

    /// Whether the refused message is now in the dead-letter store.
    async fn keep(&self, header: Option<&Header>, bytes: &[u8], error: &Hl7Error, publisher: Option<String>) -> bool {
        let input = RejectedInput {
            id: None,
            received_at: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64,
            channel: self.channel.into(),
            format: "hl7v2".into(),
            publisher,
            sender: header.map(Header::sender),
            control_id: header.map(|h| h.control_id.clone()).filter(|id| !id.is_empty()),
            location: Some(error.location.to_string()),
            reason: error.reason.clone(),
            content: bytes.to_vec(),
        };
        match self.store.record_rejected(&input).await {
            Ok(_) => true,
            Err(store_error) => {
                tracing::error!(error = %store_error, "a refused HL7 v2 message could not be kept in the dead-letter store");
                false
            }
        }
    }
}

enum Failure {
    /// Will never be filed as it is: AE/AR, kept.
    Rejected(Hl7Error),
    /// Could not be filed now: AR, the sender sends it again.
    Retry(Hl7Error),
}

impl Failure {
    fn retry(error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%error, "an HL7 v2 message could not be filed now");
        Self::Retry(unavailable("the gateway cannot file messages just now; send this message again later"))
    }
}

fn internal(reason: &str) -> Hl7Error {
    Hl7Error::new(ErrorCode::ApplicationInternal, Location::segment("MSH", 1), reason)
}

/// Now, as an HL7 DTM in UTC.
pub fn now_hl7() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}{:02}{:02}{:02}{:02}{:02}+0000", now.year(), now.month() as u8, now.day(), now.hour(), now.minute(), now.second())
}

/// A fresh control id for an ACK (20 characters: v2.3's limit).
pub fn ack_control_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_owned()
}

/// The publisher of a replayed input that an authenticated client (of organisation `ods`) sent.
pub fn replay_publisher(channel: &str, ods: &str) -> Option<Requester> {
    let ods = OdsCode::parse(ods).ok()?;
    let subject = format!("{channel}:replay:{ods}");
    Some(publishing_system(channel, ClientKind::Trust, ods, subject))
}

/// A publisher's system, as a registered client of `kind` for `ods` with a system token would be.
fn publishing_system(channel: &str, kind: ClientKind, ods: OdsCode, subject: String) -> Requester {
    let scopes = SmartScopes::parse_claim("system/*.cruds").expect("a valid scope");
    Requester::client(RegisteredClient { name: channel.into(), kind, ods: ods.clone(), scopes: scopes.clone(), secondary_uses: Vec::new() })
        .with_principal(Principal::System(SystemUser { subject, organisation: ods, purpose: PurposeOfUse::Treatment }, scopes))
}

enum PriorFiling {
    /// The same input, byte for byte: what it wrote (its Provenance's targets) is noted in the
    /// audit record of the request that found it.
    Same,
    /// Another input under the same key.
    Different,
}

/// Whether an input with this Provenance id was filed before, and whether it was the same one
/// (its digest is in the Provenance). When it was the same, what that filing wrote (the
/// Provenance's targets) goes into the running request's audit record.
async fn filed_before(fhir: &FhirService, provenance_id: &str, digest: &str) -> Result<Option<PriorFiling>, ApiError> {
    let provenance = ResourceType::parse("Provenance").expect("an R4 type");
    let Some(existing) = fhir.store.read(provenance, provenance_id).await?.filter(|version| !version.deleted) else {
        return Ok(None);
    };
    let same = existing
        .content
        .as_ref()
        .is_some_and(|content| std::str::from_utf8(content).is_ok_and(|text| text.contains(&format!("\"{digest}\""))));
    if same && let Some(content) = &existing.content {
        let provenance: serde_json::Value = serde_json::from_slice(content).unwrap_or_default();
        let targets: Vec<String> = provenance["target"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|target| target["reference"].as_str().map(str::to_owned))
            .collect();
        crate::audit::record_filed_before(&targets);
    }
    Ok(Some(if same { PriorFiling::Same } else { PriorFiling::Different }))
}

/// Patients of an extract committed in one transaction: one commit instead of fifty, while a
/// transaction stays a few hundred entries (each patient is 10–20).
const EXTRACT_BATCH_PATIENTS: usize = 50;

/// Commit a translated transaction Bundle as `permit`'s publisher.
async fn commit(fhir: &FhirService, permit: &crate::enforce::Permitted, bundle: &serde_json::Value) -> Result<(), Failure> {
    let body = serde_json::to_vec(bundle).map_err(|e| Failure::Rejected(internal(&e.to_string())))?;
    match crate::fhir::batch_or_transaction(fhir, permit, body, crate::fhir::ReturnPreference::Minimal).await {
        Ok(_) => Ok(()),
        Err(error @ (ApiError::Unavailable(_) | ApiError::Conflict(_))) => Err(Failure::retry(&error)),
        Err(error) => {
            let reasons: Vec<String> = error.outcome().issue.iter().filter_map(|issue| issue.diagnostics.clone()).collect();
            Err(Failure::Rejected(internal(&format!("the translated records were refused by the store: {}", reasons.join("; ")))))
        }
    }
}

/// What became of an extract.
#[derive(Debug, Default)]
pub struct ExtractReport {
    pub patients: usize,
    pub filed: usize,
    /// Filed before from the same extract, row for row: nothing written.
    pub duplicates: usize,
    /// Patients refused, each with the file, line and reason.
    pub refused: Vec<String>,
    /// Patients not filed now (the database is unavailable): run the ingest again.
    pub retry: Vec<String>,
    /// Codes kept without a SNOMED CT concept (flagged on the coding).
    pub unmapped_codes: usize,
}

impl std::fmt::Display for ExtractReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} patients: {} filed, {} already filed (nothing changed), {} refused, {} not filed now (database unavailable); {} codes kept without a SNOMED CT concept",
            self.patients,
            self.filed,
            self.duplicates,
            self.refused.len(),
            self.retry.len(),
            self.unmapped_codes
        )
    }
}

/// File a GP extract (`emis-csv` or `systmone-csv`): each patient's Bundle is committed on its
/// own (a refused patient does not hold back the others) as the practice's GP system — the
/// practice named in the extract, or `publisher` (an authenticated client) when given, which
/// may file only the patients of its own practice.
pub async fn file_extract(
    fhir: &FhirService,
    format: crate::translate::Format,
    files: &[crate::translate::emis::ExtractFile],
    maps: &crate::translate::codes::CodeMaps,
    publisher: Option<Requester>,
    channel: &'static str,
) -> Result<ExtractReport, crate::translate::rows::ExtractError> {
    let translated = crate::translate::translate_extract(format, files, maps)?;
    let mut report = ExtractReport { patients: translated.patients.len() + translated.refused.len(), ..ExtractReport::default() };
    report.refused.extend(translated.refused.iter().map(|(guid, error)| format!("patient {guid}: {error}")));
    // Patients ready to file, grouped by who publishes them.
    let mut ready: Vec<(crate::enforce::Permitted, Vec<crate::translate::emis::PatientBundle>)> = Vec::new();
    // The practices whose Type 1 opt-outs are brought up to date once the records are filed.
    let mut practices: Vec<Requester> = Vec::new();
    for patient in translated.patients {
        let place = format!("patient {}", patient.patient_guid);
        let Some(requester) = extract_publisher(&patient, publisher.as_ref(), channel, format, &place, &mut report.refused) else {
            continue;
        };
        if !practices.contains(&requester) {
            practices.push(requester.clone());
        }
        match filed_before(fhir, &patient.provenance_id, &patient.digest).await {
            Ok(Some(PriorFiling::Same)) => {
                report.duplicates += 1;
                continue;
            }
            Ok(Some(PriorFiling::Different)) => {
                report.refused.push(format!(
                    "{place}: this extract (same agreement and time) was already filed for this patient with different rows"
                ));
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "an extract could not be filed now");
                report.retry.push(format!("{place}: the database is unavailable; run the ingest again"));
                continue;
            }
        }
        match ready.iter_mut().find(|(permit, _)| *permit.requester() == requester) {
            Some((_, patients)) => patients.push(patient),
            None => match crate::enforce::authorize(requester, Interaction::Transaction, None) {
                Ok(permit) => ready.push((permit, vec![patient])),
                Err(error) => report.refused.push(format!("{place}: the publisher may not write: {error}")),
            },
        }
    }
    // Several patients per transaction (one commit, one fsync); a batch the store refuses is
    // filed again patient by patient, so one bad record holds back nobody else.
    for (permit, patients) in &ready {
        for batch in patients.chunks(EXTRACT_BATCH_PATIENTS) {
            let merged = crate::translate::transaction::merge_transactions(batch.iter().map(|patient| &patient.bundle));
            // Two patients of a batch naming one record (a patient registered twice under one
            // NHS number) make the transaction refuse itself (it changes a resource once), and
            // the fallback below files them one after the other.
            match commit(fhir, permit, &merged).await {
                Ok(()) => {
                    report.filed += batch.len();
                    report.unmapped_codes += batch.iter().map(|patient| patient.unmapped_codes).sum::<usize>();
                }
                Err(Failure::Retry(_)) => {
                    report.retry.extend(batch.iter().map(|p| format!("patient {}: not filed now; run the ingest again", p.patient_guid)));
                }
                Err(Failure::Rejected(_)) => {
                    for patient in batch {
                        let place = format!("patient {}", patient.patient_guid);
                        match commit(fhir, permit, &patient.bundle).await {
                            Ok(()) => {
                                report.filed += 1;
                                report.unmapped_codes += patient.unmapped_codes;
                            }
                            Err(Failure::Retry(_)) => report.retry.push(format!("{place}: not filed now; run the ingest again")),
                            Err(Failure::Rejected(error)) => report.refused.push(format!("{place}: {}", error.reason)),
                        }
                    }
                }
            }
        }
    }
    // After the records, so that a delta's changes, recodings and deletions count; for every
    // extract, a re-sent one too, so that a run that failed here is made good by running again.
    for requester in practices {
        if let Err(error) = reconcile_type1(fhir, &requester).await {
            tracing::warn!(%error, "Type 1 opt-outs could not be brought up to date");
            report.retry.push(format!("the practice's Type 1 opt-outs could not be brought up to date ({error}); run the ingest again"));
        }
    }
    Ok(report)
}

/// Who files a patient of an extract: the practice named in it, or `publisher` (an
/// authenticated client), which may file only the patients of its own practice. `None` (with
/// the reason noted in `refused`) when no one may.
fn extract_publisher(
    patient: &crate::translate::emis::PatientBundle,
    publisher: Option<&Requester>,
    channel: &'static str,
    format: crate::translate::Format,
    place: &str,
    refused: &mut Vec<String>,
) -> Option<Requester> {
    let practice = patient.organisation.as_deref().and_then(|ods| OdsCode::parse(ods).ok());
    match (publisher, practice) {
        // A practice's GP system publishes its own practice's record, never another's.
        (Some(publisher), Some(ods)) if publisher.client.as_ref().is_some_and(|client| client.ods != ods) => {
            let own = publisher.client.as_ref().map(|client| client.ods.to_string()).unwrap_or_default();
            refused.push(format!("{place}: the extract is practice {ods}'s record; this client publishes for {own} only"));
            None
        }
        (Some(publisher), _) => Some(publisher.clone()),
        (None, Some(ods)) => Some(publishing_system(channel, ClientKind::GpSystem, ods.clone(), format!("{channel}:{format}:{ods}"))),
        (None, None) => {
            refused.push(format!("{place}: the extract names no practice ODS code (Admin_Organisation) to publish as"));
            None
        }
    }
}

/// Every current resource a search matches, page after page.
async fn search_all(fhir: &FhirService, resource_type: ResourceType, params: &[(String, String)]) -> Result<Vec<StoredVersion>, ApiError> {
    let mut query = crate::fhir::parse_search(resource_type, params, &fhir.limits, crate::fhir::Handling::Strict)?.query;
    let mut all = Vec::new();
    loop {
        let page = fhir.store.search(&query).await?;
        all.extend(page.matches);
        if !page.more_after || page.last.is_none() {
            return Ok(all);
        }
        query.position = page.last;
    }
}

/// Bring the Type 1 opt-outs at the publisher's practice up to date with the records the
/// practice has filed (docs/information-governance.md, "Patient consent directives"): for each
/// patient, the latest opt-out or withdrawal code among them decides the Consent the access
/// rules read, and a Consent whose codes are gone is made inactive. From every record the
/// practice filed, not one extract's rows: an extract may be a delta that recodes or deletes a
/// row. Only changed Consents are written.
async fn reconcile_type1(fhir: &FhirService, requester: &Requester) -> Result<(), ApiError> {
    use crate::translate::gp;
    let Some(practice) = requester.client.as_ref().map(|client| client.ods.to_string()) else { return Ok(()) };
    let type_of = |name: &str| ResourceType::parse(name).expect("an R4 type");
    let internal = |error: serde_json::Error| ApiError::Internal(error.into());
    let own = |version: &StoredVersion| version.source_org.as_deref() == Some(practice.as_str());
    let count = ("_count".to_owned(), fhir.limits.max_count.to_string());
    // The coded records, by patient.
    let mut coded: std::collections::BTreeMap<String, Vec<serde_json::Value>> = std::collections::BTreeMap::new();
    for type_name in ["Observation", "Condition"] {
        let params = [("code".to_owned(), gp::TYPE1_CODE_SEARCH.to_owned()), count.clone()];
        for version in search_all(fhir, type_of(type_name), &params).await?.into_iter().filter(own) {
            let Some(content) = &version.content else { continue };
            let record: serde_json::Value = serde_json::from_slice(content).map_err(internal)?;
            let patient = record["subject"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).map(str::to_owned);
            if let Some(patient) = patient {
                coded.entry(patient).or_default().push(record);
            }
        }
    }
    // The wishes the practice's codes made before, by patient.
    let mut held: std::collections::BTreeMap<String, serde_json::Value> = std::collections::BTreeMap::new();
    let params = [("identifier".to_owned(), format!("{}|", gp::TYPE1_IDENTIFIER)), count];
    for version in search_all(fhir, type_of("Consent"), &params).await?.into_iter().filter(own) {
        let Some(content) = &version.content else { continue };
        let wish: serde_json::Value = serde_json::from_slice(content).map_err(internal)?;
        if let Some(patient) = wish["patient"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")) {
            held.insert(patient.to_owned(), wish);
        }
    }
    let patients: std::collections::BTreeSet<&String> = coded.keys().chain(held.keys()).collect();
    let consent_type = type_of("Consent");
    for patient in patients {
        let state = coded.get(patient).and_then(gp::type1_state);
        // Its own id when it exists, else a new random one: an id derived from practice and
        // patient would let anyone probe by PUT whether a patient has a Type 1 opt-out there.
        let id = match held.get(patient).and_then(|before| before["id"].as_str()) {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let wish = gp::type1_consent(&id, patient, &practice, state);
        let unchanged =
            held.get(patient).is_some_and(|before| before["status"] == wish["status"] && before["dateTime"] == wish["dateTime"]);
        if unchanged {
            continue;
        }
        let permit = crate::enforce::authorize(requester.clone(), Interaction::Update, Some(consent_type))?;
        let validated = crate::fhir::prepare(fhir, serde_json::to_vec(&wish).map_err(internal)?, Some(consent_type)).await?;
        crate::fhir::update(fhir, &permit, consent_type, &id, validated, None).await?;
    }
    Ok(())
}

/// What became of one discharge document.
#[derive(Debug)]
pub enum DocumentOutcome {
    /// Committed; the document version in words.
    Filed(String),
    /// This version was filed before, byte for byte: nothing written.
    Duplicate(String),
    /// A later version of the document is filed (by its date): this one changes nothing.
    Superseded(String),
    /// Refused, and kept in the dead-letter store (when asked to keep it).
    Rejected(crate::translate::discharge::DocumentError),
    /// Not filed now (the database is unavailable); send it again.
    Retry(String),
}

/// File one discharge document (`cda` or `itk3`) as `publisher` (an authenticated client), or
/// else as the trust the document names as its custodian. The document's Composition and
/// DocumentReference carry the sensitivity labels of its entries. A refused document is kept
/// with its reason when `keep_rejected` says so (a replay keeps the row it came from instead).
pub async fn file_document(
    fhir: &FhirService,
    dead_letters: &SqlStore,
    format: crate::translate::Format,
    bytes: &[u8],
    publisher: Option<Requester>,
    channel: &'static str,
    keep_rejected: bool,
) -> DocumentOutcome {
    use crate::translate::discharge::DocumentError;
    let publisher_ods = publisher.as_ref().and_then(|requester| requester.client.as_ref()).map(|client| client.ods.to_string());
    let refuse = |error: DocumentError, document: Option<String>| async move {
        tracing::info!(format = %format, location = %error.location, "a discharge document was refused");
        if keep_rejected {
            let input = RejectedInput {
                id: None,
                received_at: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64,
                channel: channel.into(),
                format: format.as_str().into(),
                publisher: publisher_ods.clone(),
                sender: publisher_ods.clone(),
                control_id: document,
                location: Some(error.location.clone()),
                reason: error.reason.clone(),
                content: bytes.to_vec(),
            };
            if let Err(store_error) = dead_letters.record_rejected(&input).await {
                tracing::error!(error = %store_error, "a refused document could not be kept in the dead-letter store");
                return DocumentOutcome::Retry("the gateway cannot keep refused documents just now; send this document again later".into());
            }
        }
        DocumentOutcome::Rejected(error)
    };
    let mut translated = match crate::translate::translate_document(format, bytes, time::OffsetDateTime::now_utc()) {
        Ok(translated) => translated,
        Err(error) => return refuse(error, None).await,
    };
    translated.label(&fhir.policy.labels);
    let document = translated.document.clone();
    match filed_before(fhir, &translated.provenance_id, &translated.digest).await {
        Ok(None) => {}
        Ok(Some(PriorFiling::Same)) => return DocumentOutcome::Duplicate(document),
        Ok(Some(PriorFiling::Different)) => {
            let error = match format {
                crate::translate::Format::Fhir => DocumentError::new(
                    format.as_str(),
                    "Bundle.identifier",
                    format!("{document} was already filed with different content; a changed Bundle needs a new identifier"),
                ),
                _ => DocumentError::new(
                    format.as_str(),
                    "document id",
                    format!("document {document} was already filed with different content; a changed document needs a new id or version"),
                ),
            };
            return refuse(error, Some(document)).await;
        }
        Err(error) => {
            tracing::warn!(%error, "a discharge document could not be filed now");
            return DocumentOutcome::Retry("the gateway cannot file documents just now; send this document again later".into());
        }
    }
    let requester = match (publisher, translated.organisation.as_deref().and_then(|ods| OdsCode::parse(ods).ok())) {
        (Some(publisher), _) => publisher,
        (None, Some(ods)) => publishing_system(channel, ClientKind::Trust, ods.clone(), format!("{channel}:{format}:{ods}")),
        (None, None) => {
            let error = match format {
                crate::translate::Format::Fhir => DocumentError::new(
                    format.as_str(),
                    "publisher",
                    "the input names no publishing organisation by ODS code (a Composition custodian or author, or a MessageHeader sender); \
                     post it as a registered client, or name the publisher (hie-gateway ingest --publisher ODS)",
                ),
                _ => DocumentError::new(
                    format.as_str(),
                    "custodian",
                    "the document names no custodian or author organisation by ODS code to publish it as",
                ),
            };
            return refuse(error, Some(document)).await;
        }
    };
    let earlier = match previous_version(fhir, &requester, &translated.bundle).await {
        Ok(PreviousVersion::None) => Vec::new(),
        // Said without the filed version's date: the answer tells the sender no more than it must.
        Ok(PreviousVersion::Later) => return DocumentOutcome::Superseded(document),
        Ok(PreviousVersion::Earlier { dropped }) => dropped,
        Err(error @ (ApiError::Forbidden { .. } | ApiError::Unauthenticated(_))) => {
            let reason = format!("the publisher may not read the filed version of this document to compare: {error}");
            return refuse(DocumentError::new(format.as_str(), "publisher", reason), Some(document)).await;
        }
        Err(error) => {
            tracing::warn!(%error, "a discharge document could not be compared with its filed version");
            return DocumentOutcome::Retry("the gateway cannot file documents just now; send this document again later".into());
        }
    };
    // What the filed version said and this one no longer does goes with it.
    if let Some(entries) = translated.bundle["entry"].as_array_mut() {
        entries.extend(earlier.iter().map(|reference| serde_json::json!({"request": {"method": "DELETE", "url": reference}})));
    }
    let permit = match crate::enforce::authorize(requester, Interaction::Transaction, None) {
        Ok(permit) => permit,
        Err(error) => {
            return refuse(
                DocumentError::new(format.as_str(), "publisher", format!("the publisher may not write: {error}")),
                Some(document),
            )
            .await;
        }
    };
    match commit(fhir, &permit, &translated.bundle).await {
        Ok(()) => DocumentOutcome::Filed(document),
        Err(Failure::Retry(error)) => DocumentOutcome::Retry(error.reason),
        Err(Failure::Rejected(error)) => {
            refuse(DocumentError::new(format.as_str(), "translated records", error.reason), Some(document)).await
        }
    }
}

/// The filed version of a document, seen from a new one.
enum PreviousVersion {
    /// None is filed.
    None,
    /// The filed version is dated later: the new one is older and must not replace it.
    Later,
    /// The filed version is earlier (or as old): the new one replaces it, and these entries of it
    /// (`Type/id`) are in it no longer.
    Earlier { dropped: Vec<String> },
}

/// Find the Composition a translated document replaces (its own conditional key: set id and
/// patient), and compare: by date, and entry by entry on the entries' identifiers.
async fn previous_version(fhir: &FhirService, publisher: &Requester, bundle: &serde_json::Value) -> Result<PreviousVersion, ApiError> {
    use crate::fhir::Handling;
    use serde_json::Value;
    let entries = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(composition) = entries.iter().find(|entry| entry["resource"]["resourceType"] == "Composition") else {
        return Ok(PreviousVersion::None);
    };
    let Some((_, query)) = composition["request"]["url"].as_str().and_then(|url| url.split_once('?')) else {
        return Ok(PreviousVersion::None);
    };
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()))
        .collect();
    let composition_type = ResourceType::parse("Composition").expect("an R4 type");
    crate::enforce::authorize(publisher.clone(), Interaction::SearchType, Some(composition_type))?;
    // The document's own key, looked up as the transaction's conditional upsert will look it up
    // (the write path reads unscoped), but only among what this publisher filed: a publisher
    // learns nothing of documents another organisation filed.
    let query = crate::fhir::parse_search(composition_type, &params, &fhir.limits, Handling::Strict)?.query;
    let organisation = publisher.client.as_ref().map(|client| client.ods.to_string());
    let page = fhir.store.search(&query).await?;
    let Some(filed) = page.matches.iter().find(|version| organisation.is_none() || version.source_org == organisation) else {
        return Ok(PreviousVersion::None);
    };
    let filed: Value = serde_json::from_slice(filed.content.as_deref().unwrap_or(b"{}")).map_err(|e| ApiError::Internal(e.into()))?;
    let filed = &filed;
    let start = |date: &Value| date.as_str().and_then(fhir_models::datetime::parse_range).map(|(range, _)| range.low);
    if let (Some(filed_at), Some(new_at)) = (start(&filed["date"]), start(&composition["resource"]["date"]))
        && filed_at > new_at
    {
        return Ok(PreviousVersion::Later);
    }
    // The entries the new version carries, by type and identifier.
    let carried: Vec<(&str, &Value, &Value)> = entries
        .iter()
        .filter(|entry| entry["request"]["method"] == "PUT")
        .flat_map(|entry| {
            let resource = &entry["resource"];
            resource["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |id| (resource["resourceType"].as_str().unwrap_or_default(), &id["system"], &id["value"]))
        })
        .collect();
    let mut references = Vec::new();
    collect_section_entries(&filed["section"], &mut references);
    let mut dropped = Vec::new();
    for reference in references {
        let Some((type_name, id)) = reference.split_once('/') else { continue };
        let Ok(resource_type) = ResourceType::parse(type_name) else { continue };
        let Some(version) = fhir.store.read(resource_type, id).await?.filter(|version| !version.deleted) else { continue };
        let Some(content) = version.content.as_ref() else { continue };
        let resource: Value = serde_json::from_slice(content).map_err(|e| ApiError::Internal(e.into()))?;
        let still_carried =
            resource["identifier"].as_array().into_iter().flatten().any(|id| {
                carried.iter().any(|(kind, system, value)| *kind == type_name && **system == id["system"] && **value == id["value"])
            });
        if !still_carried && !dropped.contains(&reference) {
            dropped.push(reference);
        }
    }
    Ok(PreviousVersion::Earlier { dropped })
}

/// Every `Type/id` a Composition's sections (and their sections) reference.
fn collect_section_entries(sections: &serde_json::Value, out: &mut Vec<String>) {
    for section in sections.as_array().into_iter().flatten() {
        out.extend(section["entry"].as_array().into_iter().flatten().filter_map(|entry| entry["reference"].as_str().map(str::to_owned)));
        collect_section_entries(&section["section"], out);
    }
}
