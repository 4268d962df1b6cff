//! `capabilities`: the CapabilityStatement, generated from what the gateway really supports.

use conformance::capability::{SearchParamCapability, ServerDescription, SmartEndpoints, TypeCapability};
use fhir_models::ResourceType;
use fhir_models::search::{ParamKind, table};

use super::FhirService;
use super::search_params::is_supported;

/// What a parameter of each type accepts.
fn documentation(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::Token => "system|code, |code, system| or code; modifiers :not, :text, :missing",
        ParamKind::String => "starts with, ignoring case and accents; modifiers :exact, :contains, :missing",
        ParamKind::Date => "prefixes eq ne gt lt ge le sa eb ap; any precision; modifier :missing; chains",
        ParamKind::Number | ParamKind::Quantity => {
            "prefixes eq ne gt lt ge le sa eb ap with the value's precision; quantities number|system|code or number||code; :missing"
        }
        ParamKind::Uri => "exact; modifiers :below, :above, :missing",
        ParamKind::Reference => "Type/id, id or an absolute URL; modifiers :[type], :identifier, :missing; chains (3 levels); _has",
        ParamKind::Composite => "token$value, the two from the same element; :missing",
        ParamKind::Special => "",
    }
}

/// Interactions every resource type supports.
pub const TYPE_INTERACTIONS: [&str; 8] = ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"];

pub const SYSTEM_INTERACTIONS: [&str; 3] = ["transaction", "batch", "history-system"];

pub const VALIDATE_OPERATION: (&str, &str) = ("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate");

pub fn capability_statement(service: &FhirService, issuers: &[crate::auth::IssuerDescription]) -> Vec<u8> {
    let date = &fhir_models::datetime::format_instant(service.now())[..10];
    let types = ResourceType::all().map(|resource_type| {
        let mut search_params: Vec<SearchParamCapability> = table()
            .params(resource_type)
            .filter(|param| is_supported(param))
            .map(|param| SearchParamCapability {
                name: &param.code,
                kind: param.kind.code(),
                definition: Some(&param.url),
                documentation: Some(documentation(param.kind)),
            })
            .collect();
        for (name, kind, documentation) in [
            ("_count", "number", "page size, at most the server's limit"),
            ("_total", "token", "none | estimate | accurate (default: accurate; an estimate is exact)"),
            ("_sort", "special", "up to three parameters, - for descending; ties by store order"),
            ("_summary", "token", "true | false | text | data | count"),
            ("_elements", "special", "top-level elements, comma-separated"),
        ] {
            search_params.push(SearchParamCapability { name, kind, definition: None, documentation: Some(documentation) });
        }
        let mut search_include: Vec<String> = table()
            .params(resource_type)
            .filter(|param| param.kind == ParamKind::Reference)
            .map(|param| format!("{resource_type}:{}", param.code))
            .collect();
        if !search_include.is_empty() {
            search_include.push(format!("{resource_type}:*"));
        }
        let search_rev_include: Vec<String> = ResourceType::all()
            .flat_map(|source| {
                table()
                    .params(source)
                    .filter(move |param| param.kind == ParamKind::Reference && param.targets.contains(&resource_type))
                    .map(move |param| format!("{source}:{}", param.code))
            })
            .collect();
        TypeCapability {
            resource_type: resource_type.as_str(),
            search_rev_include,
            interactions: &TYPE_INTERACTIONS,
            search_params,
            search_include,
            operations: std::slice::from_ref(&VALIDATE_OPERATION),
        }
    });
    let statement = conformance::capability::capability_statement(
        &ServerDescription {
            base_url: &service.base_url,
            software_name: "hie-gateway",
            software_version: env!("CARGO_PKG_VERSION"),
            date,
            security: "Mutual TLS and bearer tokens (SMART on FHIR v2 scopes; see /.well-known/smart-configuration). Clinician \
                       and system tokens must arrive with a client certificate registered to the organisation the token names \
                       (requesting_organization); a patient's token (NHS login-style, identity_proofing_level P9) reads that \
                       patient's own record without a certificate. Every interaction except this CapabilityStatement and the \
                       SMART configuration needs a token.",
            smart: (!issuers.is_empty()).then(|| {
                let primary = issuers
                    .iter()
                    .find(|issuer| issuer.endpoints.authorization_endpoint.is_some())
                    .or_else(|| issuers.first())
                    .expect("not empty");
                SmartEndpoints {
                    authorize: primary.endpoints.authorization_endpoint.as_deref(),
                    token: primary.endpoints.token_endpoint.as_deref(),
                }
            }),
            system_interactions: &SYSTEM_INTERACTIONS,
        },
        types,
    );
    serde_json::to_vec(&statement).expect("a CapabilityStatement serialises")
}
