//! Who sees which resource (docs/information-governance.md, "Who sees a resource").
//!
//! One [`Scope`] per request holds every parameter of the decision: who is asking, the time,
//! the labels withheld, the relationship windows. The store compiles the same `Scope` into the
//! SQL of every search, so paging and totals count only what may be seen; [`decide`] evaluates it
//! for each resource on its way out (defence in depth: the two must agree, and a property test
//! holds them together).

use fhir_models::search::IndexEntries;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::directives::{DirectiveRow, Effect};
use crate::relationships::RelationshipKind;
use crate::requester::PurposeOfUse;

/// The systems whose `meta.security` codes are read as labels (current and older spellings).
pub const LABEL_SYSTEMS: [&str; 4] = [
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "http://hl7.org/fhir/v3/ActCode",
    "http://hl7.org/fhir/v3/Confidentiality",
];

/// Practice-confidential: never leaves the organisation that recorded it.
pub const PRACTICE_CONFIDENTIAL: &str = "V";
/// Not for patient view.
pub const NOT_FOR_PATIENT: &str = "NOPAT";
/// A restricted (PDS S-flag) patient.
pub const RESTRICTED: &str = "R";
/// The legally restricted classes of the default code sets, always sensitive.
pub const DEFAULT_SENSITIVE: [&str; 3] = ["HIV", "STD", "SEX"];
/// Documents may repeat what any class of record holds.
pub const DOCUMENT_TYPES: [&str; 2] = ["Composition", "DocumentReference"];
/// The elements of a restricted Patient others do not see.
pub const REDACTED_ELEMENTS: [&str; 3] = ["address", "telecom", "generalPractitioner"];
/// The Patient search parameters over those elements.
pub const REDACTED_PARAMS: [&str; 10] = [
    "address",
    "address-city",
    "address-country",
    "address-postalcode",
    "address-state",
    "address-use",
    "phone",
    "email",
    "telecom",
    "general-practitioner",
];

pub fn is_label_system(system: &str) -> bool {
    LABEL_SYSTEMS.contains(&system)
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The policy's parameters (`[consent]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessPolicy {
    /// Types anyone with direct-care access may read when they are in no patient's record.
    pub shared_types: Vec<String>,
    /// Labels withheld outside their source organisation, beyond `HIV`, `STD`, `SEX` and the
    /// labels of the configured sensitive code sets.
    pub sensitive_labels: Vec<String>,
    pub encounter_window_days: i64,
    pub referral_window_days: i64,
    /// Results held back from patients until a delay has passed.
    pub release_delays: Vec<ReleaseDelay>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            shared_types: ["Organization", "Location", "Practitioner", "PractitionerRole", "Medication"].map(str::to_owned).to_vec(),
            sensitive_labels: Vec::new(),
            encounter_window_days: 365,
            referral_window_days: 365,
            release_delays: vec![ReleaseDelay {
                resource_type: "DiagnosticReport".into(),
                category_system: "http://terminology.hl7.org/CodeSystem/v2-0074".into(),
                category_code: "RAD".into(),
                date_param: "issued".into(),
                days: 28,
            }],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDelay {
    pub resource_type: String,
    pub category_system: String,
    pub category_code: String,
    /// A date search parameter of the type (`issued`, `date`).
    pub date_param: String,
    pub days: i64,
}

/// Who is asking, as far as the data-level rules need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// A patient: the ids of the Patients carrying their NHS number.
    Patient { own: Vec<String> },
    /// A backend system of an organisation.
    System { org: String },
    /// A clinician of an organisation; `claimed` are patients with a self-claimed relationship
    /// in this request.
    Clinician { org: String, purpose: PurposeOfUse, claimed: Vec<String> },
    /// A clinician or system of an organisation approved for a secondary use (`purpose`), which
    /// sees the records of patients who have not opted out of it.
    Secondary { org: String, purpose: PurposeOfUse },
}

/// A release delay as of a request: held back unless every date ends at or before `cutoff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseHold {
    pub resource_type: String,
    pub category_system: String,
    pub category_code: String,
    pub date_param: String,
    pub cutoff: i64,
}

/// Every parameter of one request's decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub viewer: Viewer,
    /// Microseconds since the epoch.
    pub now: i64,
    /// Labels that withhold a resource: `V` and the sensitive labels for staff (unless they
    /// published it); `V` and `NOPAT` for patients.
    pub withheld_labels: Vec<String>,
    pub shared_types: Vec<String>,
    /// Encounters and episodes ended before this no longer relate.
    pub encounter_cutoff: i64,
    /// Referrals authored before this no longer relate.
    pub referral_cutoff: i64,
    /// Patients only.
    pub release_holds: Vec<ReleaseHold>,
    /// Patients whose answer does not depend on the resource, already decided from their facts
    /// (`true`: every resource of theirs may be seen as far as they are concerned; `false`:
    /// none), so the SQL need not derive it row by row. Empty unless set by
    /// [`Scope::with_known_patients`].
    pub known_patients: Vec<(String, bool)>,
}

