//! SIU^S12–S15, S17 and S26: scheduling. The SCH (with its timing in TQ1, SCH-11 or AIS and the
//! people and places in AIP and AIL) becomes an Appointment upserted on its filler appointment
//! id (SCH-2), else the placer's (SCH-1), so a reschedule, a modification, a cancellation or a
//! no-show updates the Appointment the booking made. Mapping: the v2-to-FHIR
//! `SCH[Appointment]` table.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Context;
use super::datatypes::{Identifier, codeable_concept, entity_identifier, person_reference, timestamp, typed_numbers};
use super::error::{ErrorCode, Hl7Error, Location};
use super::message::Segment;
use super::patient;
use crate::translate::transaction::{TransactionBuilder, query_value};

pub fn translate(context: &Context<'_, '_>, event: &str, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let message = context.message;
    let sch = message.required("SCH", "a scheduling message carries its appointment in SCH")?;
    let pid = message.required("PID", "an appointment is filed against a patient")?;
    let pd1 = message.first("PD1");
    let patient = patient::upsert(context, pid, pd1, builder, patient::Demographics::CreateIfMissing)?;

    let authority = context.header.authority();
    let filler = entity_identifier(&sch.field(2).first(), authority, "filler-appointment-id");
    let placer = entity_identifier(&sch.field(1).first(), authority, "placer-appointment-id");
    let Some(key) = filler.as_ref().or(placer.as_ref()) else {
        return Err(Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            sch.locate(2),
            "SCH-2 (filler appointment id) or SCH-1 (placer appointment id) is required to identify the appointment",
        ));
    };
    let key = Identifier { type_code: None, ..key.clone() };
    let condition = format!("identifier={}", query_value(&key.search_token()));

    let mut appointment = Map::new();
    appointment.insert("resourceType".into(), json!("Appointment"));
    let identifiers: Vec<Value> = typed_numbers(&[(&filler, "FILL"), (&placer, "PLAC")]);
    appointment.insert("identifier".into(), Value::Array(identifiers));
    let status = status(sch, event)?;
    appointment.insert("status".into(), json!(status));
    if let Some(kind) = codeable_concept(&sch.field(8).first()) {
        appointment.insert("appointmentType".into(), kind);
    }
    let reasons: Vec<Value> = [7, 6].iter().filter_map(|&field| codeable_concept(&sch.field(field).first())).collect();
    if !reasons.is_empty() {
        appointment.insert("reasonCode".into(), Value::Array(reasons));
    }
    let timing = timing(message, sch)?;
    match timing {
        Some((start, end)) => {
            appointment.insert("start".into(), json!(start));
            appointment.insert("end".into(), json!(end));
        }
        // R4 app-3: only a proposed, cancelled or wait-listed appointment may lack its times.
        None if matches!(status, "proposed" | "cancelled" | "waitlist") => {}
        None => {
            return Err(Hl7Error::new(
                ErrorCode::RequiredFieldMissing,
                message.first("TQ1").map_or_else(|| sch.locate(11), |tq1| tq1.locate(7)),
                "a booked appointment needs its start time with a time of day (TQ1-7, SCH-11.4 or AIS-4) and its end or duration",
            ));
        }
    }
    if let Some(minutes) = duration_minutes(sch.value(9).as_deref(), sch.field(10).first().component(1).raw(), &sch.locate(9))? {
        appointment.insert("minutesDuration".into(), json!(minutes));
    }
    let notes: Vec<String> = message
        .segments()
        .iter()
        .skip_while(|s| s.id != "SCH")
        .skip(1)
        .take_while(|s| s.id == "NTE" || s.id == "TQ1")
        .filter(|s| s.id == "NTE")
        .filter_map(|nte| nte.field(3).first().full_text().map(|t| t.into_owned()))
        .collect();
    if !notes.is_empty() {
        appointment.insert("comment".into(), json!(notes.join("\n")));
    }
    let mut participants = vec![json!({"actor": {"reference": patient.full_url}, "status": "accepted"})];
    for aip in message.segments().iter().filter(|s| s.id == "AIP") {
        if let Some(actor) = person_reference(&aip.field(3).first(), "Practitioner") {
            let mut participant = Map::new();
            if let Some(role) = codeable_concept(&aip.field(4).first()) {
                participant.insert("type".into(), json!([role]));
            }
            participant.insert("actor".into(), actor);
            participant.insert("status".into(), json!("accepted"));
            participants.push(Value::Object(participant));
        }
    }
    for ail in message.segments().iter().filter(|s| s.id == "AIL") {
        let place = ail.field(3).first();
        let names: Vec<String> = [1, 2, 3, 4].iter().filter_map(|&c| place.component(c).full_text().map(|t| t.into_owned())).collect();
        if !names.is_empty() {
            participants.push(json!({"actor": {"type": "Location", "display": names.join(" ")}, "status": "accepted"}));
        }
    }
    appointment.insert("participant".into(), Value::Array(participants));
    builder.upsert(Value::Object(appointment), &condition);
    Ok(())
}

