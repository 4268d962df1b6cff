//! The enforcement point. Every route that touches patient data needs a [`Permitted`], and the
//! only way to get one is [`authorize`], which asks the policy engine. A refusal is an
//! [`ApiError`] before any data is read.

use consent::{Decision, DenyCode, Requester, Rule};
use fhir_models::ResourceType;
use fhir_models::interaction::Interaction;

use crate::error::ApiError;
use crate::fhir::WriteContext;

/// Evidence that the policy engine permitted an interaction. Not constructible elsewhere.
#[derive(Debug)]
pub struct Permitted {
    requester: Requester,
    interaction: Interaction,
    rule: &'static str,
}

impl Permitted {
    pub fn requester(&self) -> &Requester {
        &self.requester
    }

    pub fn interaction(&self) -> Interaction {
        self.interaction
    }

    pub fn rule(&self) -> &'static str {
        self.rule
    }

    /// What a write records about who made it.
    /// The context of this requester's writes, with what they may see (`scope`).
    pub fn write_context(&self, scope: Option<std::sync::Arc<consent::Scope>>) -> WriteContext {
        WriteContext { source_org: self.requester.client.as_ref().map(|client| client.ods.clone()), scope }
    }

    /// Permission for another interaction by the same requester (an entry of a batch).
    pub fn reauthorize(&self, interaction: Interaction, resource_type: Option<ResourceType>) -> Result<Permitted, ApiError> {
        authorize(self.requester.clone(), interaction, resource_type)
    }
}

pub fn authorize(requester: Requester, interaction: Interaction, resource_type: Option<ResourceType>) -> Result<Permitted, ApiError> {
    let decision = consent::decide_interaction(&requester, interaction, resource_type);
    crate::audit::record(|note| {
        // A batch's entries are authorised again: the bundle's own interaction names the request.
        if note.interaction.is_none() {
            note.interaction = Some(interaction.code().into());
            note.resource_type = resource_type.map(|t| t.as_str().to_owned());
        }
        if note.rule.is_none() || !decision.is_permit() {
            note.rule = Some(decision.rule().name().to_owned());
        }
    });
    match decision {
        Decision::Permit { rule } => Ok(Permitted { requester, interaction, rule: rule.name() }),
        Decision::Deny { rule, code } => {
            tracing::info!(rule = rule.name(), interaction = interaction.code(), "request denied");
            Err(match code {
                DenyCode::Unauthenticated => ApiError::Unauthenticated(unauthenticated_message(rule).into()),
                code => ApiError::Forbidden { code, rule: rule.name(), message: forbidden_message(rule, interaction, resource_type) },
            })
        }
    }
}

fn unauthenticated_message(rule: Rule) -> &'static str {
    match rule {
        Rule::BearerToken => "a bearer token is required: a client certificate alone does not say who is asking",
        Rule::TokenBinding => "clinician and system tokens must arrive over a connection with a registered client certificate",
        _ => "a client certificate registered with this gateway, or a patient's token, is required",
    }
}

/// Says which rule refused, never whether the target exists: the message depends only on the
/// requester, the interaction and the type.
fn forbidden_message(rule: Rule, interaction: Interaction, resource_type: Option<ResourceType>) -> String {
    let target = resource_type.map_or_else(|| "the system".to_owned(), |t| t.as_str().to_owned());
    match rule {
        Rule::ClientRegistration => "the client certificate is not registered with this gateway".to_owned(),
        Rule::TokenBinding => {
            "the token's requesting_organization is not the organisation the client certificate is registered to".to_owned()
        }
        Rule::RegisteredScopes => "the token carries scopes wider than the client is registered for".to_owned(),
        Rule::TokenScopes => format!("the token's scopes do not permit {interaction} on {target}"),
        Rule::PatientSelfAccess => {
            "patients may read and search their own record, with identity proven to P9 (identity_proofing_level)".to_owned()
        }
        Rule::SecondaryUse => format!(
            "secondary-use purposes (HOPERAT, HRESCH, PUBHLTH) are served only to clients registered for that purpose, and only \
             for reading (read, vread, search, $everything, a resource's history); a client registered for secondary use serves \
             nothing else; not {interaction} on {target} for this token's purpose"
        ),
        Rule::BearerToken | Rule::TokenClaims => format!("{interaction} on {target} is not permitted for this requester"),
    }
}
