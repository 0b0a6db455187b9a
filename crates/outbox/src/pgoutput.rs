//! The few messages of PostgreSQL's logical replication protocol (the `pgoutput` plugin, protocol
//! version 1; "Logical Replication Message Formats" in the PostgreSQL manual) that the relay reads:
//! Begin, Commit, Relation and Insert. The publication the relay creates publishes inserts only;
//! every other message is recognised and skipped, so a decoding stream that carries them (a
//! publication created by hand, a `pg_logical_emit_message` call) does not stop the relay.
//!
//! All integers are big-endian; strings are NUL-terminated; tuple values arrive in text format
//! (the plugin's default), each as `n` (NULL), `u` (unchanged TOASTed value: only in updates) or
//! `t` + length + bytes.

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin {
        xid: u32,
    },
    /// `end_lsn` is the position just past the transaction's commit record: a slot confirmed up to
    /// it never decodes this transaction again, and decodes every transaction committed later.
    Commit {
        end_lsn: u64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        values: Vec<Value>,
    },
    /// Anything else (Update, Delete, Truncate, Type, Origin, logical Message): not the relay's.
    Other(u8),
}

/// A table's description, sent before its first change in each decoding session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// (column name, type oid) in column order: the order of an Insert's values.
    pub columns: Vec<(String, u32)>,
}

/// One column value of a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    /// The value's text form (`bytea` as `\x` + hex, `jsonb` as its JSON text).
    Text(Vec<u8>),
    /// A TOASTed value that did not change: never in an insert.
    Unchanged,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("undecodable pgoutput message '{tag}' at byte {at}: {what}")]
pub struct DecodeError {
    pub tag: char,
    pub at: usize,
    pub what: &'static str,
}

/// Reads one message (one row of `pg_logical_slot_peek_binary_changes`).
pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
    let Some((&tag, _)) = data.split_first() else {
        return Err(DecodeError { tag: '?', at: 0, what: "an empty message" });
    };
    let mut reader = Reader { data, at: 1, tag: tag as char };
    let message = match tag {
        b'B' => {
            let _final_lsn = reader.u64()?;
            let _commit_time = reader.u64()?;
            Message::Begin { xid: reader.u32()? }
        }
        b'C' => {
            let _flags = reader.u8()?;
            let commit_lsn = reader.u64()?;
            let end_lsn = reader.u64()?;
            let _commit_time = reader.u64()?;
            if end_lsn <= commit_lsn {
                return Err(reader.error("a commit whose end is not past its start"));
            }
            Message::Commit { end_lsn }
        }
        b'R' => {
            let id = reader.u32()?;
            let namespace = reader.string()?;
            let name = reader.string()?;
            let _replica_identity = reader.u8()?;
            let count = reader.count()?;
            let mut columns = Vec::with_capacity(count);
            for _ in 0..count {
                let _flags = reader.u8()?;
                let column = reader.string()?;
                let type_oid = reader.u32()?;
                let _type_modifier = reader.u32()?;
                columns.push((column, type_oid));
            }
            Message::Relation(Relation { id, namespace, name, columns })
        }
        b'I' => {
            let relation = reader.u32()?;
            if reader.u8()? != b'N' {
                return Err(reader.error("an insert without its new tuple"));
            }
            let count = reader.count()?;
            let mut values = Vec::with_capacity(count);
            for _ in 0..count {
                values.push(match reader.u8()? {
                    b'n' => Value::Null,
                    b'u' => Value::Unchanged,
                    b't' => {
                        let length = reader.u32()? as usize;
                        Value::Text(reader.bytes(length)?.to_vec())
                    }
                    b'b' => return Err(reader.error("a binary-format value (the relay asks for text)")),
                    _ => return Err(reader.error("an unknown tuple value kind")),
                });
            }
            Message::Insert { relation, values }
        }
        b'U' | b'D' | b'T' | b'Y' | b'O' | b'M' => return Ok(Message::Other(tag)),
        _ => return Err(reader.error("an unknown message type")),
    };
    if reader.at != data.len() {
        return Err(reader.error("bytes after the end of the message"));
    }
    Ok(message)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    tag: char,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError { tag: self.tag, at: self.at, what }
    }

    fn bytes(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(length).filter(|end| *end <= self.data.len());
        let end = end.ok_or_else(|| self.error("a field past the end of the message"))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }

    /// A column count (Int16); negative counts do not exist.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let count = i16::from_be_bytes(self.bytes(2)?.try_into().expect("2 bytes"));
        usize::try_from(count).map_err(|_| self.error("a negative column count"))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.data[self.at..];
        let length = rest.iter().position(|byte| *byte == 0).ok_or_else(|| self.error("an unterminated string"))?;
        let text = std::str::from_utf8(&rest[..length]).map_err(|_| self.error("a name that is not UTF-8"))?;
        self.at += length + 1;
        Ok(text.to_string())
    }
}

/// An LSN as PostgreSQL prints it (`16/B374D848`), for `pg_lsn` parameters.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// A `bytea` value's text form (`\x` + hex, the default `bytea_output`) as its bytes.
pub fn bytea_from_text(text: &[u8]) -> Option<Vec<u8>> {
    let hex = text.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}

