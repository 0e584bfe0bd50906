//! Stream translation, event by event: each upstream event (an SSE event, or a decoded
//! AWS event-stream message for Bedrock) is read into canonical events, which are written
//! at once in the client's dialect. Nothing buffers the stream: the state kept is a few
//! flags, the ids, and one small entry per tool call.
//!
//! Each step reports whether the event carried generated output, so the gateway can tell
//! a stream that failed before any output (and may fail over) from one that failed after.

use tollgate_core::Usage;
use tollgate_sse::eventstream::Message;
use tollgate_sse::SseEvent;

use crate::anthropic::stream::{write_error, EventReader, EventWriter};
use crate::bedrock::stream::FrameReader;
use crate::canonical::{StreamEvent, UsageTracker};
use crate::gemini::stream::ChunkReader as GeminiReader;
use crate::openai::stream::{ChunkReader, ChunkWriter};
use crate::upstream_error::ErrorType;
use crate::{Dialect, IngressRequest, ProviderKind, ResponseMeta, UpstreamError};

/// Most tool calls one stream may announce. Each costs the translator a few bytes of state;
/// real answers make a handful, and the cap keeps a misbehaving upstream from growing that
/// state without end (the stream fails instead).
pub const MAX_TOOL_CALLS_PER_STREAM: usize = 512;

/// The error of a stream that announced more than [`MAX_TOOL_CALLS_PER_STREAM`] calls.
pub(crate) fn too_many_tool_calls() -> UpstreamError {
    UpstreamError::new(
        ErrorType::Server,
        200,
        &format!("the stream announced more than {MAX_TOOL_CALLS_PER_STREAM} tool calls"),
    )
}

/// What one upstream event meant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStep {
    /// The event carried generated content (text or tool-call pieces), not only lifecycle
    /// (a start, a role, a ping, usage). Until a step has it, an error can still fail over.
    pub has_output: bool,
    /// The upstream's end-of-answer marker arrived (`[DONE]`, `message_stop`, Gemini's
    /// finish reason, Bedrock's `metadata`); a stream that ends without one was cut.
    pub done: bool,
    /// The upstream sent an error. Nothing of the event was written; the gateway decides
    /// between failing over and [`StreamTranslator::fail`].
    pub error: Option<UpstreamError>,
}

#[derive(Debug)]
enum Reader {
    OpenAi(ChunkReader),
    Anthropic(EventReader),
    Gemini(GeminiReader),
    Bedrock(FrameReader),
}

#[derive(Debug)]
enum Writer {
    /// The upstream speaks the client's dialect: events are relayed as they came, except
    /// the usage-only chunk of an OpenAI stream whose client did not ask for it.
    Passthrough {
        dialect: Dialect,
        strip_usage: bool,
        closed: bool,
    },
    OpenAi(ChunkWriter),
    Anthropic(EventWriter),
}

/// Which generated text a [`TextFilter`] is handed: the answer's text, or the arguments of
/// one tool call (by the source's index). Each part is its own text: an entity never spans
/// two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPart {
    Answer,
    ToolArguments(u64),
}

/// Rewrites generated text on its way to the client (redaction, restoring pseudonyms),
/// delta by delta. A filter may hold back a suffix of a part until it knows what it is;
/// the translator asks for it back when the part ends (a tool call starts, the answer
/// stops, the stream ends), so nothing held back is lost and framing stays in order.
pub trait TextFilter: Send {
    /// Appends to `out` what the client gets of `delta`. An error ends the stream with it
    /// (before any output the gateway answers it as a refusal).
    fn push(&mut self, part: TextPart, delta: &str, out: &mut String) -> Result<(), UpstreamError>;

    /// `part` ended: appends everything still held back for it. A later delta of the same
    /// part starts it afresh.
    fn finish(&mut self, part: TextPart, out: &mut String) -> Result<(), UpstreamError>;
}

/// A [`TextFilter`] with the parts it holds text of.
struct Filter {
    filter: Box<dyn TextFilter>,
    /// Parts pushed since they last finished, in the order they started.
    open: Vec<TextPart>,
    /// Reused for each filtered delta.
    scratch: String,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("open", &self.open).finish()
    }
}

/// Translates one upstream stream for one client.
#[derive(Debug)]
pub struct StreamTranslator {
    reader: Reader,
    writer: Writer,
    usage: UsageTracker,
    /// Tool calls announced so far, by the source's index.
    tools: Vec<u64>,
    events: Vec<StreamEvent>,
    /// Generated text since the last [`StreamTranslator::drain_output_text`].
    output_text: String,
    filter: Option<Filter>,
}

impl StreamTranslator {
    /// A translator for a stream from a `kind` provider to the client of `ingress`.
    pub fn new(kind: ProviderKind, ingress: &IngressRequest, meta: &ResponseMeta<'_>) -> Self {
        Self::build(kind, ingress, meta, None)
    }

