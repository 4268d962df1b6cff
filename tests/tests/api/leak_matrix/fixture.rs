//! The fixture world: organisations with their own client certificates, patients covering
//! every kind of relationship and every consent shape of `docs/information-governance.md`,
//! and records of every type and label, each published by its source organisation.
//!
//! Generation is deterministic: the scenario table is fixed and the few free choices (which
//! source publishes a labelled record, which label a record carries) come from a seeded RNG.

use std::collections::HashMap;

use base64::Engine;
use consent::ClientKind;
use futures_util::StreamExt;
use gateway::configuration::ClientEntry;
use serde_json::{Value, json};
use tests::{ClientFiles, TestApp, TestPki, https_client_with_token};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
pub const OLD_ACT_CODE: &str = "http://hl7.org/fhir/v3/ActCode";
pub const OLD_CONFIDENTIALITY: &str = "http://hl7.org/fhir/v3/Confidentiality";
pub const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
pub const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
pub const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
pub const DIAGNOSTIC_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
/// Codes of this test's own records: never in a sensitive code set, so nothing is stamped.
pub const LOCAL_CODES: &str = "https://fixtures.example.nhs.uk/CodeSystem/leak-matrix";

// Organisations. GP practices publish through their clinicians, trusts and the directory as
// systems.
pub const A81001: &str = "A81001";
pub const A81002: &str = "A81002";
/// A practice no patient has a relationship with.
pub const A81003: &str = "A81003";
/// The restricted patient's practice.
pub const A81004: &str = "A81004";
pub const RXA: &str = "RXA";
pub const RXB: &str = "RXB";
pub const RXC: &str = "RXC";
/// A directory and demographics service: publishes Patients, Consents and reference data.
pub const X09: &str = "X09";

pub const ORGANISATIONS: [&str; 8] = [A81001, A81002, A81003, A81004, RXA, RXB, RXC, X09];

const SEED: u64 = 0x1EA4_3A7B_1C5E_ED01;

pub fn client_kind(ods: &str) -> ClientKind {
    match ods {
        X09 => ClientKind::Service,
        _ if ods.starts_with('R') => ClientKind::Trust,
        _ => ClientKind::GpSystem,
    }
}

fn publishes_as_clinician(ods: &str) -> bool {
    client_kind(ods) == ClientKind::GpSystem
}

/// One client certificate per organisation, plus a system certificate for practice A81001, and
/// two registered for secondary uses: RXB's research unit (HRESCH) and A81001's planning
/// service (HOPERAT).
pub struct Certificates {
    pub organisation: HashMap<&'static str, ClientFiles>,
    pub a81001_system: ClientFiles,
    pub rxb_research: ClientFiles,
    pub a81001_planning: ClientFiles,
}

impl Certificates {
    pub fn issue(pki: &TestPki) -> Self {
        let organisation = ORGANISATIONS
            .iter()
            .map(|ods| (*ods, pki.issue_client(&format!("matrix-{}", ods.to_lowercase()), ods, client_kind(ods))))
            .collect();
        let a81001_system = pki.issue_client("matrix-a81001-system", A81001, ClientKind::Service);
        let mut rxb_research = pki.issue_client("matrix-rxb-research", RXB, ClientKind::Trust);
        rxb_research.entry.secondary_uses = vec!["HRESCH".into()];
        let mut a81001_planning = pki.issue_client("matrix-a81001-planning", A81001, ClientKind::Service);
        a81001_planning.entry.secondary_uses = vec!["HOPERAT".into()];
        Self { organisation, a81001_system, rxb_research, a81001_planning }
    }

    pub fn entries(&self) -> Vec<ClientEntry> {
        let extra = [&self.a81001_system, &self.rxb_research, &self.a81001_planning];
        self.organisation.values().chain(extra).map(|files| files.entry.clone()).collect()
    }

    pub fn of(&self, ods: &str) -> &ClientFiles {
        self.organisation.get(ods).unwrap_or_else(|| panic!("no certificate for {ods}"))
    }
}

/// A resource as the test published it, with the id the gateway assigned.
pub struct Stored {
    pub type_name: String,
    pub id: String,
    /// The organisation whose certificate published every version.
    pub source: &'static str,
    /// Every version as sent (with its id), oldest first.
    pub versions: Vec<Value>,
    pub deleted: bool,
}

impl Stored {
    pub fn current(&self) -> &Value {
        self.versions.last().expect("a stored resource has a version")
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.type_name, self.id)
    }
}

/// A patient the cases target, with what its scenario is about (for reports).
pub struct PatientFixture {
    pub key: &'static str,
    pub about: &'static str,
    pub id: String,
    pub nhs: String,
}

pub struct World {
    pub now: OffsetDateTime,
    pub resources: Vec<Stored>,
    pub patients: Vec<PatientFixture>,
    /// A valid NHS number no Patient carries.
    pub unknown_nhs: String,
    tags: HashMap<String, usize>,
}

impl World {
    pub fn tagged(&self, tag: &str) -> &Stored {
        &self.resources[*self.tags.get(tag).unwrap_or_else(|| panic!("no fixture resource tagged {tag}"))]
    }

    pub fn id_of(&self, tag: &str) -> String {
        self.tagged(tag).id.clone()
    }

