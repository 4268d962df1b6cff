//! The HL7 v2 feed: MLLP (`0x0B` message `0x1C 0x0D`) over TCP.
//!
//! One message at a time per connection, in order (HL7 original-mode acknowledgement): a
//! message is translated, then committed through the same transaction path as a FHIR
//! transaction Bundle, and only then answered `AA`. A message that cannot be filed is answered
//! `AE`/`AR` with an ERR segment and kept in the dead-letter store; one that cannot be filed
//! *now* (database down) is answered `AR` and not kept, because the sender still has it and
//! will send it again. A re-sent message (same sender and MSH-10, same bytes) is answered `AA`
//! and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use consent::{ClientKind, Principal, PurposeOfUse, RegisteredClient, Requester, SmartScopes, SystemUser};
use fhir_models::interaction::Interaction;
use fhir_models::{OdsCode, ResourceType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::configuration::MllpSettings;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::{RejectedInput, SqlStore};
use crate::translate::hl7v2::ack::{AckCode, acknowledgement, unavailable};
use crate::translate::hl7v2::{self, ErrorCode, Header, Hl7Error, Location, Message};

const START_BLOCK: u8 = 0x0b;
const END_BLOCK: u8 = 0x1c;
const CARRIAGE_RETURN: u8 = 0x0d;

/// What the listener needs.
pub struct MllpService {
    pub state: web::Data<AppState>,
    pub store: Arc<SqlStore>,
    pub settings: MllpSettings,
    pub metrics: Arc<MllpMetrics>,
}

/// Messages by outcome, for `/metrics`.
#[derive(Default)]
pub struct MllpMetrics {
    pub messages: prometheus_client::metrics::family::Family<OutcomeLabel, prometheus_client::metrics::counter::Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `AA`, `AE` or `AR`.
    pub ack: String,
}

/// Accept connections until the task is dropped (which drops every connection with it).
pub async fn serve(listener: TcpListener, service: Arc<MllpService>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    connections.spawn(async move {
                        if let Err(error) = connection(stream, &service).await {
                            tracing::info!(%peer, %error, "MLLP connection closed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// A frame found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The message between the start and end blocks; `consumed` bytes are done with.
    Message { start: usize, end: usize, consumed: usize },
    /// More bytes are needed.
    Incomplete,
    /// The message is longer than allowed.
    TooLarge,
}

/// Find the first complete frame. Bytes before a start block (line noise, a keep-alive newline)
/// are skipped.
pub fn find_frame(buffer: &[u8], max_message_bytes: usize) -> Frame {
    let Some(start) = buffer.iter().position(|&b| b == START_BLOCK) else {
        return if buffer.len() > max_message_bytes { Frame::TooLarge } else { Frame::Incomplete };
    };
    let body = &buffer[start + 1..];
    match body.windows(2).position(|pair| pair == [END_BLOCK, CARRIAGE_RETURN]) {
        Some(length) if length > max_message_bytes => Frame::TooLarge,
        Some(length) => Frame::Message { start: start + 1, end: start + 1 + length, consumed: start + 1 + length + 2 },
        None if body.len() > max_message_bytes + 1 => Frame::TooLarge,
        None => Frame::Incomplete,
    }
}

pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 3);
    framed.push(START_BLOCK);
    framed.extend_from_slice(message);
    framed.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    framed
}

async fn connection(mut stream: TcpStream, service: &MllpService) -> std::io::Result<()> {
    let idle = Duration::from_secs(service.settings.idle_timeout_secs.max(1));
    let max = service.settings.max_message_bytes;
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match find_frame(&buffer, max) {
            Frame::Message { start, end, consumed } => {
                let ack = service.handle(&buffer[start..end]).await;
                buffer.drain(..consumed);
                stream.write_all(&frame(ack.as_bytes())).await?;
            }
            Frame::TooLarge => {
                let error = Hl7Error::new(
                    ErrorCode::ApplicationInternal,
                    Location::segment("MSH", 1),
                    format!("the message is longer than this gateway takes ({max} bytes, mllp.max_message_bytes)"),
                );
                service.metrics.count(AckCode::Reject);
                let ack = acknowledgement(None, AckCode::Reject, Some(&error), None, &now_hl7(), &ack_control_id());
                stream.write_all(&frame(ack.as_bytes())).await?;
                return Err(std::io::Error::other("message too large"));
            }
            Frame::Incomplete => {
                let read = tokio::time::timeout(idle, stream.read(&mut chunk))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
                if read == 0 {
                    return Ok(());
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
        }
    }
}

impl MllpMetrics {
    fn count(&self, code: AckCode) {
        self.messages.get_or_create(&OutcomeLabel { ack: code.code().to_owned() }).inc();
    }
}

/// How one message ended.
enum Filed {
    Committed,
    Duplicate,
}

impl MllpService {
    /// Process one message and return its ACK.
    pub async fn handle(&self, bytes: &[u8]) -> String {
        let text = hl7v2::message::decode(bytes);
        let parsed = Message::parse(&text);
        let header = parsed.as_ref().ok().and_then(|message| hl7v2::header(message).ok());
        let result = match &parsed {
            Ok(message) => self.file(message, header.clone().expect("a parsed message has a header"), bytes).await,
            Err(error) => Err(Failure::Rejected(error.clone())),
        };
        let (code, error, note) = match result {
            Ok(Filed::Committed) => (AckCode::Accept, None, None),
            Ok(Filed::Duplicate) => (AckCode::Accept, None, Some("duplicate of a message already filed; nothing changed")),
            Err(Failure::Rejected(error)) => {
                self.keep(header.as_ref(), bytes, &error).await;
                (AckCode::for_error(&error), Some(error), None)
            }
            Err(Failure::Retry(error)) => (AckCode::Reject, Some(error), None),
        };
        self.metrics.count(code);
        if let Some(error) = &error {
            tracing::info!(
                ack = code.code(),
                control_id = header.as_ref().map(|h| h.control_id.as_str()).unwrap_or(""),
                location = %error.location,
                code = error.code.code(),
                "HL7 v2 message not filed"
            );
        }
        acknowledgement(header.as_ref(), code, error.as_ref(), note, &now_hl7(), &ack_control_id())
    }

    async fn file(&self, message: &Message<'_>, header: Header, bytes: &[u8]) -> Result<Filed, Failure> {
        if !self.settings.processing_ids.contains(&header.processing_id) {
            return Err(Failure::Rejected(Hl7Error::new(
                ErrorCode::UnsupportedProcessingId,
                message.msh().locate(11),
                format!(
                    "processing id {:?} is not filed here (mllp.processing_ids: {})",
                    header.processing_id,
                    self.settings.processing_ids.join(", ")
                ),
            )));
        }
        let translated = hl7v2::translate_parsed(message, header, bytes).map_err(Failure::Rejected)?;
        let fhir = &self.state.fhir;
        let existing = fhir
            .store
            .read(ResourceType::parse("Provenance").expect("an R4 type"), &translated.provenance_id)
            .await
            .map_err(|e| Failure::retry(&e))?;
        if let Some(existing) = existing.filter(|version| !version.deleted) {
            let same = existing
                .content
                .as_ref()
                .is_some_and(|content| std::str::from_utf8(content).is_ok_and(|text| text.contains(&format!("\"{}\"", translated.digest))));
            if same {
                return Ok(Filed::Duplicate);
            }
            return Err(Failure::Rejected(Hl7Error::new(
                ErrorCode::DuplicateKey,
                message.msh().locate(10),
                format!(
                    "MSH-10 {:?} from {} was already used for a different message; control ids must be unique per sender",
                    translated.header.control_id,
                    translated.header.sender()
                ),
            )));
        }
        let permit = crate::enforce::authorize(self.requester(&translated.header), Interaction::Transaction, None)
            .map_err(|error| Failure::Rejected(internal(&format!("the feed is not permitted to write: {error}"))))?;
        let body = serde_json::to_vec(&translated.bundle).map_err(|e| Failure::Rejected(internal(&e.to_string())))?;
        match crate::fhir::batch_or_transaction(fhir, &permit, body, crate::fhir::ReturnPreference::Minimal).await {
            Ok(_) => Ok(Filed::Committed),
            Err(error @ (ApiError::Unavailable(_) | ApiError::Conflict(_))) => Err(Failure::retry(&error)),
            Err(error) => {
                let outcome = error.outcome();
                let reason: Vec<String> = outcome.issue.iter().filter_map(|issue| issue.diagnostics.clone()).collect();
                Err(Failure::Rejected(Hl7Error::new(
                    ErrorCode::ApplicationInternal,
                    Location::segment("MSH", 1),
                    format!("the translated records were refused by the store: {}", reason.join("; ")),
                )))
            }
        }
    }

    /// The feed writes as a trust's publishing system would: the sending facility's ODS code
    /// when MSH-4 is one, else the configured organisation.
    fn requester(&self, header: &Header) -> Requester {
        let ods = header
            .sending_facility
            .split('^')
            .next()
            .and_then(|code| OdsCode::parse(code).ok())
            .unwrap_or_else(|| self.settings.organisation.clone());
        let scopes = SmartScopes::parse_claim("system/*.cruds").expect("a valid scope");
        Requester::client(RegisteredClient { name: "mllp".into(), kind: ClientKind::Trust, ods: ods.clone(), scopes: scopes.clone() })
            .with_principal(Principal::System(
                SystemUser { subject: format!("mllp:{}", header.sender()), organisation: ods, purpose: PurposeOfUse::Treatment },
                scopes,
            ))
    }

    async fn keep(&self, header: Option<&Header>, bytes: &[u8], error: &Hl7Error) {
        let input = RejectedInput {
            id: None,
            received_at: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64,
            channel: "mllp".into(),
            format: "hl7v2".into(),
            sender: header.map(Header::sender),
            control_id: header.map(|h| h.control_id.clone()).filter(|id| !id.is_empty()),
            location: Some(error.location.to_string()),
            reason: error.reason.clone(),
            content: bytes.to_vec(),
        };
        if let Err(store_error) = self.store.record_rejected(&input).await {
            // The sender still has the message (it was refused), so nothing is lost.
            tracing::error!(error = %store_error, "a refused HL7 v2 message could not be kept in the dead-letter store");
        }
    }
}

enum Failure {
    /// Will never be filed as it is: AE/AR, kept.
    Rejected(Hl7Error),
    /// Could not be filed now: AR, the sender sends it again.
    Retry(Hl7Error),
}

impl Failure {
    fn retry(error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%error, "an HL7 v2 message could not be filed now");
        Self::Retry(unavailable("the gateway cannot file messages just now; send this message again later"))
    }
}

fn internal(reason: &str) -> Hl7Error {
    Hl7Error::new(ErrorCode::ApplicationInternal, Location::segment("MSH", 1), reason)
}

fn now_hl7() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}{:02}{:02}{:02}{:02}{:02}+0000", now.year(), now.month() as u8, now.day(), now.hour(), now.minute(), now.second())
}

fn ack_control_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_and_noise_skipped() {
        let mut buffer = b"\r\n".to_vec();
        buffer.extend(frame(b"MSH|1"));
        buffer.extend(&frame(b"MSH|2")[..4]);
        assert_eq!(find_frame(&buffer, 100), Frame::Message { start: 3, end: 8, consumed: 10 });
        assert_eq!(&buffer[3..8], b"MSH|1");
        buffer.drain(..10);
        assert_eq!(find_frame(&buffer, 100), Frame::Incomplete);
        assert_eq!(find_frame(&frame(&[b'x'; 50]), 10), Frame::TooLarge);
        assert_eq!(find_frame(&[b'x'; 50], 10), Frame::TooLarge);
        // 0x1C inside a message without the carriage return is not the end.
        assert_eq!(find_frame(b"\x0bMSH\x1cx\x1c\r", 100), Frame::Message { start: 1, end: 6, consumed: 8 });
    }
}
