//! From input bytes to records: lines are cut with a bounded buffer, then
//! parsed as plain values (optionally `KEY<delimiter>VALUE`) or as one JSON
//! object each.
//!
//! Text lines are taken as bytes, not text, so any payload without a newline
//! goes through unchanged; keys and values are slices of the line, never
//! copies.

use std::pin::Pin;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use clap::ValueEnum;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::proto::{Header, Record};

/// The longest line read: a longer one is reported as malformed and skipped
/// without being held in memory. As large as the gateway's default
/// `--max-batch-bytes`, so no line the gateway could take is refused here.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How input lines become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Each line is a record's value; with -K, its key and value.
    Text,
    /// Each line is a JSON object: {"key", "value", "headers", "partition",
    /// "timestamp_ms", "topic"}.
    Json,
}

/// A line of input, without its line end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1 for the first line.
    pub number: u64,
    /// The line's bytes, or, for a line over [`MAX_LINE_BYTES`], its length.
    pub content: Result<Bytes, usize>,
}

/// Cuts an input into lines. `\n` ends a line and a `\r` before it is
/// dropped; a last line without `\n` counts.
///
/// The input is read in chunks into one buffer, and each line is cut from
/// its front as a `Bytes` slice of it: no copy and no allocation per line.
/// [`LineReader::next_buffered`] returns the lines already read without
/// waiting, so a caller can take a whole chunk's lines before it awaits
/// anything.
///
/// [`LineReader::next_line`] is cancel-safe: its only await is `fill_buf`,
/// and every byte it consumes is kept in `self` first, so it can be raced
/// against a timer in `select!` without losing input.
pub struct LineReader<R> {
    inner: R,
    /// Read and not yet returned; lines are split off its front.
    buf: BytesMut,
    /// The front `scanned` bytes of `buf` hold no `\n`.
    scanned: usize,
    /// Lines returned so far.
    number: u64,
    /// Set while skipping the rest of an overlong line: its length so far.
    skipping: Option<usize>,
    max_line: usize,
    /// The input ended.
    ended: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max_line(inner, MAX_LINE_BYTES)
    }

    pub fn with_max_line(inner: R, max_line: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            scanned: 0,
            number: 0,
            skipping: None,
            max_line,
            ended: false,
        }
    }

    /// The number of the last line returned.
    pub fn last_line(&self) -> u64 {
        self.number
    }

    /// The next line if a whole one was read already; never waits.
    pub fn next_buffered(&mut self) -> Option<Line> {
        let Some(at) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
            // No line end yet: a line growing past the limit is dropped as
            // it comes, only its length kept.
            if let Some(length) = &mut self.skipping {
                *length += self.buf.len();
                self.buf.clear();
            } else if self.buf.len() > self.max_line {
                self.skipping = Some(self.buf.len());
                self.buf.clear();
            }
            self.scanned = self.buf.len();
            return None;
        };
        let end = self.scanned + at;
        self.scanned = 0;
        let mut line = self.buf.split_to(end + 1);
        line.truncate(end);
        let content = match self.skipping.take() {
            Some(length) => Err(length + end),
            None if end > self.max_line => Err(end),
            None => Ok(freeze_line(line)),
        };
        Some(self.numbered(content))
    }

    /// Reads more input into the buffer; `false` at the end of the input.
    pub async fn fill(&mut self) -> std::io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let available = self.inner.fill_buf().await?;
        if available.is_empty() {
            self.ended = true;
            return Ok(false);
        }
        let read = available.len();
        self.buf.extend_from_slice(available);
        Pin::new(&mut self.inner).consume(read);
        Ok(true)
    }

    /// At the end of the input: the last line, if it did not end with `\n`.
    pub fn last_unterminated(&mut self) -> Option<Line> {
        let content = match self.skipping.take() {
            Some(length) => Err(length + self.buf.len()),
            None if self.buf.is_empty() => return None,
            None if self.buf.len() > self.max_line => Err(self.buf.len()),
            None => Ok(freeze_line(self.buf.split())),
        };
        self.buf.clear();
        self.scanned = 0;
        Some(self.numbered(content))
    }

    /// The next line, or `None` at the end of the input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.next_buffered() {
                return Ok(Some(line));
            }
            if !self.fill().await? {
                return Ok(self.last_unterminated());
            }
        }
    }

    fn numbered(&mut self, content: Result<Bytes, usize>) -> Line {
        self.number += 1;
        Line {
            number: self.number,
            content,
        }
    }
}

