//! SSE codec throughput on a chat stream as it arrives from the network: OpenAI-style
//! chunks cut into TCP-sized reads at arbitrary points, decoded and re-encoded.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_sse::{encode, SseDecoder, SseEvent};

/// Tokens in the benchmark stream.
const TOKENS: usize = 1000;
/// Bytes per network read; 1448 is a TCP segment's payload on a 1500-byte MTU.
const READ_BYTES: usize = 1448;

fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..TOKENS {
        out.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\
                 \"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\
                 \"finish_reason\":null}}]}}\n\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn decode(c: &mut Criterion) {
    let bytes = stream();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode_1448b_reads", |b| {
        let mut events = Vec::with_capacity(64);
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            let mut n = 0usize;
            for read in bytes.chunks(READ_BYTES) {
                let _ = decoder.feed(black_box(read), &mut events);
                n += events.len();
                events.clear();
            }
            black_box(n)
        })
    });
    group.bench_function("decode_8b_reads", |b| {
        let mut events = Vec::with_capacity(64);
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            let mut n = 0usize;
            for read in bytes.chunks(8) {
                let _ = decoder.feed(black_box(read), &mut events);
                n += events.len();
                events.clear();
            }
            black_box(n)
        })
    });
    let mut decoder = SseDecoder::new();
    let mut decoded: Vec<SseEvent> = Vec::new();
    let _ = decoder.feed(&bytes, &mut decoded);
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(bytes.len());
        b.iter(|| {
            out.clear();
            for event in &decoded {
                encode(black_box(event), &mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
