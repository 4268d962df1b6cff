use fhir_models::{NhsNumber, OdsCode};

use crate::smart::{ScopeContext, SmartScopes};

/// What kind of system a registered client is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    GpSystem,
    Trust,
    Portal,
    Service,
}

impl ClientKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::GpSystem => "gp-system",
            Self::Trust => "trust",
            Self::Portal => "portal",
            Self::Service => "service",
        }
    }

    /// The scopes a client of this kind is registered for unless its entry says otherwise:
    /// GP systems and trusts act for their clinicians, trusts and services also as systems, the
    /// portal reads for its signed-in patients.
    pub fn default_scopes(&self) -> &'static [&'static str] {
        match self {
            Self::GpSystem => &["user/*.cruds"],
            Self::Trust => &["user/*.cruds", "system/*.cruds"],
            Self::Service => &["system/*.cruds"],
            Self::Portal => &["patient/*.rs"],
        }
    }
}

/// A client registered in the configuration, identified by its certificate.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegisteredClient {
    pub name: String,
    pub kind: ClientKind,
    pub ods: OdsCode,
    /// The widest SMART scopes a token presented with this client's certificate may carry.
    pub scopes: SmartScopes,
    /// The secondary-use purposes the client is approved for (an approved research or planning
    /// extraction); none unless its registration names them.
    pub secondary_uses: Vec<PurposeOfUse>,
}

/// A clinician, identified by a token from a clinician issuer (CIS2-style).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Clinician {
    /// The token's `sub`: the user's identifier at the issuer.
    pub subject: String,
    /// `requesting_practitioner_role`: the RBAC role (R-code), e.g. `R8000`.
    pub role: Option<String>,
    /// `requesting_organization`: the ODS code the clinician acts for.
    pub organisation: OdsCode,
    pub purpose: PurposeOfUse,
    /// `reason`: required for emergency access (ETREAT, BTG) and for a self-claimed relationship.
    pub reason: Option<String>,
    /// `legitimate_relationship: "self-claimed"`: the clinician asserts a relationship with the
    /// patient a search names (allowed, always audited as an alert).
    pub self_claimed: bool,
}

/// A patient, signed in through a patient issuer (NHS login-style).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PatientUser {
    pub subject: String,
    pub nhs_number: NhsNumber,
    /// `identity_proofing_level`: P0, P5 or P9.
    pub proofing_level: String,
}

impl PatientUser {
    /// Record access needs identity proven by photo ID (NHS login P9).
    pub fn may_access_records(&self) -> bool {
        self.proofing_level == "P9"
    }
}

/// A backend system acting for its organisation (SMART backend services).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SystemUser {
    /// The token's `sub` (for client_credentials, the OAuth client id).
    pub subject: String,
    pub organisation: OdsCode,
    pub purpose: PurposeOfUse,
}

/// Who a verified bearer token says is asking, with the SMART scopes it carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Principal {
    Clinician(Clinician, SmartScopes),
    Patient(PatientUser, SmartScopes),
    System(SystemUser, SmartScopes),
}

impl Principal {
    pub fn scopes(&self) -> &SmartScopes {
        match self {
            Self::Clinician(_, scopes) | Self::Patient(_, scopes) | Self::System(_, scopes) => scopes,
        }
    }

    /// The scope context this kind of principal may use.
    pub fn scope_context(&self) -> ScopeContext {
        match self {
            Self::Clinician(..) => ScopeContext::User,
            Self::Patient(..) => ScopeContext::Patient,
            Self::System(..) => ScopeContext::System,
        }
    }

    /// The organisation the principal acts for; patients act for themselves.
    pub fn organisation(&self) -> Option<&OdsCode> {
        match self {
            Self::Clinician(clinician, _) => Some(&clinician.organisation),
            Self::System(system, _) => Some(&system.organisation),
            Self::Patient(..) => None,
        }
    }
}

/// `purpose_of_use`, from HL7 v3 ActReason
/// (<https://terminology.hl7.org/CodeSystem-v3-ActReason.html>).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum PurposeOfUse {
    /// Direct care.
    Treatment,
    /// Emergency treatment: overrides dissent and relationship, always alerts.
    EmergencyTreatment,
    /// Break the glass: as ETREAT.
    BreakTheGlass,
    /// Secondary uses that honour the National Data Opt-out.
    Operations,
    Research,
    PublicHealth,
}

impl PurposeOfUse {
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "TREAT" => Self::Treatment,
            "ETREAT" => Self::EmergencyTreatment,
            "BTG" => Self::BreakTheGlass,
            "HOPERAT" => Self::Operations,
            "HRESCH" => Self::Research,
            "PUBHLTH" => Self::PublicHealth,
            _ => return None,
        })
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Treatment => "TREAT",
            Self::EmergencyTreatment => "ETREAT",
            Self::BreakTheGlass => "BTG",
            Self::Operations => "HOPERAT",
            Self::Research => "HRESCH",
            Self::PublicHealth => "PUBHLTH",
        }
    }

    /// Uses beyond the patient's own care: the National Data Opt-out and Type 1 opt-out apply.
    pub fn is_secondary(&self) -> bool {
        matches!(self, Self::Operations | Self::Research | Self::PublicHealth)
    }

    /// Emergency access must say why.
    pub fn needs_reason(&self) -> bool {
        matches!(self, Self::EmergencyTreatment | Self::BreakTheGlass)
    }
}

/// Who is asking: the connection's client certificate and the request's bearer token, both
/// already verified by the gateway. Every later decision reads this and nothing else.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Requester {
    /// The registered client whose certificate the connection presented, if any.
    pub client: Option<RegisteredClient>,
    /// The connection presented a certificate from a trusted CA that no client is registered
    /// with.
    pub unregistered_certificate: bool,
    /// Who the bearer token says is asking, if a token was presented.
    pub principal: Option<Principal>,
}

impl Requester {
    pub fn anonymous() -> Self {
        Self { client: None, unregistered_certificate: false, principal: None }
    }

    pub fn client(client: RegisteredClient) -> Self {
        Self { client: Some(client), unregistered_certificate: false, principal: None }
    }

    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }
}
