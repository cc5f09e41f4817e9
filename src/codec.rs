//! The gRPC codec of `kafka_gateway.v1.Producer`: prost's wire format,
//! byte for byte, with the per-record costs of prost's general code taken
//! out of the gateway's path (and the `produce` command's).
//!
//! - **Decoding** a request (a response, for a client): read in one pass
//!   over the message's bytes, into vectors sized first by a skim over the
//!   top-level fields ([`read_request`], [`read_response`]). Keys, values
//!   and header values stay slices of the received buffer. What this pass
//!   does not know (unknown fields, groups, a malformed message, an error
//!   result) is read by prost, so every input gives what prost gives, and
//!   every error is prost's. Prost pushed a batch's records one by one (a
//!   batch of 200 grew its vector eight times) and went through a `Buf`
//!   call per varint: about 900 instructions per record, against about 500.
//! - **Encoding** a response: prost computes each nested message's length
//!   once for its parent and again for itself, three times per ack in all.
//!   Acks are written here with each length computed once (about 400 ->
//!   240 instructions per record); an error result is written by prost.
//! - **Buffers**: tonic gives each call an 8 KiB buffer each way up front,
//!   16 KiB per stream before anything is sent: 160 MB for 10,000 mostly
//!   idle streams. Here they start at [`BUFFER`] and grow to the largest
//!   message a stream sends (tonic reserves a whole message at once).
//!
//! Tests below hold each path to prost on generated messages; the request
//! fuzz target holds [`read_request`] to prost on any input.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::proto::{ProduceRequest, ProduceResponse, RecordMetadata, RecordResult, record_result};

/// The initial size of a call's encode and decode buffers.
const BUFFER: usize = 1024;

/// tonic's default beyond which an encoder yields: kept.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// How a message of the service is written and read.
pub trait Wire: Message + Default + Send + 'static {
    /// Writes `self` as prost would.
    fn write(&self, buf: &mut EncodeBuf<'_>) {
        self.encode_raw(buf);
    }

    /// Reads one message from the whole of `buf`.
    fn read(buf: &mut DecodeBuf<'_>) -> Result<Self, prost::DecodeError>;
}

impl Wire for ProduceRequest {
    fn read(buf: &mut DecodeBuf<'_>) -> Result<Self, prost::DecodeError> {
        read_request(buf)
    }
}

/// A request as the gateway reads it: what `ProduceRequest::decode` gives.
///
/// A request made only of the fields the gateway knows, each with its wire
/// type, is read by [`fast::request`], in one pass over the message's bytes
/// (keys, values and header values are slices of them, as with prost).
/// Anything else (unknown fields, groups, a malformed message) is left to
/// prost, which reads it or says what is wrong with it exactly as before.
pub fn read_request(buf: impl Buf) -> Result<ProduceRequest, prost::DecodeError> {
    read_with(buf, fast::request)
}

/// The common case of a request or a response, read without prost's
/// general machinery.
mod fast {
    use bytes::Bytes;

    use super::count_field;
    use crate::proto::{
        Header, ProduceRequest, ProduceResponse, Record, RecordMetadata, RecordResult,
        record_result,
    };