impl Scope {
    /// `code_set_labels`: the labels the configured sensitive code sets stamp.
    pub fn new(policy: &AccessPolicy, code_set_labels: &[String], viewer: Viewer, now: i64) -> Self {
        let mut withheld_labels = vec![PRACTICE_CONFIDENTIAL.to_owned()];
        let mut release_holds = Vec::new();
        match &viewer {
            Viewer::Patient { .. } => {
                withheld_labels.push(NOT_FOR_PATIENT.to_owned());
                release_holds = policy
                    .release_delays
                    .iter()
                    .map(|delay| ReleaseHold {
                        resource_type: delay.resource_type.clone(),
                        category_system: delay.category_system.clone(),
                        category_code: delay.category_code.clone(),
                        date_param: delay.date_param.clone(),
                        cutoff: now.saturating_sub(delay.days.saturating_mul(MICROS_PER_DAY)),
                    })
                    .collect();
            }
            Viewer::System { .. } | Viewer::Clinician { .. } | Viewer::Secondary { .. } => {
                let sensitive = DEFAULT_SENSITIVE.iter().map(|l| (*l).to_owned()).chain(policy.sensitive_labels.iter().cloned());
                withheld_labels.extend(sensitive.chain(code_set_labels.iter().cloned()));
            }
        }
        withheld_labels.sort();
        withheld_labels.dedup();
        Self {
            viewer,
            now,
            withheld_labels,
            shared_types: policy.shared_types.clone(),
            encounter_cutoff: now.saturating_sub(policy.encounter_window_days.saturating_mul(MICROS_PER_DAY)),
            referral_cutoff: now.saturating_sub(policy.referral_window_days.saturating_mul(MICROS_PER_DAY)),
            release_holds,
            known_patients: Vec::new(),
        }
    }

    /// Note the patients whose answer these facts settle for every resource: for a clinician (not
    /// in an emergency), a patient without a relationship (or self-claim) refuses every resource;
    /// one with a relationship and no sharing wish in force permits every resource (the
    /// organisation, label and type rules still apply).
    pub fn with_known_patients(mut self, facts: &[PatientFacts]) -> Self {
        let Viewer::Clinician { org, claimed, .. } = &self.viewer else { return self };
        if self.is_emergency() {
            return self;
        }
        let known = facts
            .iter()
            .filter_map(|patient| {
                let related = claimed.contains(&patient.id) || patient.has_relationship(&self, org);
                let no_wishes = patient.in_force_rows(self.now, Effect::Deny).next().is_none();
                match (related, no_wishes) {
                    (false, _) => Some((patient.id.clone(), false)),
                    (true, true) => Some((patient.id.clone(), true)),
                    (true, false) => None,
                }
            })
            .collect();
        self.known_patients = known;
        self
    }

    /// The requester's organisation, for staff.
    pub fn org(&self) -> Option<&str> {
        match &self.viewer {
            Viewer::System { org } | Viewer::Clinician { org, .. } | Viewer::Secondary { org, .. } => Some(org),
            Viewer::Patient { .. } => None,
        }
    }

    pub fn is_emergency(&self) -> bool {
        matches!(&self.viewer, Viewer::Clinician { purpose: PurposeOfUse::EmergencyTreatment | PurposeOfUse::BreakTheGlass, .. })
    }
}

/// What the rules read of one resource: taken from its stored JSON (labels, compartment,
/// release facts) and its row (source), not from the search indexes, so the recheck is
/// independent of the SQL.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResourceFacts {
    pub resource_type: String,
    pub id: String,
    pub source: Option<String>,
    pub labels: Vec<String>,
    pub patients: Vec<String>,
    /// For types with a release delay: `category` tokens and the hold's date values (ends).
    pub categories: Vec<(Option<String>, Option<String>)>,
    pub dates: Vec<(String, i64)>,
}

impl ResourceFacts {
    /// The facts of a version, the same for every viewer (the categories and dates of types
    /// with a release delay are read whoever asks; only patients' scopes hold them back), so a
    /// version's facts can be kept and reused.
    pub fn from_resource(
        policy: &AccessPolicy,
        resource_type: fhir_models::ResourceType,
        id: &str,
        source: Option<&str>,
        resource: &Value,
    ) -> Self {
        let delays: Vec<&ReleaseDelay> = policy.release_delays.iter().filter(|d| d.resource_type == resource_type.as_str()).collect();
        // Only the compartment, and the category and dates a release delay reads.
        let wanted = |param: &str| !delays.is_empty() && (param == "category" || delays.iter().any(|delay| delay.date_param == param));
        let index = fhir_models::search::extract_some(resource_type, id, resource, wanted);
        Self::from_parts(resource_type.as_str(), id, source, resource, &index, &delays)
    }

