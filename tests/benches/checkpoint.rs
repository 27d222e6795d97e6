//! Checkpoint costs (issue 3, "Performance"), in one process, one run:
//!
//! 1. the barrier pause (`OperatorInstance::capture`, operators stopped) vs
//!    state size and the share of pages changed since the previous capture,
//!    with dirty-page tracking (the default) and without it (the same
//!    figures from a child process run with `WEIR_NO_DIRTY_TRACKING=1`,
//!    which the runtime reads when it creates an instance);
//! 2. bytes uploaded per checkpoint vs bytes changed, through the pipeline's
//!    own `Uploader` into a local store, cross-checked with the bytes that
//!    appeared on disk;
//! 3. restore time vs state size from that store: `recovery::load` (fetch
//!    and verify the pages) and `PreparedOperator::restore`;
//! 4. throughput of the payments pipeline (`weir::run`) with a checkpoint
//!    every second vs checkpoints off (and, to show what the file system
//!    costs, every second into `memory://`).
//!
//! State of a given size: the `faulty` operator with `ballast_mib = N`; a
//! given change: the record `touch:<permille>` (see operators/faulty).
//!
//! Run: `cargo bench -p weir-tests --bench checkpoint` (after scripts/setup).
//! Options via environment: BENCH_SIZES (MiB, default "16,64,256"),
//! BENCH_PERMILLE (default "10,100,1000"), BENCH_ROUNDS (captures per size
//! and share, default 5), BENCH_RESTORE_ROUNDS (default 3), BENCH_COMPARE
//! (0: skip the run without dirty-page tracking), BENCH_RECORDS
//! (throughput, default 5,000,000), BENCH_TP_ROUNDS (default 5),
//! BENCH_PARTS (default "state,throughput").
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::checkpoint::recovery;
use weir::checkpoint::uploader::{EpochUpload, UploadEvent, Uploader};
use weir::checkpoint::{
    CheckpointStore, CommitMarker, EpochStats, FORMAT_VERSION, Hash, Manifest, PAGE_BYTES,
};
use weir::operator::{
    CapturedState, ComponentCache, Limits, NO_DIRTY_TRACKING_ENV, OperatorInstance,
    PreparedOperator, new_engine, new_linker,
};
use weir::record::{Position, Record};
use weir::{Pipeline, RunOptions};

