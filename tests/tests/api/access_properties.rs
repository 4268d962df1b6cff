//! Property: for random records, relationships, wishes and requesters, the search the store
//! runs with the consent scope in its SQL returns exactly the resources `consent::decide` lets
//! through when each is decided on its own (and counts them alike), on SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use consent::{ClientKind, Clinician, PatientUser, Principal, PurposeOfUse, RegisteredClient, Requester, SmartScopes, SystemUser};
use fhir_models::interaction::Interaction;
use fhir_models::{OdsCode, ResourceType};
use gateway::fhir::{FhirService, Handling};
use proptest::prelude::*;
use serde_json::{Value, json};
use tests::TestApp;

const ORGS: [&str; 3] = ["A81001", "RXA", "RXB"];
const LABELS: [(&str, &str); 4] = [
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIV"),
    ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "V"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "NOPAT"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY"),
];
const DAY: i64 = 86_400;

#[derive(Clone, Debug)]
enum Record {
    /// An Observation about a patient, from an organisation, with some labels.
    Observation {
        patient: usize,
        source: usize,
        labels: Vec<usize>,
    },
    /// A Condition about two patients (subject and asserter).
    Shared {
        patients: (usize, usize),
        source: usize,
    },
    /// A registration, an encounter ended this many days ago, or a referral.
    Registration {
        patient: usize,
        org: usize,
        by_reference: bool,
        source: usize,
    },
    Encounter {
        patient: usize,
        org: usize,
        ended_days_ago: Option<i64>,
        source: usize,
    },
    Referral {
        patient: usize,
        org: usize,
        days_ago: i64,
        source: usize,
    },
    /// A patient-privacy Consent of one of the documented shapes.
    Wish {
        patient: usize,
        shape: usize,
        org: usize,
        in_force: bool,
        source: usize,
    },
    /// A Binary naming a record (by its position among records so far) or nothing.
    Binary {
        context: Option<usize>,
        source: usize,
    },
    /// Reference data, possibly labelled, and a type nobody shares.
    Organization {
        source: usize,
        label: Option<usize>,
    },
    Service {
        source: usize,
    },
}

fn record() -> impl Strategy<Value = Record> {
    let patient = 0usize..4;
    let org = 0usize..ORGS.len();
    prop_oneof![
        4 => (patient.clone(), org.clone(), proptest::collection::vec(0usize..LABELS.len(), 0..2))
            .prop_map(|(patient, source, labels)| Record::Observation { patient, source, labels }),
        1 => ((patient.clone(), patient.clone()), org.clone()).prop_map(|(patients, source)| Record::Shared { patients, source }),
        2 => (patient.clone(), org.clone(), any::<bool>(), org.clone())
            .prop_map(|(patient, org, by_reference, source)| Record::Registration { patient, org, by_reference, source }),
        2 => (patient.clone(), org.clone(), proptest::option::of(prop_oneof![Just(10i64), Just(300), Just(400), Just(800)]), org.clone())
            .prop_map(|(patient, org, ended_days_ago, source)| Record::Encounter { patient, org, ended_days_ago, source }),
        1 => (patient.clone(), org.clone(), prop_oneof![Just(20i64), Just(500)], org.clone())
            .prop_map(|(patient, org, days_ago, source)| Record::Referral { patient, org, days_ago, source }),
        3 => (patient.clone(), 0usize..8, org.clone(), any::<bool>(), org.clone())
            .prop_map(|(patient, shape, org, in_force, source)| Record::Wish { patient, shape, org, in_force, source }),
        1 => (proptest::option::of(0usize..40), org.clone()).prop_map(|(context, source)| Record::Binary { context, source }),
        1 => (org.clone(), proptest::option::of(0usize..LABELS.len())).prop_map(|(source, label)| Record::Organization { source, label }),
        1 => org.prop_map(|source| Record::Service { source }),
    ]
}

#[derive(Clone, Debug)]
enum Viewer {
    Clinician {
        org: usize,
        emergency: bool,
        self_claim: Option<usize>,
    },
    System {
        org: usize,
    },
    Patient {
        patient: usize,
    },
    /// A clinician (or, `system`, a backend) approved for research.
    Researcher {
        org: usize,
        system: bool,
    },
}

fn viewer() -> impl Strategy<Value = Viewer> {
    prop_oneof![
        3 => (0usize..ORGS.len(), any::<bool>(), proptest::option::of(0usize..4))
            .prop_map(|(org, emergency, self_claim)| Viewer::Clinician { org, emergency, self_claim }),
        1 => (0usize..ORGS.len()).prop_map(|org| Viewer::System { org }),
        2 => (0usize..4).prop_map(|patient| Viewer::Patient { patient }),
        2 => (0usize..ORGS.len(), any::<bool>()).prop_map(|(org, system)| Viewer::Researcher { org, system }),
    ]
}

