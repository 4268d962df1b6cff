//! The data half of the enforcement point (docs/information-governance.md): the consent scope of
//! a request, the patient-level answers to patient-targeted searches, and the recheck of every
//! resource on its way out.
//!
//! `enforce::authorize` decides whether the interaction may happen at all; this module decides
//! which resources the answer may hold. Searches carry the [`Scope`] into their SQL so that
//! totals, paging and includes count only what may be seen; every resource leaving is then
//! decided again with `consent::decide` over facts read from its own JSON (defence in depth: a
//! resource the SQL let through and the recheck refuses is withheld and logged as a bug).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use consent::{DenyCode, PatientFacts, Principal, ResourceFacts, Scope, Viewer, Visibility};
use fhir_models::ResourceType;
use serde_json::Value;

use super::FhirService;
use super::search_params::{Handling, parse_search};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::query::{Condition, Filter, IndexTable, SearchQuery, SystemMatch};
use crate::store::{StoreError, StoredVersion};

/// The scope of `permit`'s requester now. `targeted`: the patients a patient-targeted search
/// names, which a clinician's self-claimed relationship covers.
pub async fn scope(service: &FhirService, permit: &Permitted, targeted: &[String]) -> Result<Arc<Scope>, ApiError> {
    let now = fhir_models::datetime::to_micros(service.now());
    let viewer = match &permit.requester().principal {
        Some(Principal::Patient(patient, _)) => {
            Viewer::Patient { own: patients_with_nhs_number(service, &patient.nhs_number.to_string()).await? }
        }
        Some(Principal::Clinician(clinician, _)) if clinician.purpose.is_secondary() => {
            Viewer::Secondary { org: clinician.organisation.to_string(), purpose: clinician.purpose }
        }
        Some(Principal::System(system, _)) if system.purpose.is_secondary() => {
            Viewer::Secondary { org: system.organisation.to_string(), purpose: system.purpose }
        }
        Some(Principal::Clinician(clinician, _)) => Viewer::Clinician {
            org: clinician.organisation.to_string(),
            purpose: clinician.purpose,
            claimed: if clinician.self_claimed { targeted.to_vec() } else { Vec::new() },
        },
        Some(Principal::System(system, _)) => Viewer::System { org: system.organisation.to_string() },
        // authorize() lets no data request through without a principal; fail closed regardless.
        None => Viewer::Patient { own: Vec::new() },
    };
    Ok(Arc::new(Scope::new(&service.policy.access, &service.policy.code_set_labels, viewer, now)))
}

/// The context of `permit`'s writes: their organisation, and what they may see, which bounds
/// what they may change (patients have their own, stricter rule: `check_patient_write`).
pub async fn write_context(service: &FhirService, permit: &Permitted) -> Result<super::WriteContext, ApiError> {
    let scope = match &permit.requester().principal {
        Some(Principal::Patient(..)) => None,
        _ => Some(scope(service, permit, &[]).await?),
    };
    Ok(permit.write_context(scope))
}

/// Whether a write may change or delete `current`: only a record its writer may see. A write
/// must not be a way round the rules — overwriting another organisation's record it may not
/// read, or learning its content from an "unchanged" answer. Patients are the exception: the
/// registration feeds and the GP record keep one Patient per person up to date whoever filed it
/// first (a trust's ADT feed updates the demographics a practice's extract filed).
pub async fn writable(service: &FhirService, context: &super::WriteContext, current: &StoredVersion) -> Result<bool, ApiError> {
    let visible = within_reach(service, context, current).await?;
    if !visible {
        tracing::info!(rule = "write-not-shared", "a write to a record its writer may not see was refused");
        crate::audit::record(|note| note.rule = Some("write-not-shared".to_owned()));
    }
    Ok(visible)
}

