//! FHIR R4 as another system publishes it — a `transaction`, `batch`, `collection`, `document`,
//! `message` or `searchset` Bundle, or one resource — made into a transaction this gateway can
//! file again and again without duplicating anything.
//!
//! The sender's ids mean nothing here, so each resource is keyed on what identifies it anywhere:
//! - a Patient on its NHS number (created if unknown, never overwritten: demographics are owned by
//!   the registration feeds and the GP record), else on its first identifier;
//! - any other resource on its first identifier, else on its `fullUrl` (a URI that names it
//!   globally, kept as an identifier with system `urn:ietf:rfc:3986`), scoped to its patient
//!   (`&patient.identifier=…`) so a key never reaches another patient's records;
//! - a type without identifiers (Provenance, Binary) on an id derived from its `fullUrl`.
//!
//! References between entries become the entries' placeholders; a reference that leaves the
//! Bundle must be conditional, absolute, or carry an identifier (made conditional on it): a
//! relative `Patient/123` names the sender's record, which here could be anyone's. A `DELETE`
//! entry names its record by identifier. The Bundle's own security labels go on every resource.
//! The publisher is the Composition's custodian (else its first authoring organisation) or the
//! MessageHeader's sender, by ODS code; a registered client that posts the input publishes it
//! as its own organisation whatever the input says.

use std::collections::HashMap;

use fhir_models::search::table;
use fhir_models::system::{NHS_NUMBER, ODS_ORGANIZATION_CODE};
use fhir_models::{NhsNumber, ResourceType};
use serde_json::{Map, Value, json};

use super::discharge::{DocumentError, Translated};
use super::transaction::{Source, TransactionBuilder, content_digest, derived_id, escape_search, provenance, query_value};

const FORMAT: &str = "fhir";

/// The R4 types whose `identifier` is one Identifier, not a list.
const SINGLE_IDENTIFIER: [&str; 9] = [
    "AdverseEvent",
    "Composition",
    "ConceptMap",
    "MedicinalProductIngredient",
    "QuestionnaireResponse",
    "SpecimenDefinition",
    "SubstanceSpecification",
    "TestReport",
    "TestScript",
];

/// The identifier system of a URI: how a resource's `fullUrl` is kept as its key.
const URI: &str = "urn:ietf:rfc:3986";

/// Translate one FHIR R4 input; `received` (an instant) dates the Provenance of an input that
/// carries no timestamp of its own.
pub fn translate(bytes: &[u8], received: &str) -> Result<Translated, DocumentError> {
    let input: Value = serde_json::from_slice(bytes).map_err(|e| fail("(input)", format!("not JSON: {e}")))?;
    let Some(root_type) = input["resourceType"].as_str() else {
        return Err(fail("resourceType", "not a FHIR resource: it has no resourceType"));
    };
    let mut items = Vec::new();
    let mut deletes = Vec::new();
    let mut publisher = None;
    if root_type == "Bundle" {
        read_bundle(&input, &mut items, &mut deletes, &mut publisher)?;
    } else {
        ResourceType::parse(root_type).map_err(|_| fail("resourceType", format!("{root_type:?} is not an R4 resource type")))?;
        items.push(Item { path: root_type.to_owned(), full_url: None, resource: input.clone() });
    }
    if items.is_empty() && deletes.is_empty() {
        return Err(fail("Bundle.entry", "the Bundle holds no resources to file"));
    }
    if let Some(reference) = document_reference(&input, &items) {
        items.push(reference);
    }

    let digest = content_digest(bytes);
    let key = bundle_identifier(&input).unwrap_or_else(|| digest.clone());
    let mut bundle = TransactionBuilder::new(&format!("{FORMAT}:{key}"));
    let labels = input["meta"]["security"].as_array().cloned().unwrap_or_default();
    let restricted = document_confidentiality(&input, &items);
    let index = Index::of(&items);

    // Patients first: every other key is scoped to its patient's.
    let mut conditions: Vec<Option<Key>> = vec![None; items.len()];
    for (position, item) in items.iter().enumerate().filter(|(_, item)| item.resource_type() == "Patient") {
        conditions[position] = Some(key_of(item, None)?);
    }
    for (position, item) in items.iter().enumerate() {
        if conditions[position].is_none() {
            let patient = patient_key(item, &items, &index, &conditions);
            conditions[position] = Some(key_of(item, patient.as_deref())?);
        }
    }

    let mut placeholders = Vec::with_capacity(items.len());
    for (item, key) in items.iter().zip(conditions) {
        let mut resource = item.resource.clone();
        prepare(&mut resource, &labels);
        if !matches!(item.resource_type(), "Patient" | "Organization" | "Practitioner" | "PractitionerRole" | "Location" | "Medication") {
            prepare(&mut resource, &restricted);
        }
        let placeholder = match key.expect("every item is keyed") {
            Key::Ensure(condition) => bundle.ensure(resource, &condition),
            Key::Upsert { condition, added } => {
                match added {
                    Some(identifier) if SINGLE_IDENTIFIER.contains(&item.resource_type()) => resource["identifier"] = identifier,
                    Some(identifier) => push(&mut resource, "identifier", identifier),
                    None => {}
                }
                bundle.upsert(resource, &condition)
            }
            Key::Id(id) => {
                resource["id"] = json!(id);
                bundle.put(resource)
            }
        };
        placeholders.push(placeholder);
    }
    let mut rewritten = std::collections::HashSet::new();
    for (position, item) in items.iter().enumerate() {
        // A second entry with the key of an earlier one is that one (references to it included).
        if !rewritten.insert(placeholders[position].clone()) {
            continue;
        }
        let mut resource = bundle.resource_mut(&placeholders[position]).expect("added above").take();
        rewrite_references(&mut resource, &format!("{}.resource", item.path), item, &index, &placeholders)?;
        *bundle.resource_mut(&placeholders[position]).expect("added above") = resource;
    }
    for (resource_type, condition) in &deletes {
        bundle.delete(resource_type, condition);
    }

    let source_codings = items
        .iter()
        .flat_map(|item| fhir_models::json::codings(&item.resource))
        .map(|(system, code)| (system.to_owned(), code.to_owned()))
        .collect();
    let provenance_id = derived_id("fhir", &key);
    let recorded = input["timestamp"].as_str().filter(|time| time.contains('T')).unwrap_or(received).to_owned();
    let display = format!("FHIR {} of {} resources", bundle_kind(&input), items.len());
    let author = publisher.clone().unwrap_or_else(|| "unknown organisation".into());
    let targets = bundle.full_urls();
    let mut record = provenance(
        &Source {
            id: &provenance_id,
            recorded: &recorded,
            author: &author,
            system: "urn:hie:fhir:bundle",
            key: &key,
            display: &display,
            digest: &digest,
            digested: "the FHIR input as received",
        },
        &targets,
    );
    let provenance_labels: Vec<Value> = labels.iter().chain(&restricted).cloned().collect();
    if !provenance_labels.is_empty() {
        record["meta"] = json!({"security": provenance_labels});
    }
    bundle.put(record);
    let document = format!("{} {key}", if root_type == "Bundle" { "Bundle" } else { root_type });
    Ok(Translated { bundle: bundle.finish(), document, provenance_id, digest, organisation: publisher, source_codings })
}

