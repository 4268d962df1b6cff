use std::fmt;

/// The rules of DESIGN §4, each named so that every decision can say which one decided it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Rule {
    /// 1. The client must be registered (its certificate).
    ClientRegistration,
    /// 1a. A client certificate alone reads nothing: a bearer token must say who is asking.
    BearerToken,
    /// 1b. Clinician and system tokens arrive with a certificate registered to the same
    /// organisation they claim to act for.
    TokenBinding,
    /// 1e. A token's claims must fit its issuer's kind, and emergency access must give a reason.
    TokenClaims,
    /// 1c. A token may carry no scope wider than the client is registered for.
    RegisteredScopes,
    /// 1d. The token's SMART scopes must cover the interaction on the resource type.
    TokenScopes,
    /// 2. Patients read their own record only, with identity proven to P9.
    PatientSelfAccess,
    /// 5. Secondary-use purposes (HOPERAT, HRESCH, PUBHLTH): only for clients approved for
    ///    them, reading only; the patients' opt-outs are applied per resource.
    SecondaryUse,
}

impl Rule {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientRegistration => "client-registration",
            Self::BearerToken => "bearer-token",
            Self::TokenBinding => "token-binding",
            Self::TokenClaims => "token-claims",
            Self::RegisteredScopes => "registered-scopes",
            Self::TokenScopes => "token-scopes",
            Self::PatientSelfAccess => "patient-self-access",
            Self::SecondaryUse => "secondary-use",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request is refused, in GP Connect's vocabulary where it has one.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum DenyCode {
    /// No registered client and no valid token: 401.
    Unauthenticated,
    /// `ACCESS DENIED` (with a space, as GP Connect spells it): 403.
    AccessDenied,
    /// The patient has dissented: 403 `NO_PATIENT_CONSENT`.
    NoPatientConsent,
    /// No legitimate relationship: 403 `NO_RELATIONSHIP`.
    NoRelationship,
}

impl DenyCode {
    pub fn spine_code(&self) -> &'static str {
        match self {
            Self::Unauthenticated | Self::AccessDenied => "ACCESS DENIED",
            Self::NoPatientConsent => "NO_PATIENT_CONSENT",
            Self::NoRelationship => "NO_RELATIONSHIP",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decision {
    Permit { rule: Rule },
    Deny { rule: Rule, code: DenyCode },
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Self::Permit { .. })
    }

    pub fn rule(&self) -> Rule {
        match self {
            Self::Permit { rule } | Self::Deny { rule, .. } => *rule,
        }
    }
}
