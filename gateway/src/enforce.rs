//! The enforcement point. Every route that touches patient data needs a [`Permitted`], and the
//! only way to get one is [`authorize`], which asks the policy engine. A refusal is an
//! [`ApiError`] before any data is read.

use consent::{Decision, DenyCode, Requester};
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
    pub fn write_context(&self) -> WriteContext {
        WriteContext { source_org: self.requester.client.as_ref().map(|client| client.ods.clone()) }
    }

    /// Permission for another interaction by the same requester (an entry of a batch).
    pub fn reauthorize(&self, interaction: Interaction, resource_type: Option<ResourceType>) -> Result<Permitted, ApiError> {
        authorize(self.requester.clone(), interaction, resource_type)
    }
}

pub fn authorize(requester: Requester, interaction: Interaction, resource_type: Option<ResourceType>) -> Result<Permitted, ApiError> {
    match consent::decide_interaction(&requester, interaction, resource_type) {
        Decision::Permit { rule } => Ok(Permitted { requester, interaction, rule: rule.name() }),
        Decision::Deny { rule, code } => {
            tracing::info!(rule = rule.name(), interaction = interaction.code(), "request denied");
            Err(match code {
                DenyCode::Unauthenticated => ApiError::Unauthenticated(
                    "a client certificate registered with this gateway is required; none was presented, or it is not registered".into(),
                ),
                code => ApiError::Forbidden { code, rule: rule.name(), message: format!("{interaction} is not permitted for this client") },
            })
        }
    }
}
