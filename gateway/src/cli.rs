//! The `hie-gateway` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use consent::{ClientKind, Requester};
use fhir_models::OdsCode;

use crate::certs::{DevPki, client_entry_toml};
use crate::configuration::{ClientEntry, DEFAULT_CONFIG_FILE, IssuerKind, Settings};
use crate::startup::Application;

#[derive(Parser)]
#[command(name = "hie-gateway", version, about = "FHIR R4 (UK Core) health information exchange gateway")]
struct Cli {
    /// Configuration file (default: hie-gateway.toml in the working directory, if present).
    #[arg(long, global = true, env = "HIE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: the FHIR API over HTTPS, and the ops port.
    Serve {
        /// Load the demo region (practices, trusts, patients and their records) first.
        #[arg(long)]
        demo: bool,
        /// How many demo patients to load.
        #[arg(long, default_value_t = 30, requires = "demo")]
        demo_patients: usize,
    },
    /// Development certificates: a CA, the server's certificate, client certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a bearer token signed by a development issuer (`auth.dev_issuers`, on in the
    /// embedded default), to try the API as a clinician, a patient or a system.
    Token {
        #[arg(long, value_parser = parse_issuer_kind)]
        kind: IssuerKind,
        /// `requesting_organization` (ODS code) for clinician and system tokens: the
        /// organisation the client certificate is registered to.
        #[arg(long)]
        org: Option<String>,
        /// SMART scopes; by default `user/*.cruds`, `system/*.cruds` or `patient/*.rs`.
        #[arg(long)]
        scope: Option<String>,
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// `requesting_practitioner_role` (an R-code) for clinicians.
        #[arg(long)]
        role: Option<String>,
        /// `purpose_of_use`: TREAT (default), ETREAT, BTG…
        #[arg(long)]
        purpose: Option<String>,
        /// `reason`, required with ETREAT and BTG.
        #[arg(long)]
        reason: Option<String>,
        /// `nhs_number` for patient tokens.
        #[arg(long)]
        nhs_number: Option<String>,
        #[arg(long, default_value = "P9")]
        proofing_level: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        lifetime: u64,
    },
    /// Translate records into FHIR R4 transaction Bundles and print them, without a server or a
    /// database: one Bundle (pretty) for one input, one Bundle per line for several. A file may
    /// hold several HL7 v2 messages. A rejected input is reported on stderr with its file, line
    /// and reason, and the exit status is non-zero.
    Translate {
        #[arg(long, value_parser = crate::translate::Format::parse)]
        from: crate::translate::Format,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write a deterministic synthetic extract (the demo region's patients) to a directory.
    Synthetic {
        #[arg(long, value_parser = crate::translate::Format::parse, default_value = "emis-csv")]
        format: crate::translate::Format,
        /// The demo practice's ODS code.
        #[arg(long, default_value = "Y90001")]
        practice: String,
        #[arg(long, default_value_t = 20)]
        patients: usize,
        /// The extract's time, `yyyyMMddHHmmss` (it names the files).
        #[arg(long, default_value = "20260301120000")]
        extracted: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Translate records and file them in the configured store, as the MLLP feed does (the
    /// publisher is MSH-4 when it is an ODS code, else `mllp.organisation`). Refused inputs are
    /// kept in the dead-letter store; prints a summary and exits non-zero if any was refused.
    Ingest {
        #[arg(long, value_parser = crate::translate::Format::parse, default_value = "hl7v2")]
        from: crate::translate::Format,
        /// Files to ingest (several HL7 v2 messages per file are fine).
        #[arg(required_unless_present = "replay")]
        paths: Vec<PathBuf>,
        /// Instead of files: try every input in the dead-letter store again, oldest first, and
        /// forget those that are filed now.
        #[arg(long, conflicts_with = "paths")]
        replay: bool,
        /// The ODS code of the organisation that publishes these documents (cda, itk3, fhir),
        /// instead of the one they name: for a FHIR Bundle that names none (no Composition
        /// custodian, no MessageHeader sender).
        #[arg(long)]
        publisher: Option<String>,
    },
}

fn parse_issuer_kind(text: &str) -> Result<IssuerKind, String> {
    IssuerKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not an issuer kind; use clinician, patient or system"))
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the audit trail's hash chain and say whether any record was edited, deleted or
    /// reordered (exit status 1, naming the first such record). Prints the head hash: keep it
    /// elsewhere to prove later that no record was removed from the end.
    Verify {
        /// The last record written before the trail was keyed (by a gateway older than the
        /// audit key; the gateway logs the number when it first keys such a trail). Records up
        /// to it may carry unkeyed hashes; any other unkeyed record is a forgery.
        #[arg(long, default_value_t = 0)]
        unkeyed_until: i64,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a development CA and a server certificate for localhost.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra host names or addresses for the server certificate.
        #[arg(long = "san")]
        names: Vec<String>,
        /// Replace an existing development CA (every client certificate must then be reissued).
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate and print the `[[clients]]` entry that registers it.
    Client {
        #[arg(long)]
        name: String,
        /// ODS code of the client's organisation.
        #[arg(long)]
        ods: String,
        #[arg(long, value_parser = parse_kind)]
        kind: ClientKind,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Make the patient portal's P-256 key for `private_key_jwt` and print the public key set
    /// to register with the OpenID provider (`[portal] private_key_file` names the key).
    PortalKey {
        #[arg(long, default_value = "certs/portal.key")]
        out: PathBuf,
        /// Replace an existing key (the provider must then be given the new public key).
        #[arg(long)]
        force: bool,
    },
}

fn parse_kind(text: &str) -> Result<ClientKind, String> {
    match text {
        "gp-system" => Ok(ClientKind::GpSystem),
        "trust" => Ok(ClientKind::Trust),
        "portal" => Ok(ClientKind::Portal),
        "service" => Ok(ClientKind::Service),
        _ => Err(format!("{text:?} is not a client kind; use gp-system, trust, portal or service")),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hie-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Certs { command: CertsCommand::Init { dir, names, force } } => {
            DevPki::new(&dir).init(&names, force)?;
            println!("Development CA and server certificate written to {}/ (ca.pem, server.pem, server.key).", dir.display());
            Ok(())
        }
        Command::Certs { command: CertsCommand::Client { name, ods, kind, dir } } => {
            let ods = OdsCode::parse(&ods)?;
            let issued = DevPki::new(&dir).issue_client(&name, &ods, kind)?;
            eprintln!(
                "Client certificate {} and key {} written. Append this to {DEFAULT_CONFIG_FILE}:",
                issued.certificate.display(),
                issued.private_key.display()
            );
            print!("\n{}", client_entry_toml(&issued.entry));
            Ok(())
        }
        Command::Certs { command: CertsCommand::PortalKey { out, force } } => {
            if out.exists() && !force {
                anyhow::bail!("{} exists; pass --force to replace it", out.display());
            }
            let pem = rcgen::KeyPair::generate()?.serialize_pem();
            if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            crate::certs::write_secret(&out, &pem)?;
            let key = crate::auth::dev::SigningIssuer::from_pem("portal", IssuerKind::Patient, pem.as_bytes())?;
            eprintln!("Portal key written to {}. Register this public key set with the OpenID provider:", out.display());
            println!("{}", serde_json::to_string_pretty(&key.jwks())?);
            Ok(())
        }
        Command::Token { kind, org, scope, sub, role, purpose, reason, nhs_number, proofing_level, lifetime } => {
            let settings = Settings::load(cli.config.as_deref())?;
            if !settings.dev_issuers() {
                anyhow::bail!("auth.dev_issuers is off in this configuration, so the gateway would not trust a development token");
            }
            let dir = settings.tls.client_ca.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            let issuer = crate::auth::dev::DevIssuers::new(&dir).load(kind)?;
            let mut claims = serde_json::Map::new();
            let default_scope = match kind {
                IssuerKind::Clinician => "user/*.cruds",
                IssuerKind::System => "system/*.cruds",
                IssuerKind::Patient => "patient/*.rs",
            };
            claims.insert("scope".into(), scope.unwrap_or_else(|| default_scope.to_owned()).into());
            let mut put = |name: &str, value: Option<String>| {
                if let Some(value) = value {
                    claims.insert(name.into(), value.into());
                }
            };
            match kind {
                IssuerKind::Patient => {
                    let nhs_number = nhs_number.ok_or_else(|| anyhow::anyhow!("a patient token needs --nhs-number"))?;
                    put("nhs_number", Some(nhs_number));
                    put("identity_proofing_level", Some(proofing_level));
                }
                IssuerKind::Clinician | IssuerKind::System => {
                    let org = org.ok_or_else(|| anyhow::anyhow!("a {} token needs --org (the client's ODS code)", kind.as_str()))?;
                    put("requesting_organization", Some(org));
                    put("requesting_practitioner_role", role);
                    put("purpose_of_use", purpose);
                    put("reason", reason);
                }
            }
            let audience = settings.fhir_base_url(settings.server.listen);
            println!("{}", issuer.mint(&audience, &sub, lifetime, &serde_json::Value::Object(claims)));
            Ok(())
        }
        Command::Translate { from, paths } if from.is_extract() => {
            let maps = Settings::load(cli.config.as_deref())?.translation.code_maps()?;
            translate_extract(from, &read_extract(from, &paths)?, &maps)
        }
        Command::Translate { from, paths } if from.is_document() => {
            let settings = Settings::load(cli.config.as_deref())?;
            translate_documents(from, &paths, &consent::SensitivityLabels::new(settings.labels.sensitive.clone()))
        }
        Command::Translate { from, paths } => translate_files(from, &paths),
        Command::Synthetic { format, practice, patients, extracted, out } => {
            let practice = crate::demo::PRACTICES
                .iter()
                .find(|p| p.ods == practice)
                .ok_or_else(|| anyhow::anyhow!("practice {practice} is not a demo practice (Y90001, Y90002, Y90003)"))?;
            std::fs::create_dir_all(&out)?;
            let indexes: Vec<usize> = (0..patients).collect();
            if format.is_document() {
                for (name, bytes) in crate::synthetic::discharge::discharge_summaries(format, &indexes) {
                    std::fs::write(out.join(&name), &bytes)?;
                }
                println!("{patients} {format} discharge summaries from the demo trusts written to {}", out.display());
                return Ok(());
            }
            let files = match format {
                crate::translate::Format::EmisCsv => crate::synthetic::emis_extract(practice, &indexes, &extracted),
                crate::translate::Format::SystmOneCsv => crate::synthetic::systmone_extract(practice, &indexes, &extracted),
                crate::translate::Format::EmisXml => crate::synthetic::emis_open_records(practice, &indexes, &extracted),
                other => anyhow::bail!("synthetic data is made in emis-csv, emis-xml, systmone-csv, cda, itk3 and fhir; not {other}"),
            };
            for file in files {
                std::fs::write(out.join(&file.name), &file.bytes)?;
            }
            println!("{format} extract of {patients} patients at {} written to {}", practice.ods, out.display());
            Ok(())
        }
        Command::Ingest { from, paths, replay, publisher } => {
            let settings = Settings::load(cli.config.as_deref())?;
            actix_web::rt::System::new().block_on(ingest(&settings, from, &paths, replay, publisher.as_deref()))
        }
        Command::Migrate => {
            let settings = Settings::load(cli.config.as_deref())?;
            crate::telemetry::init(&settings.log);
            actix_web::rt::System::new().block_on(async {
                let store = connect_one(&settings).await?;
                store.migrate().await?;
                store.close().await;
                println!("database migrated");
                Ok(())
            })
        }
        Command::Audit { command: AuditCommand::Verify { unkeyed_until } } => {
            let settings = Settings::load(cli.config.as_deref())?;
            crate::telemetry::init(&settings.log);
            actix_web::rt::System::new().block_on(async {
                // Checking needs the key the gateway writes with, never a new one.
                let key_settings = crate::configuration::AuditSettings { generate_key: false, ..settings.audit.clone() };
                let key = crate::audit::AuditKey::load(&key_settings)?;
                let store = connect_one(&settings).await?;
                let verdict = crate::audit::verify(&store, &key, unkeyed_until).await;
                store.close().await;
                match verdict? {
                    crate::audit::Verdict::Intact { records, head, unkeyed } => {
                        println!("audit trail intact: {records} records; head {head}");
                        if unkeyed > 0 {
                            println!(
                                "records 1 to {unkeyed} were written before the trail was keyed: only their place before the keyed \
                                 records protects them"
                            );
                        }
                        Ok(())
                    }
                    crate::audit::Verdict::Broken { at, reason } => anyhow::bail!("audit trail broken at record {at}: {reason}"),
                }
            })
        }
        Command::Serve { demo, demo_patients } => {
            let mut settings = Settings::load(cli.config.as_deref())?;
            crate::telemetry::init(&settings.log);
            let demo_clients = prepare_dev_certificates(&mut settings)?;
            actix_web::rt::System::new().block_on(async move {
                let application = Application::build(settings).await?;
                if demo {
                    crate::startup::load_demo(&application, demo_patients).await?;
                }
                if !demo_clients.is_empty() {
                    print_banner(application.base_url(), application.ops_port(), application.mllp_port(), &demo_clients);
                }
                application.run_until_stopped().await?;
                Ok(())
            })
        }
    }
}

/// An extract's files: every `*.csv` (`*.xml` for EMIS Open) in each directory named, and every
/// file named.
/// One connection to the configured database, for the maintenance commands.
async fn connect_one(settings: &Settings) -> anyhow::Result<crate::store::SqlStore> {
    let options = crate::store::sql_store::StoreOptions {
        url: &settings.database.url,
        max_connections: Some(1),
        acquire_timeout: std::time::Duration::from_millis(settings.database.acquire_timeout_ms),
    };
    crate::store::SqlStore::connect(&options).await
}

fn read_extract(format: crate::translate::Format, paths: &[PathBuf]) -> anyhow::Result<Vec<crate::translate::emis::ExtractFile>> {
    let wanted = |file: &std::path::Path| file.extension().is_some_and(|ext| ext.eq_ignore_ascii_case(format.file_extension()));
    Ok(read_files(paths, wanted)?.into_iter().map(|(name, bytes)| crate::translate::emis::ExtractFile { name, bytes }).collect())
}

/// The files named, and in each directory named the files `wanted` picks (sorted): each with
/// its name as given and its bytes.
fn read_files(paths: &[PathBuf], wanted: impl Fn(&std::path::Path) -> bool) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut names = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.is_file() && wanted(file))
                .collect();
            entries.sort();
            names.extend(entries);
        } else {
            names.push(path.clone());
        }
    }
    names
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            Ok((path.display().to_string(), bytes))
        })
        .collect()
}

