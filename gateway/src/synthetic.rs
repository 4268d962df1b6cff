//! Deterministic synthetic GP extracts (demo data, tests, load): an EMIS Web-style CSV extract
//! of a practice's patients, the same people as the FHIR demo region (same test-range NHS
//! numbers), with the features the translators must handle — Read codes with and without a
//! SNOMED CT concept, an EMIS-local code that maps to nothing, numeric values with units,
//! problems, allergies, immunisations, repeat medication with issues, a practice-confidential
//! entry and a restricted ("S-flag") patient. The same arguments give the same bytes.

use std::fmt::Write;

use crate::demo::{Practice, Sequence, person, test_nhs_number};
use crate::translate::emis::ExtractFile;

/// The clinical codes the extract uses: CodeId, Term, ReadTermId, SNOMED concept (empty where
/// the practice's system had none: the Read map or nothing supplies it), EMIS category.
const CLINICAL_CODES: [(&str, &str, &str, &str, &str); 10] = [
    ("1001", "Asthma", "H33..00", "195967001", "Problem"),
    ("1002", "Type 2 diabetes mellitus", "C10F.00", "44054006", "Problem"),
    ("1003", "Essential hypertension", "G20..00", "59621000", "Problem"),
    ("1004", "Atrial fibrillation", "G573000", "", "Problem"),
    ("1005", "Chronic obstructive pulmonary disease", "H3...00", "13645005", "Problem"),
    ("1006", "O/E - Systolic BP reading", "2469.00", "163030003", "Value"),
    ("1007", "O/E - Diastolic BP reading", "246A.00", "163031004", "Value"),
    ("1008", "Influenza vaccination", "65E..00", "86198006", "Immunisations"),
    ("1009", "Allergy to penicillin", "", "91936005", "Allergy and adverse reaction"),
    ("1010", "Counselling session (practice code)", "EMISNQCO1", "", "Observation"),
];
const PROBLEM_CODES: [&str; 5] = ["1001", "1002", "1003", "1004", "1005"];
/// CodeId, Term, dm+d product (empty: none recorded).
const DRUG_CODES: [(&str, &str, &str); 3] = [
    ("2001", "Metformin 500mg modified-release tablets", "325278007"),
    ("2002", "Amlodipine 5mg tablets", "319283006"),
    ("2003", "Salbutamol 100micrograms/dose inhaler CFC free", "320176004"),
];

