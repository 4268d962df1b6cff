//! The gateway's policy engine: who may do what with which data.
//!
//! Plain data in, a [`Decision`] naming the rule that decided out. Deny by default: a request
//! that no rule permits is refused, and the refusal names the rule that refused it.
//!
//! **Architecture Invariant:** pure. No I/O, no async, no clock (time is passed in), no
//! allocation on the permit path of the common rules.
#![forbid(unsafe_code)]

pub mod access;
mod decision;
pub mod directives;
pub mod labels;
pub mod relationships;
mod requester;
pub mod smart;

pub use access::{AccessPolicy, PatientFacts, ResourceFacts, Scope, Viewer, Visibility, Withheld, decide, patient_gate};
pub use decision::{Decision, DenyCode, Rule};
pub use labels::{SensitiveCodeSet, SensitivityLabels};
pub use requester::{ClientKind, Clinician, PatientUser, Principal, PurposeOfUse, RegisteredClient, Requester, SystemUser};
pub use smart::{ScopeContext, SmartScope, SmartScopes};

use fhir_models::ResourceType;
use fhir_models::interaction::Interaction;

/// Decide whether `requester` may perform `interaction` on `resource_type` (or at the system
/// level when `None`), before any data is touched. Patient-level rules (relationship, dissent,
/// sensitivity) are decided per patient and per resource.
pub fn decide_interaction(requester: &Requester, interaction: Interaction, resource_type: Option<ResourceType>) -> Decision {
    use DenyCode::{AccessDenied, Unauthenticated};
    let deny = |rule, code| Decision::Deny { rule, code };
    if requester.unregistered_certificate {
        return deny(Rule::ClientRegistration, AccessDenied);
    }
    let Some(principal) = &requester.principal else {
        return match requester.client {
            Some(_) => deny(Rule::BearerToken, Unauthenticated),
            None => deny(Rule::ClientRegistration, Unauthenticated),
        };
    };
    match (&requester.client, principal.organisation()) {
        // Patients are the one way in without a client certificate.
        (None, None) => {}
        (None, Some(_)) => return deny(Rule::TokenBinding, Unauthenticated),
        (Some(client), organisation) => {
            if organisation.is_some_and(|organisation| *organisation != client.ods) {
                return deny(Rule::TokenBinding, AccessDenied);
            }
            if principal.scopes().first_not_covered_by(&client.scopes).is_some() {
                return deny(Rule::RegisteredScopes, AccessDenied);
            }
        }
    }
    if !principal.scopes().allows(principal.scope_context(), interaction, resource_type) {
        return deny(Rule::TokenScopes, AccessDenied);
    }
    match principal {
        Principal::Patient(patient, _) => {
            // A batch lets a patient read several things at once; its entries are each decided,
            // and a patient's batch may only read (the bundle code refuses other entries).
            let reads = matches!(
                interaction,
                Interaction::Read | Interaction::Vread | Interaction::SearchType | Interaction::HistoryInstance | Interaction::Batch
            );
            // Patients manage their own sharing wishes; which Consents are theirs is checked
            // per resource when it is written.
            let own_wishes = matches!(interaction, Interaction::Create | Interaction::Update | Interaction::Delete)
                && resource_type.is_some_and(|t| t.as_str() == "Consent");
            if !patient.may_access_records() || !(reads || own_wishes) {
                return deny(Rule::PatientSelfAccess, AccessDenied);
            }
            Decision::Permit { rule: Rule::PatientSelfAccess }
        }
        Principal::Clinician(Clinician { purpose, .. }, _) | Principal::System(SystemUser { purpose, .. }, _) => {
            let research_client = requester.client.as_ref().is_some_and(|client| !client.secondary_uses.is_empty());
            if !purpose.is_secondary() {
                // A certificate registered for secondary use is for that alone: an extraction
                // service does not also act for direct care, where no opt-out applies.
                return if research_client { deny(Rule::SecondaryUse, AccessDenied) } else { Decision::Permit { rule: Rule::TokenScopes } };
            }
            // Beyond direct care: only a client approved for that purpose, and only reading (a
            // batch could carry writes). Which records is decided per patient: their opt-outs.
            let approved = requester.client.as_ref().is_some_and(|client| client.secondary_uses.contains(purpose));
            let reads = matches!(
                interaction,
                Interaction::Read | Interaction::Vread | Interaction::SearchType | Interaction::SearchSystem | Interaction::HistoryInstance
            );
            if approved && reads { Decision::Permit { rule: Rule::SecondaryUse } } else { deny(Rule::SecondaryUse, AccessDenied) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhir_models::{NhsNumber, OdsCode};

    fn client(kind: ClientKind, ods: &str) -> RegisteredClient {
        RegisteredClient {
            name: "c".into(),
            kind,
            ods: OdsCode::parse(ods).unwrap(),
            scopes: SmartScopes::parse(kind.default_scopes().iter().copied()).unwrap(),
            secondary_uses: Vec::new(),
        }
    }

    fn clinician(ods: &str, scopes: &str, purpose: PurposeOfUse) -> Principal {
        Principal::Clinician(
            Clinician {
                subject: "u1".into(),
                role: Some("R8000".into()),
                organisation: OdsCode::parse(ods).unwrap(),
                purpose,
                reason: None,
                self_claimed: false,
            },
            SmartScopes::parse_claim(scopes).unwrap(),
        )
    }

    fn patient(level: &str) -> Principal {
        Principal::Patient(
            PatientUser { subject: "p1".into(), nhs_number: NhsNumber::parse("9449305552").unwrap(), proofing_level: level.into() },
            SmartScopes::parse_claim("patient/*.rs").unwrap(),
        )
    }

    fn ty(name: &str) -> Option<ResourceType> {
        ResourceType::parse(name).ok()
    }

    fn denied_by(decision: Decision) -> Option<(Rule, DenyCode)> {
        match decision {
            Decision::Deny { rule, code } => Some((rule, code)),
            Decision::Permit { .. } => None,
        }
    }

    #[test]
    fn an_unregistered_requester_is_denied_everything() {
        let anonymous = Requester::anonymous();
        let unregistered = Requester { unregistered_certificate: true, ..Requester::anonymous() }.with_principal(clinician(
            "A81001",
            "user/*.cruds",
            PurposeOfUse::Treatment,
        ));
        for interaction in [Interaction::Read, Interaction::SearchType, Interaction::Create, Interaction::Transaction] {
            let decision = decide_interaction(&anonymous, interaction, ty("Patient"));
            assert_eq!(decision, Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::Unauthenticated });
            let decision = decide_interaction(&unregistered, interaction, ty("Patient"));
            assert_eq!(decision, Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::AccessDenied });
        }
    }

    #[test]
    fn a_certificate_alone_reads_nothing() {
        let requester = Requester::client(client(ClientKind::GpSystem, "A81001"));
        assert_eq!(
            denied_by(decide_interaction(&requester, Interaction::Read, ty("Patient"))),
            Some((Rule::BearerToken, DenyCode::Unauthenticated))
        );
    }

    #[test]
    fn clinician_tokens_are_bound_to_their_organisations_certificate() {
        let token = clinician("A81001", "user/*.rs", PurposeOfUse::Treatment);
        let same = Requester::client(client(ClientKind::GpSystem, "A81001")).with_principal(token.clone());
        assert_eq!(decide_interaction(&same, Interaction::Read, ty("Patient")), Decision::Permit { rule: Rule::TokenScopes });
        let other = Requester::client(client(ClientKind::GpSystem, "B82002")).with_principal(token.clone());
        assert_eq!(
            denied_by(decide_interaction(&other, Interaction::Read, ty("Patient"))),
            Some((Rule::TokenBinding, DenyCode::AccessDenied))
        );
        let without_certificate = Requester::anonymous().with_principal(token);
        assert_eq!(
            denied_by(decide_interaction(&without_certificate, Interaction::Read, ty("Patient"))),
            Some((Rule::TokenBinding, DenyCode::Unauthenticated))
        );
    }

    #[test]
    fn scopes_decide_the_interaction_and_cannot_exceed_the_registration() {
        let reader = Requester::client(client(ClientKind::GpSystem, "A81001")).with_principal(clinician(
            "A81001",
            "user/Patient.rs",
            PurposeOfUse::Treatment,
        ));
        assert!(decide_interaction(&reader, Interaction::SearchType, ty("Patient")).is_permit());
        assert_eq!(
            denied_by(decide_interaction(&reader, Interaction::Create, ty("Patient"))),
            Some((Rule::TokenScopes, DenyCode::AccessDenied))
        );
        assert_eq!(
            denied_by(decide_interaction(&reader, Interaction::Read, ty("Observation"))),
            Some((Rule::TokenScopes, DenyCode::AccessDenied))
        );
        let mut narrow = client(ClientKind::GpSystem, "A81001");
        narrow.scopes = SmartScopes::parse_claim("user/Patient.rs").unwrap();
        let greedy = Requester::client(narrow).with_principal(clinician("A81001", "user/*.rs", PurposeOfUse::Treatment));
        assert_eq!(
            denied_by(decide_interaction(&greedy, Interaction::Read, ty("Patient"))),
            Some((Rule::RegisteredScopes, DenyCode::AccessDenied))
        );
        // a clinician token's system scopes are not the clinician's
        let confused =
            Requester::client(client(ClientKind::Trust, "R1A")).with_principal(clinician("R1A", "system/*.cruds", PurposeOfUse::Treatment));
        assert_eq!(
            denied_by(decide_interaction(&confused, Interaction::Read, ty("Patient"))),
            Some((Rule::TokenScopes, DenyCode::AccessDenied))
        );
    }

    #[test]
    fn patients_need_p9_and_only_read() {
        let p9 = Requester::anonymous().with_principal(patient("P9"));
        assert_eq!(decide_interaction(&p9, Interaction::Read, ty("Observation")), Decision::Permit { rule: Rule::PatientSelfAccess });
        assert!(decide_interaction(&p9, Interaction::SearchType, ty("Patient")).is_permit());
        assert_eq!(
            denied_by(decide_interaction(&p9, Interaction::Create, ty("Observation"))),
            Some((Rule::TokenScopes, DenyCode::AccessDenied))
        );
        assert_eq!(
            denied_by(decide_interaction(&p9, Interaction::HistoryType, ty("Observation"))),
            Some((Rule::PatientSelfAccess, DenyCode::AccessDenied))
        );
        assert!(decide_interaction(&p9, Interaction::HistoryInstance, ty("Observation")).is_permit());
        // Patients write their own sharing wishes, and nothing else, when their token allows it.
        let wishes = Requester::anonymous().with_principal(Principal::Patient(
            PatientUser { subject: "p1".into(), nhs_number: NhsNumber::parse("9449305552").unwrap(), proofing_level: "P9".into() },
            SmartScopes::parse_claim("patient/*.rs patient/Consent.cud patient/Observation.c").unwrap(),
        ));
        assert!(decide_interaction(&wishes, Interaction::Create, ty("Consent")).is_permit());
        assert!(decide_interaction(&wishes, Interaction::Delete, ty("Consent")).is_permit());
        assert_eq!(
            denied_by(decide_interaction(&wishes, Interaction::Create, ty("Observation"))),
            Some((Rule::PatientSelfAccess, DenyCode::AccessDenied))
        );
        let p5 = Requester::anonymous().with_principal(patient("P5"));
        assert_eq!(
            denied_by(decide_interaction(&p5, Interaction::Read, ty("Observation"))),
            Some((Rule::PatientSelfAccess, DenyCode::AccessDenied))
        );
        // through the portal's certificate too
        let portal = Requester::client(client(ClientKind::Portal, "X26")).with_principal(patient("P9"));
        assert!(decide_interaction(&portal, Interaction::Read, ty("Observation")).is_permit());
    }

    #[test]
    fn secondary_uses_need_an_approved_client_and_only_read() {
        let researcher =
            Requester::client(client(ClientKind::Trust, "R1A")).with_principal(clinician("R1A", "user/*.cruds", PurposeOfUse::Research));
        assert_eq!(
            denied_by(decide_interaction(&researcher, Interaction::Read, ty("Patient"))),
            Some((Rule::SecondaryUse, DenyCode::AccessDenied))
        );
        let mut approved = client(ClientKind::Trust, "R1A");
        approved.secondary_uses = vec![PurposeOfUse::Research];
        let researcher = Requester::client(approved).with_principal(clinician("R1A", "user/*.cruds", PurposeOfUse::Research));
        for interaction in [Interaction::Read, Interaction::Vread, Interaction::SearchType, Interaction::HistoryInstance] {
            assert_eq!(decide_interaction(&researcher, interaction, ty("Observation")), Decision::Permit { rule: Rule::SecondaryUse });
        }
        for interaction in [
            Interaction::Create,
            Interaction::Update,
            Interaction::Delete,
            Interaction::Batch,
            Interaction::Transaction,
            Interaction::HistoryType,
        ] {
            assert_eq!(
                denied_by(decide_interaction(&researcher, interaction, ty("Observation"))),
                Some((Rule::SecondaryUse, DenyCode::AccessDenied)),
                "{interaction:?}"
            );
        }
        // and for nothing else: not direct care, where the opt-outs do not apply
        let mut carer = researcher.clone();
        carer.principal = Some(clinician("R1A", "user/*.cruds", PurposeOfUse::Treatment));
        assert_eq!(
            denied_by(decide_interaction(&carer, Interaction::Read, ty("Observation"))),
            Some((Rule::SecondaryUse, DenyCode::AccessDenied))
        );
        // approved for research is not approved for planning
        let mut planner = researcher.clone();
        planner.principal = Some(clinician("R1A", "user/*.cruds", PurposeOfUse::Operations));
        assert_eq!(
            denied_by(decide_interaction(&planner, Interaction::Read, ty("Observation"))),
            Some((Rule::SecondaryUse, DenyCode::AccessDenied))
        );
    }
}
