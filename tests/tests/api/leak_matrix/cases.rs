//! The matrix: every requester × read path × relevant resource, each with the answer the
//! oracle expects, computed before any request is sent.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::fixture::{A81004, NHS_SYSTEM, RESTRICTED_PHONE, SHARED_POSTCODE, Stored, World};
use super::oracle::{Claim, Oracle, Who, literal_patient, values_at};
use super::requesters::Requester;

/// Every `READ_EVERY`th resource is read directly by each requester (a different slice per
/// requester), besides every Patient, Composition and Binary; batches read all of them.
const READ_EVERY: usize = 10;
const VREAD_EVERY: usize = 20;
const HISTORY_EVERY: usize = 30;
/// Enough for any search of the fixture in one page, unless the case pages on purpose.
const ONE_PAGE: &str = "_count=500";
/// Cases kept per family for a requester every request of which is refused.
const REFUSED_PER_FAMILY: usize = 3;

/// `Type/id` keys.
pub type Keys = BTreeSet<String>;

#[derive(Clone, Copy, Debug)]
pub enum Probe {
    Read,
    Vread(usize),
    History,
}

impl Probe {
    /// The path of this probe for `Type/id`.
    pub fn path(self, type_name: &str, id: &str) -> String {
        match self {
            Probe::Read => format!("{type_name}/{id}"),
            Probe::Vread(version) => format!("{type_name}/{id}/_history/{version}"),
            Probe::History => format!("{type_name}/{id}/_history"),
        }
    }
}

pub enum BatchEntry {
    Found(String),
    /// Withheld, or truly missing: answered alike.
    NotFound {
        type_name: String,
        id: String,
    },
}

pub enum Expected {
    Refused {
        status: u16,
        code: Option<&'static str>,
    },
    Found {
        key: String,
        version: Option<usize>,
    },
    /// Answered exactly as the same probe of an id that does not exist.
    Withheld {
        type_name: String,
        id: String,
        probe: Probe,
    },
    Searchset {
        matches: Keys,
        includes: Keys,
        count_only: bool,
        /// Patients' `_include`/`_revinclude` may be refused whole (400), as they are today.
        may_refuse_includes: bool,
    },
    Everything {
        required: Keys,
        allowed: Keys,
    },
    History {
        key: String,
        versions: usize,
    },
    Batch {
        entries: Vec<BatchEntry>,
    },
}

/// What one requester may see in one request: indexed like `World::resources`.
pub struct View {
    pub visible: Vec<bool>,
}

pub struct Case {
    pub requester: usize,
    pub family: &'static str,
    pub path: String,
    /// POSTed to the base (batches); otherwise the case is a GET.
    pub body: Option<Value>,
    pub view: Arc<View>,
    pub expected: Expected,
}

/// What `who` may see, with `claim` the patients a self-claim covers in the request.
fn view_of(oracle: &Oracle, who: &Who, claim: &Claim) -> View {
    View { visible: (0..oracle.world.resources.len()).map(|index| oracle.visible(who, index, claim)).collect() }
}

/// The `patient` search parameter's reference, for the types the fixture holds.
pub fn patient_param(stored: &Stored) -> Option<String> {
    let element = match stored.type_name.as_str() {
        "Patient" | "Binary" | "Organization" | "Practitioner" | "Location" | "Medication" | "HealthcareService" => return None,
        "AllergyIntolerance" | "EpisodeOfCare" | "Consent" => "patient",
        _ => "subject",
    };
    literal_patient(&stored.current()[element])
}

fn codes(stored: &Stored) -> Vec<String> {
    values_at(stored.current(), "code.coding").iter().filter_map(|c| c["code"].as_str().map(str::to_owned)).collect()
}

fn has_postcode(stored: &Stored, postcode: &str) -> bool {
    values_at(stored.current(), "address").iter().any(|a| a["postalCode"] == postcode)
}

fn has_phone(stored: &Stored, phone: &str) -> bool {
    values_at(stored.current(), "telecom").iter().any(|t| t["system"] == "phone" && t["value"] == phone)
}

