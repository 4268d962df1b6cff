//! Reading GP extract files (EMIS-style, SystmOne-style): CSV with a header row (the `csv`
//! crate), columns found by name, each row knowing its file and line so an error can say exactly
//! where.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use time::{Date, Month, Time};

/// What is wrong with an extract, and where: `file:line: column: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractError {
    pub file: String,
    /// 1-based, as an editor numbers lines; 0 for the file as a whole.
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
}

impl ExtractError {
    pub fn file(file: &str, reason: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line: 0, column: None, reason: reason.into() }
    }
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, &self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.reason),
            (line, Some(column)) => write!(f, "{}:{line}: {column}: {}", self.file, self.reason),
            (line, None) => write!(f, "{}:{line}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for ExtractError {}

/// How a system writes dates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DateStyle {
    /// `yyyy-MM-dd[ HH:mm:ss]` (EMIS).
    #[default]
    Iso,
    /// `dd MMM yyyy[ HH:mm:ss]` (SystmOne: `05 Mar 2024 10:15:00`).
    DayMonthName,
}

/// One file of an extract: its name (for its kind, its time and error messages) and its bytes.
pub struct ExtractFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// An extract's files read by kind, its patient file taken out, and the extract's time.
pub struct Extract {
    pub tables: HashMap<&'static str, Table>,
    pub patients: Table,
    /// An instant, from the `yyyyMMddHHmmss` token of the file names.
    pub recorded: String,
}

/// Read the files `kind_of` recognises (others are ignored; two of one kind are an error). The
/// extract needs its `patient_kind` file and a time in its file names (`naming` says how).
pub fn read_extract(
    files: &[ExtractFile],
    kind_of: fn(&str) -> Option<&'static str>,
    dates: DateStyle,
    patient_kind: &str,
    naming: &str,
) -> Result<Extract, ExtractError> {
    let mut tables: HashMap<&'static str, Table> = HashMap::new();
    for file in files {
        let Some(kind) = kind_of(&file.name) else { continue };
        if tables.contains_key(kind) {
            return Err(ExtractError::file(&file.name, format!("a second {kind} file in one extract")));
        }
        tables.insert(kind, Table::read(&file.name, &file.bytes, dates)?);
    }
    let patients = tables
        .remove(patient_kind)
        .ok_or_else(|| ExtractError::file("(extract)", format!("no {patient_kind} file: every extract carries one")))?;
    let recorded = files
        .iter()
        .find_map(|file| file.name.split(['_', '.', '/', '\\']).find_map(compact_instant))
        .ok_or_else(|| ExtractError::file("(extract)", format!("the file names carry no extract time ({naming})")))?;
    Ok(Extract { tables, patients, recorded })
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

pub struct Row {
    file: Arc<str>,
    line: u64,
    columns: Arc<HashMap<String, usize>>,
    fields: Vec<String>,
    dates: DateStyle,
}

impl Table {
    /// Read one file. Text that is not UTF-8 is read as Windows-1252, as SystmOne and older
    /// EMIS extracts are written.
    pub fn read(name: &str, bytes: &[u8], dates: DateStyle) -> Result<Self, ExtractError> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0,
        };
        let text = text.trim_start_matches('\u{feff}');
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| ExtractError::file(name, format!("the header row cannot be read: {e}")))?.clone();
        if headers.is_empty() {
            return Err(ExtractError::file(name, "the file has no header row"));
        }
        let columns: Arc<HashMap<String, usize>> = Arc::new(headers.iter().enumerate().map(|(i, h)| (h.trim().to_owned(), i)).collect());
        let file: Arc<str> = Arc::from(name);
        // Lines as an editor numbers them, from each record's byte offset (the csv crate's own
        // line count is one short after CR LF line ends).
        let bytes = text.as_bytes();
        let (mut counted_to, mut line) = (0usize, 1u64);
        let mut line_at = |offset: u64| {
            // After CR LF the reported offset can sit on the LF: a record starts after it.
            let mut offset = (offset as usize).min(bytes.len());
            while offset < bytes.len() && matches!(bytes[offset], b'\r' | b'\n') {
                offset += 1;
            }
            line += bytes[counted_to.min(offset)..offset].iter().filter(|&&b| b == b'\n').count() as u64;
            counted_to = counted_to.max(offset);
            line
        };
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map(|p| line_at(p.byte())).unwrap_or(0);
                ExtractError { file: name.to_owned(), line, column: None, reason: format!("not a CSV row: {e}") }
            })?;
            let line = record.position().map(|p| line_at(p.byte())).unwrap_or(0);
            rows.push(Row {
                file: file.clone(),
                line,
                columns: columns.clone(),
                fields: record.iter().map(str::to_owned).collect(),
                dates,
            });
        }
        Ok(Self { rows })
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter()
    }
}

