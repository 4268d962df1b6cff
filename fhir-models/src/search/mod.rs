//! The R4 search parameters, generated from the official definitions
//! (`scripts/generate-fhir-tables.py` → `data/search-parameters.json`), and the extraction of
//! index values from a resource.

mod definitions;
mod extract;

pub use definitions::{Component, ParamKind, ParamPath, SearchParamDef, SearchParamTable, Step, StepSelect, table};
pub use extract::{
    CompositeEntry, DateEntry, IndexEntries, NumberEntry, QuantityEntry, ReferenceEntry, StringEntry, TokenEntry, UriEntry, extract,
    extract_some, normalize_string,
};
