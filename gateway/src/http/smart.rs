//! `/.well-known/smart-configuration` (SMART App Launch 2.x): how to get a token this gateway
//! accepts. Built from the registered issuers and what their OpenID discovery said, so it only
//! claims what is configured.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::IssuerDescription;
use crate::configuration::IssuerKind;

/// The SMART v2 resource scopes the gateway enforces, per context (v1 `.read`/`.write` too).
const SCOPES_SUPPORTED: [&str; 9] = [
    "openid",
    "profile",
    "launch/patient",
    "patient/*.rs",
    "patient/*.read",
    "user/*.cruds",
    "user/*.read",
    "system/*.cruds",
    "system/*.read",
];

pub async fn smart_configuration(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").json(document(&state.authenticator.describe()))
}

pub fn document(issuers: &[IssuerDescription]) -> Value {
    let has = |kind: IssuerKind| issuers.iter().any(|issuer| issuer.kind == kind);
    // The issuer an app would sign a person in with: patients first (the portal), then staff.
    let primary = [IssuerKind::Patient, IssuerKind::Clinician, IssuerKind::System]
        .into_iter()
        .find_map(|kind| issuers.iter().find(|issuer| issuer.kind == kind));
    let mut grant_types = Vec::new();
    if has(IssuerKind::Patient) || has(IssuerKind::Clinician) {
        grant_types.push("authorization_code");
    }
    if has(IssuerKind::System) {
        grant_types.push("client_credentials");
    }
    let mut capabilities = vec!["permission-v1", "permission-v2"];
    if has(IssuerKind::Patient) {
        capabilities.extend(["launch-standalone", "client-public", "permission-patient", "sso-openid-connect"]);
    }
    if has(IssuerKind::Clinician) {
        capabilities.push("permission-user");
    }
    if has(IssuerKind::System) {
        capabilities.push("client-confidential-asymmetric");
    }
    let mut document = json!({
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
        "response_types_supported": ["code"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": capabilities,
        // Not SMART: every issuer the gateway trusts, each for one kind of requester (DESIGN §6).
        "hie_gateway_issuers": issuers.iter().map(|issuer| json!({
            "issuer": issuer.issuer,
            "kind": issuer.kind.as_str(),
            "audience": issuer.audience,
            "token_endpoint": issuer.endpoints.token_endpoint,
        })).collect::<Vec<_>>(),
        "hie_gateway_token_binding": "clinician and system tokens must arrive over mutual TLS with a client certificate registered \
            to the organisation in requesting_organization; a cnf.x5t#S256 claim (RFC 8705) must match that certificate",
    });
    if let Some(primary) = primary {
        document["issuer"] = json!(primary.issuer);
        for (name, value) in [
            ("authorization_endpoint", &primary.endpoints.authorization_endpoint),
            ("token_endpoint", &primary.endpoints.token_endpoint),
            ("jwks_uri", &primary.endpoints.jwks_uri),
        ] {
            if let Some(value) = value {
                document[name] = json!(value);
            }
        }
    }
    document
}
