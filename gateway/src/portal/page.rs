//! The portal's HTML: plain server-rendered pages, no script. Every piece of text that came
//! from a record or a request goes through [`escape`]; the one stylesheet is inline and allowed
//! by its hash in the Content-Security-Policy, so the policy needs no `unsafe-inline`.

use std::fmt::Write;

use serde_json::Value;

const STYLE: &str = "body{font-family:Arial,sans-serif;margin:0;color:#212b32;background:#f0f4f5}\
header{background:#005eb8;color:#fff;padding:12px 24px}header p{margin:0;font-weight:bold}\
main{max-width:960px;margin:0 auto;padding:16px 24px}\
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:16px}\
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #d8dde0;vertical-align:top}\
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px;background:#fff;padding:12px}dt{font-weight:bold}dd{margin:0}\
.button,button{display:inline-block;background:#007f3b;color:#fff;border:0;padding:10px 16px;font-size:1em;text-decoration:none;cursor:pointer}\
.notice{background:#fff9c4;border-left:4px solid #ffeb3b;padding:8px 12px}.error{background:#fde8e8;border-left:4px solid #d5281b;padding:8px 12px}";

/// `Content-Security-Policy` for every portal page: nothing but this one stylesheet, forms
/// posting back here, never framed.
pub fn content_security_policy() -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    format!("default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

/// HTML-escape text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (already HTML).
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} – HIE Gateway</title><style>{STYLE}</style></head><body><header><p>HIE Gateway · your shared care record</p></header><main>{body}</main></body></html>",
        escape(title)
    )
}

/// The page of someone not signed in, with an optional notice (signed out, session ended).
pub fn sign_in(notice: Option<&str>) -> String {
    let notice = notice.map(|text| format!("<p class=\"notice\" id=\"notice\">{}</p>", escape(text))).unwrap_or_default();
    document(
        "Sign in",
        &format!(
            "<h1>Your shared care record</h1>{notice}<p>See what hospitals and your GP practice share about your care. \
You sign in with your NHS login-style account; you need identity checked to the highest level (P9).</p>\
<p><a class=\"button\" id=\"sign-in\" href=\"/portal/login\">Sign in</a></p>"
        ),
    )
}

/// A refusal or failure, said plainly, with the way back.
pub fn problem(title: &str, message: &str) -> String {
    document(
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" id=\"problem\">{}</p><p><a href=\"/portal/\">Back to the start</a></p>",
            escape(title),
            escape(message)
        ),
    )
}

/// One section of the record: the resource type, its heading, and the resources found.
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub resources: Vec<Value>,
}

/// What the record page shows beyond the record: who looked at it, and the patient's sharing
/// choices (with the forms to change them when their sign-in allows it).
#[derive(Default)]
pub struct Governance {
    /// AuditEvents about the patient, newest first, as `audit::for_patient` shows them.
    pub access: Vec<Value>,
    /// The patient's active patient-privacy Consents.
    pub wishes: Vec<Value>,
    pub can_change_wishes: bool,
}

/// The signed-in record page: who, then each section, then who looked and the sharing choices,
/// then sign-out.
pub fn record(patients: &[Value], sections: &[Section], governance: &Governance, csrf: &str, notice: Option<&str>) -> String {
    let mut body = String::from("<h1>Your shared care record</h1>");
    if let Some(notice) = notice {
        let _ = write!(body, "<p class=\"error\" id=\"notice\">{}</p>", escape(notice));
    }
    match patients.first() {
        Some(patient) => {
            body.push_str("<dl id=\"patient\">");
            let mut row = |label: &str, value: Option<String>| {
                if let Some(value) = value {
                    let _ = write!(body, "<dt>{label}</dt><dd>{}</dd>", escape(&value));
                }
            };
            row("Name", human_name(patient));
            row("NHS number", nhs_number(patient));
            row("Date of birth", patient["birthDate"].as_str().map(str::to_owned));
            row("GP practice", patient["generalPractitioner"].as_array().and_then(|gps| gps.iter().find_map(|gp| text(&gp["display"]))));
            body.push_str("</dl>");
        }
        None => body.push_str("<p class=\"notice\" id=\"no-record\">No record shared with this service carries your NHS number yet.</p>"),
    }
    for section in sections {
        let _ = write!(body, "<section id=\"{}\"><h2>{}</h2>", section.id, escape(section.title));
        if section.resources.is_empty() {
            body.push_str("<p>Nothing shared.</p></section>");
            continue;
        }
        body.push_str("<table><thead><tr><th>Date</th><th>What</th><th>Details</th></tr></thead><tbody>");
        for resource in &section.resources {
            let (what, details) = describe(resource);
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&date_of(resource).unwrap_or_default()),
                escape(&what),
                escape(&details)
            );
        }
        body.push_str("</tbody></table></section>");
    }
    if !patients.is_empty() {
        sharing(&mut body, governance, csrf);
        access_log(&mut body, &governance.access);
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/portal/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
        escape(csrf)
    );
    document("Your record", &body)
}

