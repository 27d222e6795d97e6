//! Deterministic operators (docs/determinism.md): recorded clocks,
//! randomness and lookups survive kill -9 and faults, every epoch verifies
//! by replay, denied calls are refused or trapped with the documented
//! message, and tampering with a journal or a page is named by
//! `weir verify`.
//!
//! The `nondet` operator writes everything it reads from outside its
//! records into its output: the wall and monotonic clocks, a `StdRng`
//! seeded from WASI random, fresh WASI randomness per record, a NaN, the
//! iteration order of a randomly seeded `HashMap`, and the answer to an HTTP
//! GET against a server on 127.0.0.1 that answers `answer-<n>` with a
//! counter, so a lookup performed twice shows as a gap.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use weir::checkpoint::{CommitMarker, FORMAT_VERSION, Hash, Manifest};
use weir_tests::{Fixture, assert_contains, operator, read_parts};

/// An HTTP server on 127.0.0.1 answering every GET with `answer-<n>`, `n`
/// counting calls from 1.
struct AnswerServer {
    port: u16,
    calls: Arc<AtomicU64>,
}

impl AnswerServer {
    fn start() -> AnswerServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // Request line and headers, up to the empty line.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!("answer-{n}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.flush();
                let mut rest = Vec::new();
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(50)));
                let _ = stream.read_to_end(&mut rest);
            }
        });
        AnswerServer { port, calls }
    }

    fn prefix(&self) -> String {
        format!("http://127.0.0.1:{}/rate/", self.port)
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

const RECORDS: usize = 300;

fn input() -> String {
    (1..=RECORDS).map(|i| format!("r{i}\n")).collect()
}

/// A pipeline named `name` over input.csv through `operators` (TOML) into a
/// parts sink `main` and a dead-letter file sink `dead`, then `tail`.
fn pipeline_with(name: &str, operators: &str, tail: &str) -> String {
    format!(
        r#"name = "{name}"
[source]
kind = "file"
path = "input.csv"
{operators}[sinks.main]
kind = "parts"
dir = "out/main"
[sinks.dead]
kind = "file"
path = "out/dead.jsonl"
[errors]
policy = "dead-letter"
dead_letter_sink = "dead"
{tail}"#
    )
}

/// `[[operators]]` for the built operator `name`.
fn operator_toml(name: &str) -> String {
    format!(
        "[[operators]]\nname = \"{name}\"\ncomponent = {:?}\n",
        operator(name).display().to_string()
    )
}

/// `nondet` (after `faulty` when `faulty_first`), batches of 7, a
/// checkpoint every 20 records, every epoch kept (so each has its base),
/// seed 42, lookups allowed to `server`.
fn nondet_pipeline(server: &AnswerServer, faulty_first: bool) -> String {
    let prefix = server.prefix();
    let faulty = if faulty_first {
        operator_toml("faulty")
    } else {
        String::new()
    };
    pipeline_with(
        "nondet",
        &format!(
            "{faulty}{}[operators.config]\nlookup = \"{prefix}\"\necho = \"true\"\n",
            operator_toml("nondet")
        ),
        &format!(
            "[batch]\nmax_records = 7\n[checkpoint]\ninterval_records = 20\ninterval_ms = 0\n\
             keep = 1000\n[determinism]\nseed = 42\nclock_resolution_ms = 1\n\
             [determinism.lookups]\nhttp = [\"{prefix}\"]\n"
        ),
    )
}

/// One output line split into its fields (`name=value`), the value first.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(',')
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => ("value".to_owned(), f.to_owned()),
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
}

/// The lines of the published output without the clock fields (which
/// record when a run read its input, so two runs differ there).
fn without_clocks(output: &[u8]) -> Vec<String> {
    String::from_utf8(output.to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            fields(line)
                .into_iter()
                .filter(|(k, _)| k != "wall" && k != "mono")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Logs what operators print (info).
const ECHO_LOGGED: (&str, &str) = ("WEIR_LOG", "info");

/// The lines `nondet` echoed to weir's log (`stderr`), in order.
fn echoed_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("stream=\"stdout\""))
        .filter_map(|l| l.split_whitespace().find(|w| w.contains(",wall=")))
        .map(str::to_owned)
        .collect()
}

