//! The CapabilityStatement builder. The gateway describes what it really does; this module
//! only shapes that description as FHIR.

use serde_json::{Value, json};

pub struct ServerDescription<'a> {
    pub base_url: &'a str,
    pub software_name: &'a str,
    pub software_version: &'a str,
    /// FHIR dateTime the statement is dated.
    pub date: &'a str,
    /// `rest.security.description`.
    pub security: &'a str,
    /// SMART on FHIR: the authorization server's endpoints when known (`oauth-uris`), and
    /// whether the service is offered at all.
    pub smart: Option<SmartEndpoints<'a>>,
    /// Whole-system interactions (`transaction`, `batch`, `history-system`).
    pub system_interactions: &'a [&'a str],
}

pub struct SmartEndpoints<'a> {
    pub authorize: Option<&'a str>,
    pub token: Option<&'a str>,
}

pub struct SearchParamCapability<'a> {
    pub name: &'a str,
    /// `token`, `string`…
    pub kind: &'a str,
    pub definition: Option<&'a str>,
    pub documentation: Option<&'a str>,
}

pub struct TypeCapability<'a> {
    pub resource_type: &'a str,
    pub interactions: &'a [&'a str],
    pub search_params: Vec<SearchParamCapability<'a>>,
    /// `_include` values (`Type:param`, `Type:*`).
    pub search_include: Vec<String>,
    /// `_revinclude` values: the reference parameters of other types that can refer to this one.
    pub search_rev_include: Vec<String>,
    /// (name, canonical definition)
    pub operations: &'a [(&'a str, &'a str)],
}

pub fn capability_statement<'a>(server: &ServerDescription<'_>, types: impl IntoIterator<Item = TypeCapability<'a>>) -> Value {
    let resources: Vec<Value> = types
        .into_iter()
        .map(|capability| {
            let mut resource = json!({
                "type": capability.resource_type,
                "interaction": capability.interactions.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
            });
            if !capability.search_params.is_empty() {
                resource["searchParam"] = capability
                    .search_params
                    .iter()
                    .map(|param| {
                        let mut entry = json!({"name": param.name, "type": param.kind});
                        if let Some(definition) = param.definition {
                            entry["definition"] = json!(definition);
                        }
                        if let Some(documentation) = param.documentation {
                            entry["documentation"] = json!(documentation);
                        }
                        entry
                    })
                    .collect();
            }
            if !capability.search_include.is_empty() {
                resource["searchInclude"] = json!(capability.search_include);
            }
            if !capability.search_rev_include.is_empty() {
                resource["searchRevInclude"] = json!(capability.search_rev_include);
            }
            if !capability.operations.is_empty() {
                resource["operation"] =
                    capability.operations.iter().map(|(name, definition)| json!({"name": name, "definition": definition})).collect();
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": server.date,
        "publisher": "HIE Gateway",
        "kind": "instance",
        "software": {"name": server.software_name, "version": server.software_version},
        "implementation": {"description": "HIE Gateway FHIR R4 (UK Core) API", "url": server.base_url},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": security(server),
            "resource": resources,
            "interaction": server.system_interactions.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
        }],
    })
}

fn security(server: &ServerDescription) -> Value {
    let mut security = json!({"cors": false, "description": server.security});
    if let Some(smart) = &server.smart {
        security["service"] = json!([{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR",
        }]}]);
        let uris: Vec<Value> = [("authorize", smart.authorize), ("token", smart.token)]
            .into_iter()
            .filter_map(|(name, url)| url.map(|url| json!({"url": name, "valueUri": url})))
            .collect();
        if !uris.is_empty() {
            security["extension"] = json!([{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": uris,
            }]);
        }
    }
    security
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_valid_capability_statement() {
        let statement = capability_statement(
            &ServerDescription {
                base_url: "https://127.0.0.1:8443/fhir/r4",
                software_name: "hie-gateway",
                software_version: "0.1.0",
                date: "2026-11-22",
                security: "mutual TLS",
                smart: None,
                system_interactions: &["transaction", "batch"],
            },
            [TypeCapability {
                resource_type: "Patient",
                interactions: &["read", "create"],
                search_params: vec![SearchParamCapability { name: "identifier", kind: "token", definition: None, documentation: None }],
                search_include: vec!["Patient:general-practitioner".into()],
                search_rev_include: vec!["Observation:subject".into()],
                operations: &[("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate")],
            }],
        );
        let validator = crate::SchemaValidator::new(crate::FHIR_R4_SCHEMA).unwrap();
        let mut report = crate::Report::default();
        validator.validate(fhir_models::ResourceType::parse("CapabilityStatement").unwrap(), &statement, &mut report);
        assert!(report.issues.is_empty(), "{:?}", report.issues);
        assert_eq!(statement["rest"][0]["resource"][0]["searchParam"][0]["name"], "identifier");
    }
}
