//! Redis streams: `XADD key * v PAYLOAD` in RESP, pipelined. With `appendonly yes` and
//! `appendfsync always` Redis writes the append-only file and fsyncs it before it sends the replies
//! of an event-loop iteration, so one fsync covers every command read in that iteration (group
//! commit), and a reply means the entry is on disk. Redis does not deduplicate: each XADD is a new
//! entry.

use std::net::TcpStream;

use anyhow::Context;

use super::{request, Protocol, Reply};

/// A Redis server at `address`; run `n` writes the stream `once-bench-<run_id>-<n>`.
pub struct Redis {
    address: String,
    run_id: u128,
    version: String,
}

/// One RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Value>),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Simple(text) | Value::Error(text) => text.clone(),
            Value::Integer(value) => value.to_string(),
            Value::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Value::Bulk(None) => String::new(),
            Value::Array(values) => values.iter().map(Value::text).collect::<Vec<_>>().join(" "),
        }
    }
}

/// The line ending at the first CRLF of `buffer`, and the bytes up to after it.
fn line(buffer: &[u8]) -> Option<(&[u8], usize)> {
    let end = buffer.windows(2).position(|pair| pair == b"\r\n")?;
    Some((&buffer[..end], end + 2))
}

fn number(bytes: &[u8]) -> anyhow::Result<i64> {
    std::str::from_utf8(bytes)?.parse().context("a RESP length or integer")
}

/// Parses the RESP value at the front of `buffer`; `None` while incomplete.
fn parse_value(buffer: &[u8]) -> anyhow::Result<Option<(usize, Value)>> {
    let Some((head, after_head)) = line(buffer) else { return Ok(None) };
    anyhow::ensure!(!head.is_empty(), "an empty RESP line");
    let body = &head[1..];
    let value = match head[0] {
        b'+' => (after_head, Value::Simple(String::from_utf8_lossy(body).into_owned())),
        b'-' => (after_head, Value::Error(String::from_utf8_lossy(body).into_owned())),
        b':' => (after_head, Value::Integer(number(body)?)),
        b'$' => {
            let length = number(body)?;
            if length < 0 {
                (after_head, Value::Bulk(None))
            } else {
                let end = after_head + length as usize;
                if buffer.len() < end + 2 {
                    return Ok(None);
                }
                (end + 2, Value::Bulk(Some(buffer[after_head..end].to_vec())))
            }
        }
        b'*' => {
            let count = number(body)?.max(0);
            let mut used = after_head;
            let mut values = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let Some((length, value)) = parse_value(&buffer[used..])? else { return Ok(None) };
                used += length;
                values.push(value);
            }
            (used, Value::Array(values))
        }
        other => anyhow::bail!("unexpected RESP type byte {other:#x}"),
    };
    Ok(Some(value))
}

/// Appends a RESP command of `arguments` to `out`.
fn command(arguments: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", arguments.len()).as_bytes());
    for argument in arguments {
        out.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        out.extend_from_slice(argument);
        out.extend_from_slice(b"\r\n");
    }
}

impl Redis {
    /// Connects once to read the server's version.
    pub fn new(address: &str, run_id: u128) -> anyhow::Result<Redis> {
        let mut redis = Redis { address: address.to_string(), run_id, version: String::new() };
        let info = redis.call(&[b"INFO", b"server"])?;
        redis.version =
            info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
        Ok(redis)
    }

    fn key(&self, run: usize) -> String {
        format!("once-bench-{}-{run}", self.run_id)
    }

    /// One command on a fresh connection; the text of its reply.
    fn call(&self, arguments: &[&[u8]]) -> anyhow::Result<String> {
        let mut stream =
            TcpStream::connect(&self.address).with_context(|| format!("connecting to {}", self.address))?;
        let mut bytes = Vec::new();
        command(arguments, &mut bytes);
        request(self, &mut stream, &bytes)
    }

    fn config(&self, name: &str) -> anyhow::Result<String> {
        let reply = self.call(&[b"CONFIG", b"GET", name.as_bytes()])?;
        Ok(reply.split_whitespace().nth(1).unwrap_or("").to_string())
    }
}

impl Protocol for Redis {
    fn system(&self) -> String {
        format!("Redis {} streams (XADD)", self.version)
    }

    fn durability(&self) -> anyhow::Result<String> {
        let (appendonly, appendfsync) = (self.config("appendonly")?, self.config("appendfsync")?);
        Ok(if appendonly == "yes" && appendfsync == "always" {
            "appendonly yes, appendfsync always: AOF fsync before reply; no dedup".to_string()
        } else {
            format!("NOT durable per ack: appendonly {appendonly}, appendfsync {appendfsync}")
        })
    }

    fn workload(&self) -> String {
        "W1 produce (peer)".to_string()
    }

    fn setup(&self, run: usize) -> anyhow::Result<()> {
        self.call(&[b"DEL", self.key(run).as_bytes()]).map(drop)
    }

    fn teardown(&self, run: usize) -> anyhow::Result<()> {
        self.setup(run)
    }

    fn connect(&self, _connection: usize) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&self.address).with_context(|| format!("connecting to {}", self.address))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn encode(&self, run: usize, _connection: usize, _sequence: u64, payload: &[u8], out: &mut Vec<u8>) {
        command(&[b"XADD", self.key(run).as_bytes(), b"*", b"v", payload], out);
    }

    fn parse(&self, buffer: &[u8]) -> anyhow::Result<Option<(usize, Reply)>> {
        Ok(parse_value(buffer)?.map(|(used, value)| {
            let reply = match value {
                Value::Error(error) => Reply::Failed { sequence: None, error },
                other => Reply::Ack { sequence: None, text: other.text() },
            };
            (used, reply)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_values_parse_whole_or_not_at_all() {
        let reply = b"$15\r\n1700000000000-0\r\n";
        assert_eq!(parse_value(reply).unwrap(), Some((reply.len(), Value::Bulk(Some(b"1700000000000-0".to_vec())))));
        assert_eq!(parse_value(&reply[..10]).unwrap(), None);
        let array = b"*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n";
        let (used, value) = parse_value(array).unwrap().unwrap();
        assert_eq!((used, value.text()), (array.len(), "appendonly yes".to_string()));
        assert_eq!(parse_value(b"-ERR no\r\n").unwrap(), Some((9, Value::Error("ERR no".to_string()))));
        assert_eq!(parse_value(b":3\r\n").unwrap(), Some((4, Value::Integer(3))));
        assert_eq!(parse_value(b"$-1\r\n").unwrap(), Some((5, Value::Bulk(None))));
        assert!(parse_value(b"?x\r\n").is_err());
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&[b"XADD", b"k", b"*", b"v", b"abc"], &mut out);
        assert_eq!(out, b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\nv\r\n$3\r\nabc\r\n");
    }
}