    fn from_parts(
        resource_type: &str,
        id: &str,
        source: Option<&str>,
        resource: &Value,
        index: &IndexEntries,
        delays: &[&ReleaseDelay],
    ) -> Self {
        let labels = resource["meta"]["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|label| label["system"].as_str().is_some_and(is_label_system))
            .filter_map(|label| label["code"].as_str().map(str::to_owned))
            .collect();
        let (mut categories, mut dates) = (Vec::new(), Vec::new());
        if !delays.is_empty() {
            categories = index.tokens.iter().filter(|t| t.param == "category").map(|t| (t.system.clone(), t.code.clone())).collect();
            dates = index
                .dates
                .iter()
                .filter(|d| delays.iter().any(|delay| delay.date_param == d.param))
                .map(|d| (d.param.clone(), d.high))
                .collect();
        }
        Self {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            source: source.map(str::to_owned),
            labels,
            patients: index.patient_compartment.clone(),
            categories,
            dates,
        }
    }

    fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

/// A relationship of a patient with an organisation, as loaded for decisions: the ODS codes
/// of the organisation it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relationship {
    pub kind: RelationshipKind,
    pub orgs: Vec<String>,
    pub ends: Option<i64>,
}

/// What the rules read of one patient.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PatientFacts {
    pub id: String,
    pub relationships: Vec<Relationship>,
    /// Each row with the key of the Consent it came from (exceptions belong to their Consent's
    /// rule).
    pub directives: Vec<(i64, DirectiveRow)>,
}

impl PatientFacts {
    /// LR(p, O) at the scope's time.
    pub fn has_relationship(&self, scope: &Scope, org: &str) -> bool {
        self.relationships.iter().any(|relationship| relationship.orgs.iter().any(|o| o == org) && in_force(scope, relationship))
    }

    pub fn is_registered_with(&self, org: &str) -> bool {
        self.relationships.iter().any(|r| r.kind == RelationshipKind::Registered && r.orgs.iter().any(|o| o == org))
    }

    fn in_force_rows(&self, now: i64, effect: Effect) -> impl Iterator<Item = &(i64, DirectiveRow)> {
        self.directives.iter().filter(move |(_, row)| {
            row.effect == effect && row.starts.is_none_or(|starts| starts <= now) && row.ends.is_none_or(|ends| ends >= now)
        })
    }

    /// dissent(p, r, O, purpose).
    pub fn dissents(&self, scope: &Scope, resource: &ResourceFacts, org: &str, purpose: &str) -> bool {
        self.in_force_rows(scope.now, Effect::Deny).any(|(key, deny)| {
            deny_applies(deny, resource, org, purpose)
                && !self.directives.iter().any(|(other, exception)| {
                    other == key
                        && exception.rule == deny.rule
                        && exception.effect == Effect::Except
                        && exception_applies(exception, resource, org, purpose)
                })
        })
    }

    /// A dissent that withholds every resource from `org` (other than its own).
    pub fn dissents_entirely(&self, scope: &Scope, org: &str, purpose: &str) -> bool {
        self.in_force_rows(scope.now, Effect::Deny).any(|(key, deny)| {
            deny.source.is_none()
                && deny.class.is_none()
                && deny.label.is_none()
                && deny.recipient.as_deref().is_none_or(|r| r == org)
                && deny.purpose.as_deref().is_none_or(|p| p == purpose)
                && !self.directives.iter().any(|(other, exception)| {
                    other == key
                        && exception.rule == deny.rule
                        && exception.effect == Effect::Except
                        && exception.recipient.as_deref().is_none_or(|r| r == org)
                        && exception_purpose_holds(exception, purpose)
                })
        })
    }
}

fn in_force(scope: &Scope, relationship: &Relationship) -> bool {
    match relationship.kind {
        RelationshipKind::Registered => true,
        RelationshipKind::Encounter | RelationshipKind::CareEpisode => relationship.ends.is_none_or(|ends| ends >= scope.encounter_cutoff),
        RelationshipKind::Referral => relationship.ends.is_some_and(|ends| ends >= scope.referral_cutoff),
    }
}

fn is_document(resource_type: &str) -> bool {
    DOCUMENT_TYPES.contains(&resource_type)
}

fn deny_applies(deny: &DirectiveRow, resource: &ResourceFacts, org: &str, purpose: &str) -> bool {
    deny.recipient.as_deref().is_none_or(|r| r == org)
        && deny.source.as_deref().is_none_or(|s| resource.source.as_deref().is_none_or(|source| source == s))
        && deny.class.as_deref().is_none_or(|c| c == resource.resource_type || (is_document(&resource.resource_type) && !is_document(c)))
        && deny.label.as_deref().is_none_or(|l| resource.has_label(l))
        && deny.purpose.as_deref().is_none_or(|p| p == purpose)
}

fn exception_applies(exception: &DirectiveRow, resource: &ResourceFacts, org: &str, purpose: &str) -> bool {
    exception.recipient.as_deref().is_none_or(|r| r == org)
        && exception.source.as_deref().is_none_or(|s| resource.source.as_deref() == Some(s))
        && exception.class.as_deref().is_none_or(|c| c == resource.resource_type)
        && exception.label.as_deref().is_none_or(|l| resource.has_label(l))
        && exception_purpose_holds(exception, purpose)
}

/// An exception that names no purpose lets an organisation through for care only: "share only
/// with my practice" does not hand the practice's research unit the whole record.
pub fn exception_purpose_holds(exception: &DirectiveRow, purpose: &str) -> bool {
    match exception.purpose.as_deref() {
        Some(named) => named == purpose,
        None => !SECONDARY_PURPOSES.contains(&purpose),
    }
}