/// Whether a writer may touch `current` — change it, delete it, point a reference at it: it is
/// deleted, a Patient, or a record they may see.
pub async fn within_reach(service: &FhirService, context: &super::WriteContext, current: &StoredVersion) -> Result<bool, ApiError> {
    let Some(scope) = &context.scope else { return Ok(true) };
    if current.deleted || current.resource_type.as_str() == "Patient" {
        return Ok(true);
    }
    // What an organisation published it always sees (`consent::decide`): the feeds' own
    // updates need no facts loaded.
    let (Viewer::System { org } | Viewer::Clinician { org, .. }) = &scope.viewer else {
        return Ok(false);
    };
    if current.source_org.as_deref() == Some(org.as_str()) {
        return Ok(true);
    }
    Ok(release(service, scope, vec![current.clone()], false).await?.iter().all(Released::is_visible))
}

/// The answer to a write whose target the writer may not see. It does not name the record: a
/// conditional write's match stays unnamed, as a conditional create's does.
pub fn not_writable(resource_type: ResourceType) -> ApiError {
    ApiError::Conflict(format!(
        "the {resource_type} this write targets holds a record you may not see, and it is not changed; \
         let the server choose ids (POST), or update your own records by their identifiers"
    ))
}

/// The current Patients carrying an NHS number. The gateway resolving who is asking or who is
/// named, not a disclosure: unscoped.
pub async fn patients_with_nhs_number(service: &FhirService, nhs_number: &str) -> Result<Vec<String>, ApiError> {
    let patient = ResourceType::parse("Patient").expect("Patient is an R4 type");
    let params =
        [("identifier".to_owned(), format!("{}|{}", fhir_models::system::NHS_NUMBER, nhs_number)), ("_count".to_owned(), "50".to_owned())];
    let query = parse_search(patient, &params, &service.limits, Handling::Strict)?.query;
    Ok(service.store.search(&query).await?.matches.into_iter().map(|version| version.id).collect())
}

/// Whom a search names, when it names exactly one patient (by id or by NHS number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    PatientId(String),
    NhsNumber(String),
}

/// The patients a search names, for the patient-level answers.
pub fn targets(query: &SearchQuery) -> Vec<Target> {
    let is_patient = query.resource_type.as_str() == "Patient";
    query.filters.iter().filter_map(|filter| target(filter, is_patient)).collect()
}

fn target(filter: &Filter, on_patient: bool) -> Option<Target> {
    match filter {
        Filter::PatientCompartment(id) => Some(Target::PatientId(id.clone())),
        Filter::Ids(ids) if on_patient && ids.len() == 1 => Some(Target::PatientId(ids[0].clone())),
        Filter::Match { param, any_of, negate: false, .. } if on_patient && param == "identifier" => {
            nhs_number(any_of).map(Target::NhsNumber)
        }
        Filter::Match { table: IndexTable::Reference, param, any_of, negate: false } if param == "patient" || param == "subject" => {
            match any_of.as_slice() {
                [Condition::Reference { types, id }] if names_patient_only(types, param) => Some(Target::PatientId(id.clone())),
                _ => None,
            }
        }
        Filter::Chain { param, target_type, filter } if (param == "patient" || param == "subject") && target_type.as_str() == "Patient" => {
            match filter.as_ref() {
                Filter::Match { param, any_of, negate: false, .. } if param == "identifier" => nhs_number(any_of).map(Target::NhsNumber),
                _ => None,
            }
        }
        _ => None,
    }
}

fn names_patient_only(types: &[ResourceType], param: &str) -> bool {
    match types {
        [only] => only.as_str() == "Patient",
        [] => param == "patient",
        _ => false,
    }
}

fn nhs_number(any_of: &[Condition]) -> Option<String> {
    match any_of {
        [Condition::Token { system: SystemMatch::Is(system), code: Some(code) }] if system == fhir_models::system::NHS_NUMBER => {
            Some(code.clone())
        }
        _ => None,
    }
}

/// The Patient ids a target names (none when no such Patient is stored).
pub async fn resolve(service: &FhirService, target: &Target) -> Result<Vec<String>, ApiError> {
    match target {
        Target::PatientId(id) => {
            let patient = ResourceType::parse("Patient").expect("Patient is an R4 type");
            Ok(match service.store.read(patient, id).await? {
                Some(version) if !version.deleted => vec![version.id],
                _ => Vec::new(),
            })
        }
        Target::NhsNumber(number) => patients_with_nhs_number(service, number).await,
    }
}

