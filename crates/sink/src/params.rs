//! The `:name` parameters of `--sql` statements, translated to each driver's placeholders.
//!
//! One statement text works on both databases: `:key`, `:value` (bytes), `:value_text`, `:topic`,
//! `:partition`, `:offset`, `:timestamp` (ms since the epoch) and `:header.NAME` (text) are
//! replaced by `$1, $2, …` for PostgreSQL and `?1, ?2, …` for SQLite, one number per distinct name
//! (a name used twice gets the same number, so it is bound once).
//!
//! The scanner knows enough SQL not to touch what is not a parameter: a PostgreSQL cast `::jsonb`
//! (two colons), text inside `'strings'` (with `''` and, in `E'…'`, backslash escapes),
//! `"quoted identifiers"`, `$tag$dollar-quoted strings$tag$`, `-- line` and `/* nested block */`
//! comments. A header name is `[A-Za-z0-9_.-]+` (so write `:header.n - 1`, with spaces, to
//! subtract), or any text in double quotes: `:header."Message Id"`. An unknown `:name` is an
//! error, caught when the sink starts rather than at the first record.

use std::fmt;

/// What a placeholder is bound to, taken from the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Key,
    Value,
    ValueText,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Header(String),
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Key => f.write_str(":key"),
            Param::Value => f.write_str(":value"),
            Param::ValueText => f.write_str(":value_text"),
            Param::Topic => f.write_str(":topic"),
            Param::Partition => f.write_str(":partition"),
            Param::Offset => f.write_str(":offset"),
            Param::Timestamp => f.write_str(":timestamp"),
            Param::Header(name) => write!(f, ":header.{name}"),
        }
    }
}

/// Whose placeholders to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `$1`, `$2`, …
    Postgres,
    /// `?1`, `?2`, … (SQLite's `?NNN`).
    Sqlite,
}

/// A statement with driver placeholders; `params[i]` is bound to placeholder `i + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translated {
    pub sql: String,
    pub params: Vec<Param>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("unknown parameter ':{name}' at byte {at} (known: :key :value :value_text :topic :partition :offset :timestamp :header.NAME)")]
    Unknown { name: String, at: usize },
    #[error("':header.' at byte {at} needs a header name")]
    EmptyHeaderName { at: usize },
    #[error("unterminated {what} starting at byte {at}")]
    Unterminated { what: &'static str, at: usize },
    /// The sink numbers the placeholders itself; one of the user's own would bind another value.
    #[error("placeholder '{text}' at byte {at}: use the :name parameters (:key, :value, …) instead")]
    RawPlaceholder { text: String, at: usize },
    /// Transaction control inside `--sql` would commit effects apart from the position.
    #[error("'{keyword}' in --sql: the sink runs every statement inside its own transaction")]
    TransactionControl { keyword: String },
    #[error("more than one statement at byte {at}: give each statement its own --sql")]
    MultipleStatements { at: usize },
}

/// First keywords of statements that begin, end or split a transaction.
const TRANSACTION_CONTROL: [&str; 8] = ["begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release"];

/// Translates `sql`'s `:name` parameters to `dialect`'s placeholders.
pub fn translate(sql: &str, dialect: Dialect) -> Result<Translated, ParamError> {
    let mut scanner = Scanner {
        text: sql,
        at: 0,
        out: String::with_capacity(sql.len()),
        params: Vec::new(),
        dialect,
        statement_end: None,
    };
    scanner.run()?;
    let first_word = first_keyword(&scanner.out).to_ascii_lowercase();
    if TRANSACTION_CONTROL.contains(&first_word.as_str()) {
        return Err(ParamError::TransactionControl { keyword: first_word });
    }
    Ok(Translated { sql: scanner.out, params: scanner.params })
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
    out: String,
    params: Vec<Param>,
    dialect: Dialect,
    /// Where a top-level `;` ended the statement: only whitespace and comments may follow.
    statement_end: Option<usize>,
}