/// The v3-ActReason codes of the secondary uses.
pub const SECONDARY_PURPOSES: [&str; 3] = ["HOPERAT", "HRESCH", "PUBHLTH"];

/// Why a resource is withheld, for logs and the audit trail (never for the requester).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Withheld {
    NotOwnRecord,
    NotForPatient,
    PracticeConfidential,
    Sensitive,
    ReleaseDelay,
    NotShared,
    NoRelationship,
    Dissent,
    /// The patient opted out of this secondary use (National Data Opt-out, Type 1 opt-out or
    /// their own wish), or what they wish is unknown.
    OptedOut,
}

impl Withheld {
    pub fn name(self) -> &'static str {
        match self {
            Self::NotOwnRecord => "patient-self-access",
            Self::NotForPatient => "not-for-patient",
            Self::PracticeConfidential => "practice-confidential",
            Self::Sensitive => "sensitive-class",
            Self::ReleaseDelay => "release-delay",
            Self::NotShared => "source-only",
            Self::NoRelationship => "no-relationship",
            Self::Dissent => "patient-dissent",
            Self::OptedOut => "secondary-use-opt-out",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// `redact`: a restricted Patient shown without address, telecom and practice.
    Visible {
        redact: bool,
    },
    Withheld(Withheld),
}

impl Visibility {
    pub fn is_visible(&self) -> bool {
        matches!(self, Self::Visible { .. })
    }
}

/// visible(requester, r). `patient` gives the facts of each patient in the resource's
/// compartment (`None`: nothing known of that patient).
pub fn decide<'p>(scope: &Scope, resource: &ResourceFacts, patient: impl Fn(&str) -> Option<&'p PatientFacts>) -> Visibility {
    let withheld_label = || resource.labels.iter().find(|l| scope.withheld_labels.contains(l)).map(|l| l.as_str());
    let label_reason = |label: &str| match label {
        PRACTICE_CONFIDENTIAL => Withheld::PracticeConfidential,
        NOT_FOR_PATIENT => Withheld::NotForPatient,
        _ => Withheld::Sensitive,
    };
    match &scope.viewer {
        Viewer::Patient { own } => {
            if resource.patients.is_empty() || !resource.patients.iter().all(|p| own.contains(p)) {
                return Visibility::Withheld(Withheld::NotOwnRecord);
            }
            if let Some(label) = withheld_label() {
                return Visibility::Withheld(label_reason(label));
            }
            if held_back(scope, resource) {
                return Visibility::Withheld(Withheld::ReleaseDelay);
            }
            Visibility::Visible { redact: false }
        }
        Viewer::System { org } => {
            if resource.source.as_deref() == Some(org.as_str()) {
                return visible(resource, patient, org);
            }
            if !resource.patients.is_empty() || !scope.shared_types.contains(&resource.resource_type) {
                return Visibility::Withheld(Withheld::NotShared);
            }
            match withheld_label() {
                Some(label) => Visibility::Withheld(label_reason(label)),
                None => Visibility::Visible { redact: false },
            }
        }
        Viewer::Clinician { org, purpose, claimed } => {
            if resource.source.as_deref() == Some(org.as_str()) {
                return visible(resource, patient, org);
            }
            if let Some(label) = withheld_label() {
                return Visibility::Withheld(label_reason(label));
            }
            if resource.patients.is_empty() {
                return if scope.shared_types.contains(&resource.resource_type) {
                    Visibility::Visible { redact: false }
                } else {
                    Visibility::Withheld(Withheld::NotShared)
                };
            }
            if !scope.is_emergency() {
                for id in &resource.patients {
                    let Some(facts) = patient(id) else { return Visibility::Withheld(Withheld::NoRelationship) };
                    if !claimed.contains(id) && !facts.has_relationship(scope, org) {
                        return Visibility::Withheld(Withheld::NoRelationship);
                    }
                    if facts.dissents(scope, resource, org, purpose.code()) {
                        return Visibility::Withheld(Withheld::Dissent);
                    }
                }
            }
            visible(resource, patient, org)
        }
        Viewer::Secondary { org, purpose } => {
            // Beyond direct care nothing sensitive or practice-confidential is used, not even
            // what the organisation recorded itself, and the opt-outs cover its own records too.
            if let Some(label) = withheld_label() {
                return Visibility::Withheld(label_reason(label));
            }
            if resource.patients.is_empty() {
                let shared = resource.source.as_deref() == Some(org.as_str()) || scope.shared_types.contains(&resource.resource_type);
                return if shared { Visibility::Visible { redact: false } } else { Visibility::Withheld(Withheld::NotShared) };
            }
            for id in &resource.patients {
                match patient(id) {
                    Some(facts) if !facts.dissents(scope, resource, org, purpose.code()) => {}
                    _ => return Visibility::Withheld(Withheld::OptedOut),
                }
            }
            visible(resource, patient, org)
        }
    }
}

