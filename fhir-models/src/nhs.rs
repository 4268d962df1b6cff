//! NHS identifiers: the NHS number (Modulus 11) and ODS organisation codes.

use std::fmt;

/// A ten-digit NHS number whose check digit is valid.
///
/// Parse, don't validate: holding an `NhsNumber` proves the Modulus 11 check passed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber([u8; 10]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number has 10 digits, found {0} characters")]
    Length(usize),
    #[error("an NHS number has only digits, found {0:?}")]
    NotDigit(char),
    #[error("the NHS number check digit is wrong (Modulus 11)")]
    CheckDigit,
}

impl NhsNumber {
    /// Parse an NHS number. Spaces and hyphens in the usual 3-3-4 grouping are accepted
    /// (`943 476 5919`); anything else is an error.
    pub fn parse(text: &str) -> Result<Self, NhsNumberError> {
        let mut digits = [0u8; 10];
        let mut count = 0;
        for c in text.trim().chars() {
            if c == ' ' || c == '-' {
                continue;
            }
            let digit = c.to_digit(10).ok_or(NhsNumberError::NotDigit(c))?;
            if count == 10 {
                return Err(NhsNumberError::Length(text.trim().chars().filter(|c| *c != ' ' && *c != '-').count()));
            }
            digits[count] = digit as u8;
            count += 1;
        }
        if count != 10 {
            return Err(NhsNumberError::Length(count));
        }
        if Self::check_digit(&digits) != Some(digits[9]) {
            return Err(NhsNumberError::CheckDigit);
        }
        Ok(Self(digits))
    }

    /// The Modulus 11 check digit of the first nine digits, or `None` when the number cannot
    /// be valid (a remainder giving 10).
    pub fn check_digit(digits: &[u8; 10]) -> Option<u8> {
        let sum: u32 = digits[..9].iter().zip((2..=10).rev()).map(|(digit, weight)| u32::from(*digit) * weight).sum();
        match 11 - (sum % 11) {
            11 => Some(0),
            10 => None,
            check => Some(check as u8),
        }
    }

    /// Numbers 999 000 0000 to 999 999 9999 are reserved for testing.
    pub fn is_test_range(&self) -> bool {
        self.0[..3] == [9, 9, 9]
    }

    pub fn as_string(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl fmt::Debug for NhsNumber {
    // An NHS number is PHI: debug output shows only that one is present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(..)")
    }
}

/// An Organisation Data Service code: an organisation (`RRV`, `A81001`, `00T`) or site
/// (`RRV01`). Upper-case letters and digits, 3 to 10 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OdsCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an ODS code is 3 to 10 upper-case letters and digits, found {0:?}")]
pub struct OdsCodeError(pub String);

impl OdsCode {
    pub fn parse(text: &str) -> Result<Self, OdsCodeError> {
        let valid = (3..=10).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if valid { Ok(Self(text.to_owned())) } else { Err(OdsCodeError(text.to_owned())) }
    }
}

impl AsRef<str> for OdsCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OdsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for OdsCode {
    type Error = OdsCodeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<OdsCode> for String {
    fn from(value: OdsCode) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_known_valid_numbers() {
        for text in ["9912003888", "9690937286", "9690938533", "9449305552", "943 476 5919"] {
            assert!(NhsNumber::parse(text).is_ok(), "{text}");
        }
        assert_eq!(NhsNumber::parse("943-476-5919").unwrap().to_string(), "9434765919");
    }

    #[test]
    fn rejects_wrong_check_digits_and_shapes() {
        assert_eq!(NhsNumber::parse("4447685222"), Err(NhsNumberError::CheckDigit));
        assert_eq!(NhsNumber::parse("8527685222"), Err(NhsNumberError::CheckDigit));
        assert_eq!(NhsNumber::parse("944930555"), Err(NhsNumberError::Length(9)));
        assert_eq!(NhsNumber::parse("94493055521"), Err(NhsNumberError::Length(11)));
        assert_eq!(NhsNumber::parse("94493O5552"), Err(NhsNumberError::NotDigit('O')));
    }

    #[test]
    fn debug_output_does_not_show_the_number() {
        let number = NhsNumber::parse("9449305552").unwrap();
        assert!(!format!("{number:?}").contains("9449305552"));
    }

    #[test]
    fn ods_codes() {
        for code in ["RRV", "A81001", "00T", "RRV01", "Y90001"] {
            assert!(OdsCode::parse(code).is_ok(), "{code}");
        }
        for code in ["rr", "RR", "A81 001", "ABCDEFGHIJK", ""] {
            assert!(OdsCode::parse(code).is_err(), "{code}");
        }
    }

    proptest! {
        #[test]
        fn exactly_one_check_digit_is_valid(prefix in proptest::array::uniform9(0u8..10)) {
            let valid: Vec<u8> = (0..10u8)
                .filter(|last| {
                    let text: String = prefix.iter().chain(std::iter::once(last)).map(|d| char::from(b'0' + d)).collect();
                    NhsNumber::parse(&text).is_ok()
                })
                .collect();
            let mut digits = [0u8; 10];
            digits[..9].copy_from_slice(&prefix);
            match NhsNumber::check_digit(&digits) {
                Some(check) => prop_assert_eq!(valid, vec![check]),
                None => prop_assert!(valid.is_empty()),
            }
        }
    }
}
