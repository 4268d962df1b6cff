use fhir_models::OperationOutcome;
use fhir_models::outcome::{Issue, IssueSeverity, IssueType};

/// What validation found: issues with a FHIRPath location each. Empty means acceptable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub issues: Vec<Issue>,
}

impl Report {
    pub fn error(&mut self, code: IssueType, expression: String, diagnostics: impl Into<String>) {
        self.issues.push(Issue::error(code, diagnostics).at(expression));
    }

    pub fn push(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    pub fn is_acceptable(&self) -> bool {
        !self.issues.iter().any(|issue| matches!(issue.severity, IssueSeverity::Error | IssueSeverity::Fatal))
    }

    pub fn into_outcome(self) -> OperationOutcome {
        OperationOutcome::new(self.issues)
    }
}