impl Row {
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The row as received, for the digest of what was filed.
    pub fn raw(&self) -> String {
        self.fields.join("\u{1f}")
    }

    pub fn error(&self, column: &str, reason: impl Into<String>) -> ExtractError {
        ExtractError { file: self.file.to_string(), line: self.line, column: Some(column.to_owned()), reason: reason.into() }
    }

    /// A column's value, trimmed; an empty cell or a column the file lacks is `None`.
    pub fn get(&self, column: &str) -> Option<&str> {
        let index = *self.columns.get(column)?;
        self.fields.get(index).map(|value| value.trim()).filter(|value| !value.is_empty())
    }

    pub fn require(&self, column: &str) -> Result<&str, ExtractError> {
        if !self.columns.contains_key(column) {
            return Err(self.error(column, "the file has no such column"));
        }
        self.get(column).ok_or_else(|| self.error(column, "empty, but every row needs it"))
    }

    /// `true`/`false` (EMIS), also `1`/`0`; empty is false.
    pub fn flag(&self, column: &str) -> Result<bool, ExtractError> {
        match self.get(column).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no" | "n") => Ok(false),
            Some("true" | "1" | "yes" | "y") => Ok(true),
            Some(other) => Err(self.error(column, format!("{other:?} is not true or false"))),
        }
    }

    pub fn number(&self, column: &str) -> Result<Option<serde_json::Number>, ExtractError> {
        let Some(text) = self.get(column) else { return Ok(None) };
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(serde_json::Number::from_f64(value)),
            _ => Err(self.error(column, format!("{text:?} is not a number"))),
        }
    }

    /// A date, or a date and time, in the file's style as a FHIR date or dateTime (England's
    /// local time), cut to `precision` (EMIS `EffectiveDatePrecision`: U, Y, YM, YMD, YMDT).
    pub fn date_time(&self, column: &str, precision: Option<&str>) -> Result<Option<String>, ExtractError> {
        let Some(text) = self.get(column) else { return Ok(None) };
        let (date, time_text) = match self.dates {
            DateStyle::Iso => {
                let invalid = || self.error(column, format!("{text:?} is not a date (yyyy-MM-dd, optionally HH:mm:ss)"));
                let (date_text, time_text) = match text.split_once([' ', 'T']) {
                    Some((date, time)) => (date, Some(time)),
                    None => (text, None),
                };
                (parse_date(date_text).ok_or_else(invalid)?, time_text)
            }
            DateStyle::DayMonthName => {
                let invalid = || self.error(column, format!("{text:?} is not a date (dd MMM yyyy, optionally HH:mm:ss)"));
                let mut parts = text.splitn(4, ' ');
                let (day, month, year, time_text) = (parts.next(), parts.next(), parts.next(), parts.next());
                let date = parse_day_month_name(day.unwrap_or(""), month.unwrap_or(""), year.unwrap_or("")).ok_or_else(invalid)?;
                (date, time_text)
            }
        };
        let invalid = || self.error(column, format!("{text:?} has a time that is not HH:mm:ss"));
        let time = time_text.map(|t| parse_time(t).ok_or_else(invalid)).transpose()?;
        Ok(match precision.map(str::trim) {
            Some("U") => None,
            Some("Y") => Some(format!("{:04}", date.year())),
            Some("YM") => Some(format!("{:04}-{:02}", date.year(), date.month() as u8)),
            Some("YMD") => Some(date.to_string()),
            Some("YMDT") | None | Some("") => Some(match time {
                Some(time) => england_date_time(date, time),
                None => date.to_string(),
            }),
            Some(other) => return Err(self.error("EffectiveDatePrecision", format!("{other:?} is not U, Y, YM, YMD or YMDT"))),
        })
    }
}

fn parse_day_month_name(day: &str, month: &str, year: &str) -> Option<Date> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let month = MONTHS.iter().position(|name| month.eq_ignore_ascii_case(name))? as u8 + 1;
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) || day.is_empty() || day.len() > 2 {
        return None;
    }
    Date::from_calendar_date(year.parse().ok()?, Month::try_from(month).ok()?, day.parse().ok()?).ok()
}

fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    Date::from_calendar_date(year.parse().ok()?, Month::try_from(month.parse::<u8>().ok()?).ok()?, day.parse().ok()?).ok()
}

fn parse_time(text: &str) -> Option<Time> {
    let text = text.split('.').next()?;
    let mut parts = text.split(':');
    let (hour, minute) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    let second = parts.next().map(|s| s.parse().ok()).unwrap_or(Some(0))?;
    Time::from_hms(hour, minute, second).ok()
}

/// A local time in England as a FHIR dateTime with its offset (GMT or BST).
pub fn england_date_time(date: Date, time: Time) -> String {
    let offset = if crate::translate::hl7v2::datatypes::england_observes_summer_time(date, time) { "+01:00" } else { "+00:00" };
    format!("{date}T{:02}:{:02}:{:02}{offset}", time.hour(), time.minute(), time.second())
}

/// `yyyyMMddHHmmss` (local time in England) as a FHIR instant.
pub fn compact_instant(token: &str) -> Option<String> {
    if token.len() != 14 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = parse_date(&format!("{}-{}-{}", &token[..4], &token[4..6], &token[6..8]))?;
    let time = parse_time(&format!("{}:{}:{}", &token[8..10], &token[10..12], &token[12..14]))?;
    Some(england_date_time(date, time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::read("1_Admin_Patient_20240305101500.csv", text.as_bytes(), DateStyle::Iso).unwrap()
    }

    #[test]
    fn columns_are_found_by_name_and_errors_say_file_line_and_column() {
        let t = table("PatientGuid,Sex,DateOfBirth,Deleted\r\n{A},F,1980-02-29,false\r\n\"{B}\",X,1980-02-30,maybe\r\n");
        let rows: Vec<&Row> = t.rows().collect();
        assert_eq!(rows[0].require("PatientGuid").unwrap(), "{A}");
        assert_eq!(rows[0].date_time("DateOfBirth", None).unwrap().as_deref(), Some("1980-02-29"));
        assert!(!rows[0].flag("Deleted").unwrap());
        assert_eq!(rows[1].line(), 3);
        let error = rows[1].date_time("DateOfBirth", None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "1_Admin_Patient_20240305101500.csv:3: DateOfBirth: \"1980-02-30\" is not a date (yyyy-MM-dd, optionally HH:mm:ss)"
        );
        assert!(rows[1].flag("Deleted").unwrap_err().to_string().contains("\"maybe\" is not true or false"));
        assert!(rows[0].require("NhsNumber").unwrap_err().to_string().ends_with("NhsNumber: the file has no such column"));
    }

    #[test]
    fn dates_keep_their_precision_and_times_are_england_local() {
        let t = table("When\n2024-07-01 10:30:00\n2024-01-15 09:00:00\n");
        let rows: Vec<&Row> = t.rows().collect();
        assert_eq!(rows[0].date_time("When", None).unwrap().as_deref(), Some("2024-07-01T10:30:00+01:00"));
        assert_eq!(rows[1].date_time("When", Some("YMDT")).unwrap().as_deref(), Some("2024-01-15T09:00:00+00:00"));
        assert_eq!(rows[1].date_time("When", Some("YM")).unwrap().as_deref(), Some("2024-01"));
        assert_eq!(rows[1].date_time("When", Some("U")).unwrap(), None);
        assert_eq!(compact_instant("20240305101500").as_deref(), Some("2024-03-05T10:15:00+00:00"));
    }

    #[test]
    fn windows_1252_text_is_read() {
        let t = Table::read("x.csv", b"Name\nRen\xe9e O\x92Neill\n", DateStyle::Iso).unwrap();
        assert_eq!(t.rows().next().unwrap().get("Name"), Some("Ren\u{e9}e O\u{2019}Neill"));
    }

    #[test]
    fn systmone_dates_are_read() {
        let t = Table::read("SRCode.csv", b"When\n05 Mar 2024 10:15:00\n29 feb 2023\n", DateStyle::DayMonthName).unwrap();
        let rows: Vec<&Row> = t.rows().collect();
        assert_eq!(rows[0].date_time("When", None).unwrap().as_deref(), Some("2024-03-05T10:15:00+00:00"));
        assert!(
            rows[1]
                .date_time("When", None)
                .unwrap_err()
                .to_string()
                .ends_with("\"29 feb 2023\" is not a date (dd MMM yyyy, optionally HH:mm:ss)")
        );
    }
}