/// The stored world: organisations and patients with their ids, records so far.
struct World {
    organizations: Vec<String>,
    patients: Vec<String>,
    records: Vec<(ResourceType, String)>,
}

fn publisher(org: usize) -> Requester {
    let ods = OdsCode::parse(ORGS[org]).unwrap();
    let client = RegisteredClient {
        name: format!("publisher-{}", ORGS[org]),
        kind: ClientKind::Trust,
        ods: ods.clone(),
        scopes: SmartScopes::parse_claim("system/*.cruds").unwrap(),
        secondary_uses: Vec::new(),
    };
    Requester::client(client).with_principal(Principal::System(
        SystemUser { subject: "publisher".into(), organisation: ods, purpose: PurposeOfUse::Treatment },
        SmartScopes::parse_claim("system/*.cruds").unwrap(),
    ))
}

async fn publish(service: &FhirService, org: usize, resource: Value) -> String {
    let resource_type = ResourceType::parse(resource["resourceType"].as_str().unwrap()).unwrap();
    let permit = gateway::enforce::authorize(publisher(org), Interaction::Create, Some(resource_type)).unwrap();
    let validated = gateway::fhir::prepare(service, serde_json::to_vec(&resource).unwrap(), Some(resource_type))
        .await
        .unwrap_or_else(|e| panic!("{resource}: {e:?}"));
    match gateway::fhir::create(service, &permit, validated, None).await.unwrap() {
        gateway::fhir::Created::New(version) | gateway::fhir::Created::Existing(version) => version.id,
    }
}

fn date(days_ago: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::seconds(days_ago * DAY);
    format!("{:04}-{:02}-{:02}", at.year(), u8::from(at.month()), at.day())
}