    /// A translator whose generated text passes through `filter`. Events are always
    /// re-written from their canonical form, even between equal dialects, since the
    /// upstream's own bytes carry the unfiltered text.
    pub fn filtered(
        kind: ProviderKind,
        ingress: &IngressRequest,
        meta: &ResponseMeta<'_>,
        filter: Box<dyn TextFilter>,
    ) -> Self {
        Self::build(kind, ingress, meta, Some(filter))
    }

    fn build(
        kind: ProviderKind,
        ingress: &IngressRequest,
        meta: &ResponseMeta<'_>,
        filter: Option<Box<dyn TextFilter>>,
    ) -> Self {
        let dialect = ingress.dialect();
        let reader = match kind {
            ProviderKind::OpenAi | ProviderKind::AzureOpenAi => {
                Reader::OpenAi(ChunkReader::default())
            }
            ProviderKind::Anthropic => Reader::Anthropic(EventReader::default()),
            ProviderKind::Gemini => Reader::Gemini(GeminiReader::default()),
            ProviderKind::Bedrock => Reader::Bedrock(FrameReader::default()),
        };
        let id = meta.fallback_id(dialect);
        let model = meta.model.to_owned();
        let writer = if filter.is_none() && kind.native_dialect() == Some(dialect) {
            Writer::Passthrough {
                dialect,
                strip_usage: !ingress.include_usage(),
                closed: false,
            }
        } else {
            match dialect {
                Dialect::OpenAi => Writer::OpenAi(ChunkWriter::new(
                    id,
                    model,
                    meta.created,
                    ingress.include_usage(),
                )),
                Dialect::Anthropic => Writer::Anthropic(EventWriter::new(id, model)),
            }
        };
        Self {
            reader,
            writer,
            usage: UsageTracker::default(),
            tools: Vec::new(),
            events: Vec::new(),
            output_text: String::new(),
            filter: filter.map(|filter| Filter {
                filter,
                open: Vec::new(),
                scratch: String::new(),
            }),
        }
    }