    /// The tag a resource was published under (`P3/obs-v`), for reports.
    pub fn tag_of(&self, index: usize) -> Option<&str> {
        self.tags.iter().find(|(_, i)| **i == index).map(|(tag, _)| tag.as_str())
    }

    pub fn patient(&self, key: &str) -> &PatientFixture {
        self.patients.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no patient {key}"))
    }

    pub fn organisation_id(&self, ods: &str) -> String {
        self.id_of(&format!("org/{ods}"))
    }

    /// Every type the world holds, sorted.
    pub fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.resources.iter().map(|r| r.type_name.clone()).collect();
        types.sort();
        types.dedup();
        types
    }
}

/// A deterministic RNG (SplitMix64): the fixture must be the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// The labels a record is published with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    None,
    /// One of the legally restricted classes (`HIV`, `STD`, `SEX`).
    Sensitive(&'static str),
    /// Practice-confidential `V`.
    Confidential,
    /// `NOPAT`: not for the patient's eyes.
    NotForPatient,
    /// `PSY`: an ordinary ActCode label a consent can name.
    Psychiatry,
}

impl Label {
    /// The record's code: a `_has` search can find records of each class.
    pub fn code(self) -> &'static str {
        match self {
            Label::None => "plain",
            Label::Sensitive(_) => "sensitive",
            Label::Confidential => "confidential",
            Label::NotForPatient => "nopat",
            Label::Psychiatry => "psy",
        }
    }

    /// `meta.security`, in the current or (with `old_spelling`) the older system URLs.
    fn security(self, old_spelling: bool) -> Vec<Value> {
        let (act, confidentiality) = if old_spelling { (OLD_ACT_CODE, OLD_CONFIDENTIALITY) } else { (ACT_CODE, CONFIDENTIALITY) };
        match self {
            Label::None => vec![],
            Label::Sensitive(code) => vec![json!({"system": act, "code": code})],
            Label::Confidential => vec![json!({"system": confidentiality, "code": "V"})],
            Label::NotForPatient => vec![json!({"system": act, "code": "NOPAT"})],
            Label::Psychiatry => vec![json!({"system": act, "code": "PSY"})],
        }
    }
}

const SENSITIVE_CLASSES: [&str; 3] = ["HIV", "STD", "SEX"];
/// Labels of the other record types: mostly none.
const RECORD_LABELS: [Label; 8] = [
    Label::None,
    Label::None,
    Label::None,
    Label::Psychiatry,
    Label::Confidential,
    Label::NotForPatient,
    Label::Sensitive("HIV"),
    Label::Sensitive("SEX"),
];

/// How a reference names an organisation.
#[derive(Clone, Copy)]
enum OrgRef {
    /// `Organization/{id}` of the organisation's resource (which carries its ODS code).
    Literal,
    /// `identifier` with the ODS system only.
    Logical,
}

#[derive(Clone, Copy)]
enum Period {
    EndedDaysAgo(i64),
    OngoingSinceDays(i64),
    Absent,
}

/// A resource that may make a legitimate relationship.
enum Link {
    Encounter {
        publisher: &'static str,
        provider: &'static str,
        by: OrgRef,
        status: &'static str,
        period: Period,
    },
    /// Published, then deleted: a deleted resource makes no relationship.
    DeletedEncounter {
        publisher: &'static str,
        provider: &'static str,
    },
    Episode {
        publisher: &'static str,
        manager: &'static str,
        status: &'static str,
        period: Period,
    },
    Referral {
        publisher: &'static str,
        performer: &'static str,
        by: OrgRef,
        status: &'static str,
        authored_days_ago: Option<i64>,
    },
}

/// A patient-privacy Consent: its status, base period (days relative to now) and provision.
struct ConsentSpec {
    status: &'static str,
    period: Option<(i64, i64)>,
    provision: Value,
}

fn consent(provision: Value) -> ConsentSpec {
    ConsentSpec { status: "active", period: None, provision }
}

/// The registered practice, as `generalPractitioner` names it.
enum Registration {
    None,
    Practice(&'static str, OrgRef),
    /// A literal reference to an Organization without an ODS identifier: no relationship.
    ClinicWithoutOds,
}

struct Scenario {
    key: &'static str,
    about: &'static str,
    patient_publisher: &'static str,
    registration: Registration,
    restricted: bool,
    postcode: &'static str,
    phone: &'static str,
    links: Vec<Link>,
    consents: Vec<ConsentSpec>,
    record_sources: &'static [&'static str],
}

pub const SHARED_POSTCODE: &str = "LS99 9ZZ";
pub const RESTRICTED_PHONE: &str = "01134960999";

fn actor(role: &str, ods: &str) -> Value {
    json!({"role": {"coding": [{"system": PARTICIPATION, "code": role}]},
           "reference": {"identifier": {"system": ODS_SYSTEM, "value": ods}}})
}

fn class(code: &str) -> Value {
    json!({"system": RESOURCE_TYPES, "code": code})
}

fn security_label(code: &str) -> Value {
    json!({"system": ACT_CODE, "code": code})
}

fn purpose(code: &str) -> Value {
    json!({"system": ACT_REASON, "code": code})
}