fn ods(org: usize) -> Value {
    json!({"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ORGS[org]}})
}

fn wish(patient: &str, shape: usize, org: usize, in_force: bool) -> Value {
    let actor = |role: &str| json!([{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": role}]}, "reference": ods(org)}]);
    let provision = match shape {
        0 => json!({"type": "deny"}),
        1 => json!({"type": "permit", "provision": [{"type": "deny", "actor": actor("IRCP")}]}),
        2 => json!({"type": "permit", "provision": [{"type": "deny", "actor": actor("AUT")}]}),
        3 => {
            json!({"type": "permit", "provision": [{"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}]})
        }
        4 => json!({"type": "deny", "provision": [{"type": "permit", "actor": actor("IRCP")}]}),
        // The National Data Opt-out, and a Type 1 opt-out at a practice.
        6 => json!({"type": "deny", "purpose": secondary_uses()}),
        7 => json!({"type": "deny", "purpose": secondary_uses(), "actor": actor("CST")}),
        _ => json!({"type": "permit", "provision": [{"type": "deny", "securityLabel": [{"system": LABELS[3].0, "code": LABELS[3].1}]}]}),
    };
    let mut provision = provision;
    if !in_force {
        provision["period"] = json!({"end": date(30)});
    }
    json!({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6"}]}],
        "patient": {"reference": format!("Patient/{patient}")}, "provision": provision
    })
}

fn secondary_uses() -> Value {
    let reason = |code: &str| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": code});
    json!([reason("HOPERAT"), reason("HRESCH"), reason("PUBHLTH")])
}

/// `resource` with these labels in `meta.security` (none: no `meta`).
fn labelled(mut resource: Value, labels: &[(&str, &str)]) -> Value {
    if !labels.is_empty() {
        resource["meta"] =
            json!({"security": labels.iter().map(|(system, code)| json!({"system": system, "code": code})).collect::<Vec<_>>()});
    }
    resource
}

const RESTRICTED: (&str, &str) = ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R");

fn labels(indexes: &[usize]) -> Vec<(&'static str, &'static str)> {
    indexes.iter().map(|l| LABELS[*l]).collect()
}

impl World {
    async fn new(service: &FhirService) -> Self {
        let mut organizations = Vec::new();
        for (index, code) in ORGS.iter().enumerate() {
            let organisation = json!({"resourceType": "Organization", "identifier": [ods(index)["identifier"].clone()], "name": code});
            organizations.push(publish(service, index, organisation).await);
        }
        let mut patients = Vec::new();
        for index in 0..4u64 {
            let nhs = gateway::demo::test_nhs_number(500 + index).as_string();
            let patient = json!({"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
                "address": [{"city": "Leeds"}]});
            // The last patient is restricted (S-flag).
            let patient = labelled(patient, if index == 3 { &[RESTRICTED] } else { &[] });
            patients.push(publish(service, index as usize % ORGS.len(), patient).await);
        }
        Self { organizations, patients, records: Vec::new() }
    }

    async fn add(&mut self, service: &FhirService, record: &Record) {
        let subject = |patient: usize| json!({"reference": format!("Patient/{}", self.patients[patient])});
        let (source, resource) = match record {
            Record::Observation { patient, source, labels: chosen } => (
                *source,
                labelled(
                    json!({"resourceType": "Observation", "status": "final",
                "code": {"text": "pulse"}, "subject": subject(*patient)}),
                    &labels(chosen),
                ),
            ),
            Record::Shared { patients, source } => (
                *source,
                json!({"resourceType": "Condition", "code": {"text": "shared"},
                "subject": subject(patients.0), "asserter": subject(patients.1)}),
            ),
            Record::Registration { patient, org, by_reference, source } => {
                let practice =
                    if *by_reference { json!({"reference": format!("Organization/{}", self.organizations[*org])}) } else { ods(*org) };
                let nhs = gateway::demo::test_nhs_number(500 + *patient as u64).as_string();
                let registered = json!({"resourceType": "Patient", "id": self.patients[*patient],
                    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}], "generalPractitioner": [practice],
                    "address": [{"city": "Leeds"}]});
                (*source, labelled(registered, if *patient == 3 { &[RESTRICTED] } else { &[] }))
            }
            Record::Encounter { patient, org, ended_days_ago, source } => {
                let period = match ended_days_ago {
                    Some(days) => json!({"start": date(days + 2), "end": date(*days)}),
                    None => json!({"start": date(3)}),
                };
                (
                    *source,
                    json!({"resourceType": "Encounter", "status": if ended_days_ago.is_some() { "finished" } else { "in-progress" },
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": subject(*patient), "serviceProvider": {"reference": format!("Organization/{}", self.organizations[*org])}, "period": period}),
                )
            }
            Record::Referral { patient, org, days_ago, source } => (
                *source,
                json!({"resourceType": "ServiceRequest", "status": "active",
                "intent": "order", "subject": subject(*patient), "authoredOn": date(*days_ago), "performer": [ods(*org)]}),
            ),
            Record::Wish { patient, shape, org, in_force, source } => (*source, wish(&self.patients[*patient], *shape, *org, *in_force)),
            Record::Binary { context, source } => {
                let mut binary = json!({"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="});
                if let Some((resource_type, id)) = context.and_then(|c| self.records.get(c % self.records.len().max(1))) {
                    binary["securityContext"] = json!({"reference": format!("{resource_type}/{id}")});
                }
                (*source, binary)
            }
            Record::Organization { source, label } => (
                *source,
                labelled(json!({"resourceType": "Organization", "name": "a clinic"}), &labels(&label.iter().copied().collect::<Vec<_>>())),
            ),
            Record::Service { source } => (*source, json!({"resourceType": "HealthcareService", "name": "a service"})),
        };
        let resource_type = ResourceType::parse(resource["resourceType"].as_str().unwrap()).unwrap();
        let id = match resource.get("id").and_then(Value::as_str) {
            // A registration replaces the Patient (a new version with the practice).
            Some(id) => {
                let permit = gateway::enforce::authorize(publisher(source), Interaction::Update, Some(resource_type)).unwrap();
                let validated = gateway::fhir::prepare(service, serde_json::to_vec(&resource).unwrap(), Some(resource_type)).await.unwrap();
                gateway::fhir::update(service, &permit, resource_type, id, validated, None).await.unwrap();
                id.to_owned()
            }
            None => publish(service, source, resource).await,
        };
        self.records.push((resource_type, id));
    }

    fn requester(&self, viewer: &Viewer) -> (Requester, Vec<String>) {
        match viewer {
            Viewer::Clinician { org, emergency, self_claim } => {
                let ods = OdsCode::parse(ORGS[*org]).unwrap();
                let clinician = Clinician {
                    subject: "dr".into(),
                    role: Some("R8000".into()),
                    organisation: ods.clone(),
                    purpose: if *emergency { PurposeOfUse::EmergencyTreatment } else { PurposeOfUse::Treatment },
                    reason: Some("in clinic".into()),
                    self_claimed: self_claim.is_some(),
                };
                let scopes = SmartScopes::parse_claim("user/*.rs").unwrap();
                let client = RegisteredClient {
                    name: "c".into(),
                    kind: ClientKind::GpSystem,
                    ods,
                    scopes: scopes.clone(),
                    secondary_uses: Vec::new(),
                };
                let claimed = self_claim.map(|p| vec![self.patients[p].clone()]).unwrap_or_default();
                (Requester::client(client).with_principal(Principal::Clinician(clinician, scopes)), claimed)
            }
            Viewer::System { org } => (publisher(*org), Vec::new()),
            Viewer::Researcher { org, system } => {
                let ods = OdsCode::parse(ORGS[*org]).unwrap();
                let (scopes, principal) = if *system {
                    let scopes = SmartScopes::parse_claim("system/*.rs").unwrap();
                    let user = SystemUser { subject: "extract".into(), organisation: ods.clone(), purpose: PurposeOfUse::Research };
                    (scopes.clone(), Principal::System(user, scopes))
                } else {
                    let scopes = SmartScopes::parse_claim("user/*.rs").unwrap();
                    let user = Clinician {
                        subject: "researcher".into(),
                        role: None,
                        organisation: ods.clone(),
                        purpose: PurposeOfUse::Research,
                        reason: None,
                        self_claimed: false,
                    };
                    (scopes.clone(), Principal::Clinician(user, scopes))
                };
                let client = RegisteredClient {
                    name: "r".into(),
                    kind: ClientKind::Trust,
                    ods,
                    scopes,
                    secondary_uses: vec![PurposeOfUse::Research],
                };
                (Requester::client(client).with_principal(principal), Vec::new())
            }
            Viewer::Patient { patient } => {
                let nhs = gateway::demo::test_nhs_number(500 + *patient as u64);
                let user = PatientUser { subject: "p".into(), nhs_number: nhs, proofing_level: "P9".into() };
                (
                    Requester::anonymous().with_principal(Principal::Patient(user, SmartScopes::parse_claim("patient/*.rs").unwrap())),
                    Vec::new(),
                )
            }
        }
    }
}

const TYPES: [&str; 8] = ["Observation", "Condition", "Patient", "Encounter", "Consent", "Binary", "Organization", "HealthcareService"];

/// For each type: the ids the scoped SQL returns and counts, and those `decide` lets through.
async fn compare(service: &FhirService, world: &World, viewer: &Viewer) -> Result<(), String> {
    let (requester, claimed) = world.requester(viewer);
    for type_name in TYPES {
        let resource_type = ResourceType::parse(type_name).unwrap();
        let permit = gateway::enforce::authorize(requester.clone(), Interaction::SearchType, Some(resource_type)).unwrap();
        let plain = gateway::fhir::access::scope(service, &permit, &claimed).await.unwrap();
        // The same decisions when some patients are already decided from their facts (as a
        // patient-targeted search does after its gate).
        let facts = service.store.patient_facts(&world.patients).await.unwrap();
        let known = Arc::new(consent::Scope::clone(&plain).with_known_patients(&facts));
        for scope in [plain, known] {
            let params = [("_count".to_owned(), "1000".to_owned()), ("_total".to_owned(), "accurate".to_owned())];
            let mut limits = service.limits.clone();
            limits.max_count = 1000;
            let everything = gateway::fhir::parse_search(resource_type, &params, &limits, Handling::Strict).unwrap().query;
            let all = service.store.search(&everything).await.unwrap().matches;
            let decided: BTreeSet<String> = gateway::fhir::access::release(service, &scope, all, false)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.is_visible())
                .map(|r| r.version.id)
                .collect();
            let mut scoped = everything.clone();
            scoped.access = Some(Arc::clone(&scope));
            scoped.position = Some(gateway::store::Position { values: Vec::new(), key: 0, backward: false });
            let page = service.store.search(&scoped).await.unwrap();
            let in_sql: BTreeSet<String> = page.matches.iter().map(|v| v.id.clone()).collect();
            if in_sql != decided {
                return Err(format!(
                    "{viewer:?} {type_name}: the SQL scope gives {:?} but decide permits {:?}",
                    in_sql.symmetric_difference(&decided).filter(|id| in_sql.contains(*id)).collect::<Vec<_>>(),
                    decided.symmetric_difference(&in_sql).filter(|id| decided.contains(*id)).collect::<Vec<_>>()
                ));
            }
            if page.total != Some(in_sql.len() as i64) {
                return Err(format!("{viewer:?} {type_name}: total {:?} for {} matches", page.total, in_sql.len()));
            }
        }
    }
    Ok(())
}

#[test]
fn the_sql_scope_returns_exactly_what_decide_permits() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let service = app.fhir.clone();
    let mut world = runtime.block_on(World::new(&service));
    let config = ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (proptest::collection::vec(record(), 1..12), proptest::collection::vec(viewer(), 1..6));
    let world = std::cell::RefCell::new(&mut world);
    let result = runner.run(&strategy, |(records, viewers)| {
        let mut world = world.borrow_mut();
        runtime.block_on(async {
            for record in &records {
                world.add(&service, record).await;
            }
            for viewer in &viewers {
                compare(&service, &world, viewer).await.map_err(TestCaseError::fail)?;
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // The world grew case by case: the last comparison covered everything written.
    assert!(world.borrow().records.len() >= 40, "the cases wrote records");
}