    /// Where reading stands in one message: `all[pos..end]` is left.
    #[derive(Clone, Copy)]
    struct Reader<'a> {
        all: &'a Bytes,
        pos: usize,
        end: usize,
    }

    impl<'a> Reader<'a> {
        fn done(&self) -> bool {
            self.pos >= self.end
        }

        /// A varint: at most ten bytes, the tenth at most 1 (what prost
        /// reads; anything longer is prost's to refuse).
        #[inline]
        fn varint(&mut self) -> Option<u64> {
            let bytes = &self.all[self.pos..self.end];
            // Most are one byte: keys, lengths, small partitions.
            if let Some(&byte) = bytes.first()
                && byte < 0x80
            {
                self.pos += 1;
                return Some(u64::from(byte));
            }
            let mut value = 0u64;
            for (i, &byte) in bytes.iter().take(10).enumerate() {
                if i == 9 && byte > 1 {
                    return None;
                }
                value |= u64::from(byte & 0x7f) << (7 * i);
                if byte < 0x80 {
                    self.pos += i + 1;
                    return Some(value);
                }
            }
            None
        }

        /// A field's number and wire type.
        fn key(&mut self) -> Option<(u64, u64)> {
            let key = self.varint()?;
            (key >> 3 != 0 && key <= u64::from(u32::MAX)).then_some((key >> 3, key & 7))
        }

        /// The range of a length-delimited field's contents.
        fn span(&mut self) -> Option<(usize, usize)> {
            let len = usize::try_from(self.varint()?).ok()?;
            let start = self.pos;
            let end = start.checked_add(len).filter(|&end| end <= self.end)?;
            self.pos = end;
            Some((start, end))
        }

        fn bytes(&mut self) -> Option<Bytes> {
            let (start, end) = self.span()?;
            Some(self.all.slice(start..end))
        }

        fn string(&mut self) -> Option<String> {
            let (start, end) = self.span()?;
            std::str::from_utf8(&self.all[start..end])
                .ok()
                .map(str::to_owned)
        }

        /// A nested message.
        fn message(&mut self) -> Option<Reader<'a>> {
            let (pos, end) = self.span()?;
            Some(Reader { pos, end, ..*self })
        }
    }

    /// The request in `all`, or `None` for prost to read.
    pub(super) fn request(all: &Bytes) -> Option<ProduceRequest> {
        let mut reader = Reader {
            all,
            pos: 0,
            end: all.len(),
        };
        let mut request = ProduceRequest {
            records: Vec::with_capacity(count_field(&&all[..], 3)),
            ..Default::default()
        };
        // Field numbers and wire types (0 varint, 2 length-delimited) of
        // proto/kafka_gateway/v1/producer.proto; a repeated field gets an
        // element per occurrence, any other field keeps its last value.
        while !reader.done() {
            match reader.key()? {
                (1, 0) => request.batch_id = reader.varint()?,
                (2, 2) => request.topic = reader.string()?,
                (3, 2) => request.records.push(record(reader.message()?)?),
                (4, 0) => request.compact_acks = reader.varint()? != 0,
                (5, 0) => request.skip_dead_letter = reader.varint()? != 0,
                (6, 2) => request.transactional_id = reader.string()?,
                (7, 0) => request.commit = reader.varint()? != 0,
                _ => return None,
            }
        }
        Some(request)
    }

    fn record(mut reader: Reader<'_>) -> Option<Record> {
        let mut record = Record::default();
        while !reader.done() {
            match reader.key()? {
                (1, 2) => record.topic = reader.string()?,
                (2, 2) => record.key = Some(reader.bytes()?),
                (3, 2) => record.value = Some(reader.bytes()?),
                (4, 2) => record.headers.push(header(reader.message()?)?),
                // int32 and int64: the varint's low bits, as prost reads them.
                (5, 0) => record.partition = Some(reader.varint()? as i32),
                (6, 0) => record.timestamp_ms = Some(reader.varint()? as i64),
                _ => return None,
            }
        }
        Some(record)
    }

    /// The response in `all` if all its results are acks, or `None` for
    /// prost to read.
    pub(super) fn response(all: &Bytes) -> Option<ProduceResponse> {
        let mut reader = Reader {
            all,
            pos: 0,
            end: all.len(),
        };
        let mut response = ProduceResponse {
            results: Vec::with_capacity(count_field(&&all[..], 2)),
            ..Default::default()
        };
        while !reader.done() {
            match reader.key()? {
                (1, 0) => response.batch_id = reader.varint()?,
                (2, 2) => response.results.push(result(reader.message()?)?),
                (3, 2) => response.topic = reader.string()?,
                _ => return None,
            }
        }
        Some(response)
    }

    /// An ack, or no result at all. (A second `ok` in one result would be
    /// merged into the first by prost: left to it.)
    fn result(mut reader: Reader<'_>) -> Option<RecordResult> {
        let mut ok = None;
        while !reader.done() {
            match reader.key()? {
                (1, 2) if ok.is_none() => ok = Some(metadata(reader.message()?)?),
                _ => return None,
            }
        }
        Some(RecordResult {
            result: ok.map(record_result::Result::Ok),
        })
    }

    fn metadata(mut reader: Reader<'_>) -> Option<RecordMetadata> {
        let mut metadata = RecordMetadata::default();
        while !reader.done() {
            match reader.key()? {
                (1, 2) => metadata.topic = reader.string()?,
                (2, 0) => metadata.partition = reader.varint()? as i32,
                (3, 0) => metadata.offset = reader.varint()? as i64,
                (4, 0) => metadata.timestamp_ms = reader.varint()? as i64,
                _ => return None,
            }
        }
        Some(metadata)
    }

    fn header(mut reader: Reader<'_>) -> Option<Header> {
        let mut header = Header::default();
        while !reader.done() {
            match reader.key()? {
                (1, 2) => header.key = reader.string()?,
                (2, 2) => header.value = reader.bytes()?,
                _ => return None,
            }
        }
        Some(header)
    }
}

