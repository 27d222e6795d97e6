//! The cost of determinism, in one process:
//!
//! 1. **Recording.** Throughput of the payments pipeline (generator ->
//!    payments-dedup -> null sink, batches of 1024, checkpoints off) with
//!    recorded inputs (the default: every instance's WASI clocks and random
//!    streams are weir's recorded ones) against the same pipeline with the
//!    host's clocks and entropy
//!    (`weir::operator::recorded::set_unrecorded_for_benchmarks`). The
//!    machine's speed changes by far more than the effect, in phases of
//!    one to three seconds (on the shared 2-core VM this was written on,
//!    runs of one side took 110 to 210 ms with nothing else running in the
//!    VM, and more with other processes), so the two sides are run as many
//!    short *pairs* (one run each, back to back, the order alternating pair
//!    by pair), after one discarded warm-up run per side; what is reported is
//!    the median of the per-pair ratios, with their interquartile range and
//!    a distribution-free 95% confidence interval of that median. Each
//!    ratio is taken twice: from the pipeline's own elapsed time (wall
//!    clock, the read-process-write loop) and from the CPU time of the
//!    thread that runs the task (Linux `/proc/thread-self/sched`, exact
//!    after a yield; over the whole `weir::run` call, less the shortest time
//!    any run spent outside the loop, in instantiation and teardown), which
//!    leaves out time spent waiting for a core while other processes run
//!    (not a core made slower by them).
//! 2. **Verification.** The payments pipeline with checkpoints into a
//!    temporary store and a parts sink, then `weir::verify::verify` of
//!    every epoch: per epoch, the replay's time (restore + replay + compare)
//!    against the epoch's share of the original run's time.
//! 3. **One side alone** (`recorded-only`, `unrecorded-only`; not in the
//!    default parts): one run, for counters outside the process that the
//!    machine's load does not change, e.g. instructions per record with
//!    `valgrind --tool=callgrind --toggle-collect='weir::pipeline::task::Task::run'`
//!    (the task's loop only), or `perf stat -e instructions:u` where the
//!    machine has hardware counters.
//!
//! Run: `cargo bench -p weir-tests --bench determinism` (after
//! scripts/setup). Environment: BENCH_PARTS (comma-separated, default
//! `recording,verify`), BENCH_RECORDS (records per run of the recording
//! parts, default 150,000), BENCH_PAIRS (default 200; about a minute on a
//! quiet machine), BENCH_VERBOSE=1 (every run and every pair's ratio),
//! BENCH_VERIFY_RECORDS (default 400,000), BENCH_VERIFY_EPOCHS (default
//! 10).
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

/// One run of the recording benchmark.
struct Run {
    recorded: bool,
    /// The pipeline's own elapsed time (the read-process-write loop).
    wall: Duration,
    /// CPU time of this thread over the whole `weir::run` call, where the
    /// kernel tells it.
    cpu: Option<Duration>,
    /// Wall time of the call outside the loop.
    outside: Duration,
    /// Times the thread was preempted during the run.
    preempted: Option<u64>,
}

fn run_once(records: u64, recorded: bool) -> Run {
    set_unrecorded_for_benchmarks(!recorded);
    let toml = payments_toml(
        records,
        "[sinks.main]\nkind = \"null\"\n[checkpoint]\nenabled = false\n",
    );
    let pipeline = Pipeline::parse(Path::new("bench.toml"), &toml).unwrap();
    let before = ThreadSched::now();
    let call = Instant::now();
    let summary = weir::run(&pipeline, &options(true)).unwrap();
    let call = call.elapsed();
    let after = ThreadSched::now();
    set_unrecorded_for_benchmarks(false);
    assert_eq!(summary.records_in, records, "{summary}");
    let outside = call.saturating_sub(summary.elapsed);
    let (cpu, preempted) = match (before, after) {
        (Some(b), Some(a)) => (
            Some(a.cpu.saturating_sub(b.cpu)),
            Some(a.preempted.saturating_sub(b.preempted)),
        ),
        _ => (None, None),
    };
    Run {
        recorded,
        wall: summary.elapsed,
        cpu,
        outside,
        preempted,
    }
}

/// This thread's scheduler statistics (Linux, kernels with
/// `/proc/<pid>/task/<tid>/sched`).
#[derive(Clone, Copy)]
struct ThreadSched {
    /// `se.sum_exec_runtime`: time on a CPU, nanosecond resolution.
    cpu: Duration,
    /// `nr_involuntary_switches`.
    preempted: u64,
}

impl ThreadSched {
    fn now() -> Option<ThreadSched> {
        // The kernel brings a running thread's `sum_exec_runtime` up to date
        // only at a tick (4 ms here) or when the thread leaves the CPU:
        // yielding makes it exact.
        std::thread::yield_now();
        let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let field = |name: &str| -> Option<f64> {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().parse().ok())?
            })
        };
        Some(ThreadSched {
            cpu: Duration::from_secs_f64(field("se.sum_exec_runtime")? / 1e3),
            preempted: field("nr_involuntary_switches").unwrap_or(0.0) as u64,
        })
    }
}

