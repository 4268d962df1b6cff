//! The oracle: `docs/information-governance.md` as plain rules over the fixture data. It reads
//! the resources the test published (and the ids the gateway assigned them), never the
//! gateway's answers, and none of the gateway's or the consent crate's code.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime};

use super::fixture::{
    ACT_CODE, ACT_REASON, CONFIDENTIALITY, CONSENT_SCOPE, DIAGNOSTIC_SERVICE, NHS_SYSTEM, ODS_SYSTEM, OLD_ACT_CODE, OLD_CONFIDENTIALITY,
    PARTICIPATION, RESOURCE_TYPES, World,
};

/// The spec's defaults (`[consent]` is not configured by this test).
const ENCOUNTER_WINDOW_DAYS: i64 = 365;
const REFERRAL_WINDOW_DAYS: i64 = 365;
const RAD_RELEASE_DELAY_DAYS: i64 = 28;

const LABEL_SYSTEMS: [&str; 4] = [ACT_CODE, CONFIDENTIALITY, OLD_ACT_CODE, OLD_CONFIDENTIALITY];
/// The default sensitive code sets stamp these (README); nothing else is configured.
const SENSITIVE_LABELS: [&str; 3] = ["HIV", "STD", "SEX"];
const SHARED_TYPES: [&str; 5] = ["Organization", "Location", "Practitioner", "PractitionerRole", "Medication"];
const DOCUMENT_TYPES: [&str; 2] = ["Composition", "DocumentReference"];
const RECIPIENT_ROLES: [&str; 2] = ["IRCP", "PRCP"];
const SOURCE_ROLES: [&str; 3] = ["AUT", "CST", "INF"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Treat,
    /// `ETREAT` or `BTG`, with a reason.
    Emergency(&'static str),
    /// `HOPERAT`, `HRESCH`, `PUBHLTH`: refused before any data is read unless the client is
    /// registered for the purpose (then the requester is a [`Who::Researcher`]).
    Secondary(&'static str),
}

impl Purpose {
    pub fn code(self) -> &'static str {
        match self {
            Purpose::Treat => "TREAT",
            Purpose::Emergency(code) | Purpose::Secondary(code) => code,
        }
    }
}

/// Who is asking, as the rules see it.
#[derive(Clone, Debug)]
pub enum Who {
    Patient {
        nhs: String,
    },
    Clinician {
        org: &'static str,
        purpose: Purpose,
        self_claim: bool,
    },
    System {
        org: &'static str,
    },
    /// A clinician or system of `org` whose client is registered for this secondary use.
    Researcher {
        org: &'static str,
        purpose: Purpose,
    },
}

impl Who {
    /// A secondary use through a client not registered for it: refused everything.
    pub fn is_secondary_use(&self) -> bool {
        matches!(self, Who::Clinician { purpose: Purpose::Secondary(_), .. })
    }

    pub fn is_researcher(&self) -> bool {
        matches!(self, Who::Researcher { .. })
    }

    pub fn is_patient(&self) -> bool {
        matches!(self, Who::Patient { .. })
    }
}

/// The patients a self-claimed relationship covers in one request: those a patient-targeted
/// search names. Empty for every other request.
pub type Claim = BTreeSet<String>;

/// The R4 patient CompartmentDefinition, for the types the fixture holds: the elements behind
/// each compartment parameter.
fn compartment_elements(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "Observation" => &["subject", "performer"],
        "Condition" => &["subject", "asserter"],
        "DocumentReference" => &["subject", "author"],
        "Composition" => &["subject", "author", "attester.party"],
        "Encounter" => &["subject"],
        "EpisodeOfCare" => &["patient"],
        "ServiceRequest" => &["subject", "performer", "requester"],
        "MedicationStatement" => &["subject"],
        "AllergyIntolerance" => &["patient", "recorder", "asserter"],
        "DiagnosticReport" => &["subject"],
        "Consent" => &["patient"],
        _ => &[],
    }
}

