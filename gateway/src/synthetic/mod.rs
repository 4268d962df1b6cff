//! Deterministic synthetic GP extracts (demo data, tests, load): EMIS Web-style and
//! SystmOne-style CSV extracts of a practice's patients, the same people as the FHIR demo region (same test-range NHS
//! numbers), with the features the translators must handle — Read codes with and without a
//! SNOMED CT concept, an EMIS-local code that maps to nothing, numeric values with units,
//! problems, allergies, immunisations, repeat medication with issues, a practice-confidential
//! entry and a restricted ("S-flag") patient. The same arguments give the same bytes.
//! Discharge summaries from the demo trusts (CDA and ITK3) are in [`discharge`].

pub mod discharge;

use std::fmt::Write;

use crate::demo::{Practice, Sequence, person, test_nhs_number};
use crate::translate::emis::ExtractFile;

/// The clinical codes the extract uses: CodeId, Term, ReadTermId, SNOMED concept (empty where
/// the practice's system had none: the Read map or nothing supplies it), EMIS category.
const CLINICAL_CODES: [(&str, &str, &str, &str, &str); 12] = [
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
    ("1011", "Dissent from secondary use of GP patient identifiable data", "9Nu0.00", "827241000000103", "Observation"),
    ("1012", "Withdrawal of dissent from secondary use of GP patient identifiable data", "9Nu1.00", "", "Observation"),
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

/// One `CareRecord_Observation` row; cells not named are empty.
struct Observed<'a> {
    guid: &'a str,
    patient: &'a str,
    organisation: &'a str,
    date: &'a str,
    precision: &'a str,
    entered: &'a str,
    time: &'a str,
    code: &'a str,
    text: &'a str,
    consultation: &'a str,
    value: &'a str,
    unit: &'a str,
    kind: &'a str,
    low: &'a str,
    high: &'a str,
    confidential: bool,
}

impl<'a> Observed<'a> {
    fn new(patient: &'a str, organisation: &'a str) -> Self {
        Self {
            guid: "",
            patient,
            organisation,
            date: "",
            precision: "",
            entered: "",
            time: "",
            code: "",
            text: "",
            consultation: "",
            value: "",
            unit: "",
            kind: "",
            low: "",
            high: "",
            confidential: false,
        }
    }

