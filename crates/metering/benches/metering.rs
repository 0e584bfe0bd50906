//! Metering on the stream path: counting the tokens of deltas as they arrive (the
//! fallback when a provider reports no usage), and pricing a finished answer.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_config::PriceConfig;
use tollgate_core::Usage;
use tollgate_metering::{estimate_tokens, warm_up, ModelPrice, TokenCounter};

/// Deltas per benchmark stream.
const DELTAS: usize = 512;

fn deltas() -> Vec<String> {
    let words = [
        "The ",
        "gateway ",
        "meters ",
        "every ",
        "token, ",
        "also ",
        "on ",
        "streams ",
        "that ",
        "end ",
        "early; ",
        "prices ",
        "come ",
        "from ",
        "config.\n",
    ];
    (0..DELTAS)
        .map(|i| words[i % words.len()].to_owned())
        .collect()
}

fn metering(c: &mut Criterion) {
    warm_up();
    let deltas = deltas();
    let bytes: usize = deltas.iter().map(String::len).sum();
    let mut group = c.benchmark_group("metering");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("token_counter_deltas", |b| {
        b.iter(|| {
            let mut counter = TokenCounter::new();
            for d in &deltas {
                counter.push(black_box(d));
            }
            black_box(counter.total())
        })
    });
    let whole = deltas.concat();
    group.bench_function("estimate_whole_text", |b| {
        b.iter(|| black_box(estimate_tokens(black_box(&whole))))
    });
    group.finish();

    let price = ModelPrice::from_config(
        "gpt-4o-mini",
        &PriceConfig {
            input: 0.15,
            output: 0.60,
            cached_input: Some(0.075),
        },
    );
    if let Ok(price) = price {
        let usage = Usage {
            input_tokens: 1234,
            output_tokens: 567,
            cached_input_tokens: 200,
            reasoning_tokens: 0,
            estimated: false,
        };
        c.bench_function("metering/cost", |b| {
            b.iter(|| black_box(price.cost(black_box(&usage))))
        });
    }
}

criterion_group!(benches, metering);
criterion_main!(benches);