    /// Reads one SSE event of an OpenAI, Azure, Anthropic or Gemini upstream and appends
    /// what the client gets to `out`. A Bedrock translator ignores SSE events.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) -> StreamStep {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let usage_only = match &mut self.reader {
            Reader::OpenAi(reader) => reader.read(&event.data, &mut events),
            Reader::Anthropic(reader) => {
                reader.read(event, &mut events);
                false
            }
            Reader::Gemini(reader) => {
                reader.read(&event.data, &mut events);
                false
            }
            Reader::Bedrock(_) => false,
        };
        let step = self.apply(&events, out);
        if step.error.is_none() {
            if let Writer::Passthrough {
                strip_usage,
                closed: false,
                ..
            } = self.writer
            {
                if !(usage_only && strip_usage) {
                    tollgate_sse::encode(event, out);
                }
            }
        }
        self.events = events;
        step
    }

    /// Reads one decoded AWS event-stream message of a Bedrock `converse-stream` (its
    /// string headers and its payload). Other translators ignore frames.
    pub fn on_frame(
        &mut self,
        headers: &[(String, String)],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> StreamStep {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        self.read_frame(header, payload, out)
    }

    /// [`StreamTranslator::on_frame`] for a message of the event-stream decoder.
    pub fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) -> StreamStep {
        self.read_frame(|name| message.header_str(name), &message.payload, out)
    }

    fn read_frame<'h>(
        &mut self,
        header: impl Fn(&str) -> Option<&'h str>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> StreamStep {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        if let Reader::Bedrock(reader) = &mut self.reader {
            reader.read(header, payload, &mut events);
        }
        let step = self.apply(&events, out);
        self.events = events;
        step
    }

    /// Writes the closing events in the client's dialect if the upstream's end marker did
    /// not already (OpenAI: finish chunk, usage chunk if asked for, `[DONE]`; Anthropic:
    /// `message_delta` with the usage, `message_stop`). A relayed stream gets nothing: its
    /// upstream sent its own.
    /// A filter that refuses the held-back tail ends the stream with its error instead.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Err(error) = self.finish_parts(out) {
            self.fail(&error, out);
            return;
        }
        let usage = self.usage.usage();
        match &mut self.writer {
            Writer::Passthrough { .. } => {}
            Writer::OpenAi(writer) => writer.close(usage, out),
            Writer::Anthropic(writer) => writer.close(usage, out),
        }
    }

    /// Ends a stream that broke after it started with an error event in the client's
    /// dialect; nothing is written after it.
    pub fn fail(&mut self, error: &UpstreamError, out: &mut Vec<u8>) {
        match &mut self.writer {
            Writer::Passthrough {
                dialect, closed, ..
            } => {
                if !*closed {
                    *closed = true;
                    match dialect {
                        Dialect::OpenAi => {
                            tollgate_sse::encode_data(&error.openai_value().to_string(), out)
                        }
                        Dialect::Anthropic => write_error(error, out),
                    }
                }
            }
            Writer::OpenAi(writer) => writer.fail(error, out),
            Writer::Anthropic(writer) => writer.fail(error, out),
        }
    }

    /// The usage the provider reported so far, each count once (`None` before any).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }

    /// Hands `sink` the generated text (answer text and tool-call arguments) read since the
    /// last call, so the caller can count output tokens when the provider reports none.
    /// Holds at most what the events fed since the last call carried; the buffer is reused.
    pub fn drain_output_text(&mut self, sink: impl FnOnce(&str)) {
        sink(&self.output_text);
        self.output_text.clear();
    }

    /// True when upstream events are relayed as they came (same dialect on both sides).
    pub fn is_passthrough(&self) -> bool {
        matches!(self.writer, Writer::Passthrough { .. })
    }

    fn apply(&mut self, events: &[StreamEvent], out: &mut Vec<u8>) -> StreamStep {
        let mut step = StreamStep::default();
        for event in events {
            match event {
                StreamEvent::TextDelta(text) => self.output_text.push_str(text),
                StreamEvent::ToolCallDelta { arguments, .. } => {
                    self.output_text.push_str(arguments)
                }
                _ => {}
            }
            match event {
                StreamEvent::Error(error) => {
                    step.error = Some(error.clone());
                    return step;
                }
                StreamEvent::Usage(report) => self.usage.apply(report),
                StreamEvent::End => step.done = true,
                StreamEvent::ToolCallStart { index, .. } if !self.tools.contains(index) => {
                    if self.tools.len() >= MAX_TOOL_CALLS_PER_STREAM {
                        step.error = Some(too_many_tool_calls());
                        return step;
                    }
                    self.tools.push(*index);
                }
                StreamEvent::ToolCallDelta { index, .. } if !self.tools.contains(index) => {
                    // Arguments for a call never announced: announce it without a name so
                    // the client still receives them.
                    if self.tools.len() >= MAX_TOOL_CALLS_PER_STREAM {
                        step.error = Some(too_many_tool_calls());
                        return step;
                    }
                    self.tools.push(*index);
                    self.write(
                        &StreamEvent::ToolCallStart {
                            index: *index,
                            id: format!("call_{index}"),
                            name: String::new(),
                        },
                        out,
                    );
                }
                _ => {}
            }
            step.has_output |= event.has_output();
            if let Err(error) = self.write_filtered(event, out) {
                step.error = Some(error);
                return step;
            }
        }
        if step.done {
            self.finish(out);
        }
        step
    }

    /// Writes `event`, passing generated text through the filter when there is one.
    fn write_filtered(
        &mut self,
        event: &StreamEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), UpstreamError> {
        if self.filter.is_none() {
            self.write(event, out);
            return Ok(());
        }
        let (part, delta) = match event {
            StreamEvent::TextDelta(text) => (TextPart::Answer, text),
            StreamEvent::ToolCallDelta { index, arguments } => {
                (TextPart::ToolArguments(*index), arguments)
            }
            StreamEvent::ToolCallStart { .. } | StreamEvent::Stop { .. } | StreamEvent::End => {
                // What is held back belongs before the next block or the end.
                self.finish_parts(out)?;
                self.write(event, out);
                return Ok(());
            }
            _ => {
                self.write(event, out);
                return Ok(());
            }
        };
        let Some(filter) = &mut self.filter else {
            return Ok(());
        };
        let mut scratch = std::mem::take(&mut filter.scratch);
        scratch.clear();
        if !filter.open.contains(&part) {
            filter.open.push(part);
        }
        let pushed = filter.filter.push(part, delta, &mut scratch);
        if !scratch.is_empty() {
            self.write(&filtered_delta(part, &scratch), out);
        }
        if let Some(filter) = &mut self.filter {
            filter.scratch = scratch;
        }
        pushed
    }

    /// Ends every open part, writing what the filter held back.
    fn finish_parts(&mut self, out: &mut Vec<u8>) -> Result<(), UpstreamError> {
        let Some(filter) = &mut self.filter else {
            return Ok(());
        };
        let parts = std::mem::take(&mut filter.open);
        for part in parts {
            let Some(filter) = &mut self.filter else {
                break;
            };
            let mut scratch = std::mem::take(&mut filter.scratch);
            scratch.clear();
            let finished = filter.filter.finish(part, &mut scratch);
            if !scratch.is_empty() {
                self.write(&filtered_delta(part, &scratch), out);
            }
            if let Some(filter) = &mut self.filter {
                filter.scratch = scratch;
            }
            finished?;
        }
        Ok(())
    }

    fn write(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match &mut self.writer {
            Writer::Passthrough { .. } => {}
            Writer::OpenAi(writer) => writer.write(event, out),
            Writer::Anthropic(writer) => writer.write(event, self.usage.current(), out),
        }
    }
}

fn filtered_delta(part: TextPart, text: &str) -> StreamEvent {
    match part {
        TextPart::Answer => StreamEvent::TextDelta(text.to_owned()),
        TextPart::ToolArguments(index) => StreamEvent::ToolCallDelta {
            index,
            arguments: text.to_owned(),
        },
    }
}