fn fail(location: impl Into<String>, reason: impl Into<String>) -> DocumentError {
    DocumentError::new(FORMAT, location, reason)
}

/// One resource to file, with where it was in the input.
struct Item {
    /// `Bundle.entry[3]`, or the resource type of a lone resource.
    path: String,
    full_url: Option<String>,
    resource: Value,
}

impl Item {
    fn resource_type(&self) -> &str {
        self.resource["resourceType"].as_str().unwrap_or_default()
    }
}

fn read_bundle(
    input: &Value,
    items: &mut Vec<Item>,
    deletes: &mut Vec<(String, String)>,
    publisher: &mut Option<String>,
) -> Result<(), DocumentError> {
    let kind = input["type"].as_str().unwrap_or_default();
    if !matches!(kind, "transaction" | "batch" | "collection" | "document" | "message" | "searchset") {
        return Err(fail(
            "Bundle.type",
            format!("a {kind:?} Bundle is not filed; send a transaction, batch, collection, document, message or searchset"),
        ));
    }
    let entries = input["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (position, entry) in entries.iter().enumerate() {
        let path = format!("Bundle.entry[{position}]");
        let method = entry["request"]["method"].as_str();
        match method {
            None | Some("POST" | "PUT") => {}
            Some("DELETE") => {
                deletes.push(delete_condition(entry["request"]["url"].as_str().unwrap_or_default(), &path)?);
                continue;
            }
            Some(other) => {
                return Err(fail(
                    format!("{path}.request.method"),
                    format!("a {other} is not filed: a published Bundle creates, updates (POST, PUT) or deletes (DELETE)"),
                ));
            }
        }
        if entry["search"]["mode"] == "outcome" {
            continue;
        }
        let resource = &entry["resource"];
        let Some(resource_type) = resource["resourceType"].as_str() else {
            return Err(fail(format!("{path}.resource"), "an entry without a resource"));
        };
        match resource_type {
            "MessageHeader" => {
                *publisher = publisher.take().or_else(|| ods_of(&resource["sender"], input));
                continue;
            }
            "Bundle" => return Err(fail(format!("{path}.resource"), "a Bundle inside a Bundle is not filed; send each on its own")),
            _ => {}
        }
        ResourceType::parse(resource_type)
            .map_err(|_| fail(format!("{path}.resource.resourceType"), format!("{resource_type:?} is not an R4 resource type")))?;
        if resource_type == "Composition" && publisher.is_none() {
            // The organisation that holds the document, else the first authoring organisation.
            let authors = resource["author"].as_array().map(Vec::as_slice).unwrap_or_default();
            *publisher = ods_of(&resource["custodian"], input).or_else(|| authors.iter().find_map(|author| ods_of(author, input)));
        }
        let full_url = entry["fullUrl"].as_str().map(str::to_owned);
        items.push(Item { path, full_url, resource: resource.clone() });
    }
    Ok(())
}