/// The clock log's objects in `fx`'s local store
/// (`tasks/<task>/clock/<from>`).
fn logged_grants(fx: &Fixture) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.parent().and_then(|p| p.file_name()) == Some("clock".as_ref()) {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(fx.dir.path(), &mut found);
    found
}

/// `weir verify --all` succeeds and says every epoch (at least `min`) is
/// identical.
#[track_caller]
fn verify_all(fx: &Fixture, min: usize) -> String {
    let run = fx.weir(&["verify", "pipeline.toml", "--all"]).ok();
    let last = run.stdout.lines().last().unwrap_or_default().to_owned();
    let epochs: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(epochs >= min, "{}", run.stdout);
    assert_eq!(
        last,
        format!("{epochs} epoch(s): {epochs} identical, 0 diverged, 0 skipped"),
        "{}",
        run.stdout
    );
    run.stdout
}

#[test]
fn recorded_inputs_survive_kill_9_and_every_epoch_verifies_by_replay() {
    // The reference: one uninterrupted run.
    let reference_server = AnswerServer::start();
    let reference = Fixture::new();
    reference.write("input.csv", input());
    reference.write("pipeline.toml", nondet_pipeline(&reference_server, false));
    reference.weir(&["run", "pipeline.toml"]).ok();
    let expected = read_parts(&reference.path("out/main"));
    assert_eq!(reference_server.calls(), RECORDS as u64);

    // The same pipeline killed with SIGKILL again and again, then run to
    // the end. The kills are on the task's thread, between batches (after a
    // sink write, while publishing), so none falls between a GET's answer
    // and its record in the lookup log (a kill there, from another thread,
    // would make weir send that GET again: docs/determinism.md).
    let server = AnswerServer::start();
    let fx = Fixture::new();
    fx.write("input.csv", input());
    fx.write("pipeline.toml", nondet_pipeline(&server, false));
    let crashes = [
        ("after-sink-write", 5),
        ("after-sink-write", 9),
        ("during-publish", 2),
        ("after-sink-write", 2),
        ("during-publish", 1),
        ("after-sink-write", 13),
    ];
    // What each killed run computed, published or not: `nondet` echoes
    // every line it emits to weir's log.
    let mut computed = Vec::new();
    for (point, n) in crashes {
        let run = fx.weir_with_env(
            &["run", "pipeline.toml"],
            &[("WEIR_CRASH_AT", &format!("{point}:{n}")), ECHO_LOGGED],
        );
        assert!(!run.success, "WEIR_CRASH_AT={point}:{n} did not crash");
        computed.extend(echoed_lines(&run.stderr));
    }
    let last = fx
        .weir_with_env(&["run", "pipeline.toml"], &[ECHO_LOGGED])
        .ok();
    computed.extend(echoed_lines(&last.stderr));
    let output = read_parts(&fx.path("out/main"));

    // Every lookup was performed once, kills or not: the answers the
    // operator got are answer-1..answer-300 in record order, and the
    // server saw exactly one call per record.
    assert_eq!(server.calls(), RECORDS as u64);
    let text = String::from_utf8(output.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), RECORDS);
    let mut previous_wall = 0u64;
    for (i, line) in lines.iter().enumerate() {
        let f = fields(line);
        assert_eq!(field(&f, "value"), format!("r{}", i + 1));
        assert_eq!(field(&f, "lookup"), format!("200:answer-{}", i + 1));
        // NaNs are canonical, whatever payload went in.
        assert_eq!(field(&f, "nan"), "7ff8000000000000");
        // Recorded time never goes back, across restarts too.
        let wall: u64 = field(&f, "wall").parse().unwrap();
        assert!(wall >= previous_wall, "line {}: {line}", i + 1);
        previous_wall = wall;
    }
    // Records a killed run processed after its last committed checkpoint
    // were processed again by the next run: every time, the line is byte
    // for byte the published one, clocks included (a time an operator read
    // was written to the clock log before, and is given again).
    let mut times_computed = vec![0; RECORDS];
    for line in &computed {
        let record: usize = field(&fields(line), "value")[1..].parse().unwrap();
        assert_eq!(line, lines[record - 1], "record r{record}");
        times_computed[record - 1] += 1;
    }
    let missing: Vec<usize> = (0..RECORDS)
        .filter(|&i| times_computed[i] == 0)
        .map(|i| i + 1)
        .collect();
    assert!(missing.is_empty(), "never echoed: {missing:?}");
    let again = times_computed.iter().filter(|&&n| n > 1).count();
    assert!(again >= 20, "only {again} records were processed again");
    // Byte for byte what the uninterrupted run wrote, but for the clocks
    // (each run records when it read its input): the same random numbers,
    // the same HashMap order, the same lookup answers.
    assert_eq!(without_clocks(&output), without_clocks(&expected));

    // And every committed epoch replays to exactly its checkpoint and its
    // published output, in both stores; `checkpoints verify --deep` is the
    // same check.
    verify_all(&fx, 14);
    verify_all(&reference, 14);
    // A finished run leaves no clock grant behind: every record it read is
    // in a committed checkpoint.
    assert_eq!(logged_grants(&fx), Vec::<std::path::PathBuf>::new());
    assert_eq!(logged_grants(&reference), Vec::<std::path::PathBuf>::new());
    let deep = fx
        .weir(&[
            "checkpoints",
            "--pipeline-file",
            "pipeline.toml",
            "verify",
            "--all",
            "--deep",
        ])
        .ok();
    assert_contains(
        &deep.stdout,
        &["0 failed", "identical, 0 diverged, 0 skipped"],
    );
    // Replays never ask the server.
    assert_eq!(server.calls(), RECORDS as u64);
}

