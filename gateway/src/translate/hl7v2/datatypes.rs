//! HL7 v2 data types into FHIR data types: DTM/TS, CX, XPN, XAD, XTN, CWE/CE, XCN, HD.
//!
//! Follows the HL7 v2-to-FHIR mapping tables (`mappings/datatypes`), with the NHS's usage on
//! top: an identifier with assigning authority `NHS` or type `NH` is an NHS number.

use std::borrow::Cow;

use fhir_models::NhsNumber;
use fhir_models::system;
use serde_json::{Map, Value, json};
use time::{Date, Month, Time, Weekday};

use super::error::{ErrorCode, Hl7Error, Location};
use super::message::Repetition;
use crate::translate::transaction::escape_search;

/// A v2 time stamp as a FHIR `date` or `dateTime`, keeping its precision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// `2024`, `2024-03`, `2024-03-05` or `2024-03-05T10:30:00+00:00`.
    pub text: String,
    pub has_time: bool,
}

impl Timestamp {
    /// The date part alone (a FHIR `date`).
    pub fn date(&self) -> &str {
        self.text.split('T').next().unwrap_or(&self.text)
    }

    /// A FHIR `instant` needs the time; a date alone is not one.
    pub fn instant(&self) -> Option<&str> {
        self.has_time.then_some(self.text.as_str())
    }
}

/// Parse `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`. A time without an offset is local time in
/// England (GMT, or BST between the last Sundays of March and October), which is what UK
/// trusts' feeds send.
pub fn timestamp(text: &str, location: &Location) -> Result<Timestamp, Hl7Error> {
    parse_timestamp(text).map_err(|reason| Hl7Error::new(ErrorCode::DataType, location.clone(), reason))
}

/// [`timestamp`] for any HL7 format (a v2 DTM, a v3/CDA TS): the error says what is wrong.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    let invalid = |why: &str| format!("{text:?} is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ]): {why}");
    let (body, offset) = match text.find(['+', '-']) {
        Some(at) => (&text[..at], Some(&text[at..])),
        None => (text, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((digits, fraction)) => (digits, Some(fraction)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(invalid("wrong number of digits"));
    }
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 14) {
        return Err(invalid("a fraction of a second needs the seconds before it"));
    }
    let offset = match offset {
        Some(offset) => {
            let valid = offset.len() == 5 && offset[1..].bytes().all(|b| b.is_ascii_digit());
            let (hours, minutes) = (offset.get(1..3).unwrap_or(""), offset.get(3..5).unwrap_or(""));
            if !valid || hours > "14" || minutes > "59" || (hours == "14" && minutes != "00") {
                return Err(invalid("the time zone must be +ZZZZ or -ZZZZ"));
            }
            Some(format!("{}{hours}:{minutes}", &offset[..1]))
        }
        None => None,
    };
    let number = |from: usize, to: usize| digits[from..to].parse::<u16>().expect("digits checked");
    let year = number(0, 4) as i32;
    if year == 0 {
        return Err(invalid("year 0000"));
    }
    if digits.len() == 4 {
        return Ok(Timestamp { text: format!("{year:04}"), has_time: false });
    }
    let month = Month::try_from(number(4, 6) as u8).map_err(|_| invalid("month out of range"))?;
    if digits.len() == 6 {
        return Ok(Timestamp { text: format!("{year:04}-{:02}", month as u8), has_time: false });
    }
    let date = Date::from_calendar_date(year, month, number(6, 8) as u8).map_err(|_| invalid("no such day"))?;
    if digits.len() == 8 {
        return Ok(Timestamp { text: date.to_string(), has_time: false });
    }
    let hour = number(8, 10) as u8;
    let minute = if digits.len() >= 12 { number(10, 12) as u8 } else { 0 };
    let second = if digits.len() >= 14 { number(12, 14) as u8 } else { 0 };
    // 60 is a leap second, which FHIR allows too.
    if second > 60 {
        return Err(invalid("seconds out of range"));
    }
    let time = Time::from_hms(hour, minute, second.min(59)).map_err(|_| invalid("time out of range"))?;
    let offset = match offset {
        Some(offset) => offset,
        None if england_observes_summer_time(date, time) => "+01:00".to_owned(),
        None => "+00:00".to_owned(),
    };
    let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
    Ok(Timestamp { text: format!("{date}T{hour:02}:{minute:02}:{second:02}{fraction}{offset}"), has_time: true })
}

