//! Identifier-system, code-system and extension URIs used across the gateway.

pub const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ODS_ORGANIZATION_CODE: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const ODS_SITE_CODE: &str = "https://fhir.nhs.uk/Id/ods-site-code";
pub const SDS_USER_ID: &str = "https://fhir.nhs.uk/Id/sds-user-id";
pub const SDS_ROLE_PROFILE_ID: &str = "https://fhir.nhs.uk/Id/sds-role-profile-id";

pub const SNOMED_CT: &str = "http://snomed.info/sct";
pub const READ_V2: &str = "http://read.info/readv2";
pub const CTV3: &str = "http://read.info/ctv3";

pub const NHS_NUMBER_VERIFICATION_STATUS_EXTENSION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus";

/// Security labels.
pub const V3_CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
pub const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const V3_ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// GP Connect-style error codes in OperationOutcome.issue.details.
pub const SPINE_ERROR_OR_WARNING_CODE: &str = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1";