#[test]
fn a_fallback_past_a_damaged_checkpoint_reproduces_the_published_clocks() {
    let server = AnswerServer::start();
    let fx = Fixture::new();
    fx.write("input.csv", input());
    fx.write("pipeline.toml", nondet_pipeline(&server, false));
    fx.weir(&["run", "pipeline.toml"]).ok();
    let published = read_parts(&fx.path("out/main"));

    // Damage a page only the newest checkpoint has: the next run falls back
    // to the one before and processes the newest epoch's records again. The
    // parts sink checks that they come out exactly as published, clock
    // values included, which only the newest epoch's journal can give (the
    // clock log was collected when that epoch committed).
    let epoch_dir = |e: u64| fx.path(&format!("weir-data/nondet/tasks/main/epochs/{e:020}"));
    let newest = (1..)
        .take_while(|&e| epoch_dir(e).join("commit").exists())
        .last()
        .unwrap();
    let pages = |e: u64| -> Vec<Hash> {
        let manifest =
            Manifest::decode(&std::fs::read(epoch_dir(e).join("manifest")).unwrap()).unwrap();
        manifest
            .operators
            .iter()
            .flat_map(|o| &o.memories)
            .flat_map(|m| m.pages.clone())
            .collect()
    };
    let older = pages(newest - 1);
    let page = pages(newest)
        .into_iter()
        .find(|p| !older.contains(p))
        .unwrap()
        .to_string();
    std::fs::remove_file(fx.path(&format!(
        "weir-data/nondet/tasks/main/pages/{}/{page}",
        &page[..2]
    )))
    .unwrap();
    let run = fx.weir(&["run", "pipeline.toml"]).ok();
    assert_contains(
        &run.stderr,
        &[&format!(
            "resumed from epoch {}; skipped damaged epoch {newest}",
            newest - 1
        )],
    );
    assert_eq!(read_parts(&fx.path("out/main")), published);
    assert_eq!(
        server.calls(),
        RECORDS as u64,
        "lookups came from the journal"
    );
}

#[test]
fn a_fault_mid_epoch_replays_the_recorded_inputs() {
    let server = AnswerServer::start();
    let fx = Fixture::new();
    let mut records: Vec<String> = (1..=60).map(|i| format!("r{i}")).collect();
    records[30] = "trap".into();
    fx.write("input.csv", records.join("\n") + "\n");
    fx.write("pipeline.toml", nondet_pipeline(&server, true));
    fx.weir(&["run", "pipeline.toml"]).ok();
    // The trapping record went to the dead letters; restoring the chain and
    // replaying the epoch's batches (to isolate it) answered the lookups
    // made before the fault from the record: each record asked once.
    assert_contains(&fx.read("out/dead.jsonl"), &["faulty: trap requested"]);
    let output = String::from_utf8(read_parts(&fx.path("out/main"))).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 59);
    assert_eq!(server.calls(), 59);
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.ends_with(&format!(",lookup=200:answer-{}", i + 1)),
            "{line}"
        );
    }
    let verified = verify_all(&fx, 3);
    assert!(verified.contains("epoch 2: identical"), "{verified}");
}