const PIPELINE: &str = "bench";
const TASK: &str = "main";
const MIB: f64 = 1024.0 * 1024.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Best, median, worst.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn record(value: &str) -> Record {
    Record {
        key: None,
        value: value.as_bytes().to_vec(),
        timestamp_ms: None,
        headers: Vec::new(),
    }
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// A `faulty` instance holding `mib` MiB of ballast, with its own local
/// store and uploader.
struct Subject {
    prepared: PreparedOperator,
    instance: OperatorInstance,
    dir: tempfile::TempDir,
    store: CheckpointStore,
    uploader: Uploader,
    runtime: tokio::runtime::Runtime,
    epoch: u64,
    init: Duration,
}

impl Subject {
    fn new(mib: u64) -> Subject {
        let engine = new_engine().unwrap();
        let linker = new_linker(&engine).unwrap();
        let cache = ComponentCache::new(ComponentCache::default_dir());
        let limits = Limits {
            fuel_per_record: 10_000_000,
            memory_bytes_max: (mib + 256) << 20,
        };
        let prepared = PreparedOperator::prepare(
            &engine,
            &linker,
            &cache,
            "faulty",
            &weir_tests::operator("faulty"),
            vec![("ballast_mib".into(), mib.to_string())],
            limits,
        )
        .unwrap();
        let started = Instant::now();
        let instance = prepared.instantiate().unwrap();
        let init = started.elapsed();
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap(), PIPELINE).unwrap();
        // The store's I/O runtime, as `Checkpointing::open` builds it.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Keep every epoch: garbage collection would make the on-disk
        // cross-check meaningless (and is not part of any figure here).
        let uploader = Uploader::spawn(
            store.clone(),
            TASK.into(),
            1_000_000,
            runtime.handle().clone(),
        )
        .unwrap();
        Subject {
            prepared,
            instance,
            dir,
            store,
            uploader,
            runtime,
            epoch: 0,
            init,
        }
    }

    /// Processes `touch:<permille>`; returns how long the call took (with
    /// dirty-page tracking, the first write to each page after a capture
    /// costs a minor fault: the writer pays part of what the pause saves).
    fn touch(&mut self, permille: u64) -> Duration {
        let batch = [record(&format!("touch:{permille}"))];
        let started = Instant::now();
        let result = self.instance.process(&batch).unwrap();
        let took = started.elapsed();
        assert!(result.rejections.is_empty(), "{:?}", result.rejections);
        took
    }

    /// The barrier pause: what the pipeline's `Checkpointing::barrier`
    /// times around `chain.capture()`.
    fn capture(&mut self) -> (CapturedState, Duration) {
        let started = Instant::now();
        let captured = self.instance.capture(&self.prepared).unwrap();
        (captured, started.elapsed())
    }

    /// Uploads a capture as the next epoch, as `Checkpointing::barrier`
    /// builds it, through the `Uploader`; returns the committed manifest
    /// and the bytes that appeared in the store directory.
    fn upload(&mut self, captured: CapturedState, pause: Duration) -> (Manifest, u64) {
        self.epoch += 1;
        let state_bytes = captured.state.memories.iter().map(|m| m.size_bytes).sum();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            pipeline: PIPELINE.into(),
            task: TASK.into(),
            epoch: self.epoch,
            created_unix_ms: 0,
            source_position: Position::Sequence(self.epoch),
            operators: vec![captured.state],
            stats: EpochStats {
                capture_pause_us: pause.as_micros() as u64,
                state_bytes,
                new_bytes: 0,
                upload_us: 0,
                records_in: self.epoch,
            },
            journal: None,
        };
        let components = if self.epoch == 1 {
            vec![self.prepared.component().original.clone()]
        } else {
            Vec::new()
        };
        let before = disk_bytes(self.dir.path());
        self.uploader.submit(EpochUpload {
            manifest,
            fresh_pages: captured.fresh_pages,
            components,
        });
        let mut events = self.uploader.drain();
        assert_eq!(events.len(), 1);
        match events.pop().unwrap() {
            UploadEvent::Committed(manifest) => (*manifest, disk_bytes(self.dir.path()) - before),
            UploadEvent::Failed { epoch, error, .. } => panic!("epoch {epoch}: {error}"),
        }
    }
}

/// One (size, share) cell of figures 1 and 2.
struct Cell {
    permille: u64,
    pauses: Vec<Duration>,
    touch_calls: Vec<Duration>,
    touched_pages: usize,
    /// Pages the capture found changed (ballast pages touched, plus the
    /// guest's heap and stack pages written while processing the record).
    fresh_pages: Vec<usize>,
    uploaded: Vec<u64>,
    manifest_bytes: Vec<u64>,
    marker_bytes: u64,
    disk: Vec<u64>,
}

struct SizeResult {
    mib: u64,
    state_bytes: u64,
    init: Duration,
    first_pause: Duration,
    second_pause: Duration,
    first_upload: (u64, u64),
    hash_all: Duration,
    cells: Vec<Cell>,
    /// (load, restore) per round.
    restores: Vec<(Duration, Duration)>,
}

