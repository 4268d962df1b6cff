use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::resource_type::ResourceType;

const TABLE_JSON: &str = include_str!("../../data/search-parameters.json");

#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamKind {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Composite => "composite",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
            Self::Special => "special",
        }
    }
}

/// How one step of a path picks children.
#[derive(Clone, Debug, PartialEq)]
pub enum StepSelect {
    /// A JSON member by name.
    Key(String),
    /// `extension('url')`: the extensions with that url.
    Extension(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub select: StepSelect,
    /// `where(field = 'value')`
    pub where_eq: Option<(String, String)>,
    /// `where(resolve() is Type)`
    pub target: Option<ResourceType>,
    /// `where(hasExtension('url'))`
    pub has_extension: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamPath {
    pub steps: Vec<Step>,
    /// The FHIR datatype the path ends on (`CodeableConcept`, `dateTime`, `Reference`…).
    pub datatype: String,
    /// For composite parameters: the components, evaluated on each element the path selects.
    pub components: Vec<Component>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// The id of the component's SearchParameter (`clinical-code`).
    pub definition: String,
    pub kind: ParamKind,
    pub paths: Vec<ParamPath>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchParamDef {
    pub code: String,
    pub url: String,
    pub kind: ParamKind,
    pub paths: Vec<ParamPath>,
    /// For references: the resource types the parameter may point at.
    pub targets: Vec<ResourceType>,
}

/// Every search parameter of every resource type, plus the patient compartment.
pub struct SearchParamTable {
    by_type: HashMap<ResourceType, Vec<SearchParamDef>>,
    common: Vec<SearchParamDef>,
    patient_compartment: HashMap<ResourceType, Vec<String>>,
    summary_elements: HashMap<ResourceType, Vec<String>>,
}

impl SearchParamTable {
    /// The top-level elements `_summary=true` keeps: those the definition marks as summary, and
    /// those a resource must have.
    pub fn summary_elements(&self, resource_type: ResourceType) -> &[String] {
        self.summary_elements.get(&resource_type).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The parameters of a type, the common `_id`, `_lastUpdated`, `_tag`… first.
    pub fn params(&self, resource_type: ResourceType) -> impl Iterator<Item = &SearchParamDef> {
        self.common.iter().chain(self.by_type.get(&resource_type).into_iter().flatten())
    }

    pub fn get(&self, resource_type: ResourceType, code: &str) -> Option<&SearchParamDef> {
        self.params(resource_type).find(|param| param.code == code)
    }

    /// The reference parameters that put a resource of this type into a patient's compartment
    /// (`Observation` → `subject`, `performer`). Empty for types outside the compartment.
    pub fn patient_compartment_params(&self, resource_type: ResourceType) -> &[String] {
        self.patient_compartment.get(&resource_type).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn in_patient_compartment(&self, resource_type: ResourceType) -> bool {
        resource_type.as_str() == "Patient" || self.patient_compartment.contains_key(&resource_type)
    }
}

/// The table, parsed once on first use.
pub fn table() -> &'static SearchParamTable {
    static TABLE: OnceLock<SearchParamTable> = OnceLock::new();
    TABLE.get_or_init(|| parse(TABLE_JSON).expect("the generated search-parameter table is valid"))
}

#[derive(Deserialize)]
struct RawTable {
    parameters: HashMap<String, HashMap<String, RawParam>>,
    patient_compartment: HashMap<String, Vec<String>>,
    summary_elements: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawParam {
    code: String,
    url: String,
    #[serde(rename = "type")]
    kind: ParamKind,
    paths: Vec<RawPath>,
    #[serde(default)]
    target: Vec<String>,
}

#[derive(Deserialize)]
struct RawPath {
    steps: Vec<RawStep>,
    #[serde(rename = "type")]
    datatype: String,
    #[serde(default)]
    components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    definition: String,
    #[serde(rename = "type")]
    kind: ParamKind,
    paths: Vec<RawPath>,
}

#[derive(Deserialize)]
struct RawStep {
    key: Option<String>,
    extension: Option<String>,
    #[serde(rename = "where")]
    where_eq: Option<(String, String)>,
    target: Option<String>,
    has_extension: Option<String>,
}

fn convert_path(raw: RawPath) -> Result<ParamPath, String> {
    let steps = raw
        .steps
        .into_iter()
        .map(|step| {
            let select = match (step.key, step.extension) {
                (Some(key), None) => StepSelect::Key(key),
                (None, Some(url)) => StepSelect::Extension(url),
                _ => return Err("a step selects by key or by extension".to_owned()),
            };
            let target = step.target.map(|name| ResourceType::parse(&name).map_err(|e| e.to_string())).transpose()?;
            Ok(Step { select, where_eq: step.where_eq, target, has_extension: step.has_extension })
        })
        .collect::<Result<_, String>>()?;
    let components = raw
        .components
        .into_iter()
        .map(|component| {
            Ok(Component {
                definition: component.definition,
                kind: component.kind,
                paths: component.paths.into_iter().map(convert_path).collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ParamPath { steps, datatype: raw.datatype, components })
}

fn parse(json: &str) -> Result<SearchParamTable, String> {
    let raw: RawTable = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut by_type = HashMap::new();
    let mut common = Vec::new();
    for (type_name, params) in raw.parameters {
        let mut defs = Vec::with_capacity(params.len());
        for (_, param) in params {
            let mut targets: Vec<ResourceType> = param.target.iter().filter_map(|name| ResourceType::parse(name).ok()).collect();
            let paths: Vec<ParamPath> = param.paths.into_iter().map(convert_path).collect::<Result<_, _>>()?;
            // `subject.where(resolve() is Patient)` can only refer to a Patient, whatever the
            // definition's shared target list says.
            let narrowed: Option<Vec<ResourceType>> = paths.iter().map(|path| path.steps.last().and_then(|step| step.target)).collect();
            if let Some(narrowed) = narrowed.filter(|n| !n.is_empty()) {
                targets.retain(|t| narrowed.contains(t));
            }
            defs.push(SearchParamDef { code: param.code, url: param.url, kind: param.kind, paths, targets });
        }
        defs.sort_by(|a, b| a.code.cmp(&b.code));
        if type_name == "Resource" {
            common = defs;
        } else {
            by_type.insert(ResourceType::parse(&type_name).map_err(|e| e.to_string())?, defs);
        }
    }
    let patient_compartment =
        raw.patient_compartment.into_iter().filter_map(|(name, params)| Some((ResourceType::parse(&name).ok()?, params))).collect();
    let summary_elements =
        raw.summary_elements.into_iter().filter_map(|(name, elements)| Some((ResourceType::parse(&name).ok()?, elements))).collect();
    Ok(SearchParamTable { by_type, common, patient_compartment, summary_elements })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_loads_and_knows_the_common_parameters() {
        let patient = ResourceType::parse("Patient").unwrap();
        let table = table();
        for code in ["_id", "_lastUpdated", "_tag", "_profile", "_security", "identifier", "name", "birthdate", "general-practitioner"] {
            assert!(table.get(patient, code).is_some(), "{code}");
        }
        let observation = ResourceType::parse("Observation").unwrap();
        assert_eq!(table.patient_compartment_params(observation), ["subject", "performer"]);
        assert_eq!(table.get(observation, "subject").unwrap().kind, ParamKind::Reference);
        assert!(table.in_patient_compartment(patient));
        assert!(!table.in_patient_compartment(ResourceType::parse("Organization").unwrap()));
        assert!(table.summary_elements(patient).contains(&"birthDate".to_owned()));
        assert!(!table.summary_elements(patient).contains(&"photo".to_owned()));
    }
}