/// Refuse a clinician's patient-targeted search for a patient-level reason (no relationship,
/// dissent from sharing), before it runs; `Ok` lets it run, with the facts it read of the
/// patients (for [`Scope::with_known_patients`]).
pub async fn gate(service: &FhirService, scope: &Scope, patient_ids: &[String]) -> Result<Vec<PatientFacts>, ApiError> {
    crate::audit::record(|note| note.patients.extend(patient_ids.iter().cloned()));
    let Some(org) = scope.org() else { return Ok(Vec::new()) };
    if !matches!(scope.viewer, Viewer::Clinician { .. }) || scope.is_emergency() {
        return Ok(Vec::new());
    }
    let facts = service.store.patient_facts(patient_ids).await?;
    let refs: Vec<&PatientFacts> = facts.iter().collect();
    // What the requester's organisation published itself is asked only when the patient's facts
    // alone would refuse (it lets the publisher search what it filed): one query fewer for
    // every permitted search.
    let Some(code) = consent::patient_gate(scope, &refs, false) else { return Ok(facts) };
    match consent::patient_gate(scope, &refs, service.store.published_for(patient_ids, org).await?) {
        None => Ok(facts),
        Some(_) => Err(refused(code)),
    }
}

fn refused(code: DenyCode) -> ApiError {
    let message = match code {
        DenyCode::NoPatientConsent => "the patient has asked that their record is not shared with your organisation",
        _ => "your organisation has no legitimate relationship with this patient (registration, a recent encounter or a referral)",
    };
    let rule = match code {
        DenyCode::NoPatientConsent => "patient-dissent",
        _ => "legitimate-relationship",
    };
    tracing::info!(rule, "patient-level refusal");
    crate::audit::record(|note| note.rule = Some(rule.to_owned()));
    ApiError::Forbidden { code, rule, message: message.into() }
}

/// A resource on its way out, after the recheck: its JSON as the requester may see it.
pub struct Released {
    pub version: StoredVersion,
    pub visibility: Visibility,
    /// The patients whose compartment holds it.
    pub patients: Vec<String>,
}

impl Released {
    pub fn is_visible(&self) -> bool {
        self.visibility.is_visible()
    }
}

/// A stored version as the requester may see it (redacted, sections withheld), noted as
/// returned; `None` when they may not (a conditional create's match, say).
pub async fn shown(service: &FhirService, permit: &Permitted, version: StoredVersion) -> Result<Option<StoredVersion>, ApiError> {
    let scope = scope(service, permit, &[]).await?;
    Ok(returned(release(service, &scope, vec![version], false).await?).pop())
}

/// The answer to a conditional create whose match the requester may not see: that it exists
/// (an idempotent create must say so), but neither its id nor its content.
pub const EXISTING_NOT_SHARED: &str =
    "a resource matching the condition already exists; it is not shared with you, so nothing more is said";

/// Keep the visible versions, noting each in the request's audit record as returned.
pub fn returned(released: Vec<Released>) -> Vec<StoredVersion> {
    let visible: Vec<Released> = released.into_iter().filter(Released::is_visible).collect();
    crate::audit::record(|note| {
        for released in &visible {
            let version = &released.version;
            note.returned.push(format!("{}/{}/_history/{}", version.resource_type, version.id, version.version_id));
            note.patients.extend(released.patients.iter().cloned());
        }
    });
    visible.into_iter().map(|released| released.version).collect()
}

