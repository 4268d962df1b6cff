//! Architecture invariants, checked mechanically from `cargo metadata`:
//! - `fhir-models`, `conformance` and `consent` do no I/O: none of them depends, even
//!   transitively, on a runtime, a network, TLS or database crate;
//! - of the product crates, only `gateway` uses actix-web, sqlx, redis, tokio, rustls, reqwest
//!   or openidconnect;
//! - every dependency's licence allows commercial use (no AGPL, GPL, SSPL or BUSL).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

const IO_CRATES: [&str; 12] = [
    "actix-web",
    "actix-http",
    "actix-server",
    "sqlx",
    "sqlx-core",
    "redis",
    "tokio",
    "rustls",
    "reqwest",
    "openidconnect",
    "hyper",
    "mio",
];

fn metadata() -> Value {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

struct Graph {
    names: HashMap<String, String>,
    /// Normal (non-dev, non-build) dependencies of each package id.
    normal: HashMap<String, Vec<String>>,
    by_name: HashMap<String, String>,
}

fn graph(metadata: &Value) -> Graph {
    let names: HashMap<String, String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p["name"].as_str().unwrap().to_owned()))
        .collect();
    let mut normal = HashMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|dep| dep["dep_kinds"].as_array().unwrap().iter().any(|kind| kind["kind"].is_null()))
            .map(|dep| dep["pkg"].as_str().unwrap().to_owned())
            .collect();
        normal.insert(node["id"].as_str().unwrap().to_owned(), deps);
    }
    let workspace: HashSet<&str> = metadata["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let by_name = names.iter().filter(|(id, _)| workspace.contains(id.as_str())).map(|(id, name)| (name.clone(), id.clone())).collect();
    Graph { names, normal, by_name }
}

fn closure(graph: &Graph, root: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut stack = vec![graph.by_name[root].clone()];
    while let Some(id) = stack.pop() {
        for dep in &graph.normal[&id] {
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    seen.iter().map(|id| graph.names[id].clone()).collect()
}

#[test]
fn the_pure_crates_depend_on_no_io_crate() {
    let graph = graph(&metadata());
    for pure in ["fhir-models", "conformance", "consent"] {
        let dependencies = closure(&graph, pure);
        let offending: Vec<&&str> = IO_CRATES.iter().filter(|name| dependencies.contains(**name)).collect();
        assert!(offending.is_empty(), "{pure} depends on {offending:?}");
    }
    assert!(!closure(&graph, "consent").contains("conformance") && !closure(&graph, "conformance").contains("consent"));
}

#[test]
fn only_the_gateway_uses_io_crates_directly() {
    let graph = graph(&metadata());
    for product in ["fhir-models", "conformance", "consent"] {
        let direct: HashSet<String> = graph.normal[&graph.by_name[product]].iter().map(|id| graph.names[id].clone()).collect();
        for io in IO_CRATES {
            assert!(!direct.contains(io), "{product} uses {io} directly; only gateway may");
        }
    }
    let gateway: HashSet<String> = graph.normal[&graph.by_name["gateway"]].iter().map(|id| graph.names[id].clone()).collect();
    assert!(gateway.contains("actix-web") && gateway.contains("sqlx"));
}

const ALLOWED_LICENCES: [&str; 17] = [
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "BSL-1.0",
    "CC0-1.0",
    "MPL-2.0",
    "CDLA-Permissive-2.0",
    "LLVM-exception",
    "OpenSSL",
];

/// Whether an SPDX expression allows commercial use: some OR branch whose AND parts are all
/// allowed. `/` is the old spelling of OR.
fn permitted(expression: &str) -> bool {
    fn parse_or(tokens: &[String], position: &mut usize) -> bool {
        let mut any = parse_and(tokens, position);
        while tokens.get(*position).map(String::as_str) == Some("OR") {
            *position += 1;
            any |= parse_and(tokens, position);
        }
        any
    }
    fn parse_and(tokens: &[String], position: &mut usize) -> bool {
        let mut all = parse_term(tokens, position);
        while matches!(tokens.get(*position).map(String::as_str), Some("AND" | "WITH")) {
            *position += 1;
            all &= parse_term(tokens, position);
        }
        all
    }
    fn parse_term(tokens: &[String], position: &mut usize) -> bool {
        let token = tokens[*position].clone();
        *position += 1;
        if token == "(" {
            let value = parse_or(tokens, position);
            *position += 1;
            value
        } else {
            ALLOWED_LICENCES.contains(&token.as_str())
        }
    }
    let spaced = expression.replace('/', " OR ").replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<String> = spaced.split_whitespace().map(str::to_owned).collect();
    let mut position = 0;
    parse_or(&tokens, &mut position) && position == tokens.len()
}

#[test]
fn every_dependency_has_a_licence_that_allows_commercial_use() {
    assert!(permitted("MIT OR Apache-2.0") && permitted("(MIT OR Apache-2.0) AND Unicode-3.0") && permitted("MIT/Apache-2.0"));
    assert!(!permitted("AGPL-3.0") && !permitted("BUSL-1.1") && !permitted("GPL-3.0 AND MIT") && permitted("GPL-3.0 OR MIT"));
    let metadata = metadata();
    let workspace: HashSet<&str> = metadata["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let refused: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !workspace.contains(p["id"].as_str().unwrap()))
        .filter(|p| !p["license"].as_str().is_some_and(permitted))
        .map(|p| format!("{} {}: {}", p["name"], p["version"], p["license"]))
        .collect();
    assert!(refused.is_empty(), "licences that do not allow commercial use, or none: {refused:?}");
}
