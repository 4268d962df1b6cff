//! Any bytes as any file of an EMIS-style (CSV or EMIS Open XML) or SystmOne-style extract, beside the synthetic
//! generator's other files: reading, translation, and the Bundles' serialisation. Nothing may
//! panic; a refusal is an error naming a file.
#![no_main]

use gateway::translate::codes::CodeMaps;
use gateway::translate::emis::ExtractFile;
use gateway::translate::{Format, translate_extract};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let maps = CodeMaps::demo();
    let practice = &gateway::demo::PRACTICES[0];
    let (format, mut files) = match selector % 3 {
        0 => (Format::EmisCsv, gateway::synthetic::emis_extract(practice, &[0, 1, 2], "20260301120000")),
        1 => (Format::SystmOneCsv, gateway::synthetic::systmone_extract(practice, &[0, 1, 2], "20260301120000")),
        _ => (Format::EmisXml, gateway::synthetic::emis_open_records(practice, &[0, 1, 2], "20260301120000")),
    };
    // The fuzzed bytes replace one of the files.
    let index = (selector as usize / 3) % files.len();
    files[index] = ExtractFile { name: files[index].name.clone(), bytes: bytes.to_vec() };
    match translate_extract(format, &files, &maps) {
        Ok(translated) => {
            for patient in &translated.patients {
                let _ = serde_json::to_vec(&patient.bundle).unwrap();
            }
            for (_, error) in &translated.refused {
                assert!(!error.to_string().is_empty());
            }
        }
        Err(error) => assert!(!error.file.is_empty()),
    }
});