/// The Organization ids a Patient's `generalPractitioner` references literally.
fn practice_ids(stored: &Stored) -> Vec<String> {
    values_at(stored.current(), "generalPractitioner")
        .iter()
        .filter_map(|r| r["reference"].as_str()?.strip_prefix("Organization/").map(str::to_owned))
        .collect()
}

struct Generator<'a> {
    world: &'a World,
    oracle: &'a Oracle<'a>,
    requester: usize,
    who: &'a Who,
    base: Arc<View>,
    cases: Vec<Case>,
}

impl<'a> Generator<'a> {
    fn push(&mut self, family: &'static str, path: String, view: Arc<View>, expected: Expected) {
        self.cases.push(Case { requester: self.requester, family, path, body: None, view, expected });
    }

    fn live(&self) -> impl Iterator<Item = (usize, &'a Stored)> + 'a {
        self.world.resources.iter().enumerate().filter(|(_, r)| !r.deleted)
    }

    /// Keys of resources visible in `view` for which `matches` holds.
    fn select(&self, view: &View, matches: impl Fn(&Stored) -> bool) -> Keys {
        self.live().filter(|(index, r)| view.visible[*index] && matches(r)).map(|(_, r)| r.key()).collect()
    }

    fn visible_patient(&self, view: &View, id: &str) -> bool {
        self.oracle.index_of(&format!("Patient/{id}")).is_some_and(|index| view.visible[index])
    }

    fn hides(&self, patient: &str) -> bool {
        self.oracle.hides_restricted_details(self.who, patient)
    }

    fn searchset(&self, matches: Keys, includes: Keys) -> Expected {
        Expected::Searchset { matches, includes, count_only: false, may_refuse_includes: false }
    }

    fn probe(&mut self, family: &'static str, index: usize, probe: Probe) {
        let stored = &self.world.resources[index];
        let expected = if self.base.visible[index] {
            match probe {
                Probe::Read => Expected::Found { key: stored.key(), version: None },
                Probe::Vread(version) => Expected::Found { key: stored.key(), version: Some(version) },
                Probe::History => Expected::History { key: stored.key(), versions: stored.versions.len() },
            }
        } else {
            Expected::Withheld { type_name: stored.type_name.clone(), id: stored.id.clone(), probe }
        };
        self.push(family, probe.path(&stored.type_name, &stored.id), self.base.clone(), expected);
    }

    fn always_probed(stored: &Stored) -> bool {
        matches!(stored.type_name.as_str(), "Patient" | "Composition" | "Binary")
    }

    fn reads(&mut self) {
        let updated: Vec<usize> = self.live().filter(|(_, r)| r.versions.len() > 1).map(|(index, _)| index).collect();
        let rotation = self.requester;
        let sample = |every: usize| -> Vec<usize> {
            self.live().filter(|(index, _)| (index + rotation).is_multiple_of(every)).map(|(index, _)| index).collect::<Vec<_>>()
        };
        let reads: Vec<usize> = self
            .live()
            .filter(|(index, r)| Self::always_probed(r) || (index + rotation).is_multiple_of(READ_EVERY))
            .map(|(index, _)| index)
            .collect();
        let vreads = sample(VREAD_EVERY);
        let histories = sample(HISTORY_EVERY);
        for index in reads {
            self.probe("read", index, Probe::Read);
        }
        for index in vreads {
            self.probe("vread", index, Probe::Vread(1));
        }
        for index in histories.into_iter().chain(updated.iter().copied()) {
            self.probe("history", index, Probe::History);
        }
        // Every version of the updated resources: an old version is decided by the current one.
        for index in updated {
            for version in 1..=self.world.resources[index].versions.len() {
                self.probe("vread", index, Probe::Vread(version));
            }
        }
    }

    fn searches_by_type(&mut self) {
        for (n, type_name) in self.world.types().into_iter().enumerate() {
            let matches = self.select(&self.base, |r| r.type_name == type_name);
            let accurate = format!("{type_name}?{ONE_PAGE}&_total=accurate");
            self.push("search-type", accurate, self.base.clone(), self.searchset(matches.clone(), Keys::new()));
            // Without `_total`, on every other type: a total, if given, must not count the withheld.
            if n % 2 == self.requester % 2 {
                let plain = format!("{type_name}?{ONE_PAGE}");
                self.push("search-type", plain, self.base.clone(), self.searchset(matches, Keys::new()));
            }
        }
    }

    /// A patient-targeted search: refused first when the oracle says so, else run with the
    /// self-claim (if any) covering the named patients.
    fn targeted(&mut self, family: &'static str, path: String, named: Claim, build: impl FnOnce(&Self, &View) -> Expected) {
        if let Some(code) = self.oracle.refuses_patient_targeted_search(self.who, &named) {
            self.push(family, path, self.base.clone(), Expected::Refused { status: 403, code: Some(code) });
            return;
        }
        let view = match self.who {
            Who::Clinician { self_claim: true, .. } if !named.is_empty() => Arc::new(view_of(self.oracle, self.who, &named)),
            _ => self.base.clone(),
        };
        let expected = build(self, &view);
        self.push(family, path, view, expected);
    }

    fn patient_targeted(&mut self) {
        let patients: Vec<(usize, String, String)> =
            self.world.patients.iter().enumerate().map(|(n, p)| (n, p.id.clone(), p.nhs.clone())).collect();
        for (n, id, nhs) in patients {
            let by_id = self.oracle.patients_with_id(&id);
            let by_nhs = self.oracle.patients_with_nhs_number(&nhs);
            self.observations_of(&id, &by_id);
            self.targeted("compartment", format!("Patient/{id}/Observation?{ONE_PAGE}"), by_id.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "Observation" && g.in_compartment(r, &id)), Keys::new())
            });
            self.documents_by_nhs_number(&nhs, &by_nhs);
            self.targeted("targeted", format!("Patient?identifier={NHS_SYSTEM}|{nhs}"), by_nhs.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "Patient" && by_nhs.contains(&r.id)), Keys::new())
            });
            self.targeted("targeted", format!("Patient?_id={id}"), by_id.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "Patient" && r.id == id), Keys::new())
            });
            self.targeted("targeted", format!("Condition?patient={id}&{ONE_PAGE}"), by_id.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "Condition" && patient_param(r).as_deref() == Some(id.as_str())), Keys::new())
            });
            self.targeted("everything", format!("Patient/{id}/$everything?{ONE_PAGE}"), by_id.clone(), |g, v| g.everything(v, &id));
            self.rotating_extra(n, &id, &nhs, &by_id, &by_nhs);
        }
        self.unknown_patient();
    }

    fn in_compartment(&self, stored: &Stored, patient: &str) -> bool {
        self.oracle.index_of(&stored.key()).is_some_and(|index| self.oracle.compartment(index).contains(patient))
    }

    fn observations_of(&mut self, id: &str, named: &Claim) {
        let id = id.to_owned();
        self.targeted("targeted", format!("Observation?patient=Patient/{id}&{ONE_PAGE}"), named.clone(), |g, v| {
            g.searchset(g.select(v, |r| r.type_name == "Observation" && patient_param(r).as_deref() == Some(id.as_str())), Keys::new())
        });
    }

    /// `DocumentReference?patient.identifier=…`: a chain, so the Patient must be visible too.
    fn documents_by_nhs_number(&mut self, nhs: &str, named: &Claim) {
        let named_ids = named.clone();
        self.targeted("chain", format!("DocumentReference?patient.identifier={NHS_SYSTEM}|{nhs}&{ONE_PAGE}"), named.clone(), |g, v| {
            g.searchset(
                g.select(v, |r| {
                    r.type_name == "DocumentReference"
                        && patient_param(r).is_some_and(|p| named_ids.contains(&p) && g.visible_patient(v, &p))
                }),
                Keys::new(),
            )
        });
    }

    /// One more patient-targeted form per patient, in rotation.
    fn rotating_extra(&mut self, n: usize, id: &str, nhs: &str, by_id: &Claim, by_nhs: &Claim) {
        let id = id.to_owned();
        match n % 6 {
            0 => self.targeted("compartment", format!("Patient/{id}/Composition?{ONE_PAGE}"), by_id.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "Composition" && g.in_compartment(r, &id)), Keys::new())
            }),
            1 => {
                let named = by_nhs.clone();
                self.targeted(
                    "chain",
                    format!("Observation?subject:Patient.identifier={NHS_SYSTEM}|{nhs}&{ONE_PAGE}"),
                    by_nhs.clone(),
                    |g, v| {
                        g.searchset(
                            g.select(v, |r| {
                                r.type_name == "Observation"
                                    && patient_param(r).is_some_and(|p| named.contains(&p) && g.visible_patient(v, &p))
                            }),
                            Keys::new(),
                        )
                    },
                )
            }
            2 => self.targeted(
                "revinclude",
                format!("Patient?_id={id}&_revinclude=Observation:patient&{ONE_PAGE}"),
                by_id.clone(),
                |g, v| {
                    let matches = g.select(v, |r| r.type_name == "Patient" && r.id == id);
                    let includes = if matches.is_empty() {
                        Keys::new()
                    } else {
                        g.select(v, |r| r.type_name == "Observation" && patient_param(r).as_deref() == Some(id.as_str()))
                    };
                    g.with_patient_include_refusal(g.searchset(matches, includes))
                },
            ),
            3 => self.targeted("paging", format!("Observation?patient=Patient/{id}&_count=2"), by_id.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "Observation" && patient_param(r).as_deref() == Some(id.as_str())), Keys::new())
            }),
            4 => self.targeted("summary-count", format!("Observation?subject=Patient/{id}&_summary=count"), by_id.clone(), |g, v| {
                let matches = g.select(v, |r| r.type_name == "Observation" && patient_param(r).as_deref() == Some(id.as_str()));
                Expected::Searchset { matches, includes: Keys::new(), count_only: true, may_refuse_includes: false }
            }),
            _ => self.targeted("compartment", format!("Patient/{id}/DiagnosticReport?{ONE_PAGE}"), by_id.clone(), |g, v| {
                g.searchset(g.select(v, |r| r.type_name == "DiagnosticReport" && g.in_compartment(r, &id)), Keys::new())
            }),
        }
    }

    /// Targeted searches naming a patient nobody has: refused for relationship like any
    /// patient the clinician has none with.
    fn unknown_patient(&mut self) {
        let missing = uuid::Uuid::new_v4().to_string();
        let unknown = self.world.unknown_nhs.clone();
        self.observations_of(&missing, &Claim::new());
        self.documents_by_nhs_number(&unknown, &Claim::new());
        self.targeted("targeted", format!("Patient?identifier={NHS_SYSTEM}|{unknown}"), Claim::new(), |g, _| {
            g.searchset(Keys::new(), Keys::new())
        });
    }

    /// `$everything`: the visible resources of the compartment, and nothing the requester may
    /// not see (referenced resources outside any compartment may come along).
    fn everything(&self, view: &View, patient: &str) -> Expected {
        let required = self.select(view, |r| self.in_compartment(r, patient));
        let outside = self.select(view, |r| self.oracle.index_of(&r.key()).is_some_and(|index| self.oracle.compartment(index).is_empty()));
        Expected::Everything { allowed: required.union(&outside).cloned().collect(), required }
    }

    fn with_patient_include_refusal(&self, expected: Expected) -> Expected {
        match expected {
            Expected::Searchset { matches, includes, count_only, .. } => {
                Expected::Searchset { matches, includes, count_only, may_refuse_includes: self.who.is_patient() }
            }
            other => other,
        }
    }

    /// Searches that name no single patient: never refused for patient-level reasons.
    fn across_patients(&mut self) {
        let base = self.base.clone();
        let v = &*base;
        let observations = self.select(v, |r| r.type_name == "Observation");
        let patients = self.select(v, |r| r.type_name == "Patient");

        let included_patients = self.select(v, |r| {
            r.type_name == "Patient"
                && self
                    .live()
                    .any(|(index, o)| v.visible[index] && o.type_name == "Observation" && patient_param(o).as_deref() == Some(&r.id))
        });
        let include = self.with_patient_include_refusal(self.searchset(observations.clone(), included_patients));
        self.push("include", format!("Observation?_include=Observation:patient&{ONE_PAGE}"), base.clone(), include);

        let revincluded = self
            .select(v, |r| r.type_name == "Observation" && patient_param(r).is_some_and(|p| patients.contains(&format!("Patient/{p}"))));
        let revinclude = self.with_patient_include_refusal(self.searchset(patients.clone(), revincluded));
        self.push("revinclude", format!("Patient?_revinclude=Observation:patient&{ONE_PAGE}"), base.clone(), revinclude);

        let practices: BTreeSet<String> = self
            .live()
            .filter(|(index, r)| v.visible[*index] && r.type_name == "Patient" && !self.hides(&r.id))
            .flat_map(|(_, r)| practice_ids(r))
            .collect();
        let included_practices = self.select(v, |r| r.type_name == "Organization" && practices.contains(&r.id));
        let gp_include = self.with_patient_include_refusal(self.searchset(patients.clone(), included_practices));
        self.push("include", format!("Patient?_include=Patient:general-practitioner&{ONE_PAGE}"), base.clone(), gp_include);

        for code in ["confidential", "sensitive", "psy"] {
            let matches = self.select(v, |p| {
                p.type_name == "Patient"
                    && self.live().any(|(index, o)| {
                        v.visible[index]
                            && o.type_name == "Observation"
                            && patient_param(o).as_deref() == Some(&p.id)
                            && codes(o).iter().any(|c| c == code)
                    })
            });
            self.push(
                "has",
                format!("Patient?_has:Observation:patient:code={code}&{ONE_PAGE}"),
                base.clone(),
                self.searchset(matches, Keys::new()),
            );
        }

        let postcode = SHARED_POSTCODE.replace(' ', "%20");
        let by_postcode = self.select(v, |r| r.type_name == "Patient" && has_postcode(r, SHARED_POSTCODE) && !self.hides(&r.id));
        self.push(
            "restricted-search",
            format!("Patient?address-postalcode={postcode}&{ONE_PAGE}"),
            base.clone(),
            self.searchset(by_postcode.clone(), Keys::new()),
        );
        let by_phone = self.select(v, |r| r.type_name == "Patient" && has_phone(r, RESTRICTED_PHONE) && !self.hides(&r.id));
        self.push("restricted-search", format!("Patient?phone={RESTRICTED_PHONE}"), base.clone(), self.searchset(by_phone, Keys::new()));
        let practice = self.world.organisation_id(A81004);
        let by_practice = self.select(v, |r| r.type_name == "Patient" && practice_ids(r).contains(&practice) && !self.hides(&r.id));
        self.push(
            "restricted-search",
            format!("Patient?general-practitioner=Organization/{practice}"),
            base.clone(),
            self.searchset(by_practice, Keys::new()),
        );
        let chained: Keys = self
            .select(v, |r| r.type_name == "Observation" && patient_param(r).is_some_and(|p| by_postcode.contains(&format!("Patient/{p}"))));
        self.push(
            "restricted-search",
            format!("Observation?patient.address-postalcode={postcode}&{ONE_PAGE}"),
            base.clone(),
            self.searchset(chained, Keys::new()),
        );

        let two = [self.world.patient("P0").id.clone(), self.world.patient("P4").id.clone()];
        let of_two = self.select(v, |r| r.type_name == "Observation" && patient_param(r).is_some_and(|p| two.contains(&p)));
        let path = format!("Observation?patient=Patient/{},Patient/{}&{ONE_PAGE}", two[0], two[1]);
        self.push("across-patients", path, base.clone(), self.searchset(of_two, Keys::new()));

        for type_name in ["Observation", "Patient", "DocumentReference"] {
            let matches = self.select(v, |r| r.type_name == type_name);
            let expected = Expected::Searchset { matches, includes: Keys::new(), count_only: true, may_refuse_includes: false };
            self.push("summary-count", format!("{type_name}?_summary=count"), base.clone(), expected);
        }
    }

    /// Searches followed page by page through their `next` links.
    fn paging(&mut self) {
        let base = self.base.clone();
        let pages = [
            ("Patient?_count=2", self.select(&base, |r| r.type_name == "Patient")),
            ("DocumentReference?_count=2", self.select(&base, |r| r.type_name == "DocumentReference")),
            ("Observation?code=psy&_count=2", self.select(&base, |r| r.type_name == "Observation" && codes(r).iter().any(|c| c == "psy"))),
        ];
        for (path, matches) in pages {
            self.push("paging", path.to_owned(), base.clone(), self.searchset(matches, Keys::new()));
        }
    }

    /// A batch of GETs per type: every resource of the type and one id that does not exist.
    fn batches(&mut self) {
        for type_name in self.world.types() {
            let mut entries: Vec<BatchEntry> = self
                .live()
                .filter(|(_, r)| r.type_name == type_name)
                .map(|(index, r)| {
                    if self.base.visible[index] {
                        BatchEntry::Found(r.key())
                    } else {
                        BatchEntry::NotFound { type_name: type_name.clone(), id: r.id.clone() }
                    }
                })
                .collect();
            entries.push(BatchEntry::NotFound { type_name: type_name.clone(), id: uuid::Uuid::new_v4().to_string() });
            let requests: Vec<Value> = entries
                .iter()
                .map(|entry| {
                    let url = match entry {
                        BatchEntry::Found(key) => key.clone(),
                        BatchEntry::NotFound { type_name, id } => format!("{type_name}/{id}"),
                    };
                    json!({"request": {"method": "GET", "url": url}})
                })
                .collect();
            let body = json!({"resourceType": "Bundle", "type": "batch", "entry": requests});
            self.cases.push(Case {
                requester: self.requester,
                family: "batch",
                path: format!("batch of {type_name} reads"),
                body: Some(body),
                view: self.base.clone(),
                expected: Expected::Batch { entries },
            });
        }
    }
}