/// Decide every version again and shape what is released: restricted Patients redacted,
/// Compositions without references to what the requester may not see. A version the SQL scope
/// let through (`scoped`) and the recheck withholds is a bug: it is withheld and logged.
pub async fn release(service: &FhirService, scope: &Scope, versions: Vec<StoredVersion>, scoped: bool) -> Result<Vec<Released>, ApiError> {
    let mut facts = Facts::of(service, &versions);
    restricted_now(service, &versions, &mut facts).await?;
    // Binaries are decided by the resource their securityContext names (one entry per version).
    let contexts = security_contexts(service, &versions).await?;
    let mut patients = facts.patient_ids();
    patients.extend(contexts.iter().flatten().flatten().flat_map(|context| context.facts.patients.iter().cloned()));
    let known = PatientIndex::load(service, scope, patients).await?;
    let mut released = Vec::with_capacity(versions.len());
    for ((version, resource), context) in versions.into_iter().zip(facts.resources).zip(contexts) {
        let visibility = match (&resource, &context) {
            (Parsed::Unreadable, _) => Visibility::Withheld(consent::Withheld::NotShared),
            (Parsed::Facts(binary), Some(Some(context))) => match withheld_label(scope, binary) {
                Some(reason) => Visibility::Withheld(reason),
                // A Binary holding a document is the whole document: withheld when the
                // requester would see only part of it.
                None => match known.decide(scope, &context.facts) {
                    Visibility::Visible { .. }
                        if context.version.resource_type.as_str() == "Composition"
                            && document_is_partial(service, scope, &known, &context.version).await? =>
                    {
                        Visibility::Withheld(consent::Withheld::NotShared)
                    }
                    visibility => visibility,
                },
            },
            (_, Some(None)) => Visibility::Withheld(consent::Withheld::NotShared),
            (Parsed::Facts(resource), None) => known.decide(scope, resource),
            // A deletion marker carries nothing to release (a deletion has no securityContext).
            (Parsed::Deletion, _) => Visibility::Visible { redact: false },
        };
        if scoped && !visibility.is_visible() {
            tracing::error!(
                resource_type = %version.resource_type, id = %version.id, "the SQL scope let through a resource the recheck withholds"
            );
        }
        let mut patients = match &resource {
            Parsed::Facts(facts) => facts.patients.clone(),
            _ => Vec::new(),
        };
        patients.extend(context.flatten().map(|context| context.facts.patients.clone()).unwrap_or_default());
        let version = match visibility {
            Visibility::Visible { redact } => shape(service, scope, &known, version, redact).await?,
            Visibility::Withheld(reason) => {
                // Whose record was asked for, and the rule that withheld it, go in the audit.
                crate::audit::record(|note| {
                    note.patients.extend(patients.iter().cloned());
                    note.withheld.insert(reason.name().into());
                });
                version
            }
        };
        released.push(Released { version, visibility, patients });
    }
    Ok(released)
}

/// A label of the Binary's own that withholds it whatever its securityContext says.
fn withheld_label(scope: &Scope, binary: &ResourceFacts) -> Option<consent::Withheld> {
    binary.labels.iter().find(|label| scope.withheld_labels.contains(label)).map(|label| match label.as_str() {
        consent::access::PRACTICE_CONFIDENTIAL => consent::Withheld::PracticeConfidential,
        consent::access::NOT_FOR_PATIENT => consent::Withheld::NotForPatient,
        _ => consent::Withheld::Sensitive,
    })
}

/// A past version of a Patient is shown as the Patient is now: restricted (S-flag) now means
/// redacted in every version.
async fn restricted_now(service: &FhirService, versions: &[StoredVersion], facts: &mut Facts) -> Result<(), ApiError> {
    for (version, parsed) in versions.iter().zip(facts.resources.iter_mut()) {
        let Parsed::Facts(resource) = parsed else { continue };
        if version.resource_type.as_str() != "Patient" || resource.labels.iter().any(|l| l == consent::access::RESTRICTED) {
            continue;
        }
        let current = service.store.read(version.resource_type, &version.id).await?;
        if current.filter(|c| c.version_id != version.version_id).and_then(|c| c.content).is_some_and(|content| {
            serde_json::from_slice::<Value>(&content).is_ok_and(|value| {
                value["meta"]["security"].as_array().is_some_and(|labels| {
                    labels.iter().any(|label| {
                        label["code"] == consent::access::RESTRICTED
                            && label["system"].as_str().is_some_and(consent::access::is_label_system)
                    })
                })
            })
        }) {
            Arc::make_mut(resource).labels.push(consent::access::RESTRICTED.to_owned());
        }
    }
    Ok(())
}