/// The trigger event decides for cancellations, deletions and no-shows; otherwise SCH-25, the
/// filler's status (HL7 table 0278), and a new booking without one is booked.
fn status(sch: &Segment<'_>, event: &str) -> Result<&'static str, Hl7Error> {
    match event {
        "S15" => return Ok("cancelled"),
        "S17" => return Ok("entered-in-error"),
        "S26" => return Ok("noshow"),
        _ => {}
    }
    let code = sch.field(25).first().component(1).text();
    Ok(match code.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => "booked",
        Some("pending") => "pending",
        Some("waitlist") => "waitlist",
        Some("booked" | "overbook" | "blocked") => "booked",
        Some("started") => "arrived",
        Some("complete") => "fulfilled",
        Some("cancelled" | "dc") => "cancelled",
        Some("deleted") => "entered-in-error",
        Some("noshow") => "noshow",
        Some(other) => {
            return Err(Hl7Error::new(
                ErrorCode::TableValueNotFound,
                sch.locate(25),
                format!(
                    "SCH-25 filler status {other:?} is not in HL7 table 0278 (Pending, Waitlist, Booked, Started, Complete, Cancelled, Dc, Deleted, Blocked, Overbook, Noshow)"
                ),
            ));
        }
    })
}

/// When: TQ1-7/8 (v2.5 on), SCH-11.4/.5 (earlier), else the first AIS-4 with its duration; an
/// end missing is the start plus the duration. `None` when the start has no time of day.
fn timing(message: &super::Message<'_>, sch: &Segment<'_>) -> Result<Option<(String, String)>, Hl7Error> {
    let ais = message.first("AIS");
    let schedule = sch.field(11).first();
    let (start, start_at, end) = if let Some(tq1) = message.first("TQ1").filter(|tq1| tq1.value(7).is_some()) {
        (tq1.value(7).unwrap_or_default(), tq1.locate(7), tq1.value(8).map(|end| (end, tq1.locate(8))))
    } else if let Some(start) = schedule.component(4).text() {
        (start, sch.locate(11).component(4), schedule.component(5).text().map(|end| (end, sch.locate(11).component(5))))
    } else if let Some(ais) = ais.filter(|ais| ais.value(4).is_some()) {
        (ais.value(4).unwrap_or_default(), ais.locate(4), None)
    } else {
        return Ok(None);
    };
    let Some(start) = timestamp(&start, &start_at)?.instant().map(str::to_owned) else { return Ok(None) };
    if let Some((end, end_at)) = end {
        return Ok(timestamp(&end, &end_at)?.instant().map(|end| (start, end.to_owned())));
    }
    let minutes = match ais {
        Some(ais) if ais.value(7).is_some() => {
            duration_minutes(ais.value(7).as_deref(), ais.field(8).first().component(1).raw(), &ais.locate(7))?
        }
        _ => duration_minutes(sch.value(9).as_deref(), sch.field(10).first().component(1).raw(), &sch.locate(9))?,
    };
    let Some(minutes) = minutes else { return Ok(None) };
    let unreadable = |e: &dyn std::fmt::Display| {
        Hl7Error::new(ErrorCode::DataType, start_at.clone(), format!("the start time {start:?} cannot be used: {e}"))
    };
    let begins = OffsetDateTime::parse(&start, &Rfc3339).map_err(|e| unreadable(&e))?;
    let ends = (begins + time::Duration::minutes(i64::from(minutes))).format(&Rfc3339).map_err(|e| unreadable(&e))?;
    Ok(Some((start, ends)))
}

/// A duration (SCH-9 with SCH-10, AIS-7 with AIS-8) in whole minutes; the units default to
/// minutes.
fn duration_minutes(amount: Option<&str>, units: &str, location: &Location) -> Result<Option<u32>, Hl7Error> {
    let Some(amount) = amount.map(str::trim).filter(|a| !a.is_empty()) else { return Ok(None) };
    let value: u32 =
        amount.parse().ok().filter(|&minutes: &u32| minutes <= 60 * 24 * 366).ok_or_else(|| {
            Hl7Error::new(ErrorCode::DataType, location.clone(), format!("the duration {amount:?} is not a whole number"))
        })?;
    let per_unit = match units.to_ascii_lowercase().as_str() {
        "" | "min" | "m" | "minutes" | "minute" => 1,
        "h" | "hr" | "hour" | "hours" => 60,
        "d" | "day" | "days" => 60 * 24,
        other => {
            return Err(Hl7Error::new(
                ErrorCode::DataType,
                location.clone(),
                format!("the duration's units {other:?} are not minutes, hours or days"),
            ));
        }
    };
    Ok(value.checked_mul(per_unit).filter(|&minutes| minutes <= 60 * 24 * 366))
}

