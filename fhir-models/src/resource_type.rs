//! The FHIR R4 resource types, as a cheap `Copy` handle into a generated, sorted table.

use std::fmt;

use crate::resource_types::RESOURCE_TYPES;

/// One of the 146 FHIR R4 resource types.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(u8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a FHIR R4 resource type")]
pub struct UnknownResourceType(pub String);

impl ResourceType {
    pub fn parse(name: &str) -> Result<Self, UnknownResourceType> {
        RESOURCE_TYPES.binary_search(&name).map(|index| Self(index as u8)).map_err(|_| UnknownResourceType(name.to_owned()))
    }

    pub fn as_str(&self) -> &'static str {
        RESOURCE_TYPES[usize::from(self.0)]
    }

    /// Position in the sorted table, for dense per-type arrays.
    pub fn index(&self) -> usize {
        usize::from(self.0)
    }

    pub fn count() -> usize {
        RESOURCE_TYPES.len()
    }

    pub fn all() -> impl Iterator<Item = ResourceType> {
        (0..RESOURCE_TYPES.len()).map(|index| Self(index as u8))
    }

    /// Resources that the gateway shares as reference data rather than patient data.
    pub fn is_shared_reference_data(&self) -> bool {
        matches!(
            self.as_str(),
            "Organization" | "Location" | "Practitioner" | "PractitionerRole" | "Medication" | "HealthcareService" | "Endpoint"
        )
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for ResourceType {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl serde::Serialize for ResourceType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ResourceType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_complete() {
        assert_eq!(RESOURCE_TYPES.len(), 146);
        assert!(RESOURCE_TYPES.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(ResourceType::parse("Patient").unwrap().as_str(), "Patient");
        assert!(ResourceType::parse("patient").is_err());
        assert!(ResourceType::parse("Resource").is_err());
        assert_eq!(ResourceType::all().count(), 146);
    }
}
