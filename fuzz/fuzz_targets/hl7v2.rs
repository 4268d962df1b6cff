//! Any bytes through the HL7 v2 path the MLLP listener takes: framing, decoding, parsing,
//! translation, and the ACK for whatever came out. Nothing may panic.
#![no_main]

use gateway::translate::hl7v2::{self, Message, ack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway::mllp::find_frame(data, 1 << 20);
    let text = hl7v2::message::decode(data);
    let header = Message::parse(&text).ok().and_then(|message| hl7v2::header(&message).ok());
    let (code, error) = match hl7v2::translate(&text) {
        Ok(translated) => {
            let _ = serde_json::to_vec(&translated.bundle).unwrap();
            (ack::AckCode::Accept, None)
        }
        Err(error) => (ack::AckCode::for_error(&error), Some(error)),
    };
    let _ = ack::acknowledgement(header.as_ref(), code, error.as_ref(), None, "20240101000000+0000", "ACK1");
    for (_, message) in gateway::translate::split_hl7v2_messages(&text) {
        let _ = hl7v2::translate(&message);
    }
});