/// Every value at a dotted path, arrays flattened.
pub fn values_at<'v>(value: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut current = vec![value];
    for step in path.split('.') {
        current = current
            .into_iter()
            .flat_map(|v| match &v[step] {
                Value::Array(items) => items.iter().collect::<Vec<_>>(),
                Value::Null => vec![],
                other => vec![other],
            })
            .collect();
    }
    current
}

/// The id of a literal `Patient/{id}` reference.
pub fn literal_patient(reference: &Value) -> Option<String> {
    let text = reference["reference"].as_str()?;
    let id = text.strip_prefix("Patient/")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

fn codings(concept: &Value) -> Vec<&Value> {
    values_at(concept, "coding")
}

fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(text, &format).ok().map(|date| date.midnight().assume_utc())
    })
}

/// Whether a relationship period is in force: ongoing (start, no end) or ended within the
/// window. No period makes no relationship.
fn period_in_force(period: &Value, now: OffsetDateTime, window_days: i64) -> bool {
    let start = period["start"].as_str().and_then(parse_instant);
    match period["end"].as_str().and_then(parse_instant) {
        Some(end) => now <= end + Duration::days(window_days),
        None => start.is_some(),
    }
}

fn period_contains(period: &Value, now: OffsetDateTime) -> bool {
    let after_start = period["start"].as_str().and_then(parse_instant).is_none_or(|start| start <= now);
    let before_end = period["end"].as_str().and_then(parse_instant).is_none_or(|end| now <= end);
    after_start && before_end
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationshipKind {
    Registered,
    Encounter,
    CareEpisode,
    Referral,
}

struct Relationship {
    patient: String,
    org: String,
    kind: RelationshipKind,
}

/// The conditions a provision states, as the engine can read them. `None`: not stated.
#[derive(Clone, Debug, Default)]
struct Conditions {
    recipients: Option<BTreeSet<String>>,
    sources: Option<BTreeSet<String>>,
    classes: Option<BTreeSet<String>>,
    labels: Option<BTreeSet<String>>,
    purposes: Option<BTreeSet<String>>,
}

/// A provision read: its conditions and whether every element was understood.
struct Reading {
    conditions: Conditions,
    understood: bool,
}

struct DenyRule {
    conditions: Conditions,
    exceptions: Vec<Conditions>,
}

fn insert(set: &mut Option<BTreeSet<String>>, value: &str) {
    set.get_or_insert_with(BTreeSet::new).insert(value.to_owned());
}

/// An actor's role — `Some(true)` recipient, `Some(false)` source, `None` another — and its
/// ODS code, if it names one.
fn read_actor(actor: &Value) -> (Option<bool>, Option<String>) {
    let ods = actor["reference"]["identifier"]
        .as_object()
        .filter(|identifier| identifier.get("system").and_then(Value::as_str) == Some(ODS_SYSTEM))
        .and_then(|identifier| identifier.get("value")?.as_str())
        .map(str::to_owned);
    let role =
        codings(&actor["role"]).into_iter().filter(|coding| coding["system"] == PARTICIPATION).find_map(|coding| coding["code"].as_str());
    let role = match role {
        Some(role) if RECIPIENT_ROLES.contains(&role) => Some(true),
        Some(role) if SOURCE_ROLES.contains(&role) => Some(false),
        _ => None,
    };
    (role, ods)
}

/// Read a provision's own conditions (not its nested provisions). An element the engine cannot
/// wholly interpret is left out of the conditions (dropped whole) and marks the reading as not
/// understood: `class`, `securityLabel` and `purpose` with any coding in another system; the
/// recipients (or sources) when any actor of that role names no ODS code. An actor of another
/// role adds no condition.
fn read_provision(provision: &Value, is_base: bool) -> Reading {
    let mut conditions = Conditions::default();
    let mut understood = true;
    let Some(elements) = provision.as_object() else { return Reading { conditions, understood: false } };
    for (name, value) in elements {
        match name.as_str() {
            "type" | "provision" => {}
            // The base period is when the directive is in force, read elsewhere.
            "period" if is_base => {}
            "actor" => {
                let (mut recipients, mut sources) = (Some(Vec::new()), Some(Vec::new()));
                for actor in value.as_array().into_iter().flatten() {
                    match read_actor(actor) {
                        (Some(true), Some(ods)) => recipients.iter_mut().for_each(|r| r.push(ods.clone())),
                        (Some(false), Some(ods)) => sources.iter_mut().for_each(|s| s.push(ods.clone())),
                        (Some(true), None) => {
                            recipients = None;
                            understood = false;
                        }
                        (Some(false), None) => {
                            sources = None;
                            understood = false;
                        }
                        (None, _) => understood = false,
                    }
                }
                recipients.into_iter().flatten().for_each(|ods| insert(&mut conditions.recipients, &ods));
                sources.into_iter().flatten().for_each(|ods| insert(&mut conditions.sources, &ods));
            }
            "class" => {
                let all: Vec<&Value> = value.as_array().into_iter().flatten().collect();
                if all.iter().all(|coding| coding["system"] == RESOURCE_TYPES && coding["code"].is_string()) {
                    all.iter().filter_map(|coding| coding["code"].as_str()).for_each(|code| insert(&mut conditions.classes, code));
                } else {
                    understood = false;
                }
            }
            "securityLabel" => {
                let all: Vec<&Value> = value.as_array().into_iter().flatten().collect();
                if all
                    .iter()
                    .all(|coding| coding["system"].as_str().is_some_and(|s| LABEL_SYSTEMS.contains(&s)) && coding["code"].is_string())
                {
                    all.iter().filter_map(|coding| coding["code"].as_str()).for_each(|code| insert(&mut conditions.labels, code));
                } else {
                    understood = false;
                }
            }
            "purpose" => {
                let all: Vec<&Value> = value.as_array().into_iter().flatten().collect();
                if all.iter().all(|coding| coding["system"] == ACT_REASON && coding["code"].is_string()) {
                    all.iter().filter_map(|coding| coding["code"].as_str()).for_each(|code| insert(&mut conditions.purposes, code));
                } else {
                    understood = false;
                }
            }
            _ => understood = false,
        }
    }
    Reading { conditions, understood }
}

fn nested(provision: &Value, kind: &str) -> Vec<Value> {
    provision["provision"].as_array().into_iter().flatten().filter(|p| p["type"] == kind).cloned().collect()
}

/// A deny rule's exceptions: its nested permits, except those the engine cannot read whole or
/// that have nested provisions of their own.
fn exceptions(rule: &Value) -> Vec<Conditions> {
    nested(rule, "permit")
        .iter()
        .filter(|exception| exception["provision"].as_array().is_none_or(Vec::is_empty))
        .map(|exception| read_provision(exception, false))
        .filter(|reading| reading.understood)
        .map(|reading| reading.conditions)
        .collect()
}

fn deny_rules(base: &Value) -> Vec<DenyRule> {
    if base["type"] == "permit" {
        nested(base, "deny")
            .iter()
            .map(|rule| DenyRule { conditions: read_provision(rule, false).conditions, exceptions: exceptions(rule) })
            .collect()
    } else {
        vec![DenyRule { conditions: read_provision(base, true).conditions, exceptions: exceptions(base) }]
    }
}

pub struct Oracle<'w> {
    pub world: &'w World,
    labels: Vec<BTreeSet<String>>,
    compartments: Vec<BTreeSet<String>>,
    relationships: Vec<Relationship>,
    /// Deny rules of the directives in force, by patient id.
    rules: HashMap<String, Vec<DenyRule>>,
    by_key: HashMap<String, usize>,
}