/// `hie-gateway translate --from emis-csv|systmone-csv`: one Bundle per patient.
fn translate_extract(
    format: crate::translate::Format,
    files: &[crate::translate::emis::ExtractFile],
    maps: &crate::translate::codes::CodeMaps,
) -> anyhow::Result<()> {
    use std::io::Write;
    let translated = crate::translate::translate_extract(format, files, maps)?;
    let several = translated.patients.len() > 1;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut unmapped = 0;
    for patient in &translated.patients {
        unmapped += patient.unmapped_codes;
        let text = if several { serde_json::to_string(&patient.bundle)? } else { serde_json::to_string_pretty(&patient.bundle)? };
        writeln!(out, "{text}")?;
    }
    if unmapped > 0 {
        eprintln!("{unmapped} codes kept without a SNOMED CT concept (flagged {})", crate::translate::emis::UNMAPPED_EXTENSION);
    }
    for (guid, error) in &translated.refused {
        eprintln!("{error} (patient {guid}): rejected");
    }
    if !translated.refused.is_empty() {
        anyhow::bail!("{} of {} patients rejected", translated.refused.len(), translated.refused.len() + translated.patients.len());
    }
    Ok(())
}

/// Every input of every file, in order, with where it starts (`file:line`).
fn read_inputs(format: crate::translate::Format, paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    use crate::translate::{Format, hl7v2, split_hl7v2_messages};
    let mut inputs = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        match format {
            Format::Hl7v2 => {
                let text = hl7v2::message::decode(&bytes);
                for (line, message) in split_hl7v2_messages(&text) {
                    inputs.push((format!("{}:{line}", path.display()), message));
                }
            }
            Format::EmisCsv | Format::EmisXml | Format::SystmOneCsv => unreachable!("an extract is read whole (read_extract)"),
            Format::Cda | Format::Itk3 | Format::Fhir => unreachable!("a document is one file (read_documents)"),
        }
    }
    Ok(inputs)
}

