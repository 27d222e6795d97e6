//! kill -9 at random moments: the real `weir run` binary, killed with
//! SIGKILL over and over, restarted each time, ends with output byte for
//! byte identical to an uninterrupted run and the same operator state.
//!
//! Half of the kills come from a timer (wherever the process happens to
//! be: starting, restoring, mid-batch, capturing, uploading); the other half
//! from `WEIR_CRASH_AT`, which makes weir SIGKILL itself at one of the
//! narrow windows a timer rarely hits (after a sink write, during a page
//! upload, between manifest and commit marker, between commit and publish,
//! during publish). Every kill is followed by a check that a reader of the
//! output sees a prefix of the final output: never a partial or uncommitted
//! epoch.
//!
//! The schedule is random; its seed is printed (and taken from
//! `WEIR_CRASH_SEED` if set) so a failure can be replayed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_tests::{Fixture, read_parts, repo_root, weir_bin};

/// Kills per example, at least.
const KILLS: usize = 50;

/// Input records: enough that the input does not end before the last kill.
const RECORDS: u64 = 600_000;

const CRASH_POINTS: [&str; 5] = [
    "after-sink-write",
    "during-page-upload",
    "before-commit",
    "after-commit",
    "during-publish",
];

/// splitmix64: a tiny, well-known PRNG, so the schedule is reproducible
/// from its seed without another dependency.
pub(crate) struct Schedule(pub(crate) u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) fn seed() -> u64 {
    std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The example's pipeline in `fx`, over `records` generated records, with
/// small batches and frequent checkpoints so a run is long enough to be
/// killed many times and every kill lands near a barrier.
fn prepare(fx: &Fixture, example: &str, records: u64, seed: u64) {
    let generated = fx.generate(example, records, seed);
    fx.write("data/input.csv", &generated);
    let toml = std::fs::read_to_string(
        repo_root()
            .join("examples")
            .join(example)
            .join("pipeline.toml"),
    )
    .unwrap()
    .replace(
        "../../operators/build",
        &repo_root().join("operators/build").display().to_string(),
    )
    .replace("max_records = 1024", "max_records = 256")
    .lines()
    .map(|line| {
        if line.starts_with("interval_ms =") {
            "interval_ms = 0\ninterval_records = 2048"
        } else {
            line
        }
    })
    .collect::<Vec<_>>()
    .join("\n");
    assert!(toml.contains("interval_records = 2048"), "{toml}");
    fx.write("pipeline.toml", toml);
}

fn run_to_end(fx: &Fixture) -> serde_json::Value {
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    serde_json::from_str(&run.stdout).unwrap()
}

fn outputs(fx: &Fixture, sinks: &[&str]) -> Vec<Vec<u8>> {
    sinks
        .iter()
        .map(|s| read_parts(&fx.path(&format!("out/{s}"))))
        .collect()
}

fn crash_test(example: &str, sinks: &[&str]) {
    let seed = seed();
    eprintln!("{example}: crash schedule seed {seed} (rerun with WEIR_CRASH_SEED={seed})");
    let mut schedule = Schedule(seed);

    let reference = Fixture::new();
    prepare(&reference, example, RECORDS, 7);
    let reference_summary = run_to_end(&reference);
    let expected = outputs(&reference, sinks);
    let expected_state = reference_summary["checkpoints"]["state_hash"].clone();
    assert!(expected_state.is_string(), "{reference_summary}");

    let fx = Fixture::new();
    prepare(&fx, example, RECORDS, 7);
    let mut kills = 0;
    let mut points_fired = [0usize; CRASH_POINTS.len()];
    let mut attempts = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts < KILLS * 10,
            "seed {seed}: kills do not land ({kills} of {attempts})"
        );
        let mut command = Command::new(weir_bin());
        command
            .args(["run", "pipeline.toml"])
            .current_dir(fx.dir.path())
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Every other run arms a crash point, taking them in turn so each
        // is hit several times; which arrival kills is random.
        let point = (attempts % 2 == 0).then(|| {
            let i = (attempts / 2) % CRASH_POINTS.len();
            let n = 1 + schedule.below(4);
            (i, format!("{}:{n}", CRASH_POINTS[i]))
        });
        if let Some((_, armed)) = &point {
            command.env("WEIR_CRASH_AT", armed);
        }
        let mut child = command.spawn().unwrap();
        let killed = match &point {
            Some(_) => {
                let status = child.wait().unwrap();
                // SIGKILL: no exit code.
                status.code().is_none()
            }
            None => {
                let delay = Duration::from_millis(20 + schedule.below(250));
                let started = Instant::now();
                let mut killed = false;
                loop {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    if started.elapsed() >= delay {
                        child.kill().unwrap();
                        child.wait().unwrap();
                        killed = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                killed
            }
        };
        if killed {
            kills += 1;
            if let Some((i, _)) = point {
                points_fired[i] += 1;
            }
        } else {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "seed {seed}: weir failed after a kill:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // What a reader sees right now is a prefix of the final output.
        for (seen, all) in outputs(&fx, sinks).iter().zip(&expected) {
            assert!(
                all.starts_with(seen),
                "seed {seed}: after kill {kills}, a reader sees {} bytes that are not a prefix of the uninterrupted output",
                seen.len()
            );
        }
    }
    let summary = run_to_end(&fx);
    eprintln!(
        "{example}: {kills} kills in {attempts} runs; crash points fired: {:?}; the last run resumed from epoch {} and read the last {} of {RECORDS} records",
        CRASH_POINTS.iter().zip(points_fired).collect::<Vec<_>>(),
        summary["checkpoints"]["resumed_from"],
        summary["records_in"]
    );
    for (point, fired) in CRASH_POINTS.iter().zip(points_fired) {
        assert!(fired > 0, "seed {seed}: crash point {point} never fired");
    }
    for (sink, (actual, expected)) in sinks.iter().zip(outputs(&fx, sinks).iter().zip(&expected)) {
        assert!(
            actual == expected,
            "seed {seed}: sink {sink}: {} bytes after {kills} kills, {} uninterrupted",
            actual.len(),
            expected.len()
        );
    }
    assert_eq!(
        summary["checkpoints"]["state_hash"], expected_state,
        "seed {seed}: final operator state differs from the uninterrupted run's"
    );
}

#[test]
fn payments_survives_50_kills_with_identical_output_and_state() {
    crash_test("payments", &["ledger"]);
}

#[test]
fn rides_survives_50_kills_with_identical_output_and_state() {
    crash_test("rides", &["revenue", "late"]);
}
