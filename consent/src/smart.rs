//! SMART App Launch v2 scopes (<https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>):
//! `context/Type.permissions`, e.g. `user/Patient.rs`, `system/*.cruds`, `patient/Observation.rs`.
//! v1 forms (`.read`, `.write`, `.*`) are read as their v2 equivalents.
//!
//! Scopes with a query (`patient/Observation.rs?category=laboratory`) narrow access in a way this
//! gateway does not enforce yet, so they grant nothing: failing closed is the safe reading.

use std::fmt;

use fhir_models::ResourceType;
use fhir_models::interaction::Interaction;

/// Whose data a scope is about: the signed-in patient's, what a user may see, or a backend
/// system's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ScopeContext {
    Patient,
    User,
    System,
}

impl ScopeContext {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::User => "user",
            Self::System => "system",
        }
    }
}

/// The `cruds` letters, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const CREATE: Self = Self(1);
    pub const READ: Self = Self(2);
    pub const UPDATE: Self = Self(4);
    pub const DELETE: Self = Self(8);
    pub const SEARCH: Self = Self(16);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// v2 letters must come in `cruds` order, each at most once (SMART v2 §scopes).
    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => return Some(Self::READ.union(Self::SEARCH)),
            "write" => return Some(Self::CREATE.union(Self::UPDATE).union(Self::DELETE)),
            "*" => return Some(Self(31)),
            _ => {}
        }
        let mut permissions = Self::default();
        let mut last = 0u8;
        for letter in text.bytes() {
            let (bit, order) = match letter {
                b'c' => (Self::CREATE, 1),
                b'r' => (Self::READ, 2),
                b'u' => (Self::UPDATE, 3),
                b'd' => (Self::DELETE, 4),
                b's' => (Self::SEARCH, 5),
                _ => return None,
            };
            if order <= last {
                return None;
            }
            last = order;
            permissions = permissions.union(bit);
        }
        (last > 0).then_some(permissions)
    }

    /// What an interaction needs. History and `$validate` read like searches and reads do; a
    /// batch or transaction needs nothing itself, because each of its entries is checked.
    pub fn needed_for(interaction: Interaction) -> Option<Self> {
        Some(match interaction {
            Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => Self::READ,
            Interaction::SearchType | Interaction::SearchSystem | Interaction::HistoryType | Interaction::HistorySystem => Self::SEARCH,
            Interaction::Create => Self::CREATE,
            Interaction::Update | Interaction::Patch => Self::UPDATE,
            Interaction::Delete => Self::DELETE,
            Interaction::Operation => Self::READ,
            Interaction::Capabilities | Interaction::Batch | Interaction::Transaction => return None,
        })
    }
}

/// One resource scope.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct SmartScope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<ResourceType>,
    pub permissions: Permissions,
}

impl SmartScope {
    /// Whether this scope is at least as wide as `other`.
    pub fn covers(&self, other: &SmartScope) -> bool {
        self.context == other.context
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && self.permissions.contains(other.permissions)
    }

    fn allows(&self, context: ScopeContext, resource_type: Option<ResourceType>, needed: Permissions) -> bool {
        self.context == context
            && match (self.resource_type, resource_type) {
                (None, _) => true,
                (Some(granted), Some(asked)) => granted == asked,
                // A system-level interaction (history of everything) needs a wildcard scope.
                (Some(_), None) => false,
            }
            && self.permissions.contains(needed)
    }
}

impl fmt::Display for SmartScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource_type.map_or("*", |t| t.as_str());
        write!(f, "{}/{resource}.", self.context.as_str())?;
        for (bit, letter) in [
            (Permissions::CREATE, 'c'),
            (Permissions::READ, 'r'),
            (Permissions::UPDATE, 'u'),
            (Permissions::DELETE, 'd'),
            (Permissions::SEARCH, 's'),
        ] {
            if self.permissions.contains(bit) {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {0:?} is not a SMART resource scope (context/Type.cruds)")]
    Malformed(String),
    #[error("scope {0:?} names an unknown resource type")]
    UnknownType(String),
}

/// The resource scopes a token carries or a client is registered for. Scopes that are not about
/// resources (`openid`, `profile`, `launch/patient`, `offline_access`) are kept out of it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SmartScopes(Vec<SmartScope>);

impl SmartScopes {
    /// Parse a space-separated `scope` claim or a list of configured scopes. A malformed resource
    /// scope is an error rather than ignored: a typo must not silently widen or narrow access.
    pub fn parse<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeError> {
        let mut parsed = Vec::new();
        for scope in scopes {
            if let Some(scope) = parse_one(scope)? {
                parsed.push(scope);
            }
        }
        Ok(Self(parsed))
    }

    pub fn parse_claim(claim: &str) -> Result<Self, ScopeError> {
        Self::parse(claim.split_ascii_whitespace())
    }

    pub fn iter(&self) -> impl Iterator<Item = &SmartScope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some scope in the set permits `interaction` on `resource_type` in `context`.
    pub fn allows(&self, context: ScopeContext, interaction: Interaction, resource_type: Option<ResourceType>) -> bool {
        match Permissions::needed_for(interaction) {
            Some(needed) => self.0.iter().any(|scope| scope.allows(context, resource_type, needed)),
            // Batch and transaction: any resource scope in this context lets the bundle in; its
            // entries are each checked on their own.
            None => self.0.iter().any(|scope| scope.context == context),
        }
    }

    /// The first scope of `self` that no scope of `registered` covers.
    pub fn first_not_covered_by<'a>(&'a self, registered: &SmartScopes) -> Option<&'a SmartScope> {
        self.0.iter().find(|scope| !registered.0.iter().any(|allowed| allowed.covers(scope)))
    }
}