/// The patients: every relationship kind in force and not, every consent shape of the spec's
/// table, directives not in force, and the fail-closed readings.
fn scenarios() -> Vec<Scenario> {
    use OrgRef::{Literal, Logical};
    vec![
        Scenario {
            key: "P0",
            about: "registered by literal reference; encounter in window",
            patient_publisher: X09,
            registration: Registration::Practice(A81001, Literal),
            restricted: false,
            postcode: SHARED_POSTCODE,
            phone: "01134960000",
            links: vec![Link::Encounter {
                publisher: RXA,
                provider: RXA,
                by: Literal,
                status: "finished",
                period: Period::EndedDaysAgo(30),
            }],
            consents: vec![],
            record_sources: &[A81001, RXA, RXB],
        },
        Scenario {
            key: "P1",
            about: "share nothing (base deny); registered by identifier; referral to RXB published by the GP",
            patient_publisher: X09,
            registration: Registration::Practice(A81002, Logical),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960001",
            links: vec![
                Link::Referral { publisher: A81002, performer: RXB, by: Literal, status: "active", authored_days_ago: Some(30) },
                Link::Encounter { publisher: RXA, provider: RXA, by: Logical, status: "finished", period: Period::EndedDaysAgo(30) },
            ],
            consents: vec![consent(json!({"type": "deny"}))],
            record_sources: &[A81002, RXA],
        },
        Scenario {
            key: "P2",
            about: "do not share what A81001 recorded; encounters inside and outside the window",
            patient_publisher: RXA,
            registration: Registration::None,
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960002",
            links: vec![
                Link::Encounter { publisher: RXA, provider: RXA, by: Literal, status: "finished", period: Period::EndedDaysAgo(30) },
                Link::Encounter { publisher: RXB, provider: RXB, by: Logical, status: "finished", period: Period::EndedDaysAgo(400) },
            ],
            consents: vec![consent(json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("AUT", A81001)]}]}))],
            record_sources: &[RXA, RXB, A81001],
        },
        Scenario {
            key: "P3",
            about: "keep Observations back (class); ongoing, cancelled and period-less encounters",
            patient_publisher: X09,
            registration: Registration::None,
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960003",
            links: vec![
                Link::Encounter { publisher: RXB, provider: RXB, by: Logical, status: "in-progress", period: Period::OngoingSinceDays(10) },
                Link::Encounter { publisher: RXA, provider: RXA, by: Literal, status: "cancelled", period: Period::EndedDaysAgo(30) },
                Link::Encounter { publisher: RXC, provider: RXC, by: Literal, status: "finished", period: Period::Absent },
            ],
            consents: vec![consent(json!({"type": "permit", "provision": [{"type": "deny", "class": [class("Observation")]}]}))],
            record_sources: &[RXB, RXC, A81001],
        },
        Scenario {
            key: "P4",
            about: "share with RXB only; referrals in window, expired, revoked and undated",
            patient_publisher: A81001,
            registration: Registration::Practice(A81001, Literal),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960004",
            links: vec![
                Link::Referral { publisher: A81001, performer: RXB, by: Literal, status: "active", authored_days_ago: Some(30) },
                Link::Referral { publisher: A81001, performer: RXA, by: Literal, status: "active", authored_days_ago: Some(400) },
                Link::Referral { publisher: A81001, performer: RXC, by: Logical, status: "revoked", authored_days_ago: Some(30) },
                Link::Referral { publisher: A81001, performer: A81003, by: Literal, status: "active", authored_days_ago: None },
            ],
            // The nested deny under a base deny adds nothing.
            consents: vec![consent(json!({"type": "deny", "provision": [
                {"type": "permit", "actor": [actor("IRCP", RXB)]},
                {"type": "deny", "actor": [actor("IRCP", RXA)]}
            ]}))],
            record_sources: &[A81001, RXB],
        },
        Scenario {
            key: "P5",
            about: "restricted (R); do not share with RXA; a base-level permit that adds nothing",
            patient_publisher: A81004,
            registration: Registration::Practice(A81004, Literal),
            restricted: true,
            postcode: SHARED_POSTCODE,
            phone: RESTRICTED_PHONE,
            links: vec![
                Link::Encounter { publisher: RXA, provider: RXA, by: Literal, status: "finished", period: Period::EndedDaysAgo(30) },
                Link::Encounter { publisher: RXB, provider: RXB, by: Literal, status: "finished", period: Period::EndedDaysAgo(30) },
            ],
            consents: vec![consent(json!({"type": "permit", "provision": [
                {"type": "deny", "actor": [actor("IRCP", RXA)]},
                {"type": "permit", "actor": [actor("IRCP", RXA)]}
            ]}))],
            record_sources: &[A81004, RXA],
        },
        Scenario {
            key: "P6",
            about: "no relationship (registered at a clinic without an ODS code)",
            patient_publisher: RXA,
            registration: Registration::ClinicWithoutOds,
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960006",
            links: vec![],
            consents: vec![],
            record_sources: &[RXA],
        },
        Scenario {
            key: "P7",
            about: "keep PSY-labelled data back; care episode with RXC (published by the directory), cancelled one with RXB",
            patient_publisher: X09,
            registration: Registration::None,
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960007",
            links: vec![
                Link::Episode { publisher: X09, manager: RXC, status: "active", period: Period::OngoingSinceDays(100) },
                Link::Episode { publisher: X09, manager: RXB, status: "cancelled", period: Period::OngoingSinceDays(100) },
            ],
            consents: vec![consent(json!({"type": "permit", "provision": [{"type": "deny", "securityLabel": [security_label("PSY")]}]}))],
            record_sources: &[RXA, A81002],
        },
        Scenario {
            key: "P8",
            about: "directives not in force (expired period, inactive); deny RXA for TREAT",
            patient_publisher: X09,
            registration: Registration::Practice(A81002, Literal),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960008",
            links: vec![Link::Encounter {
                publisher: A81002,
                provider: RXA,
                by: Literal,
                status: "finished",
                period: Period::EndedDaysAgo(30),
            }],
            consents: vec![
                ConsentSpec { status: "active", period: Some((-400, -30)), provision: json!({"type": "deny"}) },
                ConsentSpec { status: "inactive", period: None, provision: json!({"type": "deny"}) },
                consent(json!({"type": "permit", "provision": [
                    {"type": "deny", "actor": [actor("IRCP", RXA)], "purpose": [purpose("TREAT")]}
                ]})),
            ],
            record_sources: &[A81002, RXB],
        },
        Scenario {
            key: "P9",
            about: "a deny rule whose only class is in another system (fails closed: denies everything); deleted encounter",
            patient_publisher: X09,
            registration: Registration::Practice(A81001, Logical),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960009",
            links: vec![Link::DeletedEncounter { publisher: RXB, provider: RXB }],
            consents: vec![consent(json!({"type": "permit", "provision": [
                {"type": "deny", "class": [{"system": "https://fixtures.example.nhs.uk/CodeSystem/record-class", "code": "letters"}]}
            ]}))],
            record_sources: &[A81002, RXA],
        },
        Scenario {
            key: "P10",
            about: "do not share DocumentReferences with RXB (a document-only class); shares records with P11",
            patient_publisher: A81001,
            registration: Registration::Practice(A81001, Literal),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960010",
            links: vec![Link::Encounter {
                publisher: RXB,
                provider: RXB,
                by: Literal,
                status: "finished",
                period: Period::EndedDaysAgo(30),
            }],
            consents: vec![consent(json!({"type": "permit", "provision": [
                {"type": "deny", "actor": [actor("IRCP", RXB)], "class": [class("DocumentReference")]}
            ]}))],
            record_sources: &[A81001, RXA],
        },
        Scenario {
            key: "P11",
            about: "share nothing except with RXB; the exception for the registered practice has a dataPeriod (dropped)",
            patient_publisher: X09,
            registration: Registration::Practice(A81002, Literal),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960011",
            links: vec![Link::Encounter {
                publisher: RXB,
                provider: RXB,
                by: Literal,
                status: "finished",
                period: Period::EndedDaysAgo(30),
            }],
            consents: vec![consent(json!({"type": "deny", "provision": [
                {"type": "permit", "actor": [actor("IRCP", A81002)], "dataPeriod": {"start": "2020-01-01T00:00:00Z"}},
                {"type": "permit", "actor": [actor("IRCP", RXB)]}
            ]}))],
            record_sources: &[RXB, A81001],
        },
        Scenario {
            key: "P12",
            about: "keep Conditions back except from A81001 (RXC's exception has nested provisions: dropped); RXC denied what RXA recorded",
            patient_publisher: A81001,
            registration: Registration::Practice(A81001, Literal),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960012",
            links: vec![
                Link::Encounter { publisher: RXC, provider: RXC, by: Logical, status: "finished", period: Period::EndedDaysAgo(30) },
                Link::Encounter {
                    publisher: RXA,
                    provider: RXA,
                    by: Literal,
                    status: "entered-in-error",
                    period: Period::EndedDaysAgo(30),
                },
            ],
            consents: vec![
                consent(json!({"type": "permit", "provision": [{"type": "deny", "class": [class("Condition")], "provision": [
                    {"type": "permit", "actor": [actor("IRCP", A81001)]},
                    {"type": "permit", "actor": [actor("IRCP", RXC)], "provision": [{"type": "deny", "securityLabel": [security_label("PSY")]}]}
                ]}]})),
                consent(json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("IRCP", RXC), actor("AUT", RXA)]}]})),
            ],
            record_sources: &[RXA, RXC, A81002],
        },
        Scenario {
            key: "P13",
            about: "National Data Opt-out (every secondary use); registered by literal reference",
            patient_publisher: A81003,
            registration: Registration::Practice(A81003, Literal),
            restricted: false,
            postcode: SHARED_POSTCODE,
            phone: "01134960013",
            links: vec![],
            consents: vec![consent(json!({"type": "deny", "purpose": [purpose("HOPERAT"), purpose("HRESCH"), purpose("PUBHLTH")]}))],
            record_sources: &[A81003, RXB, A81001],
        },
        Scenario {
            key: "P14",
            about: "Type 1 opt-out at A81001 (what A81001 recorded, every secondary use); no research (HRESCH) of what RXA recorded",
            patient_publisher: A81001,
            registration: Registration::Practice(A81001, Logical),
            restricted: false,
            postcode: "LS1 4AP",
            phone: "01134960014",
            links: vec![],
            consents: vec![
                consent(json!({"type": "deny", "actor": [actor("CST", A81001)],
                    "purpose": [purpose("HOPERAT"), purpose("HRESCH"), purpose("PUBHLTH")]})),
                consent(
                    json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("AUT", RXA)], "purpose": [purpose("HRESCH")]}]}),
                ),
            ],
            record_sources: &[A81001, RXA, RXB],
        },
    ]
}