/// CPU time of the whole process (every thread, also ended ones), in the
/// kernel's 10 ms ticks: checks that the task's thread did the work.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // utime and stime, fields 14 and 15 of stat(5) (the 12th and 13th after
    // the command).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The `q` quantile of `sorted` (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

/// A 95% confidence interval of the median of `sorted` that assumes
/// nothing about the distribution: order statistics k and n + 1 - k, for
/// the largest k with P(Binomial(n, 1/2) < k) <= 2.5%. `None` below 6
/// values.
fn median_interval(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    // `below` is P(X < k), `ln_pmf` ln P(X = k) (logarithms: 2^-n
    // underflows from n = 1075 on); grow k while P(X < k + 1) <= 2.5%.
    let (mut below, mut ln_pmf, mut k) = (0.0, n as f64 * 0.5f64.ln(), 0);
    while k < n / 2 && below + ln_pmf.exp() <= 0.025 {
        below += ln_pmf.exp();
        ln_pmf += ((n - k) as f64 / (k + 1) as f64).ln();
        k += 1;
    }
    (k > 0).then(|| (sorted[k - 1], sorted[n - k]))
}

/// Median, quartiles and confidence interval of the median of `values`.
struct Spread {
    median: f64,
    quartiles: (f64, f64),
    interval: Option<(f64, f64)>,
    best: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: quantile(&sorted, 0.5),
            quartiles: (quantile(&sorted, 0.25), quantile(&sorted, 0.75)),
            interval: median_interval(&sorted),
            best: sorted[sorted.len() - 1],
        }
    }

    fn interval(&self, digits: usize) -> String {
        self.interval.map_or_else(
            || "n/a (too few pairs)".into(),
            |(low, high)| format!("{low:.digits$}..{high:.digits$}"),
        )
    }
}

