//! Throughput of the runtime: generator -> payments dedup -> null sink,
//! through the WebAssembly component (batches packed, as weir calls SDK
//! components, and through v0.1's `handler.process`) and through the same
//! Rust logic compiled natively into the host, in one process, one thread,
//! one run.
//!
//! Run: `cargo bench -p weir-tests --bench throughput` (after scripts/setup).
//! Options via environment: BENCH_RECORDS (default 2,000,000),
//! BENCH_BATCHES (default "64,256,1024,4096"), BENCH_ROUNDS (default 3; the
//! best round is reported, the spread too).
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use weir::operator::ComponentCache;
use weir::record::{Output, SourceBatch};
use weir::sink::{NullSink, Sink};
use weir::source::{GeneratorProfile, GeneratorSource, ReadOutcome, Source};
use weir::{Pipeline, RunOptions};
use weir_op_payments_dedup::PaymentsDedup;
use weir_tests::env_or;

fn wasm_run(records: u64, batch: usize, packed: bool) -> (Duration, u64) {
    if packed {
        // SAFETY: no other thread runs between two pipeline runs (the runs'
        // own threads have ended), so nothing reads the environment now.
        #[allow(unsafe_code)]
        unsafe {
            std::env::remove_var(weir::operator::NO_PACKED_BATCHES_ENV)
        };
    } else {
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(weir::operator::NO_PACKED_BATCHES_ENV, "1")
        };
    }
    let component = weir_tests::operator("payments-dedup");
    let toml = format!(
        "name = \"bench\"\n[source]\nkind = \"generator\"\nprofile = \"payments\"\nrecords = {records}\nseed = 1\n\
         [[operators]]\nname = \"dedup\"\ncomponent = {:?}\n[operators.config]\nttl_minutes = 60\n\
         [sinks.main]\nkind = \"null\"\n[batch]\nmax_records = {batch}\n\
         [checkpoint]\nenabled = false\n",
        component.display().to_string()
    );
    let pipeline = Pipeline::parse(Path::new("bench.toml"), &toml).unwrap();
    let options = RunOptions {
        cache: ComponentCache::new(ComponentCache::default_dir()),
        stop: Default::default(),
        from_scratch: true,
    };
    let summary = weir::run(&pipeline, &options).unwrap();
    (summary.elapsed, summary.records_out())
}

fn native_run(records: u64, batch: usize) -> (Duration, u64) {
    let started = Instant::now();
    let mut source = GeneratorSource::new(GeneratorProfile::Payments, 1, records);
    let mut dedup = PaymentsDedup::new(60 * 60_000);
    let mut sink = NullSink::new("main");
    let mut input = SourceBatch::default();
    let mut outputs = Vec::with_capacity(batch);
    loop {
        input.clear();
        let outcome = source.read(batch, &mut input).unwrap();
        for record in &input.records {
            dedup
                .process(&record.value, &mut |key, value| {
                    outputs.push(Output {
                        sink: String::new(),
                        key: Some(key.to_vec()),
                        value: value.to_vec(),
                        headers: Vec::new(),
                    })
                })
                .unwrap();
        }
        sink.write(&outputs).unwrap();
        outputs.clear();
        if outcome == ReadOutcome::End {
            break;
        }
    }
    (started.elapsed(), sink.written())
}

fn main() {
    let records: u64 = env_or("BENCH_RECORDS", 2_000_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
        .unwrap_or_else(|_| "64,256,1024,4096".into())
        .split(',')
        .map(|b| b.trim().parse().unwrap())
        .collect();
    println!(
        "payments dedup, {records} generated records (~95 bytes), best of {rounds} rounds, one thread"
    );
    println!(
        "| batch | wasm records/s | native records/s | wasm/native | wasm, unpacked records/s | unpacked/native | spreads (wasm, native, unpacked) |"
    );
    println!(
        "|------:|---------------:|-----------------:|------------:|-------------------------:|----------------:|------:|"
    );
    for &batch in &batches {
        let mut wasm = Vec::new();
        let mut native = Vec::new();
        let mut unpacked = Vec::new();
        for _ in 0..rounds {
            let (w, w_out) = wasm_run(records, batch, true);
            let (n, n_out) = native_run(records, batch);
            let (u, u_out) = wasm_run(records, batch, false);
            assert_eq!(
                (w_out, u_out),
                (n_out, n_out),
                "wasm and native produced different output counts"
            );
            wasm.push(records as f64 / w.as_secs_f64());
            native.push(records as f64 / n.as_secs_f64());
            unpacked.push(records as f64 / u.as_secs_f64());
        }
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let spread = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            format!("{:.0}%", (best(v) - lo) / best(v) * 100.0)
        };
        println!(
            "| {batch} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {}, {}, {} |",
            best(&wasm),
            best(&native),
            best(&wasm) / best(&native),
            best(&unpacked),
            best(&unpacked) / best(&native),
            spread(&wasm),
            spread(&native),
            spread(&unpacked)
        );
    }
}
