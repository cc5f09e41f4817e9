//! Fuzzes the input side of the `produce` command (`src/client/input.rs`):
//! the fuzzer's bytes are one line for every `LineParser` the command can
//! build (text with and without each kind of `-K` delimiter, JSON with and
//! without `--topic`), a `-K` argument for `parse_delimiter`, and a whole
//! input for `LineReader` to cut into lines under small line limits. The
//! records are checked against what the line says, worked out here
//! independently of the parser: an input that breaks an assert is a crash
//! the fuzzer keeps.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use kafka_gateway::client::input::{
    Delimiter, Format, Line, LineParser, LineReader, parse_delimiter,
};
use kafka_gateway::proto::{Header, Record};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// `-K` arguments: one byte, an escaped tab, two bytes that can overlap
/// (`a::b:::c`), an escaped backslash, and a multi-byte UTF-8 character.
const DELIMITERS: &[&str] = &[":", "\\t", "::", "\\\\", "→"];

/// (read size, line limit) pairs for `LineReader`: `None` reads the input
/// in one piece; small reads make a line arrive in pieces, as from a pipe,
/// which is where the overlong-line bookkeeping can go wrong.
const READERS: &[(Option<usize>, usize)] = &[
    (None, 0),
    (None, 16),
    (Some(1), 5),
    (Some(3), 16),
    (Some(7), 64),
];

fuzz_target!(|data: &[u8]| {
    let line = Bytes::copy_from_slice(data);
    check_text(&line);
    check_json(&line);
    if let Ok(arg) = std::str::from_utf8(data) {
        check_parse_delimiter(arg);
    }
    for &(read_size, max_line) in READERS {
        check_line_reader(data, read_size, max_line);
    }
});

/// Text: the value is the line, or with a delimiter the line splits at the
/// delimiter's first occurrence into key and value, both slices of the line.
/// `--topic` makes no difference to a text line.
fn check_text(line: &Bytes) {
    let delimiters = std::iter::once(None).chain(
        DELIMITERS
            .iter()
            .map(|d| Some(parse_delimiter(d).expect("a valid -K"))),
    );
    for delimiter in delimiters {
        let parse = |has_default_topic| {
            LineParser::new(Format::Text, delimiter.clone(), has_default_topic)
                .parse(line)
                .expect("a text line is always a record")
                .expect("a text line is never skipped")
        };
        let record = parse(true);
        assert_eq!(record, parse(false), "--topic changed a text record");
        assert!(record.topic.is_empty(), "the batch's topic applies");
        assert!(record.headers.is_empty());
        assert_eq!((record.partition, record.timestamp_ms), (None, None));
        let value = record
            .value
            .as_ref()
            .expect("a text line is never a tombstone");
        assert_slice_of(value, line);
        match (&delimiter, &record.key) {
            (None, key) => {
                assert_eq!(key, &None, "no -K, no key");
                assert_eq!(value, line);
            }
            (Some(Delimiter(d)), None) => {
                assert_eq!(find(line, d), None, "the line holds the delimiter {d:?}");
                assert_eq!(value, line);
            }
            (Some(Delimiter(d)), Some(key)) => {
                assert_slice_of(key, line);
                assert_eq!(
                    [&key[..], d, value].concat(),
                    &line[..],
                    "key, delimiter, value"
                );
                assert_eq!(find(line, d), Some(key.len()), "not the first {d:?}");
            }
        }
    }
}

/// JSON: a blank line is skipped; any other line is a record or an error,
/// and a record holds what the JSON says, read back here with serde_json's
/// own `Value`. A `-K` delimiter (which the command refuses with JSON) makes
/// no difference.
fn check_json(line: &Bytes) {
    let blank = line.iter().all(u8::is_ascii_whitespace);
    for has_default_topic in [false, true] {
        let parsed = LineParser::new(Format::Json, None, has_default_topic).parse(line);
        let with_delimiter = LineParser::new(
            Format::Json,
            Some(Delimiter(b":".to_vec())),
            has_default_topic,
        )
        .parse(line);
        assert_eq!(parsed, with_delimiter, "-K changed a JSON line");
        match parsed {
            Ok(None) => assert!(blank, "a line that is not blank was skipped"),
            Ok(Some(record)) => {
                assert!(!blank, "a blank line became {record:?}");
                assert!(
                    has_default_topic || !record.topic.is_empty(),
                    "a record without a topic and no --topic: {record:?}"
                );
                check_json_record(line, &record);
            }
            Err(why) => {
                assert!(!blank, "a blank line is an error: {why}");
                assert!(!why.is_empty(), "an empty error message");
                // The command prints it as `line N: CODE: message` on a
                // terminal: a control character from the input would break
                // the line or reach the terminal as an escape sequence.
                // (fuzz/regressions/produce_input/ holds the inputs that
                // found an unknown field's name printed raw.)
                assert!(
                    !why.chars().any(char::is_control),
                    "a control character in the message: {why:?}"
                );
            }
        }
    }
}

fn check_json_record(line: &[u8], record: &Record) {
    let json: Value = serde_json::from_slice(line).expect("a line taken as a record is JSON");
    let object = json
        .as_object()
        .expect("a line taken as a record is an object");
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());
    let topic = field("topic").map_or("", |t| t.as_str().expect("\"topic\" is a string"));
    assert_eq!(record.topic, topic);
    assert_eq!(record.key, bytes_field(object, "key"), "\"key\"");
    assert_eq!(record.value, bytes_field(object, "value"), "\"value\"");
    assert_eq!(
        record.partition.map(i64::from),
        field("partition").map(integer),
        "\"partition\""
    );
    assert_eq!(
        record.timestamp_ms,
        field("timestamp_ms").map(integer),
        "\"timestamp_ms\""
    );
    check_headers(&record.headers, field("headers"));
}

