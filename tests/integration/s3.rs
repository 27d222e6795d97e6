//! Checkpoints in a real S3-compatible server (MinIO, or moto; see
//! scripts/services/README.md): the payments example with an
//! `s3://bucket/prefix` store killed with SIGKILL and resumed, a missing
//! bucket and wrong credentials (one clear line each), and the server
//! frozen mid-run, briefly (weir retries and carries on, committing no
//! epoch with a page missing) and for longer than the upload deadline (the
//! run stops with a clear error, and a later run resumes exactly), also
//! with the commit marker on the wire (the error says the epoch may be
//! committed; a marker that lands is honored by the next run, whose
//! restore then publishes the epoch as after a kill at `after-commit`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::services::{PrivateS3, fresh_bucket, s3_env, signal};
use weir_tests::{Fixture, Run, assert_contains, read_parts, repo_root, weir_bin};

use crate::inspect::one_line_error;

/// The payments example in `fx` over `records` generated records (seed 7),
/// checkpointing into `store` every `interval_records` records and keeping
/// `keep` epochs.
fn payments(fx: &Fixture, records: u64, store: &str, interval_records: u64, keep: u32) {
    fx.write("data/input.csv", fx.generate("payments", records, 7));
    let toml = std::fs::read_to_string(repo_root().join("examples/payments/pipeline.toml"))
        .unwrap()
        .replace(
            "../../operators/build",
            &repo_root().join("operators/build").display().to_string(),
        )
        .replace("max_records = 1024", "max_records = 256")
        .replace("store = \"weir-data\"", &format!("store = {store:?}"))
        .replace(
            "interval_ms = 100",
            &format!("interval_ms = 0\ninterval_records = {interval_records}"),
        )
        .replace("keep = 3", &format!("keep = {keep}"));
    assert!(
        toml.contains(&format!("store = {store:?}")) && toml.contains("interval_records"),
        "{toml}"
    );
    fx.write("pipeline.toml", toml);
}

/// `weir ARGS...` in `fx` with extra environment.
fn weir(fx: &Fixture, args: &[&str], env: &[(&str, String)]) -> Run {
    command(fx, args, env).output().unwrap().into()
}