/// A `document` Bundle that carries no DocumentReference gets one, as a discharge document does,
/// so that GP systems find it by patient and type: it describes the Composition (type, subject,
/// authors, custodian, date, encounter) and relates to it, where the reader gets the document
/// as the access rules let them see it. It does not carry the Bundle as sent: a sender's
/// Composition need not name every entry, and an entry it does not name (another patient's
/// record, a result still held back, a restricted patient's address) would go out unchecked.
/// Keyed on the Composition's version-independent identifier, else the Bundle's; none without
/// either (with a system), or without a Composition first.
fn document_reference(input: &Value, items: &[Item]) -> Option<Item> {
    if input["resourceType"] != "Bundle" || input["type"] != "document" || items.iter().any(|i| i.resource_type() == "DocumentReference") {
        return None;
    }
    let composition = items.first().filter(|item| item.resource_type() == "Composition")?;
    let source = &composition.resource;
    let identifier = [&source["identifier"], &input["identifier"]]
        .into_iter()
        .find(|identifier| identifier["system"].is_string() && identifier["value"].is_string())?
        .clone();
    // Where the Composition is, as its own entries would name it.
    let (related, full_url) = match (&composition.full_url, source["id"].as_str()) {
        (Some(url), id) => (url.clone(), base_of(url).map(|base| format!("{base}DocumentReference/{}", id.unwrap_or("document")))),
        (None, Some(id)) => (format!("Composition/{id}"), None),
        (None, None) => return None,
    };
    let retracted = source["status"] == "entered-in-error";
    let mut attachment = json!({"contentType": "application/fhir+json"});
    let mut reference = json!({
        "resourceType": "DocumentReference",
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-DocumentReference"]},
        "masterIdentifier": identifier,
        "identifier": [identifier],
        "status": if retracted { "entered-in-error" } else { "current" },
        "content": [{"attachment": Value::Null, "format": {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
        "context": {"related": [{"reference": related}]},
    });
    if !retracted && let Some(status) = source["status"].as_str() {
        reference["docStatus"] = json!(status);
    }
    for (from, to) in [("type", "type"), ("subject", "subject"), ("author", "author"), ("custodian", "custodian"), ("title", "description")]
    {
        if !source[from].is_null() {
            reference[to] = source[from].clone();
        }
    }
    if let Some(category) = source["category"].as_array().filter(|c| !c.is_empty()) {
        reference["category"] = json!(category);
    }
    if let Some(title) = source["title"].as_str() {
        attachment["title"] = json!(title);
    }
    if let Some(date) = source["date"].as_str() {
        attachment["creation"] = json!(date);
    }
    // `date` is an instant: the Bundle's timestamp, else a Composition date with a time.
    if let Some(instant) = [input["timestamp"].as_str(), source["date"].as_str()].into_iter().flatten().find(|t| t.contains('T')) {
        reference["date"] = json!(instant);
    }
    if !source["encounter"].is_null() {
        reference["context"]["encounter"] = json!([source["encounter"]]);
    }
    if let Some(code) = source["confidentiality"].as_str() {
        reference["securityLabel"] =
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": code}]}]);
    }
    let mut labels: Vec<Value> = Vec::new();
    for label in items.iter().flat_map(|item| item.resource["meta"]["security"].as_array().cloned().unwrap_or_default()) {
        if label["system"].as_str().is_some_and(consent::access::is_label_system) && !labels.contains(&label) {
            labels.push(label);
        }
    }
    if !labels.is_empty() {
        reference["meta"]["security"] = json!(labels);
    }
    reference["content"][0]["attachment"] = attachment;
    Some(Item { path: format!("{} (its DocumentReference)", composition.path), full_url, resource: reference })
}

/// A restricted (`R`) or very restricted (`V`) document's confidentiality, as the label each
/// of its clinical resources carries (as a discharge document's do): the access rules read
/// labels, not `Composition.confidentiality`. Not for the Patient, where `R` would mean a
/// restricted person, nor for reference data.
fn document_confidentiality(input: &Value, items: &[Item]) -> Vec<Value> {
    let composition = items.first().filter(|item| input["type"] == "document" && item.resource_type() == "Composition");
    match composition.and_then(|item| item.resource["confidentiality"].as_str()) {
        Some(code @ ("R" | "V")) => vec![json!({"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": code})],
        _ => Vec::new(),
    }
}

/// `Type?identifier=…`: the only delete a published Bundle may make.
fn delete_condition(url: &str, path: &str) -> Result<(String, String), DocumentError> {
    let refuse = || {
        fail(
            format!("{path}.request.url"),
            format!("{url:?}: a delete names its record by identifier (Type?identifier=system|value); ids are this gateway's own"),
        )
    };
    let (resource_type, query) = url.split_once('?').ok_or_else(refuse)?;
    ResourceType::parse(resource_type).map_err(|_| refuse())?;
    if query.is_empty()
        || !query.split('&').all(|pair| pair.split_once('=').is_some_and(|(name, value)| name == "identifier" && !value.is_empty()))
    {
        return Err(refuse());
    }
    Ok((resource_type.to_owned(), query.to_owned()))
}

/// The ODS code of the organisation a reference names: by identifier, or through the entry it
/// points at.
fn ods_of(reference: &Value, bundle: &Value) -> Option<String> {
    let ods = |identifier: &Value| {
        (identifier["system"] == ODS_ORGANIZATION_CODE).then(|| identifier["value"].as_str().map(str::to_owned)).flatten()
    };
    if let Some(code) = ods(&reference["identifier"]) {
        return Some(code);
    }
    let target = reference["reference"].as_str()?;
    let entries = bundle["entry"].as_array()?;
    let organisation = entries.iter().find(|entry| {
        entry["fullUrl"] == target
            || entry["fullUrl"].as_str().is_some_and(|url| url.ends_with(&format!("/{target}")))
            || target.split_once('/').is_some_and(|(kind, id)| entry["resource"]["resourceType"] == kind && entry["resource"]["id"] == id)
    })?;
    organisation["resource"]["identifier"].as_array()?.iter().find_map(ods)
}

fn bundle_identifier(input: &Value) -> Option<String> {
    let identifier = &input["identifier"];
    let value = identifier["value"].as_str()?;
    Some(format!("{}|{value}", identifier["system"].as_str().unwrap_or_default()))
}

fn bundle_kind(input: &Value) -> String {
    match input["type"].as_str() {
        Some(kind) if input["resourceType"] == "Bundle" => format!("{kind} Bundle"),
        _ => format!("{} resource", input["resourceType"].as_str().unwrap_or_default()),
    }
}

/// Where the entries are: by `fullUrl`, and by `Type/id` for entries named that way.
struct Index<'a> {
    by_url: HashMap<&'a str, usize>,
    by_id: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> Index<'a> {
    fn of(items: &'a [Item]) -> Self {
        let mut by_url = HashMap::new();
        let mut by_id = HashMap::new();
        for (position, item) in items.iter().enumerate() {
            if let Some(url) = &item.full_url {
                by_url.entry(url.as_str()).or_insert(position);
            }
            if let Some(id) = item.resource["id"].as_str() {
                by_id.entry((item.resource_type(), id)).or_insert(position);
            }
        }
        Self { by_url, by_id }
    }

    /// The entry `reference` (written in `from`) names, per R4 bundle.html#references: the
    /// `fullUrl` itself, or a relative `Type/id` against the base of `from`'s `fullUrl`.
    fn resolve(&self, reference: &str, from: &Item) -> Option<usize> {
        let reference = reference.split("/_history/").next().unwrap_or(reference);
        if let Some(&position) = self.by_url.get(reference) {
            return Some(position);
        }
        let (resource_type, id) = relative(reference)?;
        if let Some(base) = from.full_url.as_deref().and_then(base_of)
            && let Some(&position) = self.by_url.get(format!("{base}{resource_type}/{id}").as_str())
        {
            return Some(position);
        }
        self.by_id.get(&(resource_type, id)).copied()
    }
}

/// `Type/id` as a relative reference.
fn relative(reference: &str) -> Option<(&str, &str)> {
    let (resource_type, id) = reference.split_once('/')?;
    (ResourceType::parse(resource_type).is_ok() && !id.is_empty() && !id.contains('/')).then_some((resource_type, id))
}

/// `https://server/fhir/` of `https://server/fhir/Type/id`.
fn base_of(full_url: &str) -> Option<&str> {
    if !full_url.starts_with("http") {
        return None;
    }
    let mut parts = full_url.rsplitn(3, '/');
    let (_, _, base) = (parts.next()?, parts.next()?, parts.next()?);
    Some(&full_url[..base.len() + 1])
}

#[derive(Clone)]
enum Key {
    /// `POST` + `ifNoneExist`: a Patient known by NHS number.
    Ensure(String),
    /// `PUT Type?condition`, with the identifier the key adds to the resource, if any.
    Upsert { condition: String, added: Option<Value> },
    /// `PUT Type/id` for a type that has no identifiers.
    Id(String),
}

fn key_of(item: &Item, patient: Option<&str>) -> Result<Key, DocumentError> {
    let resource = &item.resource;
    let resource_type = item.resource_type();
    let kind = ResourceType::parse(resource_type).expect("checked when read");
    // A few types hold one identifier, not a list.
    let identifiers: Vec<&Value> = match &resource["identifier"] {
        Value::Array(all) => all.iter().collect(),
        one @ Value::Object(_) => vec![one],
        _ => Vec::new(),
    };
    let token = |system: &str, value: &str| format!("{}|{}", query_value(&escape_search(system)), query_value(&escape_search(value)));
    if resource_type == "Patient"
        && let Some(nhs) = identifiers
            .iter()
            .filter(|identifier| identifier["system"] == NHS_NUMBER)
            .find_map(|identifier| NhsNumber::parse(identifier["value"].as_str()?).ok())
    {
        return Ok(Key::Ensure(format!("identifier={}", token(NHS_NUMBER, &nhs.as_string()))));
    }
    let no_key = || {
        fail(
            item.path.clone(),
            format!(
                "the {resource_type} has neither an identifier nor a fullUrl: a re-send could not find it again, so it would be filed twice"
            ),
        )
    };
    if table().get(kind, "identifier").is_none() {
        let full_url = item.full_url.as_deref().ok_or_else(no_key)?;
        return Ok(Key::Id(derived_id("fhir", &format!("{resource_type}|{full_url}"))));
    }
    let own = identifiers.iter().find_map(|identifier| Some((identifier["system"].as_str()?, identifier["value"].as_str()?)));
    let (system, value, added) = match (own, &item.full_url) {
        (Some((system, value)), _) => (system.to_owned(), value.to_owned(), None),
        (None, Some(full_url)) => (URI.to_owned(), full_url.clone(), Some(json!({"system": URI, "value": full_url}))),
        (None, None) => return Err(no_key()),
    };
    let mut condition = format!("identifier={}", token(&system, &value));
    if let Some(patient) = patient {
        if table().get(kind, "patient").is_some() {
            condition.push_str(&format!("&patient.identifier={patient}"));
        } else if table().get(kind, "subject").is_some() {
            condition.push_str(&format!("&subject:Patient.identifier={patient}"));
        }
    }
    Ok(Key::Upsert { condition, added })
}

/// The key of the patient a resource is about (its `subject`, `patient` or `beneficiary`), as
/// a token: the Patient entry's own key, or the identifier of a conditional reference.
fn patient_key(item: &Item, items: &[Item], index: &Index<'_>, keys: &[Option<Key>]) -> Option<String> {
    ["subject", "patient", "beneficiary"].iter().find_map(|field| {
        let reference = item.resource[*field]["reference"].as_str()?;
        if let Some(query) = reference.strip_prefix("Patient?identifier=") {
            return (!query.contains('&')).then(|| query.to_owned());
        }
        let position = index.resolve(reference, item)?;
        if items[position].resource_type() != "Patient" {
            return None;
        }
        match keys[position].as_ref()? {
            Key::Ensure(condition) | Key::Upsert { condition, .. } => condition.strip_prefix("identifier=").map(str::to_owned),
            Key::Id(_) => None,
        }
    })
}

/// The sender's id and version mean nothing here; the Bundle's labels apply to every resource.
fn prepare(resource: &mut Value, labels: &[Value]) {
    if let Some(object) = resource.as_object_mut() {
        object.remove("id");
        if let Some(Value::Object(meta)) = object.get_mut("meta") {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
    }
    for label in labels {
        let security = &resource["meta"]["security"];
        let present =
            security.as_array().into_iter().flatten().any(|held| held["system"] == label["system"] && held["code"] == label["code"]);
        if !present {
            if resource["meta"].is_null() {
                resource["meta"] = Value::Object(Map::new());
            }
            push(&mut resource["meta"], "security", label.clone());
        }
    }
}

fn push(object: &mut Value, field: &str, value: Value) {
    match object[field].as_array_mut() {
        Some(values) => values.push(value),
        None => object[field] = json!([value]),
    }
}

/// Point every reference at its entry's placeholder; refuse one that names a record of the
/// sender's that is not in the Bundle.
fn rewrite_references(value: &mut Value, path: &str, from: &Item, index: &Index<'_>, placeholders: &[String]) -> Result<(), DocumentError> {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("reference") {
                let reference = reference.clone();
                if let Some(rewritten) = rewrite(&reference, object, &format!("{path}.reference"), from, index, placeholders)? {
                    object.insert("reference".into(), Value::String(rewritten));
                }
            }
            for (name, child) in object.iter_mut() {
                if name != "reference" {
                    rewrite_references(child, &format!("{path}.{name}"), from, index, placeholders)?;
                }
            }
        }
        Value::Array(values) => {
            for (position, child) in values.iter_mut().enumerate() {
                rewrite_references(child, &format!("{path}[{position}]"), from, index, placeholders)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn rewrite(
    reference: &str,
    object: &Map<String, Value>,
    path: &str,
    from: &Item,
    index: &Index<'_>,
    placeholders: &[String],
) -> Result<Option<String>, DocumentError> {
    if reference.starts_with('#') || reference.contains('?') {
        return Ok(None);
    }
    if let Some(position) = index.resolve(reference, from) {
        return Ok(Some(placeholders[position].clone()));
    }
    if reference.starts_with("urn:") {
        return Err(fail(path, format!("{reference} names no entry of this Bundle")));
    }
    if reference.starts_with("http://") || reference.starts_with("https://") {
        // A record on another server, named absolutely: it stays where it is.
        return Ok(None);
    }
    let Some((resource_type, _)) = relative(reference) else {
        return Err(fail(path, format!("{reference:?} is not a reference this gateway can follow")));
    };
    let identifier = &object.get("identifier").cloned().unwrap_or_default();
    match (identifier["system"].as_str(), identifier["value"].as_str()) {
        (Some(system), Some(value)) => {
            Ok(Some(format!("{resource_type}?identifier={}|{}", query_value(&escape_search(system)), query_value(&escape_search(value)))))
        }
        _ => Err(fail(
            path,
            format!(
                "{reference} is not in this Bundle, and the sender's ids mean nothing here: include the record, or refer to it by identifier ({resource_type}?identifier=system|value) or by absolute URL"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: &str = "2026-12-08T09:00:00Z";

    fn translated(input: &Value) -> Translated {
        translate(&serde_json::to_vec(input).unwrap(), RECEIVED).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refusal(input: &Value) -> DocumentError {
        translate(&serde_json::to_vec(input).unwrap(), RECEIVED).expect_err("refused")
    }

    fn entries(bundle: &Value) -> &[Value] {
        bundle["entry"].as_array().unwrap()
    }

    /// Every `reference` anywhere in a value.
    fn references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(reference)) = object.get("reference") {
                    out.push(reference.clone());
                }
                object.values().for_each(|child| references(child, out));
            }
            Value::Array(values) => values.iter().for_each(|child| references(child, out)),
            _ => {}
        }
    }

    #[test]
    fn a_synthea_transaction_is_keyed_for_re_sending_and_its_links_point_inside() {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/synthea/Bob965_Keeling57_3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b.json");
        let bytes = std::fs::read(path).unwrap();
        let input: Value = serde_json::from_slice(&bytes).unwrap();
        let first = translate(&bytes, RECEIVED).unwrap();
        assert_eq!(translate(&bytes, RECEIVED).unwrap().bundle, first.bundle, "translating twice gives the same Bundle");
        let output = entries(&first.bundle);
        assert_eq!(output.len(), entries(&input).len() + 1, "every resource, and the Provenance of the filing");

        let placeholders: Vec<&str> = output.iter().filter_map(|e| e["fullUrl"].as_str()).collect();
        let mut all = Vec::new();
        references(&first.bundle, &mut all);
        for reference in &all {
            assert!(
                placeholders.contains(&reference.as_str()) || reference.contains('?') || reference.starts_with('#'),
                "{reference} is a placeholder of this Bundle, a conditional or a contained reference"
            );
        }
        let source_urls: Vec<&str> = entries(&input).iter().filter_map(|e| e["fullUrl"].as_str()).collect();
        assert!(placeholders.iter().all(|p| !source_urls.contains(p)), "the sender's urn:uuids are not reused as placeholders");

        let patient = &output[0];
        assert_eq!(patient["request"]["method"], "PUT");
        let patient_key = "identifier=https://github.com/synthetichealth/synthea|3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b";
        assert_eq!(patient["request"]["url"], format!("Patient?{patient_key}"));
        assert!(patient["resource"].get("id").is_none());
        for entry in &output[1..output.len() - 1] {
            let url = entry["request"]["url"].as_str().unwrap();
            let kind = entry["resource"]["resourceType"].as_str().unwrap();
            if kind == "Provenance" {
                assert!(url.starts_with("Provenance/fhir-"), "{url}");
                continue;
            }
            assert_eq!(entry["request"]["method"], "PUT", "{url}");
            assert!(
                url.ends_with("&patient.identifier=https://github.com/synthetichealth/synthea|3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b"),
                "{url}: keyed within the patient's records"
            );
        }
        let observation = output.iter().find(|e| e["resource"]["resourceType"] == "Observation").unwrap();
        let kept = &observation["resource"]["identifier"][0];
        assert_eq!(kept["system"], URI);
        assert!(kept["value"].as_str().unwrap().starts_with("urn:uuid:"), "an Observation without identifiers is keyed on its fullUrl");
        let provenance = output.last().unwrap();
        assert_eq!(provenance["request"]["url"], format!("Provenance/{}", first.provenance_id));
        assert_eq!(provenance["resource"]["recorded"], RECEIVED, "a transaction carries no timestamp of its own");
        assert_eq!(provenance["resource"]["target"].as_array().unwrap().len(), output.len() - 1);
        assert_eq!(first.organisation, None, "Synthea names no organisation by ODS code");
    }

    fn uk_collection() -> Value {
        json!({
            "resourceType": "Bundle",
            "type": "document",
            "identifier": {"system": "https://trust.example/documents", "value": "D-1"},
            "timestamp": "2026-11-30T10:15:00+00:00",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
            "entry": [
                {"fullUrl": "https://trust.example/fhir/Composition/c1", "resource": {
                    "resourceType": "Composition", "id": "c1", "status": "final",
                    "identifier": {"system": "https://trust.example/documents", "value": "D-1"},
                    "type": {"coding": [{"system": "http://snomed.info/sct", "code": "373942005"}]},
                    "subject": {"reference": "Patient/p1"}, "date": "2026-11-30", "title": "Discharge summary",
                    "author": [{"reference": "Organization/o1"}], "custodian": {"reference": "Organization/o1"},
                    "section": [{"title": "Diagnoses", "entry": [{"reference": "Condition/x1"}]}]}},
                {"fullUrl": "https://trust.example/fhir/Patient/p1", "resource": {
                    "resourceType": "Patient", "id": "p1", "meta": {"versionId": "7"},
                    "identifier": [{"system": "https://trust.example/mrn", "value": "M1"}, {"system": NHS_NUMBER, "value": "9449305552"}]}},
                {"fullUrl": "https://trust.example/fhir/Organization/o1", "resource": {
                    "resourceType": "Organization", "id": "o1", "identifier": [{"system": ODS_ORGANIZATION_CODE, "value": "RRK"}]}},
                {"fullUrl": "https://trust.example/fhir/Condition/x1", "resource": {
                    "resourceType": "Condition", "id": "x1", "identifier": [{"system": "https://trust.example/dx", "value": "X|1"}],
                    "subject": {"reference": "https://trust.example/fhir/Patient/p1/_history/7"},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "86406008"}]},
                    "recorder": {"reference": "Practitioner/dr9", "identifier": {"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C1234567"}}}},
            ]
        })
    }

    #[test]
    fn a_uk_document_is_keyed_on_nhs_number_and_published_by_its_custodian() {
        let first = translated(&uk_collection());
        let output = entries(&first.bundle);
        assert_eq!(first.organisation.as_deref(), Some("RRK"), "the Composition's custodian, found through its reference");
        assert_eq!(first.document, "Bundle https://trust.example/documents|D-1");
        let patient = output.iter().find(|e| e["resource"]["resourceType"] == "Patient").unwrap();
        assert_eq!(
            patient["request"],
            json!({"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier={NHS_NUMBER}|9449305552")})
        );
        assert!(patient["resource"]["meta"].get("versionId").is_none(), "the sender's version is not ours");
        let condition = output.iter().find(|e| e["resource"]["resourceType"] == "Condition").unwrap();
        assert_eq!(
            condition["request"]["url"],
            format!("Condition?identifier=https://trust.example/dx|X\\|1&patient.identifier={NHS_NUMBER}|9449305552"),
            "the identifier's | is escaped for search, and the key is the patient's"
        );
        assert_eq!(condition["resource"]["subject"]["reference"], patient["fullUrl"], "an absolute reference with a version resolves");
        assert_eq!(
            condition["resource"]["recorder"]["reference"], "Practitioner?identifier=https://fhir.hl7.org.uk/Id/gmc-number|C1234567",
            "a reference out of the Bundle with an identifier becomes conditional"
        );
        let composition = output.iter().find(|e| e["resource"]["resourceType"] == "Composition").unwrap();
        assert_eq!(composition["resource"]["section"][0]["entry"][0]["reference"], condition["fullUrl"]);
        assert_eq!(
            (&composition["request"]["url"], &composition["resource"]["identifier"]),
            (
                &json!(format!("Composition?identifier=https://trust.example/documents|D-1&patient.identifier={NHS_NUMBER}|9449305552")),
                &json!({"system": "https://trust.example/documents", "value": "D-1"})
            ),
            "a Composition's one identifier is its key, and stays one"
        );
        for entry in output {
            let security = entry["resource"]["meta"]["security"].as_array().unwrap();
            assert!(security.iter().any(|label| label["code"] == "R"), "the Bundle's label is on every resource: {entry}");
        }
        assert_eq!(output.last().unwrap()["resource"]["recorded"], "2026-11-30T10:15:00+00:00");
        assert!(first.source_codings.iter().any(|(_, code)| code == "86406008"), "the document is labelled by what its entries say");

        // A document gets the DocumentReference GP systems find it by, pointing at the Composition
        // (not carrying the Bundle as sent, whose unnamed entries no rule would check).
        let reference = output.iter().find(|e| e["resource"]["resourceType"] == "DocumentReference").expect("a DocumentReference");
        assert_eq!(
            reference["request"]["url"],
            format!("DocumentReference?identifier=https://trust.example/documents|D-1&patient.identifier={NHS_NUMBER}|9449305552")
        );
        let resource = &reference["resource"];
        assert_eq!(resource["context"]["related"][0]["reference"], composition["fullUrl"]);
        assert_eq!(resource["subject"]["reference"], patient["fullUrl"]);
        assert_eq!(resource["type"]["coding"][0]["code"], "373942005");
        assert_eq!(
            (&resource["status"], &resource["docStatus"], &resource["date"]),
            (&json!("current"), &json!("final"), &json!("2026-11-30T10:15:00+00:00"))
        );
        let attachment = &resource["content"][0]["attachment"];
        assert_eq!(attachment, &json!({"contentType": "application/fhir+json", "title": "Discharge summary", "creation": "2026-11-30"}));
        // Not for other Bundles, nor when the document brings its own.
        let mut collection = uk_collection();
        collection["type"] = json!("collection");
        assert!(!entries(&translated(&collection).bundle).iter().any(|e| e["resource"]["resourceType"] == "DocumentReference"));
        let mut own = uk_collection();
        own["entry"].as_array_mut().unwrap().push(json!({"fullUrl": "https://trust.example/fhir/DocumentReference/r1", "resource": {
            "resourceType": "DocumentReference", "identifier": [{"system": "https://trust.example/refs", "value": "R1"}], "status": "current",
            "subject": {"reference": "Patient/p1"}, "content": [{"attachment": {"url": "https://trust.example/d/1"}}]}}));
        let references = entries(&translated(&own).bundle).iter().filter(|e| e["resource"]["resourceType"] == "DocumentReference").count();
        assert_eq!(references, 1);
    }

    #[test]
    fn what_cannot_be_filed_safely_is_refused_naming_where() {
        let mut outside = uk_collection();
        outside["entry"][3]["resource"]["recorder"] = json!({"reference": "Practitioner/dr9"});
        let error = refusal(&outside);
        assert_eq!(error.location, "Bundle.entry[3].resource.recorder.reference");
        assert!(error.reason.contains("not in this Bundle"), "{error}");

        let mut dangling = uk_collection();
        dangling["entry"][3]["resource"]["subject"] = json!({"reference": "urn:uuid:0b1c1ac0-0000-4000-8000-000000000000"});
        assert_eq!(refusal(&dangling).location, "Bundle.entry[3].resource.subject.reference");

        let mut unkeyed = uk_collection();
        unkeyed["entry"][3] = json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}});
        let error = refusal(&unkeyed);
        assert_eq!(error.location, "Bundle.entry[3]");
        assert!(error.reason.contains("neither an identifier nor a fullUrl"), "{error}");

        let mut read = uk_collection();
        read["type"] = json!("transaction");
        read["entry"][2]["request"] = json!({"method": "GET", "url": "Organization/o1"});
        assert_eq!(refusal(&read).location, "Bundle.entry[2].request.method");

        let mut by_id = uk_collection();
        by_id["entry"][2] = json!({"request": {"method": "DELETE", "url": "Condition/x1"}});
        let error = refusal(&by_id);
        assert_eq!(error.location, "Bundle.entry[2].request.url");

        let mut history = uk_collection();
        history["type"] = json!("history");
        assert_eq!(refusal(&history).location, "Bundle.type");

        assert_eq!(translate(b"{not json", RECEIVED).unwrap_err().location, "(input)");
        assert_eq!(translate(b"{\"id\": \"x\"}", RECEIVED).unwrap_err().location, "resourceType");
        assert_eq!(translate(b"{\"resourceType\": \"Patiant\"}", RECEIVED).unwrap_err().location, "resourceType");
    }

    #[test]
    fn deletes_by_identifier_and_lone_resources_are_filed() {
        let mut bundle = uk_collection();
        bundle["type"] = json!("transaction");
        bundle["entry"]
            .as_array_mut()
            .unwrap()
            .push(json!({"request": {"method": "DELETE", "url": "Condition?identifier=https://trust.example/dx|X2"}}));
        let output = translated(&bundle).bundle;
        let last_but_one = &entries(&output)[entries(&output).len() - 2];
        assert_eq!(last_but_one["request"], json!({"method": "DELETE", "url": "Condition?identifier=https://trust.example/dx|X2"}));

        let lone = json!({"resourceType": "AllergyIntolerance", "identifier": [{"system": "s", "value": "a1"}], "patient": {"reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552"}});
        let output = translated(&lone);
        assert_eq!(output.document.split_once(' ').unwrap().0, "AllergyIntolerance");
        assert_eq!(
            entries(&output.bundle)[0]["request"]["url"],
            "AllergyIntolerance?identifier=s|a1&patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552",
            "a conditional reference to the patient scopes the key too"
        );
    }
}
