//! Streaming redaction throughput in bytes per second: answer text cut into small deltas
//! (as a model streams it), with and without personal data in it.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_redact::{RedactConfig, Redactor};

/// Bytes of text per benchmark stream.
const TEXT_BYTES: usize = 64 * 1024;
/// Bytes per delta; models stream a token or a few per event.
const DELTA_BYTES: usize = 16;

fn text(with_pii: bool) -> String {
    let clean = "The quarterly report shows steady growth across all regions, and the team \
                 expects the same next year. ";
    let pii = "Contact jane.doe@example.com or +44 20 7946 0958, card 4111 1111 1111 1111. ";
    let mut out = String::with_capacity(TEXT_BYTES + 256);
    let mut i = 0;
    while out.len() < TEXT_BYTES {
        out.push_str(if with_pii && i % 4 == 3 { pii } else { clean });
        i += 1;
    }
    out
}

fn deltas(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + DELTA_BYTES).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn redact(c: &mut Criterion) {
    let redactor = match Redactor::new(&RedactConfig::default()) {
        Ok(r) => Arc::new(r),
        Err(err) => {
            eprintln!("the default redaction config does not build: {err}");
            std::process::exit(2)
        }
    };
    let mut group = c.benchmark_group("redact_stream");
    for (name, with_pii) in [("clean_text", false), ("pii_every_4th_sentence", true)] {
        let text = text(with_pii);
        let pieces = deltas(&text);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            let mut out = String::with_capacity(TEXT_BYTES * 2);
            b.iter(|| {
                out.clear();
                let mut stream = redactor.stream("tenant");
                for piece in &pieces {
                    let _ = stream.push(black_box(piece), &mut out);
                }
                let _ = stream.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, redact);
criterion_main!(benches);