/// What a version's JSON says for the rules.
#[derive(Clone)]
enum Parsed {
    Facts(Arc<ResourceFacts>),
    /// A deletion: no content.
    Deletion,
    /// Stored JSON that does not parse: withheld from everyone (its labels are unknown).
    Unreadable,
}

/// The facts of versions already read, by version: a version never changes and its facts are
/// the same for every requester (`ResourceFacts::from_resource`), so a resource read again is
/// not parsed again. Only data is kept, never a decision.
pub struct FactsCache(moka::sync::Cache<(ResourceType, Box<str>, i64, i64), Parsed>);

impl Default for FactsCache {
    fn default() -> Self {
        Self(moka::sync::Cache::new(100_000))
    }
}

impl FactsCache {
    fn facts(&self, policy: &consent::AccessPolicy, version: &StoredVersion) -> Parsed {
        let Some(content) = version.content.as_deref() else { return Parsed::Deletion };
        // With its time too: a database restored under a running gateway reuses version numbers.
        let key = (version.resource_type, Box::from(version.id.as_str()), version.version_id, version.last_updated);
        self.0.get_with(key, || match serde_json::from_slice::<Value>(content) {
            Ok(value) => Parsed::Facts(Arc::new(ResourceFacts::from_resource(
                policy,
                version.resource_type,
                &version.id,
                version.source_org.as_deref(),
                &value,
            ))),
            Err(_) => Parsed::Unreadable,
        })
    }
}

/// The facts of each version.
struct Facts {
    resources: Vec<Parsed>,
}

impl Facts {
    fn of(service: &FhirService, versions: &[StoredVersion]) -> Self {
        Self { resources: versions.iter().map(|version| service.resource_facts.facts(&service.policy.access, version)).collect() }
    }

    fn patient_ids(&self) -> BTreeSet<String> {
        self.resources
            .iter()
            .filter_map(|parsed| match parsed {
                Parsed::Facts(facts) => Some(facts),
                _ => None,
            })
            .flat_map(|r| r.patients.iter().cloned())
            .collect()
    }
}

/// The facts of the patients a set of resources belongs to, loaded once per response.
struct PatientIndex {
    facts: HashMap<String, PatientFacts>,
}

impl PatientIndex {
    async fn load(service: &FhirService, scope: &Scope, patients: BTreeSet<String>) -> Result<Self, StoreError> {
        // Patients' and systems' decisions read no relationship or wish, except a system's
        // redaction of a restricted Patient (its practice).
        let needed = !patients.is_empty() && scope.org().is_some();
        let ids: Vec<String> = patients.into_iter().collect();
        let facts = if needed { service.store.patient_facts(&ids).await? } else { Vec::new() };
        Ok(Self { facts: facts.into_iter().map(|f| (f.id.clone(), f)).collect() })
    }

    fn decide(&self, scope: &Scope, resource: &ResourceFacts) -> Visibility {
        consent::decide(scope, resource, |id| self.facts.get(id))
    }
}

/// What a Binary's `securityContext` names: its facts, and its version.
struct SecurityContext {
    facts: Arc<ResourceFacts>,
    version: StoredVersion,
}

/// For each version, in order: `None` unless it is a Binary with a `securityContext`; then the
/// resource that names (`None` when it names none stored, so the Binary is withheld).
async fn security_contexts(service: &FhirService, versions: &[StoredVersion]) -> Result<Vec<Option<Option<SecurityContext>>>, ApiError> {
    let mut contexts = Vec::with_capacity(versions.len());
    for version in versions {
        let context = match (version.resource_type.as_str(), version.content.as_deref()) {
            ("Binary", Some(content)) => {
                let value: Value = serde_json::from_slice(content).unwrap_or(Value::Null);
                match consent::access::security_context("Binary", &value) {
                    Some(target) => Some(stored_context(service, target).await?),
                    None => None,
                }
            }
            _ => None,
        };
        contexts.push(context);
    }
    Ok(contexts)
}