/// The first word of `sql` after whitespace and comments (empty if none).
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql.trim_start();
    loop {
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.find('\n').map_or("", |end| &line[end..]).trim_start();
        } else if let Some(block) = rest.strip_prefix("/*") {
            rest = block.find("*/").map_or("", |end| &block[end + 2..]).trim_start();
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

impl Scanner<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.as_bytes().get(self.at + ahead).copied()
    }

    /// Copies `count` bytes through unchanged.
    fn copy(&mut self, count: usize) {
        let end = (self.at + count).min(self.text.len());
        self.out.push_str(&self.text[self.at..end]);
        self.at = end;
    }

    fn run(&mut self) -> Result<(), ParamError> {
        while let Some(byte) = self.peek(0) {
            let comment = matches!((byte, self.peek(1)), (b'-', Some(b'-')) | (b'/', Some(b'*')));
            match byte {
                b'\'' => {
                    let escapes = self.at > 0
                        && matches!(self.text.as_bytes()[self.at - 1], b'E' | b'e')
                        && !self.identifier_before(self.at - 1);
                    self.quoted(b'\'', escapes, "string")?
                }
                b'"' => self.quoted(b'"', false, "quoted identifier")?,
                b'-' if self.peek(1) == Some(b'-') => {
                    let length = self.rest().find('\n').unwrap_or(self.rest().len());
                    self.copy(length);
                }
                b'/' if self.peek(1) == Some(b'*') => self.block_comment()?,
                b'$' => self.dollar()?,
                b':' if self.peek(1) == Some(b':') => self.copy(2),
                b':' if self.peek(1).is_some_and(|next| next.is_ascii_alphabetic() || next == b'_') => {
                    self.parameter()?
                }
                b';' => {
                    self.statement_end.get_or_insert(self.at);
                    self.copy(1);
                    continue;
                }
                b'?' if self.dialect == Dialect::Sqlite => {
                    return Err(ParamError::RawPlaceholder { text: "?".into(), at: self.at });
                }
                _ => {
                    let length = self.rest().chars().next().map_or(1, char::len_utf8);
                    self.copy(length);
                }
            }
            if let Some(at) = self.statement_end {
                // Something other than whitespace or a comment after the `;`.
                if !byte.is_ascii_whitespace() && !comment {
                    return Err(ParamError::MultipleStatements { at });
                }
            }
        }
        Ok(())
    }

    /// Whether the byte at `index` continues an identifier (so an `E` there is not a string prefix).
    fn identifier_before(&self, index: usize) -> bool {
        index > 0 && {
            let before = self.text.as_bytes()[index - 1];
            before.is_ascii_alphanumeric() || before == b'_' || before >= 0x80
        }
    }

    fn quoted(&mut self, quote: u8, backslash_escapes: bool, what: &'static str) -> Result<(), ParamError> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut index = start + 1;
        loop {
            match bytes.get(index) {
                None => return Err(ParamError::Unterminated { what, at: start }),
                Some(b'\\') if backslash_escapes => index += 2,
                Some(&byte) if byte == quote => {
                    if bytes.get(index + 1) == Some(&quote) {
                        index += 2;
                    } else {
                        index += 1;
                        break;
                    }
                }
                Some(_) => index += 1,
            }
        }
        self.copy(index - start);
        Ok(())
    }

    /// PostgreSQL block comments nest; SQLite's do not, but a statement valid on SQLite has no
    /// `/*` inside a comment, so counting depth is right for both.
    fn block_comment(&mut self) -> Result<(), ParamError> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut depth = 0usize;
        let mut index = start;
        loop {
            match (bytes.get(index), bytes.get(index + 1)) {
                (None, _) => return Err(ParamError::Unterminated { what: "block comment", at: start }),
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    index += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    index += 2;
                    if depth == 0 {
                        break;
                    }
                }
                _ => index += 1,
            }
        }
        self.copy(index - start);
        Ok(())
    }

    /// `$tag$ … $tag$` (and `$$ … $$`) is a string; `$1` or a `$` inside an identifier is copied.
    fn dollar(&mut self) -> Result<(), ParamError> {
        let rest = self.rest();
        let tag_length = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(|end| end + 1);
        let opens = !self.identifier_before(self.at)
            && tag_length.is_some_and(|end| rest.as_bytes()[end] == b'$' && !rest.as_bytes()[1].is_ascii_digit());
        if !opens {
            if !self.identifier_before(self.at) && rest.as_bytes().get(1).is_some_and(u8::is_ascii_digit) {
                let digits = rest[1..].find(|c: char| !c.is_ascii_digit()).map_or(rest.len(), |end| end + 1);
                return Err(ParamError::RawPlaceholder { text: rest[..digits].to_string(), at: self.at });
            }
            self.copy(1);
            return Ok(());
        }
        let tag = &rest[..tag_length.expect("checked") + 1];
        let Some(close) = rest[tag.len()..].find(tag) else {
            return Err(ParamError::Unterminated { what: "dollar-quoted string", at: self.at });
        };
        self.copy(tag.len() + close + tag.len());
        Ok(())
    }

    fn parameter(&mut self) -> Result<(), ParamError> {
        let start = self.at;
        let name_length =
            self.rest()[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.rest().len() - 1);
        let name = &self.rest()[1..1 + name_length];
        let mut consumed = 1 + name_length;
        let param = match name {
            "key" => Param::Key,
            "value" => Param::Value,
            "value_text" => Param::ValueText,
            "topic" => Param::Topic,
            "partition" => Param::Partition,
            "offset" => Param::Offset,
            "timestamp" => Param::Timestamp,
            "header" if self.peek(consumed) == Some(b'.') => {
                let (header, length) = self.header_name(start + consumed + 1)?;
                consumed += 1 + length;
                Param::Header(header)
            }
            _ => return Err(ParamError::Unknown { name: name.to_string(), at: start }),
        };
        let number = match self.params.iter().position(|known| *known == param) {
            Some(index) => index + 1,
            None => {
                self.params.push(param);
                self.params.len()
            }
        };
        match self.dialect {
            Dialect::Postgres => self.out.push_str(&format!("${number}")),
            Dialect::Sqlite => self.out.push_str(&format!("?{number}")),
        }
        self.at += consumed;
        Ok(())
    }

    /// The header name at `from` and the bytes it takes in the text.
    fn header_name(&self, from: usize) -> Result<(String, usize), ParamError> {
        let rest = &self.text[from..];
        if let Some(quoted) = rest.strip_prefix('"') {
            let close = quoted.find('"').ok_or(ParamError::Unterminated { what: "quoted header name", at: from })?;
            if close == 0 {
                return Err(ParamError::EmptyHeaderName { at: from });
            }
            return Ok((quoted[..close].to_string(), close + 2));
        }
        let length =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))).unwrap_or(rest.len());
        if length == 0 {
            return Err(ParamError::EmptyHeaderName { at: from });
        }
        Ok((rest[..length].to_string(), length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(sql: &str) -> Translated {
        translate(sql, Dialect::Postgres).expect("translates")
    }

    fn lite(sql: &str) -> Translated {
        translate(sql, Dialect::Sqlite).expect("translates")
    }

    #[test]
    fn the_issue_example_keeps_its_casts() {
        let out = pg("INSERT INTO charges(order_id, amount) VALUES (:key, (:value::jsonb->>'amount')::numeric)");
        assert_eq!(out.sql, "INSERT INTO charges(order_id, amount) VALUES ($1, ($2::jsonb->>'amount')::numeric)");
        assert_eq!(out.params, vec![Param::Key, Param::Value]);
    }

    #[test]
    fn sqlite_numbers_and_a_repeated_name_is_one_placeholder() {
        let out = lite("INSERT INTO t VALUES (:offset, :topic, :offset, json_extract(:value_text, '$.amount'))");
        assert_eq!(out.sql, "INSERT INTO t VALUES (?1, ?2, ?1, json_extract(?3, '$.amount'))");
        assert_eq!(out.params, vec![Param::Offset, Param::Topic, Param::ValueText]);
    }

    #[test]
    fn every_name() {
        let out = pg(":key :value :value_text :topic :partition :offset :timestamp :header.id");
        assert_eq!(out.sql, "$1 $2 $3 $4 $5 $6 $7 $8");
        assert_eq!(
            out.params,
            vec![
                Param::Key,
                Param::Value,
                Param::ValueText,
                Param::Topic,
                Param::Partition,
                Param::Offset,
                Param::Timestamp,
                Param::Header("id".into())
            ]
        );
    }

    #[test]
    fn header_names_bare_and_quoted() {
        let out = pg("SELECT :header.message-id, :header.\"Message Id\", :header.a.b, :header.n - 1");
        assert_eq!(out.sql, "SELECT $1, $2, $3, $4 - 1");
        assert_eq!(
            out.params,
            vec![
                Param::Header("message-id".into()),
                Param::Header("Message Id".into()),
                Param::Header("a.b".into()),
                Param::Header("n".into())
            ]
        );
    }

    #[test]
    fn strings_identifiers_and_comments_are_not_scanned() {
        let sql =
            "SELECT ':key', 'it''s :value', \"col:key\", \"a\"\"b:x\" -- :nope\n/* :no /* :nested */ :still */ :key";
        let out = pg(sql);
        assert_eq!(out.sql, sql.replace("*/ :key", "*/ $1"));
        assert_eq!(out.params, vec![Param::Key]);
    }

    #[test]
    fn escape_strings_and_dollar_quotes() {
        let out = pg(r"SELECT E'\':key', $$ :value $$, $fn$ :x $fn$, :offset, a$1");
        assert_eq!(out.sql, r"SELECT E'\':key', $$ :value $$, $fn$ :x $fn$, $1, a$1");
        assert_eq!(out.params, vec![Param::Offset]);
        // A plain string: a backslash is an ordinary character, the quote after it ends the string.
        let out = pg(r"SELECT '\', :key");
        assert_eq!(out.sql, r"SELECT '\', $1");
        // `name'…'` is not an escape string because E there ends an identifier.
        let out = lite(r"SELECT typE'\', :key");
        assert_eq!(out.sql, r"SELECT typE'\', ?1");
    }

    /// Review of issue 15: the user's own placeholders would alias the sink's numbering, transaction
    /// control would commit effects apart from the position, a second statement would run outside
    /// the driver's single-statement prepare: all refused when the sink starts.
    #[test]
    fn raw_placeholders_transaction_control_and_second_statements_are_refused() {
        let refused = |sql: &str, dialect| translate(sql, dialect).expect_err(sql);
        assert_eq!(
            refused("INSERT INTO t VALUES (:key, $1)", Dialect::Postgres),
            ParamError::RawPlaceholder { text: "$1".into(), at: 28 }
        );
        assert!(matches!(refused("INSERT INTO t VALUES (?)", Dialect::Sqlite), ParamError::RawPlaceholder { .. }));
        assert!(translate("SELECT data ? 'k' FROM t WHERE id = :key", Dialect::Postgres).is_ok(), "jsonb ? operator");
        for control in ["COMMIT", "  begin", "-- note\nROLLBACK", "/* x */ savepoint s", "END", "release s"] {
            assert!(
                matches!(refused(control, Dialect::Sqlite), ParamError::TransactionControl { .. }),
                "{control:?} is refused"
            );
        }
        assert!(matches!(
            refused("INSERT INTO t VALUES (:key); COMMIT", Dialect::Sqlite),
            ParamError::MultipleStatements { at: 27 }
        ));
        let trailing =
            translate("INSERT INTO t VALUES (:key);  -- done\n", Dialect::Sqlite).expect("a trailing ; and comment");
        assert_eq!(trailing.params, vec![Param::Key]);
        assert!(translate("INSERT INTO t VALUES (';', :key)", Dialect::Postgres).is_ok(), "a ; inside a string");
    }

    #[test]
    fn colons_that_are_not_parameters() {
        let out = pg("SELECT a[1:2], x::text, y :: int, '12:30', : key, :key");
        assert_eq!(out.sql, "SELECT a[1:2], x::text, y :: int, '12:30', : key, $1");
        let out = lite("SELECT ':', :key:");
        assert_eq!(out.sql, "SELECT ':', ?1:");
    }

    #[test]
    fn non_ascii_text_passes_through() {
        let out = pg("INSERT INTO t VALUES ('héllo ✓', :key) -- ünïcode");
        assert_eq!(out.sql, "INSERT INTO t VALUES ('héllo ✓', $1) -- ünïcode");
    }

    #[test]
    fn errors() {
        assert_eq!(translate("SELECT :nope", Dialect::Sqlite), Err(ParamError::Unknown { name: "nope".into(), at: 7 }));
        assert_eq!(translate("SELECT :keys", Dialect::Sqlite), Err(ParamError::Unknown { name: "keys".into(), at: 7 }));
        assert_eq!(translate("SELECT :header.", Dialect::Sqlite), Err(ParamError::EmptyHeaderName { at: 15 }));
        assert_eq!(
            translate("SELECT :header", Dialect::Sqlite),
            Err(ParamError::Unknown { name: "header".into(), at: 7 })
        );
        assert!(matches!(
            translate("SELECT 'open", Dialect::Postgres),
            Err(ParamError::Unterminated { what: "string", .. })
        ));
        assert!(matches!(translate("SELECT /* open", Dialect::Postgres), Err(ParamError::Unterminated { .. })));
        assert!(matches!(translate("SELECT $a$ open", Dialect::Postgres), Err(ParamError::Unterminated { .. })));
        assert!(matches!(translate("SELECT \"open", Dialect::Postgres), Err(ParamError::Unterminated { .. })));
    }

    #[test]
    fn no_parameters_is_the_text_itself() {
        let out = lite("DELETE FROM t");
        assert_eq!(out, Translated { sql: "DELETE FROM t".into(), params: vec![] });
    }
}