/// A timestamp column's text in the relay's session (`DateStyle = ISO`, `TimeZone = UTC`) as ms
/// since the epoch: `2026-12-04 23:01:56.801+00` (with time zone), `2026-12-04 23:01:56.801`
/// (without: taken as UTC), or an integer column's milliseconds. `None` for what is not one of
/// these (`infinity`, years before 1970).
pub fn timestamp_ms(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let time = humantime::parse_rfc3339_weak(text.strip_suffix("+00").unwrap_or(text)).ok()?;
    i64::try_from(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages as PostgreSQL 15 sent them for `INSERT INTO outbox … VALUES ('o1', …), ('o2', …)`
    /// (captured with `pg_logical_slot_peek_binary_changes`, proto_version 1).
    fn captured() -> Vec<Vec<u8>> {
        let mut relation = b"R\0\0@\x0bpublic\0outbox\0d\0\x02".to_vec();
        relation.extend_from_slice(b"\x01id\0\0\0\x0b\x86\xff\xff\xff\xff");
        relation.extend_from_slice(b"\0payload\0\0\0\x0e\xda\xff\xff\xff\xff");
        let mut insert = b"I\0\0@\x0bN\0\x02".to_vec();
        insert.extend_from_slice(b"t\0\0\0\x02o1");
        insert.extend_from_slice(b"t\0\0\0\x08{\"a\": 1}");
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x0153_1EC0u64.to_be_bytes());
        begin.extend_from_slice(&7u64.to_be_bytes());
        begin.extend_from_slice(&728u32.to_be_bytes());
        let mut commit = vec![b'C', 0];
        commit.extend_from_slice(&0x0153_1EC0u64.to_be_bytes());
        commit.extend_from_slice(&0x0153_1EF0u64.to_be_bytes());
        commit.extend_from_slice(&7u64.to_be_bytes());
        vec![begin, relation, insert, b"I\0\0@\x0bN\0\x02t\0\0\0\x02o2n".to_vec(), commit]
    }

    #[test]
    fn a_transaction_decodes() {
        let messages: Vec<Message> = captured().iter().map(|data| decode(data).expect("decodes")).collect();
        assert_eq!(messages[0], Message::Begin { xid: 728 });
        let Message::Relation(relation) = &messages[1] else { panic!("a relation: {:?}", messages[1]) };
        assert_eq!((relation.id, relation.namespace.as_str(), relation.name.as_str()), (0x400b, "public", "outbox"));
        assert_eq!(relation.columns, vec![("id".to_string(), 2950), ("payload".to_string(), 3802)]);
        assert_eq!(
            messages[2],
            Message::Insert {
                relation: 0x400b,
                values: vec![Value::Text(b"o1".to_vec()), Value::Text(b"{\"a\": 1}".to_vec())]
            }
        );
        assert_eq!(
            messages[3],
            Message::Insert { relation: 0x400b, values: vec![Value::Text(b"o2".to_vec()), Value::Null] }
        );
        assert_eq!(messages[4], Message::Commit { end_lsn: 0x0153_1EF0 });
    }

    #[test]
    fn every_truncation_and_every_extra_byte_is_an_error() {
        for data in captured() {
            for end in 0..data.len() {
                assert!(decode(&data[..end]).is_err(), "{:?} cut at {end} decodes", data[0] as char);
            }
            let mut longer = data.clone();
            longer.push(0);
            assert!(decode(&longer).is_err(), "{:?} with a trailing byte decodes", data[0] as char);
        }
    }

    #[test]
    fn other_messages_are_skipped_and_unknown_ones_refused() {
        assert_eq!(decode(b"Dwhatever"), Ok(Message::Other(b'D')));
        assert_eq!(decode(b"M\x01"), Ok(Message::Other(b'M')));
        assert!(decode(b"Zabc").is_err());
        assert!(decode(b"I\0\0\0\x01N\0\x01b\0\0\0\x01x").is_err(), "binary values are not asked for");
        assert!(decode(b"I\0\0\0\x01N\xff\xff").is_err(), "a negative count");
        assert!(decode(b"I\0\0\0\x01K\0\0").is_err(), "an insert carries a new tuple");
    }

    #[test]
    fn lsns_round_trip_and_bytea_decodes() {
        for lsn in [0u64, 0x0153_1EF0, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&lsn_text(lsn)), Some(lsn));
        }
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/15293E8"), Some(0x0152_93E8));
        assert_eq!(parse_lsn("15293E8"), None);
        assert_eq!(bytea_from_text(b"\\x00ff41"), Some(vec![0, 255, b'A']));
        assert_eq!(bytea_from_text(b"\\x0"), None);
        assert_eq!(bytea_from_text(b"00"), None);
    }

    #[test]
    fn timestamps_read_in_the_relays_session_style() {
        assert_eq!(timestamp_ms(b"2025-12-05 00:00:00.123+00"), Some(1_764_892_800_123));
        assert_eq!(timestamp_ms(b"2025-12-05 00:00:00.123"), Some(1_764_892_800_123));
        assert_eq!(timestamp_ms(b"2025-12-05 00:00:00+00"), Some(1_764_892_800_000));
        assert_eq!(timestamp_ms(b"1764892800123"), Some(1_764_892_800_123));
        assert_eq!(timestamp_ms(b"infinity"), None);
        assert_eq!(timestamp_ms(b"2025-12-05 00:00:00+02"), None, "only UTC is asked for");
    }
}