/// A resource to publish, the organisation that publishes it, and the tag it is found by.
struct Planned {
    tag: String,
    org: &'static str,
    resource: Value,
}

fn plan(tag: impl Into<String>, org: &'static str, resource: Value) -> Planned {
    Planned { tag: tag.into(), org, resource }
}

/// Publishes as each organisation: its certificate with a clinician's (practices) or system's
/// token allowed to write.
struct Publisher<'a> {
    app: &'a TestApp,
    clients: HashMap<&'static str, reqwest::Client>,
}

impl<'a> Publisher<'a> {
    fn new(app: &'a TestApp, certificates: &Certificates) -> Self {
        let clients = ORGANISATIONS
            .iter()
            .map(|ods| {
                let token = if publishes_as_clinician(ods) {
                    app.issuers.clinician_token(ods, "user/*.cruds")
                } else {
                    app.issuers.system_token(ods, "system/*.cruds")
                };
                (*ods, https_client_with_token(&app.pki, Some(certificates.of(ods)), Some(&token)))
            })
            .collect();
        Self { app, clients }
    }

    fn client(&self, ods: &str) -> &reqwest::Client {
        &self.clients[ods]
    }

    /// Publish a phase concurrently and add what was stored to the world.
    async fn publish(&self, world: &mut World, planned: Vec<Planned>) {
        let published: Vec<(Planned, String)> = futures_util::stream::iter(planned)
            .map(|planned| async move {
                let type_name = planned.resource["resourceType"].as_str().expect("a planned resource has a type").to_owned();
                let answer = self.app.post(self.client(planned.org), &type_name, &planned.resource).await;
                assert_eq!(answer.status.as_u16(), 201, "publishing {} as {} failed: {}", planned.tag, planned.org, answer.text);
                let id = answer.body["id"].as_str().unwrap_or_else(|| panic!("no id for {}: {}", planned.tag, answer.text)).to_owned();
                (planned, id)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (planned, id) in published {
            let mut resource = planned.resource;
            resource["id"] = json!(id);
            let type_name = resource["resourceType"].as_str().unwrap_or_default().to_owned();
            world.tags.insert(planned.tag, world.resources.len());
            world.resources.push(Stored { type_name, id, source: planned.org, versions: vec![resource], deleted: false });
        }
    }

    /// Publish a new version of a tagged resource (as its source).
    async fn update(&self, world: &mut World, tag: &str, change: impl FnOnce(&mut Value)) {
        let index = world.tags[tag];
        let stored = &mut world.resources[index];
        let mut next = stored.current().clone();
        change(&mut next);
        let path = stored.key();
        let answer = self.app.put(self.client(stored.source), &path, &next).await;
        assert_eq!(answer.status.as_u16(), 200, "updating {tag} ({path}) failed: {}", answer.text);
        stored.versions.push(next);
    }

    async fn delete(&self, world: &mut World, tag: &str) {
        let index = world.tags[tag];
        let stored = &mut world.resources[index];
        let answer = self.app.delete(self.client(stored.source), &stored.key()).await;
        assert!(matches!(answer.status.as_u16(), 200 | 204), "deleting {tag} failed: {}", answer.text);
        stored.deleted = true;
    }
}

fn timestamp(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0).expect("zero nanoseconds").format(&Rfc3339).expect("an RFC 3339 timestamp")
}

fn days_ago(now: OffsetDateTime, days: i64) -> String {
    timestamp(now - Duration::days(days))
}

fn patient_reference(id: &str) -> Value {
    json!({"reference": format!("Patient/{id}")})
}

fn local_code(code: &str) -> Value {
    json!({"coding": [{"system": LOCAL_CODES, "code": code}], "text": code})
}

fn organisation_reference(world: &World, ods: &str, by: OrgRef) -> Value {
    match by {
        OrgRef::Literal => json!({"reference": format!("Organization/{}", world.organisation_id(ods))}),
        OrgRef::Logical => json!({"type": "Organization", "identifier": {"system": ODS_SYSTEM, "value": ods}}),
    }
}

fn with_labels(mut resource: Value, label: Label, old_spelling: bool) -> Value {
    let security = label.security(old_spelling);
    if !security.is_empty() {
        resource["meta"] = json!({"security": security});
    }
    resource
}

fn period_json(now: OffsetDateTime, period: Period) -> Option<Value> {
    match period {
        Period::EndedDaysAgo(days) => Some(json!({"start": days_ago(now, days + 2), "end": days_ago(now, days)})),
        Period::OngoingSinceDays(days) => Some(json!({"start": days_ago(now, days)})),
        Period::Absent => None,
    }
}

/// Reference data: an Organization per ODS code, a clinic without one, practitioners,
/// locations (one a refuge, practice-confidential), medications (one labelled HIV), and
/// resources that are neither shared nor in any compartment.
fn reference_data() -> Vec<Planned> {
    let mut planned: Vec<Planned> = ORGANISATIONS
        .iter()
        .map(|ods| {
            plan(
                format!("org/{ods}"),
                X09,
                json!({"resourceType": "Organization", "active": true, "name": format!("Organisation {ods}"),
                       "identifier": [{"system": ODS_SYSTEM, "value": ods}]}),
            )
        })
        .collect();
    planned.extend([
        plan(
            "org/clinic-without-ods",
            X09,
            json!({"resourceType": "Organization", "name": "Walk-in clinic",
                   "identifier": [{"system": "https://fixtures.example.nhs.uk/Id/clinic", "value": "WALK-IN-1"}]}),
        ),
        plan("practitioner/directory", X09, json!({"resourceType": "Practitioner", "name": [{"family": "Directory", "given": ["Dana"]}]})),
        plan("practitioner/a81001", A81001, json!({"resourceType": "Practitioner", "name": [{"family": "Practice", "given": ["Pat"]}]})),
        plan("location/ward", RXA, json!({"resourceType": "Location", "status": "active", "name": "Ward 5"})),
        plan(
            "location/refuge",
            RXB,
            with_labels(json!({"resourceType": "Location", "status": "active", "name": "Refuge"}), Label::Confidential, false),
        ),
        plan("medication/plain", X09, json!({"resourceType": "Medication", "code": local_code("metformin")})),
        plan(
            "medication/antiretroviral",
            RXB,
            with_labels(json!({"resourceType": "Medication", "code": local_code("antiretroviral")}), Label::Sensitive("HIV"), false),
        ),
        plan("service/rxb", RXB, json!({"resourceType": "HealthcareService", "name": "Sexual health clinic"})),
        plan("service/directory", X09, json!({"resourceType": "HealthcareService", "name": "Podiatry"})),
    ]);
    for ods in [RXA, A81001] {
        let data = base64::engine::general_purpose::STANDARD.encode(format!("a letter from {ods}"));
        planned.push(plan(
            format!("binary/loose-{ods}"),
            ods,
            json!({"resourceType": "Binary", "contentType": "text/plain", "data": data}),
        ));
    }
    planned
}

fn patient_resource(world: &World, scenario: &Scenario, nhs: &str) -> Value {
    let mut patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": NHS_SYSTEM, "value": nhs}],
        "name": [{"family": "Matrix", "given": [scenario.key]}],
        "gender": "unknown",
        "birthDate": "1970-01-01",
        "address": [{"line": [format!("{} Test Street", scenario.key)], "city": "Leeds", "postalCode": scenario.postcode}],
        "telecom": [{"system": "phone", "value": scenario.phone, "use": "home"}],
    });
    match scenario.registration {
        Registration::None => {}
        Registration::Practice(ods, by) => patient["generalPractitioner"] = json!([organisation_reference(world, ods, by)]),
        Registration::ClinicWithoutOds => {
            patient["generalPractitioner"] = json!([{"reference": format!("Organization/{}", world.id_of("org/clinic-without-ods"))}])
        }
    }
    if scenario.restricted {
        patient["meta"] = json!({"security": [{"system": CONFIDENTIALITY, "code": "R"}]});
    }
    patient
}