/// A line's bytes without a trailing `\r`.
fn freeze_line(mut line: BytesMut) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line.freeze()
}

/// A key delimiter, as given to `-K`: `\t` stands for a tab and `\\` for a
/// backslash; everything else is taken literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delimiter(pub Vec<u8>);

/// Parses a `-K` argument.
pub fn parse_delimiter(s: &str) -> Result<Delimiter, String> {
    if s.is_empty() {
        return Err("the key delimiter is empty; give one or more characters, e.g. -K :".into());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail.first()) {
            (b'\\', Some(b't')) => {
                out.push(b'\t');
                rest = &tail[1..];
            }
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                rest = &tail[1..];
            }
            _ => {
                out.push(first);
                rest = tail;
            }
        }
    }
    Ok(Delimiter(out))
}

/// Turns lines into records.
#[derive(Debug, Clone)]
pub struct LineParser {
    format: Format,
    key_delimiter: Option<Delimiter>,
    /// Whether records without a topic of their own have one (`--topic`).
    has_default_topic: bool,
}

impl LineParser {
    pub fn new(format: Format, key_delimiter: Option<Delimiter>, has_default_topic: bool) -> Self {
        Self {
            format,
            key_delimiter,
            has_default_topic,
        }
    }

    /// The record a line holds; `None` for a line to skip (a blank line of
    /// JSON); an error that says what is wrong with the line.
    pub fn parse(&self, line: &Bytes) -> Result<Option<Record>, String> {
        match self.format {
            Format::Text => Ok(Some(self.parse_text(line))),
            Format::Json => self.parse_json(line),
        }
    }

    /// `VALUE`, or with a delimiter `KEY<delimiter>VALUE`, split at the first
    /// delimiter. A line without the delimiter is a value without a key, as
    /// in kcat.
    fn parse_text(&self, line: &Bytes) -> Record {
        let (key, value) = match &self.key_delimiter {
            Some(Delimiter(delimiter)) => match find(line, delimiter) {
                Some(at) => (Some(line.slice(..at)), line.slice(at + delimiter.len()..)),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        Record {
            key,
            value: Some(value),
            ..Record::default()
        }
    }

    fn parse_json(&self, line: &Bytes) -> Result<Option<Record>, String> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let json: JsonRecord = serde_json::from_slice(line).map_err(|err| json_error(&err))?;
        let topic = json.topic.unwrap_or_default();
        if topic.is_empty() && !self.has_default_topic {
            return Err(
                "the record names no topic: add a \"topic\" field or pass --topic".to_owned(),
            );
        }
        Ok(Some(Record {
            topic,
            key: bytes_field("key", json.key, json.key_b64)?,
            value: bytes_field("value", json.value, json.value_b64)?,
            headers: json.headers.0,
            partition: json.partition,
            timestamp_ms: json.timestamp_ms,
        }))
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return haystack.iter().position(|&b| b == needle[0]);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// serde_json's message without its "at line 1 column N" (every input line
/// is line 1 to serde_json), with the column kept.
fn json_error(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    let what = if err.is_data() {
        "not a valid record"
    } else {
        "not valid JSON"
    };
    // serde quotes an unknown field's name as written: a control character
    // in it must not reach the terminal (an escape sequence) or split the
    // message's line.
    let message: String = message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    format!("{what}: {message} (column {})", err.column())
}

/// A field given as text (`"value"`) or as base64 (`"value_b64"`), not both.
fn bytes_field(
    name: &str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Bytes>, String> {
    match (text, base64) {
        (Some(_), Some(_)) => Err(format!(
            "both \"{name}\" and \"{name}_b64\" are set; give one"
        )),
        (Some(text), None) => Ok(Some(Bytes::from(text))),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map(|bytes| Some(Bytes::from(bytes)))
            .map_err(|err| format!("\"{name}_b64\" is not base64: {err}")),
        (None, None) => Ok(None),
    }
}

/// One line of `--format json`. Unknown fields are refused, so a misspelt
/// `"vaule"` is an error rather than a tombstone.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object such as {\"key\": \"k\", \"value\": \"v\"}"
)]
struct JsonRecord {
    topic: Option<String>,
    key: Option<String>,
    key_b64: Option<String>,
    value: Option<String>,
    value_b64: Option<String>,
    #[serde(default)]
    headers: JsonHeaders,
    partition: Option<i32>,
    timestamp_ms: Option<i64>,
}

/// `"headers"`: a list of `{"key": ..., "value": ...}` objects (order and
/// duplicate keys kept) or an object of string values (in its order).
#[derive(Debug, Default)]
struct JsonHeaders(Vec<Header>);

/// One element of the list form of `"headers"`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a header such as {\"key\": \"k\", \"value\": \"v\"}"
)]
struct JsonHeader {
    key: String,
    value: Option<String>,
    value_b64: Option<String>,
}