/// A pipeline running `escape` under `denied`, dead letters to a file.
fn escape_pipeline(denied: &str) -> String {
    pipeline_with("escape", &operator_toml("escape"), denied)
}

#[test]
fn denied_calls_are_refused_at_load_or_trap_at_the_call() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nfile\nb\nconnect\nfrob\nc\n");
    // strict, the default: refused before anything runs, every denied
    // import named with what to use instead.
    fx.write("pipeline.toml", escape_pipeline(""));
    let error = fx.weir(&["run", "pipeline.toml"]).failed();
    assert_contains(
        &error,
        &[
            "operator `escape` imports what weir denies ([determinism] denied = \"strict\")",
            "`wasi:filesystem/preopens@0.2.6` (function get-directories): weir grants operators no files",
            "or read an allow-listed file with `weir:operator/recorded.read-file`",
            "`wasi:sockets/tcp-create-socket@0.2.6` (function create-tcp-socket)",
            "network access is not replayable; fetch an allow-listed URL with `weir:operator/recorded.http-get`",
            "`acme:escape/frob` (function frob): weir does not provide this interface",
            "set [determinism] denied = \"trap\"",
        ],
    );
    assert!(
        !fx.path("out/main")
            .join("part-00000000000000000001.txt")
            .exists()
    );
    let validate = fx.weir(&["validate", "pipeline.toml"]).failed();
    assert_contains(&validate, &["operator `escape` imports what weir denies"]);

    // trap: it loads; each denied call traps at the call, with the same
    // explanation, and the error policy takes the record.
    fx.write(
        "pipeline.toml",
        escape_pipeline("[determinism]\ndenied = \"trap\""),
    );
    fx.weir(&["run", "--from-scratch", "pipeline.toml"]).ok();
    assert_eq!(
        String::from_utf8(read_parts(&fx.path("out/main"))).unwrap(),
        "stayed: a\nstayed: b\nstayed: c\n"
    );
    let dead: Vec<serde_json::Value> = fx
        .read("out/dead.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| (d["value"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, "file");
    assert_eq!(
        reasons[0].1,
        "trapped: operator `escape` called `wasi:filesystem/preopens@0.2.6` function \
         `get-directories`, which weir denies ([determinism] denied = \"trap\"): weir grants \
         operators no files (a file can change between a run and its replay); pass the data in \
         records or the operator's config, or read an allow-listed file with \
         `weir:operator/recorded.read-file`"
    );
    assert_eq!(reasons[1].0, "connect");
    assert!(
        reasons[1].1.starts_with(
            "trapped: operator `escape` called `wasi:sockets/tcp-create-socket@0.2.6` function \
             `create-tcp-socket`, which weir denies ([determinism] denied = \"trap\"): network \
             access is not replayable"
        ),
        "{}",
        reasons[1].1
    );
    assert_eq!(reasons[2].0, "frob");
    assert!(
        reasons[2].1.starts_with(
            "trapped: operator `escape` called `acme:escape/frob` function `frob`, which weir \
             denies ([determinism] denied = \"trap\"): weir does not provide this interface"
        ),
        "{}",
        reasons[2].1
    );
}

/// Rewrites epoch `epoch`'s manifest with `change` and a commit marker that
/// names the new manifest, as a buggy or malicious writer could: the store
/// itself stays consistent, only a replay can tell.
fn rewrite_manifest(fx: &Fixture, epoch: u64, change: impl FnOnce(&mut Manifest)) {
    let dir = fx.path(&format!("weir-data/nondet/tasks/main/epochs/{epoch:020}"));
    let mut manifest = Manifest::decode(&std::fs::read(dir.join("manifest")).unwrap()).unwrap();
    change(&mut manifest);
    let bytes = manifest.encode();
    let marker = CommitMarker {
        format_version: FORMAT_VERSION,
        manifest: Hash::of(&bytes),
        manifest_bytes: bytes.len() as u64,
    };
    std::fs::write(dir.join("manifest"), &bytes).unwrap();
    std::fs::write(dir.join("commit"), marker.encode()).unwrap();
}

