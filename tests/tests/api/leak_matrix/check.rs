//! Sending each case and comparing the answer with what the oracle expected.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tests::{Answer, TestApp};

use super::cases::{BatchEntry, Case, Expected, Keys, Probe};
use super::fixture::World;
use super::oracle::{Oracle, Who};
use super::requesters::Requester;

/// More pages than any search of the fixture needs: a loop in `next` links is a failure.
const MAX_PAGES: usize = 200;
const WITHHELD_NARRATIVE: &str = "Confidential items have been withheld";
const WARNING_CODE: &str = "confidential-items";

pub struct Outcome {
    /// Checks made: one per case, one per batch entry.
    pub checks: usize,
    pub problems: Vec<String>,
}

pub struct Runner<'a> {
    pub app: &'a TestApp,
    pub world: &'a World,
    pub oracle: &'a Oracle<'a>,
    pub requesters: &'a [Requester],
    pub requests: AtomicUsize,
}

fn brief(text: &str) -> String {
    let mut cut: String = text.chars().take(400).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

fn key_of(resource: &Value) -> String {
    format!("{}/{}", resource["resourceType"].as_str().unwrap_or("?"), resource["id"].as_str().unwrap_or("?"))
}

/// An OperationOutcome's issues with the id asked for replaced, to compare a withheld id's
/// answer with a missing id's.
fn normalised_issues(outcome: &Value, id: &str) -> String {
    serde_json::to_string(&outcome["issue"]).unwrap_or_default().replace(id, "{id}")
}

fn outcome_code(body: &Value) -> Option<&str> {
    body["issue"][0]["details"]["coding"][0]["code"].as_str()
}

fn next_link(body: &Value) -> Option<String> {
    body["link"].as_array()?.iter().find(|link| link["relation"] == "next").and_then(|link| link["url"].as_str()).map(str::to_owned)
}

fn describe(keys: &Keys) -> String {
    keys.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// What a searchset's pages returned.
#[derive(Default)]
struct Returned {
    matches: Vec<String>,
    includes: Vec<String>,
    resources: Vec<Value>,
    /// Links and outcome entries: they must not mention a withheld id.
    texts: Vec<String>,
    totals: Vec<Option<u64>>,
}

impl Returned {
    fn add_page(&mut self, body: &Value) {
        self.totals.push(body["total"].as_u64());
        for link in body["link"].as_array().into_iter().flatten() {
            self.texts.push(link["url"].as_str().unwrap_or_default().to_owned());
        }
        for entry in body["entry"].as_array().into_iter().flatten() {
            let resource = &entry["resource"];
            match entry["search"]["mode"].as_str() {
                Some("outcome") => self.texts.push(resource.to_string()),
                Some("include") => {
                    self.includes.push(key_of(resource));
                    self.resources.push(resource.clone());
                }
                _ => {
                    self.matches.push(key_of(resource));
                    self.resources.push(resource.clone());
                }
            }
            if let Some(url) = entry["fullUrl"].as_str() {
                self.texts.push(url.to_owned());
            }
        }
    }
}

impl Runner<'_> {
    fn who(&self, case: &Case) -> &Who {
        &self.requesters[case.requester].who
    }

    async fn get(&self, case: &Case, path: &str) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.app.get(&self.requesters[case.requester].client, path).await
    }

    async fn post_batch(&self, case: &Case, body: &Value) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.app.post(&self.requesters[case.requester].client, "", body).await
    }

    pub async fn run(&self, case: &Case) -> Outcome {
        let mut problems = Vec::new();
        let mut checks = 1;
        match &case.expected {
            Expected::Refused { status, code } => self.refused(case, *status, *code, &mut problems).await,
            Expected::Found { key, version } => self.found(case, key, *version, &mut problems).await,
            Expected::Withheld { type_name, id, probe } => self.withheld(case, type_name, id, *probe, &mut problems).await,
            Expected::Searchset { matches, includes, count_only, may_refuse_includes } => {
                self.searchset(case, matches, includes, *count_only, *may_refuse_includes, &mut problems).await
            }
            Expected::Everything { required, allowed } => self.everything(case, required, allowed, &mut problems).await,
            Expected::History { key, versions } => self.history(case, key, *versions, &mut problems).await,
            Expected::Batch { entries } => {
                checks = entries.len();
                self.batch(case, entries, &mut problems).await
            }
        }
        Outcome { checks, problems }
    }

    async fn refused(&self, case: &Case, status: u16, code: Option<&str>, problems: &mut Vec<String>) {
        let answer = match &case.body {
            Some(body) => self.post_batch(case, body).await,
            None => self.get(case, &case.path).await,
        };
        // A batch may instead answer each entry with the refusal.
        let every_entry_refused = answer.status == 200
            && answer.body["entry"].as_array().is_some_and(|entries| {
                !entries.is_empty()
                    && entries.iter().all(|e| e["response"]["status"].as_str().is_some_and(|s| s.starts_with(&status.to_string())))
            });
        if answer.status.as_u16() != status && !(case.body.is_some() && every_entry_refused) {
            problems.push(format!("expected {status}, got {}: {}", answer.status.as_u16(), brief(&answer.text)));
            return;
        }
        if let Some(code) = code
            && outcome_code(&answer.body) != Some(code)
        {
            problems.push(format!("expected {status} {code}, got code {:?}: {}", outcome_code(&answer.body), brief(&answer.text)));
        }
    }

    async fn found(&self, case: &Case, key: &str, version: Option<usize>, problems: &mut Vec<String>) {
        let answer = self.get(case, &case.path).await;
        if answer.status != 200 {
            problems.push(format!("MISSING: expected 200 with {key}, got {}: {}", answer.status.as_u16(), brief(&answer.text)));
            return;
        }
        if key_of(&answer.body) != key {
            problems.push(format!("expected {key}, got {}", key_of(&answer.body)));
        }
        if let Some(version) = version
            && answer.body["meta"]["versionId"].as_str() != Some(version.to_string().as_str())
        {
            problems.push(format!("expected version {version}, got {:?}", answer.body["meta"]["versionId"]));
        }
        problems.extend(self.check_returned(case, &answer.body));
    }

    /// A withheld id must be answered exactly as an id that does not exist.
    async fn withheld(&self, case: &Case, type_name: &str, id: &str, probe: Probe, problems: &mut Vec<String>) {
        let answer = self.get(case, &case.path).await;
        let missing_id = uuid::Uuid::new_v4().to_string();
        let missing = self.get(case, &probe.path(type_name, &missing_id)).await;
        if answer.status != 404 {
            let verdict = if answer.status == 200 { "LEAK" } else { "WRONG STATUS" };
            problems.push(format!("{verdict}: expected 404 as for a missing id, got {}: {}", answer.status.as_u16(), brief(&answer.text)));
            return;
        }
        if missing.status != answer.status {
            problems.push(format!("a missing id answers {}, the withheld one {}", missing.status.as_u16(), answer.status.as_u16()));
        }
        let (seen, unseen) = (normalised_issues(&answer.body, id), normalised_issues(&missing.body, &missing_id));
        if seen != unseen {
            problems.push(format!("the 404 differs from a missing id's: withheld {} vs missing {}", brief(&seen), brief(&unseen)));
        }
    }

    /// Every page of a search, following `next` links.
    async fn pages(&self, case: &Case, problems: &mut Vec<String>) -> Option<(Answer, Returned)> {
        let first = self.get(case, &case.path).await;
        if first.status != 200 {
            return Some((first, Returned::default()));
        }
        let mut returned = Returned::default();
        returned.add_page(&first.body);
        let mut next = next_link(&first.body);
        let mut pages = 1;
        while let Some(url) = next {
            pages += 1;
            if pages > MAX_PAGES {
                problems.push(format!("more than {MAX_PAGES} pages"));
                return None;
            }
            let page = self.get(case, &url).await;
            if page.status != 200 {
                problems.push(format!("page {pages} answered {}: {}", page.status.as_u16(), brief(&page.text)));
                return None;
            }
            returned.add_page(&page.body);
            next = next_link(&page.body);
        }
        Some((first, returned))
    }

    async fn searchset(
        &self,
        case: &Case,
        matches: &Keys,
        includes: &Keys,
        count_only: bool,
        may_refuse_includes: bool,
        problems: &mut Vec<String>,
    ) {
        let Some((first, returned)) = self.pages(case, problems).await else { return };
        if may_refuse_includes && first.status == 400 {
            return;
        }
        if first.status != 200 {
            problems.push(format!("expected 200, got {}: {}", first.status.as_u16(), brief(&first.text)));
            return;
        }
        if count_only {
            if !returned.matches.is_empty() {
                problems.push(format!("_summary=count returned {} entries", returned.matches.len()));
            }
        } else {
            self.compare_sets("match", matches, &returned.matches, case, problems);
            self.compare_sets("include", includes, &returned.includes, case, problems);
        }
        let total_required = count_only || case.path.contains("_total=accurate");
        for (page, total) in returned.totals.iter().enumerate() {
            match total {
                Some(total) if *total as usize != matches.len() => {
                    problems.push(format!("page {} total {total}, expected {}", page + 1, matches.len()));
                }
                None if total_required && page == 0 => problems.push(format!("no total; expected {}", matches.len())),
                _ => {}
            }
        }
        problems.extend(self.mentions_of_withheld(case, &returned.texts));
        for resource in &returned.resources {
            problems.extend(self.check_returned(case, resource));
        }
    }

    /// Expected against returned keys: what is missing, what should not be there (a leak when
    /// the requester may not see it), and what came twice.
    fn compare_sets(&self, what: &str, expected: &Keys, returned: &[String], case: &Case, problems: &mut Vec<String>) {
        let got: Keys = returned.iter().cloned().collect();
        if got.len() != returned.len() {
            problems.push(format!("{what} entries repeated across the answer: {} entries, {} distinct", returned.len(), got.len()));
        }
        let missing: Keys = expected.difference(&got).cloned().collect();
        let extra: Keys = got.difference(expected).cloned().collect();
        let (leaked, unexpected): (Keys, Keys) = extra.into_iter().partition(|key| self.withheld_key(case, key));
        if !leaked.is_empty() {
            problems.push(format!("LEAK: {what} entries the requester may not see: {}", describe(&leaked)));
        }
        if !unexpected.is_empty() {
            problems.push(format!("unexpected {what} entries: {}", describe(&unexpected)));
        }
        if !missing.is_empty() {
            problems.push(format!("MISSING {what} entries: {}", describe(&missing)));
        }
    }

    fn withheld_key(&self, case: &Case, key: &str) -> bool {
        self.oracle.index_of(key).is_some_and(|index| !case.view.visible[index])
    }

    /// Links and outcomes must not mention the id of a resource the requester may not see
    /// (unless the request itself named it).
    fn mentions_of_withheld(&self, case: &Case, texts: &[String]) -> Vec<String> {
        let mut problems = Vec::new();
        for (index, stored) in self.world.resources.iter().enumerate() {
            if stored.deleted || case.view.visible[index] || case.path.contains(&stored.id) {
                continue;
            }
            if let Some(text) = texts.iter().find(|text| text.contains(&stored.id)) {
                problems.push(format!("LEAK: a link or outcome mentions withheld {}: {}", stored.key(), brief(text)));
            }
        }
        problems
    }

    async fn everything(&self, case: &Case, required: &Keys, allowed: &Keys, problems: &mut Vec<String>) {
        let Some((first, returned)) = self.pages(case, problems).await else { return };
        if first.status != 200 {
            problems.push(format!("expected 200, got {}: {}", first.status.as_u16(), brief(&first.text)));
            return;
        }
        let got: Keys = returned.matches.iter().chain(&returned.includes).cloned().collect();
        let missing: Keys = required.difference(&got).cloned().collect();
        let extra: Keys = got.difference(allowed).cloned().collect();
        let (leaked, unexpected): (Keys, Keys) = extra.into_iter().partition(|key| self.withheld_key(case, key));
        if !leaked.is_empty() {
            problems.push(format!("LEAK: $everything returned what the requester may not see: {}", describe(&leaked)));
        }
        if !unexpected.is_empty() {
            problems.push(format!("$everything returned resources outside the compartment: {}", describe(&unexpected)));
        }
        if !missing.is_empty() {
            problems.push(format!("MISSING from $everything: {}", describe(&missing)));
        }
        problems.extend(self.mentions_of_withheld(case, &returned.texts));
        for resource in &returned.resources {
            problems.extend(self.check_returned(case, resource));
        }
    }

    async fn history(&self, case: &Case, key: &str, versions: usize, problems: &mut Vec<String>) {
        let answer = self.get(case, &case.path).await;
        if answer.status != 200 {
            problems.push(format!("MISSING: expected the history of {key}, got {}: {}", answer.status.as_u16(), brief(&answer.text)));
            return;
        }
        let entries: Vec<&Value> = answer.body["entry"].as_array().into_iter().flatten().map(|e| &e["resource"]).collect();
        let seen: BTreeSet<String> = entries.iter().filter_map(|r| r["meta"]["versionId"].as_str().map(str::to_owned)).collect();
        let expected: BTreeSet<String> = (1..=versions).map(|v| v.to_string()).collect();
        if seen != expected {
            problems.push(format!("history versions {seen:?}, expected {expected:?}"));
        }
        for resource in entries {
            if key_of(resource) != key {
                problems.push(format!("LEAK?: the history of {key} holds {}", key_of(resource)));
            }
            problems.extend(self.check_returned(case, resource));
        }
        let texts: Vec<String> =
            answer.body["link"].as_array().into_iter().flatten().filter_map(|l| l["url"].as_str().map(str::to_owned)).collect();
        problems.extend(self.mentions_of_withheld(case, &texts));
    }

    async fn batch(&self, case: &Case, expected: &[BatchEntry], problems: &mut Vec<String>) {
        let body = case.body.as_ref().expect("a batch case has a body");
        let answer = self.post_batch(case, body).await;
        if answer.status != 200 || answer.body["type"] != "batch-response" {
            problems.push(format!("expected a batch-response, got {}: {}", answer.status.as_u16(), brief(&answer.text)));
            return;
        }
        let entries = answer.body["entry"].as_array().cloned().unwrap_or_default();
        if entries.len() != expected.len() {
            problems.push(format!("{} entries answered, {} sent", entries.len(), expected.len()));
            return;
        }
        // The last entry names an id that does not exist: every withheld entry must read alike.
        let baseline = match expected.last() {
            Some(BatchEntry::NotFound { id, .. }) => normalised_issues(&entries[entries.len() - 1]["response"]["outcome"], id),
            _ => String::new(),
        };
        for (entry, wanted) in entries.iter().zip(expected) {
            let status = entry["response"]["status"].as_str().unwrap_or_default();
            match wanted {
                BatchEntry::Found(key) => {
                    if !status.starts_with("200") {
                        problems.push(format!("MISSING: batch entry {key} answered {status:?}"));
                    } else if key_of(&entry["resource"]) != *key {
                        problems.push(format!("batch entry {key} returned {}", key_of(&entry["resource"])));
                    } else {
                        problems.extend(self.check_returned(case, &entry["resource"]));
                    }
                }
                BatchEntry::NotFound { type_name, id } => {
                    if !status.starts_with("404") {
                        let verdict = if status.starts_with("200") { "LEAK" } else { "WRONG STATUS" };
                        problems.push(format!("{verdict}: batch entry {type_name}/{id} answered {status:?}, expected 404"));
                    } else if normalised_issues(&entry["response"]["outcome"], id) != baseline {
                        let outcome = entry["response"]["outcome"].to_string();
                        problems.push(format!("batch entry {type_name}/{id}: its 404 differs from a missing id's: {}", brief(&outcome)));
                    }
                }
            }
        }
    }

    /// Checks on any resource returned: a restricted Patient's redaction and a Composition's
    /// withheld sections.
    fn check_returned(&self, case: &Case, resource: &Value) -> Vec<String> {
        match resource["resourceType"].as_str() {
            Some("Patient") => self.check_patient(case, resource),
            Some("Composition") => self.check_composition(case, resource),
            Some("DocumentReference") => self.check_original(case, resource),
            _ => vec![],
        }
    }

    /// A DocumentReference related to a Composition carries the document whole only to those
    /// who may see every entry of it; to others without its content and with the warning.
    fn check_original(&self, case: &Case, resource: &Value) -> Vec<String> {
        let key = key_of(resource);
        let Some(index) = self.oracle.index_of(&key) else { return vec![] };
        let stored = self.world.resources[index].current();
        let Some(composition) = stored["context"]["related"][0]["reference"].as_str().and_then(|r| self.oracle.index_of(r)) else {
            return vec![];
        };
        let whole = case.view.visible[composition]
            && self.oracle.entries_of(composition).into_iter().all(|entry| entry.is_some_and(|index| case.view.visible[index]))
            && self.oracle.original_shows_patients(&self.requesters[case.requester].who, composition);
        let attached = resource["content"][0]["attachment"].get("data").is_some();
        let warned = resource["extension"].as_array().into_iter().flatten().any(|extension| extension["valueCode"] == WARNING_CODE);
        let mut problems = Vec::new();
        if attached && !whole {
            problems.push(format!("LEAK: {key} carries its document's original to a requester who may not see all of it"));
        }
        if !attached && whole {
            problems.push(format!("{key} lost its original, which the requester may see whole"));
        }
        if warned == whole {
            problems.push(format!("{key}: confidential-items warning {warned}, expected {}", !whole));
        }
        problems
    }

    fn check_patient(&self, case: &Case, resource: &Value) -> Vec<String> {
        let id = resource["id"].as_str().unwrap_or_default();
        let Some(index) = self.oracle.index_of(&format!("Patient/{id}")) else { return vec![] };
        let stored = self.world.resources[index].current();
        let hidden = self.oracle.hides_restricted_details(self.who(case), id);
        let mut problems = Vec::new();
        for element in ["address", "telecom", "generalPractitioner"] {
            let present = !resource[element].is_null();
            if hidden && present {
                problems.push(format!("LEAK: restricted Patient/{id} returned with {element}"));
            } else if !hidden && !stored[element].is_null() && !present {
                problems.push(format!("Patient/{id} lost its {element}"));
            }
        }
        problems
    }

    fn visible_reference(&self, case: &Case, reference: &Value) -> bool {
        reference["reference"].as_str().and_then(|key| self.oracle.index_of(key)).is_some_and(|index| case.view.visible[index])
    }

    fn check_composition(&self, case: &Case, resource: &Value) -> Vec<String> {
        let key = key_of(resource);
        let Some(index) = self.oracle.index_of(&key) else { return vec![] };
        let stored = self.world.resources[index].current();
        let mut problems = Vec::new();
        let mut withheld_any = false;
        let returned_sections = resource["section"].as_array().cloned().unwrap_or_default();
        for section in stored["section"].as_array().into_iter().flatten() {
            let title = section["title"].as_str().unwrap_or_default();
            let Some(returned) = returned_sections.iter().find(|s| s["title"] == title) else {
                problems.push(format!("{key}: section {title:?} is gone"));
                continue;
            };
            let entries: Vec<&Value> = section["entry"].as_array().into_iter().flatten().collect();
            let kept: Vec<String> = entries
                .iter()
                .filter(|e| self.visible_reference(case, e))
                .filter_map(|e| e["reference"].as_str().map(str::to_owned))
                .collect();
            let withheld = entries.len() - kept.len();
            withheld_any |= withheld > 0;
            let got: Vec<String> =
                returned["entry"].as_array().into_iter().flatten().filter_map(|e| e["reference"].as_str().map(str::to_owned)).collect();
            if got != kept {
                let leaked: Vec<&String> = got.iter().filter(|r| !kept.contains(r)).collect();
                let verdict = if leaked.is_empty() { "" } else { "LEAK: " };
                problems.push(format!("{verdict}{key} section {title:?} references {got:?}, expected {kept:?}"));
            }
            let div = returned["text"]["div"].as_str().unwrap_or_default();
            let empty_reason = values_codes(&returned["emptyReason"]);
            if withheld > 0 {
                if !div.contains(WITHHELD_NARRATIVE) {
                    problems.push(format!("{key} section {title:?} lost entries but its narrative is {div:?}"));
                }
                if kept.is_empty() && !empty_reason.iter().any(|c| c == "withheld") {
                    problems.push(format!("{key} section {title:?} is empty without emptyReason withheld"));
                }
            } else if div != section["text"]["div"].as_str().unwrap_or_default() {
                problems.push(format!("{key} section {title:?} lost nothing but its narrative changed to {div:?}"));
            }
        }
        let warned = resource["extension"].as_array().into_iter().flatten().any(|extension| {
            extension["valueCode"] == WARNING_CODE || values_codes(&extension["valueCodeableConcept"]).iter().any(|c| c == WARNING_CODE)
        });
        if withheld_any != warned {
            problems.push(format!("{key}: confidential-items warning {warned}, expected {withheld_any}"));
        }
        problems
    }
}

fn values_codes(concept: &Value) -> Vec<String> {
    concept["coding"].as_array().into_iter().flatten().filter_map(|c| c["code"].as_str().map(str::to_owned)).collect()
}
