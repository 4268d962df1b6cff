//! `capabilities`: the CapabilityStatement, generated from what the gateway really supports.

use conformance::capability::{SearchParamCapability, ServerDescription, TypeCapability};
use fhir_models::ResourceType;
use fhir_models::search::{ParamKind, table};

use super::FhirService;

/// Interactions every resource type supports.
pub const TYPE_INTERACTIONS: [&str; 8] = ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"];

pub const SYSTEM_INTERACTIONS: [&str; 3] = ["transaction", "batch", "history-system"];

pub const VALIDATE_OPERATION: (&str, &str) = ("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate");

/// Whether the search layer supports a parameter (see `search_params`).
pub fn is_supported_search_param(code: &str, kind: ParamKind) -> bool {
    code == "_id" || kind == ParamKind::Token
}

pub fn capability_statement(service: &FhirService) -> Vec<u8> {
    let date = &fhir_models::datetime::format_instant(service.now())[..10];
    let types = ResourceType::all().map(|resource_type| {
        let mut search_params: Vec<SearchParamCapability> = table()
            .params(resource_type)
            .filter(|param| is_supported_search_param(&param.code, param.kind))
            .map(|param| SearchParamCapability {
                name: &param.code,
                kind: param.kind.code(),
                definition: Some(&param.url),
                documentation: (param.kind == ParamKind::Token).then_some("system|code, |code, system| or code; modifier :not"),
            })
            .collect();
        for (name, kind, documentation) in [
            ("_count", "number", "page size, at most the server's limit"),
            ("_total", "token", "none | estimate | accurate (default: accurate)"),
        ] {
            search_params.push(SearchParamCapability { name, kind, definition: None, documentation: Some(documentation) });
        }
        TypeCapability {
            resource_type: resource_type.as_str(),
            interactions: &TYPE_INTERACTIONS,
            search_params,
            operations: std::slice::from_ref(&VALIDATE_OPERATION),
        }
    });
    let statement = conformance::capability::capability_statement(
        &ServerDescription {
            base_url: &service.base_url,
            software_name: "hie-gateway",
            software_version: env!("CARGO_PKG_VERSION"),
            date,
            security: "Mutual TLS: a client certificate registered with the gateway (ODS organisation, client kind) is required for \
                       every interaction except this CapabilityStatement.",
            system_interactions: &SYSTEM_INTERACTIONS,
        },
        types,
    );
    serde_json::to_vec(&statement).expect("a CapabilityStatement serialises")
}
