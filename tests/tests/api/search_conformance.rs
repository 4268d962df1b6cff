//! The search conformance table (`fixtures/search/cases.txt`) over the hand-made dataset
//! (`fixtures/search/dataset.json`): every case, paged two matches at a time, followed forward
//! by `next` links and back by `previous` links. The suite runs on SQLite and on PostgreSQL,
//! so both give the same answers.

use std::collections::BTreeSet;

use reqwest::Method;
use tests::TestApp;

#[derive(Debug)]
enum Expect {
    Status(u16),
    Total(i64),
    Matches { ids: Vec<String>, ordered: bool, included: BTreeSet<String> },
}

#[derive(Debug)]
struct Case {
    line: usize,
    query: String,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(tests::fixture_path("search/cases.txt")).expect("cases.txt");
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (query, expected) = line.split_once(" -> ").unwrap_or_else(|| panic!("cases.txt:{line_number}: no ' -> ' in {line:?}"));
        let expected = expected.trim();
        let expect = if let Ok(status) = expected.parse::<u16>() {
            Expect::Status(status)
        } else if let Some(total) = expected.strip_prefix("total ") {
            Expect::Total(total.parse().unwrap_or_else(|_| panic!("cases.txt:{line_number}: bad total")))
        } else {
            let (matches, included) = match expected.split_once(" + ") {
                Some((matches, included)) => (matches, included.split_whitespace().map(str::to_owned).collect()),
                None => (expected, BTreeSet::new()),
            };
            let ordered = matches.starts_with('[');
            let ids = if matches == "(none)" {
                Vec::new()
            } else {
                matches.trim_matches(['[', ']']).split_whitespace().map(str::to_owned).collect()
            };
            Expect::Matches { ids, ordered, included }
        };
        cases.push(Case { line: line_number, query: query.to_owned(), expect });
    }
    cases
}

/// One page: its match ids in order, the ids it included, and its links.
struct Page {
    matches: Vec<String>,
    included: Vec<String>,
    total: Option<i64>,
    next: Option<String>,
    previous: Option<String>,
}

async fn page(app: &TestApp, url: &str) -> Result<Page, String> {
    let answer = app.send(&app.trust, Method::GET, url, None, &[("Prefer", "handling=strict")]).await;
    if answer.status != 200 {
        return Err(format!("status {} for {url}: {}", answer.status, answer.text));
    }
    let mut page = Page { matches: Vec::new(), included: Vec::new(), total: answer.body["total"].as_i64(), next: None, previous: None };
    for entry in answer.body["entry"].as_array().into_iter().flatten() {
        let id = entry["resource"]["id"].as_str().unwrap_or_default().to_owned();
        match entry["search"]["mode"].as_str() {
            Some("match") => page.matches.push(id),
            Some("include") => page.included.push(id),
            other => return Err(format!("unexpected search mode {other:?} for {url}")),
        }
    }
    let link = |relation: &str| {
        answer.body["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|link| link["relation"] == relation)
            .and_then(|link| link["url"].as_str().map(str::to_owned))
    };
    page.next = link("next");
    page.previous = link("previous");
    Ok(page)
}

/// Run one case; `Err` says what was wrong.
async fn run(app: &TestApp, case: &Case) -> Result<(), String> {
    match &case.expect {
        Expect::Status(status) => {
            let answer = app.send(&app.trust, Method::GET, &case.query, None, &[("Prefer", "handling=strict")]).await;
            if answer.status.as_u16() != *status || answer.body["resourceType"] != "OperationOutcome" {
                return Err(format!("expected {status} with an OperationOutcome, got {}: {}", answer.status, answer.text));
            }
            Ok(())
        }
        Expect::Total(total) => {
            let first = page(app, &case.query).await?;
            if first.total != Some(*total) || !first.matches.is_empty() {
                return Err(format!("expected total {total} and no entries, got total {:?} and {:?}", first.total, first.matches));
            }
            Ok(())
        }
        Expect::Matches { ids, ordered, included } => {
            let separator = if case.query.contains('?') { '&' } else { '?' };
            let first_url = if case.query.contains("_count=") { case.query.clone() } else { format!("{}{separator}_count=2", case.query) };
            // Forward through the next links.
            let mut pages = vec![page(app, &first_url).await?];
            if pages[0].previous.is_some() {
                return Err("the first page has a previous link".into());
            }
            while let Some(next) = pages.last().unwrap().next.clone() {
                if pages.len() > 50 {
                    return Err("more than 50 pages".into());
                }
                pages.push(page(app, &next).await?);
            }
            let found: Vec<String> = pages.iter().flat_map(|p| p.matches.clone()).collect();
            let found_included: BTreeSet<String> = pages.iter().flat_map(|p| p.included.clone()).collect();
            if let Some(total) = pages[0].total
                && total != found.len() as i64
            {
                return Err(format!("total {total} but {} matches", found.len()));
            }
            let same = if *ordered {
                &found == ids
            } else {
                let mut sorted = found.clone();
                sorted.sort();
                let mut expected = ids.clone();
                expected.sort();
                sorted == expected
            };
            if !same {
                return Err(format!("expected {ids:?}, found {found:?}"));
            }
            if &found_included != included {
                return Err(format!("expected to include {included:?}, included {found_included:?}"));
            }
            // Back through the previous links from the last page: the same pages in reverse.
            let mut backward = vec![pages.last().unwrap().matches.clone()];
            let mut previous = pages.last().unwrap().previous.clone();
            while let Some(url) = previous {
                if backward.len() > 50 {
                    return Err("more than 50 pages going back".into());
                }
                let page = page(app, &url).await?;
                backward.push(page.matches);
                previous = page.previous;
            }
            backward.reverse();
            let back: Vec<String> = backward.into_iter().flatten().collect();
            if back != found {
                return Err(format!("paging back gave {back:?}, forward gave {found:?}"));
            }
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_conformance_table_holds() {
    let app = TestApp::spawn().await;
    app.post(&app.trust, "", &tests::fixture("search/dataset.json")).await.assert_status(200);
    let cases = cases();
    assert!(cases.len() >= 300, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(problem) = run(&app, case).await {
            failures.push(format!("cases.txt:{} {}\n    {problem}", case.line, case.query));
        }
    }
    eprintln!("{} search cases run on {:?}, {} failed", cases.len(), app.backend, failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} search cases failed on {:?}:\n{}",
        failures.len(),
        cases.len(),
        app.backend,
        failures.join("\n")
    );
}
