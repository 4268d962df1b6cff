/// Turn a JSON pointer into the FHIRPath-style location FHIR uses in
/// `OperationOutcome.issue.expression`: `/identifier/0/value` on a Patient becomes
/// `Patient.identifier[0].value`.
pub fn pointer_to_fhirpath(root: &str, pointer: &str) -> String {
    let mut out = String::from(root);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            out.push('.');
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_pointers() {
        assert_eq!(pointer_to_fhirpath("Patient", ""), "Patient");
        assert_eq!(pointer_to_fhirpath("Patient", "/identifier/0/value"), "Patient.identifier[0].value");
        assert_eq!(pointer_to_fhirpath("Bundle", "/entry/3/resource/a~1b"), "Bundle.entry[3].resource.a/b");
    }
}