/// Visible to staff of `org`; a restricted Patient is redacted unless `org` is its practice.
fn visible<'p>(resource: &ResourceFacts, patient: impl Fn(&str) -> Option<&'p PatientFacts>, org: &str) -> Visibility {
    let restricted = resource.resource_type == "Patient" && resource.has_label(RESTRICTED);
    let registered = || patient(&resource.id).is_some_and(|facts| facts.is_registered_with(org));
    Visibility::Visible { redact: restricted && !registered() }
}

fn held_back(scope: &Scope, resource: &ResourceFacts) -> bool {
    scope.release_holds.iter().any(|hold| {
        hold.resource_type == resource.resource_type
            && resource.categories.iter().any(|(system, code)| {
                system.as_deref() == Some(hold.category_system.as_str()) && code.as_deref() == Some(hold.category_code.as_str())
            })
            && {
                let mut dates = resource.dates.iter().filter(|(param, _)| *param == hold.date_param).peekable();
                dates.peek().is_none() || !dates.all(|(_, high)| *high <= hold.cutoff)
            }
    })
}

/// Why a patient-targeted search by a clinician is refused before it runs, if it is.
/// `published_by_requester`: the requester's organisation published something in one of the
/// patients' compartments. `patients`: every Patient the search names (none if unknown).
pub fn patient_gate(scope: &Scope, patients: &[&PatientFacts], published_by_requester: bool) -> Option<crate::DenyCode> {
    let Viewer::Clinician { org, purpose, claimed } = &scope.viewer else { return None };
    if scope.is_emergency() || published_by_requester {
        return None;
    }
    let related: Vec<&&PatientFacts> = patients.iter().filter(|p| claimed.contains(&p.id) || p.has_relationship(scope, org)).collect();
    if related.is_empty() {
        return Some(crate::DenyCode::NoRelationship);
    }
    if related.iter().all(|p| p.dissents_entirely(scope, org, purpose.code())) {
        return Some(crate::DenyCode::NoPatientConsent);
    }
    None
}

/// A Binary's `securityContext`: `None` without one; `Some(None)` when it names no stored
/// resource (then the Binary is withheld); else the `Type` and id it names.
pub fn security_context(resource_type: &str, resource: &Value) -> Option<Option<(String, String)>> {
    if resource_type != "Binary" {
        return None;
    }
    let context = resource.get("securityContext")?;
    Some(
        context["reference"]
            .as_str()
            .and_then(|text| fhir_models::reference::Reference::parse(text).local())
            .map(|(resource_type, id)| (resource_type.as_str().to_owned(), id.to_owned())),
    )
}

/// What a Composition's sections reference, at any depth, each as the local resource it names
/// (`None` for a reference this store cannot hold): the entries a document's original repeats,
/// so a Binary holding the document is seen only by whoever may see every one of them. Empty
/// for every other type.
pub fn document_entries(resource_type: &str, resource: &Value) -> Vec<Option<(String, String)>> {
    fn collect(sections: &Value, out: &mut Vec<Option<(String, String)>>) {
        for section in sections.as_array().map(Vec::as_slice).unwrap_or(&[]) {
            for entry in section["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(text) = entry["reference"].as_str() {
                    let local = fhir_models::reference::Reference::parse(text).local();
                    out.push(local.map(|(resource_type, id)| (resource_type.as_str().to_owned(), id.to_owned())));
                }
            }
            collect(&section["section"], out);
        }
    }
    let mut entries = Vec::new();
    if resource_type == "Composition" {
        collect(&resource["section"], &mut entries);
    }
    entries
}