async fn stored_context(service: &FhirService, target: Option<(String, String)>) -> Result<Option<SecurityContext>, ApiError> {
    let Some((resource_type, id)) = target.and_then(|(type_name, id)| Some((ResourceType::parse(&type_name).ok()?, id))) else {
        return Ok(None);
    };
    Ok(match service.store.read(resource_type, &id).await? {
        Some(target) if !target.deleted => match service.resource_facts.facts(&service.policy.access, &target) {
            Parsed::Facts(facts) => Some(SecurityContext { facts, version: target }),
            Parsed::Deletion | Parsed::Unreadable => None,
        },
        _ => None,
    })
}

/// Whether this requester would see less than the whole of a document (a Composition): the
/// Composition itself withheld, or some of its section entries. The original document a
/// Binary or a DocumentReference carries repeats every entry, so it is released only whole.
async fn document_is_partial(
    service: &FhirService,
    scope: &Scope,
    known: &PatientIndex,
    composition: &StoredVersion,
) -> Result<bool, ApiError> {
    let Parsed::Facts(facts) = service.resource_facts.facts(&service.policy.access, composition) else { return Ok(true) };
    let missing: BTreeSet<String> = facts.patients.iter().filter(|p| !known.facts.contains_key(*p)).cloned().collect();
    let mut index = PatientIndex::load(service, scope, missing).await?;
    index.facts.extend(known.facts.iter().map(|(k, v)| (k.clone(), v.clone())));
    if !index.decide(scope, &facts).is_visible() {
        return Ok(true);
    }
    // The original names its patients as it was sent: whoever sees a restricted patient's record
    // redacted (address, telecom, practice) does not get it, since it cannot be redacted.
    let patient_type = ResourceType::parse("Patient").expect("an R4 type");
    for patient in &facts.patients {
        let Some(version) = service.store.read(patient_type, patient).await?.filter(|version| !version.deleted) else { continue };
        if let Parsed::Facts(patient_facts) = service.resource_facts.facts(&service.policy.access, &version)
            && matches!(index.decide(scope, &patient_facts), Visibility::Visible { redact: true })
        {
            return Ok(true);
        }
    }
    let Some(Ok(mut value)) = composition.content.as_deref().map(serde_json::from_slice::<Value>) else { return Ok(true) };
    withhold_sections(service, scope, &index, &mut value).await
}

/// A DocumentReference's attachments without their content when the document they carry (the
/// Composition its `context.related` names) would be partial for this requester; the
/// DocumentReference then carries GP Connect's `confidential-items` warning. Returns whether
/// anything changed.
async fn withhold_attachments(service: &FhirService, scope: &Scope, known: &PatientIndex, reference: &mut Value) -> Result<bool, ApiError> {
    let related: Vec<String> = reference["context"]["related"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|related| related["reference"].as_str().map(str::to_owned))
        .collect();
    let mut partial = false;
    for target in &related {
        let Some((resource_type, id)) = fhir_models::reference::Reference::parse(target).local() else { continue };
        if resource_type.as_str() != "Composition" {
            continue;
        }
        partial = match service.store.read(resource_type, id).await? {
            Some(composition) if !composition.deleted => document_is_partial(service, scope, known, &composition).await?,
            _ => false,
        };
        if partial {
            break;
        }
    }
    if !partial {
        return Ok(false);
    }
    for content in reference["content"].as_array_mut().map(Vec::as_mut_slice).unwrap_or(&mut []) {
        if let Some(attachment) = content.get_mut("attachment").and_then(Value::as_object_mut) {
            for carried in ["data", "url", "size", "hash"] {
                attachment.remove(carried);
            }
        }
    }
    if let Some(object) = reference.as_object_mut() {
        let extensions = object.entry("extension").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = extensions {
            items.push(serde_json::json!({"url": WARNING_EXTENSION, "valueCode": "confidential-items"}));
        }
    }
    Ok(true)
}

