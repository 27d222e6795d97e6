//! Kafka -> weir -> Kafka, on a private broker the bench starts itself:
//!
//! 1. throughput, payments-dedup, exactly-once vs at-least-once Kafka sink,
//!    checkpoint every 1 s (local directory store);
//! 2. weir at-least-once vs a plain rdkafka consume -> produce loop (no
//!    operator, no checkpoints) on the same broker and input topic;
//! 3. end-to-end latency at a fixed input rate, exactly-once and
//!    at-least-once.
//!
//! ```sh
//! ./scripts/setup    # operators/build/payments-dedup.wasm
//! CARGO_TARGET_DIR=~/.cache/weir/target cargo bench -p weir-tests --bench kafka
//! ```
//!
//! The broker: `scripts/services/kafka start` with `WEIR_KAFKA_PORT`
//! (default here 39092) and `WEIR_SERVICES_RUN`
//! (`~/.cache/weir/services/run-bench`), so it never meets the test suite's
//! broker on 19092; it is stopped when the bench ends, also on a panic.
//!
//! weir runs in this process (`weir::run`, release profile), one task per
//! input partition. Throughput: `BENCH_KAFKA_RECORDS` (default 3,000,000)
//! `weir generate payments` records over `BENCH_KAFKA_PARTITIONS` (default
//! 2) partitions, routed by merchant (so a re-delivery meets its original
//! in the same task), key = merchant; a round is the wall time of a whole
//! `weir::run` with `stop_at_end` (group join, component load from the
//! cache, reading everything, the last checkpoint and commit).
//! `BENCH_KAFKA_ROUNDS` (default 3) rounds, the configurations interleaved
//! within each round, each on a fresh output topic and group.
//!
//! Latency: weir runs unbounded; a producer thread sends
//! `BENCH_KAFKA_RATE` records/s (default 20,000) for `BENCH_KAFKA_SECS`
//! (default 30) s, every record a fresh payment (idempotency key
//! `pay-<sequence>`, so each produces exactly one output, which carries
//! the key); the send time of every sequence number is kept in memory, and
//! a `read_committed` consumer takes, for every output, the time from the
//! `send` call of its input to the poll that returned it.
//!
//! The same is measured for the plain loop (unbounded, one thread per
//! partition), as the floor the broker, the clients and the machine set.
//!
//! `BENCH_KAFKA_PARTS` (default `throughput,latency`) selects the parts;
//! `BENCH_KAFKA_INTERVAL_MS` (default 1000) changes weir's checkpoint
//! interval, for diagnosis only (the figures are at 1 s).
//! Figures are printed; nothing here is an assertion about time.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir::operator::ComponentCache;
use weir::source::{GeneratorProfile, GeneratorSource};
use weir::{Pipeline, RunOptions, Summary};
use weir_tests::env_or;
use weir_tests::topics::{create_topic_at, merchant, partition_of, unique};

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// CPU time (user + system, all threads) of process `pid` (`self` for
/// this one) so far, from /proc, in clock ticks of 10 ms.
fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The private broker; stopped when dropped (also while a panic unwinds).
struct Broker {
    bootstrap: String,
    script: PathBuf,
    port: String,
    run_dir: String,
}

impl Broker {
    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(&self.script);
        cmd.arg(verb)
            .env("WEIR_KAFKA_PORT", &self.port)
            .env("WEIR_SERVICES_RUN", &self.run_dir);
        cmd
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(format!("{}/kafka/kafka.pid", self.run_dir))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn start() -> Broker {
        let home = std::env::var("HOME").unwrap();
        let mut broker = Broker {
            bootstrap: String::new(),
            script: weir_tests::repo_root().join("scripts/services/kafka"),
            port: env_or("WEIR_KAFKA_PORT", "39092".to_owned()),
            run_dir: std::env::var("WEIR_SERVICES_RUN")
                .unwrap_or_else(|_| format!("{home}/.cache/weir/services/run-bench")),
        };
        // A broker left over by an interrupted bench in the private run
        // dir (never the test suite's: another run dir and port).
        let _ = broker.command("stop").status();
        let out = broker
            .command("start")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/services/kafka start failed");
        broker.bootstrap = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.command("stop").status();
        // The topics (GBs); the log stays for a look afterwards.
        let _ = std::fs::remove_dir_all(format!("{}/kafka/data", self.run_dir));
    }
}

/// Sends one payments line, keyed and routed by its merchant, waiting
/// while the local queue is full.
fn send_line(producer: &BaseProducer, topic: &str, partitions: i32, line: &[u8]) {
    let key = merchant(line);
    let mut record = BaseRecord::to(topic)
        .partition(partition_of(key, partitions as u32) as i32)
        .key(key)
        .payload(line);
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
        }
    }
}

