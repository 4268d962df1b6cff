//! Any bytes as a document: the first byte picks CDA, ITK3 or FHIR R4, the rest is the
//! document. Reading, translation and labelling must never panic, whatever comes in.
#![no_main]

use gateway::translate::{Format, translate_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, document)) = data.split_first() else { return };
    let format = [Format::Cda, Format::Itk3, Format::Fhir][usize::from(selector % 3)];
    if let Ok(mut translated) = translate_document(format, document, time::OffsetDateTime::UNIX_EPOCH) {
        let labels = consent::SensitivityLabels::new(consent::SensitivityLabels::uk_default());
        translated.label(&labels);
        let _ = serde_json::to_vec(&translated.bundle).unwrap();
    }
});