/// British Summer Time runs from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last
/// Sunday of October. Local times in the skipped hour count as summer time; in the repeated
/// hour, as the first (summer) occurrence.
pub(crate) fn england_observes_summer_time(date: Date, local: Time) -> bool {
    let last_sunday = |month: Month| {
        let mut day = Date::from_calendar_date(date.year(), month, 31).expect("March and October have 31 days");
        while day.weekday() != Weekday::Sunday {
            day = day.previous_day().expect("in range");
        }
        day
    };
    let (start, end) = (last_sunday(Month::March), last_sunday(Month::October));
    if date == start {
        return local.hour() >= 1;
    }
    if date == end {
        return local.hour() < 2;
    }
    date > start && date < end
}

/// HL7 table 0396 names to FHIR code-system URIs; other names are kept as local codes.
pub fn code_system(name: &str) -> Option<Cow<'static, str>> {
    let uri = match name.to_ascii_uppercase().as_str() {
        "LN" | "LOINC" => "http://loinc.org",
        "SCT" | "SNOMEDCT" | "SNOMED" | "SNM3" | "SCT2" => system::SNOMED_CT,
        "READ" | "RD2" | "READ2" | "READV2" => system::READ_V2,
        "CTV3" | "RD3" => system::CTV3,
        "I10" | "ICD10" | "I10C" => "http://hl7.org/fhir/sid/icd-10",
        "I10P" => "http://www.cms.gov/Medicare/Coding/ICD10",
        "I9C" | "I9CM" => "http://hl7.org/fhir/sid/icd-9-cm",
        "UCUM" | "ANS+" => "http://unitsofmeasure.org",
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "C4" | "CPT4" => "http://www.ama-assn.org/go/cpt",
        "OPCS4" | "OPCS" => "http://fhir.nhs.uk/CodeSystem/opcs-4",
        "DMD" => "https://dmd.nhs.uk",
        upper => {
            if let Some(table) = upper.strip_prefix("HL7").filter(|t| t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit())) {
                return Some(Cow::Owned(format!("http://terminology.hl7.org/CodeSystem/v2-{table}")));
            }
            return None;
        }
    };
    Some(Cow::Borrowed(uri))
}

/// CE / CWE / CNE into a CodeableConcept: the primary and alternate codings, and the text.
pub fn codeable_concept(value: &Repetition<'_>) -> Option<Value> {
    let mut codings = Vec::new();
    for (code, display, system_name) in [(1, 2, 3), (4, 5, 6)] {
        let Some(code) = value.component(code).text() else { continue };
        let mut coding = Map::new();
        if let Some(uri) = value.component(system_name).text().and_then(|name| code_system(&name)) {
            coding.insert("system".into(), Value::String(uri.into_owned()));
        }
        coding.insert("code".into(), Value::String(code.into_owned()));
        if let Some(display) = value.component(display).text() {
            coding.insert("display".into(), Value::String(display.into_owned()));
        }
        codings.push(Value::Object(coding));
    }
    let text = value.component(9).text().or_else(|| value.component(2).text());
    if codings.is_empty() && text.is_none() {
        return None;
    }
    let mut concept = Map::new();
    if !codings.is_empty() {
        concept.insert("coding".into(), Value::Array(codings));
    }
    if let Some(text) = text {
        concept.insert("text".into(), Value::String(text.into_owned()));
    }
    Some(Value::Object(concept))
}

/// A CX identifier. NHS numbers (authority `NHS` or type `NH`) must pass the Modulus 11 check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identifier {
    pub system: String,
    pub value: String,
    pub is_nhs_number: bool,
    pub type_code: Option<String>,
}