/// A secondary-use requester whose client is not registered for it is refused everything: a
/// few cases of each family show it.
fn refused_whole(cases: Vec<Case>) -> Vec<Case> {
    refused_families(cases, |_| true)
}

/// The families of `refused` are refused (a few cases of each show it); the rest are kept.
fn refused_families(cases: Vec<Case>, refused: impl Fn(&str) -> bool) -> Vec<Case> {
    let mut kept: Vec<Case> = Vec::new();
    for mut case in cases {
        if !refused(case.family) {
            kept.push(case);
        } else if kept.iter().filter(|k| k.family == case.family).count() < REFUSED_PER_FAMILY {
            case.expected = Expected::Refused { status: 403, code: None };
            kept.push(case);
        }
    }
    kept
}

pub fn generate(world: &World, oracle: &Oracle, requesters: &[Requester]) -> Vec<Case> {
    let mut all = Vec::new();
    for (index, requester) in requesters.iter().enumerate() {
        let base = Arc::new(view_of(oracle, &requester.who, &Claim::new()));
        let mut generator = Generator { world, oracle, requester: index, who: &requester.who, base, cases: Vec::new() };
        generator.reads();
        generator.searches_by_type();
        generator.patient_targeted();
        generator.across_patients();
        generator.paging();
        generator.batches();
        let cases = generator.cases;
        all.extend(match &requester.who {
            who if who.is_secondary_use() => refused_whole(cases),
            // Secondary use reads, searches (`$everything` too) and reads histories: no batches.
            who if who.is_researcher() => refused_families(cases, |family| family == "batch"),
            _ => cases,
        });
    }
    all
}