fn fill_input(bootstrap: &str, topic: &str, partitions: i32, records: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let generator = GeneratorSource::new(GeneratorProfile::Payments, 1, records);
    let mut line = Vec::new();
    for i in 0..records {
        generator.value_of(i, &mut line);
        send_line(&producer, topic, partitions, &line);
        if i.is_multiple_of(1024) {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
}

fn pipeline(
    dir: &std::path::Path,
    bootstrap: &str,
    input: &str,
    output: &str,
    delivery: &str,
    bounded: bool,
) -> Pipeline {
    let toml = format!(
        r#"name = "{name}"
[source]
kind = "kafka"
bootstrap = "{bootstrap}"
topic = "{input}"
group = "{group}"
stop_at_end = {bounded}
[[operators]]
name = "dedup"
component = {component:?}
[operators.config]
ttl_minutes = 60
[sinks.main]
kind = "kafka"
topic = "{output}"
delivery = "{delivery}"
[batch]
max_records = 1024
[checkpoint]
store = {store:?}
interval_ms = {interval}
"#,
        name = unique("pipeline"),
        group = unique("group"),
        component = weir_tests::operator("payments-dedup").display().to_string(),
        store = dir.join("store").display().to_string(),
        interval = env_or("BENCH_KAFKA_INTERVAL_MS", 1000u64),
    );
    Pipeline::parse(&dir.join("pipeline.toml"), &toml).unwrap()
}

fn options(stop: Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        cache: ComponentCache::new(ComponentCache::default_dir()),
        stop,
        from_scratch: false,
    }
}

/// One bounded weir run over `input`; returns the wall time and summary.
fn weir_round(bootstrap: &str, input: &str, partitions: i32, delivery: &str) -> (f64, Summary) {
    let dir = tempfile::tempdir().unwrap();
    let output = unique("out");
    create_topic_at(bootstrap, &output, partitions);
    let pipeline = pipeline(dir.path(), bootstrap, input, &output, delivery, true);
    let started = Instant::now();
    let summary = weir::run(&pipeline, &options(Arc::default())).unwrap();
    (started.elapsed().as_secs_f64(), summary)
}

/// The plain loop of one partition: its own consumer (assigned, read from
/// the beginning) and its own idempotent producer, every key and value
/// copied to `output`; returns the records copied. Ends at the end of the
/// partition, or with `until`, when that is set.
fn plain_partition(
    bootstrap: &str,
    input: &str,
    output: &str,
    partition: i32,
    until: Option<&AtomicBool>,
) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("plain"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set(
            "enable.partition.eof",
            if until.is_some() { "false" } else { "true" },
        )
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(input, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut copied = 0u64;
    while !until.is_some_and(|u| u.load(Ordering::Relaxed)) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let mut record = BaseRecord::to(output).payload(m.payload().unwrap_or_default());
                if let Some(key) = m.key() {
                    record = record.key(key);
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            record = back;
                            producer.poll(Duration::from_millis(1));
                        }
                    }
                }
                copied += 1;
                if copied.is_multiple_of(1024) {
                    producer.poll(Duration::ZERO);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("plain loop, partition {partition}: {e}"),
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    copied
}

/// The plain loop: one thread per partition, like weir's tasks.
fn plain_round(bootstrap: &str, input: &str, partitions: i32, records: u64) -> f64 {
    let output = unique("plain-out");
    create_topic_at(bootstrap, &output, partitions);
    let started = Instant::now();
    let copied: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..partitions)
            .map(|p| {
                let output = &output;
                s.spawn(move || plain_partition(bootstrap, input, output, p, None))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(copied, records, "the plain loop copied every record");
    elapsed
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn describe_summary(summary: &Summary) -> String {
    let c = summary.checkpoints.clone().unwrap_or_default();
    format!(
        "in {}, out {}, checkpoints {}, max pause {:.1} ms, uploaded {:.1} MiB, state {:.1} MiB",
        summary.records_in,
        summary.sinks.iter().map(|s| s.written).sum::<u64>(),
        c.committed,
        c.max_pause_us as f64 / 1000.0,
        c.uploaded_bytes as f64 / (1 << 20) as f64,
        c.state_bytes as f64 / (1 << 20) as f64,
    )
}

fn throughput(broker: &Broker, records: u64, partitions: i32, rounds: usize) {
    let bootstrap = &broker.bootstrap[..];
    let broker_pid = broker.pid();
    // Warm-up: loads (and if needed compiles and caches) the component,
    // and shows the fixed cost of a run (group join, producer init).
    let warm = unique("warm-in");
    create_topic_at(bootstrap, &warm, partitions);
    fill_input(bootstrap, &warm, partitions, 10_000);
    for pass in 1..=2 {
        for delivery in ["exactly-once", "at-least-once"] {
            let (secs, summary) = weir_round(bootstrap, &warm, partitions, delivery);
            println!(
                "warm-up {pass} {delivery:<14} 10,000 records in {secs:.2} s ({})",
                describe_summary(&summary)
            );
        }
    }

    let input = unique("in");
    create_topic_at(bootstrap, &input, partitions);
    let filling = Instant::now();
    fill_input(bootstrap, &input, partitions, records);
    println!(
        "input: {records} payments records, {partitions} partitions, written in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let names = ["weir exactly-once", "weir at-least-once", "plain loop"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            let load = load_average();
            let cpu = (cpu_of("self"), cpu_of(&broker_pid));
            let (secs, detail) = match i {
                0 => {
                    let (secs, s) = weir_round(bootstrap, &input, partitions, "exactly-once");
                    assert_eq!(s.records_in, records);
                    (secs, describe_summary(&s))
                }
                1 => {
                    let (secs, s) = weir_round(bootstrap, &input, partitions, "at-least-once");
                    assert_eq!(s.records_in, records);
                    (secs, describe_summary(&s))
                }
                _ => (
                    plain_round(bootstrap, &input, partitions, records),
                    format!("copied {records}"),
                ),
            };
            let rate = records as f64 / secs;
            rates[i].push(rate);
            let (own, broker) = (cpu_of("self") - cpu.0, cpu_of(&broker_pid) - cpu.1);
            println!(
                "round {} {name:<20} {rate:>9.0} records/s  {secs:>6.2} s  CPU: bench process {own:.1} s ({:.2} us/record), broker {broker:.1} s ({:.2} us/record)  (load {load}; {detail})",
                round + 1,
                own * 1e6 / records as f64,
                broker * 1e6 / records as f64,
            );
        }
    }
    let best = |i: usize| rates[i].iter().copied().fold(0.0, f64::max);
    let per_round = |a: usize, b: usize| {
        rates[a]
            .iter()
            .zip(&rates[b])
            .map(|(x, y)| x / y)
            .collect::<Vec<_>>()
    };
    println!();
    println!("| configuration | best records/s | median records/s | rounds |");
    println!("|---|---:|---:|---|");
    for (i, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} | {} |",
            best(i),
            median(&rates[i]),
            rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (label, a, b) in [
        ("exactly-once / at-least-once", 0, 1),
        ("weir at-least-once / plain loop", 1, 2),
    ] {
        let rounds = per_round(a, b);
        println!(
            "{label}: best/best {:.3}, median of per-round ratios {:.3}, per round {}",
            best(a) / best(b),
            median(&rounds),
            rounds
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Payment `seq` with idempotency key `pay-<seq>`: never a duplicate, so
/// it makes exactly one output, and the output carries the key.
fn unique_payment(generator: &GeneratorSource, seq: u64, line: &mut Vec<u8>) {
    generator.value_of(seq, line);
    let key = format!("pay-{seq:012}");
    line[..key.len()].copy_from_slice(key.as_bytes());
}

/// The sequence number in an output `{merchant},pay-<seq>,...` (weir) or
/// in a copied input line `pay-<seq>,...` (the plain loop).
fn output_seq(value: &[u8]) -> Option<u64> {
    let key = value
        .split(|&b| b == b',')
        .take(2)
        .find(|f| f.starts_with(b"pay-"))?;
    std::str::from_utf8(&key[4..]).ok()?.parse().ok()
}

struct Latency {
    sent: u64,
    send_secs: f64,
    seen: u64,
    duplicates: u64,
    micros: Vec<u64>,
    detail: String,
}

/// `delivery`: a weir Kafka sink's, or `None` for the plain loop.
fn latency_run(
    bootstrap: &str,
    delivery: Option<&str>,
    partitions: i32,
    rate: u64,
    secs: u64,
) -> Latency {
    const WARM: u64 = 2_000;
    let measured = rate * secs;
    let total = WARM + measured;
    let input = unique("lat-in");
    let output = unique("lat-out");
    create_topic_at(bootstrap, &input, partitions);
    create_topic_at(bootstrap, &output, partitions);
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let warm_seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let system = {
        let stop = stop.clone();
        match delivery {
            Some(delivery) => {
                let pipeline = pipeline(dir.path(), bootstrap, &input, &output, delivery, false);
                std::thread::spawn(move || {
                    describe_summary(&weir::run(&pipeline, &options(stop)).unwrap())
                })
            }
            None => {
                let (bootstrap, input, output) =
                    (bootstrap.to_owned(), input.clone(), output.clone());
                std::thread::spawn(move || {
                    let copied: u64 = std::thread::scope(|s| {
                        let threads: Vec<_> = (0..partitions)
                            .map(|p| {
                                let (bootstrap, input, output, stop) =
                                    (&bootstrap, &input, &output, &stop);
                                s.spawn(move || {
                                    plain_partition(bootstrap, input, output, p, Some(stop))
                                })
                            })
                            .collect();
                        threads.into_iter().map(|t| t.join().unwrap()).sum()
                    });
                    format!("copied {copied}")
                })
            }
        }
    };
    let reader = {
        let (sent_at, warm_seen, done) = (sent_at.clone(), warm_seen.clone(), done.clone());
        let (bootstrap, output) = (bootstrap.to_owned(), output.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", unique("lat-reader"))
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("fetch.wait.max.ms", "100")
                .create()
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(&output, p, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&tpl).unwrap();
            let mut micros = Vec::with_capacity(measured as usize);
            let mut seen = vec![false; total as usize];
            let mut duplicates = 0;
            while !done.load(Ordering::Relaxed) && (micros.len() as u64) < measured {
                let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let now = base.elapsed().as_nanos() as u64;
                let message = message.unwrap();
                let seq = output_seq(message.payload().unwrap_or_default()).unwrap();
                if std::mem::replace(&mut seen[seq as usize], true) {
                    duplicates += 1;
                } else if seq < WARM {
                    warm_seen.fetch_add(1, Ordering::Relaxed);
                } else {
                    let sent = sent_at[seq as usize].load(Ordering::Relaxed);
                    micros.push(now.saturating_sub(sent) / 1000);
                }
            }
            (micros, duplicates)
        })
    };

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let generator = GeneratorSource::new(GeneratorProfile::Payments, 7, total);
    let mut line = Vec::new();
    let mut send = |seq: u64| {
        unique_payment(&generator, seq, &mut line);
        sent_at[seq as usize].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        send_line(&producer, &input, partitions, &line);
    };
    // Warm-up: until weir runs and its outputs arrive.
    for seq in 0..WARM {
        send(seq);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while warm_seen.load(Ordering::Relaxed) < WARM {
        assert!(Instant::now() < deadline, "warm-up outputs did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The measured phase: record k is due at start + k / rate.
    let start = Instant::now();
    let mut next = 0u64;
    while next < measured {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        while next < measured.min(due) {
            send(WARM + next);
            next += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(500));
    }
    let send_secs = start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60)).unwrap();
    // Wait for the outputs (bounded), then stop weir.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    let (micros, duplicates) = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let detail = system.join().unwrap();
    Latency {
        sent: measured,
        send_secs,
        seen: micros.len() as u64,
        duplicates,
        micros,
        detail,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn latency(bootstrap: &str, partitions: i32, rate: u64, secs: u64) {
    println!();
    println!(
        "latency: {rate} records/s for {secs} s over {partitions} partitions, every record a new payment (one output each)"
    );
    println!(
        "| system | min ms | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | outputs seen / sent | duplicates | send rate | load at start |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|");
    for (name, delivery) in [
        ("plain loop", None),
        ("weir at-least-once", Some("at-least-once")),
        ("weir exactly-once", Some("exactly-once")),
    ] {
        let load = load_average();
        let mut l = latency_run(bootstrap, delivery, partitions, rate, secs);
        l.micros.sort_unstable();
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} / {} | {} | {:.0}/s | {load} |",
            l.micros.first().map_or(f64::NAN, |&m| m as f64 / 1000.0),
            percentile(&l.micros, 0.50),
            percentile(&l.micros, 0.90),
            percentile(&l.micros, 0.99),
            percentile(&l.micros, 0.999),
            percentile(&l.micros, 1.0),
            l.seen,
            l.sent,
            l.duplicates,
            l.sent as f64 / l.send_secs,
        );
        println!("  ({name}: {})", l.detail);
    }
}

fn main() {
    let records: u64 = env_or("BENCH_KAFKA_RECORDS", 3_000_000);
    let partitions: i32 = env_or("BENCH_KAFKA_PARTITIONS", 2);
    let rounds: usize = env_or("BENCH_KAFKA_ROUNDS", 3);
    let rate: u64 = env_or("BENCH_KAFKA_RATE", 20_000);
    let secs: u64 = env_or("BENCH_KAFKA_SECS", 30);
    let parts = env_or("BENCH_KAFKA_PARTS", "throughput,latency".to_owned());
    println!(
        "start {} , load average {}, {} cores",
        utc_now(),
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let broker = Broker::start();
    println!("broker {} (private)", broker.bootstrap);
    if parts.contains("throughput") {
        throughput(&broker, records, partitions, rounds);
    }
    if parts.contains("latency") {
        latency(&broker.bootstrap, partitions, rate, secs);
    }
    drop(broker);
    println!("end {}, load average {}", utc_now(), load_average());
}
