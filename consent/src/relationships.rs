//! Legitimate relationships derived from stored care records (docs/information-governance.md,
//! "Legitimate relationships"): registration, encounters, episodes of care and referrals, each
//! with the organisation it names and the time it ends.

use fhir_models::datetime::parse_range;
use fhir_models::reference::Reference;
use serde_json::Value;

use crate::directives::ods_identifier;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelationshipKind {
    /// The patient's registered GP practice (`Patient.generalPractitioner`).
    Registered,
    Encounter,
    CareEpisode,
    Referral,
}

impl RelationshipKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Encounter => "encounter",
            Self::CareEpisode => "care-episode",
            Self::Referral => "referral",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "registered" => Self::Registered,
            "encounter" => Self::Encounter,
            "care-episode" => Self::CareEpisode,
            "referral" => Self::Referral,
            _ => return None,
        })
    }
}

/// The organisation a relationship names: by ODS code when the reference carries one, else by
/// the id of the Organization resource it points at (whose ODS identifier is looked up when the
/// relationship is used, so a later correction of the Organization is honoured).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OrgRef {
    Ods(String),
    Id(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelationshipRow {
    pub patient_id: String,
    pub kind: RelationshipKind,
    pub organisation: OrgRef,
    /// When the care ended (microseconds since the epoch, the end of the stated precision);
    /// `None` for a registration or an encounter still going on.
    pub ends: Option<i64>,
}

/// The relationships a resource's current version gives.
pub fn relationship_rows(resource_type: &str, id: &str, resource: &Value) -> Vec<RelationshipRow> {
    let mut rows = Vec::new();
    let status = resource["status"].as_str().unwrap_or("");
    match resource_type {
        "Patient" => {
            for organisation in organisations(&resource["generalPractitioner"]) {
                rows.push(RelationshipRow { patient_id: id.to_owned(), kind: RelationshipKind::Registered, organisation, ends: None });
            }
        }
        "Encounter" | "EpisodeOfCare" if !matches!(status, "cancelled" | "entered-in-error") => {
            let (kind, patient, provider) = if resource_type == "Encounter" {
                (RelationshipKind::Encounter, &resource["subject"], &resource["serviceProvider"])
            } else {
                (RelationshipKind::CareEpisode, &resource["patient"], &resource["managingOrganization"])
            };
            let (starts, ends) = period_bounds(&resource["period"]);
            if let (Some(patient_id), Some(organisation), true) =
                (patient_id(patient), organisation(provider), starts.is_some() || ends.is_some())
            {
                rows.push(RelationshipRow { patient_id, kind, organisation, ends });
            }
        }
        "ServiceRequest" if !matches!(status, "revoked" | "entered-in-error") => {
            let authored = resource["authoredOn"].as_str().and_then(parse_range).map(|(range, _)| range.high);
            if let (Some(patient_id), Some(authored)) = (patient_id(&resource["subject"]), authored) {
                for organisation in organisations(&resource["performer"]) {
                    rows.push(RelationshipRow {
                        patient_id: patient_id.clone(),
                        kind: RelationshipKind::Referral,
                        organisation,
                        ends: Some(authored),
                    });
                }
            }
        }
        _ => {}
    }
    rows
}

/// The start and end of a Period (microseconds; the start of `start`'s precision, the end of
/// `end`'s).
pub fn period_bounds(period: &Value) -> (Option<i64>, Option<i64>) {
    let bound = |key: &str| period[key].as_str().and_then(parse_range).map(|(range, _)| range);
    (bound("start").map(|r| r.low), bound("end").map(|r| r.high))
}

fn patient_id(reference: &Value) -> Option<String> {
    let text = reference["reference"].as_str()?;
    match Reference::parse(text).local()? {
        (resource_type, id) if resource_type.as_str() == "Patient" => Some(id.to_owned()),
        _ => None,
    }
}

/// An Organization reference: its ODS identifier, else its literal id.
fn organisation(reference: &Value) -> Option<OrgRef> {
    if let Some(ods) = ods_identifier(reference) {
        return Some(OrgRef::Ods(ods));
    }
    let text = reference["reference"].as_str()?;
    match Reference::parse(text).local()? {
        (resource_type, id) if resource_type.as_str() == "Organization" => Some(OrgRef::Id(id.to_owned())),
        _ => None,
    }
}

fn organisations(references: &Value) -> Vec<OrgRef> {
    references.as_array().map(Vec::as_slice).unwrap_or(&[]).iter().filter_map(organisation).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ODS: &str = fhir_models::system::ODS_ORGANIZATION_CODE;

    #[test]
    fn a_patients_practices_are_registrations() {
        let patient = json!({"resourceType": "Patient", "generalPractitioner": [
            {"reference": "Organization/o1"},
            {"identifier": {"system": ODS, "value": "A81001"}},
            {"reference": "Practitioner/gp1"}
        ]});
        let rows = relationship_rows("Patient", "p1", &patient);
        assert_eq!(
            rows.iter().map(|r| (&r.patient_id[..], r.kind, r.organisation.clone())).collect::<Vec<_>>(),
            vec![
                ("p1", RelationshipKind::Registered, OrgRef::Id("o1".into())),
                ("p1", RelationshipKind::Registered, OrgRef::Ods("A81001".into()))
            ]
        );
    }

    #[test]
    fn encounters_end_with_their_period_and_ongoing_ones_do_not() {
        let finished = json!({"resourceType": "Encounter", "status": "finished", "subject": {"reference": "Patient/p1"},
            "serviceProvider": {"reference": "Organization/o1"}, "period": {"start": "2024-01-01", "end": "2024-01-03"}});
        let rows = relationship_rows("Encounter", "e1", &finished);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ends, Some(parse_range("2024-01-03").unwrap().0.high));
        let ongoing = json!({"resourceType": "Encounter", "status": "in-progress", "subject": {"reference": "Patient/p1"},
            "serviceProvider": {"identifier": {"system": ODS, "value": "RXA"}}, "period": {"start": "2024-01-01T10:00:00Z"}});
        assert_eq!(relationship_rows("Encounter", "e2", &ongoing)[0].ends, None);
        let no_period = json!({"resourceType": "Encounter", "status": "finished", "subject": {"reference": "Patient/p1"},
            "serviceProvider": {"reference": "Organization/o1"}});
        assert!(relationship_rows("Encounter", "e3", &no_period).is_empty());
        let mut cancelled = finished.clone();
        cancelled["status"] = json!("entered-in-error");
        assert!(relationship_rows("Encounter", "e4", &cancelled).is_empty());
    }

    #[test]
    fn referrals_name_each_performing_organisation() {
        let referral = json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p1"}, "authoredOn": "2024-05-01",
            "performer": [{"reference": "Organization/o2"}, {"reference": "Practitioner/x"}]});
        let rows = relationship_rows("ServiceRequest", "s1", &referral);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].organisation, OrgRef::Id("o2".into()));
        assert_eq!(rows[0].kind, RelationshipKind::Referral);
    }
}
