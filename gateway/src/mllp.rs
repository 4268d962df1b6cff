//! The HL7 v2 feed: MLLP (`0x0B` message `0x1C 0x0D`) over TCP. One message at a time per
//! connection, in order (HL7 original-mode acknowledgement); what happens to each message is
//! [`Hl7v2Ingest::handle`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::configuration::MllpSettings;
use crate::ingest::{Hl7v2Ingest, ack_control_id, now_hl7};
use crate::translate::hl7v2::ack::{AckCode, acknowledgement};
use crate::translate::hl7v2::{ErrorCode, Hl7Error, Location};

const START_BLOCK: u8 = 0x0b;
const END_BLOCK: u8 = 0x1c;
const CARRIAGE_RETURN: u8 = 0x0d;

/// What the listener needs.
pub struct MllpService {
    pub ingest: Hl7v2Ingest,
    pub settings: MllpSettings,
    pub metrics: Arc<MllpMetrics>,
    /// Every message is recorded before its ACK leaves, as every HTTP request is.
    pub audit: crate::audit::AuditTrail,
}

/// File one message and record it in the audit trail (the sender, the message, what it wrote
/// and whose records those are in) before its ACK leaves; a message whose record cannot be
/// written is answered `AR`, so the sender sends it again (a re-send changes nothing).
async fn audited(service: &MllpService, message: &[u8], peer: std::net::SocketAddr) -> (AckCode, String) {
    let text = crate::translate::hl7v2::message::decode(message);
    let header = crate::translate::hl7v2::Message::parse(&text).ok().and_then(|parsed| crate::translate::hl7v2::header(&parsed).ok());
    let target = match &header {
        Some(header) => format!("{}^{} {} from {}", header.message_code, header.trigger_event, header.control_id, header.sender()),
        None => "a message without a readable MSH".to_owned(),
    };
    let note = crate::audit::AuditNote {
        method: "MLLP".into(),
        target,
        address: Some(peer.ip().to_string()),
        interaction: Some("transaction".into()),
        who: crate::audit::Who {
            client: header.as_ref().map(|h| h.sending_application.clone()).filter(|a| !a.is_empty()),
            organisation: header.as_ref().map(|h| h.sending_facility.clone()).filter(|f| !f.is_empty()),
            kind: Some("system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let (crate::ingest::Handled { code, ack, status }, mut note) = crate::audit::noted(note, service.ingest.handle(message)).await;
    // The HTTP status of the same outcome, and the ACK code itself.
    note.status = status;
    note.target.push_str(" ACK ");
    note.target.push_str(code.code());
    let recorded = fhir_models::datetime::to_micros(time::OffsetDateTime::now_utc());
    match service.audit.append(&note, recorded).await {
        Ok(()) => (code, ack),
        Err(error) => {
            service.audit.metrics.unrecorded.inc();
            tracing::error!(%error, "ACK withheld: the message's audit record could not be written");
            let error = Hl7Error::new(
                ErrorCode::ApplicationInternal,
                Location::segment("MSH", 10),
                "the gateway cannot record this message in its audit trail now; send it again",
            );
            (AckCode::Reject, acknowledgement(header.as_ref(), AckCode::Reject, Some(&error), None, &now_hl7(), &ack_control_id()))
        }
    }
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
                        if let Err(error) = connection(stream, &service, peer).await {
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

async fn connection(mut stream: TcpStream, service: &MllpService, peer: std::net::SocketAddr) -> std::io::Result<()> {
    let idle = Duration::from_secs(service.settings.idle_timeout_secs.max(1));
    let max = service.settings.max_message_bytes;
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match find_frame(&buffer, max) {
            Frame::Message { start, end, consumed } => {
                let (code, ack) = audited(service, &buffer[start..end], peer).await;
                service.metrics.count(code);
                buffer.drain(..consumed);
                stream.write_all(&frame(ack.as_bytes())).await?;
            }
            Frame::TooLarge => {
                let error = Hl7Error::new(
                    ErrorCode::ApplicationInternal,
                    Location::segment("MSH", 1),
                    format!("the message is longer than this gateway takes ({max} bytes, mllp.max_message_bytes)"),
                );
                service.metrics.count(AckCode::Error);
                let ack = acknowledgement(None, AckCode::Error, Some(&error), None, &now_hl7(), &ack_control_id());

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
    pub fn count(&self, code: AckCode) {
        self.messages.get_or_create(&OutcomeLabel { ack: code.code().to_owned() }).inc();
    }
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