impl Wire for ProduceResponse {
    fn write(&self, buf: &mut EncodeBuf<'_>) {
        write_response(self, buf);
    }

    fn read(buf: &mut DecodeBuf<'_>) -> Result<Self, prost::DecodeError> {
        read_response(buf)
    }
}

/// A response as a client of the gateway reads it (the `produce` command):
/// what `ProduceResponse::decode` gives. Acks are read by
/// [`fast::response`]; a response with an error result, or anything
/// unusual, is read by prost.
pub fn read_response(buf: impl Buf) -> Result<ProduceResponse, prost::DecodeError> {
    read_with(buf, fast::response)
}

/// The message in the whole of `buf`: read by `fast` when it can, else by
/// prost, from the same bytes.
fn read_with<M: Message + Default>(
    mut buf: impl Buf,
    fast: fn(&Bytes) -> Option<M>,
) -> Result<M, prost::DecodeError> {
    let bytes = buf.copy_to_bytes(buf.remaining());
    match fast(&bytes) {
        Some(message) => Ok(message),
        None => M::decode(bytes),
    }
}

/// At most this many elements are made room for ahead: a message of
/// millions of empty records grows its vector as prost would, and the
/// gateway then refuses it for `--max-batch-records` (10,000 by default).
const MAX_RESERVED: usize = 16_384;

/// How many length-delimited fields numbered `field` the message in `buf`
/// has at its top level (at most [`MAX_RESERVED`]), counted without
/// consuming `buf`. A message that is not contiguous, or malformed, counts
/// as far as it can be read: prost then reports the error while decoding.
fn count_field(buf: &impl Buf, field: u64) -> usize {
    let mut bytes = buf.chunk();
    if bytes.len() < buf.remaining() {
        return 0;
    }
    let wanted = (field << 3) | WireType::LengthDelimited as u64;
    let mut count = 0;
    while !bytes.is_empty() && count < MAX_RESERVED {
        let Some(key) = varint(&mut bytes) else { break };
        let skip = match key & 7 {
            0 => match varint(&mut bytes) {
                Some(_) => 0,
                None => break,
            },
            1 => 8,
            2 => match varint(&mut bytes) {
                Some(len) => len,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        match usize::try_from(skip) {
            Ok(skip) if skip <= bytes.len() => bytes = &bytes[skip..],
            _ => break,
        }
        if key == wanted {
            count += 1;
        }
    }
    count
}

/// Reads a varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

/// `response` as prost writes it, with each ack's lengths computed once.
fn write_response(response: &ProduceResponse, buf: &mut impl BufMut) {
    if response.batch_id != 0 {
        encode_key(1, WireType::Varint, buf);
        encode_varint(response.batch_id, buf);
    }
    for result in &response.results {
        match &result.result {
            Some(record_result::Result::Ok(metadata)) => {
                let inner = metadata_len(metadata);
                // RecordResult { ok = 1: RecordMetadata }
                let outer = 1 + encoded_len_varint(inner as u64) + inner;
                encode_key(2, WireType::LengthDelimited, buf);
                encode_varint(outer as u64, buf);
                encode_key(1, WireType::LengthDelimited, buf);
                encode_varint(inner as u64, buf);
                write_metadata(metadata, buf);
            }
            _ => prost::encoding::message::encode::<RecordResult>(2, result, buf),
        }
    }
    if !response.topic.is_empty() {
        prost::encoding::string::encode(3, &response.topic, buf);
    }
}

fn metadata_len(metadata: &RecordMetadata) -> usize {
    let mut len = 0;
    if !metadata.topic.is_empty() {
        len += 1 + encoded_len_varint(metadata.topic.len() as u64) + metadata.topic.len();
    }
    // int32 and int64 are written as 64-bit varints (negatives in ten bytes).
    if metadata.partition != 0 {
        len += 1 + encoded_len_varint(i64::from(metadata.partition) as u64);
    }
    if metadata.offset != 0 {
        len += 1 + encoded_len_varint(metadata.offset as u64);
    }
    if metadata.timestamp_ms != 0 {
        len += 1 + encoded_len_varint(metadata.timestamp_ms as u64);
    }
    len
}

fn write_metadata(metadata: &RecordMetadata, buf: &mut impl BufMut) {
    if !metadata.topic.is_empty() {
        prost::encoding::string::encode(1, &metadata.topic, buf);
    }
    if metadata.partition != 0 {
        encode_key(2, WireType::Varint, buf);
        encode_varint(i64::from(metadata.partition) as u64, buf);
    }
    if metadata.offset != 0 {
        encode_key(3, WireType::Varint, buf);
        encode_varint(metadata.offset as u64, buf);
    }
    if metadata.timestamp_ms != 0 {
        encode_key(4, WireType::Varint, buf);
        encode_varint(metadata.timestamp_ms as u64, buf);
    }
}

/// The codec the generated service and client use (`build.rs` names it).
#[derive(Debug, Clone)]
pub struct GatewayCodec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for GatewayCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: Wire, U: Wire> Codec for GatewayCodec<T, U> {
    type Encode = T;
    type Decode = U;
    type Encoder = WireEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct WireEncoder<T>(PhantomData<fn(T)>);

impl<T: Wire> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER, YIELD_THRESHOLD)
    }
}

