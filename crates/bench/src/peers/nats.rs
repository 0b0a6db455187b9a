//! NATS JetStream: `HPUB` to a file-backed stream with a `Nats-Msg-Id` header, which JetStream
//! deduplicates within the stream's duplicate window, each publish with its own reply subject on
//! which the stream's ack (`{"stream":…,"seq":…}`) arrives. JetStream acknowledges once the message
//! is written to its file store, before any fsync: by default it fsyncs on a timer
//! (`sync_interval`, 2 minutes), so an acknowledged message can be lost to an OS crash or power
//! loss. Its rows say so.

use std::net::TcpStream;

use anyhow::Context;

use super::{request, Protocol, Reply};

/// Reply subjects of setup requests end in this instead of a connection number.
const SETUP: &str = "setup";

/// A NATS server with JetStream at `address`; run `n` publishes to the stream
/// `ONCE_BENCH_<run_id>_<n>`.
pub struct Nats {
    address: String,
    run_id: u128,
    version: String,
}

impl Nats {
    /// Connects once to read the server's version.
    pub fn new(address: &str, run_id: u128) -> anyhow::Result<Nats> {
        let mut nats = Nats { address: address.to_string(), run_id, version: String::new() };
        let mut stream = TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        let mut first = [0u8; 4096];
        let read = std::io::Read::read(&mut stream, &mut first)?;
        let info = String::from_utf8_lossy(&first[..read]);
        nats.version =
            info.split("\"version\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("?").to_string();
        Ok(nats)
    }

    fn stream_name(&self, run: usize) -> String {
        format!("ONCE_BENCH_{}_{run}", self.run_id)
    }

    fn subject(&self, run: usize) -> String {
        format!("oncebench.{}.{run}", self.run_id)
    }

    fn inbox(&self, connection: &str) -> String {
        format!("_INBOX.oncebench.{}.{connection}", self.run_id)
    }

    /// Opens a connection subscribed to `_INBOX.oncebench.<run_id>.<name>.*`.
    fn open(&self, name: &str) -> anyhow::Result<TcpStream> {
        let mut stream =
            TcpStream::connect(&self.address).with_context(|| format!("connecting to {}", self.address))?;
        stream.set_nodelay(true)?;
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}}\r\n\
             SUB {}.* 1\r\nPING\r\n",
            self.inbox(name)
        );
        let pong = request(self, &mut stream, hello.as_bytes()).context("NATS CONNECT")?;
        anyhow::ensure!(pong == "PONG", "expected PONG after CONNECT, got {pong}");
        Ok(stream)
    }

    /// A JetStream API request; the JSON reply, or its error.
    fn api(&self, subject: &str, body: &str) -> anyhow::Result<String> {
        let mut stream = self.open(SETUP)?;
        let message = format!("PUB {subject} {}.0 {}\r\n{body}\r\n", self.inbox(SETUP), body.len());
        request(self, &mut stream, message.as_bytes()).with_context(|| subject.to_string())
    }
}

/// The text up to the first CRLF, and the offset after it.
fn line(buffer: &[u8]) -> Option<(&str, usize)> {
    let end = buffer.windows(2).position(|pair| pair == b"\r\n")?;
    Some((std::str::from_utf8(&buffer[..end]).unwrap_or(""), end + 2))
}

/// The request number at the end of a reply subject (`…<connection>.<sequence>`).
fn sequence_of(subject: &str) -> Option<u64> {
    subject.rsplit('.').next()?.parse().ok()
}

/// Parses one protocol message; `None` while incomplete.
fn parse_message(buffer: &[u8]) -> anyhow::Result<Option<(usize, Reply)>> {
    let Some((head, after_head)) = line(buffer) else { return Ok(None) };
    let words: Vec<&str> = head.split_whitespace().collect();
    let reply = match words.first().copied() {
        Some("INFO") | Some("+OK") => Reply::Ignore,
        Some("PING") => Reply::Respond(b"PONG\r\n".to_vec()),
        Some("PONG") => Reply::Ack { sequence: None, text: "PONG".to_string() },
        Some("-ERR") => Reply::Failed { sequence: None, error: head.to_string() },
        Some(kind @ ("MSG" | "HMSG")) => {
            // MSG subject sid [reply-to] bytes; HMSG subject sid [reply-to] header-bytes total-bytes.
            let total: usize = words.last().context("a MSG without a length")?.parse()?;
            let end = after_head + total;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            let sequence = sequence_of(words.get(1).copied().unwrap_or(""));
            let body = String::from_utf8_lossy(&buffer[after_head..end]).into_owned();
            let reply = if kind == "HMSG" && body.starts_with("NATS/1.0 503") {
                Reply::Failed { sequence, error: "no responders: no stream listens on the subject".to_string() }
            } else if body.contains("\"error\"") {
                Reply::Failed { sequence, error: body }
            } else {
                Reply::Ack { sequence, text: body }
            };
            return Ok(Some((end + 2, reply)));
        }
        _ => anyhow::bail!("unexpected NATS message: {head}"),
    };
    Ok(Some((after_head, reply)))
}

