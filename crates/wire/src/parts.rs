//! Encoding a response as a list of byte parts in which the large record sets of a Fetch response
//! are the fetched bytes themselves, not copies: a catch-up fetch answers up to 55 MiB of records, and
//! [`crate::encode_response`] copies every byte of them into one new buffer (a memory copy, and the page
//! faults of a buffer that size) before the socket copies them again. Here the generated codec writes
//! into [`Parts`], which keeps everything it writes but record sets of [`SHARED_RECORDS_MIN`] or more,
//! and takes a reference (`Bytes::clone`) to those.
//!
//! The one `unsafe` of the crate is [`Parts`]'s `BufMut` implementation, which hands every call but
//! `put_slice` to a `BytesMut` and keeps that buffer's own invariants (see the SAFETY notes).

#![allow(unsafe_code)]

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use crate::response::{encode_response, EncodeError};

/// Record sets at least this large are referenced, not copied; smaller ones are copied with the rest
/// (a part of its own costs the writer a system call, which a copy of a few KiB does not).
pub const SHARED_RECORDS_MIN: usize = 64 * 1024;

/// Encodes `[size][header][body]` as parts to be written in order. Parts other than the size prefix and
/// the encoder's own bytes are the response's record sets of [`SHARED_RECORDS_MIN`] bytes or more, shared
/// with it. Their concatenation is exactly what [`encode_response`] returns.
pub fn encode_response_parts(
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Vec<Bytes>, EncodeError> {
    let sources = shared_sources(body);
    let (ResponseKind::Fetch(fetch), false) = (body, sources.is_empty()) else {
        return Ok(vec![encode_response(api_version, correlation_id, body)?.freeze()]);
    };
    let mut parts = Parts { parts: vec![Bytes::new()], done: 0, inline: BytesMut::with_capacity(4096), sources };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let failed = |error| EncodeError::new(format!("Fetch response v{api_version}: {error}"));
    header.encode(&mut parts, body.header_version(api_version)).map_err(failed)?;
    fetch.encode(&mut parts, api_version).map_err(failed)?;
    parts.close_inline();
    let Parts { mut parts, done, sources, .. } = parts;
    assert!(sources.iter().all(|source| source.used), "every record set referenced was written, once");
    let size = i32::try_from(done).map_err(|_| EncodeError::new("response exceeds 2 GiB".into()))?;
    parts[0] = Bytes::copy_from_slice(&size.to_be_bytes());
    assert_eq!(parts.iter().map(Bytes::len).sum::<usize>(), done + 4, "the parts are the prefix and the body");
    Ok(parts)
}

/// Record bytes of `body`, shared or copied: what its record sets hold in memory until it is written.
/// Only Fetch responses carry any.
pub fn record_bytes(body: &ResponseKind) -> usize {
    record_sets(body).map(Bytes::len).sum()
}

/// Record bytes of `body` that [`encode_response_parts`] copies (record sets below
/// [`SHARED_RECORDS_MIN`]); only Fetch responses carry any.
pub fn copied_record_bytes(body: &ResponseKind) -> usize {
    record_sets(body).map(Bytes::len).filter(|len| *len < SHARED_RECORDS_MIN).sum()
}

/// The record sets of `body`'s partitions (only Fetch responses have any).
fn record_sets(body: &ResponseKind) -> impl Iterator<Item = &Bytes> {
    let fetch = match body {
        ResponseKind::Fetch(fetch) => Some(fetch),
        _ => None,
    };
    let partitions = fetch.into_iter().flat_map(|fetch| &fetch.responses).flat_map(|topic| &topic.partitions);
    partitions.filter_map(|partition| partition.records.as_ref())
}

/// A record set the encoder may pass to `put_slice`, to be referenced rather than copied.
struct Source {
    bytes: Bytes,
    used: bool,
}

/// The record sets of `body` to be referenced: those of [`SHARED_RECORDS_MIN`] bytes or more.
fn shared_sources(body: &ResponseKind) -> Vec<Source> {
    let shared = record_sets(body).filter(|records| records.len() >= SHARED_RECORDS_MIN);
    shared.map(|bytes| Source { bytes: bytes.clone(), used: false }).collect()
}

/// The encoder's output: finished `parts` (the first kept for the size prefix), then the bytes being
/// written (`inline`), which start at offset `done` of the body.
struct Parts {
    parts: Vec<Bytes>,
    /// Body bytes in `parts` (the prefix slot not counted).
    done: usize,
    inline: BytesMut,
    sources: Vec<Source>,
}

impl Parts {
    fn close_inline(&mut self) {
        if !self.inline.is_empty() {
            self.done += self.inline.len();
            self.parts.push(self.inline.split().freeze());
        }
    }

    /// The record set `slice` is, if it is one of the sources (the same bytes in memory, not equal ones).
    fn source_of(&mut self, slice: &[u8]) -> Option<Bytes> {
        let source = self.sources.iter_mut().find(|source| {
            !source.used && source.bytes.as_ptr() == slice.as_ptr() && source.bytes.len() == slice.len()
        })?;
        source.used = true;
        Some(source.bytes.clone())
    }

    /// The inline range of body offsets `range`: the encoder only reaches back into what it has not
    /// yet closed (response codecs do not reach back at all).
    fn inline_range(&self, range: Range<usize>) -> Range<usize> {
        assert!(range.start >= self.done, "the encoder reached back into a closed part");
        range.start - self.done..range.end - self.done
    }
}

// SAFETY: every method but `put_slice` is `BytesMut`'s own on `inline`, so the contract of `BufMut`
// (what `chunk_mut` returns is writable, `advance_mut(cnt)` only after `cnt` bytes of it were
// initialized, `remaining_mut` bounds both) is `BytesMut`'s, which implements it. `put_slice` writes
// through `BytesMut::put_slice` or moves whole parts out of `inline` with `split`, which leaves it a
// valid empty `BytesMut`.
unsafe impl BufMut for Parts {
    fn remaining_mut(&self) -> usize {
        self.inline.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (cnt bytes of `chunk_mut` initialized) is passed on unchanged.
        unsafe { self.inline.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.inline.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARED_RECORDS_MIN {
            if let Some(records) = self.source_of(src) {
                self.close_inline();
                self.done += records.len();
                self.parts.push(records);
                return;
            }
        }
        self.inline.put_slice(src);
    }
}

impl ByteBufMut for Parts {
    fn offset(&self) -> usize {
        self.done + self.inline.len()
    }

    fn seek(&mut self, offset: usize) {
        let inline = self.inline_range(offset..offset);
        self.inline.resize(inline.start, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let inline = self.inline_range(r);
        &mut self.inline[inline]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ProduceResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from((0..len).map(|at| (at as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
    }

    fn fetch(topics: Vec<(&'static str, Vec<Option<Bytes>>)>) -> ResponseKind {
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .enumerate()
                    .map(|(index, records)| {
                        PartitionData::default()
                            .with_partition_index(index as i32)
                            .with_high_watermark(1_000 + index as i64)
                            .with_records(records)
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str(name)))
                    .with_partitions(partitions)
            })
            .collect();
        ResponseKind::Fetch(FetchResponse::default().with_responses(topics))
    }

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|part| part.iter().copied()).collect()
    }

    /// Every Fetch version Once serves, with record sets large and small, absent and empty, in several
    /// topics: the parts joined are byte for byte the flat encoding, and each large record set is a
    /// part of its own that shares the response's memory (no copy).
    #[test]
    fn parts_join_to_the_flat_encoding_and_share_large_record_sets() {
        let big = records(SHARED_RECORDS_MIN, 1);
        let bigger = records(3 * SHARED_RECORDS_MIN + 17, 2);
        let small = records(SHARED_RECORDS_MIN - 1, 3);
        let response = fetch(vec![
            ("a", vec![Some(big.clone()), None, Some(small.clone()), Some(Bytes::new())]),
            ("b", vec![Some(bigger.clone())]),
            ("c", vec![Some(small.clone()), Some(big.clone())]),
        ]);
        for api_version in 4..=12 {
            let flat = encode_response(api_version, 42, &response).expect("flat");
            let parts = encode_response_parts(api_version, 42, &response).expect("parts");
            assert_eq!(joined(&parts), &flat[..], "Fetch v{api_version}");
            let shared: Vec<usize> = parts
                .iter()
                .filter(|part| [&big, &bigger].iter().any(|records| part.as_ptr() == records.as_ptr()))
                .map(Bytes::len)
                .collect();
            assert_eq!(shared, vec![big.len(), bigger.len(), big.len()], "v{api_version}: large sets are not copied");
            assert!(
                parts.iter().all(|part| part.as_ptr() != small.as_ptr()),
                "v{api_version}: a set below the threshold is copied with the rest"
            );
            assert_eq!(parts[0].len(), 4, "the size prefix");
        }
        assert_eq!(copied_record_bytes(&response), 2 * small.len(), "only the small sets are copied");
        let all = 2 * big.len() + bigger.len() + 2 * small.len();
        assert_eq!(record_bytes(&response), all, "every set counts toward what the response holds");
    }

    /// The same bytes twice in one response (two partitions answered from one buffer) are each written
    /// where the codec puts them; a record set equal to a large one but elsewhere in memory is copied.
    #[test]
    fn one_buffer_in_two_places_and_equal_bytes_elsewhere() {
        let big = records(2 * SHARED_RECORDS_MIN, 9);
        let equal_copy = Bytes::from(big.to_vec());
        let response = fetch(vec![("a", vec![Some(big.clone()), Some(big.clone())])]);
        let parts = encode_response_parts(12, 1, &response).expect("parts");
        assert_eq!(joined(&parts), &encode_response(12, 1, &response).expect("flat")[..]);
        assert_eq!(parts.iter().filter(|part| part.as_ptr() == big.as_ptr()).count(), 2, "both shared");
        let mut parts =
            Parts { parts: vec![Bytes::new()], done: 0, inline: BytesMut::new(), sources: shared_sources(&response) };
        parts.put_slice(&equal_copy);
        assert_eq!(parts.parts.len(), 1, "equal bytes at another address are copied, not taken for the source");
        assert_eq!(parts.inline.len(), equal_copy.len());
    }

    /// Responses without large record sets are one part, the flat encoding; so is every other API.
    #[test]
    fn without_large_record_sets_one_part() {
        let small = fetch(vec![("a", vec![Some(records(100, 0)), None])]);
        let produce = ResponseKind::Produce(ProduceResponse::default());
        for (response, api_version) in [(small, 12), (produce, 9)] {
            let parts = encode_response_parts(api_version, 3, &response).expect("parts");
            assert_eq!(parts.len(), 1);
            assert_eq!(&parts[0][..], &encode_response(api_version, 3, &response).expect("flat")[..]);
        }
    }

    /// The encoder may reach back into bytes it has not closed yet (gaps), never into a closed part.
    #[test]
    #[should_panic(expected = "reached back into a closed part")]
    fn reaching_back_into_a_closed_part_panics() {
        let big = records(SHARED_RECORDS_MIN, 5);
        let response = fetch(vec![("a", vec![Some(big.clone())])]);
        let mut parts =
            Parts { parts: vec![Bytes::new()], done: 0, inline: BytesMut::new(), sources: shared_sources(&response) };
        parts.put_slice(b"head");
        assert_eq!(parts.range(0..4), b"head", "open bytes can be reached");
        parts.put_slice(&big);
        parts.seek(2);
    }
}