/// Figures 1 to 3 for one state size; with `pause_only`, figures 1 and 2
/// (the epochs are uploaded all the same, so that freeing the captured
/// pages happens as in the pipeline: on the upload thread).
fn measure_size(
    mib: u64,
    permilles: &[u64],
    rounds: usize,
    restore_rounds: usize,
    pause_only: bool,
) -> SizeResult {
    let mut s = Subject::new(mib);
    let (captured, first_pause) = s.capture();
    let state_bytes: u64 = captured.state.memories.iter().map(|m| m.size_bytes).sum();
    let (first, first_disk) = s.upload(captured, first_pause);
    let first_upload = (first.stats.new_bytes, first_disk);
    // A second capture with nothing touched: dirty-page tracking starts at
    // the first capture and its first report covers every page, so this
    // one hashes everything again. The cells below are the steady state.
    s.touch(0);
    let (captured, second_pause) = s.capture();
    s.upload(captured, second_pause);
    let ballast_pages = (mib << 20) as usize / PAGE_BYTES;
    let mut cells = Vec::new();
    for &permille in permilles {
        let touched_pages = (ballast_pages * permille as usize + 500) / 1000;
        let mut cell = Cell {
            permille,
            pauses: Vec::new(),
            touch_calls: Vec::new(),
            touched_pages,
            fresh_pages: Vec::new(),
            uploaded: Vec::new(),
            manifest_bytes: Vec::new(),
            marker_bytes: 0,
            disk: Vec::new(),
        };
        for _ in 0..rounds {
            cell.touch_calls.push(s.touch(permille));
            let (captured, pause) = s.capture();
            cell.pauses.push(pause);
            cell.fresh_pages.push(captured.fresh_pages.len());
            let (manifest, disk) = s.upload(captured, pause);
            cell.uploaded.push(manifest.stats.new_bytes);
            let encoded = manifest.encode();
            cell.manifest_bytes.push(encoded.len() as u64);
            let marker = CommitMarker {
                format_version: FORMAT_VERSION,
                manifest: Hash::of(&encoded),
                manifest_bytes: encoded.len() as u64,
            };
            cell.marker_bytes = marker.encode().len() as u64;
            cell.disk.push(disk);
        }
        cells.push(cell);
    }
    let mut hash_all = Duration::ZERO;
    let mut restores = Vec::new();
    if !pause_only {
        // What hashing every page costs: blake3 of each 64 KiB page of a
        // memory of this size, natively.
        let memory: Vec<u8> = (0..state_bytes).map(|i| (i * 7 + 1) as u8).collect();
        hash_all = (0..3)
            .map(|_| {
                let started = Instant::now();
                let hashes: Vec<Hash> = memory.chunks(PAGE_BYTES).map(Hash::of).collect();
                std::hint::black_box(hashes);
                started.elapsed()
            })
            .min()
            .unwrap();
        drop(memory);
        // Restore the newest epoch from the store, and check it is the
        // state that was captured.
        let epoch = s.epoch;
        let mut last = None;
        for _ in 0..restore_rounds {
            // Free the previous round's instance first.
            drop(last.take());
            let started = Instant::now();
            let (manifest, memories) = s
                .runtime
                .block_on(recovery::load(&s.store, TASK, epoch))
                .unwrap();
            let loaded = started.elapsed();
            let started = Instant::now();
            let instance = s
                .prepared
                .restore(&manifest.operators[0], &memories[0])
                .unwrap();
            let restored = started.elapsed();
            drop(memories);
            restores.push((loaded, restored));
            last = Some((manifest, instance));
        }
        let (manifest, mut restored) = last.unwrap();
        let again = restored.capture(&s.prepared).unwrap();
        assert_eq!(again.state, manifest.operators[0], "restored state differs");
        assert!(again.fresh_pages.is_empty());
    }
    SizeResult {
        mib,
        state_bytes,
        init: s.init,
        first_pause,
        second_pause,
        first_upload,
        hash_all,
        cells,
        restores,
    }
}

/// Pause figures of a run without dirty-page tracking: per (MiB, permille)
/// best, median, worst pause and median touch call; per MiB the first
/// capture's pause.
#[derive(Default)]
struct FullHashing {
    cells: HashMap<(u64, u64), [Duration; 4]>,
    first: HashMap<u64, (Duration, Duration)>,
}