fn link_resource(world: &World, patient: &str, link: &Link) -> (&'static str, Value) {
    let now = world.now;
    match link {
        Link::Encounter { publisher, provider, by, status, period } => {
            let mut encounter = json!({
                "resourceType": "Encounter", "status": status,
                "class": {"system": ACT_CODE, "code": "AMB"},
                "subject": patient_reference(patient),
                "serviceProvider": organisation_reference(world, provider, *by),
            });
            if let Some(period) = period_json(now, *period) {
                encounter["period"] = period;
            }
            (publisher, encounter)
        }
        Link::DeletedEncounter { publisher, provider } => link_resource(
            world,
            patient,
            &Link::Encounter { publisher, provider, by: OrgRef::Literal, status: "finished", period: Period::EndedDaysAgo(30) },
        ),
        Link::Episode { publisher, manager, status, period } => {
            let mut episode = json!({
                "resourceType": "EpisodeOfCare", "status": status,
                "patient": patient_reference(patient),
                "managingOrganization": organisation_reference(world, manager, OrgRef::Literal),
            });
            if let Some(period) = period_json(now, *period) {
                episode["period"] = period;
            }
            (publisher, episode)
        }
        Link::Referral { publisher, performer, by, status, authored_days_ago } => {
            let mut referral = json!({
                "resourceType": "ServiceRequest", "status": status, "intent": "order",
                "code": local_code("referral"),
                "subject": patient_reference(patient),
                "performer": [organisation_reference(world, performer, *by)],
            });
            if let Some(days) = authored_days_ago {
                referral["authoredOn"] = json!(days_ago(now, *days));
            }
            (publisher, referral)
        }
    }
}