impl Identifier {
    /// `system|value`, escaped for a search parameter.
    pub fn search_token(&self) -> String {
        format!("{}|{}", escape_search(&self.system), escape_search(&self.value))
    }

    /// As [`Identifier::to_json`], typed with an HL7 table 0203 code (`FILL`, `PLAC`).
    pub fn typed(&self, code: &str) -> Value {
        let mut identifier = self.to_json();
        identifier["type"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]});
        identifier
    }

    pub fn to_json(&self) -> Value {
        let mut identifier = Map::new();
        if let Some(code) = &self.type_code
            && !self.is_nhs_number
        {
            identifier
                .insert("type".into(), json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}));
        }
        identifier.insert("system".into(), Value::String(self.system.clone()));
        identifier.insert("value".into(), Value::String(self.value.clone()));
        Value::Object(identifier)
    }
}

pub fn identifier(
    cx: &Repetition<'_>,
    default_authority: &str,
    default_kind: &str,
    location: &Location,
) -> Result<Option<Identifier>, Hl7Error> {
    let Some(value) = cx.component(1).text() else { return Ok(None) };
    let authority = cx.component(4);
    let type_code = cx.component(5).text().map(Cow::into_owned);
    let namespace = authority.sub(1).text();
    let is_nhs = type_code.as_deref() == Some("NH")
        || namespace.as_deref().is_some_and(|n| n.eq_ignore_ascii_case("NHS"))
        || authority.sub(2).text().as_deref() == Some("2.16.840.1.113883.2.1.4.1");
    if is_nhs {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let number = NhsNumber::parse(&compact).map_err(|error| {
            Hl7Error::new(ErrorCode::DataType, location.clone().component(1), format!("the NHS number {compact:?} is not valid: {error}"))
        })?;
        return Ok(Some(Identifier { system: system::NHS_NUMBER.to_owned(), value: number.as_string(), is_nhs_number: true, type_code }));
    }
    let system = match (authority.sub(2).text(), authority.sub(3).text()) {
        (Some(oid), Some(kind)) if kind.eq_ignore_ascii_case("ISO") => format!("urn:oid:{oid}"),
        (Some(uuid), Some(kind)) if kind.eq_ignore_ascii_case("UUID") => format!("urn:uuid:{uuid}"),
        (Some(uri), Some(kind)) if kind.eq_ignore_ascii_case("URI") => uri.into_owned(),
        _ => local_system(namespace.as_deref().unwrap_or(default_authority), type_code.as_deref().unwrap_or(default_kind)),
    };
    Ok(Some(Identifier { system, value: value.into_owned(), is_nhs_number: false, type_code }))
}

/// The identifier system for a sender's own numbers (hospital numbers, visit numbers) that
/// carry no OID: `urn:hie:<authority>:<kind>`, lower-cased, so the same sender's numbers land
/// in the same system every time.
pub fn local_system(authority: &str, kind: &str) -> String {
    format!("urn:hie:{}:{}", slug(authority), slug(kind))
}

fn slug(text: &str) -> String {
    let slug: String =
        text.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c.to_ascii_lowercase() } else { '-' }).collect();
    if slug.is_empty() { "unknown".to_owned() } else { slug }
}

/// XPN into a HumanName.
pub fn human_name(xpn: &Repetition<'_>) -> Option<Value> {
    let mut name = Map::new();
    let name_use = xpn.component(7).text().and_then(|code| match code.as_ref() {
        "L" => Some("official"),
        "D" => Some("usual"),
        "M" | "B" => Some("maiden"),
        "N" => Some("nickname"),
        "A" | "S" => Some("anonymous"),
        "T" => Some("temp"),
        "BAD" | "NOUSE" => Some("old"),
        _ => None,
    });
    if let Some(name_use) = name_use {
        name.insert("use".into(), json!(name_use));
    }
    if let Some(family) = xpn.component(1).text() {
        name.insert("family".into(), json!(family));
    }
    let given: Vec<Value> = [2, 3].iter().filter_map(|&n| xpn.component(n).text()).map(|g| json!(g)).collect();
    if !given.is_empty() {
        name.insert("given".into(), Value::Array(given));
    }
    if let Some(prefix) = xpn.component(5).text() {
        name.insert("prefix".into(), json!([prefix]));
    }
    if let Some(suffix) = xpn.component(4).text() {
        name.insert("suffix".into(), json!([suffix]));
    }
    (name.contains_key("family") || name.contains_key("given")).then_some(Value::Object(name))
}

