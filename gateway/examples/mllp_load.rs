//! A load generator for the MLLP listener: N senders on their own connections, each sending its
//! share of generated ADT^A01/A08/A03 and ORU^R01 messages one at a time (waiting for each ACK,
//! as HL7 original mode requires), then the whole set again to show re-sends change nothing.
//!
//! `cargo run --release -p gateway --example mllp_load -- 127.0.0.1:2575 10000 4`
//! (address, messages, senders). Prints throughput and ACK latency percentiles per pass.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Message `n` of sender `s`: per patient an admission, an update, a result and a discharge.
fn message(sender: usize, n: usize) -> String {
    let patient = n / 4;
    let nhs = gateway::demo::test_nhs_number((sender * 20_000 + patient) as u64).as_string();
    let visit = format!("V{sender}-{patient}");
    let header = |kind: &str| format!("MSH|^~\\&|PAS{sender}|R9Z|HIE|HIE|20240305101500||{kind}|L{sender}-{n}|P|2.4\r");
    let pid =
        format!("PID|1||{nhs}^^^NHS^NH~K{sender}{patient}^^^R9Z^MR||LOAD^PATIENT{patient}||19800101|F|||1 High St^^Leeds^^LS1 1AA^GBR^H\r");
    let pv1 = |discharged: &str| {
        format!(
            "PV1|1|I|WARD4^A^1||||C123456^JONES^ANN^^^DR^^^GMC||||||||||||{visit}^^^R9Z^VN|||||||||||||||||||||||||20240305100000|{discharged}\r"
        )
    };
    match n % 4 {
        0 => format!("{}EVN|A01|20240305101500\r{pid}{}", header("ADT^A01^ADT_A01"), pv1("")),
        1 => format!("{}EVN|A08|20240305111500\r{pid}{}", header("ADT^A08^ADT_A01"), pv1("")),
        2 => {
            let mut text = format!(
                "{}{pid}OBR|1|P{sender}-{patient}|F{sender}-{patient}|U&E^Urea and electrolytes^L|||20240305120000||||||||||||||||||F\r",
                header("ORU^R01^ORU_R01")
            );
            for (index, (code, name, value)) in
                [("2823-3", "Potassium", "4.1"), ("2951-2", "Sodium", "139"), ("3094-0", "Urea", "5.2")].iter().enumerate()
            {
                text.push_str(&format!("OBX|{}|NM|{code}^{name}^LN||{value}|mmol/L^^UCUM||N|||F\r", index + 1));
            }
            text
        }
        _ => format!("{}EVN|A03|20240309143000\r{pid}{}", header("ADT^A03^ADT_A03"), pv1("20240309143000")),
    }
}

async fn send_all(address: &str, sender: usize, messages: usize) -> (Vec<Duration>, usize) {
    let mut stream = TcpStream::connect(address).await.expect("the MLLP listener accepts");
    stream.set_nodelay(true).unwrap();
    let mut latencies = Vec::with_capacity(messages);
    let mut refused = 0;
    let mut buffer = Vec::new();
    for n in 0..messages {
        let framed = gateway::mllp::frame(message(sender, n).as_bytes());
        let started = Instant::now();
        stream.write_all(&framed).await.unwrap();
        let ack = loop {
            if let gateway::mllp::Frame::Message { start, end, consumed } = gateway::mllp::find_frame(&buffer, 1 << 20) {
                let ack = String::from_utf8_lossy(&buffer[start..end]).into_owned();
                buffer.drain(..consumed);
                break ack;
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the gateway closed the connection");
            buffer.extend_from_slice(&chunk[..read]);
        };
        latencies.push(started.elapsed());
        if !ack.contains("MSA|AA|") {
            refused += 1;
            eprintln!("not accepted: {}", ack.replace('\r', " / "));
        }
    }
    (latencies, refused)
}

async fn pass(address: &str, total: usize, senders: usize, name: &str) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let address = address.to_owned();
            tokio::spawn(async move { send_all(&address, sender, total / senders).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (mine, not_accepted) = task.await.unwrap();
        latencies.extend(mine);
        refused += not_accepted;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{name}: {} messages from {senders} senders in {:.2} s = {:.0} messages/s; ACK latency p50 {:.2} ms, p99 {:.2} ms; not accepted: {refused}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.5).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let address = arguments.get(1).cloned().unwrap_or_else(|| "127.0.0.1:2575".into());
    let total: usize = arguments.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let senders: usize = arguments.get(3).and_then(|n| n.parse().ok()).unwrap_or(4);
    pass(&address, total, senders, "first pass").await;
    pass(&address, total, senders, "re-sent").await;
}
