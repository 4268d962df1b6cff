//! The gateway's policy engine: who may do what with which data.
//!
//! Plain data in, a [`Decision`] naming the rule that decided out. Deny by default: a request
//! that no rule permits is refused, and the refusal names the rule that refused it.
//!
//! **Architecture Invariant:** pure. No I/O, no async, no clock (time is passed in), no
//! allocation on the permit path of the common rules.
#![forbid(unsafe_code)]

mod decision;
mod requester;

pub use decision::{Decision, DenyCode, Rule};
pub use requester::{ClientKind, RegisteredClient, Requester};

use fhir_models::ResourceType;
use fhir_models::interaction::Interaction;

/// Decide whether `requester` may perform `interaction` on `resource_type` (or at the system
/// level when `None`), before any data is touched.
///
/// Rule 1 (client registration): the request must come from a registered client. Patient-level
/// rules (relationship, dissent, sensitivity) are decided per patient and per resource.
pub fn decide_interaction(requester: &Requester, interaction: Interaction, resource_type: Option<ResourceType>) -> Decision {
    let _ = resource_type;
    match &requester.client {
        None if requester.unregistered_certificate => Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::AccessDenied },
        None => Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::Unauthenticated },
        Some(client) if interaction.is_write() && client.kind == ClientKind::Portal => {
            // The portal writes only a patient's own sharing wishes, and that needs the
            // patient's own sign-in, which a client certificate alone does not carry.
            Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::AccessDenied }
        }
        Some(_) => Decision::Permit { rule: Rule::ClientRegistration },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhir_models::OdsCode;

    fn client(kind: ClientKind) -> Requester {
        Requester::client(RegisteredClient { name: "c".into(), kind, ods: OdsCode::parse("A81001").unwrap() })
    }

    #[test]
    fn an_unregistered_requester_is_denied_everything() {
        let anonymous = Requester::anonymous();
        let unregistered = Requester { client: None, unregistered_certificate: true };
        for interaction in [Interaction::Read, Interaction::SearchType, Interaction::Create, Interaction::Transaction] {
            let decision = decide_interaction(&anonymous, interaction, ResourceType::parse("Patient").ok());
            assert_eq!(decision, Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::Unauthenticated });
            let decision = decide_interaction(&unregistered, interaction, ResourceType::parse("Patient").ok());
            assert_eq!(decision, Decision::Deny { rule: Rule::ClientRegistration, code: DenyCode::AccessDenied });
        }
    }

    #[test]
    fn registered_clients_are_permitted_by_the_registration_rule() {
        let decision = decide_interaction(&client(ClientKind::Trust), Interaction::Create, ResourceType::parse("Encounter").ok());
        assert_eq!(decision, Decision::Permit { rule: Rule::ClientRegistration });
        assert!(decide_interaction(&client(ClientKind::Portal), Interaction::Read, None).is_permit());
        assert!(!decide_interaction(&client(ClientKind::Portal), Interaction::Update, None).is_permit());
    }
}