impl<'de> Deserialize<'de> for JsonHeaders {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HeadersVisitor)
    }
}

struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = JsonHeaders;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("headers as [{\"key\": \"k\", \"value\": \"v\"}, ...] or {\"k\": \"v\", ...}")
    }

    fn visit_unit<E: de::Error>(self) -> Result<JsonHeaders, E> {
        Ok(JsonHeaders::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonHeaders, A::Error> {
        let mut headers = Vec::new();
        while let Some(header) = seq.next_element::<JsonHeader>()? {
            let value = match bytes_field("value", header.value, header.value_b64)
                .map_err(de::Error::custom)?
            {
                Some(value) => value,
                None => {
                    return Err(de::Error::custom(format!(
                        "header {:?} has no \"value\" (use \"\" for an empty one)",
                        header.key
                    )));
                }
            };
            headers.push(Header {
                key: header.key,
                value,
            });
        }
        Ok(JsonHeaders(headers))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonHeaders, A::Error> {
        let mut headers = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, String>()? {
            headers.push(Header {
                key,
                value: Bytes::from(value),
            });
        }
        Ok(JsonHeaders(headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(delimiter: Option<&str>) -> LineParser {
        LineParser::new(
            Format::Text,
            delimiter.map(|d| parse_delimiter(d).unwrap()),
            true,
        )
    }

    fn json(has_default_topic: bool) -> LineParser {
        LineParser::new(Format::Json, None, has_default_topic)
    }

    fn parse(parser: &LineParser, line: &str) -> Result<Option<Record>, String> {
        parser.parse(&Bytes::copy_from_slice(line.as_bytes()))
    }

    fn kv(record: &Record) -> (Option<&[u8]>, Option<&[u8]>) {
        (record.key.as_deref(), record.value.as_deref())
    }

    async fn lines(input: &[u8], max_line: usize) -> Vec<Line> {
        let mut reader = LineReader::with_max_line(input, max_line);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn line(number: u64, content: &str) -> Line {
        Line {
            number,
            content: Ok(Bytes::copy_from_slice(content.as_bytes())),
        }
    }

    #[tokio::test]
    async fn lines_end_at_newlines_with_crlf_and_a_last_unterminated_line() {
        assert_eq!(
            lines(b"one\ntwo\r\n\nlast", 100).await,
            vec![line(1, "one"), line(2, "two"), line(3, ""), line(4, "last")]
        );
        assert_eq!(lines(b"one\n", 100).await, vec![line(1, "one")]);
        assert!(lines(b"", 100).await.is_empty());
    }

    #[tokio::test]
    async fn an_overlong_line_is_measured_and_skipped_not_kept() {
        // A tiny buffer makes the reader see the long line in pieces.
        let input: &[u8] = b"short\n0123456789abcdef\nok\n0123456789";
        let reader = tokio::io::BufReader::with_capacity(4, input);
        let mut reader = LineReader::with_max_line(reader, 8);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        assert_eq!(
            out,
            vec![
                line(1, "short"),
                Line {
                    number: 2,
                    content: Err(16)
                },
                line(3, "ok"),
                Line {
                    number: 4,
                    content: Err(10)
                },
            ]
        );
    }

    #[test]
    fn a_text_line_is_a_value_without_a_key() {
        let record = parse(&text(None), "a:b").unwrap().unwrap();
        assert_eq!(kv(&record), (None, Some(&b"a:b"[..])));
        assert!(record.topic.is_empty(), "the batch's topic applies");
        let empty = parse(&text(None), "").unwrap().unwrap();
        assert_eq!(
            kv(&empty),
            (None, Some(&b""[..])),
            "an empty value, not null"
        );
    }

    #[test]
    fn the_key_delimiter_splits_at_its_first_occurrence() {
        let parser = text(Some(":"));
        let at = |line| {
            let record = parse(&parser, line).unwrap().unwrap();
            (
                record.key.map(|k| k.to_vec()),
                record.value.map(|v| v.to_vec()),
            )
        };
        let some = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(at("k:v"), (some("k"), some("v")));
        assert_eq!(at("k:v:w"), (some("k"), some("v:w")));
        assert_eq!(at(":v"), (some(""), some("v")), "empty key");
        assert_eq!(at("k:"), (some("k"), some("")), "empty value");
        assert_eq!(at("no delimiter"), (None, some("no delimiter")));

        let parser = text(Some("::"));
        let record = parse(&parser, "a:b::c::d").unwrap().unwrap();
        assert_eq!(kv(&record), (Some(&b"a:b"[..]), Some(&b"c::d"[..])));
    }

    #[test]
    fn delimiters_know_tab_and_backslash() {
        assert_eq!(parse_delimiter("\\t"), Ok(Delimiter(b"\t".to_vec())));
        assert_eq!(parse_delimiter("\\\\"), Ok(Delimiter(b"\\".to_vec())));
        assert_eq!(parse_delimiter("a\\n"), Ok(Delimiter(b"a\\n".to_vec())));
        assert_eq!(parse_delimiter("|"), Ok(Delimiter(b"|".to_vec())));
        assert!(parse_delimiter("").is_err());
    }

    #[test]
    fn text_keeps_bytes_that_are_not_utf8() {
        let parser = text(Some("\\t"));
        let record = parser
            .parse(&Bytes::from_static(b"\xff\xfe\t\x00\x01"))
            .unwrap()
            .unwrap();
        assert_eq!(
            kv(&record),
            (Some(&b"\xff\xfe"[..]), Some(&b"\x00\x01"[..]))
        );
    }

    #[test]
    fn json_fields_map_onto_the_record() {
        let record = parse(
            &json(false),
            r#"{"topic":"t","key":"k","value":"v","partition":2,"timestamp_ms":1700000000000,
                "headers":[{"key":"a","value":"1"},{"key":"a","value_b64":"AP8="}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(record.topic, "t");
        assert_eq!(kv(&record), (Some(&b"k"[..]), Some(&b"v"[..])));
        assert_eq!(record.partition, Some(2));
        assert_eq!(record.timestamp_ms, Some(1_700_000_000_000));
        let headers: Vec<_> = record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_ref()))
            .collect();
        assert_eq!(headers, [("a", &b"1"[..]), ("a", &b"\x00\xff"[..])]);
    }

    #[test]
    fn json_header_objects_keep_their_order() {
        let record = parse(
            &json(true),
            r#"{"value":"v","headers":{"z":"1","a":"2","m":""}}"#,
        )
        .unwrap()
        .unwrap();
        let keys: Vec<_> = record.headers.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        let none = parse(&json(true), r#"{"value":"v","headers":null}"#)
            .unwrap()
            .unwrap();
        assert!(none.headers.is_empty());
    }

    #[test]
    fn json_null_and_missing_mean_absent_and_base64_gives_bytes() {
        let record = parse(&json(true), r#"{"key":"k","value":null}"#)
            .unwrap()
            .unwrap();
        assert_eq!(kv(&record), (Some(&b"k"[..]), None), "a tombstone");
        let record = parse(&json(true), r#"{"value":""}"#).unwrap().unwrap();
        assert_eq!(kv(&record), (None, Some(&b""[..])), "empty is not null");
        let record = parse(&json(true), r#"{"key_b64":"/w==","value_b64":"aGk="}"#)
            .unwrap()
            .unwrap();
        assert_eq!(kv(&record), (Some(&b"\xff"[..]), Some(&b"hi"[..])));
        assert_eq!(record.topic, "", "the batch's topic applies");
    }

    #[test]
    fn blank_json_lines_are_skipped() {
        assert_eq!(parse(&json(true), "").unwrap(), None);
        assert_eq!(parse(&json(true), "  \t").unwrap(), None);
    }

    #[test]
    fn malformed_json_says_what_and_where() {
        let err = |line| parse(&json(true), line).unwrap_err();
        let e = err(r#"{"value": oops}"#);
        assert!(e.starts_with("not valid JSON: expected value"), "{e}");
        assert!(e.ends_with("(column 11)"), "{e}");
        assert!(!e.contains("line 1"), "{e}");
        let e = err(r#"{"vaule":"v"}"#);
        assert!(
            e.contains("not a valid record: unknown field `vaule`"),
            "{e}"
        );
        let e = err(r#""just a string""#);
        assert!(e.contains("expected an object such as"), "{e}");
        let e = err(r#"{"value":"v","value_b64":"dg=="}"#);
        assert!(e.contains("both \"value\" and \"value_b64\""), "{e}");
        let e = err(r#"{"value_b64":"not base64!"}"#);
        assert!(e.contains("\"value_b64\" is not base64"), "{e}");
        let e = err(r#"{"value":"v","partition":"two"}"#);
        assert!(e.contains("invalid type: string \"two\""), "{e}");
        let e = err(r#"{"value":"v","headers":[{"key":"h"}]}"#);
        assert!(e.contains("header \"h\" has no \"value\""), "{e}");
        let e = err(r#"{"value":"v","headers":{"h":1}}"#);
        assert!(e.contains("invalid type: integer"), "{e}");
        let e = err(r#"{"value":"v","headers":"h=1"}"#);
        assert!(e.contains("headers as ["), "{e}");
        let e = err(r#"{"value":"v"} trailing"#);
        assert!(e.contains("trailing characters"), "{e}");
    }

    #[test]
    fn a_json_record_needs_a_topic_from_somewhere() {
        let err = parse(&json(false), r#"{"value":"v"}"#).unwrap_err();
        assert!(err.contains("--topic"), "{err}");
        assert!(parse(&json(false), r#"{"value":"v","topic":"t"}"#).is_ok());
        assert!(parse(&json(true), r#"{"value":"v"}"#).is_ok());
    }

    #[test]
    fn field_names_are_quoted_without_control_characters() {
        let parser = LineParser::new(Format::Json, None, true);
        for line in [
            &b"{\"value\":\"v\",\"\\u001b[2J\":1}"[..],
            b"{\"value\":\"v\",\"a\\nb\":1}",
            b"{\"value\":\"v\",\"headers\":{\"h\":{\"\\u0007\":1}}}",
        ] {
            let why = parser.parse(&Bytes::copy_from_slice(line)).unwrap_err();
            assert!(!why.chars().any(char::is_control), "{why:?}");
        }
    }
}