/// XAD into an Address.
pub fn address(xad: &Repetition<'_>) -> Option<Value> {
    let mut address = Map::new();
    if let Some(address_use) = xad.component(7).text().and_then(|code| match code.as_ref() {
        "H" | "L" | "P" => Some("home"),
        "B" | "O" => Some("work"),
        "C" => Some("temp"),
        "BA" => Some("old"),
        _ => None,
    }) {
        address.insert("use".into(), json!(address_use));
    }
    let lines: Vec<Value> = [1, 2].iter().filter_map(|&n| xad.component(n).full_text()).map(|l| json!(l.replace('&', " "))).collect();
    if !lines.is_empty() {
        address.insert("line".into(), Value::Array(lines));
    }
    for (component, key) in [(3, "city"), (9, "district"), (4, "state"), (5, "postalCode"), (6, "country")] {
        if let Some(text) = xad.component(component).text() {
            address.insert(key.into(), json!(text));
        }
    }
    let only_use = address.keys().all(|key| key == "use");
    (!only_use).then_some(Value::Object(address))
}

/// XTN into a ContactPoint; `default_use` is `home` for PID-13, `work` for PID-14.
pub fn contact_point(xtn: &Repetition<'_>, default_use: &str) -> Option<Value> {
    let equipment = xtn.component(3).text();
    let email = xtn.component(4).text().filter(|_| matches!(equipment.as_deref(), Some("Internet" | "X.400")));
    let (system, value) = match (email, xtn.component(12).text(), xtn.component(1).text()) {
        (Some(email), _, _) => ("email", email.into_owned()),
        (None, Some(unformatted), _) => (phone_kind(equipment.as_deref()), unformatted.into_owned()),
        (None, None, Some(number)) => (phone_kind(equipment.as_deref()), number.into_owned()),
        (None, None, None) => {
            let parts: String = [5, 6, 7].iter().filter_map(|&n| xtn.component(n).text()).collect::<Vec<_>>().join(" ");
            if parts.is_empty() {
                return None;
            }
            (phone_kind(equipment.as_deref()), parts)
        }
    };
    let contact_use = match (xtn.component(2).text().as_deref(), equipment.as_deref()) {
        (_, Some("CP" | "BP")) => "mobile",
        (Some("WPN"), _) => "work",
        (Some("PRN" | "ORN" | "VHN"), _) => "home",
        _ => default_use,
    };
    Some(json!({"system": system, "value": value, "use": contact_use}))
}

fn phone_kind(equipment: Option<&str>) -> &'static str {
    match equipment {
        Some("FX") => "fax",
        Some("BP") => "pager",
        _ => "phone",
    }
}

/// XCN (a person) into a logical Reference: the identifier and a display name.
pub fn person_reference(xcn: &Repetition<'_>, target_type: &str) -> Option<Value> {
    let id = xcn.component(1).text();
    let family = xcn.component(2).text();
    let given = xcn.component(3).text();
    let prefix = xcn.component(6).text();
    let display: Vec<Cow<'_, str>> = [prefix, given, family].into_iter().flatten().collect();
    if id.is_none() && display.is_empty() {
        return None;
    }
    let mut reference = Map::new();
    reference.insert("type".into(), json!(target_type));
    if let Some(id) = id {
        let authority = xcn.component(9).sub(1).text().or_else(|| xcn.component(13).text());
        let system = authority.as_deref().and_then(|a| match a.to_ascii_uppercase().as_str() {
            "GMC" => Some("https://fhir.hl7.org.uk/Id/gmc-number"),
            "GMP" => Some("https://fhir.hl7.org.uk/Id/gmp-number"),
            "NMC" => Some("https://fhir.hl7.org.uk/Id/nmc-number"),
            "HCPC" => Some("https://fhir.hl7.org.uk/Id/hcpc-number"),
            "SDS" => Some(system::SDS_USER_ID),
            "NPI" => Some("http://hl7.org/fhir/sid/us-npi"),
            _ => None,
        });
        let mut identifier = Map::new();
        if let Some(system) = system {
            identifier.insert("system".into(), json!(system));
        }
        identifier.insert("value".into(), json!(id));
        reference.insert("identifier".into(), Value::Object(identifier));
    }
    if !display.is_empty() {
        reference.insert("display".into(), json!(display.join(" ")));
    }
    Some(Value::Object(reference))
}