fn consent_resource(world: &World, patient: &str, spec: &ConsentSpec) -> Value {
    let mut provision = spec.provision.clone();
    if let Some((from, to)) = spec.period {
        provision["period"] = json!({"start": days_ago(world.now, -from), "end": days_ago(world.now, -to)});
    }
    json!({
        "resourceType": "Consent", "status": spec.status,
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6"}]}],
        "patient": patient_reference(patient),
        "dateTime": days_ago(world.now, 60),
        "provision": provision,
    })
}

fn observation(subject: Value, label: Label, old_spelling: bool) -> Value {
    with_labels(
        json!({"resourceType": "Observation", "status": "final", "code": local_code(label.code()), "subject": subject}),
        label,
        old_spelling,
    )
}

/// The records of one patient, from its scenario's sources, with tags `{patient}/…`.
fn patient_records(world: &World, scenario: &Scenario, index: usize, rng: &mut Rng) -> Vec<Planned> {
    let patient = world.patient(scenario.key).id.clone();
    let key = scenario.key;
    let old = index % 2 == 1;
    let subject = || patient_reference(&patient);
    let now = world.now;
    let mut planned = Vec::new();
    for source in scenario.record_sources {
        planned.push(plan(format!("{key}/obs-plain-{source}"), source, observation(subject(), Label::None, false)));
    }
    let labelled = [
        ("obs-sensitive", Label::Sensitive(rng.pick(&SENSITIVE_CLASSES))),
        ("obs-v", Label::Confidential),
        ("obs-nopat", Label::NotForPatient),
        ("obs-psy", Label::Psychiatry),
    ];
    for (tag, label) in labelled {
        planned.push(plan(format!("{key}/{tag}"), rng.pick(scenario.record_sources), observation(subject(), label, old)));
    }
    let record = |tag: &str, resource: Value, rng: &mut Rng| {
        let label = rng.pick(&RECORD_LABELS);
        plan(format!("{key}/{tag}"), rng.pick(scenario.record_sources), with_labels(resource, label, old))
    };
    let report = |category: &str, issued: Option<i64>| {
        let mut report = json!({
            "resourceType": "DiagnosticReport", "status": "final",
            "category": [{"coding": [{"system": DIAGNOSTIC_SERVICE, "code": category}]}],
            "code": local_code("report"), "subject": subject(),
        });
        if let Some(days) = issued {
            report["issued"] = json!(days_ago(now, days));
        }
        report
    };
    let attachment = base64::engine::general_purpose::STANDARD.encode(format!("letter about {key}"));
    let records = vec![
        record(
            "condition",
            json!({"resourceType": "Condition", "code": local_code("condition"), "subject": subject(),
                   "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}),
            rng,
        ),
        record(
            "docref",
            json!({"resourceType": "DocumentReference", "status": "current", "type": local_code("letter"), "subject": subject(),
                   "content": [{"attachment": {"contentType": "text/plain", "data": attachment}}]}),
            rng,
        ),
        record(
            "medication-statement",
            json!({"resourceType": "MedicationStatement", "status": "active",
                   "medicationCodeableConcept": local_code("metformin"), "subject": subject()}),
            rng,
        ),
        record(
            "allergy",
            json!({"resourceType": "AllergyIntolerance", "code": local_code("penicillin"), "patient": subject(),
                   "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}}),
            rng,
        ),
        record("report-rad-recent", report("RAD", Some(5)), rng),
        record("report-rad-released", report("RAD", Some(40)), rng),
        record("report-rad-undated", report("RAD", None), rng),
        record("report-lab-recent", report("LAB", Some(2)), rng),
    ];
    planned.extend(records);
    planned
}

/// Records that test one rule each, beyond the per-patient sets.
fn special_records(world: &World) -> Vec<Planned> {
    let p0 = world.patient("P0");
    let p10 = world.patient("P10").id.clone();
    let p11 = world.patient("P11").id.clone();
    let two_patients = |source: &'static str| {
        plan(
            format!("multi/{source}"),
            source,
            json!({"resourceType": "Observation", "status": "final", "code": local_code("plain"),
                   "subject": patient_reference(&p10), "performer": [patient_reference(&p11)]}),
        )
    };
    vec![
        // In P10's and P11's compartments: visible only where both are.
        two_patients(A81001),
        two_patients(RXB),
        // A reference by identifier only puts a resource in no compartment.
        plan(
            "special/identifier-only",
            RXA,
            json!({"resourceType": "Observation", "status": "final", "code": local_code("plain"),
                   "subject": {"type": "Patient", "identifier": {"system": NHS_SYSTEM, "value": p0.nhs}}}),
        ),
        // A V in a system the rules do not read is no label.
        plan(
            "special/foreign-label",
            RXA,
            json!({"resourceType": "Observation", "status": "final", "code": local_code("plain"),
                   "subject": patient_reference(&p0.id),
                   "meta": {"security": [{"system": "https://fixtures.example.nhs.uk/CodeSystem/labels", "code": "V"}]}}),
        ),
        // Updated below: labelled V in its second version.
        plan("special/later-confidential", RXA, observation(patient_reference(&p0.id), Label::None, false)),
        // Updated below: moved from P0 to P6 in its second version.
        plan("special/moved", RXB, observation(patient_reference(&p0.id), Label::None, false)),
    ]
}

/// A Composition per patient whose sections reference that patient's Observations of each
/// label, and a Binary per patient whose securityContext names its DocumentReference.
fn documents(world: &World, rng: &mut Rng) -> Vec<Planned> {
    let mut planned = Vec::new();
    for (index, scenario) in scenarios().iter().enumerate() {
        let key = scenario.key;
        let reference = |tag: &str| json!({"reference": world.tagged(&format!("{key}/{tag}")).key()});
        let plain: Vec<Value> = scenario.record_sources.iter().map(|source| reference(&format!("obs-plain-{source}"))).collect();
        let section = |title: &str, entries: Vec<Value>| {
            json!({"title": title, "code": local_code(title),
                   "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{title} of {key}</div>")},
                   "entry": entries})
        };
        let source = rng.pick(scenario.record_sources);
        let label = if index % 4 == 3 { Label::NotForPatient } else { Label::None };
        let composition = json!({
            "resourceType": "Composition", "status": "final", "type": local_code("summary"),
            "subject": patient_reference(&world.patient(key).id),
            "date": timestamp(world.now - Duration::days(3)),
            "author": [{"reference": format!("Organization/{}", world.organisation_id(source))}],
            "title": format!("Summary of {key}"),
            "section": [
                section("results", plain),
                section("confidential", vec![reference("obs-v")]),
                section("mixed", vec![reference(&format!("obs-plain-{}", scenario.record_sources[0])), reference("obs-sensitive")]),
                section("other", vec![reference("obs-psy"), reference("obs-nopat")]),
            ],
        });
        planned.push(plan(format!("{key}/composition"), source, with_labels(composition, label, false)));

        let document = world.tagged(&format!("{key}/docref"));
        // Mostly the document's publisher; for P2 another organisation.
        let binary_source = if key == "P2" {
            scenario.record_sources.iter().copied().find(|s| *s != document.source).unwrap_or(X09)
        } else {
            document.source
        };
        let data = base64::engine::general_purpose::STANDARD.encode(format!("attachment of {key}"));
        planned.push(plan(
            format!("{key}/binary"),
            binary_source,
            json!({"resourceType": "Binary", "contentType": "text/plain", "data": data,
                   "securityContext": {"reference": document.key()}}),
        ));
    }
    planned
}

/// Per patient, the original of its Composition twice over: a DocumentReference related to it
/// with the document attached, and a Binary whose securityContext is the Composition. Either is
/// the whole document, so it may be read only by those who may read every entry.
fn originals(world: &World) -> Vec<Planned> {
    let mut planned = Vec::new();
    for scenario in scenarios() {
        let key = scenario.key;
        let composition = world.tagged(&format!("{key}/composition"));
        let data = base64::engine::general_purpose::STANDARD.encode(format!("the whole summary of {key}"));
        let mut reference = json!({"resourceType": "DocumentReference", "status": "current", "type": local_code("summary"),
            "subject": patient_reference(&world.patient(key).id),
            "content": [{"attachment": {"contentType": "text/plain", "data": data, "title": format!("Summary of {key}")}}],
            "context": {"related": [{"reference": composition.key()}]}});
        if let Some(security) = composition.current()["meta"].get("security") {
            reference["meta"] = json!({"security": security});
        }
        planned.push(plan(format!("{key}/original-docref"), composition.source, reference));
        planned.push(plan(
            format!("{key}/original-binary"),
            composition.source,
            json!({"resourceType": "Binary", "contentType": "text/plain", "data": data, "securityContext": {"reference": composition.key()}}),
        ));
    }
    planned
}

/// Publish the whole world: reference data, patients, relationships, consents, records,
/// documents and their originals; then the updates and the deletion.
pub async fn publish(app: &TestApp, certificates: &Certificates) -> World {
    let publisher = Publisher::new(app, certificates);
    let mut rng = Rng(SEED);
    let mut world = World {
        now: OffsetDateTime::now_utc(),
        resources: Vec::new(),
        patients: Vec::new(),
        unknown_nhs: gateway::demo::test_nhs_number(5_000).to_string(),
        tags: HashMap::new(),
    };
    publisher.publish(&mut world, reference_data()).await;

    let scenarios = scenarios();
    let mut patients = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let nhs = gateway::demo::test_nhs_number(4_000 + index as u64).to_string();
        patients.push(plan(format!("{}/patient", scenario.key), scenario.patient_publisher, patient_resource(&world, scenario, &nhs)));
    }
    publisher.publish(&mut world, patients).await;
    for scenario in &scenarios {
        let stored = world.tagged(&format!("{}/patient", scenario.key));
        let nhs = stored.current()["identifier"][0]["value"].as_str().unwrap_or_default().to_owned();
        let fixture = PatientFixture { key: scenario.key, about: scenario.about, id: stored.id.clone(), nhs };
        world.patients.push(fixture);
    }

    let mut planned = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let patient = world.patient(scenario.key).id.clone();
        for (n, link) in scenario.links.iter().enumerate() {
            let (publisher, resource) = link_resource(&world, &patient, link);
            planned.push(plan(format!("{}/link-{n}", scenario.key), publisher, resource));
        }
        for (n, spec) in scenario.consents.iter().enumerate() {
            planned.push(plan(format!("{}/consent-{n}", scenario.key), X09, consent_resource(&world, &patient, spec)));
        }
        planned.extend(patient_records(&world, scenario, index, &mut rng));
    }
    planned.extend(special_records(&world));
    publisher.publish(&mut world, planned).await;
    let documents = documents(&world, &mut rng);
    publisher.publish(&mut world, documents).await;
    let originals = originals(&world);
    publisher.publish(&mut world, originals).await;

    publisher
        .update(&mut world, "special/later-confidential", |observation| {
            observation["meta"] = json!({"security": [{"system": CONFIDENTIALITY, "code": "V"}]});
            observation["code"] = local_code(Label::Confidential.code());
        })
        .await;
    let p6 = world.patient("P6").id.clone();
    publisher.update(&mut world, "special/moved", |observation| observation["subject"] = patient_reference(&p6)).await;
    for scenario in &scenarios {
        for (n, link) in scenario.links.iter().enumerate() {
            if matches!(link, Link::DeletedEncounter { .. }) {
                publisher.delete(&mut world, &format!("{}/link-{n}", scenario.key)).await;
            }
        }
    }
    world
}
