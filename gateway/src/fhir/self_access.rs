//! A patient's own record: what a patient principal may see is the patient compartment of the
//! Patient resources that carry their NHS number. The restriction is one more search filter, so
//! totals and paging links count only what the patient may see.

use consent::Principal;
use fhir_models::ResourceType;
use fhir_models::outcome::IssueType;

use super::FhirService;
use super::search_params::{Handling, parse_search};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::query::{Filter, SearchQuery};

/// The filter that keeps a patient principal inside their own compartment; `None` for other
/// requesters (their data-level rules are the consent engine's).
pub async fn filter(service: &FhirService, permit: &Permitted) -> Result<Option<Filter>, ApiError> {
    let Some(Principal::Patient(patient, _)) = &permit.requester().principal else {
        return Ok(None);
    };
    let patient_type = ResourceType::parse("Patient").expect("Patient is an R4 type");
    let params = [
        ("identifier".to_owned(), format!("{}|{}", fhir_models::system::NHS_NUMBER, patient.nhs_number)),
        ("_count".to_owned(), "10".to_owned()),
    ];
    let query = parse_search(patient_type, &params, &service.limits, Handling::Strict)?.query;
    let page = service.store.search(&query).await?;
    let compartments: Vec<Filter> = page.matches.into_iter().map(|patient| Filter::PatientCompartment(patient.id)).collect();
    Ok(Some(match compartments.len() {
        0 => Filter::Nothing,
        _ => Filter::AnyOf(compartments),
    }))
}

/// Refuse what a patient principal's search could use to reach beyond their compartment.
pub fn check_search(permit: &Permitted, query: &SearchQuery) -> Result<(), ApiError> {
    if matches!(permit.requester().principal, Some(Principal::Patient(..))) && !query.includes.is_empty() {
        return Err(ApiError::invalid_at(
            IssueType::NotSupported,
            "_include",
            "_include and _revinclude are not available to patients yet; search each type of your record instead",
        ));
    }
    Ok(())
}

/// Whether `resource_type/id` is inside a patient principal's compartment (always true for
/// other requesters). Outside is answered as not found, exactly like a missing resource.
pub async fn is_visible(service: &FhirService, permit: &Permitted, resource_type: ResourceType, id: &str) -> Result<bool, ApiError> {
    let Some(filter) = filter(service, permit).await? else {
        return Ok(true);
    };
    let mut query = SearchQuery::new(resource_type, 1);
    query.filters.push(Filter::Ids(vec![id.to_owned()]));
    query.filters.push(filter);
    Ok(!service.store.search(&query).await?.matches.is_empty())
}
