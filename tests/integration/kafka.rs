//! Kafka in, Kafka out, exactly once, against the real broker that
//! `./scripts/test` starts (`WEIR_KAFKA_BOOTSTRAP`), with the real `weir`
//! binary and the payments operator.
//!
//! Input: `weir generate payments` lines, routed to partitions by merchant.
//! The oracle: `examples/payments/expected.py` over each partition's lines
//! (what a task produces, and what an uninterrupted single-process run
//! writes). The output topic has one partition, so each task's outputs keep
//! their order; a reader sees exactly once iff, for every input partition,
//! the outputs of its merchants are exactly the oracle's lines, in order,
//! and there is nothing else. The reader is confluent-kafka with
//! `isolation.level = read_committed` (tests/kafka/kafka_check.py), a client
//! weir does not use.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_tests::services::{kafka_bootstrap, test_python};
use weir_tests::topics::{create_topic_at, merchant, partition_of, unique};

use crate::crash::{Schedule, seed};
use weir_tests::{Fixture, operator, repo_root, weir_bin};

/// Creates `topic` on the test broker.
pub fn create_topic(topic: &str, partitions: i32) {
    create_topic_at(&kafka_bootstrap(), topic, partitions);
}

/// A plain (idempotent, not transactional) producer.
pub fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .unwrap()
}