impl<'w> Oracle<'w> {
    pub fn new(world: &'w World) -> Self {
        let mut oracle = Self {
            world,
            labels: world.resources.iter().map(|r| Self::read_labels(r.current())).collect(),
            compartments: Vec::new(),
            relationships: Vec::new(),
            rules: HashMap::new(),
            by_key: world.resources.iter().enumerate().map(|(index, r)| (r.key(), index)).collect(),
        };
        oracle.compartments = (0..world.resources.len()).map(|index| oracle.read_compartment(index)).collect();
        oracle.relationships = oracle.derive_relationships();
        oracle.rules = oracle.read_directives();
        oracle
    }

    fn read_labels(resource: &Value) -> BTreeSet<String> {
        values_at(resource, "meta.security")
            .into_iter()
            .filter(|label| label["system"].as_str().is_some_and(|system| LABEL_SYSTEMS.contains(&system)))
            .filter_map(|label| label["code"].as_str().map(str::to_owned))
            .collect()
    }

    fn read_compartment(&self, index: usize) -> BTreeSet<String> {
        let stored = &self.world.resources[index];
        if stored.type_name == "Patient" {
            return BTreeSet::from([stored.id.clone()]);
        }
        compartment_elements(&stored.type_name)
            .iter()
            .flat_map(|path| values_at(stored.current(), path))
            .filter_map(literal_patient)
            .collect()
    }

