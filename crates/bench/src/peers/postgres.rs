//! PostgreSQL as the durable dedup baseline: `INSERT INTO t (id, body) VALUES (…) ON CONFLICT (id)
//! DO NOTHING`, the message id being the primary key. Spoken in the simple-query protocol, which a
//! server reads in order from a pipelined connection; each statement is its own transaction, so
//! with `synchronous_commit = on` its CommandComplete/ReadyForQuery comes after the WAL holding it
//! is flushed. Concurrent connections share WAL flushes (group commit); statements of one
//! connection do not. Needs `trust` authentication for the user `postgres` on the address given.

use std::net::TcpStream;

use anyhow::Context;

use super::{request, Protocol, Reply};

const USER: &str = "postgres";
const DATABASE: &str = "postgres";

/// A PostgreSQL server at `address`; run `n` writes the table `once_bench_<run_id>_<n>`.
pub struct Postgres {
    address: String,
    run_id: u128,
    rows_per_statement: usize,
    version: String,
}

/// Appends a simple-query message.
fn query(sql: &str, out: &mut Vec<u8>) {
    out.push(b'Q');
    out.extend_from_slice(&(sql.len() as u32 + 5).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
}

fn startup() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for text in ["user", USER, "database", DATABASE, ""] {
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    let mut message = (body.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// The `M` (message) field of an ErrorResponse body.
fn error_message(body: &[u8]) -> String {
    body.split(|&byte| byte == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|message| String::from_utf8_lossy(message).into_owned())
        .unwrap_or_else(|| "an error without a message".to_string())
}

/// The first column of a DataRow body, as text.
fn first_column(body: &[u8]) -> Option<String> {
    let length = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let bytes = body.get(6..6 + usize::try_from(length).ok()?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Parses one whole response, up to and including its ReadyForQuery; `None` while incomplete.
fn parse_response(buffer: &[u8]) -> anyhow::Result<Option<(usize, Reply)>> {
    let mut at = 0;
    let (mut error, mut text) = (None, String::new());
    loop {
        let Some(header) = buffer.get(at..at + 5) else { return Ok(None) };
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        anyhow::ensure!(length >= 4, "a PostgreSQL message length below 4");
        let Some(body) = buffer.get(at + 5..at + 1 + length) else { return Ok(None) };
        at += 1 + length;
        match header[0] {
            b'E' => error = Some(error_message(body)),
            b'D' if text.is_empty() => text = first_column(body).unwrap_or_default(),
            b'R' => {
                let code = body.get(..4).map(|code| u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
                if code != Some(0) {
                    error = Some(format!("authentication {code:?} asked; the benchmark needs trust for {USER}"));
                }
            }
            b'Z' => {
                let reply = match error {
                    Some(error) => Reply::Failed { sequence: None, error },
                    None => Reply::Ack { sequence: None, text },
                };
                return Ok(Some((at, reply)));
            }
            // CommandComplete, RowDescription, ParameterStatus, BackendKeyData, notices.
            _ => {}
        }
    }
}

impl Postgres {
    /// Connects once to read the server's version.
    pub fn new(address: &str, run_id: u128, rows_per_statement: usize) -> anyhow::Result<Postgres> {
        anyhow::ensure!(rows_per_statement > 0, "--rows-per-request must be at least 1");
        let mut postgres =
            Postgres { address: address.to_string(), run_id, rows_per_statement, version: String::new() };
        postgres.version = postgres.sql("SHOW server_version")?;
        Ok(postgres)
    }

    fn table(&self, run: usize) -> String {
        format!("once_bench_{}_{run}", self.run_id)
    }

    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let mut stream = self.connect(0)?;
        let mut bytes = Vec::new();
        query(sql, &mut bytes);
        request(self, &mut stream, &bytes).with_context(|| sql.to_string())
    }
}

impl Protocol for Postgres {
    fn system(&self) -> String {
        let version = self.version.split_whitespace().next().unwrap_or("?");
        format!("PostgreSQL {version} (INSERT … ON CONFLICT DO NOTHING)")
    }

    fn durability(&self) -> anyhow::Result<String> {
        let (fsync, synchronous_commit) = (self.sql("SHOW fsync")?, self.sql("SHOW synchronous_commit")?);
        let wal_sync_method = self.sql("SHOW wal_sync_method")?;
        Ok(if fsync == "on" && synchronous_commit == "on" {
            format!(
                "fsync on, synchronous_commit on: WAL flushed ({wal_sync_method}) before commit; dedup by primary key"
            )
        } else {
            format!("NOT durable per ack: fsync {fsync}, synchronous_commit {synchronous_commit}")
        })
    }

    fn workload(&self) -> String {
        "W1/W2 produce with dedup id (peer)".to_string()
    }

    fn setup(&self, run: usize) -> anyhow::Result<()> {
        let table = self.table(run);
        self.sql(&format!("DROP TABLE IF EXISTS {table}"))?;
        self.sql(&format!("CREATE TABLE {table} (id bigint PRIMARY KEY, body text NOT NULL)")).map(drop)
    }

    fn teardown(&self, run: usize) -> anyhow::Result<()> {
        self.sql(&format!("DROP TABLE IF EXISTS {}", self.table(run))).map(drop)
    }

    fn connect(&self, _connection: usize) -> anyhow::Result<TcpStream> {
        let mut stream =
            TcpStream::connect(&self.address).with_context(|| format!("connecting to {}", self.address))?;
        stream.set_nodelay(true)?;
        request(self, &mut stream, &startup()).context("PostgreSQL startup")?;
        Ok(stream)
    }

    fn records_per_request(&self) -> usize {
        self.rows_per_statement
    }

    fn encode(&self, run: usize, connection: usize, sequence: u64, payload: &[u8], out: &mut Vec<u8>) {
        use std::fmt::Write;
        // The payload is printable ASCII without quotes (see `peers::payload`), so it is a literal as is.
        let body = std::str::from_utf8(payload).unwrap_or_default();
        let mut sql = format!("INSERT INTO {} (id, body) VALUES ", self.table(run));
        for row in 0..self.rows_per_statement as u64 {
            let id = ((connection as u64) << 40) | (sequence * self.rows_per_statement as u64 + row);
            let separator = if row == 0 { "" } else { "," };
            let _ = write!(sql, "{separator}({id},'{body}')");
        }
        sql.push_str(" ON CONFLICT (id) DO NOTHING");
        query(&sql, out);
    }

    fn parse(&self, buffer: &[u8]) -> anyhow::Result<Option<(usize, Reply)>> {
        parse_response(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_response_ends_at_ready_for_query() {
        let mut bytes = message(b'C', b"INSERT 0 1\0");
        bytes.extend(message(b'Z', b"I"));
        assert_eq!(
            parse_response(&bytes).unwrap(),
            Some((bytes.len(), Reply::Ack { sequence: None, text: "".into() }))
        );
        assert_eq!(parse_response(&bytes[..bytes.len() - 1]).unwrap(), None);
    }

    #[test]
    fn errors_and_data_rows_are_read() {
        let mut bytes = message(b'E', b"SERROR\0Mrelation does not exist\0\0");
        bytes.extend(message(b'Z', b"I"));
        let (_, reply) = parse_response(&bytes).unwrap().unwrap();
        assert_eq!(reply, Reply::Failed { sequence: None, error: "relation does not exist".into() });
        let mut row = 1u16.to_be_bytes().to_vec();
        row.extend(2i32.to_be_bytes());
        row.extend(b"on");
        let mut bytes = message(b'D', &row);
        bytes.extend(message(b'Z', b"I"));
        assert_eq!(parse_response(&bytes).unwrap().unwrap().1, Reply::Ack { sequence: None, text: "on".into() });
    }

    #[test]
    fn statements_carry_unique_ids() {
        let postgres = Postgres { address: String::new(), run_id: 7, rows_per_statement: 2, version: String::new() };
        let mut out = Vec::new();
        postgres.encode(0, 1, 3, b"ab", &mut out);
        let sql = String::from_utf8_lossy(&out[5..out.len() - 1]).into_owned();
        let id = 1u64 << 40;
        assert_eq!(
            sql,
            format!(
                "INSERT INTO once_bench_7_0 (id, body) VALUES ({},'ab'),({},'ab') ON CONFLICT (id) DO NOTHING",
                id + 6,
                id + 7
            )
        );
    }
}