#[derive(Debug)]
pub struct WireDecoder<U>(PhantomData<fn() -> U>);

impl<U: Wire> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // As tonic's prost codec: a message that does not parse is INTERNAL.
        U::read(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER, YIELD_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proto::{ErrorCode, Header, Record, RecordError};

    /// A small deterministic generator: the same cases on every run.
    struct Cases(u64);

    impl Cases {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Mostly zero (proto3's default, which is not written), else small,
        /// large or negative.
        fn int(&mut self) -> i64 {
            match self.next() % 5 {
                0 | 1 => 0,
                2 => (self.next() % 300) as i64,
                3 => self.next() as i64,
                _ => -((self.next() % 5000) as i64) - 1,
            }
        }

        fn text(&mut self) -> String {
            let len = (self.next() % 3) as usize * 7;
            "orders-\u{e9}".chars().cycle().take(len).collect()
        }

        fn response(&mut self) -> ProduceResponse {
            let results = (0..self.next() % 40)
                .map(|_| RecordResult {
                    result: match self.next() % 6 {
                        0 => None,
                        1 => Some(record_result::Result::Error(RecordError {
                            code: ErrorCode::InvalidRecord as i32,
                            message: self.text(),
                            retriable: self.next().is_multiple_of(2),
                            may_be_stored: false,
                            dead_letter: None,
                        })),
                        _ => Some(record_result::Result::Ok(RecordMetadata {
                            topic: self.text(),
                            partition: self.int() as i32,
                            offset: self.int(),
                            timestamp_ms: self.int(),
                        })),
                    },
                })
                .collect();
            ProduceResponse {
                batch_id: self.int() as u64,
                results,
                topic: self.text(),
            }
        }

        fn request(&mut self) -> ProduceRequest {
            let records = (0..self.next() % 40)
                .map(|_| Record {
                    topic: self.text(),
                    key: (self.next().is_multiple_of(2)).then(|| Bytes::from(self.text())),
                    value: Some(Bytes::from(vec![7; (self.next() % 200) as usize])),
                    headers: (0..self.next() % 3)
                        .map(|_| Header {
                            key: self.text(),
                            value: Bytes::from(self.text()),
                        })
                        .collect(),
                    partition: (self.next().is_multiple_of(2)).then(|| self.int() as i32),
                    timestamp_ms: (self.next().is_multiple_of(2)).then(|| self.int()),
                })
                .collect();
            ProduceRequest {
                batch_id: self.int() as u64,
                topic: self.text(),
                records,
                compact_acks: self.next().is_multiple_of(2),
                ..Default::default()
            }
        }
    }

    #[test]
    fn responses_are_written_as_prost_writes_them() {
        let mut cases = Cases(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let response = cases.response();
            let mut ours = Vec::new();
            write_response(&response, &mut ours);
            assert_eq!(ours, response.encode_to_vec(), "{response:?}");
        }
    }

    #[test]
    fn requests_are_read_as_prost_reads_them() {
        let mut cases = Cases(0x1234_5678_9abc_def1);
        for _ in 0..2_000 {
            let request = cases.request();
            let bytes = request.encode_to_vec();
            let fast = fast::request(&Bytes::from(bytes.clone()));
            assert_eq!(
                fast.as_ref(),
                Some(&request),
                "the fast path reads every request written by prost"
            );
            assert_eq!(read_request(&bytes[..]).ok(), Some(request));
        }
    }

    #[test]
    fn responses_are_read_as_prost_reads_them() {
        let mut cases = Cases(0x0bad_cafe_f00d_d00d);
        let mut fast_read = 0;
        for _ in 0..2_000 {
            let response = cases.response();
            let bytes = response.encode_to_vec();
            let acks_only = response
                .results
                .iter()
                .all(|r| !matches!(r.result, Some(record_result::Result::Error(_))));
            let fast = fast::response(&Bytes::from(bytes.clone()));
            assert_eq!(
                fast.is_some(),
                acks_only,
                "the fast path reads acks, and only acks"
            );
            fast_read += usize::from(fast.is_some());
            assert!(read_response(&bytes[..]).ok() == Some(response));
        }
        assert!(fast_read > 100, "{fast_read} responses of acks only");
        // A result with two `ok`s: prost merges them.
        let twice = [0x12, 0x08, 0x0a, 0x02, 0x10, 0x05, 0x0a, 0x02, 0x18, 0x07];
        assert!(fast::response(&Bytes::copy_from_slice(&twice)).is_none());
        let merged = read_response(&twice[..]).unwrap();
        assert_eq!(
            merged.results[0].result,
            Some(record_result::Result::Ok(RecordMetadata {
                partition: 5,
                offset: 7,
                ..Default::default()
            }))
        );
    }

    #[test]
    fn what_the_fast_path_leaves_goes_to_prost() {
        let request = ProduceRequest {
            batch_id: 7,
            records: vec![Record {
                value: Some(Bytes::from_static(b"v")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut bytes = request.encode_to_vec();
        // An unknown field (99, varint): prost skips it.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        assert!(fast::request(&Bytes::from(bytes.clone())).is_none());
        assert_eq!(read_request(&bytes[..]).ok(), Some(request.clone()));
        // A ten-byte varint is read; one that overflows is prost's error.
        let mut ten = vec![0x08];
        ten.extend_from_slice(&[0xff; 9]);
        ten.push(0x01);
        assert_eq!(
            fast::request(&Bytes::from(ten.clone())).unwrap().batch_id,
            u64::MAX
        );
        *ten.last_mut().unwrap() = 0x02;
        assert!(fast::request(&Bytes::from(ten.clone())).is_none());
        assert!(read_request(&ten[..]).is_err());
        // A wrong wire type for a known field, a length past the end,
        // invalid UTF-8 in a topic: prost's errors.
        for bad in [
            &[0x0a, 0x01, 0x41][..],
            &[0x1a, 0x05, 0x1a][..],
            &[0x12, 0x01, 0xff][..],
        ] {
            assert!(fast::request(&Bytes::copy_from_slice(bad)).is_none());
            assert_eq!(
                read_request(bad).unwrap_err().to_string(),
                ProduceRequest::decode(bad).unwrap_err().to_string()
            );
        }
    }

    #[test]
    fn repeated_fields_are_counted_exactly() {
        let mut cases = Cases(0x2545_f491_4f6c_dd1d);
        for _ in 0..2_000 {
            let request = cases.request();
            let bytes = request.encode_to_vec();
            assert_eq!(count_field(&&bytes[..], 3), request.records.len());
            let response = cases.response();
            let bytes = response.encode_to_vec();
            assert_eq!(count_field(&&bytes[..], 2), response.results.len());
        }
    }

    #[test]
    fn a_malformed_message_is_counted_as_far_as_it_reads() {
        // Two records, then a length that runs past the end.
        let mut bytes = ProduceRequest {
            records: vec![Record::default(), Record::default()],
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend_from_slice(&[0x1a, 0x7f, 1, 2]);
        assert_eq!(count_field(&&bytes[..], 3), 2);
        // A varint that never ends, and an unknown wire type.
        assert_eq!(count_field(&&[0x1a, 0x00, 0x80, 0x80][..], 3), 1);
        assert_eq!(count_field(&&[0x1a, 0x00, 0x1f][..], 3), 1);
        assert_eq!(count_field(&&[][..], 3), 0);
    }
}