/// The patient's sharing choices, each with a withdraw button, and the form to add one.
fn sharing(body: &mut String, governance: &Governance, csrf: &str) {
    body.push_str("<section id=\"sharing\"><h2>Who your record is shared with</h2>");
    if governance.wishes.is_empty() {
        body.push_str("<p id=\"no-wishes\">Your record is shared with the organisations caring for you (your GP practice, and hospitals and services you are referred to or treated by).</p>");
    } else {
        body.push_str("<table><thead><tr><th>Your choice</th><th>Since</th><th></th></tr></thead><tbody>");
        for wish in &governance.wishes {
            let withdraw = match (governance.can_change_wishes, wish["id"].as_str()) {
                (true, Some(id)) => format!(
                    "<form method=\"post\" action=\"/portal/sharing/withdraw\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"consent\" value=\"{}\"><button type=\"submit\" class=\"withdraw\">Withdraw</button></form>",
                    escape(csrf),
                    escape(id)
                ),
                _ => String::new(),
            };
            let _ = write!(
                body,
                "<tr class=\"wish\"><td>{}</td><td>{}</td><td>{withdraw}</td></tr>",
                escape(&describe_wish(wish)),
                escape(&text(&wish["dateTime"]).or_else(|| text(&wish["meta"]["lastUpdated"])).unwrap_or_default())
            );
        }
        body.push_str("</tbody></table>");
    }
    if governance.can_change_wishes {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/portal/sharing\" id=\"add-wish\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<p><label for=\"wish\">Change who sees your record</label><br><select name=\"wish\" id=\"wish\">\
<option value=\"not-with\">Do not share with this organisation</option>\
<option value=\"only-with\">Share only with this organisation</option>\
<option value=\"not-from\">Do not share what this organisation recorded</option>\
<option value=\"nothing\">Share nothing beyond the organisation that recorded it</option>\
<option value=\"keep-back\">Keep this kind of record back</option></select></p>\
<p><label for=\"organisation\">Organisation code (ODS), for the first three</label><br><input name=\"organisation\" id=\"organisation\" maxlength=\"10\"></p>\
<p><label for=\"kind\">Kind of record, for the last</label><br><select name=\"kind\" id=\"kind\">{}</select></p>\
<p><button type=\"submit\" id=\"save-wish\">Save this choice</button></p></form>",
            escape(csrf),
            KINDS.iter().map(|(key, words, _)| format!("<option value=\"{key}\">{}</option>", escape(words))).collect::<String>()
        );
    } else {
        body.push_str(
            "<p class=\"notice\">To change who sees your record, sign in again allowing this service to manage your sharing choices.</p>",
        );
    }
    body.push_str("</section>");
}

/// The kinds of record a patient may keep back: the form's value, the words, and every resource
/// type that holds that kind.
pub const KINDS: [(&str, &str, &[&str]); 6] = [
    ("medicines", "Medicines", &["MedicationStatement", "MedicationRequest", "MedicationDispense", "MedicationAdministration"]),
    ("conditions", "Conditions and diagnoses", &["Condition"]),
    ("results", "Test results and measurements", &["Observation", "DiagnosticReport"]),
    ("allergies", "Allergies", &["AllergyIntolerance"]),
    ("vaccinations", "Vaccinations", &["Immunization"]),
    ("documents", "Letters and documents", &["DocumentReference", "Composition"]),
];