#[cfg(test)]
mod tests {
    use super::super::{ErrorCode, translate};

    const S12: &str = "MSH|^~\\&|PAS|RRK|HIE|HIE|20240310093000||SIU^S12^SIU_S12|S1|P|2.5.1\r\
SCH|PL-1^RRK|APT-900^RRK|||||CHK^Check-up^HL70276|ROUTINE^Routine^HL70277|20|min|||||||||||||||Booked\r\
TQ1|1||||||20240320091500\r\
NTE|1||Bring your inhaler\r\
PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\r\
RGS|1\r\
AIS|1||RESP^Respiratory clinic^L|20240320091500|||20|min\r\
AIL|1||CLINIC2^^^RRK\r\
AIP|1||C1234567^JONES^ANNE^^^^^^GMC|ATND^Attending^HL70443";

    fn appointment_of(bundle: &serde_json::Value) -> (&serde_json::Value, &str) {
        let entry = bundle["entry"].as_array().unwrap().iter().find(|e| e["resource"]["resourceType"] == "Appointment").unwrap();
        (&entry["resource"], entry["request"]["url"].as_str().unwrap())
    }

    #[test]
    fn a_booking_becomes_an_appointment_and_a_cancellation_updates_it() {
        let booked = translate(S12).unwrap().bundle;
        let (appointment, key) = appointment_of(&booked);
        assert_eq!(key, "Appointment?identifier=urn:hie:rrk:filler-appointment-id|APT-900");
        assert_eq!(appointment["status"], "booked");
        assert_eq!(appointment["start"], "2024-03-20T09:15:00+00:00");
        assert_eq!(appointment["end"], "2024-03-20T09:35:00Z");
        assert_eq!(appointment["minutesDuration"], 20);
        assert_eq!(appointment["comment"], "Bring your inhaler");
        assert_eq!(appointment["participant"][0]["actor"]["reference"], booked["entry"][0]["fullUrl"]);
        assert_eq!(appointment["participant"][1]["actor"]["identifier"]["value"], "C1234567");
        assert_eq!(appointment["participant"][2]["actor"]["display"], "CLINIC2 RRK");

        let cancelled = translate(&S12.replace("SIU^S12^SIU_S12|S1|", "SIU^S15^SIU_S12|S2|")).unwrap().bundle;
        let (appointment, cancelled_key) = appointment_of(&cancelled);
        assert_eq!(cancelled_key, key, "the same Appointment");
        assert_eq!(appointment["status"], "cancelled");
        let no_show = translate(&S12.replace("SIU^S12^SIU_S12|S1|", "SIU^S26^SIU_S12|S3|")).unwrap().bundle;
        assert_eq!(appointment_status(&no_show), "noshow");
    }

    fn appointment_status(bundle: &serde_json::Value) -> String {
        appointment_of(bundle).0["status"].as_str().unwrap().to_owned()
    }

    #[test]
    fn bad_scheduling_fields_are_named() {
        let cases = [
            (S12.replace("SCH|PL-1^RRK|APT-900^RRK|", "SCH|||"), ErrorCode::RequiredFieldMissing, "SCH-2"),
            (S12.replace("|Booked\r", "|Sleeping\r"), ErrorCode::TableValueNotFound, "SCH-25"),
            (
                S12.replace("TQ1|1||||||20240320091500\r", "").replace("AIS|1||RESP^Respiratory clinic^L|20240320091500", "AIS|1||RESP"),
                ErrorCode::RequiredFieldMissing,
                "SCH-11",
            ),
            (S12.replace("|20|min|||", "|twenty|min|||"), ErrorCode::DataType, "SCH-9"),
            // R4 app-3: an appointment entered in error still needs its times; only a proposed,
            // cancelled or wait-listed one may lack them.
            (
                S12.replace("SIU^S12^SIU_S12", "SIU^S17^SIU_S12")
                    .replace("TQ1|1||||||20240320091500\r", "")
                    .replace("AIS|1||RESP^Respiratory clinic^L|20240320091500", "AIS|1||RESP"),
                ErrorCode::RequiredFieldMissing,
                "SCH-11",
            ),
            (S12.replace("PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\r", ""), ErrorCode::SegmentSequence, "PID"),
        ];
        super::super::assert_refused(&cases);
    }
}