    /// In the order of the file's header.
    fn cells(&self) -> [&'a str; 18] {
        [
            self.guid,
            self.patient,
            self.organisation,
            self.date,
            self.precision,
            self.entered,
            self.time,
            self.code,
            "",
            self.text,
            self.consultation,
            self.value,
            self.unit,
            self.kind,
            self.low,
            self.high,
            "false",
            if self.confidential { "true" } else { "false" },
        ]
    }
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
            observations.row(
                &Observed {
                    guid: &observation,
                    date: &day,
                    precision: "YMD",
                    entered: &day,
                    time: "09:30:00",
                    code,
                    consultation: &consultation,
                    value: &value.to_string(),
                    unit: "mmHg",
                    kind: "Value",
                    low,
                    high,
                    ..Observed::new(&patient, &organisation_guid)
                }
                .cells(),
            );
        }
        let problem_code = *sequence.pick(&PROBLEM_CODES);
        let problem = guid(&mut sequence);
        let onset = format!("{}", 2000 + sequence.below(24));
        observations.row(
            &Observed {
                guid: &problem,
                date: &format!("{onset}-01-01"),
                precision: "Y",
                entered: &day,
                time: "09:35:00",
                code: problem_code,
                consultation: &consultation,
                kind: "Problem",
                ..Observed::new(&patient, &organisation_guid)
            }
            .cells(),
        );
        problems.row(&[&problem, &patient, &organisation_guid, "", "", "Active", "Significant Problem", "false"]);
        if index % 3 == 0 {
            let allergy = guid(&mut sequence);
            observations.row(
                &Observed {
                    guid: &allergy,
                    date: "2015-06-01",
                    precision: "YM",
                    entered: "2015-06-20",
                    time: "11:00:00",
                    code: "1009",
                    text: "Rash",
                    kind: "Allergy",
                    ..Observed::new(&patient, &organisation_guid)
                }
                .cells(),
            );
        }
        if index % 2 == 0 {
            let vaccination = guid(&mut sequence);
            observations.row(
                &Observed {
                    guid: &vaccination,
                    date: "2025-10-14",
                    precision: "YMD",
                    entered: "2025-10-14",
                    time: "10:00:00",
                    code: "1008",
                    kind: "Immunisation",
                    ..Observed::new(&patient, &organisation_guid)
                }
                .cells(),
            );
        }
        // One patient in twenty has a Type 1 opt-out; every other one of those withdrew it later.
        // Their own GUIDs, so that the rest of the extract is as it was without them.
        let opt_outs: &[(&str, &str)] = match index % 40 {
            9 => &[("1011", "2019-05-01")],
            29 => &[("1011", "2019-05-01"), ("1012", "2022-02-01")],
            _ => &[],
        };
        for (n, (code, date)) in opt_outs.iter().enumerate() {
            let row_guid = format!("{{9E{n:06X}{}", &patient[9..]);
            observations.row(
                &Observed {
                    guid: &row_guid,
                    date,
                    precision: "YMD",
                    entered: date,
                    time: "12:00:00",
                    code,
                    kind: "Observation",
                    ..Observed::new(&patient, &organisation_guid)
                }
                .cells(),
            );
        }
        if index % 5 == 2 {
            // Practice-confidential: never leaves the practice.
            let counselling = guid(&mut sequence);
            observations.row(
                &Observed {
                    guid: &counselling,
                    date: &day,
                    precision: "YMD",
                    entered: &day,
                    time: "09:40:00",
                    code: "1010",
                    text: "Confidential counselling entry",
                    consultation: &consultation,
                    kind: "Observation",
                    confidential: true,
                    ..Observed::new(&patient, &organisation_guid)
                }
                .cells(),
            );
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

/// CTV3 / SNOMED CT codes the SystmOne extract uses: CTV3, CTV3 text, SNOMED (empty where the
/// practice recorded none: the CTV3 map or nothing supplies it).
const SYSTMONE_CODES: [(&str, &str, &str); 6] = [
    ("H33..", "Asthma", "195967001"),
    ("X40J5", "Type 2 diabetes mellitus", ""),
    ("G20..", "Essential hypertension", "59621000"),
    ("XaJQr", "Practice-defined code", ""),
    ("2469.", "O/E - Systolic BP reading", "163030003"),
    ("246A.", "O/E - Diastolic BP reading", "163031004"),
];

/// `dd MMM yyyy`, as SystmOne writes dates.
fn tpp_date(year: u64, month: u64, day: u64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("{day:02} {} {year}", MONTHS[(month - 1) as usize])
}

/// A SystmOne-style Strategic Reporting extract (`SR*.csv`, Windows-1252, `dd MMM yyyy`) of
/// `patients` (demo region indexes) registered at `practice`, taken at `extracted`.
pub fn systmone_extract(practice: &Practice, patients: &[usize], extracted: &str) -> Vec<ExtractFile> {
    let mut sequence = Sequence::new(0x5450_5030 ^ practice.ods.bytes().fold(0u64, |hash, b| hash.wrapping_mul(31).wrapping_add(b as u64)));
    let organisation_id = format!("{}", 10_000 + sequence.below(90_000));
    let mut organisation = File::new("SROrganisation", &["RowIdentifier", "IDOrganisationVisibleTo", "OrganisationName", "NationalId"]);
    organisation.row(&[&organisation_id, &organisation_id, practice.name, practice.ods]);
    let common =
        ["RowIdentifier", "IDOrganisationVisibleTo", "DateEventRecorded", "DateEvent", "IDPatient", "IDOrganisation", "RemovedData"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { common.iter().copied().chain(extra.iter().copied()).collect() };
    let mut patient_file = File::new(
        "SRPatient",
        &[
            "RowIdentifier",
            "IDOrganisationVisibleTo",
            "Title",
            "FirstName",
            "MiddleNames",
            "Surname",
            "PreviousSurname",
            "NHSNumber",
            "DateBirth",
            "DateDeath",
            "Gender",
            "EmailAddress",
            "TestPatient",
            "RemovedData",
        ],
    );
    let mut registrations = File::new("SRPatientRegistration", &with(&["DateRegistration", "DateDeRegistration", "RegistrationStatus"]));
    let mut codes = File::new(
        "SRCode",
        &with(&["CTV3Code", "CTV3Text", "SNOMEDCode", "SNOMEDText", "NumericComparator", "IsNumeric", "NumericValue", "NumericUnit"]),
    );
    let mut problems = File::new("SRProblem", &with(&["CTV3Code", "DateEnd", "Severity", "IDCode"]));
    let mut medication = File::new(
        "SRPrimaryCareMedication",
        &with(&[
            "IDMultiLexDMD",
            "NameOfMedication",
            "DateMedicationStart",
            "DateMedicationEnd",
            "MedicationDosage",
            "MedicationQuantity",
            "IsRepeatMedication",
        ]),
    );
    let mut immunisations = File::new(
        "SRImmunisation",
        &with(&["ImmsReadCode", "ImmsSNOMEDCode", "VaccinationName", "VaccBatchNumber", "VaccinationStatus", "DateExpiry"]),
    );
    let mut sensitivities = File::new("SRDrugSensitivity", &with(&["DateStarted", "DateEnded", "IDDrugCode"]));
    let mut row_id = 500_000u64;
    let mut next_id = || {
        row_id += 1 + sequence.below(7);
        row_id.to_string()
    };
    for &index in patients {
        let who = person(index);
        let patient = format!("{}", 7_000_000 + index);
        let number = test_nhs_number(index as u64).to_string();
        let part = |range: std::ops::Range<usize>| who.birth_date[range].parse::<u64>().expect("demo birth dates are yyyy-MM-dd");
        let (year, month, day) = (part(0..4), part(5..7), part(8..10));
        patient_file.row(&[
            &patient,
            &organisation_id,
            if who.female { "Ms" } else { "Mr" },
            who.given,
            "",
            who.family,
            "",
            &number,
            &tpp_date(year, month, day),
            "",
            if who.female { "F" } else { "M" },
            "",
            "N",
            "N",
        ]);
        let seen = format!("{} 10:{:02}:00", tpp_date(2025, 1 + index as u64 % 12, 1 + index as u64 % 28), index % 60);
        registrations.row(&[
            &next_id(),
            &organisation_id,
            &seen,
            "01 Sep 2010",
            &patient,
            &organisation_id,
            "N",
            "01 Sep 2010",
            "",
            "Registered",
        ]);
        for (ctv3, text, snomed, value) in [
            ("2469.", "O/E - Systolic BP reading", "163030003", 110 + index % 50),
            ("246A.", "O/E - Diastolic BP reading", "163031004", 65 + index % 25),
        ] {
            codes.row(&[
                &next_id(),
                &organisation_id,
                &seen,
                &seen,
                &patient,
                &organisation_id,
                "N",
                ctv3,
                text,
                snomed,
                text,
                "",
                "Y",
                &value.to_string(),
                "mmHg",
            ]);
        }
        // As in the EMIS extract: a Type 1 opt-out (CTV3), withdrawn for every other one.
        const DISSENT: &str = "Dissent from secondary use of GP patient identifiable data";
        const WITHDRAWN: &str = "Withdrawal of dissent from secondary use of GP patient identifiable data";
        let opt_outs: &[[&str; 4]] = match index % 40 {
            9 => &[["XaZ89", DISSENT, "827241000000103", "01 May 2019 12:00:00"]],
            29 => &[["XaZ89", DISSENT, "827241000000103", "01 May 2019 12:00:00"], ["9Nu1.", WITHDRAWN, "", "01 Feb 2022 12:00:00"]],
            _ => &[],
        };
        for (n, [ctv3, text, snomed, when]) in opt_outs.iter().enumerate() {
            let row_id = format!("9{patient}{n}");
            codes.row(&[&row_id, &organisation_id, when, when, &patient, &organisation_id, "N", ctv3, text, snomed, text, "", "N", "", ""]);
        }
        let (ctv3, text, snomed) = SYSTMONE_CODES[index % 3];
        let problem_code = next_id();
        codes.row(&[
            &problem_code,
            &organisation_id,
            &seen,
            "01 Jan 2015",
            &patient,
            &organisation_id,
            "N",
            ctv3,
            text,
            snomed,
            if snomed.is_empty() { "" } else { text },
            "",
            "N",
            "",
            "",
        ]);
        problems.row(&[
            &next_id(),
            &organisation_id,
            &seen,
            "01 Jan 2015",
            &patient,
            &organisation_id,
            "N",
            ctv3,
            "",
            "Major",
            &problem_code,
        ]);
        if index % 4 == 1 {
            // A practice-defined code no table maps.
            let (ctv3, text, _) = SYSTMONE_CODES[3];
            codes.row(&[&next_id(), &organisation_id, &seen, &seen, &patient, &organisation_id, "N", ctv3, text, "", "", "", "N", "", ""]);
        }
        medication.row(&[
            &next_id(),
            &organisation_id,
            &seen,
            &seen,
            &patient,
            &organisation_id,
            "N",
            "319283006",
            "Amlodipine 5mg tablets",
            "10 Jan 2024",
            "",
            "One tablet daily",
            "28 tablet",
            "Y",
        ]);
        if index % 2 == 0 {
            immunisations.row(&[
                &next_id(),
                &organisation_id,
                "14 Oct 2025 10:00:00",
                "14 Oct 2025",
                &patient,
                &organisation_id,
                "N",
                "65E..",
                "86198006",
                "Influenza vaccine",
                "FLU2025-17",
                "Given",
                "30 Jun 2026",
            ]);
        }
        if index % 3 == 0 {
            sensitivities.row(&[
                &next_id(),
                &organisation_id,
                &seen,
                "01 Jun 2015",
                &patient,
                &organisation_id,
                "N",
                "01 Jun 2015",
                "",
                "88001",
            ]);
        }
    }
    [organisation, patient_file, registrations, codes, problems, medication, immunisations, sensitivities]
        .into_iter()
        .map(|file| ExtractFile { name: format!("{}_{extracted}.csv", file.name), bytes: windows_1252(&file.text) })
        .collect()
}

/// Text as SystmOne writes it: Windows-1252 (characters outside it as `?`).
fn windows_1252(text: &str) -> Vec<u8> {
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(text);
    bytes.into_owned()
}

/// Text for an XML element.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `yyyy-MM-dd` as EMIS Open writes dates, `dd/MM/yyyy`.
fn emis_open_date(iso: &str) -> String {
    let mut parts = iso.split('-');
    let (year, month, day) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    format!("{day}/{month}/{year}")
}

/// EMIS Open `MedicalRecord` XML files, one per patient of the demo practice (the same people,
/// GUID scheme and codes as [`emis_extract`]): a consultation with two blood pressures, a
/// problem known to the year, an immunisation, a penicillin allergy for every third patient, a
/// repeat medication with one issue, and for patients 2, 12, … a counselling note under a
/// confidentiality policy with an EMIS-local code. `extracted` is `yyyyMMddHHmmss`.
pub fn emis_open_records(practice: &Practice, patients: &[usize], extracted: &str) -> Vec<ExtractFile> {
    let mut sequence = Sequence::new(0x4f50_454e ^ practice.ods.bytes().fold(0u64, |hash, b| hash.wrapping_mul(31).wrapping_add(b as u64)));
    let organisation = guid(&mut sequence);
    let created = format!("{}/{}/{}", &extracted[6..8], &extracted[4..6], &extracted[..4]);
    let created_time = format!("{}:{}", &extracted[8..10], &extracted[10..12]);
    let code = |value: &str, scheme: &str, term: &str, snomed: &str| {
        let map = if snomed.is_empty() { String::new() } else { format!("<MapCode>{snomed}</MapCode><MapScheme>SNOMED</MapScheme>") };
        format!("<Code><Value>{value}</Value><Scheme>{scheme}</Scheme><Term>{}</Term>{map}</Code>", xml_text(term))
    };
    let mut files = Vec::new();
    for &index in patients {
        let patient = guid(&mut sequence);
        let who = person(index);
        let number = test_nhs_number(index as u64).to_string();
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            xml,
            "<MedicalRecord xmlns=\"http://www.e-mis.com/emisopen/MedicalRecord\">\n<Registration><GUID>{patient}</GUID>\
             <DateOfBirth>{}</DateOfBirth><Sex>{}</Sex><FamilyName>{}</FamilyName><FirstNames>{}</FirstNames><Title>{}</Title>\
             <NhsNumber>{number}</NhsNumber><Address><Street>{} Mill Lane</Street><Town>Leeds</Town><County>West Yorkshire</County>\
             <PostCode>LS6 2AB</PostCode></Address><HomeTelephone>0113 496 0000</HomeTelephone><DateAdded>01/09/2010</DateAdded>\
             </Registration>",
            emis_open_date(&who.birth_date),
            if who.female { "F" } else { "M" },
            xml_text(who.family),
            xml_text(who.given),
            if who.female { "Ms" } else { "Mr" },
            1 + sequence.below(150),
        );
        // The problem, the immunisation and, for some, a confidential note.
        xml.push_str("<EventList>\n");
        let _ = writeln!(
            xml,
            "<Event><GUID>{}</GUID><AssignedDate>{}</AssignedDate><DatePart>2</DatePart><DisplayTerm>Asthma</DisplayTerm>{}\
             <Problem><ProblemStatus>1</ProblemStatus><Significance>1</Significance></Problem><EventType>2</EventType></Event>",
            guid(&mut sequence),
            2005 + sequence.below(15),
            code("H33..", "READ2", "Asthma", "195967001"),
        );
        let _ = writeln!(
            xml,
            "<Event><GUID>{}</GUID><AssignedDate>{:02}/10/2025</AssignedDate><DatePart>0</DatePart>{}<EventType>13</EventType></Event>",
            guid(&mut sequence),
            1 + sequence.below(28),
            code("65E..", "READ2", "Influenza vaccination", "86198006"),
        );
        if index % 10 == 2 {
            let _ = writeln!(
                xml,
                "<Event><GUID>{}</GUID><AssignedDate>03/03/2025</AssignedDate><DatePart>0</DatePart>\
                 <DescriptiveText>Discussed at the patient's request</DescriptiveText><PolicyID>1</PolicyID>{}<EventType>0</EventType></Event>",
                guid(&mut sequence),
                code("EMISNQCO1", "EMISCLINICAL", "Counselling session (practice code)", ""),
            );
        }
        xml.push_str("</EventList>\n<ConsultationList>\n");
        let day = format!("{:02}/{:02}/2025", 1 + sequence.below(28), 1 + sequence.below(12));
        let _ = writeln!(
            xml,
            "<Consultation><GUID>{}</GUID><AssignedDate>{day}</AssignedDate><DatePart>0</DatePart><Duration>10</Duration><ElementList>",
            guid(&mut sequence)
        );
        for (read, term, snomed, low, high, value) in [
            ("2469.", "O/E - Systolic BP reading", "163030003", 90, 140, 110 + sequence.below(60)),
            ("246A.", "O/E - Diastolic BP reading", "163031004", 60, 90, 65 + sequence.below(30)),
        ] {
            let _ = writeln!(
                xml,
                "<ConsultationElement><Event><GUID>{}</GUID><AssignedDate>{day}</AssignedDate><DatePart>0</DatePart>\
                 <AssignedTime>09:{:02}</AssignedTime>{}<NumericValue><Value>{value}</Value><Units>mmHg</Units>\
                 <NumericMinimum>{low}</NumericMinimum><NumericMaximum>{high}</NumericMaximum></NumericValue><EventType>5</EventType>\
                 </Event></ConsultationElement>",
                guid(&mut sequence),
                sequence.below(60),
                code(read, "READ2", term, snomed),
            );
        }
        xml.push_str("</ElementList></Consultation>\n</ConsultationList>\n");
        if index % 3 == 0 {
            let _ = writeln!(
                xml,
                "<AllergyList><Allergy><GUID>{}</GUID><AssignedDate>2012</AssignedDate><DatePart>2</DatePart>{}</Allergy></AllergyList>",
                guid(&mut sequence),
                code("91936005", "SNOMED", "Allergy to penicillin", ""),
            );
        }
        let medication = guid(&mut sequence);
        let drug = "<Drug><PreparationID><Value>2001</Value><Scheme>EMISPREPARATION</Scheme><Term>Metformin 500mg modified-release tablets</Term>\
                    <MapCode>325278007</MapCode><MapScheme>SNOMED</MapScheme></PreparationID></Drug>";
        let _ = writeln!(
            xml,
            "<MedicationList><Medication><GUID>{medication}</GUID><AssignedDate>01/02/2024</AssignedDate><Dosage>One tablet twice a day</Dosage>\
             <Quantity>56</Quantity><QuantityUnits>tablet</QuantityUnits>{drug}<PrescriptionType>REPEAT</PrescriptionType>\
             <AuthorisedIssue>6</AuthorisedIssue><Status>C</Status></Medication></MedicationList>\n\
             <IssueList><Issue><GUID>{}</GUID><AssignedDate>01/03/2025</AssignedDate><Dosage>One tablet twice a day</Dosage>\
             <Quantity>56</Quantity><QuantityUnits>tablet</QuantityUnits><Duration>28</Duration>{drug}\
             <MedicationLink><GUID>{medication}</GUID></MedicationLink></Issue></IssueList>",
            guid(&mut sequence),
        );
        let _ = writeln!(
            xml,
            "<LocationList><Location><GUID>{organisation}</GUID><LocationName>{}</LocationName><NationalCode>{}</NationalCode></Location></LocationList>\n\
             <Originator><Organisation><GUID>{organisation}</GUID></Organisation></Originator>\n\
             <MessageInformation><DateCreated>{created}</DateCreated><TimeCreated>{created_time}</TimeCreated></MessageInformation>\n\
             </MedicalRecord>",
            xml_text(practice.name),
            practice.ods,
        );
        let name = format!("MedicalRecord_{}_{}_{extracted}.xml", practice.ods, patient.trim_matches(['{', '}']));
        files.push(ExtractFile { name, bytes: xml.into_bytes() });
    }
    files
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