/// The child's side: figure 1 only, as lines for the parent to read.
fn pause_only_child(sizes: &[u64], permilles: &[u64], rounds: usize) {
    let us = |d: Duration| d.as_micros();
    for &mib in sizes {
        let r = measure_size(mib, permilles, rounds, 0, true);
        println!("first {mib} {} {}", us(r.first_pause), us(r.second_pause));
        for c in &r.cells {
            let (best, median, worst) = stats(c.pauses.clone());
            let (_, touch, _) = stats(c.touch_calls.clone());
            println!(
                "pause {mib} {} {} {} {} {}",
                c.permille,
                us(best),
                us(median),
                us(worst),
                us(touch)
            );
        }
    }
}

/// Runs figure 1 again in a child process with dirty-page tracking off
/// (the runtime reads the variable when an instance is created).
fn full_hashing() -> FullHashing {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env(NO_DIRTY_TRACKING_ENV, "1")
        .env("BENCH_PAUSE_ONLY", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut result = FullHashing::default();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| fields[i].parse::<u64>().unwrap();
        match fields.first() {
            Some(&"first") => {
                result.first.insert(
                    n(1),
                    (Duration::from_micros(n(2)), Duration::from_micros(n(3))),
                );
            }
            Some(&"pause") => {
                let d = |i| Duration::from_micros(n(i));
                result.cells.insert((n(1), n(2)), [d(3), d(4), d(5), d(6)]);
            }
            _ => {}
        }
    }
    result
}

fn state_figures(sizes: &[u64], permilles: &[u64], rounds: usize, restore_rounds: usize) {
    let results: Vec<SizeResult> = sizes
        .iter()
        .map(|&mib| measure_size(mib, permilles, rounds, restore_rounds, false))
        .collect();
    let full = if env_or("BENCH_COMPARE", 1) == 1 {
        full_hashing()
    } else {
        FullHashing::default()
    };
    let or_dash = |d: Option<Duration>| d.map_or("–".to_owned(), ms);

    println!("\n### 1. Barrier pause (`OperatorInstance::capture`), {rounds} captures per cell\n");
    println!(
        "| ballast | state (memory) | ballast pages changed | pause best ms | median ms | worst ms | touch call median ms | no tracking: pause best ms | median ms | worst ms | touch call median ms | blake3 of all pages, native, ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        for c in &r.cells {
            let (best, median, worst) = stats(c.pauses.clone());
            let (_, touch, _) = stats(c.touch_calls.clone());
            let f = full.cells.get(&(r.mib, c.permille));
            println!(
                "| {} MiB | {:.1} MiB | {:.1}% ({} of {}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.mib,
                r.state_bytes as f64 / MIB,
                c.permille as f64 / 10.0,
                c.touched_pages,
                (r.mib << 20) as usize / PAGE_BYTES,
                ms(best),
                ms(median),
                ms(worst),
                ms(touch),
                or_dash(f.map(|f| f[0])),
                or_dash(f.map(|f| f[1])),
                or_dash(f.map(|f| f[2])),
                or_dash(f.map(|f| f[3])),
                ms(r.hash_all),
            );
        }
    }
    println!(
        "\nFirst capture after init (every page new), and the second (nothing touched; the tracker's first report covers every page):"
    );
    for r in &results {
        let f = full.first.get(&r.mib).copied();
        println!(
            "- {} MiB: pause {} ms then {} ms; without tracking {} ms then {} ms (init took {} ms)",
            r.mib,
            ms(r.first_pause),
            ms(r.second_pause),
            or_dash(f.map(|f| f.0)),
            or_dash(f.map(|f| f.1)),
            ms(r.init)
        );
    }

    println!("\n### 2. Bytes uploaded per checkpoint vs bytes changed (mean of {rounds} epochs)\n");
    println!(
        "| ballast | pages touched | pages changed (capture) | changed bytes | pages uploaded (`new_bytes`) | manifest | commit marker | on disk (delta) | on disk − (pages + manifest + marker) | uploaded / (changed + manifest) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    for r in &results {
        for c in &r.cells {
            let fresh: Vec<u64> = c.fresh_pages.iter().map(|&p| p as u64).collect();
            let changed = mean(&fresh) * PAGE_BYTES as f64;
            let manifest = mean(&c.manifest_bytes);
            let uploaded = mean(&c.uploaded) + manifest + c.marker_bytes as f64;
            println!(
                "| {} MiB | {} | {:.1} | {:.2} MiB | {:.2} MiB | {:.1} KiB | {} B | {:.2} MiB | {:.0} B | {:.3} |",
                r.mib,
                c.touched_pages,
                mean(&fresh),
                changed / MIB,
                mean(&c.uploaded) / MIB,
                manifest / 1024.0,
                c.marker_bytes,
                mean(&c.disk) / MIB,
                mean(&c.disk) - uploaded,
                uploaded / (changed + manifest),
            );
        }
    }
    println!("\nFirst epoch (every page new, plus the component):");
    for r in &results {
        println!(
            "- {} MiB: pages uploaded {:.2} MiB, on disk {:.2} MiB",
            r.mib,
            r.first_upload.0 as f64 / MIB,
            r.first_upload.1 as f64 / MIB
        );
    }

    println!("\n### 3. Restore from the local store, best of {restore_rounds}\n");
    println!(
        "| ballast | state | `recovery::load` ms | `PreparedOperator::restore` ms | total ms | total worst ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let load = r.restores.iter().map(|x| x.0).min().unwrap();
        let restore = r.restores.iter().map(|x| x.1).min().unwrap();
        let totals: Vec<Duration> = r.restores.iter().map(|x| x.0 + x.1).collect();
        let (best, _, worst) = stats(totals);
        println!(
            "| {} MiB | {:.1} MiB | {} | {} | {} | {} |",
            r.mib,
            r.state_bytes as f64 / MIB,
            ms(load),
            ms(restore),
            ms(best),
            ms(worst)
        );
    }
}