/// The JSON the requester sees of a visible resource.
async fn shape(
    service: &FhirService,
    scope: &Scope,
    known: &PatientIndex,
    mut version: StoredVersion,
    redact: bool,
) -> Result<StoredVersion, ApiError> {
    let is_composition = version.resource_type.as_str() == "Composition";
    // Only a DocumentReference that names a related document can carry more than it may show.
    let is_related_document = version.resource_type.as_str() == "DocumentReference"
        && version.content.as_deref().is_some_and(|content| content.windows(9).any(|w| w == b"\"related\""));
    if !redact && !is_composition && !is_related_document {
        return Ok(version);
    }
    let Some(content) = version.content.as_deref() else { return Ok(version) };
    let Ok(mut value) = serde_json::from_slice::<Value>(content) else { return Ok(version) };
    let mut changed = false;
    if redact {
        consent::access::redact(&mut value);
        changed = true;
    }
    if is_composition {
        changed |= withhold_sections(service, scope, known, &mut value).await?;
    }
    if is_related_document {
        changed |= withhold_attachments(service, scope, known, &mut value).await?;
    }
    if changed {
        version.content = Some(serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.into()))?.into());
    }
    Ok(version)
}

/// GP Connect's warning that items were withheld.
const WARNING_EXTENSION: &str = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-ListWarningCode";
const WITHHELD_NARRATIVE: &str = "<div xmlns=\"http://www.w3.org/1999/xhtml\">Confidential items have been withheld</div>";

/// Remove section entries the requester may not see (or that do not resolve); replace the
/// narrative of each section that lost any, since it may repeat them. Returns whether anything
/// changed.
async fn withhold_sections(service: &FhirService, scope: &Scope, known: &PatientIndex, composition: &mut Value) -> Result<bool, ApiError> {
    let mut references = Vec::new();
    collect_section_references(&composition["section"], &mut references);
    if references.is_empty() {
        return Ok(false);
    }
    let mut targets = Vec::new();
    for reference in &references {
        if let Some((resource_type, id)) = fhir_models::reference::Reference::parse(reference).local()
            && let Some(version) = service.store.read(resource_type, id).await?
            && !version.deleted
        {
            targets.push((reference.clone(), version));
        }
    }
    let versions: Vec<StoredVersion> = targets.iter().map(|(_, v)| v.clone()).collect();
    let facts = Facts::of(service, &versions);
    let mut extra =
        PatientIndex::load(service, scope, facts.patient_ids().into_iter().filter(|p| !known.facts.contains_key(p)).collect()).await?;
    extra.facts.extend(known.facts.iter().map(|(k, v)| (k.clone(), v.clone())));
    let visible: BTreeSet<&str> = targets
        .iter()
        .zip(&facts.resources)
        .filter(|(_, resource)| matches!(resource, Parsed::Facts(r) if extra.decide(scope, r).is_visible()))
        .map(|((reference, _), _)| reference.as_str())
        .collect();
    let Some(sections) = composition.get_mut("section") else { return Ok(false) };
    let withheld = filter_sections(sections, &visible);
    if withheld && let Some(object) = composition.as_object_mut() {
        // The document's own narrative may repeat what a section held.
        if object.contains_key("text") {
            object.insert("text".into(), serde_json::json!({"status": "generated", "div": WITHHELD_NARRATIVE}));
        }
        let extensions = object.entry("extension").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = extensions {
            items.push(serde_json::json!({"url": WARNING_EXTENSION, "valueCode": "confidential-items"}));
        }
    }
    Ok(withheld)
}

fn collect_section_references(sections: &Value, out: &mut Vec<String>) {
    for section in sections.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        for entry in section["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(reference) = entry["reference"].as_str() {
                out.push(reference.to_owned());
            }
        }
        collect_section_references(&section["section"], out);
    }
}