/// A sharing choice in words, read from its Consent's shape.
pub fn describe_wish(consent: &Value) -> String {
    let provision = &consent["provision"];
    let nested = provision["provision"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let organisation = |provision: &Value| {
        provision["actor"][0]["reference"]["identifier"]["value"].as_str().map(str::to_owned).unwrap_or_else(|| "an organisation".into())
    };
    let role = |provision: &Value| provision["actor"][0]["role"]["coding"][0]["code"].as_str().map(str::to_owned);
    let kind = |provision: &Value| {
        let code = provision["class"][0]["code"].as_str().unwrap_or_default();
        KINDS.iter().find(|(_, _, types)| types.contains(&code)).map_or_else(|| code.to_owned(), |(_, words, _)| (*words).to_owned())
    };
    // The opt-outs from secondary use (docs/information-governance.md): a deny for purposes.
    let for_purposes = |provision: &Value| provision["purpose"].as_array().is_some_and(|purposes| !purposes.is_empty());
    if for_purposes(provision) {
        return match provision.get("actor") {
            Some(_) => format!("Do not use what {} recorded for research or planning (Type 1 opt-out)", organisation(provision)),
            None => "Do not use my record for research or planning (National Data Opt-out)".to_owned(),
        };
    }
    match (provision["type"].as_str(), nested) {
        (Some("permit"), [deny]) if for_purposes(deny) => {
            let mut for_care = consent.clone();
            for_care["provision"]["provision"][0].as_object_mut().map(|deny| deny.remove("purpose"));
            format!("For research or planning: {}", describe_wish(&for_care))
        }
        (Some("permit"), [deny]) if deny.get("class").is_some() => format!("Keep back: {}", kind(deny)),
        (Some("permit"), [deny]) if role(deny).as_deref() == Some("AUT") => format!("Do not share what {} recorded", organisation(deny)),
        (Some("permit"), [deny]) => format!("Do not share with {}", organisation(deny)),
        (_, []) => "Share nothing beyond the organisation that recorded it".to_owned(),
        (_, [permit]) => format!("Share only with {}", organisation(permit)),
        _ => "A sharing choice recorded for you".to_owned(),
    }
}

/// "Who has looked at your record": when, who, which organisation, why, and the outcome.
fn access_log(body: &mut String, events: &[Value]) {
    body.push_str("<section id=\"access-log\"><h2>Who has looked at your record</h2>");
    if events.is_empty() {
        body.push_str("<p>No one has looked at your record through this service yet.</p></section>");
        return;
    }
    body.push_str("<table><thead><tr><th>When</th><th>Who</th><th>Organisation</th><th>Why</th><th>What happened</th></tr></thead><tbody>");
    for event in events {
        let agents = event["agent"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let who = agents.first().map(|agent| {
            let kind = agent["who"]["identifier"]["system"].as_str().and_then(|system| system.rsplit('/').next()).unwrap_or("someone");
            let role = agent["role"][0]["coding"][0]["code"].as_str().map(|role| format!(" ({role})")).unwrap_or_default();
            format!("{kind}{role}")
        });
        let organisation = agents
            .iter()
            .find(|agent| agent["type"]["coding"][0]["code"] == "110153")
            .and_then(|agent| text(&agent["who"]["identifier"]["value"]));
        let purpose = event["purposeOfEvent"][0]["coding"][0]["code"].as_str().map(|code| match code {
            "TREAT" => "Your care".to_owned(),
            "ETREAT" | "BTG" => "Emergency care".to_owned(),
            other => other.to_owned(),
        });
        let reason = text(&event["purposeOfEvent"][0]["text"]).map(|reason| format!(": {reason}")).unwrap_or_default();
        let flagged = event["meta"]["tag"].as_array().is_some_and(|tags| !tags.is_empty());
        let outcome = if event["outcome"] == "0" { "Shown" } else { "Refused or failed" };
        let _ = write!(
            body,
            "<tr class=\"access{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            if flagged { " flagged" } else { "" },
            escape(&text(&event["recorded"]).unwrap_or_default()),
            escape(&who.unwrap_or_default()),
            escape(&organisation.unwrap_or_default()),
            escape(&purpose.unwrap_or_default()),
            escape(&reason),
            escape(outcome)
        );
    }
    body.push_str("</tbody></table></section>");
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::trim).filter(|text| !text.is_empty()).map(str::to_owned)
}

fn human_name(patient: &Value) -> Option<String> {
    let names = patient["name"].as_array()?;
    let name = names.iter().find(|name| name["use"] == "official").or_else(|| names.first())?;
    if let Some(text) = text(&name["text"]) {
        return Some(text);
    }
    let given = name["given"].as_array().map(|given| given.iter().filter_map(text).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    let whole = format!("{given} {}", text(&name["family"]).unwrap_or_default());
    text(&Value::String(whole))
}

/// The NHS number as people see it on letters: `944 930 5552`.
fn nhs_number(patient: &Value) -> Option<String> {
    let number = patient["identifier"]
        .as_array()?
        .iter()
        .find(|identifier| identifier["system"] == fhir_models::system::NHS_NUMBER)
        .and_then(|identifier| identifier["value"].as_str())?;
    Some(match number.len() {
        10 => format!("{} {} {}", &number[..3], &number[3..6], &number[6..]),
        _ => number.to_owned(),
    })
}

/// A CodeableConcept's words: its text, else a coding's display, else a code.
fn concept(value: &Value) -> Option<String> {
    text(&value["text"]).or_else(|| {
        let codings = value["coding"].as_array()?;
        codings.iter().find_map(|coding| text(&coding["display"])).or_else(|| codings.iter().find_map(|coding| text(&coding["code"])))
    })
}

fn date_of(resource: &Value) -> Option<String> {
    const FIELDS: [&str; 12] = [
        "effectiveDateTime",
        "occurrenceDateTime",
        "onsetDateTime",
        "recordedDate",
        "authoredOn",
        "dateAsserted",
        "issued",
        "date",
        "effectivePeriod",
        "period",
        "performedDateTime",
        "performedPeriod",
    ];
    FIELDS.iter().find_map(|field| {
        let value = &resource[*field];
        text(value).or_else(|| text(&value["start"]))
    })
}

fn quantity(value: &Value) -> Option<String> {
    let number = value["value"].as_f64().map(|n| n.to_string()).or_else(|| value["value"].as_i64().map(|n| n.to_string()))?;
    let unit = text(&value["unit"]).or_else(|| text(&value["code"])).unwrap_or_default();
    let comparator = text(&value["comparator"]).unwrap_or_default();
    Some(format!("{comparator}{number} {unit}").trim().to_owned())
}

/// What a resource is and what it says, in words for its section.
fn describe(resource: &Value) -> (String, String) {
    let status = text(&resource["status"]);
    let (what, details) = match resource["resourceType"].as_str().unwrap_or_default() {
        "Observation" => (
            concept(&resource["code"]),
            quantity(&resource["valueQuantity"])
                .or_else(|| concept(&resource["valueCodeableConcept"]))
                .or_else(|| text(&resource["valueString"]))
                .or_else(|| concept(&resource["interpretation"][0])),
        ),
        "Encounter" => (
            concept(&resource["type"][0]).or_else(|| text(&resource["class"]["display"])).or_else(|| text(&resource["class"]["code"])),
            resource["serviceProvider"]["display"].as_str().map(str::to_owned).or(status),
        ),
        "Condition" => (concept(&resource["code"]), concept(&resource["clinicalStatus"])),
        "AllergyIntolerance" => (concept(&resource["code"]), concept(&resource["reaction"][0]["manifestation"][0])),
        "MedicationStatement" | "MedicationRequest" => (
            concept(&resource["medicationCodeableConcept"]).or_else(|| text(&resource["medicationReference"]["display"])),
            text(&resource["dosage"][0]["text"]).or_else(|| text(&resource["dosageInstruction"][0]["text"])).or(status),
        ),
        "Immunization" => (concept(&resource["vaccineCode"]), status),
        "DiagnosticReport" => (concept(&resource["code"]), text(&resource["conclusion"]).or(status)),
        "DocumentReference" => (concept(&resource["type"]), text(&resource["description"]).or(status)),
        _ => (None, status),
    };
    (what.unwrap_or_else(|| "(not described)".into()), details.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn record_text_is_escaped_everywhere_it_appears() {
        let patient = json!({"resourceType": "Patient", "name": [{"text": "<script>alert(1)</script>"}],
            "identifier": [{"system": fhir_models::system::NHS_NUMBER, "value": "9449305552"}]});
        let observation = json!({"resourceType": "Observation", "code": {"text": "\"><img src=x onerror=alert(1)>"},
            "effectiveDateTime": "2024-01-02", "valueString": "a & b"});
        let governance = Governance {
            access: vec![json!({"recorded": "2026-01-01T00:00:00Z", "outcome": "0",
                "agent": [{"who": {"identifier": {"system": "https://x/clinician", "value": "<b>dr</b>"}}, "role": [{"coding": [{"code": "R8000"}]}]},
                          {"type": {"coding": [{"code": "110153"}]}, "who": {"identifier": {"value": "A81001"}}}],
                "purposeOfEvent": [{"coding": [{"code": "ETREAT"}], "text": "<script>x</script>"}],
                "meta": {"tag": [{"code": "emergency-access"}]}})],
            wishes: vec![json!({"id": "c\"1", "provision": {"type": "deny"}})],
            can_change_wishes: true,
        };
        let page = record(
            &[patient],
            &[Section { id: "Observation", title: "Test results", resources: vec![observation] }],
            &governance,
            "tok\"en",
            None,
        );
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("944 930 5552"));
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("value=\"tok&quot;en\""));
        assert!(page.contains("Emergency care: &lt;script&gt;x&lt;/script&gt;"), "{page}");
        assert!(page.contains("class=\"access flagged\""));
        assert!(page.contains("Share nothing beyond the organisation that recorded it"));
        assert!(page.contains("value=\"c&quot;1\""));
    }

    #[test]
    fn sharing_choices_are_described_in_words() {
        let actor = |role: &str| json!([{"role": {"coding": [{"code": role}]}, "reference": {"identifier": {"value": "RXA"}}}]);
        let not_with = json!({"provision": {"type": "permit", "provision": [{"type": "deny", "actor": actor("IRCP")}]}});
        assert_eq!(describe_wish(&not_with), "Do not share with RXA");
        let not_from = json!({"provision": {"type": "permit", "provision": [{"type": "deny", "actor": actor("AUT")}]}});
        assert_eq!(describe_wish(&not_from), "Do not share what RXA recorded");
        let only = json!({"provision": {"type": "deny", "provision": [{"type": "permit", "actor": actor("IRCP")}]}});
        assert_eq!(describe_wish(&only), "Share only with RXA");
        let keep = json!({"provision": {"type": "permit", "provision": [{"type": "deny", "class": [{"code": "MedicationStatement"}]}]}});
        assert_eq!(describe_wish(&keep), "Keep back: Medicines");
        let reasons = json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]);
        let national = json!({"provision": {"type": "deny", "purpose": reasons}});
        assert_eq!(describe_wish(&national), "Do not use my record for research or planning (National Data Opt-out)");
        let mut type1 = national.clone();
        type1["provision"]["actor"] = not_from["provision"]["provision"][0]["actor"].clone();
        assert_eq!(describe_wish(&type1), "Do not use what RXA recorded for research or planning (Type 1 opt-out)");
        let mut not_from_for_research = not_from.clone();
        not_from_for_research["provision"]["provision"][0]["purpose"] = reasons;
        assert_eq!(describe_wish(&not_from_for_research), "For research or planning: Do not share what RXA recorded");
    }

    #[test]
    fn the_policy_allows_exactly_the_page_style() {
        let policy = content_security_policy();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!policy.contains("unsafe-inline"));
    }

    #[test]
    fn resources_are_described_in_words() {
        let observation = json!({"resourceType": "Observation", "code": {"coding": [{"code": "1234", "display": "Haemoglobin"}]},
            "valueQuantity": {"value": 131, "unit": "g/L"}, "effectiveDateTime": "2024-05-01T10:00:00Z"});
        assert_eq!(describe(&observation), ("Haemoglobin".into(), "131 g/L".into()));
        assert_eq!(date_of(&observation).as_deref(), Some("2024-05-01T10:00:00Z"));
        let encounter = json!({"resourceType": "Encounter", "class": {"code": "IMP", "display": "inpatient encounter"},
            "status": "finished", "period": {"start": "2024-04-01"}});
        assert_eq!(describe(&encounter), ("inpatient encounter".into(), "finished".into()));
        assert_eq!(date_of(&encounter).as_deref(), Some("2024-04-01"));
    }
}
