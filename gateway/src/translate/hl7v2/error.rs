//! Why a message was refused, and where: what goes into the ACK's ERR segment.

use std::fmt;

/// HL7 table 0357 (message error condition codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    SegmentSequence,
    RequiredFieldMissing,
    DataType,
    TableValueNotFound,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    DuplicateKey,
    ApplicationInternal,
}

impl ErrorCode {
    pub fn code(&self) -> &'static str {
        match self {
            Self::SegmentSequence => "100",
            Self::RequiredFieldMissing => "101",
            Self::DataType => "102",
            Self::TableValueNotFound => "103",
            Self::UnsupportedMessageType => "200",
            Self::UnsupportedEventCode => "201",
            Self::UnsupportedProcessingId => "202",
            Self::UnsupportedVersionId => "203",
            Self::DuplicateKey => "205",
            Self::ApplicationInternal => "207",
        }
    }

    pub fn text(&self) -> &'static str {
        match self {
            Self::SegmentSequence => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataType => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing id",
            Self::UnsupportedVersionId => "Unsupported version id",
            Self::DuplicateKey => "Duplicate key identifier",
            Self::ApplicationInternal => "Application internal error",
        }
    }

    /// Whether the ACK says AR: the message was not even looked at, because its type, event,
    /// version or processing id is not taken here. Everything else wrong with a message is AE
    /// (fix it before sending it again); a message the gateway cannot take *now* is answered AR
    /// by the ingest path itself.
    pub fn is_reject(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedMessageType | Self::UnsupportedEventCode | Self::UnsupportedProcessingId | Self::UnsupportedVersionId
        )
    }
}

/// Where in a message: HL7's ERL (segment id, sequence, field, repetition, component).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Location {
    pub segment: Option<String>,
    /// Which segment of that id (1 for the first), or the segment's position when the id is
    /// unreadable.
    pub sequence: usize,
    pub field: Option<usize>,
    pub repetition: Option<usize>,
    pub component: Option<usize>,
}

impl Location {
    pub fn segment(id: &str, sequence: usize) -> Self {
        Self { segment: Some(id.to_owned()), sequence, ..Self::default() }
    }

    pub fn at_position(position: usize) -> Self {
        Self { sequence: position, ..Self::default() }
    }

    pub fn field(id: &str, sequence: usize, field: usize) -> Self {
        Self { field: Some(field), ..Self::segment(id, sequence) }
    }

    pub fn repetition(mut self, repetition: usize) -> Self {
        self.repetition = Some(repetition);
        self
    }

    pub fn component(mut self, component: usize) -> Self {
        self.component = Some(component);
        self
    }

    /// ERR-2 (v2.5 and later): `PID^1^3^1^1`.
    pub fn erl(&self, component_separator: char) -> String {
        let parts = [
            self.segment.clone().unwrap_or_default(),
            self.sequence.to_string(),
            self.field.map(|f| f.to_string()).unwrap_or_default(),
            self.field.map(|_| self.repetition.unwrap_or(1).to_string()).unwrap_or_default(),
            self.component.map(|c| c.to_string()).unwrap_or_default(),
        ];
        let mut text = parts.join(&component_separator.to_string());
        while text.ends_with(component_separator) {
            text.pop();
        }
        text
    }
}

/// Human form: `PID-3`, `PID-3(2).1` for the second repetition's first component, `OBX[2]-5`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.segment {
            Some(id) => write!(f, "{id}")?,
            None => return write!(f, "segment {}", self.sequence),
        }
        if self.sequence > 1 {
            write!(f, "[{}]", self.sequence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(repetition) = self.repetition.filter(|&r| r > 1) {
                write!(f, "({repetition})")?;
            }
            if let Some(component) = self.component {
                write!(f, ".{component}")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct Hl7Error {
    pub code: ErrorCode,
    pub location: Location,
    pub reason: String,
}

impl Hl7Error {
    pub fn new(code: ErrorCode, location: Location, reason: impl Into<String>) -> Self {
        Self { code, location, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_both_ways() {
        let location = Location::field("PID", 1, 3).repetition(2).component(1);
        assert_eq!(location.to_string(), "PID-3(2).1");
        assert_eq!(location.erl('^'), "PID^1^3^2^1");
        assert_eq!(Location::field("OBX", 2, 5).to_string(), "OBX[2]-5");
        assert_eq!(Location::field("OBX", 2, 5).erl('^'), "OBX^2^5^1");
        assert_eq!(Location::segment("PV1", 1).erl('^'), "PV1^1");
        assert_eq!(Location::at_position(3).to_string(), "segment 3");
    }
}
