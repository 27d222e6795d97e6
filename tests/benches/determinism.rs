//! The cost of determinism, in one process:
//!
//! 1. **Recording.** Throughput of the payments pipeline (generator ->
//!    payments-dedup -> null sink, checkpoints off) with recorded inputs
//!    (the default: recorded clocks and random streams in every instance,
//!    each batch's time set and its read noted) against the same pipeline
//!    with the host's clocks and entropy and nothing noted
//!    (`weir::operator::recorded::set_unrecorded_for_benchmarks`), rounds
//!    alternating so both see the same machine.
//! 2. **Verification.** The payments pipeline with checkpoints into a
//!    temporary store and a parts sink, then `weir::verify::verify` of
//!    every epoch: per epoch, the replay's time (restore + replay + compare)
//!    against the epoch's share of the original run's time.
//!
//! Run: `cargo bench -p weir-tests --bench determinism` (after
//! scripts/setup). Environment: BENCH_RECORDS (default 2,000,000),
//! BENCH_ROUNDS (default 5; the best round of each side is reported, and
//! the spread), BENCH_VERIFY_RECORDS (default 400,000),
//! BENCH_VERIFY_EPOCHS (default 10).
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use weir::operator::ComponentCache;
use weir::operator::recorded::set_unrecorded_for_benchmarks;
use weir::verify::{DeepOutcome, Scope};
use weir::{Pipeline, RunOptions};
use weir_tests::env_or;

fn options(from_scratch: bool) -> RunOptions {
    RunOptions {
        cache: ComponentCache::new(ComponentCache::default_dir()),
        stop: Default::default(),
        from_scratch,
    }
}

fn payments_toml(records: u64, tail: &str) -> String {
    format!(
        "name = \"bench\"\n[source]\nkind = \"generator\"\nprofile = \"payments\"\nrecords = {records}\nseed = 1\n\
         [[operators]]\nname = \"dedup\"\ncomponent = {:?}\n[operators.config]\nttl_minutes = 60\n\
         [batch]\nmax_records = 1024\n{tail}",
        weir_tests::operator("payments-dedup").display().to_string()
    )
}

fn throughput(records: u64, recorded: bool) -> f64 {
    set_unrecorded_for_benchmarks(!recorded);
    let toml = payments_toml(
        records,
        "[sinks.main]\nkind = \"null\"\n[checkpoint]\nenabled = false\n",
    );
    let pipeline = Pipeline::parse(Path::new("bench.toml"), &toml).unwrap();
    let summary = weir::run(&pipeline, &options(true)).unwrap();
    set_unrecorded_for_benchmarks(false);
    records as f64 / summary.elapsed.as_secs_f64()
}

fn recording(records: u64, rounds: usize) {
    // Warm the component cache and the page cache.
    throughput(records / 10, true);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which side goes first.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for recorded in order {
            let rate = throughput(records, recorded);
            if recorded {
                on.push(rate);
            } else {
                off.push(rate);
            }
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let worst = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let median = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    println!(
        "payments, {records} records, batches of 1024, checkpoints off, {rounds} rounds each (alternating):"
    );
    println!(
        "  recorded inputs:   best {:>9.0} records/s (worst {:>9.0})",
        best(&on),
        worst(&on)
    );
    println!(
        "  not recorded:      best {:>9.0} records/s (worst {:>9.0})",
        best(&off),
        worst(&off)
    );
    println!(
        "  recorded / not recorded: best rounds {:.3}, medians {:.3}",
        best(&on) / best(&off),
        median(&on) / median(&off)
    );
    let pairs: Vec<String> = on
        .iter()
        .zip(&off)
        .map(|(a, b)| format!("{:.2}", a / b))
        .collect();
    println!("  per round: {}", pairs.join(", "));
}

fn verification(records: u64, epochs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let toml = payments_toml(
        records,
        &format!(
            "[sinks.main]\nkind = \"parts\"\ndir = \"out\"\nextension = \"csv\"\n\
             [checkpoint]\ninterval_records = {}\ninterval_ms = 0\nkeep = 1000\n",
            records / epochs
        ),
    );
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, &toml).unwrap();
    let pipeline = Pipeline::load(&file).unwrap();
    let summary = weir::run(&pipeline, &options(true)).unwrap();
    let committed = summary.checkpoints.as_ref().unwrap().committed;
    assert!(committed > 0, "no checkpoint committed: {summary}");
    let per_epoch = summary.elapsed / committed as u32;
    let started = Instant::now();
    let report = weir::verify::verify(
        &pipeline,
        &ComponentCache::new(ComponentCache::default_dir()),
        "main",
        Scope::All,
    )
    .unwrap();
    let total = started.elapsed();
    assert!(report.ok, "{report}");
    let replays: Vec<Duration> = report
        .epochs
        .iter()
        .filter(|e| e.verdict == DeepOutcome::Identical)
        .map(|e| Duration::from_millis(e.replay_ms))
        .collect();
    assert_eq!(replays.len() as u64, committed, "{report}");
    let mean = replays.iter().sum::<Duration>() / replays.len() as u32;
    let max = replays.iter().max().copied().unwrap_or_default();
    println!(
        "verify: payments, {records} records in {committed} epochs (parts sink, checkpoints every {} records):",
        records / epochs
    );
    println!(
        "  original run: {:.2} s, {:.1} ms per epoch",
        summary.elapsed.as_secs_f64(),
        per_epoch.as_secs_f64() * 1e3
    );
    println!(
        "  verify --all: {:.2} s; per epoch mean {} ms, max {} ms (restore + replay + compare)",
        total.as_secs_f64(),
        mean.as_millis(),
        max.as_millis()
    );
    println!(
        "  verify per epoch / original per epoch: {:.2}",
        mean.as_secs_f64() / per_epoch.as_secs_f64()
    );
}

fn main() {
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "recording,verify".into());
    if parts.contains("recording") {
        recording(
            env_or("BENCH_RECORDS", 2_000_000),
            env_or("BENCH_ROUNDS", 5),
        );
    }
    if parts.contains("verify") {
        verification(
            env_or("BENCH_VERIFY_RECORDS", 400_000),
            env_or("BENCH_VERIFY_EPOCHS", 10),
        );
    }
}
