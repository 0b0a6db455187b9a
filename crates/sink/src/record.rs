//! A record as the sink sees it, what each `:name` binds to, and the ids that make effects once.

use crate::params::Param;

/// One record read from a topic, owned (it outlives the consumer's poll).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, if the record has a timestamp.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In the record's order; a name may repeat (the first one is bound).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A parameter's value for one record, before a driver converts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound<'a> {
    Null,
    Bytes(&'a [u8]),
    Text(&'a str),
    Int(i64),
}

/// Where `--dedup` finds a record's message id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dedup {
    /// `--dedup header:NAME`: the header's value, as text.
    Header(String),
    /// `--dedup key`: the record key, as text.
    Key,
}

impl Dedup {
    /// Parses `header:NAME` or `key`.
    pub fn parse(text: &str) -> Result<Dedup, String> {
        match text.split_once(':') {
            None if text == "key" => Ok(Dedup::Key),
            Some(("header", name)) if !name.is_empty() => Ok(Dedup::Header(name.to_string())),
            _ => Err(format!("--dedup '{text}': expected 'header:NAME' or 'key'")),
        }
    }
}

fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|error| format!("{what} is not UTF-8 text: {error}"))
}

impl Record {
    /// The first header named `name`: `None` if absent, `Some(None)` if present with a null value.
    pub fn header(&self, name: &str) -> Option<Option<&[u8]>> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_deref())
    }

    /// The value of `param` for this record. An error (text that is not UTF-8) makes the record
    /// poison: binding it as anything else would silently change the data.
    pub fn bind(&self, param: &Param) -> Result<Bound<'_>, String> {
        Ok(match param {
            Param::Key => self.key.as_deref().map_or(Bound::Null, Bound::Bytes),
            Param::Value => self.value.as_deref().map_or(Bound::Null, Bound::Bytes),
            Param::ValueText => match &self.value {
                None => Bound::Null,
                Some(value) => Bound::Text(text(value, "the value")?),
            },
            Param::Topic => Bound::Text(&self.topic),
            Param::Partition => Bound::Int(i64::from(self.partition)),
            Param::Offset => Bound::Int(self.offset),
            Param::Timestamp => self.timestamp_ms.map_or(Bound::Null, Bound::Int),
            Param::Header(name) => match self.header(name).flatten() {
                None => Bound::Null,
                Some(value) => Bound::Text(text(value, &format!("header '{name}'"))?),
            },
        })
    }

    /// The message id `dedup` names, if the record has one. `Err` when it is not UTF-8.
    pub fn message_id(&self, dedup: &Dedup) -> Result<Option<&str>, String> {
        let bytes = match dedup {
            Dedup::Key => self.key.as_deref(),
            Dedup::Header(name) => self.header(name).flatten(),
        };
        bytes.map(|bytes| text(bytes, "the message id")).transpose()
    }

    /// The headers as JSON for the dead-letter table: `[[name, value], …]` in the record's order,
    /// a value as text when it is UTF-8, as an array of its bytes when it is not, or null.
    pub fn headers_json(&self) -> String {
        let headers: Vec<serde_json::Value> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let value = match value.as_deref() {
                    None => serde_json::Value::Null,
                    Some(bytes) => match std::str::from_utf8(bytes) {
                        Ok(text) => serde_json::Value::from(text),
                        Err(_) => serde_json::Value::from(bytes.to_vec()),
                    },
                };
                serde_json::json!([name, value])
            })
            .collect();
        serde_json::Value::Array(headers).to_string()
    }

    /// A key to hand to an effect outside the database (a payment provider's idempotency key):
    /// the message id where the record has one, else `topic/partition/offset`. Stable across
    /// replays of the same record; see docs/design/sink.md for its limits.
    pub fn idempotency_key(&self, dedup: Option<&Dedup>) -> String {
        match dedup.and_then(|dedup| self.message_id(dedup).ok().flatten()) {
            Some(id) => id.to_string(),
            None => format!("{}/{}/{}", self.topic, self.partition, self.offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"k1".to_vec()),
            value: Some(br#"{"amount": 50}"#.to_vec()),
            headers: vec![
                ("id".into(), Some(b"m-1".to_vec())),
                ("id".into(), Some(b"second".to_vec())),
                ("null".into(), None),
                ("bin".into(), Some(vec![0xff])),
            ],
        }
    }

    #[test]
    fn binds_every_parameter() {
        let record = record();
        assert_eq!(record.bind(&Param::Key), Ok(Bound::Bytes(b"k1")));
        assert_eq!(record.bind(&Param::Value), Ok(Bound::Bytes(br#"{"amount": 50}"#)));
        assert_eq!(record.bind(&Param::ValueText), Ok(Bound::Text(r#"{"amount": 50}"#)));
        assert_eq!(record.bind(&Param::Topic), Ok(Bound::Text("orders")));
        assert_eq!(record.bind(&Param::Partition), Ok(Bound::Int(2)));
        assert_eq!(record.bind(&Param::Offset), Ok(Bound::Int(41)));
        assert_eq!(record.bind(&Param::Timestamp), Ok(Bound::Int(1_700_000_000_000)));
        assert_eq!(record.bind(&Param::Header("id".into())), Ok(Bound::Text("m-1")), "the first of a repeated header");
        assert_eq!(record.bind(&Param::Header("null".into())), Ok(Bound::Null));
        assert_eq!(record.bind(&Param::Header("absent".into())), Ok(Bound::Null));
        assert!(record.bind(&Param::Header("bin".into())).is_err(), "non-UTF-8 text is poison, not mangled");
    }

    #[test]
    fn nulls_and_bad_text() {
        let record = Record { key: None, value: None, timestamp_ms: None, ..record() };
        assert_eq!(record.bind(&Param::Key), Ok(Bound::Null));
        assert_eq!(record.bind(&Param::ValueText), Ok(Bound::Null));
        assert_eq!(record.bind(&Param::Timestamp), Ok(Bound::Null));
        let record = Record { value: Some(vec![0xc3]), ..record };
        assert!(record.bind(&Param::ValueText).is_err());
        assert_eq!(record.bind(&Param::Value), Ok(Bound::Bytes(&[0xc3])));
    }

    #[test]
    fn dedup_and_idempotency_keys() {
        assert_eq!(Dedup::parse("key"), Ok(Dedup::Key));
        assert_eq!(Dedup::parse("header:message-id"), Ok(Dedup::Header("message-id".into())));
        assert!(Dedup::parse("header:").is_err());
        assert!(Dedup::parse("value").is_err());
        let record = record();
        assert_eq!(record.idempotency_key(Some(&Dedup::Header("id".into()))), "m-1");
        assert_eq!(record.idempotency_key(Some(&Dedup::Key)), "k1");
        assert_eq!(record.idempotency_key(Some(&Dedup::Header("absent".into()))), "orders/2/41");
        assert_eq!(record.idempotency_key(None), "orders/2/41");
    }

    #[test]
    fn headers_as_json_keep_order_nulls_and_bytes() {
        assert_eq!(record().headers_json(), r#"[["id","m-1"],["id","second"],["null",null],["bin",[255]]]"#);
        assert_eq!(Record { headers: vec![], ..record() }.headers_json(), "[]");
    }
}
