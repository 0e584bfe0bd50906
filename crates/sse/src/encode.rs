//! Framing events as SSE bytes.
//!
//! SSE cannot carry a CR inside a value: each line break in `data` (`\n`, `\r\n` or a lone
//! `\r`) becomes a new `data:` line, so data decodes back with its breaks as `\n`. `event` and
//! `id` are one line each: any CR or LF in them is written as a space, so a value can never
//! start a field or end the event on its own.

use memchr::memchr2;

use crate::SseEvent;

/// Appends `event` framed as SSE: `event:`, one `data:` line per line of data, `id:`,
/// `retry:`, then the blank line that dispatches it.
pub fn encode(event: &SseEvent, out: &mut Vec<u8>) {
    if let Some(name) = &event.event {
        write_one_line(out, b"event", name);
    }
    write_data(out, &event.data);
    if let Some(id) = &event.id {
        write_one_line(out, b"id", id);
    }
    if let Some(retry) = event.retry {
        write_field(out, b"retry", retry.to_string().as_bytes());
    }
    out.push(b'\n');
}

/// Appends a data-only event: `encode` of an event with just this data.
pub fn encode_data(data: &str, out: &mut Vec<u8>) {
    write_data(out, data);
    out.push(b'\n');
}

fn write_data(out: &mut Vec<u8>, data: &str) {
    let mut rest = data.as_bytes();
    while let Some(pos) = memchr2(b'\n', b'\r', rest) {
        let (line, end) = rest.split_at(pos);
        write_field(out, b"data", line);
        rest = match end {
            [b'\r', b'\n', after @ ..] | [_, after @ ..] => after,
            [] => &[],
        };
    }
    write_field(out, b"data", rest);
}

fn write_one_line(out: &mut Vec<u8>, name: &[u8], value: &str) {
    let start = out.len();
    write_field(out, name, value.as_bytes());
    let value_end = out.len() - 1;
    for byte in out
        .get_mut(start + name.len()..value_end)
        .unwrap_or_default()
    {
        if matches!(*byte, b'\r' | b'\n') {
            *byte = b' ';
        }
    }
}

/// `name: value\n`, or `name:\n` for an empty value (no trailing space).
fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 3);
    out.extend_from_slice(name);
    if value.is_empty() {
        out.extend_from_slice(b":\n");
    } else {
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(event: &SseEvent) -> String {
        let mut out = Vec::new();
        encode(event, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_written_in_order() {
        let event = SseEvent {
            event: Some("delta".into()),
            data: "{\"x\":1}".into(),
            id: Some("42".into()),
            retry: Some(3000),
        };
        assert_eq!(
            framed(&event),
            "event: delta\ndata: {\"x\":1}\nid: 42\nretry: 3000\n\n"
        );
    }

    #[test]
    fn each_data_line_gets_its_own_field() {
        let event = SseEvent {
            data: "a\nb\r\nc\rd\n".into(),
            ..SseEvent::default()
        };
        assert_eq!(
            framed(&event),
            "data: a\ndata: b\ndata: c\ndata: d\ndata:\n\n"
        );
    }

    #[test]
    fn empty_data_still_dispatches() {
        let mut out = Vec::new();
        encode_data("", &mut out);
        assert_eq!(out, b"data:\n\n");
    }

    #[test]
    fn line_breaks_cannot_escape_event_or_id() {
        let event = SseEvent {
            event: Some("a\r\ndata: injected".into()),
            data: "x".into(),
            id: Some("1\n\n".into()),
            retry: None,
        };
        assert_eq!(
            framed(&event),
            "event: a  data: injected\ndata: x\nid: 1  \n\n"
        );
    }

    #[test]
    fn encode_data_matches_encode() {
        let mut short = Vec::new();
        encode_data("a\nb", &mut short);
        let mut long = Vec::new();
        encode(
            &SseEvent {
                data: "a\nb".into(),
                ..SseEvent::default()
            },
            &mut long,
        );
        assert_eq!(short, long);
    }
}