/// Where the payments pipeline's checkpoints go in figure 4.
#[derive(Clone, Copy, PartialEq)]
enum Checkpoints {
    Off,
    /// Every second, into a local directory (the default kind of store).
    Local,
    /// Every second, into `memory://`: the same work without the file
    /// system, to show what writing files costs.
    Memory,
}

/// The payments pipeline through `weir::run`, generator -> dedup -> null
/// sink, batch 1024 (the default).
/// Also returns, for a local store, the `(new_bytes, upload_us)` of the
/// epochs still kept at the end.
fn payments_run(records: u64, mode: Checkpoints) -> (weir::Summary, Vec<(u64, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    let component = weir_tests::operator("payments-dedup");
    let checkpoint = match mode {
        Checkpoints::Off => "enabled = false\n".to_owned(),
        Checkpoints::Local => format!(
            "enabled = true\nstore = {:?}\ninterval_ms = 1000\n",
            dir.path().join("store").display().to_string()
        ),
        Checkpoints::Memory => "enabled = true\nstore = \"memory://\"\ninterval_ms = 1000\n".into(),
    };
    let toml = format!(
        "name = \"bench\"\n[source]\nkind = \"generator\"\nprofile = \"payments\"\nrecords = {records}\nseed = 1\n\
         [[operators]]\nname = \"dedup\"\ncomponent = {:?}\n[operators.config]\nttl_minutes = 60\n\
         [sinks.main]\nkind = \"null\"\n[checkpoint]\n{checkpoint}",
        component.display().to_string()
    );
    let pipeline = Pipeline::parse(&dir.path().join("bench.toml"), &toml).unwrap();
    let options = RunOptions {
        cache: ComponentCache::new(ComponentCache::default_dir()),
        stop: Arc::default(),
        from_scratch: true,
    };
    let summary = weir::run(&pipeline, &options).unwrap();
    let mut uploads = Vec::new();
    if mode == Checkpoints::Local {
        let store =
            CheckpointStore::open(dir.path().join("store").to_str().unwrap(), "bench").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for entry in store.epochs(TASK).await.unwrap() {
                let manifest = store.read_committed(TASK, entry.epoch).await.unwrap();
                uploads.push((manifest.stats.new_bytes, manifest.stats.upload_us));
            }
        });
    }
    (summary, uploads)
}