/// Keep only visible entries; returns whether any section lost one.
fn filter_sections(sections: &mut Value, visible: &BTreeSet<&str>) -> bool {
    let mut withheld = false;
    for section in sections.as_array_mut().map(Vec::as_mut_slice).unwrap_or(&mut []) {
        let mut lost = false;
        if let Some(entries) = section.get_mut("entry").and_then(Value::as_array_mut) {
            let before = entries.len();
            entries.retain(|entry| entry["reference"].as_str().is_some_and(|r| visible.contains(r)));
            lost = entries.len() != before;
            if entries.is_empty() && lost {
                section.as_object_mut().map(|s| s.remove("entry"));
                section["emptyReason"] = serde_json::json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "withheld"}]});
            }
        }
        if let Some(children) = section.get_mut("section") {
            lost |= filter_sections(children, visible);
        }
        if lost {
            section["text"] = serde_json::json!({"status": "generated", "div": WITHHELD_NARRATIVE});
            withheld = true;
        }
    }
    withheld
}

/// A patient's wishes are changed by the patient, or by the organisation that recorded them (a
/// practice taking down a dissent the patient gave there), never by another organisation — not
/// even the one a wish excludes. Another organisation's Consent is answered as a missing one;
/// Consents are changed by id, not by search.
async fn check_consent_change(
    service: &FhirService,
    permit: &Permitted,
    resource_type: ResourceType,
    id: Option<&str>,
    conditional: bool,
) -> Result<(), ApiError> {
    if resource_type.as_str() != "Consent" {
        return Ok(());
    }
    if conditional {
        return Err(ApiError::Forbidden {
            code: DenyCode::AccessDenied,
            rule: "consent-change",
            message: "Consents are changed by id, not by search".into(),
        });
    }
    let Some(id) = id else { return Ok(()) };
    let organisation = permit.requester().principal.as_ref().and_then(|principal| principal.organisation()).map(|ods| ods.to_string());
    match service.store.read(resource_type, id).await? {
        Some(current) if !current.deleted && current.source_org != organisation => {
            Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")))
        }
        _ => Ok(()),
    }
}

/// A patient writes only their own sharing wishes: patient-privacy Consents about one of their
/// own Patients, replacing or deleting only such Consents (a Consent of someone else's is
/// answered as not known). Other requesters' writes are not restricted here. `conditional`
/// writes search unscoped, so patients may not use them.
pub async fn check_patient_write(
    service: &FhirService,
    permit: &Permitted,
    resource_type: ResourceType,
    id: Option<&str>,
    resource: Option<&Value>,
    conditional: bool,
) -> Result<(), ApiError> {
    let Some(Principal::Patient(patient, _)) = &permit.requester().principal else {
        return check_consent_change(service, permit, resource_type, id, conditional).await;
    };
    let forbidden =
        |message: &str| ApiError::Forbidden { code: DenyCode::AccessDenied, rule: "patient-self-access", message: message.into() };
    if resource_type.as_str() != "Consent" {
        return Err(forbidden("patients write only their own sharing wishes (Consent)"));
    }
    if conditional {
        return Err(forbidden("patients write their Consents by id, not by search"));
    }
    let own = patients_with_nhs_number(service, &patient.nhs_number.to_string()).await?;
    let is_own = |consent: &Value| {
        consent::directives::is_privacy_consent(consent)
            && consent::directives::consent_patient(consent).is_ok_and(|patient| own.iter().any(|id| id == patient))
    };
    if let Some(id) = id {
        let current = service.store.read(resource_type, id).await?;
        let current_is_own = current
            .filter(|version| !version.deleted)
            .and_then(|version| version.content)
            .and_then(|content| serde_json::from_slice::<Value>(&content).ok())
            .is_some_and(|consent| is_own(&consent));
        if !current_is_own {
            return Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")));
        }
    }
    if let Some(resource) = resource
        && !is_own(resource)
    {
        return Err(ApiError::Unprocessable(fhir_models::OperationOutcome::single(
            fhir_models::outcome::Issue::error(
                fhir_models::outcome::IssueType::BusinessRule,
                "a patient's Consent must have scope patient-privacy and reference their own Patient record",
            )
            .at("Consent.patient"),
        )));
    }
    Ok(())
}