/// Remove what a restricted Patient shows only to its practice.
pub fn redact(resource: &mut Value) {
    if let Some(object) = resource.as_object_mut() {
        for element in REDACTED_ELEMENTS {
            object.remove(element);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directives::directive_rows;
    use crate::relationships::RelationshipKind::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000_000;
    const DAY: i64 = MICROS_PER_DAY;

    fn clinician(org: &str, purpose: PurposeOfUse) -> Scope {
        Scope::new(&AccessPolicy::default(), &[], Viewer::Clinician { org: org.into(), purpose, claimed: vec![] }, NOW)
    }

    fn record(source: &str, labels: &[&str], patients: &[&str]) -> ResourceFacts {
        ResourceFacts {
            resource_type: "Observation".into(),
            id: "o1".into(),
            source: Some(source.into()),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            patients: patients.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn patient(id: &str, relationships: &[(RelationshipKind, &str, Option<i64>)]) -> PatientFacts {
        PatientFacts {
            id: id.into(),
            relationships: relationships
                .iter()
                .map(|(kind, org, ends)| Relationship { kind: *kind, orgs: vec![(*org).into()], ends: *ends })
                .collect(),
            directives: Vec::new(),
        }
    }

    fn with_consent(mut facts: PatientFacts, provision: Value) -> PatientFacts {
        let consent = json!({"resourceType": "Consent", "status": "active", "patient": {"reference": format!("Patient/{}", facts.id)},
            "scope": {"coding": [{"system": crate::directives::CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]}, "provision": provision});
        let key = facts.directives.len() as i64 + 1;
        facts.directives.extend(directive_rows(&consent).unwrap().into_iter().map(|row| (key, row)));
        facts
    }

    fn decide_for(scope: &Scope, resource: &ResourceFacts, facts: &PatientFacts) -> Visibility {
        decide(scope, resource, |id| (id == facts.id).then_some(facts))
    }

    #[test]
    fn relationships_open_the_record_within_their_windows() {
        let scope = clinician("A81001", PurposeOfUse::Treatment);
        let observation = record("RXA", &[], &["p1"]);
        let registered = patient("p1", &[(Registered, "A81001", None)]);
        assert!(decide_for(&scope, &observation, &registered).is_visible());
        let recent = patient("p1", &[(Encounter, "A81001", Some(NOW - 300 * DAY))]);
        assert!(decide_for(&scope, &observation, &recent).is_visible());
        let old = patient("p1", &[(Encounter, "A81001", Some(NOW - 400 * DAY))]);
        assert_eq!(decide_for(&scope, &observation, &old), Visibility::Withheld(Withheld::NoRelationship));
        let ongoing = patient("p1", &[(Encounter, "A81001", None)]);
        assert!(decide_for(&scope, &observation, &ongoing).is_visible());
        let other_org = patient("p1", &[(Registered, "A81002", None)]);
        assert_eq!(decide_for(&scope, &observation, &other_org), Visibility::Withheld(Withheld::NoRelationship));
        // an organisation always sees what it published
        assert!(decide_for(&scope, &record("A81001", &["HIV", "V"], &["p1"]), &other_org).is_visible());
    }

    #[test]
    fn sensitive_and_confidential_records_stay_with_their_source_even_in_an_emergency() {
        let related = patient("p1", &[(Registered, "A81001", None)]);
        for purpose in [PurposeOfUse::Treatment, PurposeOfUse::EmergencyTreatment] {
            let scope = clinician("A81001", purpose);
            assert_eq!(decide_for(&scope, &record("RXA", &["HIV"], &["p1"]), &related), Visibility::Withheld(Withheld::Sensitive));
            assert_eq!(decide_for(&scope, &record("RXA", &["V"], &["p1"]), &related), Visibility::Withheld(Withheld::PracticeConfidential));
        }
        let emergency = clinician("B99999", PurposeOfUse::BreakTheGlass);
        let unrelated = with_consent(patient("p1", &[]), json!({"type": "deny"}));
        assert!(decide_for(&emergency, &record("RXA", &[], &["p1"]), &unrelated).is_visible());
    }

    #[test]
    fn dissent_withholds_what_it_covers() {
        let scope = clinician("A81001", PurposeOfUse::Treatment);
        let related = || patient("p1", &[(Registered, "A81001", None)]);
        let everything = with_consent(related(), json!({"type": "deny"}));
        assert_eq!(decide_for(&scope, &record("RXA", &[], &["p1"]), &everything), Visibility::Withheld(Withheld::Dissent));
        assert_eq!(patient_gate(&scope, &[&everything], false), Some(crate::DenyCode::NoPatientConsent));
        assert_eq!(patient_gate(&scope, &[&everything], true), None);
        let ods = |code: &str| json!({"identifier": {"system": fhir_models::system::ODS_ORGANIZATION_CODE, "value": code}});
        let role = |code: &str| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code}]});
        let only_b = with_consent(
            related(),
            json!({"type": "deny", "provision": [{"type": "permit", "actor": [{"role": role("IRCP"), "reference": ods("B82002")}]}]}),
        );
        assert_eq!(decide_for(&scope, &record("RXA", &[], &["p1"]), &only_b), Visibility::Withheld(Withheld::Dissent));
        let b = clinician("B82002", PurposeOfUse::Treatment);
        let only_b_related = PatientFacts {
            relationships: vec![Relationship { kind: Registered, orgs: vec!["B82002".into()], ends: None }],
            ..only_b.clone()
        };
        assert!(decide_for(&b, &record("RXA", &[], &["p1"]), &only_b_related).is_visible());
        let not_from_rxa = with_consent(
            related(),
            json!({"type": "permit", "provision": [{"type": "deny", "actor": [{"role": role("AUT"), "reference": ods("RXA")}]}]}),
        );
        assert_eq!(decide_for(&scope, &record("RXA", &[], &["p1"]), &not_from_rxa), Visibility::Withheld(Withheld::Dissent));
        assert!(decide_for(&scope, &record("RXB", &[], &["p1"]), &not_from_rxa).is_visible());
        assert_eq!(patient_gate(&scope, &[&not_from_rxa], false), None);
        let no_meds = with_consent(
            related(),
            json!({"type": "permit", "provision": [{"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "MedicationStatement"}]}]}),
        );
        let mut medication = record("RXA", &[], &["p1"]);
        medication.resource_type = "MedicationStatement".into();
        assert_eq!(decide_for(&scope, &medication, &no_meds), Visibility::Withheld(Withheld::Dissent));
        assert!(decide_for(&scope, &record("RXA", &[], &["p1"]), &no_meds).is_visible());
        let mut document = record("RXA", &[], &["p1"]);
        document.resource_type = "Composition".into();
        assert_eq!(decide_for(&scope, &document, &no_meds), Visibility::Withheld(Withheld::Dissent), "documents may repeat medicines");
    }

    #[test]
    fn secondary_use_honours_the_opt_outs_and_uses_nothing_sensitive() {
        let researcher =
            Scope::new(&AccessPolicy::default(), &[], Viewer::Secondary { org: "RXA".into(), purpose: PurposeOfUse::Research }, NOW);
        let purposes = json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HOPERAT"},
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"},
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "PUBHLTH"}]);
        // No relationship is needed, and the patient's care records are used...
        let stranger = patient("p1", &[]);
        assert!(decide_for(&researcher, &record("B82002", &[], &["p1"]), &stranger).is_visible());
        // ...unless they opted out nationally (all records, the organisation's own too),
        let national = with_consent(patient("p1", &[]), json!({"type": "deny", "purpose": purposes}));
        for source in ["B82002", "RXA"] {
            assert_eq!(decide_for(&researcher, &record(source, &[], &["p1"]), &national), Visibility::Withheld(Withheld::OptedOut));
        }
        // which never touches direct care,
        let carer = clinician("A81001", PurposeOfUse::Treatment);
        let registered = with_consent(patient("p1", &[(Registered, "A81001", None)]), json!({"type": "deny", "purpose": purposes}));
        assert!(decide_for(&carer, &record("RXA", &[], &["p1"]), &registered).is_visible());
        // or at their practice (Type 1: what that practice recorded, and records of unknown source).
        let ods = json!({"identifier": {"system": fhir_models::system::ODS_ORGANIZATION_CODE, "value": "B82002"}});
        let custodian = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}]});
        let type1 = with_consent(
            patient("p1", &[]),
            json!({"type": "deny", "purpose": purposes, "actor": [{"role": custodian, "reference": ods}]}),
        );
        assert_eq!(decide_for(&researcher, &record("B82002", &[], &["p1"]), &type1), Visibility::Withheld(Withheld::OptedOut));
        assert!(decide_for(&researcher, &record("RXB", &[], &["p1"]), &type1).is_visible());
        let unknown_source = ResourceFacts { source: None, ..record("RXB", &[], &["p1"]) };
        assert_eq!(decide_for(&researcher, &unknown_source, &type1), Visibility::Withheld(Withheld::OptedOut));
        // A wish for one purpose is not a wish for another; a plain dissent covers them all.
        let no_research = with_consent(patient("p1", &[]), json!({"type": "deny", "purpose": [purposes[1]]}));
        assert_eq!(decide_for(&researcher, &record("RXB", &[], &["p1"]), &no_research), Visibility::Withheld(Withheld::OptedOut));
        let planner =
            Scope::new(&AccessPolicy::default(), &[], Viewer::Secondary { org: "RXA".into(), purpose: PurposeOfUse::Operations }, NOW);
        assert!(decide_for(&planner, &record("RXB", &[], &["p1"]), &no_research).is_visible());
        let nothing = with_consent(patient("p1", &[]), json!({"type": "deny"}));
        assert_eq!(decide_for(&planner, &record("RXB", &[], &["p1"]), &nothing), Visibility::Withheld(Withheld::OptedOut));
        // "Share only with RXA" lets RXA through for care, not its research unit; an exception
        // naming the purpose does.
        let ircp = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]});
        let rxa = json!({"identifier": {"system": fhir_models::system::ODS_ORGANIZATION_CODE, "value": "RXA"}});
        let only_rxa = with_consent(
            patient("p1", &[(Registered, "RXA", None)]),
            json!({"type": "deny", "provision": [{"type": "permit", "actor": [{"role": ircp, "reference": rxa}]}]}),
        );
        assert!(decide_for(&clinician("RXA", PurposeOfUse::Treatment), &record("RXB", &[], &["p1"]), &only_rxa).is_visible());
        assert_eq!(decide_for(&researcher, &record("RXB", &[], &["p1"]), &only_rxa), Visibility::Withheld(Withheld::OptedOut));
        let research_too = with_consent(
            patient("p1", &[]),
            json!({"type": "deny", "provision": [{"type": "permit", "actor": [{"role": ircp, "reference": rxa}], "purpose": [purposes[1]]}]}),
        );
        assert!(decide_for(&researcher, &record("RXB", &[], &["p1"]), &research_too).is_visible());
        // Unknown wishes are not taken as consent.
        assert_eq!(decide(&researcher, &record("RXB", &[], &["p1"]), |_| None), Visibility::Withheld(Withheld::OptedOut));
        // Sensitive and practice-confidential records are not used, whoever recorded them.
        for label in ["HIV", "V"] {
            assert!(!decide_for(&researcher, &record("RXA", &[label], &["p1"]), &stranger).is_visible());
        }
        // Outside any record: its own organisation's, and shared reference data.
        let mut service = record("RXB", &[], &[]);
        service.resource_type = "HealthcareService".into();
        assert_eq!(decide_for(&researcher, &service, &stranger), Visibility::Withheld(Withheld::NotShared));
        service.source = Some("RXA".into());
        assert!(decide_for(&researcher, &service, &stranger).is_visible());
        // A restricted patient's address is not theirs to use.
        let mut restricted = record("RXB", &["R"], &["p1"]);
        (restricted.resource_type, restricted.id) = ("Patient".into(), "p1".into());
        assert_eq!(decide_for(&researcher, &restricted, &stranger), Visibility::Visible { redact: true });
    }

    #[test]
    fn a_consent_outside_its_period_is_not_in_force() {
        let scope = clinician("A81001", PurposeOfUse::Treatment);
        let lapsed = with_consent(patient("p1", &[(Registered, "A81001", None)]), json!({"type": "deny", "period": {"end": "2020-01-01"}}));
        assert!(decide_for(&scope, &record("RXA", &[], &["p1"]), &lapsed).is_visible());
    }

    #[test]
    fn every_patient_of_a_shared_record_must_permit() {
        let scope = clinician("A81001", PurposeOfUse::Treatment);
        let p1 = patient("p1", &[(Registered, "A81001", None)]);
        let p2 = patient("p2", &[]);
        let both = record("RXA", &[], &["p1", "p2"]);
        let facts = |id: &str| [&p1, &p2].into_iter().find(|p| p.id == id);
        assert_eq!(decide(&scope, &both, facts), Visibility::Withheld(Withheld::NoRelationship));
    }

    #[test]
    fn patients_see_their_own_record_less_what_is_not_for_them() {
        let scope = Scope::new(&AccessPolicy::default(), &[], Viewer::Patient { own: vec!["p1".into()] }, NOW);
        let none = |_: &str| None;
        assert!(decide(&scope, &record("RXA", &["HIV"], &["p1"]), none).is_visible());
        assert_eq!(decide(&scope, &record("RXA", &["NOPAT"], &["p1"]), none), Visibility::Withheld(Withheld::NotForPatient));
        assert_eq!(decide(&scope, &record("RXA", &["V"], &["p1"]), none), Visibility::Withheld(Withheld::PracticeConfidential));
        assert_eq!(decide(&scope, &record("RXA", &[], &["p2"]), none), Visibility::Withheld(Withheld::NotOwnRecord));
        let mut report = record("RXA", &[], &["p1"]);
        report.resource_type = "DiagnosticReport".into();
        report.categories = vec![(Some("http://terminology.hl7.org/CodeSystem/v2-0074".into()), Some("RAD".into()))];
        report.dates = vec![("issued".into(), NOW - 10 * DAY)];
        assert_eq!(decide(&scope, &report, none), Visibility::Withheld(Withheld::ReleaseDelay));
        report.dates = vec![("issued".into(), NOW - 30 * DAY)];
        assert!(decide(&scope, &report, none).is_visible());
        report.dates.clear();
        assert_eq!(decide(&scope, &report, none), Visibility::Withheld(Withheld::ReleaseDelay), "no date: held back");
    }

    #[test]
    fn systems_read_their_own_and_shared_reference_data() {
        let scope = Scope::new(&AccessPolicy::default(), &[], Viewer::System { org: "RXA".into() }, NOW);
        let none = |_: &str| None;
        assert!(decide(&scope, &record("RXA", &[], &["p1"]), none).is_visible());
        assert_eq!(decide(&scope, &record("RXB", &[], &["p1"]), none), Visibility::Withheld(Withheld::NotShared));
        let mut organisation = record("RXB", &[], &[]);
        organisation.resource_type = "Organization".into();
        assert!(decide(&scope, &organisation, none).is_visible());
    }

    #[test]
    fn restricted_patients_are_redacted_outside_their_practice() {
        let mut facts = record("RXA", &["R"], &["p1"]);
        facts.resource_type = "Patient".into();
        facts.id = "p1".into();
        let registered = patient("p1", &[(Registered, "A81001", None), (Encounter, "RXB", None)]);
        assert_eq!(decide_for(&clinician("A81001", PurposeOfUse::Treatment), &facts, &registered), Visibility::Visible { redact: false });
        assert_eq!(decide_for(&clinician("RXB", PurposeOfUse::Treatment), &facts, &registered), Visibility::Visible { redact: true });
        let mut patient_json =
            json!({"resourceType": "Patient", "address": [{}], "telecom": [{}], "generalPractitioner": [{}], "name": [{}]});
        redact(&mut patient_json);
        assert_eq!(patient_json, json!({"resourceType": "Patient", "name": [{}]}));
    }

    #[test]
    fn the_gate_refuses_only_when_the_answer_would_certainly_be_empty() {
        let scope = clinician("A81001", PurposeOfUse::Treatment);
        assert_eq!(patient_gate(&scope, &[], false), Some(crate::DenyCode::NoRelationship), "unknown patients look unrelated");
        let unrelated = patient("p1", &[]);
        assert_eq!(patient_gate(&scope, &[&unrelated], false), Some(crate::DenyCode::NoRelationship));
        assert_eq!(patient_gate(&scope, &[&unrelated], true), None);
        let claimed = Scope::new(
            &AccessPolicy::default(),
            &[],
            Viewer::Clinician { org: "A81001".into(), purpose: PurposeOfUse::Treatment, claimed: vec!["p1".into()] },
            NOW,
        );
        assert_eq!(patient_gate(&claimed, &[&unrelated], false), None);
        assert_eq!(patient_gate(&clinician("A81001", PurposeOfUse::EmergencyTreatment), &[], false), None);
    }
}
