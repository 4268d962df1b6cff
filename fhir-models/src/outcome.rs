//! OperationOutcome: how every error, warning and rejection is reported.

use serde::Serialize;

use crate::system::SPINE_ERROR_OR_WARNING_CODE;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueSeverity {
    Fatal,
    Error,
    Warning,
    Information,
}

/// The `issue.code` value set (<http://hl7.org/fhir/R4/valueset-issue-type.html>).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Unknown,
    Expired,
    Forbidden,
    Suppressed,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    Extension,
    TooCostly,
    BusinessRule,
    Conflict,
    Transient,
    LockError,
    NoStore,
    Exception,
    Timeout,
    Incomplete,
    Throttled,
    Informational,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Coding {
    pub system: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CodeableConcept {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Issue {
    pub severity: IssueSeverity,
    pub code: IssueType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    /// FHIRPath of the element the issue is about (`Patient.identifier[0].value`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

impl Issue {
    pub fn new(severity: IssueSeverity, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self { severity, code, details: None, diagnostics: Some(diagnostics.into()), expression: Vec::new() }
    }

    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::new(IssueSeverity::Error, code, diagnostics)
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    /// Attach a GP Connect-style Spine error code (`NO_PATIENT_CONSENT`, `INVALID_RESOURCE`…).
    pub fn with_spine_code(mut self, code: &str, display: &str) -> Self {
        self.details = Some(CodeableConcept {
            coding: vec![Coding {
                system: SPINE_ERROR_OR_WARNING_CODE.to_owned(),
                code: code.to_owned(),
                display: Some(display.to_owned()),
            }],
            text: None,
        });
        self
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    resource_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub issue: Vec<Issue>,
}

impl OperationOutcome {
    pub fn new(issue: Vec<Issue>) -> Self {
        Self { resource_type: "OperationOutcome", id: None, issue }
    }

    pub fn single(issue: Issue) -> Self {
        Self::new(vec![issue])
    }

    /// An outcome reporting success (`informational`), as `$validate` and
    /// `Prefer: return=OperationOutcome` return it.
    pub fn all_ok(message: impl Into<String>) -> Self {
        Self::single(Issue::new(IssueSeverity::Information, IssueType::Informational, message))
    }

    pub fn has_errors(&self) -> bool {
        self.issue.iter().any(|issue| matches!(issue.severity, IssueSeverity::Error | IssueSeverity::Fatal))
    }

    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an OperationOutcome always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_fhir() {
        let outcome = OperationOutcome::single(
            Issue::error(IssueType::Value, "bad NHS number")
                .at("Patient.identifier[0].value")
                .with_spine_code("INVALID_NHS_NUMBER", "Invalid NHS number"),
        );
        let json: serde_json::Value = serde_json::from_slice(&outcome.to_json_bytes()).unwrap();
        assert_eq!(json["resourceType"], "OperationOutcome");
        assert_eq!(json["issue"][0]["code"], "value");
        assert_eq!(json["issue"][0]["expression"][0], "Patient.identifier[0].value");
        assert_eq!(json["issue"][0]["details"]["coding"][0]["code"], "INVALID_NHS_NUMBER");
        assert!(outcome.has_errors());
    }
}