fn parse_one(scope: &str) -> Result<Option<SmartScope>, ScopeError> {
    let malformed = || ScopeError::Malformed(scope.to_owned());
    let Some((context, rest)) = scope.split_once('/') else {
        return Ok(None);
    };
    let context = match context {
        "patient" => ScopeContext::Patient,
        "user" => ScopeContext::User,
        "system" => ScopeContext::System,
        // `launch/patient`, `launch/encounter`: launch context, not access.
        "launch" => return Ok(None),
        _ => return Err(malformed()),
    };
    let (resource, permissions) = rest.split_once('.').ok_or_else(malformed)?;
    if permissions.contains('?') {
        // A granular scope: not enforced, so it grants nothing (see the module comment).
        return Ok(None);
    }
    let permissions = Permissions::parse(permissions).ok_or_else(malformed)?;
    let resource_type = match resource {
        "*" => None,
        name => Some(ResourceType::parse(name).map_err(|_| ScopeError::UnknownType(scope.to_owned()))?),
    };
    Ok(Some(SmartScope { context, resource_type, permissions }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> SmartScopes {
        SmartScopes::parse_claim(text).unwrap()
    }

    fn patient() -> Option<ResourceType> {
        ResourceType::parse("Patient").ok()
    }

    #[test]
    fn v2_scopes_grant_exactly_their_letters() {
        let granted = scopes("openid profile user/Patient.rs launch/patient");
        assert_eq!(granted.iter().count(), 1);
        assert!(granted.allows(ScopeContext::User, Interaction::Read, patient()));
        assert!(granted.allows(ScopeContext::User, Interaction::SearchType, patient()));
        assert!(granted.allows(ScopeContext::User, Interaction::HistoryInstance, patient()));
        assert!(!granted.allows(ScopeContext::User, Interaction::Create, patient()));
        assert!(!granted.allows(ScopeContext::User, Interaction::Read, ResourceType::parse("Observation").ok()));
        assert!(!granted.allows(ScopeContext::System, Interaction::Read, patient()));
        assert!(!granted.allows(ScopeContext::User, Interaction::HistorySystem, None));
    }

    #[test]
    fn wildcards_and_v1_forms() {
        let granted = scopes("system/*.cruds");
        for interaction in [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::SearchType] {
            assert!(granted.allows(ScopeContext::System, interaction, ResourceType::parse("Encounter").ok()));
        }
        assert!(granted.allows(ScopeContext::System, Interaction::HistorySystem, None));
        assert_eq!(scopes("user/*.read"), scopes("user/*.rs"));
        assert_eq!(scopes("user/Patient.write"), scopes("user/Patient.cud"));
        assert_eq!(scopes("user/Patient.*"), scopes("user/Patient.cruds"));
    }

    #[test]
    fn malformed_scopes_are_errors_not_silently_ignored() {
        for bad in ["user/Patient.sr", "user/Patient.rr", "user/Patient.x", "user/Patient", "admin/Patient.r", "user/Patient."] {
            assert!(matches!(SmartScopes::parse_claim(bad), Err(ScopeError::Malformed(_))), "{bad}");
        }
        assert!(matches!(SmartScopes::parse_claim("user/Patent.rs"), Err(ScopeError::UnknownType(_))));
    }

    #[test]
    fn granular_scopes_grant_nothing() {
        let granted = scopes("patient/Observation.rs?category=laboratory");
        assert!(granted.is_empty());
        assert!(!granted.allows(ScopeContext::Patient, Interaction::SearchType, ResourceType::parse("Observation").ok()));
    }

    #[test]
    fn coverage_against_registered_scopes() {
        let registered = scopes("user/*.rs user/Consent.cruds");
        assert_eq!(scopes("user/Patient.r user/Consent.cu").first_not_covered_by(&registered), None);
        let wider = scopes("user/Patient.rs user/Observation.c");
        assert_eq!(wider.first_not_covered_by(&registered).map(ToString::to_string).as_deref(), Some("user/Observation.c"));
        assert!(scopes("system/Patient.r").first_not_covered_by(&registered).is_some());
    }
}
