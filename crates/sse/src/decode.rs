//! The incremental decoder: bytes in any chunking to dispatched events.
//!
//! Each byte is scanned once for a line end. A line that lies whole inside a chunk is parsed
//! in place; only a line cut by a chunk boundary is copied, into a buffer bounded by the cap.
//! Comment lines are never buffered.

use memchr::memchr2;

use crate::{SseError, SseEvent, DEFAULT_MAX_EVENT_BYTES};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Capacity of the partial-line buffer kept after a line completes.
///
/// Keeping it spares a reallocation for every line cut by a chunk boundary; dropping anything
/// larger means one oversized line does not pin its memory for the rest of a long stream.
/// Typical lines (one JSON delta) fit well within it.
const RETAINED_LINE_CAPACITY: usize = 8 * 1024;

/// Where the decoder stands on the byte-order mark that may open the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bom {
    /// This many leading bytes of the stream matched the BOM so far (0 to 2).
    Matching(usize),
    /// The stream start is behind us.
    Done,
}

/// Incremental SSE decoder for one stream; holds at most the bytes of one incomplete event.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    bom: Bom,
    /// The start of a line cut by a chunk boundary.
    line: Vec<u8>,
    /// The cut line is a comment: its remaining bytes are skipped, not buffered.
    in_comment: bool,
    /// The last line ended in CR at a chunk's end; an LF opening the next chunk completes it.
    after_cr: bool,
    /// Field-line bytes of the event in progress, for the cap and for truncation.
    event_bytes: usize,
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    keepalive: bool,
    failed: Option<SseError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder for a new stream, capped at [`DEFAULT_MAX_EVENT_BYTES`] per event.
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder for a new stream whose events may hold at most `max` field-line bytes.
    pub fn with_max_event_bytes(max: usize) -> Self {
        Self {
            max_event_bytes: max,
            bom: Bom::Matching(0),
            line: Vec::new(),
            in_comment: false,
            after_cr: false,
            event_bytes: 0,
            data: None,
            event: None,
            id: None,
            retry: None,
            keepalive: false,
            failed: None,
        }
    }

    /// Feeds the next bytes of the stream; every event they complete is appended to `out`.
    ///
    /// Fails when one event goes over the cap or a field line is not UTF-8. Events completed
    /// before the failing line are still appended. After a failure the decoder has released
    /// its buffers and returns the same error from every later `feed` and `finish`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self
            .skip_bom(chunk, out)
            .and_then(|rest| self.push(rest, out));
        if let Err(err) = &result {
            let keepalive = self.keepalive;
            *self = Self::with_max_event_bytes(self.max_event_bytes);
            self.keepalive = keepalive;
            self.failed = Some(err.clone());
        }
        result
    }

    /// Ends the stream: `Ok` when it ended on an event boundary, [`SseError::Truncated`] when
    /// it was cut inside a line or an event (that event is dropped).
    ///
    /// Afterwards the decoder is ready for a new stream, unless `feed` had failed: then it
    /// keeps returning that error.
    pub fn finish(&mut self) -> Result<(), SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let idle = self.is_idle();
        *self = Self::with_max_event_bytes(self.max_event_bytes);
        if idle {
            Ok(())
        } else {
            Err(SseError::Truncated)
        }
    }

    /// True when nothing of an unfinished line or event is pending (false after a failure).
    pub fn is_idle(&self) -> bool {
        self.failed.is_none()
            && self.line.is_empty()
            && !self.in_comment
            && self.event_bytes == 0
            && !matches!(self.bom, Bom::Matching(n) if n > 0)
    }

    /// True, once, when comment lines (keepalives such as `: ping`) arrived since the last
    /// call; lets a relay keep its own client connection alive while the upstream is silent.
    pub fn take_keepalive(&mut self) -> bool {
        std::mem::take(&mut self.keepalive)
    }

    // === stream start ===

    /// Drops a BOM opening the stream, even one split over chunks; returns what follows it.
    fn skip_bom<'a>(
        &mut self,
        chunk: &'a [u8],
        out: &mut Vec<SseEvent>,
    ) -> Result<&'a [u8], SseError> {
        let Bom::Matching(matched) = self.bom else {
            return Ok(chunk);
        };
        let wanted = BOM.get(matched..).unwrap_or_default();
        let n = wanted.iter().zip(chunk).take_while(|(a, b)| a == b).count();
        let rest = chunk.get(n..).unwrap_or_default();
        if n == wanted.len() {
            self.bom = Bom::Done;
        } else if n == chunk.len() {
            self.bom = Bom::Matching(matched + n);
        } else {
            // Not a BOM after all: the bytes held back as its prefix are stream content.
            self.bom = Bom::Done;
            self.push(BOM.get(..matched + n).unwrap_or_default(), out)?;
        }
        Ok(rest)
    }

    // === lines ===

    fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr {
            if let Some((&first, rest)) = chunk.split_first() {
                self.after_cr = false;
                if first == b'\n' {
                    chunk = rest;
                }
            }
        }
        while let Some(pos) = memchr2(b'\n', b'\r', chunk) {
            let (line, end) = chunk.split_at(pos);
            chunk = match end {
                [b'\r', b'\n', rest @ ..] => rest,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, rest @ ..] => rest,
                [] => &[],
            };
            self.end_line(line, out)?;
        }
        self.keep_partial(chunk)
    }

    /// Completes the current line with `tail`, the bytes before its line end in this chunk.
    fn end_line(&mut self, tail: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.in_comment {
            self.in_comment = false;
            self.keepalive = true;
            return Ok(());
        }
        if self.line.is_empty() {
            return self.parse_line(tail, out);
        }
        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(tail);
        let result = self.parse_line(&line, out);
        line.clear();
        if line.capacity() <= RETAINED_LINE_CAPACITY {
            self.line = line;
        }
        result
    }

    /// Holds the start of a line cut by the chunk's end.
    fn keep_partial(&mut self, part: &[u8]) -> Result<(), SseError> {
        if part.is_empty() || self.in_comment {
            return Ok(());
        }
        if self.line.is_empty() && part.first() == Some(&b':') {
            self.in_comment = true;
            return Ok(());
        }
        // The same sum `parse_line` checks for the whole line, so a split never changes
        // whether or where the cap is hit.
        self.check_cap(self.line.len() + part.len())?;
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn check_cap(&self, line_len: usize) -> Result<usize, SseError> {
        let total = self.event_bytes.saturating_add(line_len);
        if total > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(total)
    }

    // === fields ===

    fn parse_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        match line.first() {
            None => {
                self.dispatch(out);
                return Ok(());
            }
            Some(b':') => {
                self.keepalive = true;
                return Ok(());
            }
            Some(_) => {}
        }
        self.event_bytes = self.check_cap(line.len())?;
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(retry) = value.parse() {
                    self.retry = Some(retry);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        self.event_bytes = 0;
        let data = self.data.take();
        let event = self.event.take();
        let id = self.id.take();
        let retry = self.retry.take();
        if data.is_some() || event.is_some() {
            out.push(SseEvent {
                event,
                data: data.unwrap_or_default(),
                id,
                retry,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> SseEvent {
        SseEvent {
            data: s.to_owned(),
            ..SseEvent::default()
        }
    }

    /// Decodes `chunks` in order, then finishes the stream.
    fn decode(chunks: &[&[u8]]) -> (Vec<SseEvent>, Result<(), SseError>) {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            if let Err(err) = decoder.feed(chunk, &mut out) {
                return (out, Err(err));
            }
        }
        let end = decoder.finish();
        (out, end)
    }

    fn decode_ok(input: &str) -> Vec<SseEvent> {
        let (events, end) = decode(&[input.as_bytes()]);
        assert_eq!(end, Ok(()), "input {input:?}");
        events
    }

    #[test]
    fn every_line_ending_is_accepted() {
        for input in [
            "data: a\n\ndata: b\n\n",
            "data: a\r\n\r\ndata: b\r\n\r\n",
            "data: a\r\rdata: b\r\r",
            "data: a\r\n\ndata: b\n\r\n",
        ] {
            assert_eq!(decode_ok(input), vec![data("a"), data("b")], "{input:?}");
        }
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let (events, end) = decode(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(events, vec![data("a\nb")]);
        assert_eq!(end, Ok(()));
        // An empty chunk between CR and LF changes nothing.
        let (events, _) = decode(&[b"data: a\r", b"", b"\n\r", b"", b"\n"]);
        assert_eq!(events, vec![data("a")]);
    }

    #[test]
    fn one_leading_space_is_stripped() {
        assert_eq!(decode_ok("data:a\n\n"), vec![data("a")]);
        assert_eq!(decode_ok("data: a\n\n"), vec![data("a")]);
        assert_eq!(decode_ok("data:  a \n\n"), vec![data(" a ")]);
        assert_eq!(decode_ok("data:\tb\n\n"), vec![data("\tb")]);
    }

    #[test]
    fn value_keeps_later_colons() {
        assert_eq!(decode_ok("data: {\"a\":1}\n\n"), vec![data("{\"a\":1}")]);
    }

    #[test]
    fn data_lines_join_with_lf() {
        assert_eq!(
            decode_ok("data: a\ndata:\ndata: b\n\n"),
            vec![data("a\n\nb")]
        );
        assert_eq!(decode_ok("data\n\n"), vec![data("")]);
        assert_eq!(decode_ok("data:\ndata:\n\n"), vec![data("\n")]);
    }

    #[test]
    fn event_id_and_retry_are_read() {
        let events = decode_ok("event: delta\nid: 7\nretry: 1500\ndata: x\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("delta".into()),
                data: "x".into(),
                id: Some("7".into()),
                retry: Some(1500),
            }]
        );
    }

    #[test]
    fn later_field_of_the_same_name_wins() {
        let events = decode_ok("event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n");
        assert_eq!(events[0].event.as_deref(), Some("b"));
        assert_eq!(events[0].id.as_deref(), Some("2"));
    }

    #[test]
    fn id_and_retry_do_not_carry_over() {
        let events = decode_ok("id: 1\nretry: 5\ndata: a\n\ndata: b\n\n");
        assert_eq!(events[1], data("b"));
    }

    #[test]
    fn bad_retry_and_nul_id_are_ignored() {
        for input in [
            "retry: 12a\ndata: x\n\n",
            "retry:\ndata: x\n\n",
            "retry: -1\ndata: x\n\n",
            "retry: 99999999999999999999999\ndata: x\n\n",
            "id: a\0b\ndata: x\n\n",
        ] {
            assert_eq!(decode_ok(input), vec![data("x")], "{input:?}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            decode_ok("foo: bar\nDATA: no\ndata: x\n\n"),
            vec![data("x")]
        );
    }

    #[test]
    fn block_without_data_or_event_is_not_dispatched() {
        assert_eq!(decode_ok("id: 1\nretry: 10\n\n"), vec![]);
        assert_eq!(decode_ok("\n\n\n"), vec![]);
        assert_eq!(decode_ok("foo\n\n"), vec![]);
    }

    #[test]
    fn event_without_data_is_dispatched() {
        let events = decode_ok("event: ping\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("ping".into()),
                ..SseEvent::default()
            }]
        );
    }

    #[test]
    fn comments_are_dropped_but_noticed() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"data: a\n: mid-event\n\n", &mut out).unwrap();
        assert!(decoder.take_keepalive());
        assert!(!decoder.take_keepalive());
        decoder.feed(b": ping", &mut out).unwrap();
        assert!(!decoder.is_idle(), "cut inside the comment line");
        decoder.feed(b" still ping\n\n", &mut out).unwrap();
        assert!(decoder.take_keepalive());
        assert!(decoder.is_idle());
        assert_eq!(out, vec![data("a")]);
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn comment_only_stream_ends_cleanly_without_blank_line() {
        assert_eq!(decode_ok(": OPENROUTER PROCESSING\n"), vec![]);
    }

    #[test]
    fn comments_are_not_buffered_nor_capped() {
        let mut decoder = SseDecoder::with_max_event_bytes(16);
        let mut out = Vec::new();
        decoder.feed(b":", &mut out).unwrap();
        for _ in 0..100 {
            decoder.feed(&[b'x'; 64], &mut out).unwrap();
        }
        assert!(decoder.line.capacity() == 0);
        decoder.feed(b"\ndata: ok\n\n", &mut out).unwrap();
        assert_eq!(out, vec![data("ok")]);
    }

    #[test]
    fn leading_bom_is_skipped_whole_or_split() {
        assert_eq!(decode_ok("\u{feff}data: a\n\n"), vec![data("a")]);
        let (events, end) = decode(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!((events, end), (vec![data("a")], Ok(())));
        let (events, end) = decode(&[b"\xEF\xBB", b"", b"\xBF", b"data: a\n\n"]);
        assert_eq!((events, end), (vec![data("a")], Ok(())));
    }

    #[test]
    fn bom_later_in_the_stream_is_content() {
        // Only the first BOM is dropped; a second one makes the field name unknown.
        assert_eq!(decode_ok("\u{feff}\u{feff}data: a\n\n"), vec![]);
        assert_eq!(decode_ok("data: \u{feff}a\n\n"), vec![data("\u{feff}a")]);
    }

    #[test]
    fn bom_prefix_that_is_not_a_bom_is_content() {
        // EF BB 80 is U+FEC0, a valid character that starts like a BOM.
        let (events, end) = decode(&[b"\xEF\xBB", b"\x80: x\ndata: y\n\n"]);
        assert_eq!((events, end), (vec![data("y")], Ok(())));
        let (_, end) = decode(&[b"\xEF", b"data: y\n\n"]);
        assert_eq!(end, Err(SseError::InvalidUtf8));
    }

    #[test]
    fn partial_bom_at_end_is_truncated() {
        assert_eq!(decode(&[b"\xEF\xBB"]).1, Err(SseError::Truncated));
    }

    #[test]
    fn invalid_utf8_is_an_error_and_sticks() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        let err = decoder.feed(b"data: ok\n\ndata: \xFF\xFE\n\n", &mut out);
        assert_eq!(err, Err(SseError::InvalidUtf8));
        assert_eq!(out, vec![data("ok")], "events before the bad line are kept");
        assert_eq!(
            decoder.feed(b"data: fine\n\n", &mut out),
            Err(SseError::InvalidUtf8)
        );
        assert_eq!(out.len(), 1);
        assert!(!decoder.is_idle());
        assert_eq!(decoder.finish(), Err(SseError::InvalidUtf8));
    }

    #[test]
    fn utf8_split_across_chunks_is_fine() {
        let text = "data: héllo €\n\n".as_bytes();
        for at in 0..text.len() {
            let (head, tail) = text.split_at(at);
            assert_eq!(decode(&[head, tail]), (vec![data("héllo €")], Ok(())));
        }
    }

    #[test]
    fn invalid_utf8_in_comment_is_skipped() {
        assert_eq!(decode(&[b": \xFF\ndata: a\n\n"]).0, vec![data("a")]);
    }

    #[test]
    fn cap_counts_field_lines_of_one_event() {
        // "data: 12345" and "data: 67890" are 11 bytes each.
        let input = b"data: 12345\ndata: 67890\n\n";
        let mut decoder = SseDecoder::with_max_event_bytes(22);
        let mut out = Vec::new();
        decoder.feed(input, &mut out).unwrap();
        decoder.feed(input, &mut out).unwrap();
        assert_eq!(out.len(), 2, "the cap is per event, not per stream");

        let mut decoder = SseDecoder::with_max_event_bytes(21);
        assert_eq!(
            decoder.feed(input, &mut Vec::new()),
            Err(SseError::EventTooLarge { limit: 21 })
        );
        assert_eq!(
            decoder.feed(b"\n", &mut Vec::new()),
            Err(SseError::EventTooLarge { limit: 21 })
        );
    }

    #[test]
    fn cap_applies_to_a_line_still_arriving() {
        let mut decoder = SseDecoder::with_max_event_bytes(100);
        let mut out = Vec::new();
        decoder.feed(b"data: ", &mut out).unwrap();
        let mut result = Ok(());
        for _ in 0..10 {
            result = decoder.feed(&[b'a'; 20], &mut out);
            if result.is_err() {
                break;
            }
            assert!(decoder.line.len() <= 100);
        }
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 100 }));
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_line_buffer_is_not_retained() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"data: ", &mut out).unwrap();
        decoder.feed(&[b'a'; 64 * 1024], &mut out).unwrap();
        decoder.feed(b"\n\n", &mut out).unwrap();
        assert_eq!(out[0].data.len(), 64 * 1024);
        assert!(decoder.line.capacity() <= RETAINED_LINE_CAPACITY);
    }

    #[test]
    fn truncation_is_detected() {
        for input in [
            "data: a",
            "data: a\n",
            "data: a\r",
            "event: x\n",
            "id: 1\n",
            "data: a\n\ndata: b\n",
            "data: a\n: ping\n",
            ": ping",
        ] {
            let (_, end) = decode(&[input.as_bytes()]);
            assert_eq!(end, Err(SseError::Truncated), "{input:?}");
        }
    }

    #[test]
    fn clean_end_is_ok() {
        for input in ["", "data: a\n\n", "data: a\r\r", "data: a\n\n\n", ": x\n"] {
            let (_, end) = decode(&[input.as_bytes()]);
            assert_eq!(end, Ok(()), "{input:?}");
        }
    }

    #[test]
    fn is_idle_tracks_event_boundaries() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        assert!(decoder.is_idle());
        decoder.feed(b"da", &mut out).unwrap();
        assert!(!decoder.is_idle());
        decoder.feed(b"ta: x\n", &mut out).unwrap();
        assert!(!decoder.is_idle());
        decoder.feed(b"\n", &mut out).unwrap();
        assert!(decoder.is_idle());
    }

    #[test]
    fn finish_readies_the_decoder_for_a_new_stream() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"data: cut", &mut out).unwrap();
        assert_eq!(decoder.finish(), Err(SseError::Truncated));
        decoder.feed(b"\xEF\xBB\xBFdata: b\n\n", &mut out).unwrap();
        assert_eq!(decoder.finish(), Ok(()));
        assert_eq!(out, vec![data("b")]);
    }
}
