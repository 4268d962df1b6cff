//! The `hie-gateway` binary as an operator uses it: `certs init`, `certs client`, `serve` with a
//! config file, JSON logs without PHI, and a graceful stop on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_hie-gateway");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BINARY).args(args).current_dir(dir).output().expect("the binary runs")
}

#[test]
fn an_operator_makes_certificates_serves_and_stops_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let init = run(dir.path(), &["certs", "init"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert!(dir.path().join("certs/ca.pem").exists() && dir.path().join("certs/server.key").exists());

    let client = run(dir.path(), &["certs", "client", "--name", "riverside", "--ods", "Y90001", "--kind", "gp-system"]);
    assert!(client.status.success());
    let entry = String::from_utf8(client.stdout).unwrap();
    assert!(entry.contains("[[clients]]") && entry.contains("name = \"riverside\"") && entry.contains("fingerprint = \""), "{entry}");

    let refused = run(dir.path(), &["certs", "client", "--name", "x", "--ods", "not an ods code", "--kind", "trust"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ODS code"));

    let (api, ops) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("hie-gateway.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\nops_listen = \"127.0.0.1:{ops}\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[tls]\ngenerate_dev_certificates = false\n\
             [database]\nurl = \"sqlite://hie.db\"\n[log]\nlevel = \"debug\"\n\n{entry}"
        ),
    )
    .unwrap();
    // Logs go to a file: a pipe nobody reads would fill and stall the server.
    let log_file = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut server = Command::new(BINARY)
        .args(["serve", "--demo", "--demo-patients", "3"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http_get(ops, "/readyz").is_none_or(|r| !r.starts_with("HTTP/1.0 200") && !r.starts_with("HTTP/1.1 200")) {
        assert!(started.elapsed() < Duration::from_secs(30), "the gateway did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http_get(ops, "/metrics").unwrap();
    assert!(metrics.contains("hie_http_requests_in_flight"));

    // SIGTERM: the gateway finishes in-flight work and exits cleanly.
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
    let logs = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    let lines: Vec<serde_json::Value> = logs.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert!(!lines.is_empty() && lines.len() == logs.lines().count(), "every log line is JSON:\n{logs}");
    assert!(lines.iter().any(|line| line["message"] == "demo data loaded"));
    assert!(lines.iter().any(|line| line["message"] == "gateway stopped"));
    // The demo patients' NHS numbers are in the database, never in the logs.
    for n in 0..3 {
        let nhs_number = gateway::demo::test_nhs_number(n).to_string();
        assert!(!logs.contains(&nhs_number), "an NHS number reached the logs");
    }
}

const A01: &str = "MSH|^~\\&|PAS|RRK|||20240305101500||ADT^A01|C1|P|2.4\rPID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\rPV1|1|I|WARD4||||||||||||||||V100^^^RRK^VN\r";

#[test]
fn translate_prints_bundles_and_names_the_file_and_line_of_a_refused_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one.hl7"), A01).unwrap();
    let one = run(dir.path(), &["translate", "--from", "hl7v2", "one.hl7"]);
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let bundle: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(bundle["type"], "transaction");
    assert_eq!(bundle["entry"][0]["request"]["url"], "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552");

    let bad = A01.replace("9449305552", "9449305553").replace("|C1|", "|C2|");
    std::fs::write(dir.path().join("two.hl7"), format!("{A01}\n{bad}\n{}", A01.replace("|C1|", "|C3|"))).unwrap();
    let several = run(dir.path(), &["translate", "--from", "hl7v2", "two.hl7"]);
    assert!(!several.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&several.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2, "one Bundle per line for the two good messages");
    let stderr = String::from_utf8_lossy(&several.stderr);
    assert!(stderr.contains("two.hl7:2: rejected: PID-3.1: the NHS number \"9449305553\" is not valid"), "{stderr}");

    let unknown = run(dir.path(), &["translate", "--from", "hl8", "one.hl7"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown format \"hl8\""));
    // HL7 v2 read as FHIR: refused, naming the file and what is wrong.
    let not_fhir = run(dir.path(), &["translate", "--from", "fhir", "one.hl7"]);
    assert!(!not_fhir.status.success());
    let stderr = String::from_utf8_lossy(&not_fhir.stderr);
    assert!(stderr.contains("one.hl7") && stderr.contains("fhir document at (input): not JSON"), "{stderr}");
}

#[test]
fn ingest_files_messages_keeps_refused_ones_and_replays_them_once_they_can_be_filed() {
    let dir = tempfile::tempdir().unwrap();
    let config = |processing_ids: &str| format!("[database]\nurl = \"sqlite://hie.db\"\n[mllp]\nprocessing_ids = [{processing_ids}]\n");
    std::fs::write(dir.path().join("hie-gateway.toml"), config("\"P\"")).unwrap();
    let training = A01.replace("|C1|P|", "|C2|T|").replace("V100", "V200");
    let bad = A01.replace("9449305552", "9449305553").replace("|C1|", "|C3|");
    std::fs::write(dir.path().join("feed.hl7"), format!("{A01}\n{training}\n{bad}")).unwrap();

    let first = run(dir.path(), &["ingest", "--from", "hl7v2", "feed.hl7"]);
    assert!(!first.status.success(), "two messages were refused");
    let summary = String::from_utf8_lossy(&first.stdout);
    assert!(summary.starts_with("3 messages: 1 filed, 0 already filed (nothing changed), 2 refused"), "{summary}");
    assert!(summary.contains("feed.hl7:2: MSH-11: processing id \"T\" is not filed here"), "{summary}");
    assert!(summary.contains("feed.hl7:3: PID-3.1:"), "{summary}");

    // The same file again: the filed message changes nothing; the refused ones are refused again.
    let again = run(dir.path(), &["ingest", "feed.hl7"]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("3 messages: 0 filed, 1 already filed"));

    // The operator decides training messages are welcome after all, and replays the dead letters:
    // the training message is filed (twice refused, kept twice: filed once, then a duplicate),
    // the bad NHS number stays refused and kept.
    std::fs::write(dir.path().join("hie-gateway.toml"), config("\"P\", \"T\"")).unwrap();
    let replay = run(dir.path(), &["ingest", "--replay"]);
    let summary = String::from_utf8_lossy(&replay.stdout);
    assert!(summary.starts_with("4 messages: 1 filed, 1 already filed (nothing changed), 2 refused"), "{summary}");
    assert!(!replay.status.success());
    let replay = run(dir.path(), &["ingest", "--replay"]);
    assert!(String::from_utf8_lossy(&replay.stdout).starts_with("2 messages: 0 filed, 0 already filed (nothing changed), 2 refused"));
}

#[test]
fn discharge_summaries_are_made_translated_filed_once_and_refused_ones_kept_for_replay() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hie-gateway.toml"), "[database]\nurl = \"sqlite://hie.db\"\n").unwrap();
    for format in ["cda", "itk3"] {
        let made = run(dir.path(), &["synthetic", "--format", format, "--patients", "3", "--out", format]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        assert_eq!(std::fs::read_dir(dir.path().join(format)).unwrap().count(), 3);
        let translated = run(dir.path(), &["translate", "--from", format, format]);
        assert!(translated.status.success(), "{}", String::from_utf8_lossy(&translated.stderr));
        let bundles: Vec<serde_json::Value> =
            std::str::from_utf8(&translated.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(bundles.len(), 3, "one Bundle per line per document");
        assert!(bundles.iter().all(|b| b["entry"].as_array().unwrap().iter().any(|e| e["resource"]["resourceType"] == "Composition")));

        let filed = run(dir.path(), &["ingest", "--from", format, format]);
        assert!(filed.status.success(), "{}{}", String::from_utf8_lossy(&filed.stdout), String::from_utf8_lossy(&filed.stderr));
        assert!(String::from_utf8_lossy(&filed.stdout).starts_with("3 documents: 3 filed, 0 already filed"));
        let again = run(dir.path(), &["ingest", "--from", format, format]);
        assert!(String::from_utf8_lossy(&again.stdout).starts_with("3 documents: 0 filed, 3 already filed (nothing changed), 0 not filed"));
    }
    // A document with a wrong NHS number: refused with its place, kept, refused again on replay.
    let first = std::fs::read_dir(dir.path().join("cda")).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(&first).unwrap();
    let number = text.split("2.16.840.1.113883.2.1.4.1\" extension=\"").nth(1).unwrap()[..10].to_owned();
    let wrong = format!("{}{}", &number[..9], (number.as_bytes()[9] - b'0' + 1) % 10);
    std::fs::write(dir.path().join("bad.xml"), text.replace(&number, &wrong)).unwrap();
    let refused = run(dir.path(), &["ingest", "--from", "cda", "bad.xml"]);
    assert!(!refused.status.success());
    let summary = String::from_utf8_lossy(&refused.stdout);
    assert!(summary.contains("bad.xml: refused: cda document at line "), "{summary}");
    assert!(summary.contains("/ClinicalDocument/recordTarget/patientRole/id): the NHS number is not valid"), "{summary}");
    let replay = run(dir.path(), &["ingest", "--from", "cda", "--replay"]);
    assert!(!replay.status.success());
    assert!(String::from_utf8_lossy(&replay.stdout).starts_with("1 documents: 0 filed, 0 already filed (nothing changed), 1 not filed"));
}

#[test]
fn portal_key_writes_a_private_key_once_and_prints_the_public_key_set_to_register() {
    let dir = tempfile::tempdir().unwrap();
    let made = run(dir.path(), &["certs", "portal-key"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let jwks: serde_json::Value = serde_json::from_slice(&made.stdout).expect("stdout is the JWKS alone");
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str(), keys[0]["alg"].as_str()), (Some("EC"), Some("P-256"), Some("ES256")));
    assert!(keys[0].get("d").is_none(), "the private part is never printed");
    let key_file = dir.path().join("certs/portal.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read(&key_file).unwrap();

    let again = run(dir.path(), &["certs", "portal-key"]);
    assert!(!again.status.success(), "an existing key is not replaced without --force");
    assert!(String::from_utf8_lossy(&again.stderr).contains("certs/portal.key exists"));
    assert_eq!(std::fs::read(&key_file).unwrap(), pem);
    assert!(run(dir.path(), &["certs", "portal-key", "--force"]).status.success());
    assert_ne!(std::fs::read(&key_file).unwrap(), pem);
}

#[test]
fn an_operator_writes_a_synthetic_emis_extract_translates_it_and_files_it_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hie-gateway.toml"), "[database]\nurl = \"sqlite://hie.db\"\n").unwrap();
    let made = run(dir.path(), &["synthetic", "--patients", "4", "--out", "extract"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(std::fs::read_dir(dir.path().join("extract")).unwrap().count(), 9, "nine files, one per EMIS table");

    let translated = run(dir.path(), &["translate", "--from", "emis-csv", "extract"]);
    assert!(translated.status.success(), "{}", String::from_utf8_lossy(&translated.stderr));
    let bundles: Vec<serde_json::Value> =
        String::from_utf8(translated.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(bundles.len(), 4, "one Bundle per patient, one per line");
    assert!(bundles.iter().all(|b| b["type"] == "transaction"));
    assert!(
        String::from_utf8_lossy(&translated.stderr).contains("1 codes kept without a SNOMED CT concept"),
        "patient 2's EMIS-local code"
    );

    let filed = run(dir.path(), &["ingest", "--from", "emis-csv", "extract"]);
    let summary = String::from_utf8_lossy(&filed.stdout);
    assert!(filed.status.success(), "{summary}{}", String::from_utf8_lossy(&filed.stderr));
    assert!(summary.starts_with("4 patients: 4 filed, 0 already filed (nothing changed), 0 refused"), "{summary}");
    let again = run(dir.path(), &["ingest", "--from", "emis-csv", "extract"]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("4 patients: 0 filed, 4 already filed (nothing changed)"));

    // A broken row: the file, line and column, and a non-zero exit.
    let patients = std::fs::read_dir(dir.path().join("extract"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("Admin_Patient"))
        .unwrap();
    let text = std::fs::read_to_string(&patients).unwrap();
    let mut lines: Vec<&str> = text.split("\r\n").collect();
    // Patient 2's NHS number with its last digit changed: the Modulus 11 check fails.
    let number = lines[3].split(',').nth(10).unwrap().to_owned();
    let wrong = format!("{}{}", &number[..9], (number.as_bytes()[9] - b'0' + 1) % 10);
    let broken = lines[3].replacen(&number, &wrong, 1);
    lines[3] = &broken;
    std::fs::write(&patients, lines.join("\r\n")).unwrap();
    let refused = run(dir.path(), &["translate", "--from", "emis-csv", "extract"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Admin_Patient_20260301120000_") && stderr.contains(":4: NhsNumber:"), "{stderr}");
}

#[test]
fn an_operator_translates_and_files_emis_open_records_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hie-gateway.toml"), "[database]\nurl = \"sqlite://hie.db\"\n").unwrap();
    let made = run(dir.path(), &["synthetic", "--format", "emis-xml", "--patients", "3", "--out", "records"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // A stray file of another kind in the directory is not read.
    std::fs::write(dir.path().join("records/README.txt"), "not a record").unwrap();
    let translated = run(dir.path(), &["translate", "--from", "emis-xml", "records"]);
    assert!(translated.status.success(), "{}", String::from_utf8_lossy(&translated.stderr));
    assert_eq!(String::from_utf8(translated.stdout).unwrap().lines().count(), 3, "one Bundle per record");
    let filed = run(dir.path(), &["ingest", "--from", "emis-xml", "records"]);
    let summary = String::from_utf8_lossy(&filed.stdout);
    assert!(summary.starts_with("3 patients: 3 filed"), "{summary}{}", String::from_utf8_lossy(&filed.stderr));
    let again = run(dir.path(), &["ingest", "--from", "emis-xml", "records"]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("3 patients: 0 filed, 3 already filed"));
}

/// A trust's FHIR R4 document Bundle as another server would send it: its own ids, absolute
/// `fullUrl`s, references relative to them.
fn published_document(custodian: bool) -> serde_json::Value {
    let nhs = gateway::demo::test_nhs_number(4).as_string();
    let mut bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "document", "timestamp": "2026-11-30T10:15:00+00:00",
        "identifier": {"system": "https://trust.example/documents", "value": format!("D-{custodian}")},
        "entry": [
            {"fullUrl": "https://trust.example/fhir/Composition/c1", "resource": {
                "resourceType": "Composition", "status": "final", "id": "c1",
                "identifier": {"system": "https://trust.example/documents", "value": format!("D-{custodian}")},
                "type": {"coding": [{"system": "http://snomed.info/sct", "code": "373942005", "display": "Discharge summary"}]},
                "subject": {"reference": "Patient/p1"}, "date": "2026-11-30", "title": "Discharge summary",
                "author": [{"reference": "Organization/o1"}],
                "section": [{"title": "Diagnoses", "entry": [{"reference": "Condition/x1"}]}]}},
            {"fullUrl": "https://trust.example/fhir/Patient/p1", "resource": {"resourceType": "Patient", "id": "p1",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}]}},
            {"fullUrl": "https://trust.example/fhir/Organization/o1", "resource": {"resourceType": "Organization", "id": "o1",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RRK"}], "name": "Riverside Hospital"}},
            {"fullUrl": "https://trust.example/fhir/Condition/x1", "resource": {"resourceType": "Condition", "id": "x1",
                "identifier": [{"system": "https://trust.example/diagnoses", "value": format!("X-{custodian}")}],
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]}}},
        ]
    });
    if custodian {
        bundle["entry"][0]["resource"]["custodian"] = serde_json::json!({"reference": "Organization/o1"});
    } else {
        bundle["entry"][0]["resource"]["author"] = serde_json::json!([{"display": "Dr A Jones"}]);
    }
    bundle
}

#[test]
fn an_operator_translates_and_files_published_fhir_bundles() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hie-gateway.toml"), "[database]\nurl = \"sqlite://hie.db\"\n").unwrap();
    std::fs::write(dir.path().join("named.json"), serde_json::to_vec(&published_document(true)).unwrap()).unwrap();
    std::fs::write(dir.path().join("unnamed.json"), serde_json::to_vec(&published_document(false)).unwrap()).unwrap();

    let translated = run(dir.path(), &["translate", "--from", "fhir", "named.json"]);
    assert!(translated.status.success(), "{}", String::from_utf8_lossy(&translated.stderr));
    let bundle: serde_json::Value = serde_json::from_slice(&translated.stdout).unwrap();
    assert_eq!(bundle["type"], "transaction");
    let urls: Vec<&str> = bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["request"]["url"].as_str()).collect();
    let key = format!(
        "Condition?identifier=https://trust.example/diagnoses|X-true&patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
        gateway::demo::test_nhs_number(4).as_string()
    );
    assert!(urls.contains(&key.as_str()), "{urls:?}");

    let filed = run(dir.path(), &["ingest", "--from", "fhir", "named.json"]);
    let summary = String::from_utf8_lossy(&filed.stdout);
    assert!(filed.status.success(), "{summary}{}", String::from_utf8_lossy(&filed.stderr));
    assert!(summary.starts_with("1 documents: 1 filed, 0 already filed"), "{summary}");
    let again = run(dir.path(), &["ingest", "--from", "fhir", "named.json"]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("1 documents: 0 filed, 1 already filed (nothing changed)"));

    // A Bundle that names no publisher is refused and kept; the operator names one on replay.
    let refused = run(dir.path(), &["ingest", "--from", "fhir", "unnamed.json"]);
    assert!(!refused.status.success());
    let summary = String::from_utf8_lossy(&refused.stdout);
    assert!(summary.contains("unnamed.json: refused: fhir document at publisher: the input names no publishing organisation"), "{summary}");
    let wrong = run(dir.path(), &["ingest", "--from", "hl7v2", "--publisher", "RRK", "unnamed.json"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("--publisher applies to documents"));
    let replayed = run(dir.path(), &["ingest", "--from", "fhir", "--replay", "--publisher", "RRK"]);
    let summary = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{summary}{}", String::from_utf8_lossy(&replayed.stderr));
    assert!(summary.starts_with("1 documents: 1 filed"), "{summary}");
}