    /// Current (not deleted) resources with their index.
    fn current(&self) -> impl Iterator<Item = (usize, &Value)> + '_ {
        self.world.resources.iter().enumerate().filter(|(_, r)| !r.deleted).map(|(index, r)| (index, r.current()))
    }

    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied().filter(|index| !self.world.resources[*index].deleted)
    }

    pub fn labels(&self, index: usize) -> &BTreeSet<String> {
        &self.labels[index]
    }

    /// P(r): the ids of the Patients whose compartment holds the resource.
    pub fn compartment(&self, index: usize) -> &BTreeSet<String> {
        &self.compartments[index]
    }

    fn type_of(&self, index: usize) -> &str {
        &self.world.resources[index].type_name
    }

    fn source(&self, index: usize) -> Option<&str> {
        Some(self.world.resources[index].source)
    }

    /// The ODS codes an organisation reference names: a literal reference to a current
    /// Organization with ODS identifiers, or a logical one with an ODS identifier.
    fn organisations_named(&self, reference: &Value) -> Vec<String> {
        let mut codes = Vec::new();
        if let Some(id) = reference["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")) {
            let key = format!("Organization/{id}");
            if let Some(index) = self.index_of(&key) {
                codes.extend(
                    values_at(self.world.resources[index].current(), "identifier")
                        .into_iter()
                        .filter(|identifier| identifier["system"] == ODS_SYSTEM)
                        .filter_map(|identifier| identifier["value"].as_str().map(str::to_owned)),
                );
            }
        }
        if reference["identifier"]["system"] == ODS_SYSTEM
            && let Some(value) = reference["identifier"]["value"].as_str()
        {
            codes.push(value.to_owned());
        }
        codes
    }

    /// The relationships in force at now, from current resources.
    fn derive_relationships(&self) -> Vec<Relationship> {
        let now = self.world.now;
        let mut found = Vec::new();
        let mut add = |patient: &str, orgs: Vec<String>, kind| {
            found.extend(orgs.into_iter().map(|org| Relationship { patient: patient.to_owned(), org, kind }));
        };
        for (index, resource) in self.current() {
            let void = |bad: &[&str]| resource["status"].as_str().is_some_and(|status| bad.contains(&status));
            match self.type_of(index) {
                "Patient" => {
                    let orgs = values_at(resource, "generalPractitioner").into_iter().flat_map(|r| self.organisations_named(r)).collect();
                    add(&self.world.resources[index].id, orgs, RelationshipKind::Registered);
                }
                "Encounter" if !void(&["cancelled", "entered-in-error"]) => {
                    if let Some(patient) = literal_patient(&resource["subject"])
                        && period_in_force(&resource["period"], now, ENCOUNTER_WINDOW_DAYS)
                    {
                        add(&patient, self.organisations_named(&resource["serviceProvider"]), RelationshipKind::Encounter);
                    }
                }
                "EpisodeOfCare" if !void(&["cancelled", "entered-in-error"]) => {
                    if let Some(patient) = literal_patient(&resource["patient"])
                        && period_in_force(&resource["period"], now, ENCOUNTER_WINDOW_DAYS)
                    {
                        add(&patient, self.organisations_named(&resource["managingOrganization"]), RelationshipKind::CareEpisode);
                    }
                }
                "ServiceRequest" if !void(&["revoked", "entered-in-error"]) => {
                    let authored = resource["authoredOn"].as_str().and_then(parse_instant);
                    if let Some(patient) = literal_patient(&resource["subject"])
                        && authored.is_some_and(|at| now <= at + Duration::days(REFERRAL_WINDOW_DAYS))
                    {
                        let orgs = values_at(resource, "performer").into_iter().flat_map(|r| self.organisations_named(r)).collect();
                        add(&patient, orgs, RelationshipKind::Referral);
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The deny rules of every patient-privacy Consent in force at now, by patient.
    fn read_directives(&self) -> HashMap<String, Vec<DenyRule>> {
        let mut rules: HashMap<String, Vec<DenyRule>> = HashMap::new();
        for (index, consent) in self.current() {
            if self.type_of(index) != "Consent" || consent["status"] != "active" {
                continue;
            }
            let privacy = codings(&consent["scope"]).iter().any(|c| c["system"] == CONSENT_SCOPE && c["code"] == "patient-privacy");
            let Some(patient) = literal_patient(&consent["patient"]) else { continue };
            let base = &consent["provision"];
            if !privacy || !period_contains(&base["period"], self.world.now) {
                continue;
            }
            rules.entry(patient).or_default().extend(deny_rules(base));
        }
        rules
    }

    pub fn relationship(&self, patient: &str, org: &str) -> bool {
        self.relationships.iter().any(|r| r.patient == patient && r.org == org)
    }

    pub fn registered(&self, patient: &str, org: &str) -> bool {
        self.relationships.iter().any(|r| r.patient == patient && r.org == org && r.kind == RelationshipKind::Registered)
    }

    /// Current Patients with this id (zero or one).
    pub fn patients_with_id(&self, id: &str) -> Claim {
        self.index_of(&format!("Patient/{id}")).map(|_| id.to_owned()).into_iter().collect()
    }

    /// Current Patients carrying this NHS number.
    pub fn patients_with_nhs_number(&self, nhs: &str) -> Claim {
        self.current()
            .filter(|(index, patient)| {
                self.type_of(*index) == "Patient"
                    && values_at(patient, "identifier").iter().any(|i| i["system"] == NHS_SYSTEM && i["value"] == nhs)
            })
            .map(|(index, _)| self.world.resources[index].id.clone())
            .collect()
    }

    fn conditions_hold(&self, conditions: &Conditions, index: usize, org: &str, purpose: Purpose, deny_extras: bool) -> bool {
        let type_name = self.type_of(index);
        let source = self.source(index);
        let recipient = conditions.recipients.as_ref().is_none_or(|x| x.contains(org));
        let from_source =
            conditions.sources.as_ref().is_none_or(|x| source.is_none_or(|s| x.contains(s)) && (deny_extras || source.is_some()));
        let of_class = conditions.classes.as_ref().is_none_or(|x| {
            x.contains(type_name)
                || (deny_extras && DOCUMENT_TYPES.contains(&type_name) && !x.iter().all(|c| DOCUMENT_TYPES.contains(&c.as_str())))
        });
        let labelled = conditions.labels.as_ref().is_none_or(|x| !x.is_disjoint(self.labels(index)));
        // An exception that names no purpose covers care only, never a secondary use.
        let for_purpose = match &conditions.purposes {
            Some(x) => x.contains(purpose.code()),
            None => deny_extras || !matches!(purpose, Purpose::Secondary(_)),
        };
        recipient && from_source && of_class && labelled && for_purpose
    }

    /// dissent(p, r, O, purpose).
    fn dissent(&self, patient: &str, index: usize, org: &str, purpose: Purpose) -> bool {
        self.rules.get(patient).into_iter().flatten().any(|rule| {
            self.conditions_hold(&rule.conditions, index, org, purpose, true)
                && !rule.exceptions.iter().any(|exception| self.conditions_hold(exception, index, org, purpose, false))
        })
    }

    /// A deny rule that applies to every resource for `org`: its only conditions are recipient
    /// and purpose, both holding, and no exception's recipient and purpose could hold.
    fn dissents_from_everything(&self, patient: &str, org: &str, purpose: Purpose) -> bool {
        let recipient_holds = |c: &Conditions| c.recipients.as_ref().is_none_or(|x| x.contains(org));
        let purpose_holds = |c: &Conditions| c.purposes.as_ref().is_none_or(|x| x.contains(purpose.code()));
        let exception_purpose_holds = |c: &Conditions| match &c.purposes {
            Some(x) => x.contains(purpose.code()),
            None => !matches!(purpose, Purpose::Secondary(_)),
        };
        self.rules.get(patient).into_iter().flatten().any(|rule| {
            let c = &rule.conditions;
            let blanket = c.sources.is_none() && c.classes.is_none() && c.labels.is_none();
            blanket
                && recipient_holds(c)
                && purpose_holds(c)
                && !rule.exceptions.iter().any(|exception| recipient_holds(exception) && exception_purpose_holds(exception))
        })
    }

    /// Held back from the patient by the default release delay (RAD reports, 28 days).
    pub fn held_back(&self, index: usize) -> bool {
        let resource = self.world.resources[index].current();
        let radiology = self.type_of(index) == "DiagnosticReport"
            && values_at(resource, "category")
                .iter()
                .flat_map(|c| codings(c))
                .any(|c| c["system"] == DIAGNOSTIC_SERVICE && c["code"] == "RAD");
        if !radiology {
            return false;
        }
        let released = |issued: OffsetDateTime| issued + Duration::days(RAD_RELEASE_DELAY_DAYS) <= self.world.now;
        !resource["issued"].as_str().and_then(parse_instant).is_some_and(released)
    }

    /// What a Composition's sections reference, at any depth: each entry's resource, `None`
    /// where it names nothing stored.
    pub fn entries_of(&self, composition: usize) -> Vec<Option<usize>> {
        fn references(sections: &Value, out: &mut Vec<String>) {
            for section in sections.as_array().into_iter().flatten() {
                out.extend(section["entry"].as_array().into_iter().flatten().filter_map(|e| e["reference"].as_str().map(str::to_owned)));
                references(&section["section"], out);
            }
        }
        let mut entries = Vec::new();
        references(&self.world.resources[composition].current()["section"], &mut entries);
        entries.iter().map(|entry| self.index_of(entry)).collect()
    }

    fn entries_visible(&self, who: &Who, composition: usize, claim: &Claim, depth: usize) -> bool {
        self.entries_of(composition).into_iter().all(|entry| entry.is_some_and(|index| self.visible_within(who, index, claim, depth + 1)))
            && self.original_shows_patients(who, composition)
    }

    /// A document's original names its patients as sent: not for a requester who sees one of
    /// them redacted (a restricted patient, outside their practice).
    pub fn original_shows_patients(&self, who: &Who, composition: usize) -> bool {
        self.compartment(composition).iter().all(|patient| !self.hides_restricted_details(who, patient))
    }

    /// visible(requester, r), with `claim` the patients a self-claim covers in this request.
    pub fn visible(&self, who: &Who, index: usize, claim: &Claim) -> bool {
        self.visible_within(who, index, claim, 0)
    }

    fn visible_within(&self, who: &Who, index: usize, claim: &Claim, depth: usize) -> bool {
        let stored = &self.world.resources[index];
        if stored.deleted || who.is_secondary_use() {
            return false;
        }
        if stored.type_name == "Binary"
            && let Some(context) = stored.current()["securityContext"]["reference"].as_str()
        {
            // A Binary is visible iff the resource its securityContext names is; when that is a
            // Composition, the Binary is the whole document: every entry must be visible too.
            return depth < 4
                && self.index_of(context).is_some_and(|named| {
                    self.visible_within(who, named, claim, depth + 1)
                        && (self.world.resources[named].type_name != "Composition" || self.entries_visible(who, named, claim, depth + 1))
                });
        }
        let labels = self.labels(index);
        let patients = self.compartment(index);
        let confidential = labels.contains("V");
        let sensitive = SENSITIVE_LABELS.iter().any(|label| labels.contains(*label));
        let shared = SHARED_TYPES.contains(&stored.type_name.as_str());
        match who {
            Who::Patient { nhs } => {
                let own = self.patients_with_nhs_number(nhs);
                !patients.is_empty() && patients.is_subset(&own) && !confidential && !labels.contains("NOPAT") && !self.held_back(index)
            }
            Who::System { org } => stored.source == *org || (patients.is_empty() && shared && !confidential && !sensitive),
            Who::Clinician { org, purpose, .. } => {
                if stored.source == *org {
                    return true;
                }
                if confidential || sensitive {
                    return false;
                }
                if patients.is_empty() {
                    return shared;
                }
                patients.iter().all(|patient| match purpose {
                    Purpose::Emergency(_) => true,
                    _ => (self.relationship(patient, org) || claim.contains(patient)) && !self.dissent(patient, index, org, *purpose),
                })
            }
            // Secondary use: nothing sensitive or confidential whoever published it; outside
            // any record, its own and shared reference data; in one, every patient's opt-outs
            // (their own organisation's records too), with no relationship needed.
            Who::Researcher { org, purpose } => {
                if confidential || sensitive {
                    return false;
                }
                if patients.is_empty() {
                    return stored.source == *org || shared;
                }
                patients.iter().all(|patient| !self.dissent(patient, index, org, *purpose))
            }
        }
    }

    /// The answer to a patient-targeted search by a clinician before it runs: `None` when it
    /// runs, else the 403's code. `named`: every Patient with the id or NHS number named.
    pub fn refuses_patient_targeted_search(&self, who: &Who, named: &Claim) -> Option<&'static str> {
        let Who::Clinician { org, purpose, self_claim } = who else { return None };
        if matches!(purpose, Purpose::Emergency(_)) {
            return None;
        }
        let published_in_compartment =
            self.current().any(|(index, _)| self.world.resources[index].source == *org && !self.compartment(index).is_disjoint(named));
        if published_in_compartment {
            return None;
        }
        let related: Vec<&String> = named.iter().filter(|patient| *self_claim || self.relationship(patient, org)).collect();
        if related.is_empty() {
            return Some("NO_RELATIONSHIP");
        }
        if related.iter().all(|patient| self.dissents_from_everything(patient, org, *purpose)) {
            return Some("NO_PATIENT_CONSENT");
        }
        None
    }

    pub fn restricted(&self, patient: &str) -> bool {
        self.index_of(&format!("Patient/{patient}")).is_some_and(|index| self.labels(index).contains("R"))
    }

    /// Whether a restricted patient's contact details and practice are withheld from `who`
    /// (also in searches through those elements).
    pub fn hides_restricted_details(&self, who: &Who, patient: &str) -> bool {
        if !self.restricted(patient) {
            return false;
        }
        match who {
            Who::Patient { nhs } => !self.patients_with_nhs_number(nhs).contains(patient),
            Who::Clinician { org, .. } | Who::System { org } | Who::Researcher { org, .. } => !self.registered(patient, org),
        }
    }
}
