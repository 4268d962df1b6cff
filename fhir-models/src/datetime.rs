//! FHIR `date`, `dateTime` and `instant` values as ranges of time.
//!
//! A FHIR date carries its precision: `2024` means the whole year. Search compares ranges, so a
//! value is turned into `[low, high]`, both inclusive, in microseconds since the Unix epoch (UTC).
//! Values without a time zone are read as UTC.

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// An inclusive range in microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

/// How much of a date the text gave.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Minute,
    Second,
    Fraction,
}

pub const MIN_MICROS: i64 = i64::MIN;
pub const MAX_MICROS: i64 = i64::MAX;

fn micros(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

fn digits(text: &str, from: usize, count: usize) -> Option<u32> {
    let part = text.get(from..from + count)?;
    part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
}

/// Parse a FHIR date, dateTime or instant into the range it denotes.
pub fn parse_range(text: &str) -> Option<(DateRange, Precision)> {
    let year = digits(text, 0, 4)? as i32;
    if text.len() == 4 {
        let start = Date::from_calendar_date(year, Month::January, 1).ok()?;
        let end = Date::from_calendar_date(year + 1, Month::January, 1).ok()?;
        return Some((day_span(start, end), Precision::Year));
    }
    if text.as_bytes().get(4) != Some(&b'-') {
        return None;
    }
    let month = Month::try_from(digits(text, 5, 2)? as u8).ok()?;
    if text.len() == 7 {
        let start = Date::from_calendar_date(year, month, 1).ok()?;
        let end = if month == Month::December {
            Date::from_calendar_date(year + 1, Month::January, 1).ok()?
        } else {
            Date::from_calendar_date(year, month.next(), 1).ok()?
        };
        return Some((day_span(start, end), Precision::Month));
    }
    if text.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let day = Date::from_calendar_date(year, month, digits(text, 8, 2)? as u8).ok()?;
    if text.len() == 10 {
        return Some((day_span(day, day.next_day()?), Precision::Day));
    }
    if text.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let hour = digits(text, 11, 2)? as u8;
    if text.as_bytes().get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(text, 14, 2)? as u8;
    let mut rest = &text[16..];
    let (second, precision, fraction_micros, fraction_digits) = if let Some(after) = rest.strip_prefix(':') {
        let second = digits(after, 0, 2)? as u8;
        rest = &after[2..];
        if let Some(after) = rest.strip_prefix('.') {
            let count = after.bytes().take_while(u8::is_ascii_digit).count();
            if count == 0 {
                return None;
            }
            let fraction = &after[..count];
            rest = &after[count..];
            let mut micros_part = 0i64;
            for (index, b) in fraction.bytes().take(6).enumerate() {
                micros_part += i64::from(b - b'0') * 10i64.pow(5 - index as u32);
            }
            (second.min(59), Precision::Fraction, micros_part, count.min(6) as u32)
        } else {
            (second.min(59), Precision::Second, 0, 0)
        }
    } else {
        (0, Precision::Minute, 0, 0)
    };
    let offset = match rest {
        "" => UtcOffset::UTC,
        "Z" => UtcOffset::UTC,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && tz.as_bytes()[3] == b':' => {
            let hours = digits(tz, 1, 2)? as i8;
            let minutes = digits(tz, 4, 2)? as i8;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
        }
        _ => return None,
    };
    let time = Time::from_hms(hour, minute, second).ok()?;
    let start = PrimitiveDateTime::new(day, time).assume_offset(offset);
    let low = micros(start) + fraction_micros;
    let width = match precision {
        Precision::Minute => 60_000_000,
        Precision::Second => 1_000_000,
        _ => 10i64.pow(6 - fraction_digits),
    };
    Some((DateRange { low, high: low + width - 1 }, precision))
}

fn day_span(start: Date, end_exclusive: Date) -> DateRange {
    let low = micros(PrimitiveDateTime::new(start, Time::MIDNIGHT).assume_utc());
    let high = micros(PrimitiveDateTime::new(end_exclusive, Time::MIDNIGHT).assume_utc()) - 1;
    DateRange { low, high }
}

/// Format an instant the way the gateway writes `meta.lastUpdated`: UTC, microseconds.
pub fn format_instant(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// An instant as microseconds since the epoch.
pub fn to_micros(at: OffsetDateTime) -> i64 {
    micros(at)
}

pub fn from_micros(value: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::microseconds(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> (String, String) {
        let (range, _) = parse_range(text).unwrap_or_else(|| panic!("{text}"));
        (format_instant(from_micros(range.low)), format_instant(from_micros(range.high)))
    }

    #[test]
    fn ranges_follow_precision() {
        assert_eq!(range("2024"), ("2024-01-01T00:00:00.000000Z".into(), "2024-12-31T23:59:59.999999Z".into()));
        assert_eq!(range("2024-02"), ("2024-02-01T00:00:00.000000Z".into(), "2024-02-29T23:59:59.999999Z".into()));
        assert_eq!(range("2023-12"), ("2023-12-01T00:00:00.000000Z".into(), "2023-12-31T23:59:59.999999Z".into()));
        assert_eq!(range("2024-03-05"), ("2024-03-05T00:00:00.000000Z".into(), "2024-03-05T23:59:59.999999Z".into()));
        assert_eq!(range("2024-03-05T10:20+01:00"), ("2024-03-05T09:20:00.000000Z".into(), "2024-03-05T09:20:59.999999Z".into()));
        assert_eq!(range("2024-03-05T10:20:30Z"), ("2024-03-05T10:20:30.000000Z".into(), "2024-03-05T10:20:30.999999Z".into()));
        assert_eq!(range("2024-03-05T10:20:30.5Z"), ("2024-03-05T10:20:30.500000Z".into(), "2024-03-05T10:20:30.599999Z".into()));
    }

    #[test]
    fn rejects_malformed_dates() {
        for text in
            ["", "20", "2024-13", "2024-02-30", "2024-1-01", "2024-01-01T25:00Z", "2024-01-01T10:00:00.Z", "2024-01-01T10:00+1:00", "abcd"]
        {
            assert!(parse_range(text).is_none(), "{text}");
        }
    }
}