/// An organisation named only by its ODS code (MSH-4's namespace): a logical Reference, or `None`
/// when the code is not an ODS code.
pub fn ods_reference(code: &str) -> Option<Value> {
    let ods = fhir_models::OdsCode::parse(code).ok()?;
    Some(json!({"type": "Organization", "identifier": {"system": system::ODS_ORGANIZATION_CODE, "value": ods.to_string()}}))
}

/// XON (an organisation) into a logical Reference; an ODS code becomes the identifier.
pub fn organisation_reference(xon: &Repetition<'_>) -> Option<Value> {
    // v2.5 moved the identifier from XON.3 to XON.10.
    let code = xon.component(10).text().or_else(|| xon.component(3).text());
    let name = xon.component(1).text();
    if code.is_none() && name.is_none() {
        return None;
    }
    let mut reference = Map::new();
    reference.insert("type".into(), json!("Organization"));
    if let Some(code) = code {
        match fhir_models::OdsCode::parse(&code) {
            Ok(ods) => reference.insert("identifier".into(), json!({"system": system::ODS_ORGANIZATION_CODE, "value": ods.to_string()})),
            Err(_) => reference.insert("identifier".into(), json!({"value": code})),
        };
    }
    if let Some(name) = name {
        reference.insert("display".into(), json!(name));
    }
    Some(Value::Object(reference))
}

/// The numbers an order, appointment or dose is known by (filler's, placer's), each typed.
pub fn typed_numbers(numbers: &[(&Option<Identifier>, &str)]) -> Vec<Value> {
    numbers.iter().filter_map(|(number, code)| number.as_ref().map(|number| number.typed(code))).collect()
}

/// EI (entity identifier: an order or document number) as an Identifier.
pub fn entity_identifier(ei: &Repetition<'_>, default_authority: &str, kind: &str) -> Option<Identifier> {
    let value = ei.component(1).text()?;
    let system = match (ei.component(3).text(), ei.component(4).text()) {
        (Some(oid), Some(kind)) if kind.eq_ignore_ascii_case("ISO") => format!("urn:oid:{oid}"),
        (Some(uuid), Some(kind)) if kind.eq_ignore_ascii_case("UUID") => format!("urn:uuid:{uuid}"),
        _ => local_system(ei.component(2).text().as_deref().unwrap_or(default_authority), kind),
    };
    Some(Identifier { system, value: value.into_owned(), is_nhs_number: false, type_code: None })
}

/// ED (encapsulated data: a PDF, an image, a text) as an Attachment. Base64 data must decode;
/// ASCII and hex data are re-encoded as Base64.
pub fn attachment(ed: &Repetition<'_>, title: Option<&str>, location: &Location) -> Result<Value, Hl7Error> {
    let subtype = ed.component(3).text().map(|t| t.to_ascii_uppercase());
    let kind = ed.component(2).text().map(|t| t.to_ascii_uppercase());
    let content_type = match (subtype.as_deref(), kind.as_deref()) {
        (Some("PDF"), _) => "application/pdf",
        (Some("RTF"), _) => "application/rtf",
        (Some("HTML"), _) => "text/html",
        (Some("XML"), _) => "application/xml",
        (Some("JPEG" | "JPG"), _) => "image/jpeg",
        (Some("PNG"), _) => "image/png",
        (Some("TIFF" | "TIF"), _) => "image/tiff",
        (Some("GIF"), _) => "image/gif",
        (Some("PLAIN"), _) | (_, Some("TEXT")) => "text/plain",
        (Some(mime), _) if mime.contains('/') => return attachment_with(ed, &mime.to_ascii_lowercase(), title, location),
        _ => "application/octet-stream",
    };
    attachment_with(ed, content_type, title, location)
}