/// Writes `lines` to `topic`/`partition`, keyed by `key(line)`, and waits
/// until the broker has them.
pub fn produce_lines(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    lines: &[Vec<u8>],
    key: &dyn Fn(&[u8]) -> Vec<u8>,
) {
    let producer = producer(bootstrap);
    for line in lines {
        let k = key(line);
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .payload(&line[..])
            .key(&k[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// One record as the independent reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Everything a `read_committed` consumer (confluent-kafka, not weir's
/// client) sees in `topic` on the broker at `bootstrap`.
pub fn read_committed_at(bootstrap: &str, topic: &str) -> Vec<Seen> {
    let out = Command::new(test_python())
        .arg(repo_root().join("tests/kafka/kafka_check.py"))
        .args(["read", bootstrap, topic, "--timeout", "90"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka_check.py read {topic} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 4, "bad checker line {line:?}");
            Seen {
                partition: f[0].parse().unwrap(),
                offset: f[1].parse().unwrap(),
                key: (f[2] != "-").then(|| unhex(f[2])),
                value: unhex(f[3]),
            }
        })
        .collect()
}

/// [`read_committed_at`] on the test broker.
pub fn read_committed(topic: &str) -> Vec<Seen> {
    read_committed_at(&kafka_bootstrap(), topic)
}

/// The payments scenario: input lines per partition and the oracle's
/// ledger lines per partition.
pub struct Payments {
    pub partitions: u32,
    pub input: Vec<Vec<Vec<u8>>>,
    pub expected: Vec<Vec<Vec<u8>>>,
}

impl Payments {
    /// `records` generated payments split over `partitions` by merchant,
    /// with the oracle's expected ledger of each partition.
    pub fn generate(fx: &Fixture, records: u64, partitions: u32) -> Payments {
        let generated = fx.generate("payments", records, 5);
        let mut input = vec![Vec::new(); partitions as usize];
        for line in generated.lines() {
            let line = line.as_bytes().to_vec();
            input[partition_of(merchant(&line), partitions) as usize].push(line);
        }
        let mut expected = Vec::new();
        for (p, lines) in input.iter().enumerate() {
            let path = fx.path(&format!("oracle/in-{p}.csv"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut bytes = Vec::new();
            for line in lines {
                bytes.extend_from_slice(line);
                bytes.push(b'\n');
            }
            std::fs::write(&path, bytes).unwrap();
            let out = fx.path(&format!("oracle/out-{p}.csv"));
            let status = Command::new(test_python())
                .arg(repo_root().join("examples/payments/expected.py"))
                .arg(&path)
                .arg(&out)
                .status()
                .unwrap();
            assert!(status.success(), "the payments oracle failed");
            expected.push(
                std::fs::read(&out)
                    .unwrap()
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
            );
        }
        Payments {
            partitions,
            input,
            expected,
        }
    }

    /// Writes the input to `topic` (which has `self.partitions`
    /// partitions), keyed by merchant.
    pub fn produce(&self, bootstrap: &str, topic: &str) {
        for (p, lines) in self.input.iter().enumerate() {
            produce_lines(bootstrap, topic, p as i32, lines, &|l| merchant(l).to_vec());
        }
    }

    /// The output lines a reader saw, split by the input partition of their
    /// merchant (a ledger line starts with the merchant).
    pub fn by_partition(&self, seen: &[Seen]) -> Vec<Vec<Vec<u8>>> {
        let mut split = vec![Vec::new(); self.partitions as usize];
        for s in seen {
            let m = s.value.split(|&b| b == b',').next().unwrap_or_default();
            split[partition_of(m, self.partitions) as usize].push(s.value.clone());
        }
        split
    }

    /// Asserts that what a reader sees now is, per partition, a prefix of
    /// the oracle's output (nothing duplicated, nothing uncommitted).
    #[track_caller]
    pub fn assert_prefix(&self, seen: &[Seen], when: &str) {
        for (p, (got, want)) in self
            .by_partition(seen)
            .iter()
            .zip(&self.expected)
            .enumerate()
        {
            let ok = got.len() <= want.len() && got[..] == want[..got.len()];
            assert!(
                ok,
                "{when}: partition {p}: the reader sees {} outputs that are not a prefix of the {} expected{}",
                got.len(),
                want.len(),
                first_difference(got, want)
            );
        }
    }

    /// Asserts that a reader sees every expected output exactly once, in
    /// order per partition, and nothing else.
    #[track_caller]
    pub fn assert_exactly_once(&self, seen: &[Seen], when: &str) {
        let total: usize = self.expected.iter().map(Vec::len).sum();
        for (p, (got, want)) in self
            .by_partition(seen)
            .iter()
            .zip(&self.expected)
            .enumerate()
        {
            assert!(
                got == want,
                "{when}: partition {p}: the reader sees {} outputs, {} expected{}",
                got.len(),
                want.len(),
                first_difference(got, want)
            );
        }
        assert_eq!(seen.len(), total, "{when}: output count");
    }

    /// Whether the output is complete (for waiting on an unbounded run).
    pub fn complete(&self, seen: &[Seen]) -> bool {
        self.by_partition(seen) == self.expected
    }
}

fn first_difference(got: &[Vec<u8>], want: &[Vec<u8>]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!(
            "; first difference at output {i}: got {:?}, want {:?}",
            String::from_utf8_lossy(&got[i]),
            String::from_utf8_lossy(&want[i])
        ),
        None => String::new(),
    }
}

/// A payments pipeline from `input` to `output`: Kafka source (group
/// `group`), the dedup operator, an exactly-once Kafka sink, checkpoints
/// in `weir-data` next to the pipeline file.
pub fn payments_pipeline(
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    source_extra: &str,
    checkpoint: &str,
) -> String {
    format!(
        r#"name = "payments"
[source]
kind = "kafka"
bootstrap = "{bootstrap}"
topic = "{input}"
group = "{group}"
{source_extra}
[[operators]]
name = "dedup"
component = {:?}
[operators.config]
ttl_minutes = 60
[sinks.main]
kind = "kafka"
topic = "{output}"
delivery = "exactly-once"
[batch]
max_records = 256
[checkpoint]
store = "weir-data"
{checkpoint}
"#,
        operator("payments-dedup").display().to_string()
    )
}

/// A payments scenario: generated input in a fresh topic with
/// `partitions` partitions, a fresh one-partition output topic and a fresh
/// group, on the broker at `bootstrap`.
struct Setup {
    bootstrap: String,
    fx: Fixture,
    payments: Payments,
    input: String,
    output: String,
    group: String,
}

impl Setup {
    fn new(hint: &str, records: u64, partitions: u32, bootstrap: String) -> Setup {
        let fx = Fixture::new();
        let payments = Payments::generate(&fx, records, partitions);
        let (input, output, group) = (
            unique(&format!("{hint}-in")),
            unique(&format!("{hint}-out")),
            unique(hint),
        );
        create_topic_at(&bootstrap, &input, partitions as i32);
        create_topic_at(&bootstrap, &output, 1);
        payments.produce(&bootstrap, &input);
        Setup {
            bootstrap,
            fx,
            payments,
            input,
            output,
            group,
        }
    }

    /// Writes `pipeline.toml` (see [`payments_pipeline`]).
    fn pipeline(&self, source_extra: &str, checkpoint: &str) {
        self.fx.write(
            "pipeline.toml",
            payments_pipeline(
                &self.bootstrap,
                &self.input,
                &self.output,
                &self.group,
                source_extra,
                checkpoint,
            ),
        );
    }
}

/// Starts `weir run pipeline.toml` in `fx` (stderr to `log`).
fn spawn_weir(fx: &Fixture, env: &[(&str, String)], log: &str) -> Child {
    let log = std::fs::File::create(fx.path(log)).unwrap();
    Command::new(weir_bin())
        .args(["run", "pipeline.toml"])
        .current_dir(fx.dir.path())
        .env("WEIR_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits up to `limit` for `child` to exit.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `weir run` in `fx` to its end (bounded source), at most `limit`.
fn run_to_end(fx: &Fixture, limit: Duration, log: &str) {
    let mut child = spawn_weir(fx, &[], log);
    let status = wait_for(&mut child, limit);
    if status.is_none() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let stderr = std::fs::read_to_string(fx.path(log)).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "weir did not finish within {limit:?} ({status:?}):\n{}",
        tail(&stderr)
    );
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

const CRASH_POINTS: [&str; 7] = [
    "after-sink-write",
    "during-page-upload",
    "before-commit",
    "after-commit",
    "during-publish",
    "before-txn-commit",
    "after-txn-commit",
];

/// Kills of the crash test, at least.
const KILLS: usize = 28;

#[test]
fn payments_exactly_once_through_28_kills() {
    let seed = seed();
    eprintln!("kafka crash schedule seed {seed} (rerun with WEIR_CRASH_SEED={seed})");
    let mut schedule = Schedule(seed);
    let setup = Setup::new("crash", 1_000_000, 2, kafka_bootstrap());
    // Static membership: a restarted process takes its predecessor's place
    // in the group at once instead of waiting for its session to expire.
    setup.pipeline(
        &format!(
            "stop_at_end = true\n[source.properties]\n\"group.instance.id\" = \"{}-1\"\n\"session.timeout.ms\" = 10000",
            setup.group
        ),
        "interval_ms = 0\ninterval_records = 2048\nkeep = 3",
    );
    let (fx, payments, output) = (&setup.fx, &setup.payments, &setup.output);
    let mut kills = 0;
    let mut fired = [0usize; CRASH_POINTS.len()];
    let mut attempts = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts < KILLS * 6,
            "seed {seed}: kills do not land ({kills} of {attempts})"
        );
        let point = (attempts % 2 == 0).then(|| {
            let i = (attempts / 2) % CRASH_POINTS.len();
            (i, format!("{}:{}", CRASH_POINTS[i], 1 + schedule.below(4)))
        });
        let env: Vec<(&str, String)> = point
            .iter()
            .map(|(_, armed)| ("WEIR_CRASH_AT", armed.clone()))
            .collect();
        let mut child = spawn_weir(fx, &env, "weir.log");
        let killed = match &point {
            Some(_) => {
                let status = wait_for(&mut child, Duration::from_secs(120));
                match status {
                    Some(status) => status.code().is_none(),
                    None => {
                        child.kill().unwrap();
                        child.wait().unwrap();
                        panic!("seed {seed}: weir neither crashed nor ended in 120 s");
                    }
                }
            }
            None => {
                let delay = Duration::from_millis(300 + schedule.below(1200));
                match wait_for(&mut child, delay) {
                    Some(_) => false,
                    None => {
                        child.kill().unwrap();
                        child.wait().unwrap();
                        true
                    }
                }
            }
        };
        let log = std::fs::read_to_string(fx.path("weir.log")).unwrap_or_default();
        if killed {
            kills += 1;
            if let Some((i, _)) = point {
                fired[i] += 1;
            }
        } else {
            assert!(
                child.wait().unwrap().success(),
                "seed {seed}: weir failed after {kills} kills:\n{}",
                tail(&log)
            );
        }
        payments.assert_prefix(
            &read_committed(output),
            &format!("seed {seed}, after kill {kills} (run {attempts})"),
        );
    }
    run_to_end(fx, Duration::from_secs(300), "weir.log");
    eprintln!(
        "kafka crash: {kills} kills in {attempts} runs; crash points fired: {:?}",
        CRASH_POINTS.iter().zip(fired).collect::<Vec<_>>()
    );
    payments.assert_exactly_once(&read_committed(output), &format!("seed {seed}, at the end"));
    for (point, n) in CRASH_POINTS.iter().zip(fired) {
        assert!(n > 0, "seed {seed}: crash point {point} never fired");
    }
}

/// Waits (bounded) until `path` contains `needle`.
fn wait_for_log(path: &Path, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Waits (bounded) until a reader sees at least `n` outputs in `topic`.
fn wait_for_outputs(bootstrap: &str, topic: &str, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let seen = read_committed_at(bootstrap, topic).len();
        if seen >= n || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

#[test]
fn a_zombie_is_fenced_and_nothing_it_writes_after_is_visible() {
    let setup = Setup::new("zombie", 400_000, 1, kafka_bootstrap());
    // Both processes are told to read partition 0: the same task, the same
    // transactional id, the same checkpoint store.
    setup.pipeline(
        "partitions = [0]\nstop_at_end = true",
        "interval_ms = 0\ninterval_records = 1024\nkeep = 3",
    );
    let (fx, payments, output, bootstrap) =
        (&setup.fx, &setup.payments, &setup.output, &setup.bootstrap);
    let mut older = spawn_weir(fx, &[], "older.log");
    let seen = wait_for_outputs(bootstrap, output, 1, Duration::from_secs(120));
    assert!(seen > 0, "the first process committed nothing in 120 s");
    // Freeze it (mid-transaction, most likely), let a second process take
    // the task over, then wake it up.
    signal(&older, "-STOP");
    let mut newer = spawn_weir(fx, &[], "newer.log");
    assert!(
        wait_for_log(
            &fx.path("newer.log"),
            "transactional producer ready",
            Duration::from_secs(120)
        ),
        "the second process did not open the task"
    );
    signal(&older, "-CONT");
    let status = wait_for(&mut older, Duration::from_secs(180));
    let older_log = std::fs::read_to_string(fx.path("older.log")).unwrap();
    let Some(status) = status else {
        older.kill().unwrap();
        newer.kill().unwrap();
        panic!("the fenced process kept running:\n{}", tail(&older_log));
    };
    assert!(
        !status.success() && older_log.contains("fenced"),
        "the older process was not fenced ({status}):\n{}",
        tail(&older_log)
    );
    let status = wait_for(&mut newer, Duration::from_secs(300));
    let newer_log = std::fs::read_to_string(fx.path("newer.log")).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the second process failed:\n{}",
        tail(&newer_log)
    );
    payments.assert_exactly_once(&read_committed(output), "after the zombie");
}

#[test]
fn two_processes_share_four_partitions_and_one_takes_over_from_the_checkpoints() {
    let setup = Setup::new("scale", 400_000, 4, kafka_bootstrap());
    // Unbounded: the survivor keeps running until the test stops it, so it
    // is there to take over whenever the group gives it the partitions.
    // Both share one checkpoint store: a bucket on the test S3 server.
    let bucket = weir_tests::services::fresh_bucket("scale-out");
    setup.pipeline(
        "[source.properties]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500",
        "interval_ms = 200\nkeep = 3",
    );
    let toml = setup.fx.read("pipeline.toml").replace(
        "store = \"weir-data\"",
        &format!("store = \"s3://{bucket}/scale\""),
    );
    setup.fx.write("pipeline.toml", toml);
    let (fx, payments, output) = (&setup.fx, &setup.payments, &setup.output);
    let mut survivor = spawn_weir(fx, &[], "survivor.log");
    assert!(
        wait_for_log(
            &fx.path("survivor.log"),
            "partitions assigned",
            Duration::from_secs(60)
        ),
        "the first process got no partitions:\n{}",
        tail(&std::fs::read_to_string(fx.path("survivor.log")).unwrap_or_default())
    );
    let mut victim = spawn_weir(fx, &[], "victim.log");
    // The group rebalances: the second process gets partitions of its own.
    assert!(
        wait_for_log(
            &fx.path("victim.log"),
            "task starting",
            Duration::from_secs(60)
        ),
        "the second process got no partition:\n--- victim\n{}\n--- survivor\n{}",
        tail(&std::fs::read_to_string(fx.path("victim.log")).unwrap_or_default()),
        tail(&std::fs::read_to_string(fx.path("survivor.log")).unwrap_or_default())
    );
    assert!(
        wait_for_log(
            &fx.path("victim.log"),
            "committed_epoch",
            Duration::from_secs(60)
        ),
        "the second process did not open its tasks"
    );
    std::thread::sleep(Duration::from_secs(3));
    let victim_log = std::fs::read_to_string(fx.path("victim.log")).unwrap();
    let victim_tasks: Vec<String> = victim_log
        .lines()
        .filter(|l| l.contains("task starting"))
        .filter_map(|l| l.split("task=").nth(1))
        .map(|t| t.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    assert!(!victim_tasks.is_empty(), "{victim_log}");
    victim.kill().unwrap();
    victim.wait().unwrap();
    // The survivor takes the dead process's partitions over when its
    // session expires, from the checkpoints in the shared store.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = read_committed(output);
    while !payments.complete(&seen) && Instant::now() < deadline {
        payments.assert_prefix(&seen, "while the survivor takes over");
        std::thread::sleep(Duration::from_secs(2));
        seen = read_committed(output);
    }
    signal(&survivor, "-TERM");
    let status = wait_for(&mut survivor, Duration::from_secs(60));
    let survivor_log = std::fs::read_to_string(fx.path("survivor.log")).unwrap();
    assert!(
        payments.complete(&seen),
        "the output is not complete after the takeover; the survivor's log:\n{}",
        tail(&survivor_log)
    );
    payments.assert_exactly_once(&seen, "after the survivor took over");
    assert!(status.is_some(), "the survivor did not stop on SIGTERM");
    for task in &victim_tasks {
        assert!(
            survivor_log.contains(&format!("task starting task={task}"))
                || survivor_log.contains(&format!("task={task}")),
            "the survivor never ran {task}:\n{}",
            tail(&survivor_log)
        );
    }
    assert!(
        survivor_log.contains("resumed from checkpoint"),
        "the survivor resumed nothing from the checkpoints:\n{}",
        tail(&survivor_log)
    );
}

/// A broker of this test's own (the shared one must not restart under other
/// tests), started with `scripts/services/kafka` in a run directory of its
/// own on free ports, and restarted in place keeping its data.
struct OwnBroker {
    run: tempfile::TempDir,
    port: u16,
    /// The broker as restarted by the test (reaped after `stop`).
    restarted: Option<Child>,
}

fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < 65000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports");
}

impl OwnBroker {
    fn script() -> PathBuf {
        repo_root().join("scripts/services/kafka")
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new(Self::script());
        command
            .arg(action)
            .env("WEIR_SERVICES_RUN", self.run.path())
            .env("WEIR_KAFKA_PORT", self.port.to_string())
            .env("WEIR_KAFKA_HEAP", "384m");
        command
    }

    fn start() -> OwnBroker {
        let broker = OwnBroker {
            run: tempfile::tempdir().unwrap(),
            port: free_port_pair(),
            restarted: None,
        };
        let out = broker.command("start").output().unwrap();
        assert!(
            out.status.success(),
            "cannot start a second broker:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn dir(&self) -> PathBuf {
        self.run.path().join("kafka")
    }

    /// SIGKILLs the broker and starts it again on the same data, the way
    /// the script started it; returns once it serves again.
    fn crash_and_restart(&mut self, down: Duration) {
        let pid: u32 = std::fs::read_to_string(self.dir().join("kafka.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        let gone = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        let log = self.dir().join("server.log");
        let started_before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("Kafka Server started")
            .count();
        let log_file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let child = Command::new("setsid")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        // setsid execs java in place: the child's pid is the broker's.
        std::fs::write(self.dir().join("kafka.pid"), child.id().to_string()).unwrap();
        self.restarted = Some(child);
        let ready = Instant::now() + Duration::from_secs(120);
        loop {
            let started = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("Kafka Server started")
                .count();
            if started > started_before {
                break;
            }
            assert!(
                Instant::now() < ready,
                "the broker did not come back in 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        // A broker this process started is its child: stop and reap it
        // here (the script's `stop` would wait on the unreaped zombie).
        if let Some(mut child) = self.restarted.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if wait_for(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.command("stop").output();
    }
}

#[test]
fn a_broker_restart_mid_transaction_loses_and_duplicates_nothing() {
    let mut broker = OwnBroker::start();
    let setup = Setup::new("restart", 120_000, 1, broker.bootstrap());
    // Long epochs: a transaction is open almost all the time.
    setup.pipeline(
        "partitions = [0]\nstop_at_end = true",
        "interval_ms = 1500\nkeep = 3",
    );
    let (fx, payments, output, bootstrap) =
        (&setup.fx, &setup.payments, &setup.output, &setup.bootstrap);
    let mut weir = spawn_weir(fx, &[], "weir-1.log");
    let seen = wait_for_outputs(bootstrap, output, 1, Duration::from_secs(120));
    assert!(seen > 0, "nothing committed before the restart");
    broker.crash_and_restart(Duration::from_secs(3));
    // weir rides through the outage, or fails and is started again (as a
    // supervisor would); either way the outcome must be exactly once.
    let mut runs = 1;
    loop {
        let status = wait_for(&mut weir, Duration::from_secs(300));
        let log = std::fs::read_to_string(fx.path(&format!("weir-{runs}.log"))).unwrap();
        match status {
            Some(s) if s.success() => break,
            Some(_) if runs < 3 => {
                eprintln!(
                    "weir failed after the broker restart, starting it again:\n{}",
                    tail(&log)
                );
                runs += 1;
                weir = spawn_weir(fx, &[], &format!("weir-{runs}.log"));
            }
            other => {
                let _ = weir.kill();
                panic!("weir did not finish ({other:?}):\n{}", tail(&log));
            }
        }
    }
    eprintln!("broker restart: weir finished after {runs} run(s)");
    payments.assert_exactly_once(
        &read_committed_at(bootstrap, output),
        "after the broker restart",
    );
}

#[test]
fn at_least_once_sink_delivers_everything() {
    let setup = Setup::new("alo", 20_000, 1, kafka_bootstrap());
    setup.pipeline("stop_at_end = true", "interval_ms = 100");
    let (fx, payments, output) = (&setup.fx, &setup.payments, &setup.output);
    let toml = fx.read("pipeline.toml");
    fx.write(
        "pipeline.toml",
        toml.replace(
            "delivery = \"exactly-once\"",
            "delivery = \"at-least-once\"",
        ),
    );
    run_to_end(fx, Duration::from_secs(180), "weir.log");
    payments.assert_exactly_once(&read_committed(output), "at-least-once, no crash");
}
