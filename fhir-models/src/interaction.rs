//! FHIR RESTful interactions, named as in
//! <http://hl7.org/fhir/R4/codesystem-restful-interaction.html>.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Interaction {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    Capabilities,
    Batch,
    Transaction,
    Operation,
}

impl Interaction {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Vread => "vread",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::HistoryInstance => "history-instance",
            Self::HistoryType => "history-type",
            Self::HistorySystem => "history-system",
            Self::Create => "create",
            Self::SearchType => "search-type",
            Self::SearchSystem => "search-system",
            Self::Capabilities => "capabilities",
            Self::Batch => "batch",
            Self::Transaction => "transaction",
            Self::Operation => "operation",
        }
    }

    /// Whether the interaction can change stored data.
    pub fn is_write(&self) -> bool {
        matches!(self, Self::Update | Self::Patch | Self::Delete | Self::Create | Self::Transaction)
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