fn attachment_with(ed: &Repetition<'_>, content_type: &str, title: Option<&str>, location: &Location) -> Result<Value, Hl7Error> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let data = ed.component(5).full_text().ok_or_else(|| {
        Hl7Error::new(ErrorCode::RequiredFieldMissing, location.clone().component(5), "the encapsulated data (ED.5) is empty")
    })?;
    let encoding = ed.component(4).text().map(|t| t.to_ascii_uppercase());
    let bytes = match encoding.as_deref() {
        Some("BASE64") | None => {
            let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            engine.decode(compact.as_bytes()).map_err(|error| {
                Hl7Error::new(ErrorCode::DataType, location.clone().component(5), format!("the Base64 data does not decode: {error}"))
            })?
        }
        Some("A") => data.as_bytes().to_vec(),
        Some("HEX") => {
            let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            let decoded: Option<Vec<u8>> =
                (0..compact.len()).step_by(2).map(|i| compact.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect();
            decoded.ok_or_else(|| Hl7Error::new(ErrorCode::DataType, location.clone().component(5), "the hex data does not decode"))?
        }
        Some(other) => {
            return Err(Hl7Error::new(
                ErrorCode::TableValueNotFound,
                location.clone().component(4),
                format!("ED encoding {other:?} is not Base64, A or Hex (HL7 table 0299)"),
            ));
        }
    };
    let mut attachment = Map::new();
    attachment.insert("contentType".into(), json!(content_type));
    attachment.insert("data".into(), json!(engine.encode(&bytes)));
    attachment.insert("size".into(), json!(bytes.len()));
    if let Some(title) = title {
        attachment.insert("title".into(), json!(title));
    }
    Ok(Value::Object(attachment))
}

/// Text as a `text/plain` Attachment.
pub fn text_attachment(text: &str, title: Option<&str>) -> Value {
    use base64::Engine;
    let mut attachment = Map::new();
    attachment.insert("contentType".into(), json!("text/plain; charset=utf-8"));
    attachment.insert("data".into(), json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())));
    attachment.insert("size".into(), json!(text.len()));
    if let Some(title) = title {
        attachment.insert("title".into(), json!(title));
    }
    Value::Object(attachment)
}

#[cfg(test)]
mod tests {
    use super::super::message::Message;
    use super::*;

    fn field<'a>(message: &'a Message<'a>, segment: &str, n: usize) -> Repetition<'a> {
        message.first(segment).unwrap().field(n).first()
    }

    #[test]
    fn timestamps_keep_precision_and_england_local_time() {
        let at = Location::field("PID", 1, 7);
        assert_eq!(timestamp("1980", &at).unwrap().text, "1980");
        assert_eq!(timestamp("198002", &at).unwrap().text, "1980-02");
        assert_eq!(timestamp("19800229", &at).unwrap().text, "1980-02-29");
        assert_eq!(timestamp("202401151030", &at).unwrap().text, "2024-01-15T10:30:00+00:00");
        assert_eq!(timestamp("20240715103045", &at).unwrap().text, "2024-07-15T10:30:45+01:00");
        assert_eq!(timestamp("20240715103045.12-0500", &at).unwrap().text, "2024-07-15T10:30:45.12-05:00");
        // 2024: BST from 31 March to 27 October.
        assert_eq!(timestamp("202403310030", &at).unwrap().text, "2024-03-31T00:30:00+00:00");
        assert_eq!(timestamp("202403310230", &at).unwrap().text, "2024-03-31T02:30:00+01:00");
        assert_eq!(timestamp("202410270130", &at).unwrap().text, "2024-10-27T01:30:00+01:00");
        assert_eq!(timestamp("202410270230", &at).unwrap().text, "2024-10-27T02:30:00+00:00");
        for bad in [
            "19800230",
            "1980-01-01",
            "198013",
            "2024011510306",
            "20240115103000+5",
            "20240115.5",
            "0000",
            "20240115120099",
            "20240115120000+1430",
        ] {
            let error = timestamp(bad, &at).unwrap_err();
            assert_eq!(error.location, at, "{bad}");
            assert!(error.reason.contains(bad), "{error}");
        }
    }