#[test]
fn tampering_with_a_journal_entry_or_a_page_is_named_by_verify() {
    let server = AnswerServer::start();
    let fx = Fixture::new();
    fx.write("input.csv", input());
    fx.write("pipeline.toml", nondet_pipeline(&server, false));
    fx.weir(&["run", "pipeline.toml"]).ok();
    verify_all(&fx, 14);
    // Epochs hold 21 records (three batches of 7 reach the interval of 20).
    let first_of = |epoch: usize| 21 * (epoch - 1) + 1;

    // A recorded time one millisecond off: the replay computes other
    // outputs (and leaves other bytes in the operator's memory).
    rewrite_manifest(&fx, 3, |m| {
        let journal = m.journal.as_mut().unwrap();
        journal.reads[0].time_ms += 1;
    });
    // The store is consistent: plain verification finds nothing.
    fx.weir(&["checkpoints", "--store", "weir-data", "verify", "3"])
        .ok();
    let run = fx.weir(&["verify", "pipeline.toml", "3"]);
    let stdout = run.stdout.clone();
    let error = run.failed();
    assert_contains(&error, &["epoch 3 diverged on replay: "]);
    assert_contains(
        &stdout,
        &[
            "epoch 3: DIVERGED (from epoch 2)",
            &format!(
                "sink `main` output 1 differs: committed `r{},wall=",
                first_of(3)
            ),
            &format!(
                "part-00000000000000000003.txt), the replay wrote `r{},wall=",
                first_of(3)
            ),
            "1 epoch(s): 0 identical, 1 diverged, 0 skipped",
        ],
    );

    // A lookup answer changed in the journal of epoch 5.
    rewrite_manifest(&fx, 5, |m| {
        let entry = &mut m.journal.as_mut().unwrap().operators[0].entries[2];
        entry.answer = weir::checkpoint::LookupAnswer::Http {
            status: 200,
            headers: Vec::new(),
            body: b"forged".to_vec(),
        };
    });
    let run = fx.weir(&["verify", "pipeline.toml", "5"]);
    assert_contains(
        &run.stdout,
        &[
            &format!(
                "sink `main` output 3 differs: committed `r{},",
                first_of(5) + 2
            ),
            "lookup=200:forged`",
        ],
    );
    run.failed();

    // A page of epoch 7 swapped for another page that exists (so every
    // object still checks out): the replay names the operator, memory and
    // page.
    let mut swapped = 0;
    rewrite_manifest(&fx, 7, |m| {
        let pages = &mut m.operators[0].memories[0].pages;
        let (i, j) = (1..pages.len())
            .find_map(|i| (0..i).find(|&j| pages[j] != pages[i]).map(|j| (i, j)))
            .unwrap();
        pages[i] = pages[j];
        swapped = i;
    });
    fx.weir(&["checkpoints", "--store", "weir-data", "verify", "7"])
        .ok();
    let run = fx.weir(&["verify", "pipeline.toml", "7"]);
    let page = format!("operator `nondet` memory 0 page {swapped} (bytes ");
    assert_contains(&run.stdout, &["epoch 7: DIVERGED", &page]);
    let error = run.failed();
    assert_contains(&error, &["epoch 7 diverged on replay: ", &page]);

    // Untouched epochs still verify; --all reports the three, and epoch 8,
    // whose base is the tampered epoch 7.
    let all = fx.weir(&["verify", "pipeline.toml", "--all"]);
    assert_contains(
        &all.stdout,
        &[
            "epoch 4: identical",
            "epoch 6: identical",
            "epoch 8: DIVERGED (from epoch 7)",
            "epoch 9: identical",
            "15 epoch(s): 11 identical, 4 diverged, 0 skipped",
        ],
    );
    assert_contains(&all.failed(), &["epoch 3 diverged on replay: "]);
}
