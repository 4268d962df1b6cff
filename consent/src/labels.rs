//! Sensitivity labels stamped on every stored resource (DESIGN §4): policy as data. A resource
//! that carries a code from a configured sensitive code set gets that set's label (a
//! v3-ActCode information-sensitivity code such as `HIV`, `STD`, `SEX`) in `meta.security`,
//! whatever its source, so the consent rules can withhold it without knowing codes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The code system of the labels.
pub const LABEL_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// One sensitive class in one code system: exact codes, or code prefixes for classifications
/// with ranges (ICD-10 `B20`–`B24` as the prefixes `B20` … `B24`). SNOMED CT is matched code
/// by code (no subsumption here): list the concepts a region's systems send, or load them from a
/// reference set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitiveCodeSet {
    /// The label, a v3-ActCode information-sensitivity code.
    pub label: String,
    /// What the class is, for people reading the configuration.
    #[serde(default)]
    pub description: String,
    pub system: String,
    #[serde(default)]
    pub codes: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// The configured sets.
#[derive(Clone, Debug, Default)]
pub struct SensitivityLabels {
    sets: Vec<SensitiveCodeSet>,
}

const SNOMED: &str = "http://snomed.info/sct";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

impl SensitivityLabels {
    pub fn new(sets: Vec<SensitiveCodeSet>) -> Self {
        Self { sets }
    }

    /// The documented default: the legally restricted classes of DESIGN §4 — HIV, sexually
    /// transmitted infections, assisted conception (IVF), termination of pregnancy, gender
    /// reassignment — as SNOMED CT concepts and ICD-10 categories. A starting point, not a
    /// complete list: regions configure their own (`[[labels.sensitive]]`).
    pub fn uk_default() -> Vec<SensitiveCodeSet> {
        let set = |label: &str, description: &str, system: &str, codes: &[&str], prefixes: &[&str]| SensitiveCodeSet {
            label: label.into(),
            description: description.into(),
            system: system.into(),
            codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        };
        vec![
            set("HIV", "HIV infection", SNOMED, &["86406008", "165816005"], &[]),
            set("HIV", "HIV disease (B20-B24), asymptomatic HIV infection (Z21)", ICD10, &[], &["B20", "B21", "B22", "B23", "B24", "Z21"]),
            set("STD", "sexually transmitted infection", SNOMED, &["8098009"], &[]),
            set(
                "STD",
                "infections with a predominantly sexual mode of transmission (A50-A64)",
                ICD10,
                &[],
                &["A50", "A51", "A52", "A53", "A54", "A55", "A56", "A57", "A58", "A59", "A60", "A63", "A64"],
            ),
            set("SEX", "in vitro fertilisation", SNOMED, &["52637005"], &[]),
            set("SEX", "procreative management, including assisted conception (Z31)", ICD10, &[], &["Z31"]),
            set("SEX", "termination of pregnancy", SNOMED, &["386639001"], &[]),
            set("SEX", "termination of pregnancy (O04)", ICD10, &[], &["O04"]),
            set("SEX", "gender identity (F64)", ICD10, &[], &["F64"]),
        ]
    }

    /// Every label the sets stamp.
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.sets.iter().map(|set| set.label.clone()).collect();
        labels.sort();
        labels.dedup();
        labels
    }

    /// The labels the codings call for.
    pub fn labels_for<'a, 'c>(&'a self, codings: impl IntoIterator<Item = (&'c str, &'c str)>) -> BTreeSet<&'a str> {
        let mut labels = BTreeSet::new();
        if self.sets.is_empty() {
            return labels;
        }
        for (system, code) in codings {
            for set in self.sets.iter().filter(|set| set.system == system) {
                if set.codes.iter().any(|c| c == code) || set.prefixes.iter().any(|p| code.starts_with(p.as_str())) {
                    labels.insert(set.label.as_str());
                }
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_prefixes_in_their_own_system_only() {
        let labels = SensitivityLabels::new(SensitivityLabels::uk_default());
        assert_eq!(labels.labels_for([(SNOMED, "86406008")]).into_iter().collect::<Vec<_>>(), ["HIV"]);
        assert_eq!(labels.labels_for([(ICD10, "B20.1")]).into_iter().collect::<Vec<_>>(), ["HIV"]);
        assert_eq!(labels.labels_for([(ICD10, "A54.9"), (SNOMED, "52637005")]).into_iter().collect::<Vec<_>>(), ["SEX", "STD"]);
        assert!(labels.labels_for([(SNOMED, "B20"), (ICD10, "86406008"), (SNOMED, "22298006")]).is_empty());
        assert!(SensitivityLabels::default().labels_for([(SNOMED, "86406008")]).is_empty());
    }
}