fn command(fx: &Fixture, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(weir_bin());
    command
        .args(args)
        .current_dir(fx.dir.path())
        .env("WEIR_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

fn spawn(fx: &Fixture, args: &[&str], env: &[(&str, String)]) -> Child {
    command(fx, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn summary(run: Run) -> Value {
    let run = run.ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn ledger(fx: &Fixture) -> Vec<u8> {
    read_parts(&fx.path("out/ledger"))
}

/// The epochs of the store's only task, from `weir checkpoints list --json`.
fn epochs(fx: &Fixture, store: &str, env: &[(&str, String)]) -> Vec<(u64, bool)> {
    let run = weir(
        fx,
        &["checkpoints", "--store", store, "list", "--json"],
        env,
    )
    .ok();
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    json["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["epoch"].as_u64().unwrap(), e["committed"] == true))
        .collect()
}

/// Waits (bounded) until the store holds `n` committed epochs of the
/// running pipeline.
fn wait_for_commits(
    fx: &Fixture,
    store: &str,
    env: &[(&str, String)],
    n: usize,
    child: &mut Child,
) {
    let started = Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pipeline ended before {n} epochs were committed"
        );
        let listed = weir(
            fx,
            &["checkpoints", "--store", store, "list", "--json"],
            env,
        );
        if listed.success {
            let json: Value = serde_json::from_str(&listed.stdout).unwrap();
            let committed = json["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["committed"] == true)
                .count();
            if committed >= n {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no {n} committed epochs after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ledger of an uninterrupted run over the same input, with a local
/// store (the store does not change what is computed).
fn reference(records: u64) -> (Vec<u8>, Value) {
    let fx = Fixture::new();
    payments(&fx, records, "weir-data", 2048, 3);
    let summary = summary(fx.weir(&["run", "pipeline.toml", "--json"]));
    (ledger(&fx), summary)
}

#[test]
fn payments_on_s3_resume_after_kill_9_with_identical_output_and_state() {
    const RECORDS: u64 = 60_000;
    let (expected, reference) = reference(RECORDS);
    let bucket = fresh_bucket("kill-9");
    let store = format!("s3://{bucket}/weir/checkpoints");
    let fx = Fixture::new();
    payments(&fx, RECORDS, &store, 2048, 3);

    // SIGKILL in each narrow window (weir kills itself there), then at
    // moments picked by a timer.
    let points = [
        "during-page-upload:2",
        "before-commit:2",
        "after-commit:2",
        "during-publish:2",
        "after-sink-write:3",
    ];
    let mut kills = 0;
    for point in points {
        let status = command(
            &fx,
            &["run", "pipeline.toml"],
            &[("WEIR_CRASH_AT", point.into())],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
        assert_eq!(status.code(), None, "{point} did not kill the run");
        kills += 1;
        assert!(
            expected.starts_with(&ledger(&fx)),
            "after a kill at {point}, a reader sees more than a prefix of the ledger"
        );
    }
    for delay in [150, 400] {
        let mut child = command(&fx, &["run", "pipeline.toml"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        assert!(expected.starts_with(&ledger(&fx)));
    }
    let last = summary(fx.weir(&["run", "pipeline.toml", "--json"]));
    eprintln!(
        "{kills} kills; the last run resumed from epoch {} and read {} records",
        last["checkpoints"]["resumed_from"], last["records_in"]
    );
    assert!(kills >= points.len());
    assert!(last["checkpoints"]["resumed_from"].is_u64(), "{last}");
    assert!(
        last["records_in"].as_u64().unwrap() < RECORDS,
        "the last run started over instead of resuming: {last}"
    );
    assert!(
        ledger(&fx) == expected,
        "the ledger differs from an uninterrupted run's"
    );
    assert_eq!(
        last["checkpoints"]["state_hash"], reference["checkpoints"]["state_hash"],
        "the operator's state differs from an uninterrupted run's"
    );
    // Every checkpoint left in the bucket verifies.
    let verify = fx
        .weir(&[
            "checkpoints",
            "--store",
            &store,
            "verify",
            "--all",
            "--json",
        ])
        .ok();
    let verdict: Value = serde_json::from_str(&verify.stdout).unwrap();
    assert_eq!(verdict["ok"], true, "{verdict}");
}

#[test]
fn a_missing_bucket_is_one_line_naming_bucket_and_endpoint() {
    let s3 = s3_env();
    let bucket = weir_tests::services::unique_bucket_name("never-created");
    let store = format!("s3://{bucket}/prefix");
    let fx = Fixture::new();
    payments(&fx, 100, &store, 50, 3);
    let run = fx.weir(&["run", "pipeline.toml"]);
    let expected = format!(
        "error: checkpoint store {store}: bucket `{bucket}` does not exist at {} (S3 error NoSuchBucket); create it first: weir does not create buckets",
        s3.endpoint
    );
    one_line_error(run, &[&expected]);
    assert!(ledger(&fx).is_empty());
    for command in [&["list"][..], &["verify", "--all"], &["gc", "--keep", "1"]] {
        let mut args = vec!["checkpoints", "--store", &store];
        args.extend_from_slice(command);
        let run = fx.weir(&args);
        one_line_error(run, &[&expected]);
    }
}

#[test]
fn wrong_credentials_are_access_denied_in_one_line() {
    let s3 = s3_env();
    let bucket = fresh_bucket("denied");
    let store = format!("s3://{bucket}/p");
    let fx = Fixture::new();
    payments(&fx, 100, &store, 50, 3);
    let place = format!("access denied to bucket `{bucket}` at {}", s3.endpoint);
    let hint = "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy";
    let run = weir(
        &fx,
        &["run", "pipeline.toml"],
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret".into())],
    );
    one_line_error(
        run,
        &[
            &format!(
                "error: checkpoint store {store}: {place} (S3 error SignatureDoesNotMatch on list p/payments/tasks/main/epochs)"
            ),
            hint,
        ],
    );
    let run = weir(
        &fx,
        &["checkpoints", "--store", &store, "list"],
        &[("AWS_ACCESS_KEY_ID", "nobody".into())],
    );
    one_line_error(
        run,
        &[&place, "(S3 error InvalidAccessKeyId on list p)", hint],
    );
    assert!(ledger(&fx).is_empty());

    // The same run with the right credentials works.
    summary(fx.weir(&["run", "pipeline.toml", "--json"]));
    assert!(!ledger(&fx).is_empty());
}

/// A payments run on an S3 server of the test's own, which the test may
/// freeze.
struct Running {
    server: PrivateS3,
    store: String,
    /// What a `weir` process needs to use the server.
    env: Vec<(&'static str, String)>,
    fx: Fixture,
    /// `weir run pipeline.toml --json`, which has committed 2 epochs.
    child: Child,
}

/// Starts a server and a payments run of `records` on it keeping `keep`
/// epochs, with short request timeouts (so that a frozen server makes
/// requests time out and be retried instead of waiting) and `extra`
/// environment; returns once 2 epochs are committed.
fn running_on_private_s3(
    name: &str,
    records: u64,
    keep: u32,
    extra: &[(&'static str, &str)],
) -> Running {
    let server = PrivateS3::start();
    let store = format!("s3://{}/ckpt", server.env.fresh_bucket(name));
    let mut env = server.env.vars();
    env.push(("AWS_TIMEOUT", "2s".into()));
    env.push(("AWS_CONNECT_TIMEOUT", "1s".into()));
    env.extend(extra.iter().map(|&(k, v)| (k, v.to_owned())));
    let fx = Fixture::new();
    payments(&fx, records, &store, 2048, keep);
    let mut child = spawn(&fx, &["run", "pipeline.toml", "--json"], &env);
    wait_for_commits(&fx, &store, &env, 2, &mut child);
    Running {
        server,
        store,
        env,
        fx,
        child,
    }
}

#[test]
fn a_frozen_s3_server_makes_weir_retry_and_carry_on_without_a_damaged_epoch() {
    const RECORDS: u64 = 300_000;
    let (expected, reference) = reference(RECORDS);
    // Every epoch is kept, so that every one can be verified afterwards;
    // the S3 client logs its own retries at level info.
    let Running {
        server,
        store,
        env,
        fx,
        mut child,
    } = running_on_private_s3(
        "frozen",
        RECORDS,
        10_000,
        &[
            ("WEIR_CHECKPOINT_UPLOAD_DEADLINE", "3m"),
            ("WEIR_LOG", "warn,object_store=info"),
        ],
    );
    server.freeze();
    std::thread::sleep(Duration::from_secs(8));
    // Still running: it waits for the store, it does not give up or skip.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended while the server was frozen"
    );
    server.thaw();
    let run: Run = child.wait_with_output().unwrap().into();
    let stderr = run.stderr.clone();
    let summary = summary(run);
    // Requests that timed out were retried: by the S3 client (a request
    // that is safe to repeat, for up to 30 s), or by weir, which starts
    // the epoch over.
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("checkpoint upload attempt") || l.contains("backing off"))
        .collect();
    eprintln!("retries while frozen:\n{}", retries.join("\n"));
    assert!(
        retries
            .iter()
            .any(|l| l.contains("Timeout") || l.contains("timed out")),
        "no retry after a timeout:\n{stderr}"
    );
    assert!(
        ledger(&fx) == expected,
        "the ledger differs from an uninterrupted run's"
    );
    assert_eq!(
        summary["checkpoints"]["state_hash"],
        reference["checkpoints"]["state_hash"]
    );
    // No epoch was skipped or left half-written, and every one verifies:
    // its manifest against its marker, every page against its hash.
    let listed = epochs(&fx, &store, &env);
    let numbers: Vec<u64> = listed.iter().map(|(e, _)| *e).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    assert!(listed.iter().all(|(_, committed)| *committed), "{listed:?}");
    assert_eq!(
        summary["checkpoints"]["committed"].as_u64().unwrap(),
        numbers.len() as u64
    );
    let verify = weir(
        &fx,
        &[
            "checkpoints",
            "--store",
            &store,
            "verify",
            "--all",
            "--json",
        ],
        &env,
    )
    .ok();
    let verdict: Value = serde_json::from_str(&verify.stdout).unwrap();
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(
        verdict["epochs"].as_array().unwrap().len(),
        numbers.len(),
        "{verdict}"
    );
}

#[test]
fn an_outage_longer_than_the_upload_deadline_stops_the_run_and_a_rerun_resumes_exactly() {
    // The freeze may catch the epoch before its commit marker was sent (then
    // it is not committed), or with the marker on the wire: a stopped server
    // still has the request in its socket and may store it once thawed,
    // after the run gave up. weir must say which, and be right either way.
    past_the_deadline("deadline", None).resumes_exactly();
}

#[test]
fn an_unconfirmed_commit_marker_is_reported_and_honored_if_it_landed() {
    // weir stops itself once epoch 3's manifest is stored and before its
    // marker is sent; the server is frozen before weir goes on, so the
    // marker goes to a server that does not answer.
    let outage = past_the_deadline("unconfirmed", Some("before-commit:3"));
    assert_eq!(outage.failed, 3, "{}", outage.stderr);
    assert!(
        outage.unconfirmed,
        "the marker was sent, yet weir says the epoch is not committed: {}",
        outage.stderr
    );
    outage.resumes_exactly();
}

/// A payments run on a private server frozen for longer than the run's 5 s
/// upload deadline, from the moment weir stops itself at `pause_at` (a
/// `WEIR_PAUSE_AT` point), or once 2 epochs are committed; thawed after
/// the run gave up.
fn past_the_deadline(name: &str, pause_at: Option<&str>) -> Outage {
    const RECORDS: u64 = 300_000;
    let (expected, reference) = reference(RECORDS);
    let mut extra = vec![("WEIR_CHECKPOINT_UPLOAD_DEADLINE", "5s")];
    extra.extend(pause_at.map(|point| ("WEIR_PAUSE_AT", point)));
    let Running {
        server,
        store,
        env,
        fx,
        mut child,
    } = running_on_private_s3(name, RECORDS, 3, &extra);
    if let Some(point) = pause_at {
        let started = Instant::now();
        while !stopped(&child) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before WEIR_PAUSE_AT={point} stopped it"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the run did not stop at {point} within 2 minutes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    server.freeze();
    if pause_at.is_some() {
        signal(child.id(), "CONT");
    }
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run did not give up within 2 minutes of a 5 s deadline"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let run: Run = child.wait_with_output().unwrap().into();
    server.thaw();
    let (failed, unconfirmed) = gave_up(&run, &store);
    Outage {
        _server: server,
        fx,
        store,
        env,
        failed,
        unconfirmed,
        stderr: run.stderr,
        expected,
        reference,
    }
}

/// Whether `child` is stopped (by SIGSTOP): state `T` in /proc.
fn stopped(child: &Child) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // pid (comm) state ...: the command name may hold spaces and parentheses.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

/// Checks the one-line error of a run that gave up on an epoch after the
/// 5 s upload deadline; returns the epoch, and whether weir said its commit
/// marker was sent and never confirmed.
fn gave_up(run: &Run, store: &str) -> (u64, bool) {
    assert!(!run.success);
    let last = run.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: checkpoint: epoch "),
        "{}",
        run.stderr
    );
    let failed: u64 = last["error: checkpoint: epoch ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let unconfirmed = last.contains(" may or may not be committed: ");
    let verdict = if unconfirmed {
        format!(
            "its commit marker was sent but the store never confirmed it, so this run does not publish its outputs; the next run restores epoch {failed} and publishes them if the marker was stored, and resumes from the epoch before it if not: "
        )
    } else {
        "could not be stored, so it is not committed and its outputs stay unpublished: ".into()
    };
    assert_contains(
        last,
        &[
            &verdict,
            &format!("checkpoint store {store}: epoch {failed} "),
            "still could not be stored after ",
            "(the limit is WEIR_CHECKPOINT_UPLOAD_DEADLINE=5s); last error: ",
        ],
    );
    (failed, unconfirmed)
}

/// A run that gave up on epoch `failed`, and what it must leave behind.
struct Outage {
    /// The server, which lives as long as this.
    _server: PrivateS3,
    fx: Fixture,
    store: String,
    env: Vec<(&'static str, String)>,
    failed: u64,
    /// Whether weir said the epoch's commit marker was sent and never
    /// confirmed.
    unconfirmed: bool,
    stderr: String,
    /// The ledger of an uninterrupted run.
    expected: Vec<u8>,
    /// Its summary.
    reference: Value,
}

impl Outage {
    /// Nothing of the failed epoch was published, and with the server back
    /// a new run resumes from the right epoch and ends exactly as an
    /// uninterrupted run did.
    fn resumes_exactly(&self) {
        let seen = ledger(&self.fx);
        assert!(
            self.expected.starts_with(&seen) && seen.len() < self.expected.len(),
            "a reader sees more than a prefix of the ledger"
        );
        // The rerun runs with the default deadline (if the outage caught
        // the run's own garbage collection, its lease is honored until it
        // runs out) and without the pause.
        let env: Vec<_> = self
            .env
            .iter()
            .filter(|(k, _)| !matches!(*k, "WEIR_CHECKPOINT_UPLOAD_DEADLINE" | "WEIR_PAUSE_AT"))
            .cloned()
            .collect();
        let failed = self.failed;
        let listed = epochs(&self.fx, &self.store, &env);
        let committed = listed.iter().any(|&(e, c)| e == failed && c);
        // A marker that was never sent cannot land; one that was may have,
        // and then it must be honored.
        assert!(
            self.unconfirmed || !committed,
            "epoch {failed} was committed: {listed:?}"
        );
        let resumed = summary(weir(&self.fx, &["run", "pipeline.toml", "--json"], &env));
        let resumed_from = resumed["checkpoints"]["resumed_from"].as_u64().unwrap();
        eprintln!(
            "epoch {failed} failed ({}); committed before the rerun: {committed}; the rerun resumed from {resumed_from}",
            if self.unconfirmed {
                "unconfirmed"
            } else {
                "not committed"
            }
        );
        if committed {
            assert_eq!(resumed_from, failed);
        } else if self.unconfirmed {
            // The marker may land between the listing and the rerun.
            assert!(
                resumed_from == failed || resumed_from == failed - 1,
                "resumed from {resumed_from}, epoch {failed} failed"
            );
        } else {
            assert_eq!(resumed_from, failed - 1);
        }
        assert!(
            ledger(&self.fx) == self.expected,
            "the ledger differs from an uninterrupted run's"
        );
        assert_eq!(
            resumed["checkpoints"]["state_hash"],
            self.reference["checkpoints"]["state_hash"]
        );
    }
}