/// A GUID in EMIS's braced upper-case form, from the sequence.
fn guid(sequence: &mut Sequence) -> String {
    let (a, b) = (sequence.next(), sequence.next());
    format!("{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}", a >> 32, (a >> 16) & 0xFFFF, a & 0xFFFF, b >> 48, b & 0xFFFF_FFFF_FFFF)
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

struct File {
    name: &'static str,
    text: String,
}

impl File {
    fn new(name: &'static str, header: &[&str]) -> Self {
        Self { name, text: format!("{}\r\n", header.join(",")) }
    }

    fn row(&mut self, cells: &[&str]) {
        let line = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
        let _ = write!(self.text, "{line}\r\n");
    }
}

/// An EMIS-style CSV extract of `patients` (demo region indexes) registered at `practice`,
/// taken at `extracted` (`yyyyMMddHHmmss`). The demo region registers patient `i` at practice
/// `i % 3` ([`crate::demo::person`]); an extract may name anyone.
pub fn emis_extract(practice: &Practice, patients: &[usize], extracted: &str) -> Vec<ExtractFile> {
    let mut sequence = Sequence::new(0x454d_4953 ^ practice.ods.bytes().fold(0u64, |hash, b| hash.wrapping_mul(31).wrapping_add(b as u64)));
    let agreement = {
        let g = guid(&mut sequence);
        g.trim_matches(['{', '}']).to_ascii_lowercase()
    };
    let organisation_guid = guid(&mut sequence);
    let mut organisation =
        File::new("Admin_Organisation", &["OrganisationGuid", "CDB", "OrganisationName", "ODSCode", "OrganisationType", "OpenDate"]);
    organisation.row(&[&organisation_guid, "1", practice.name, practice.ods, "General Practice", "1990-04-01"]);
    let mut clinical_codes = File::new(
        "Coding_ClinicalCode",
        &["CodeId", "Term", "ReadTermId", "SnomedCTConceptId", "SnomedCTDescriptionId", "EmisCodeCategoryDescription"],
    );
    for (id, term, read, snomed, category) in CLINICAL_CODES {
        clinical_codes.row(&[id, term, read, snomed, "", category]);
    }
    let mut drug_codes = File::new("Coding_DrugCode", &["CodeId", "Term", "DmdProductCodeId"]);
    for (id, term, dmd) in DRUG_CODES {
        drug_codes.row(&[id, term, dmd]);
    }
    let mut admin = File::new(
        "Admin_Patient",
        &[
            "PatientGuid",
            "OrganisationGuid",
            "Sex",
            "DateOfBirth",
            "DateOfDeath",
            "Title",
            "GivenName",
            "MiddleNames",
            "Surname",
            "DateOfRegistration",
            "NhsNumber",
            "PatientNumber",
            "PatientTypeDescription",
            "HouseNameFlatNumber",
            "NumberAndStreet",
            "Village",
            "Town",
            "County",
            "Postcode",
            "NHSNumberStatus",
            "Deleted",
            "SpineSensitive",
            "IsConfidential",
            "EmailAddress",
            "HomePhone",
            "MobilePhone",
            "ProcessingId",
        ],
    );
    let mut consultations = File::new(
        "CareRecord_Consultation",
        &[
            "ConsultationGuid",
            "PatientGuid",
            "OrganisationGuid",
            "EffectiveDate",
            "EffectiveDatePrecision",
            "ConsultationSourceTerm",
            "Complete",
            "Deleted",
            "IsConfidential",
        ],
    );
    let mut observations = File::new(
        "CareRecord_Observation",
        &[
            "ObservationGuid",
            "PatientGuid",
            "OrganisationGuid",
            "EffectiveDate",
            "EffectiveDatePrecision",
            "EnteredDate",
            "EnteredTime",
            "CodeId",
            "ProblemGuid",
            "AssociatedText",
            "ConsultationGuid",
            "Value",
            "NumericUnit",
            "ObservationType",
            "NumericRangeLow",
            "NumericRangeHigh",
            "Deleted",
            "IsConfidential",
        ],
    );
    let mut problems = File::new(
        "CareRecord_Problem",
        &[
            "ObservationGuid",
            "PatientGuid",
            "OrganisationGuid",
            "Comment",
            "EndDate",
            "ProblemStatusDescription",
            "SignificanceDescription",
            "Deleted",
        ],
    );
    let mut drugs = File::new(
        "Prescribing_DrugRecord",
        &[
            "DrugRecordGuid",
            "PatientGuid",
            "OrganisationGuid",
            "EffectiveDate",
            "CodeId",
            "Dosage",
            "Quantity",
            "QuantityUnit",
            "PrescriptionType",
            "IsActive",
            "CancellationDate",
            "NumberOfIssues",
            "IsConfidential",
            "Deleted",
        ],
    );
    let mut issues = File::new(
        "Prescribing_IssueRecord",
        &[
            "IssueRecordGuid",
            "DrugRecordGuid",
            "PatientGuid",
            "OrganisationGuid",
            "EffectiveDate",
            "CodeId",
            "Dosage",
            "Quantity",
            "QuantityUnit",
            "CourseDurationInDays",
            "IsConfidential",
            "Deleted",
        ],
    );

    for &index in patients {
        let patient = guid(&mut sequence);
        // The same person as the FHIR demo's patient `index`.
        let who = person(index);
        let (given, family, female, born) = (who.given, who.family, who.female, who.birth_date);
        let restricted = index % 10 == 7;
        let number = test_nhs_number(index as u64).to_string();
        let street = format!("{} Mill Lane", 1 + sequence.below(150));
        admin.row(&[
            &patient,
            &organisation_guid,
            if female { "F" } else { "M" },
            &born,
            "",
            if female { "Ms" } else { "Mr" },
            given,
            "",
            family,
            "2010-09-01",
            &number,
            &format!("{}", 1000 + index),
            "Regular",
            "",
            &street,
            "",
            "Leeds",
            "West Yorkshire",
            "LS6 2AB",
            "Number present and verified",
            "false",
            if restricted { "true" } else { "false" },
            "false",
            "",
            "0113 496 0000",
            "07700 900000",
            "1",
        ]);

        let day = format!("2025-{:02}-{:02}", 1 + sequence.below(12), 1 + sequence.below(28));
        let consultation = guid(&mut sequence);
        consultations.row(&[
            &consultation,
            &patient,
            &organisation_guid,
            &format!("{day} 09:{:02}:00", sequence.below(60)),
            "YMDT",
            "Surgery consultation",
            "true",
            "false",
            "false",
        ]);
        for (code, low, high, value) in [("1006", "90", "140", 110 + sequence.below(60)), ("1007", "60", "90", 65 + sequence.below(30))] {
            let observation = guid(&mut sequence);
            observations.row(&[
                &observation,
                &patient,
                &organisation_guid,
                &day,
                "YMD",
                &day,
                "09:30:00",
                code,
                "",
                "",
                &consultation,
                &value.to_string(),
                "mmHg",
                "Value",
                low,
                high,
                "false",
                "false",
            ]);
        }
        let problem_code = *sequence.pick(&PROBLEM_CODES);
        let problem = guid(&mut sequence);
        let onset = format!("{}", 2000 + sequence.below(24));
        observations.row(&[
            &problem,
            &patient,
            &organisation_guid,
            &format!("{onset}-01-01"),
            "Y",
            &day,
            "09:35:00",
            problem_code,
            "",
            "",
            &consultation,
            "",
            "",
            "Problem",
            "",
            "",
            "false",
            "false",
        ]);
        problems.row(&[&problem, &patient, &organisation_guid, "", "", "Active", "Significant Problem", "false"]);
        if index % 3 == 0 {
            let allergy = guid(&mut sequence);
            observations.row(&[
                &allergy,
                &patient,
                &organisation_guid,
                "2015-06-01",
                "YM",
                "2015-06-20",
                "11:00:00",
                "1009",
                "",
                "Rash",
                "",
                "",
                "",
                "Allergy",
                "",
                "",
                "false",
                "false",
            ]);
        }
        if index % 2 == 0 {
            let vaccination = guid(&mut sequence);
            observations.row(&[
                &vaccination,
                &patient,
                &organisation_guid,
                "2025-10-14",
                "YMD",
                "2025-10-14",
                "10:00:00",
                "1008",
                "",
                "",
                "",
                "",
                "",
                "Immunisation",
                "",
                "",
                "false",
                "false",
            ]);
        }
        if index % 5 == 2 {
            // Practice-confidential: never leaves the practice.
            let counselling = guid(&mut sequence);
            observations.row(&[
                &counselling,
                &patient,
                &organisation_guid,
                &day,
                "YMD",
                &day,
                "09:40:00",
                "1010",
                "",
                "Confidential counselling entry",
                &consultation,
                "",
                "",
                "Observation",
                "",
                "",
                "false",
                "true",
            ]);
        }
        let drug_code = match problem_code {
            "1002" => "2001",
            "1003" | "1004" => "2002",
            _ => "2003",
        };
        let drug = guid(&mut sequence);
        drugs.row(&[
            &drug,
            &patient,
            &organisation_guid,
            "2024-01-10",
            drug_code,
            "As directed",
            "56",
            "tablet",
            "Repeat",
            "true",
            "",
            "2",
            "false",
            "false",
        ]);
        for month in ["2025-01-10", "2025-02-07"] {
            let issue = guid(&mut sequence);
            issues.row(&[
                &issue,
                &drug,
                &patient,
                &organisation_guid,
                month,
                drug_code,
                "As directed",
                "56",
                "tablet",
                "28",
                "false",
                "false",
            ]);
        }
    }

    [organisation, clinical_codes, drug_codes, admin, consultations, observations, problems, drugs, issues]
        .into_iter()
        .map(|file| ExtractFile { name: format!("1_{}_{extracted}_{agreement}.csv", file.name), bytes: file.text.into_bytes() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::PRACTICES;

    #[test]
    fn the_same_arguments_give_the_same_bytes() {
        let first = emis_extract(&PRACTICES[0], &[0, 3, 6], "20260301120000");
        let second = emis_extract(&PRACTICES[0], &[0, 3, 6], "20260301120000");
        assert_eq!(first.len(), 9);
        for (a, b) in first.iter().zip(&second) {
            assert_eq!((&a.name, &a.bytes), (&b.name, &b.bytes));
        }
        assert!(first[0].name.starts_with("1_Admin_Organisation_20260301120000_"));
    }

    #[test]
    fn cells_with_commas_and_quotes_are_quoted() {
        assert_eq!(cell("O'Brien"), "O'Brien");
        assert_eq!(cell("a, \"b\""), "\"a, \"\"b\"\"\"");
    }
}