/// `hie-gateway translate`: every input of every file, in order.
fn translate_files(format: crate::translate::Format, paths: &[PathBuf]) -> anyhow::Result<()> {
    let inputs = read_inputs(format, paths)?;
    print_bundles(&inputs, "input", paths, |input| crate::translate::hl7v2::translate(input).map(|t| t.bundle).map_err(|e| e.to_string()))
}

/// Print each input's Bundle — pretty for one input, one per line for several — and each
/// refusal on stderr with its place; fails when there was no input or any was refused.
fn print_bundles<T>(
    inputs: &[(String, T)],
    noun: &str,
    paths: &[PathBuf],
    translate: impl Fn(&T) -> Result<serde_json::Value, String>,
) -> anyhow::Result<()> {
    use std::io::Write;
    if inputs.is_empty() {
        anyhow::bail!("no {noun} found in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let several = inputs.len() > 1;
    let mut rejected = 0;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (place, input) in inputs {
        match translate(input) {
            Ok(bundle) => {
                let text = if several { serde_json::to_string(&bundle)? } else { serde_json::to_string_pretty(&bundle)? };
                writeln!(out, "{text}")?;
            }
            Err(error) => {
                rejected += 1;
                eprintln!("{place}: rejected: {error}");
            }
        }
    }
    if rejected > 0 {
        anyhow::bail!("{rejected} of {} {noun}s rejected", inputs.len());
    }
    Ok(())
}

/// One input to ingest: where it is from, and for a dead letter its row and the client
/// organisation that posted it.
struct Input {
    place: String,
    bytes: Vec<u8>,
    dead_letter: Option<i64>,
    publisher: Option<String>,
}

/// `hie-gateway ingest`: file every input, or replay the dead-letter store, and record the run
/// in the audit trail.
pub async fn ingest(
    settings: &Settings,
    format: crate::translate::Format,
    paths: &[PathBuf],
    replay: bool,
    publisher: Option<&str>,
) -> anyhow::Result<()> {
    use std::sync::Arc;

    let publisher = match publisher {
        None => None,
        Some(_) if !format.is_document() => {
            anyhow::bail!("--publisher applies to documents (cda, itk3, fhir); HL7 v2 messages and GP extracts name their own sender")
        }
        Some(ods) => Some(
            crate::ingest::replay_publisher("cli", ods)
                .ok_or_else(|| anyhow::anyhow!("--publisher {ods:?} is not an ODS organisation code"))?,
        ),
    };
    crate::auth::install_crypto();
    let store = Arc::new(
        crate::store::SqlStore::connect(&crate::store::sql_store::StoreOptions {
            url: &settings.database.url,
            max_connections: Some(2),
            acquire_timeout: std::time::Duration::from_millis(settings.database.acquire_timeout_ms.max(5_000)),
        })
        .await?,
    );
    if settings.database.migrate_on_start {
        store.migrate().await?;
    }
    let fhir = Arc::new(crate::fhir::FhirService {
        store: store.clone(),
        validator: Arc::new(conformance::Validator::embedded()?),
        base_url: settings.fhir_base_url(settings.server.listen),
        limits: settings.limits.clone(),
        // Ingest writes no paging links.
        paging: crate::fhir::PagingKey::new(&uuid::Uuid::new_v4().into_bytes()),
        policy: settings.policy(),
        resource_facts: Default::default(),
    });
    // The run is one record in the audit trail: who ran it, and every version it wrote with the
    // patients they belong to, as an MLLP message's record says.
    let audit_key = crate::audit::AuditKey::load(&settings.audit)?;
    crate::audit::check_key(&store, &audit_key, &settings.audit.key_file).await?;
    let audit = crate::audit::AuditTrail::start(store.clone(), audit_key);
    let operator = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
    let note = crate::audit::AuditNote {
        method: "CLI".into(),
        target: format!(
            "hie-gateway ingest --from {format}{}{} ({} paths)",
            if replay { " --replay" } else { "" },
            publisher.as_ref().and_then(|p| p.client.as_ref()).map(|client| format!(" --publisher {}", client.ods)).unwrap_or_default(),
            paths.len()
        ),
        interaction: Some("transaction".into()),
        who: crate::audit::Who { client: Some(format!("operator {operator}")), kind: Some("system".into()), ..Default::default() },
        ..Default::default()
    };
    let (result, mut note) = crate::audit::noted(note, file_inputs(settings, fhir, store.clone(), format, paths, replay, publisher)).await;
    note.status = if result.is_ok() { 200 } else { 422 };
    let audited = audit.append(&note, fhir_models::datetime::to_micros(time::OffsetDateTime::now_utc())).await;
    store.close().await;
    if let Err(error) = audited {
        let filed = match &result {
            Ok(()) => "everything was filed".to_owned(),
            Err(error) => format!("{error}"),
        };
        anyhow::bail!("{filed}, but the run's audit record could not be written: {error}; tell the information governance lead");
    }
    result
}

/// The inputs of `hie-gateway ingest`, filed; the caller records the run.
async fn file_inputs(
    settings: &Settings,
    fhir: std::sync::Arc<crate::fhir::FhirService>,
    store: std::sync::Arc<crate::store::SqlStore>,
    format: crate::translate::Format,
    paths: &[PathBuf],
    replay: bool,
    publisher: Option<Requester>,
) -> anyhow::Result<()> {
    use crate::ingest::{Hl7v2Ingest, Outcome};
    use std::io::IsTerminal;

    if format.is_document() {
        return ingest_documents(&fhir, &store, format, paths, replay, publisher).await;
    }
    if format.is_extract() {
        anyhow::ensure!(!replay, "--replay applies to HL7 v2 dead letters; re-run the ingest of a fixed extract instead");
        let maps = settings.translation.code_maps()?;
        let files = read_extract(format, paths)?;
        let report = crate::ingest::file_extract(&fhir, format, &files, &maps, None, "cli").await?;
        println!("{report}");
        for line in report.refused.iter().chain(&report.retry) {
            println!("  {line}");
        }
        if !report.refused.is_empty() || !report.retry.is_empty() {
            anyhow::bail!("{} of {} patients were not filed", report.refused.len() + report.retry.len(), report.patients);
        }
        return Ok(());
    }
    let ingest = Hl7v2Ingest::new(fhir, store.clone(), &settings.mllp, "cli");
    let mut inputs: Vec<Input> = Vec::new();
    if replay {
        let mut kept = store.rejected_inputs(i64::MAX).await?;
        kept.reverse();
        for input in kept.into_iter().filter(|input| input.format == format.as_str()) {
            let place = format!(
                "dead letter {} ({}, {})",
                input.id.unwrap_or_default(),
                input.channel,
                input.control_id.as_deref().unwrap_or("no MSH-10")
            );
            inputs.push(Input { place, bytes: input.content, dead_letter: input.id, publisher: input.publisher });
        }
    } else {
        inputs.extend(read_inputs(format, paths)?.into_iter().map(|(place, message)| Input {
            place,
            bytes: message.into_bytes(),
            dead_letter: None,
            publisher: None,
        }));
    }
    let progress = std::io::stderr().is_terminal();
    let (mut filed, mut duplicates, mut refused, mut retry) = (0usize, 0usize, Vec::new(), Vec::new());
    for (index, Input { place, bytes, dead_letter, publisher }) in inputs.iter().enumerate() {
        let publisher = publisher.as_deref().and_then(|ods| ingest.publisher_for(ods));
        let outcome = ingest.process_as(bytes, dead_letter.is_none(), publisher).await;
        let settled = matches!(outcome, Outcome::Filed | Outcome::Duplicate);
        match outcome {
            Outcome::Filed => filed += 1,
            Outcome::Duplicate => duplicates += 1,
            Outcome::Rejected(error) => refused.push(format!("{place}: {error}")),
            Outcome::Retry(error) => retry.push(format!("{place}: {error}")),
        }
        if let (Some(id), true) = (dead_letter, settled) {
            // Filed now (or already): no longer a dead letter.
            store.delete_rejected(*id).await?;
        }
        if progress && (index % 100 == 99 || index + 1 == inputs.len()) {
            eprint!("\r{} of {} messages", index + 1, inputs.len());
        }
    }
    if progress {
        eprintln!();
    }
    println!(
        "{} messages: {filed} filed, {duplicates} already filed (nothing changed), {} refused, {} not filed now (database unavailable)",
        inputs.len(),
        refused.len(),
        retry.len()
    );
    for line in refused.iter().chain(&retry) {
        println!("  {line}");
    }
    if !refused.is_empty() || !retry.is_empty() {
        anyhow::bail!("{} of {} messages were not filed", refused.len() + retry.len(), inputs.len());
    }
    Ok(())
}

/// Discharge documents: every file named, and every file in each directory named (sorted).
fn read_documents(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    read_files(paths, |_| true)
}

/// `hie-gateway translate --from cda|itk3`: one Bundle per document, labelled as ingest would.
fn translate_documents(format: crate::translate::Format, paths: &[PathBuf], labels: &consent::SensitivityLabels) -> anyhow::Result<()> {
    let documents = read_documents(paths)?;
    print_bundles(&documents, "document", paths, |bytes| {
        let mut translated =
            crate::translate::translate_document(format, bytes, time::OffsetDateTime::now_utc()).map_err(|e| e.to_string())?;
        translated.label(labels);
        Ok(translated.bundle)
    })
}

/// `hie-gateway ingest --from cda|itk3`: file each document, or replay the kept ones.
async fn ingest_documents(
    fhir: &crate::fhir::FhirService,
    store: &crate::store::SqlStore,
    format: crate::translate::Format,
    paths: &[PathBuf],
    replay: bool,
    publisher: Option<Requester>,
) -> anyhow::Result<()> {
    use crate::ingest::DocumentOutcome;
    let mut inputs: Vec<Input> = Vec::new();
    if replay {
        let mut kept = store.rejected_inputs(i64::MAX).await?;
        kept.reverse();
        for input in kept.into_iter().filter(|input| input.format == format.as_str()) {
            let place = format!("dead letter {} ({})", input.id.unwrap_or_default(), input.channel);
            inputs.push(Input { place, bytes: input.content, dead_letter: input.id, publisher: input.publisher });
        }
    } else {
        inputs.extend(read_documents(paths)?.into_iter().map(|(place, bytes)| Input { place, bytes, dead_letter: None, publisher: None }));
    }
    let (mut filed, mut duplicates, mut superseded, mut not_filed) = (0usize, 0usize, 0usize, Vec::new());
    for Input { place, bytes, dead_letter, publisher: kept } in &inputs {
        let publisher = publisher.clone().or_else(|| kept.as_deref().and_then(|ods| crate::ingest::replay_publisher("cli", ods)));
        let outcome = crate::ingest::file_document(fhir, store, format, bytes, publisher, "cli", dead_letter.is_none()).await;
        let settled = matches!(outcome, DocumentOutcome::Filed(_) | DocumentOutcome::Duplicate(_) | DocumentOutcome::Superseded(_));
        match outcome {
            DocumentOutcome::Filed(_) => filed += 1,
            DocumentOutcome::Duplicate(_) => duplicates += 1,
            DocumentOutcome::Superseded(_) => superseded += 1,
            DocumentOutcome::Rejected(error) => not_filed.push(format!("{place}: refused: {error}")),
            DocumentOutcome::Retry(reason) => not_filed.push(format!("{place}: not filed now: {reason}")),
        }
        if let (Some(id), true) = (dead_letter, settled) {
            store.delete_rejected(*id).await?;
        }
    }
    println!(
        "{} documents: {filed} filed, {duplicates} already filed (nothing changed), {} not filed, {superseded} older than the version filed (nothing changed)",
        inputs.len(),
        not_filed.len()
    );
    for line in &not_filed {
        println!("  {line}");
    }
    if !not_filed.is_empty() {
        anyhow::bail!("{} of {} documents were not filed", not_filed.len(), inputs.len());
    }
    Ok(())
}

/// The embedded default: make the development PKI and demo clients on first run, and register
/// the demo clients on every run. Returns the demo clients registered.
fn prepare_dev_certificates(settings: &mut Settings) -> anyhow::Result<Vec<ClientEntry>> {
    if !settings.tls.generate_dev_certificates {
        return Ok(Vec::new());
    }
    let dir = settings.tls.certificate.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let pki = DevPki::new(&dir);
    let demo_file = dir.join("demo-clients.toml");
    if !settings.tls.certificate.exists() || !settings.tls.private_key.exists() || !settings.tls.client_ca.exists() {
        if pki.ca_certificate().exists() {
            anyhow::bail!(
                "{} exists but the server certificate or key is missing; run `hie-gateway certs init --force` to start the development PKI again",
                pki.ca_certificate().display()
            );
        }
        pki.init(&[], false)?;
        let mut text = String::from("# Demo API clients made by `hie-gateway serve` on first run (development only).\n\n");
        for (name, ods, kind) in [("demo-gp", "Y90001", ClientKind::GpSystem), ("demo-trust", "R9Z", ClientKind::Trust)] {
            let issued = pki.issue_client(name, &OdsCode::parse(ods)?, kind)?;
            text.push_str(&client_entry_toml(&issued.entry));
            text.push('\n');
        }
        std::fs::write(&demo_file, text)?;
    }
    if !demo_file.exists() {
        return Ok(Vec::new());
    }
    #[derive(serde::Deserialize)]
    struct DemoClients {
        clients: Vec<ClientEntry>,
    }
    let demo: DemoClients = toml_from_file(&demo_file)?;
    for client in &demo.clients {
        if !settings.clients.iter().any(|existing| existing.name == client.name) {
            settings.clients.push(client.clone());
        }
    }
    Ok(demo.clients)
}

fn toml_from_file<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use figment::providers::Format;
    Ok(figment::Figment::from(figment::providers::Toml::file(path)).extract()?)
}

fn print_banner(base_url: &str, ops_port: u16, mllp_port: Option<u16>, clients: &[ClientEntry]) {
    let mllp = mllp_port.map(|port| format!("  HL7 v2:    MLLP on 127.0.0.1:{port}\n")).unwrap_or_default();
    let mut text = format!(
        "\nHIE Gateway is running (embedded default: SQLite, development certificates).\n\n  FHIR base: {base_url}\n  Ops:       http://127.0.0.1:{ops_port}/healthz  /readyz  /metrics\n{mllp}\nDemo clients (certificates in certs/clients/):\n"
    );
    for client in clients {
        text.push_str(&format!("  {:<11} {:<10} ODS {}\n", client.name, client.kind.as_str(), client.ods));
    }
    let client = clients.first().map_or("demo-gp", |c| c.name.as_str());
    let ods = clients.first().map_or_else(|| "Y90001".to_owned(), |c| c.ods.to_string());
    // As the user would type it: `target/release/hie-gateway` after `cargo run`.
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.strip_prefix(std::env::current_dir().ok()?).ok()?.display().to_string()))
        .unwrap_or_else(|| "hie-gateway".to_owned());
    text.push_str(&format!(
        "\nTry:\n  curl --cacert certs/ca.pem {base_url}/metadata\n  TOKEN=$({program} token --kind clinician --org {ods})\n  curl --cacert certs/ca.pem --cert certs/clients/{client}.pem --key certs/clients/{client}.key -H \"Authorization: Bearer $TOKEN\" \\\n       '{base_url}/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}'\n\n",
        crate::demo::test_nhs_number(0)
    ));
    println!("{text}");
}