impl Protocol for Nats {
    fn system(&self) -> String {
        format!("NATS {} JetStream (Nats-Msg-Id)", self.version)
    }

    fn durability(&self) -> anyhow::Result<String> {
        Ok("acks BEFORE fsync: file store, fsync every sync_interval (default 2 min); dedup by Nats-Msg-Id".to_string())
    }

    fn workload(&self) -> String {
        "W1/W2 produce with dedup id (peer)".to_string()
    }

    fn setup(&self, run: usize) -> anyhow::Result<()> {
        let name = self.stream_name(run);
        let config = format!(
            "{{\"name\":\"{name}\",\"subjects\":[\"{}\"],\"storage\":\"file\",\"retention\":\"limits\",\
             \"num_replicas\":1,\"duplicate_window\":120000000000}}",
            self.subject(run)
        );
        self.api(&format!("$JS.API.STREAM.CREATE.{name}"), &config).map(drop)
    }

    fn teardown(&self, run: usize) -> anyhow::Result<()> {
        self.api(&format!("$JS.API.STREAM.DELETE.{}", self.stream_name(run)), "").map(drop)
    }

    fn connect(&self, connection: usize) -> anyhow::Result<TcpStream> {
        self.open(&connection.to_string())
    }

    fn replies_in_order(&self) -> bool {
        false
    }

    fn encode(&self, run: usize, connection: usize, sequence: u64, payload: &[u8], out: &mut Vec<u8>) {
        let headers = format!("NATS/1.0\r\nNats-Msg-Id: {}-{run}-{connection}-{sequence}\r\n\r\n", self.run_id);
        let head = format!(
            "HPUB {} {}.{sequence} {} {}\r\n",
            self.subject(run),
            self.inbox(&connection.to_string()),
            headers.len(),
            headers.len() + payload.len()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(headers.as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    fn parse(&self, buffer: &[u8]) -> anyhow::Result<Option<(usize, Reply)>> {
        parse_message(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_name_their_request() {
        let body = br#"{"stream":"S","seq":12}"#;
        let mut bytes = format!("MSG _INBOX.oncebench.1.0.41 1 {}\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"\r\n");
        let (used, reply) = parse_message(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(reply, Reply::Ack { sequence: Some(41), text: String::from_utf8_lossy(body).into_owned() });
        assert_eq!(parse_message(&bytes[..bytes.len() - 3]).unwrap(), None);
    }

    #[test]
    fn errors_pings_and_no_responders() {
        assert_eq!(parse_message(b"PING\r\n").unwrap().unwrap().1, Reply::Respond(b"PONG\r\n".to_vec()));
        assert_eq!(parse_message(b"INFO {}\r\n").unwrap().unwrap().1, Reply::Ignore);
        let status = b"NATS/1.0 503\r\n\r\n";
        let mut bytes = format!("HMSG _INBOX.x.0.3 1 {} {}\r\n", status.len(), status.len()).into_bytes();
        bytes.extend_from_slice(status);
        bytes.extend_from_slice(b"\r\n");
        assert!(matches!(parse_message(&bytes).unwrap().unwrap().1, Reply::Failed { sequence: Some(3), .. }));
        let error = br#"{"error":{"code":400}}"#;
        let mut bytes = format!("MSG _INBOX.x.0.4 1 {}\r\n", error.len()).into_bytes();
        bytes.extend_from_slice(error);
        bytes.extend_from_slice(b"\r\n");
        assert!(matches!(parse_message(&bytes).unwrap().unwrap().1, Reply::Failed { sequence: Some(4), .. }));
    }

    #[test]
    fn publishes_carry_a_message_id_header() {
        let nats = Nats { address: String::new(), run_id: 5, version: String::new() };
        let mut out = Vec::new();
        nats.encode(0, 2, 9, b"xy", &mut out);
        let text = String::from_utf8(out).unwrap();
        let headers = "NATS/1.0\r\nNats-Msg-Id: 5-0-2-9\r\n\r\n";
        assert_eq!(
            text,
            format!(
                "HPUB oncebench.5.0 _INBOX.oncebench.5.2.9 {} {}\r\n{headers}xy\r\n",
                headers.len(),
                headers.len() + 2
            )
        );
    }
}
