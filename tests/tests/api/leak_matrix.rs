//! The leak matrix: an independent black-box check of `docs/information-governance.md`.
//!
//! A seeded fixture (`fixture`) publishes organisations, patients of every relationship and
//! consent shape, and records of every type and label, each from its source organisation's
//! certificate. An oracle (`oracle`) implements the policy as plain rules over that data — from
//! the spec alone, not from the engine. `cases` crosses every requester (`requesters`) with every
//! read path and relevant resource and asks the oracle for the answer; `check` sends each case
//! and lists every difference, so one run shows every leak, not just the first.

mod cases;
mod check;
mod fixture;
mod oracle;
mod requesters;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use tests::{Backend, TestApp, TestOptions, TestPki};

/// Requests in flight at once.
const CONCURRENCY: usize = 16;

struct Mismatch {
    requester: String,
    family: &'static str,
    path: String,
    problem: String,
}

/// Counts by requester kind and case family, so a failing run shows where the leaks are.
fn summary(mismatches: &[Mismatch]) -> String {
    let mut counts: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for mismatch in mismatches {
        let kind = mismatch.requester.split(' ').next().unwrap_or_default().to_owned();
        *counts.entry((kind, mismatch.family)).or_default() += 1;
    }
    counts.iter().map(|((kind, family), count)| format!("  {kind:<10} {family:<18} {count}")).collect::<Vec<_>>().join("\n")
}

/// Each fixture id in `text` followed by its tag (`…<P3/obs-v>`): a report names what it means.
fn annotate(world: &fixture::World, text: &str) -> String {
    let mut annotated = text.to_owned();
    for (index, stored) in world.resources.iter().enumerate() {
        if annotated.contains(&stored.id) {
            let tag = world.tag_of(index).unwrap_or("?");
            annotated = annotated.replace(&stored.id, &format!("{}<{tag}>", stored.id));
        }
    }
    annotated
}

fn legend(world: &fixture::World) -> String {
    world.patients.iter().map(|p| format!("  {} = Patient/{}: {}", p.key, p.id, p.about)).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_requester_sees_exactly_what_the_governance_rules_allow_on_every_read_path() {
    let started = Instant::now();
    let pki = TestPki::new();
    let certificates = fixture::Certificates::issue(&pki);
    let entries = certificates.entries();
    let options = TestOptions {
        backend: Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(move |settings| settings.clients.extend(entries))),
    };
    let app = TestApp::spawn_with_pki(pki, options).await;
    let world = fixture::publish(&app, &certificates).await;
    let published = started.elapsed();

    let oracle = oracle::Oracle::new(&world);
    let requesters = requesters::all(&app, &certificates, &world);
    let cases = cases::generate(&world, &oracle, &requesters);
    let runner = check::Runner { app: &app, world: &world, oracle: &oracle, requesters: &requesters, requests: AtomicUsize::new(0) };
    let outcomes: Vec<(usize, check::Outcome)> = futures_util::stream::iter(cases.iter().enumerate())
        .map(|(index, case)| {
            let runner = &runner;
            async move { (index, runner.run(case).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut checks = 0;
    let mut mismatches = Vec::new();
    for (index, outcome) in outcomes {
        checks += outcome.checks;
        let case = &cases[index];
        mismatches.extend(outcome.problems.into_iter().map(|problem| Mismatch {
            requester: requesters[case.requester].name.clone(),
            family: case.family,
            path: case.path.clone(),
            problem,
        }));
    }
    mismatches.sort_by(|a, b| (&a.requester, a.family, &a.path).cmp(&(&b.requester, b.family, &b.path)));
    eprintln!(
        "leak matrix: {checks} checks in {} cases ({} requests) for {} requesters over {} resources; \
         fixture published in {published:.1?}, all done in {:.1?}",
        cases.len(),
        runner.requests.load(Ordering::Relaxed),
        requesters.len(),
        world.resources.len(),
        started.elapsed(),
    );
    if !mismatches.is_empty() {
        let listing: Vec<String> =
            mismatches.iter().map(|m| annotate(&world, &format!("[{}] {} {}: {}", m.requester, m.family, m.path, m.problem))).collect();
        panic!(
            "{} of {checks} checks differ from the information-governance rules\n{}\n\npatients:\n{}\n\n{}",
            mismatches.len(),
            summary(&mismatches),
            legend(&world),
            listing.join("\n")
        );
    }
}