    #[test]
    fn nhs_numbers_are_checked_and_local_numbers_get_a_stable_system() {
        let message =
            Message::parse("MSH|^~\\&|A|RRK\rPID|1||9449305552^^^NHS^NH~K1^^^RRK Hosp^MR~X9^^^&1.2.3&ISO~944 930 5552^^^NHS").unwrap();
        let at = Location::field("PID", 1, 3);
        let ids: Vec<_> =
            message.first("PID").unwrap().field(3).repetitions().map(|r| identifier(&r, "RRK", "id", &at).unwrap().unwrap()).collect();
        assert_eq!((ids[0].system.as_str(), ids[0].value.as_str()), (system::NHS_NUMBER, "9449305552"));
        assert_eq!(ids[1].system, "urn:hie:rrk-hosp:mr");
        assert_eq!(ids[2].system, "urn:oid:1.2.3");
        assert_eq!(ids[3].value, "9449305552");
        assert_eq!(ids[1].search_token(), "urn:hie:rrk-hosp:mr|K1");
        let bad = Message::parse("MSH|^~\\&|A\rPID|1||9449305553^^^NHS^NH").unwrap();
        let error = identifier(&field(&bad, "PID", 3), "A", "id", &at).unwrap_err();
        assert!(error.reason.contains("9449305553"), "{error}");
        assert_eq!(error.location.to_string(), "PID-3.1");
    }

    #[test]
    fn names_addresses_and_telecoms() {
        let message = Message::parse(
            "MSH|^~\\&|A\rPID|1||1||SMITH^JOHN^PAUL^JR^MR^^L||||||1 High St^Flat 2^Leeds^W Yorks^LS1 1AA^GBR^H||0113 496 0000^PRN^PH~^NET^Internet^j@example.org|07700 900000^^CP",
        )
        .unwrap();
        assert_eq!(
            human_name(&field(&message, "PID", 5)).unwrap(),
            json!({"use": "official", "family": "SMITH", "given": ["JOHN", "PAUL"], "prefix": ["MR"], "suffix": ["JR"]})
        );
        assert_eq!(
            address(&field(&message, "PID", 11)).unwrap(),
            json!({"use": "home", "line": ["1 High St", "Flat 2"], "city": "Leeds", "state": "W Yorks", "postalCode": "LS1 1AA", "country": "GBR"})
        );
        let pid = message.first("PID").unwrap();
        let telecoms: Vec<_> = pid.field(13).repetitions().filter_map(|r| contact_point(&r, "home")).collect();
        assert_eq!(telecoms[0], json!({"system": "phone", "value": "0113 496 0000", "use": "home"}));
        assert_eq!(telecoms[1], json!({"system": "email", "value": "j@example.org", "use": "home"}));
        assert_eq!(contact_point(&field(&message, "PID", 14), "work").unwrap()["use"], "mobile");
    }

    #[test]
    fn coded_values_and_people() {
        let message =
            Message::parse("MSH|^~\\&|A\rOBX|1|NM|8867-4^Heart rate^LN^HR^Pulse^L||72\rPV1|1|I|||||C123^JONES^ANN^^^DR^^^GMC").unwrap();
        assert_eq!(
            codeable_concept(&field(&message, "OBX", 3)).unwrap(),
            json!({"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}, {"code": "HR", "display": "Pulse"}], "text": "Heart rate"})
        );
        assert_eq!(
            person_reference(&field(&message, "PV1", 7), "Practitioner").unwrap(),
            json!({"type": "Practitioner", "identifier": {"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C123"}, "display": "DR ANN JONES"})
        );
    }
}