fn recording(records: u64, pairs: usize, verbose: bool) {
    if std::env::var_os("BENCH_ROUNDS").is_some() {
        println!("(BENCH_ROUNDS is not read any more: the recording part runs BENCH_PAIRS pairs)");
    }
    let pairs = pairs.max(1);
    let load_before = load_average();
    // Warm-up, discarded: the component cache, the page cache, the
    // allocator, and each side's first instantiation.
    run_once(records, true);
    run_once(records, false);
    let (cpu_before, started) = (process_cpu(), Instant::now());
    let mut runs = Vec::with_capacity(2 * pairs);
    for pair in 0..pairs {
        // ABBA: a drift of the machine's speed within a pair favours each
        // side equally often.
        let first = pair % 2 == 0;
        for recorded in [first, !first] {
            let run = run_once(records, recorded);
            if verbose {
                println!(
                    "  pair {pair:3} {:<12} {:7.1} ms wall (+{:4.1} outside the loop){}",
                    if recorded { "recorded" } else { "not recorded" },
                    run.wall.as_secs_f64() * 1e3,
                    run.outside.as_secs_f64() * 1e3,
                    run.cpu.map_or_else(String::new, |cpu| format!(
                        ", {:7.1} ms cpu (whole call), preempted {} times",
                        cpu.as_secs_f64() * 1e3,
                        run.preempted.unwrap_or(0)
                    ))
                );
            }
            runs.push(run);
        }
    }
    let total = started.elapsed();
    let process = cpu_before.zip(process_cpu()).map(|(b, a)| a - b);
    let side =
        |recorded: bool| -> Vec<&Run> { runs.iter().filter(|r| r.recorded == recorded).collect() };
    let (on, off) = (side(true), side(false));
    let rate = |r: &Run| records as f64 / r.wall.as_secs_f64();
    // The CPU time of a loop: the call's, less what instantiation and
    // teardown take at least (CPU-bound work, so the shortest time outside
    // the loop of all runs; the same for both sides).
    let setup = runs.iter().map(|r| r.outside).min().unwrap_or_default();
    let cpu_rate = |r: &Run| {
        r.cpu
            .map(|cpu| records as f64 / cpu.saturating_sub(setup).as_secs_f64())
    };
    // Per pair: (recorded run, not recorded run).
    let pairs_of: Vec<(&Run, &Run)> = runs
        .chunks(2)
        .map(|p| {
            if p[0].recorded {
                (&p[0], &p[1])
            } else {
                (&p[1], &p[0])
            }
        })
        .collect();
    let wall_ratios: Vec<f64> = pairs_of.iter().map(|(a, b)| rate(a) / rate(b)).collect();
    let cpu_ratios: Option<Vec<f64>> = pairs_of
        .iter()
        .map(|(a, b)| Some(cpu_rate(a)? / cpu_rate(b)?))
        .collect();

    println!(
        "recording: payments, {pairs} pairs of runs of {records} records (generator -> payments-dedup -> null sink, \
         batches of 1024, checkpoints off), one run per side per pair, order alternating"
    );
    println!(
        "  {:.0} s; load average (1, 5, 15 min) {load_before} before, {} after",
        total.as_secs_f64(),
        load_average()
    );
    println!(
        "  throughput, records/s      median   (25%..75% of runs)       best   \
         (each side's runs pooled: this mixes the machine's slow and fast phases; compare by the pairs)"
    );
    for (name, side) in [("recorded inputs", &on), ("not recorded", &off)] {
        let wall = Spread::of(&side.iter().map(|r| rate(r)).collect::<Vec<_>>());
        println!(
            "    {name:<16} wall {:>11.0}   ({:>9.0}..{:<9.0})  {:>9.0}",
            wall.median, wall.quartiles.0, wall.quartiles.1, wall.best
        );
        let cpu: Option<Vec<f64>> = side.iter().map(|r| cpu_rate(r)).collect();
        if let Some(cpu) = cpu {
            let cpu = Spread::of(&cpu);
            println!(
                "    {:<16} cpu  {:>11.0}   ({:>9.0}..{:<9.0})  {:>9.0}   ({:.0} ns of CPU per record)",
                "",
                cpu.median,
                cpu.quartiles.0,
                cpu.quartiles.1,
                cpu.best,
                1e9 / cpu.median
            );
        }
    }
    println!("  recorded / not recorded throughput, per pair (above 1: recording is faster):");
    let print_ratios = |name: &str, ratios: &[f64]| {
        let s = Spread::of(ratios);
        println!(
            "    {name:<5} median {:.3}, 25%..75% of pairs {:.3}..{:.3}, 95% confidence interval of the median {}",
            s.median,
            s.quartiles.0,
            s.quartiles.1,
            s.interval(3)
        );
        s
    };
    let wall = print_ratios("wall", &wall_ratios);
    let cpu = cpu_ratios.as_deref().map(|r| print_ratios("cpu", r));
    let within = |s: &Spread| {
        s.interval
            .is_some_and(|(low, high)| low >= 0.97 && high <= 1.03)
    };
    println!(
        "  target (at most 3% apart): {}",
        match (within(&wall), cpu.as_ref().map(within)) {
            (true, None | Some(true)) => "met: the confidence interval lies within 0.970..1.030",
            (false, Some(true)) =>
                "met on CPU time (its confidence interval lies within 0.970..1.030), not shown on wall time",
            (true, Some(false)) =>
                "met on wall time (its confidence interval lies within 0.970..1.030), not shown on CPU time",
            (false, _) => "not shown: the confidence interval reaches outside 0.970..1.030",
        }
    );
    if cpu.is_none() {
        println!("  (no CPU times: /proc/thread-self/sched is not readable here)");
    } else if let Some(process) = process {
        let thread: Duration = runs.iter().filter_map(|r| r.cpu).sum();
        println!(
            "  CPU of the measured runs: the task's thread {:.1} s, the whole process {:.1} s (10 ms ticks); \
             {:.1} ms per run (instantiation, teardown) left out of the CPU per record",
            thread.as_secs_f64(),
            process.as_secs_f64(),
            setup.as_secs_f64() * 1e3
        );
    }
    if verbose {
        let list = |ratios: &[f64]| {
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  per pair, wall: {}", list(&wall_ratios));
        if let Some(ratios) = &cpu_ratios {
            println!("  per pair, cpu:  {}", list(ratios));
        }
    }
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

/// One run of one side, for counters outside the process (see the module
/// docs).
fn one_side(records: u64, recorded: bool) {
    let run = run_once(records, recorded);
    println!(
        "{}: payments, {records} records, {:.0} records/s{}",
        if recorded {
            "recorded inputs"
        } else {
            "not recorded"
        },
        records as f64 / run.wall.as_secs_f64(),
        run.cpu.map_or_else(String::new, |cpu| format!(
            ", {:.0} ns of CPU per record",
            cpu.as_secs_f64() * 1e9 / records as f64
        ))
    );
}

fn main() {
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "recording,verify".into());
    let records = env_or("BENCH_RECORDS", 150_000);
    for part in parts.split(',').map(str::trim) {
        match part {
            "recording" => recording(
                records,
                env_or("BENCH_PAIRS", 200),
                std::env::var("BENCH_VERBOSE").is_ok_and(|v| v == "1"),
            ),
            "recorded-only" => one_side(records, true),
            "unrecorded-only" => one_side(records, false),
            "verify" => verification(
                env_or("BENCH_VERIFY_RECORDS", 400_000),
                env_or("BENCH_VERIFY_EPOCHS", 10),
            ),
            other => panic!(
                "BENCH_PARTS: unknown part {other:?} (recording, verify, recorded-only, unrecorded-only)"
            ),
        }
    }
}
