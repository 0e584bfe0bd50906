//! [`StreamRedactor`]: redaction of a response's text deltas as they arrive.
//!
//! Each delta is appended to a small buffer and the detection walk runs over it; whatever
//! the walk has decided is written out (with entities replaced) and dropped from the buffer.
//! What stays is the shortest suffix where a match could still be forming: usually the last
//! word, never more than [`crate::MAX_ENTITY_BYTES`] normalized bytes (plus the invisible
//! characters among them, see `normalize`). An entity split across deltas, events or tool-
//! argument chunks is therefore caught, and ordinary text is delayed by at most one delta.
//! The output for a stream is the output of [`Redactor::redact_response`] for the whole
//! text, however the text is cut.

use std::sync::Arc;

use crate::detect::{ScanState, Stop};
use crate::normalize::NormBuf;
use crate::redact::{Applied, Blocked, Redactor, Sink};
use crate::Direction;

/// Redacts one response stream; see the module docs.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    tenant: Box<str>,
    /// Original text received but not yet written out.
    pending: String,
    norm: NormBuf,
    state: ScanState,
    applied: Vec<Applied>,
    blocked: Option<Blocked>,
}

impl StreamRedactor {
    pub fn new(redactor: Arc<Redactor>, tenant: &str) -> StreamRedactor {
        StreamRedactor {
            redactor,
            tenant: tenant.into(),
            pending: String::new(),
            norm: NormBuf::new(),
            state: ScanState::default(),
            applied: Vec::new(),
            blocked: None,
        }
    }

    /// Feeds one delta and appends to `out` everything that can no longer be part of an
    /// entity, redacted. On [`Blocked`] the stream must end: `out` holds what was decided
    /// before the blocked entity, and every later call fails the same way.
    pub fn push(&mut self, delta: &str, out: &mut String) -> Result<(), Blocked> {
        if let Some(blocked) = &self.blocked {
            return Err(blocked.clone());
        }
        if self.redactor.side(Direction::Response).is_none() {
            out.push_str(delta);
            return Ok(());
        }
        let base = self.pending.len();
        self.pending.push_str(delta);
        self.norm.push(delta, base);
        self.flush(false, out)
    }

    /// Ends the stream: appends everything still held back, redacted.
    pub fn finish(&mut self, out: &mut String) -> Result<(), Blocked> {
        if let Some(blocked) = &self.blocked {
            return Err(blocked.clone());
        }
        let flushed = self.flush(true, out);
        self.pending.clear();
        self.norm.clear();
        self.state = ScanState::default();
        flushed
    }

    /// Entities replaced so far, per kind and action.
    pub fn applied(&self) -> &[Applied] {
        &self.applied
    }

    /// Bytes of original text currently held back.
    pub fn held_back(&self) -> usize {
        self.pending.len()
    }

    fn flush(&mut self, eof: bool, out: &mut String) -> Result<(), Blocked> {
        let StreamRedactor {
            redactor,
            tenant,
            pending,
            norm,
            state,
            applied,
            blocked,
        } = self;
        let Some(side) = redactor.side(Direction::Response) else {
            out.push_str(pending);
            pending.clear();
            return Ok(());
        };
        let view = norm.view(pending);
        let mut last = 0;
        let mut sink = Sink {
            tenant,
            pseudonyms: None,
            out,
            applied,
        };
        let walked = side
            .detector
            .scan(&view, state, eof, &mut |hit| -> Result<(), Blocked> {
                let start = if hit.fresh {
                    view.orig_start(hit.start)
                } else {
                    0
                };
                let end = if hit.partial && view.splits_char(hit.end) {
                    view.orig_start(hit.end)
                } else {
                    view.orig_end(hit.end)
                };
                if start > last {
                    sink.out.push_str(&view.orig[last..start]);
                }
                redactor.apply(side, &view, hit, start..end, &mut sink)?;
                last = last.max(end);
                Ok(())
            });
        let stop = match walked {
            Ok(stop) => stop,
            Err(b) => {
                *blocked = Some(b.clone());
                pending.clear();
                norm.clear();
                return Err(b);
            }
        };
        let (keep_from, cut) = cut_point(&view, stop);
        if cut > last {
            sink.out.push_str(&view.orig[last..cut]);
        }
        let pos = state.pos;
        norm.drain(keep_from, cut);
        state.pos = pos.saturating_sub(keep_from) + norm.ctx;
        pending.drain(..cut);
        Ok(())
    }
}

/// Where to cut the buffers after a walk stopped: the normalized offset to keep from and
/// the original offset to write out up to. A cut never splits an original character; an
/// open secret's swallowed part ends at its last character, so invisible characters after
/// it stay until the secret's end is known.
fn cut_point(view: &crate::normalize::View<'_>, stop: Stop) -> (usize, usize) {
    let at = stop.at;
    if view.splits_char(at) {
        let from = view.char_start(at);
        return (from, view.orig_start(at));
    }
    if stop.in_open {
        let cut = if at > view.ctx { view.orig_end(at) } else { 0 };
        (at, cut)
    } else {
        (at, view.orig_start(at))
    }
}