/// CPU time of this process so far (all threads, user + system), from
/// /proc/self/stat, in clock ticks of 10 ms.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn throughput_figure(records: u64, rounds: usize) {
    let modes = [Checkpoints::Off, Checkpoints::Local, Checkpoints::Memory];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    // Per mode: (wall, CPU) of each run.
    let mut times: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); modes.len()];
    let mut notes = Vec::new();
    for round in 0..rounds {
        // Rotate the order, so no mode always runs first or last.
        for i in 0..modes.len() {
            let m = (i + round) % modes.len();
            let cpu_before = cpu_time();
            let wall_before = Instant::now();
            let (summary, uploads) = payments_run(records, modes[m]);
            times[m].push((wall_before.elapsed(), cpu_time() - cpu_before));
            rates[m].push(records as f64 / summary.elapsed.as_secs_f64());
            match &summary.checkpoints {
                None => assert!(modes[m] == Checkpoints::Off),
                Some(c) if modes[m] == Checkpoints::Local => notes.push(format!(
                    "{} checkpoints, state {:.1} MiB, max pause {:.1} ms, {:.1} MiB of pages uploaded; last {} epochs uploaded {} in {} ms",
                    c.committed,
                    c.state_bytes as f64 / MIB,
                    c.max_pause_us as f64 / 1000.0,
                    c.uploaded_bytes as f64 / MIB,
                    uploads.len(),
                    uploads
                        .iter()
                        .map(|(b, _)| format!("{:.1}", *b as f64 / MIB))
                        .collect::<Vec<_>>()
                        .join(" / ")
                        + " MiB",
                    uploads
                        .iter()
                        .map(|(_, us)| format!("{:.0}", *us as f64 / 1000.0))
                        .collect::<Vec<_>>()
                        .join(" / "),
                )),
                Some(_) => {}
            }
        }
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        format!("{:.0}%", (best(v) - lo) / best(v) * 100.0)
    };
    let per_round = |v: &[f64]| {
        v.iter()
            .zip(&rates[0])
            .map(|(on, off)| format!("{:.2}", on / off))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\n### 4. Payments pipeline, {records} generated records, batch 1024, null sink, best of {rounds} rounds\n"
    );
    println!(
        "| checkpoints | records/s (best) | spread | ratio to off (best/best) | per round | CPU s / wall s per run (mean) |"
    );
    println!("|---|---:|---:|---:|---|---:|");
    let names = [
        "off",
        "every 1 s, local directory",
        "every 1 s, `memory://` store",
    ];
    for (m, name) in names.iter().enumerate() {
        let n = times[m].len() as f64;
        let wall = times[m].iter().map(|t| t.0.as_secs_f64()).sum::<f64>() / n;
        let cpu = times[m].iter().map(|t| t.1.as_secs_f64()).sum::<f64>() / n;
        println!(
            "| {name} | {:.0} | {} | {:.3} | {} | {cpu:.2} / {wall:.2} |",
            best(&rates[m]),
            spread(&rates[m]),
            best(&rates[m]) / best(&rates[0]),
            if m == 0 {
                String::new()
            } else {
                per_round(&rates[m])
            }
        );
    }
    println!();
    for (i, note) in notes.iter().enumerate() {
        println!("- round {}, local directory: {note}", i + 1);
    }
}

fn main() {
    let sizes = env_list("BENCH_SIZES", "16,64,256");
    let permilles = env_list("BENCH_PERMILLE", "10,100,1000");
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let restore_rounds: usize = env_or("BENCH_RESTORE_ROUNDS", 3);
    let records: u64 = env_or("BENCH_RECORDS", 5_000_000);
    let tp_rounds: usize = env_or("BENCH_TP_ROUNDS", 5);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "state,throughput".into());
    if std::env::var_os("BENCH_PAUSE_ONLY").is_some() {
        pause_only_child(&sizes, &permilles, rounds);
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "checkpoint benchmark; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if parts.contains("state") {
        state_figures(&sizes, &permilles, rounds, restore_rounds);
    }
    if parts.contains("throughput") {
        throughput_figure(records, tp_rounds);
    }
}