/// `"name"` as text or `"name_b64"` decoded; the parser refuses both at once.
fn bytes_field(object: &Map<String, Value>, name: &str) -> Option<Bytes> {
    let text = object.get(name).filter(|v| !v.is_null());
    let base64 = object.get(&format!("{name}_b64")).filter(|v| !v.is_null());
    match (text, base64) {
        (Some(_), Some(_)) => panic!("a record took both \"{name}\" and \"{name}_b64\""),
        (Some(text), None) => Some(Bytes::copy_from_slice(
            text.as_str().expect("a text field is a string").as_bytes(),
        )),
        (None, Some(encoded)) => Some(Bytes::from(
            BASE64
                .decode(encoded.as_str().expect("a base64 field is a string"))
                .expect("a record took bad base64"),
        )),
        (None, None) => None,
    }
}

/// A JSON number the parser took as an integer.
fn integer(value: &Value) -> i64 {
    value.as_i64().expect("an integer field is an integer")
}

/// `"headers"` as a list (order and duplicates kept) or as an object. The
/// `Value` of an object keeps one entry per key (the last) and sorts them,
/// so an object is compared key by key with the last header of each key.
fn check_headers(headers: &[Header], json: Option<&Value>) {
    match json {
        None => assert!(headers.is_empty(), "headers from nowhere: {headers:?}"),
        Some(Value::Array(list)) => {
            assert_eq!(headers.len(), list.len(), "one header per list element");
            for (header, element) in headers.iter().zip(list) {
                let element = element.as_object().expect("a header is an object");
                let key = element["key"].as_str().expect("a header key is a string");
                assert_eq!(header.key, key);
                assert_eq!(Some(header.value.clone()), bytes_field(element, "value"));
            }
        }
        Some(Value::Object(object)) => {
            assert!(headers.len() >= object.len(), "headers lost");
            for (key, value) in object {
                let last = headers.iter().rev().find(|h| &h.key == key);
                let last = last.unwrap_or_else(|| panic!("header {key:?} lost"));
                assert_eq!(
                    &last.value[..],
                    value.as_str().expect("a string").as_bytes()
                );
            }
            assert!(
                headers.iter().all(|h| object.contains_key(&h.key)),
                "a header from nowhere: {headers:?}"
            );
        }
        Some(other) => panic!("headers taken from {other}"),
    }
}

/// `-K` arguments: refused only when empty; `\t` and `\\` are unescaped, so
/// the result is never longer, and escaping it again gives it back.
fn check_parse_delimiter(arg: &str) {
    match parse_delimiter(arg) {
        Err(why) => {
            assert!(arg.is_empty(), "-K {arg:?} refused: {why}");
            assert!(why.contains("-K"), "the message names the flag: {why}");
        }
        Ok(Delimiter(bytes)) => {
            assert!(!arg.is_empty(), "an empty -K taken");
            assert!(
                !bytes.is_empty() && bytes.len() <= arg.len(),
                "{arg:?} became {bytes:?}"
            );
            let text = String::from_utf8(bytes.clone()).expect("unescaping keeps UTF-8");
            let escaped = text.replace('\\', "\\\\").replace('\t', "\\t");
            assert_eq!(
                parse_delimiter(&escaped),
                Ok(Delimiter(bytes)),
                "-K {escaped:?}"
            );
        }
    }
}

/// Cuts `data` with `LineReader` and compares with the lines worked out here:
/// `\n` ends a line, one `\r` before it is dropped, a last line without `\n`
/// counts, and a line over the limit (counting its `\r`) is its length.
fn check_line_reader(data: &[u8], read_size: Option<usize>, max_line: usize) {
    let lines = match read_size {
        None => read_lines(LineReader::with_max_line(data, max_line)),
        Some(size) => read_lines(LineReader::with_max_line(
            tokio::io::BufReader::with_capacity(size, data),
            max_line,
        )),
    };

    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if pieces.last() == Some(&&[][..]) {
        // Input that ends with `\n`, or no input: no line after it.
        pieces.pop();
    }
    let expected: Vec<Line> = pieces
        .iter()
        .zip(1..)
        .map(|(piece, number)| Line {
            number,
            content: if piece.len() > max_line {
                Err(piece.len())
            } else {
                Ok(Bytes::copy_from_slice(
                    piece.strip_suffix(b"\r").unwrap_or(piece),
                ))
            },
        })
        .collect();
    assert_eq!(
        lines, expected,
        "read {read_size:?} at a time, lines up to {max_line}"
    );
}

fn read_lines<R: tokio::io::AsyncBufRead + Unpin>(mut reader: LineReader<R>) -> Vec<Line> {
    let mut lines = Vec::new();
    while let Some(line) = ready(reader.next_line()).expect("reading memory cannot fail") {
        assert_eq!(reader.last_line(), line.number);
        lines.push(line);
    }
    lines
}

/// Runs a future over in-memory input, which is always ready: no runtime.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading memory never waits"),
    }
}

/// Where `needle` first occurs in `haystack`, the plain way.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    (0..=haystack.len().checked_sub(needle.len())?).find(|&at| haystack[at..].starts_with(needle))
}

/// Keys and values are slices of the line, never copies (an empty one may be
/// the shared empty `Bytes`).
fn assert_slice_of(part: &Bytes, line: &Bytes) {
    let (start, end) = (line.as_ptr() as usize, line.as_ptr() as usize + line.len());
    let at = part.as_ptr() as usize;
    assert!(
        part.is_empty() || (start <= at && at + part.len() <= end),
        "a copy, not a slice of the line"
    );
}
