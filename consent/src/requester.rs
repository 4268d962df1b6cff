use fhir_models::OdsCode;

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
}

/// A client registered in the configuration, identified by its certificate.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegisteredClient {
    pub name: String,
    pub kind: ClientKind,
    pub ods: OdsCode,
}

/// Who is asking. Grows with the identity work (clinician, patient, purpose of use, scopes).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Requester {
    /// The registered client whose certificate the connection presented, if any.
    pub client: Option<RegisteredClient>,
    /// The connection presented a certificate from a trusted CA that no client is registered
    /// with.
    pub unregistered_certificate: bool,
}

impl Requester {
    pub fn anonymous() -> Self {
        Self { client: None, unregistered_certificate: false }
    }

    pub fn client(client: RegisteredClient) -> Self {
        Self { client: Some(client), unregistered_certificate: false }
    }
}
