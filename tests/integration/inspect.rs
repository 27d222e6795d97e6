//! `weir checkpoints`: every subcommand against a local store written by
//! real runs, in text and JSON; a garbage collection while a pipeline
//! writes; the errors; and an independent reader of the documented format
//! (tests/read_manifest.py) against `show --json`.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use weir::checkpoint::uploader::{EpochUpload, UploadEvent, Uploader};
use weir::checkpoint::{Hash, Manifest};
use weir_tests::services::{fresh_bucket, s3_env, test_python};
use weir_tests::{
    Fixture, Run, assert_contains, faulty_parts_pipeline, operator, read_parts, repo_root, weir_bin,
};

/// `r1`..`rN`, with every tenth record printed by the guest (so it holds
/// WASI stream handles).
fn input(records: usize) -> String {
    (1..=records)
        .map(|i| {
            if i % 10 == 5 {
                format!("print:p{i}\n")
            } else {
                format!("r{i}\n")
            }
        })
        .collect()
}

/// Asserts that the committed output is exactly what `faulty` makes of
/// [`input`]: `seen {n}: {record}` for every record, once, in order.
#[track_caller]
fn assert_exact_output(fx: &Fixture, records: usize) {
    let output = output(fx);
    let mut lines = output.lines();
    for (i, record) in input(records).lines().enumerate() {
        let expected = format!("seen {}: {record}", i + 1);
        assert_eq!(
            lines.next(),
            Some(expected.as_str()),
            "output line {}",
            i + 1
        );
    }
    assert_eq!(lines.next(), None, "output past record {records}");
}

/// A finished run of 100 records, a barrier every 30: epochs 1..=4, of
/// which the newest three (2, 3, 4) are kept. Returns the fixture and the
/// run's summary.
fn finished_run() -> (Fixture, Value) {
    let fx = Fixture::new();
    fx.write("input.csv", input(100));
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(10, "interval_records = 30\ninterval_ms = 0\nkeep = 3"),
    );
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_exact_output(&fx, 100);
    (fx, summary)
}

fn output(fx: &Fixture) -> String {
    String::from_utf8(read_parts(&fx.path("out/main"))).unwrap()
}

/// `weir checkpoints --store weir-data ARGS...`.
fn checkpoints(fx: &Fixture, args: &[&str]) -> Run {
    checkpoints_at(fx, "weir-data", args)
}

/// The same with `--json`, which must succeed; its stdout parsed.
fn checkpoints_json(fx: &Fixture, args: &[&str]) -> Value {
    checkpoints_at_json(fx, "weir-data", args)
}

/// `weir checkpoints --store LOCATION ARGS...`.
fn checkpoints_at(fx: &Fixture, location: &str, args: &[&str]) -> Run {
    let mut all = vec!["checkpoints", "--store", location];
    all.extend_from_slice(args);
    fx.weir(&all)
}

/// The same with `--json`, which must succeed; its stdout parsed.
fn checkpoints_at_json(fx: &Fixture, location: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let run = checkpoints_at(fx, location, &all).ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// Asserts that a failed run printed exactly one line, `error: ...`, with
/// every needle in it.
#[track_caller]
pub(crate) fn one_line_error(run: Run, needles: &[&str]) {
    assert!(!run.success, "should have failed:\n{}", run.stdout);
    let stderr = run.stderr.trim_end();
    assert!(
        stderr.starts_with("error: ") && !stderr.contains('\n'),
        "expected one `error:` line, got:\n{stderr}"
    );
    assert_contains(stderr, needles);
}

fn epoch_dir(fx: &Fixture, epoch: u64) -> PathBuf {
    fx.path(&format!("weir-data/test/tasks/main/epochs/{epoch:020}"))
}

fn manifest(fx: &Fixture, epoch: u64) -> Manifest {
    Manifest::decode(&std::fs::read(epoch_dir(fx, epoch).join("manifest")).unwrap()).unwrap()
}

fn page_path(fx: &Fixture, hash: &Hash) -> PathBuf {
    let hex = hash.to_string();
    fx.path(&format!(
        "weir-data/test/tasks/main/pages/{}/{hex}",
        &hex[..2]
    ))
}

/// Every page object in the store, by hash. A process killed during a
/// local put can leave the backend's staging file (`<hash>#<n>`) behind;
/// that is no object (no listing shows it) and is not counted.
fn stored_pages(fx: &Fixture) -> BTreeSet<String> {
    let root = fx.path("weir-data/test/tasks/main/pages");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return BTreeSet::new();
    };
    dirs.flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| Hash::from_hex(name).is_some())
        .collect()
}

/// The epochs in the store and the pages their manifests reference.
fn referenced_pages(fx: &Fixture) -> (Vec<u64>, BTreeSet<String>) {
    let dir = fx.path("weir-data/test/tasks/main/epochs");
    let mut epochs: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    epochs.sort();
    let mut pages = BTreeSet::new();
    for &epoch in &epochs {
        if let Ok(bytes) = std::fs::read(epoch_dir(fx, epoch).join("manifest")) {
            pages.extend(
                Manifest::decode(&bytes)
                    .unwrap()
                    .pages()
                    .map(|p| p.to_string()),
            );
        }
    }
    (epochs, pages)
}

/// A page the newest epoch (4) references and epoch 3 does not.
fn page_only_in_epoch_4(fx: &Fixture) -> PathBuf {
    let older: HashSet<Hash> = manifest(fx, 3).pages().collect();
    let page = manifest(fx, 4)
        .pages()
        .find(|p| !older.contains(p))
        .expect("epoch 4 changed a page");
    page_path(fx, &page)
}

#[test]
fn list_shows_every_epoch_with_its_position_and_stats() {
    let (fx, _) = finished_run();
    let text = checkpoints(&fx, &["list"]).ok().stdout;
    assert_contains(
        &text,
        &[
            "pipeline test, task main, store weir-data: 3 epoch(s), 3 committed",
            "EPOCH  WALL TIME (UTC)",
            "COMMITTED  SOURCE POSITION",
            "RECORDS",
            "STATE",
            "NEW",
            "PAUSE",
            "UPLOAD",
            "line 61 (byte ",
            "line 101 (byte ",
        ],
    );
    let rows: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(rows.len(), 3, "{text}");
    for (row, (epoch, records)) in rows.iter().zip([(2, 60), (3, 90), (4, 100)]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], epoch.to_string(), "{row}");
        assert_eq!(cells[3], "yes", "{row}");
        assert!(cells.contains(&records.to_string().as_str()), "{row}");
    }

    let json = checkpoints_json(&fx, &["list"]);
    assert_eq!(json["pipeline"], "test");
    assert_eq!(json["task"], "main");
    let epochs = json["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for entry in epochs {
        let epoch = entry["epoch"].as_u64().unwrap();
        let m = manifest(&fx, epoch);
        assert_eq!(entry["committed"], true);
        assert_eq!(entry["problem"], Value::Null);
        assert_eq!(entry["created_unix_ms"], m.created_unix_ms);
        assert!(entry["created"].as_str().unwrap().ends_with('Z'));
        let stats = &entry["stats"];
        assert_eq!(stats["records_in"], m.stats.records_in);
        assert_eq!(stats["state_bytes"], m.stats.state_bytes);
        assert_eq!(stats["new_bytes"], m.stats.new_bytes);
        assert_eq!(stats["capture_pause_us"], m.stats.capture_pause_us);
        assert_eq!(stats["upload_us"], m.stats.upload_us);
        let line = m.stats.records_in + 1;
        assert_eq!(entry["source_position"]["kind"], "file");
        assert_eq!(entry["source_position"]["line"], line);
        let bytes_before: usize = input(100)
            .lines()
            .take(m.stats.records_in as usize)
            .map(|l| l.len() + 1)
            .sum();
        assert_eq!(entry["source_position"]["byte"], bytes_before);
    }
    let state: u64 = manifest(&fx, 4)
        .operators
        .iter()
        .flat_map(|o| &o.memories)
        .map(|m| m.size_bytes)
        .sum();
    assert_eq!(epochs[2]["stats"]["state_bytes"], state);
}

#[test]
fn show_prints_operators_memories_globals_handles_and_the_runs_state_hash() {
    let (fx, summary) = finished_run();
    let m = manifest(&fx, 4);
    let op = &m.operators[0];
    // The component named by the manifest is the one the pipeline ran.
    let stored = fx.path(&format!("weir-data/test/components/{}.wasm", op.component));
    assert_eq!(
        std::fs::read(stored).unwrap(),
        std::fs::read(operator("faulty")).unwrap()
    );

    let text = checkpoints(&fx, &["show", "4"]).ok().stdout;
    let state_hash = summary["checkpoints"]["state_hash"].as_str().unwrap();
    assert_contains(
        &text,
        &[
            "epoch 4 of pipeline test, task main: committed",
            &format!("format version   {}", weir::checkpoint::FORMAT_VERSION),
            "source position  line 101 (byte ",
            "records in       100",
            &format!("state hash       {state_hash}"),
            "capture pause",
            "new in epoch",
            "operator faulty",
            &format!("component  {}", op.component),
            &format!(
                "memory 0   1.1 MiB: {} page(s) of 64.0 KiB",
                op.memories[0].pages.len()
            ),
            "global 0   i32 ",
            "handles    stdout, ",
            "pollable on handle ",
        ],
    );
    assert_eq!(checkpoints(&fx, &["show"]).ok().stdout, text, "latest is 4");
    // The journal summary and the outputs committed, as the manifest holds
    // them.
    let journal = m
        .journal
        .as_ref()
        .expect("a format 2 manifest has a journal");
    let base = journal
        .base_epoch
        .map_or("fresh instances".to_owned(), |e| format!("epoch {e}"));
    let records: u64 = journal.reads.iter().map(|r| u64::from(r.records)).sum();
    let main_outputs = journal
        .outputs
        .iter()
        .find(|o| o.sink == "main")
        .expect("the epoch wrote to sink main")
        .outputs;
    assert!(main_outputs > 0);
    assert_contains(
        &text,
        &[
            "\njournal\n",
            &format!("  started from   {base}, at {}", journal.start_position),
            &format!(
                "  reads          {} read(s) of {records} record(s), recorded times ",
                journal.reads.len()
            ),
            "  operator faulty 0 random byte(s), 0 insecure, 0 lookup(s) since init, 0 in this epoch",
            "outputs committed\n",
            &format!("  sink main      {main_outputs}\n"),
        ],
    );

    let json = checkpoints_json(&fx, &["show", "latest"]);
    assert_eq!(json["committed"], true);
    assert_eq!(json["state_hash"], state_hash);
    assert_eq!(json["epoch"], 4);
    assert_eq!(json["format_version"], weir::checkpoint::FORMAT_VERSION);
    assert_eq!(json["pipeline"], "test");
    assert_eq!(json["task"], "main");
    assert_eq!(json["stats"]["records_in"], 100);
    assert_eq!(json["journal"]["reads"], journal.reads.len());
    assert_eq!(json["journal"]["records"], records);
    assert_eq!(json["journal"]["outputs"][0]["sink"], "main");
    assert_eq!(json["journal"]["outputs"][0]["outputs"], main_outputs);
    let jop = &json["operators"][0];
    assert_eq!(jop["name"], "faulty");
    assert_eq!(jop["component"], op.component.to_string());
    let pages: Vec<String> = op.memories[0].pages.iter().map(Hash::to_string).collect();
    assert_eq!(jop["memories"][0]["pages"], serde_json::json!(pages));
    assert_eq!(jop["memories"][0]["size_bytes"], op.memories[0].size_bytes);
    assert_eq!(jop["memories"][0]["page_bytes"], 65536);
    assert_eq!(jop["globals"].as_array().unwrap().len(), op.globals.len());
    assert_eq!(jop["globals"][0]["type"], "i32");
    assert!(
        jop["globals"][0]["bits"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    let kinds: Vec<&str> = jop["handles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"stdout") && kinds.contains(&"pollable"),
        "{kinds:?}"
    );
}

#[test]
fn diff_counts_pages_changed_by_address_and_how_far_the_source_moved() {
    let (fx, _) = finished_run();
    let (a, b) = (manifest(&fx, 2), manifest(&fx, 4));
    let (pa, pb) = (&a.operators[0].memories[0], &b.operators[0].memories[0]);
    let changed = (0..pa.pages.len().max(pb.pages.len()))
        .filter(|&i| pa.pages.get(i) != pb.pages.get(i))
        .count() as u64;
    assert!(changed > 0);

    let json = checkpoints_json(&fx, &["diff", "2", "4"]);
    assert_eq!(json["from"]["epoch"], 2);
    assert_eq!(json["to"]["epoch"], 4);
    assert_eq!(json["records_delta"], 40);
    let bytes_moved: usize = input(100).lines().skip(60).map(|l| l.len() + 1).sum();
    assert_eq!(
        json["position_delta"],
        serde_json::json!({"kind": "file", "lines": 40, "bytes": bytes_moved})
    );
    assert_eq!(json["same_state"], false);
    let op = &json["operators"][0];
    assert_eq!(op["name"], "faulty");
    assert_eq!(op["component_changed"], false);
    assert_eq!(op["pages_changed"], changed);
    assert_eq!(op["bytes_changed"], changed * 65536);
    assert_eq!(op["memories"][0]["pages_changed"], changed);
    assert_eq!(op["memories"][0]["size_to"], pb.size_bytes);

    let text = checkpoints(&fx, &["diff", "2", "latest"]).ok().stdout;
    assert_contains(
        &text,
        &[
            "pipeline test, task main: epoch 2 -> epoch 4",
            &format!(
                "line 61 (byte {}) -> line 101",
                input(100)
                    .lines()
                    .take(60)
                    .map(|l| l.len() + 1)
                    .sum::<usize>()
            ),
            &format!(": +40 lines, +{bytes_moved} bytes"),
            "records in       60 -> 100 (+40)",
            "state hash changed",
            "OPERATOR  MEMORY  SIZE FROM  SIZE TO  PAGES CHANGED  BYTES CHANGED",
            &format!("{changed} of {}", pb.pages.len()),
            "faulty: 0 of 1 global(s) changed, handles unchanged, component unchanged",
        ],
    );
    // An epoch against itself: nothing changed.
    let same = checkpoints_json(&fx, &["diff", "3", "3"]);
    assert_eq!(same["same_state"], true);
    assert_eq!(same["operators"][0]["pages_changed"], 0);
}

#[test]
fn dump_writes_the_memory_assembled_from_its_verified_pages() {
    let (fx, _) = finished_run();
    let m = manifest(&fx, 3);
    let memory = &m.operators[0].memories[0];
    let expected: Vec<u8> = memory
        .pages
        .iter()
        .flat_map(|p| std::fs::read(page_path(&fx, p)).unwrap())
        .collect();
    assert_eq!(expected.len() as u64, memory.size_bytes);

    let run = checkpoints(
        &fx,
        &["dump", "3", "--operator", "faulty", "--output", "mem.bin"],
    )
    .ok();
    assert_eq!(std::fs::read(fx.path("mem.bin")).unwrap(), expected);
    assert!(!fx.path("mem.bin.partial").exists());
    assert_contains(
        &run.stderr,
        &[&format!(
            "epoch 3, operator faulty, memory 0: {} bytes",
            memory.size_bytes
        )],
    );
    // The memory is the operator's: its last batch left a record in it.
    let needle = b"print:p85";
    assert!(expected.windows(needle.len()).any(|w| w == needle));

    // To stdout, byte for byte the same.
    let out = Command::new(weir_bin())
        .args([
            "checkpoints",
            "--store",
            "weir-data",
            "dump",
            "3",
            "--operator",
            "faulty",
        ])
        .current_dir(fx.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == expected, "stdout differs from the pages");

    let json = checkpoints_json(
        &fx,
        &[
            "dump",
            "3",
            "--operator",
            "faulty",
            "--memory",
            "0",
            "--output",
            "again.bin",
        ],
    );
    assert_eq!(json["epoch"], 3);
    assert_eq!(json["operator"], "faulty");
    assert_eq!(json["memory"], 0);
    assert_eq!(json["size_bytes"], memory.size_bytes);
    assert_eq!(json["pages"], memory.pages.len());
    assert_eq!(json["blake3"], Hash::of(&expected).to_string());
    assert_eq!(json["output"], "again.bin");

    one_line_error(
        checkpoints(&fx, &["dump", "3", "--operator", "nope", "-o", "x"]),
        &["epoch 3 has no operator `nope` (operators: faulty)"],
    );
    one_line_error(
        checkpoints(
            &fx,
            &[
                "dump",
                "3",
                "--operator",
                "faulty",
                "--memory",
                "1",
                "-o",
                "x",
            ],
        ),
        &["operator `faulty` has no memory 1 at epoch 3 (it has 1)"],
    );
    one_line_error(
        checkpoints(&fx, &["dump", "3", "--operator", "faulty", "--json"]),
        &["dump --json needs --output FILE"],
    );
    // A damaged page: no output file, an error naming the page.
    let page = page_path(&fx, &memory.pages[memory.pages.len() - 1]);
    let mut bytes = std::fs::read(&page).unwrap();
    bytes[7] ^= 0x40;
    std::fs::write(&page, bytes).unwrap();
    one_line_error(
        checkpoints(&fx, &["dump", "3", "--operator", "faulty", "-o", "bad.bin"]),
        &[
            &page
                .strip_prefix(fx.path("weir-data"))
                .unwrap()
                .display()
                .to_string(),
            "is corrupt: its blake3 is",
        ],
    );
    assert!(!fx.path("bad.bin").exists() && !fx.path("bad.bin.partial").exists());
}

#[test]
fn verify_passes_a_sound_store_and_names_every_damaged_object() {
    let (fx, _) = finished_run();
    let text = checkpoints(&fx, &["verify", "--all"]).ok().stdout;
    assert_contains(
        &text,
        &[
            "epoch 2: ok (commit marker, manifest, ",
            "epoch 3: ok",
            "epoch 4: ok",
            "3 epoch(s): 3 ok, 0 failed",
        ],
    );
    let json = checkpoints_json(&fx, &["verify", "--all"]);
    assert_eq!(json["ok"], true);
    let distinct: BTreeSet<Hash> = manifest(&fx, 4).pages().collect();
    assert_eq!(json["epochs"][2]["verdict"], "ok");
    assert_eq!(json["epochs"][2]["pages"], distinct.len());
    assert_eq!(json["epochs"][2]["components"], 1);

    // A flipped byte in a page only epoch 4 has.
    let page = page_only_in_epoch_4(&fx);
    let key = page
        .strip_prefix(fx.path("weir-data"))
        .unwrap()
        .display()
        .to_string();
    let mut bytes = std::fs::read(&page).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&page, bytes).unwrap();
    let run = checkpoints(&fx, &["verify", "--all"]);
    assert!(!run.success);
    assert_contains(
        &run.stdout,
        &[
            "epoch 3: ok",
            "epoch 4: FAILED",
            &format!("  {key}: is corrupt: its blake3 is "),
            "3 epoch(s): 2 ok, 1 failed",
        ],
    );
    one_line_error(
        run,
        &[&format!(
            "error: epoch 4 failed verification: {key} is corrupt"
        )],
    );
    let json: Value =
        serde_json::from_str(&checkpoints(&fx, &["verify", "--all", "--json"]).stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["epochs"][1]["verdict"], "ok");
    assert_eq!(json["epochs"][2]["verdict"], "failed");
    assert_eq!(json["epochs"][2]["problems"][0]["object"], key);
    // Epoch 3 alone is fine; the default (latest) is not.
    checkpoints(&fx, &["verify", "3"]).ok();
    assert!(!checkpoints(&fx, &["verify"]).success);

    // A missing page, and a damaged component, are named too.
    std::fs::remove_file(&page).unwrap();
    one_line_error(
        checkpoints(&fx, &["verify", "4"]),
        &[&format!("{key} does not exist")],
    );
    let component = fx.path(&format!(
        "weir-data/test/components/{}.wasm",
        manifest(&fx, 2).operators[0].component
    ));
    std::fs::write(&component, b"not the component").unwrap();
    let run = checkpoints(&fx, &["verify", "2"]);
    assert_contains(
        &run.stdout,
        &["epoch 2: FAILED", "components/", ".wasm: is corrupt"],
    );
    one_line_error(run, &["epoch 2 failed verification: test/components/"]);
}

/// `--deep` replays epochs (tests/integration/determinism.rs covers what it
/// finds); it needs the pipeline file, not just the store.
#[test]
fn verify_deep_needs_the_pipeline_file() {
    let (fx, _) = finished_run();
    one_line_error(
        checkpoints(&fx, &["verify", "--deep"]),
        &["verify --deep replays epochs", "pass --pipeline-file FILE"],
    );
}

#[test]
fn verify_fails_an_uncommitted_epoch_and_skips_it_with_all() {
    let (fx, _) = finished_run();
    std::fs::remove_file(epoch_dir(&fx, 4).join("commit")).unwrap();
    one_line_error(
        checkpoints(&fx, &["verify", "4"]),
        &["epoch 4 failed verification: ", "commit does not exist"],
    );
    let text = checkpoints(&fx, &["verify", "--all"]).ok().stdout;
    assert_contains(
        &text,
        &["epoch 4: not committed, skipped", "2 ok, 0 failed"],
    );
    let list = checkpoints_json(&fx, &["list"]);
    assert_eq!(list["epochs"][2]["committed"], false);
    assert_eq!(list["epochs"][2]["stats"]["records_in"], 100);
    // `latest` is the newest committed epoch now.
    assert_eq!(checkpoints_json(&fx, &["show"])["epoch"], 3);
    assert_eq!(checkpoints_json(&fx, &["show", "4"])["committed"], false);
}

#[test]
fn gc_keeps_the_newest_epochs_and_exactly_the_pages_they_reference() {
    let (fx, _) = finished_run();
    let (_, before) = referenced_pages(&fx);
    assert_eq!(stored_pages(&fx), before, "a run leaves no garbage");

    let text = checkpoints(&fx, &["gc", "--keep", "1"]).ok().stdout;
    assert_contains(
        &text,
        &[
            "keeping the newest 1 committed epoch(s)",
            "deleted epochs: 2, 3 (",
            "epochs left: 4",
        ],
    );
    let (epochs, referenced) = referenced_pages(&fx);
    assert_eq!(epochs, [4]);
    let newest: BTreeSet<String> = manifest(&fx, 4).pages().map(|p| p.to_string()).collect();
    assert_eq!(referenced, newest);
    assert_eq!(stored_pages(&fx), newest, "every other page is deleted");
    checkpoints(&fx, &["verify", "--all"]).ok();

    let again = checkpoints_json(&fx, &["gc", "--keep", "1"]);
    assert_eq!(again["epochs_deleted"], serde_json::json!([]));
    assert_eq!(again["epochs_left"], serde_json::json!([4]));
    assert_eq!(again["pages_deleted"], 0);
    assert_eq!(again["bytes_deleted"], 0);

    // The kept checkpoint restores: a second run resumes from it and the
    // output stays exact.
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["checkpoints"]["resumed_from"], 4);
    assert_exact_output(&fx, 100);
}

/// Writes a page no manifest references, last modified `age` ago.
fn plant_orphan(fx: &Fixture, content: &[u8], age: Duration) -> PathBuf {
    let path = page_path(fx, &Hash::of(content));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

#[test]
fn gc_deletes_unreferenced_pages_only_once_they_are_older_than_the_grace_period() {
    let (fx, _) = finished_run();
    let old = plant_orphan(
        &fx,
        b"left by a crash an hour ago",
        Duration::from_secs(3600),
    );
    let young = plant_orphan(&fx, b"being written right now", Duration::ZERO);
    let json = checkpoints_json(&fx, &["gc", "--keep", "3"]);
    assert_eq!(json["grace"], "10m");
    assert_eq!(json["epochs_deleted"], serde_json::json!([]));
    assert_eq!(json["unreferenced_pages_deleted"], 1);
    assert_eq!(json["unreferenced_pages_spared"], 1);
    assert!(!old.exists() && young.exists());

    let text = checkpoints(&fx, &["gc", "--keep", "3", "--grace", "0s"])
        .ok()
        .stdout;
    assert_contains(
        &text,
        &["deleted 1 unreferenced page(s) older than 0s; left 0 younger one(s) alone"],
    );
    assert!(!young.exists());
    let (_, referenced) = referenced_pages(&fx);
    assert_eq!(stored_pages(&fx), referenced);
    checkpoints(&fx, &["verify", "--all"]).ok();
}

/// The acceptance test for a collection beside a running pipeline: `gc
/// --keep 1` and `verify` run over and over while a pipeline writes to the
/// same store (whose own collection keeps 3); the pipeline is killed during
/// a page upload (leaving pages no manifest references); after a gc that
/// spares those young pages and one with no grace that deletes them, the
/// newest checkpoint restores and the output is exact.
#[test]
fn gc_while_a_pipeline_writes_never_damages_a_checkpoint() {
    const RECORDS: usize = 60_000;
    let fx = Fixture::new();
    fx.write("input.csv", input(RECORDS));
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(50, "interval_records = 200\ninterval_ms = 0\nkeep = 3"),
    );
    gc_beside_a_writer(&fx, "weir-data", "during-page-upload:200", &|| {
        has_commit(&fx)
    });

    // The killed epoch's pages are in the store, referenced by nothing.
    let (_, referenced) = referenced_pages(&fx);
    let orphans: Vec<String> = stored_pages(&fx).difference(&referenced).cloned().collect();
    assert!(!orphans.is_empty(), "the kill left no page behind");
    let spared = checkpoints_json(&fx, &["gc", "--keep", "1"]);
    assert_eq!(spared["unreferenced_pages_spared"], orphans.len());
    assert_eq!(spared["unreferenced_pages_deleted"], 0);
    let swept = checkpoints_json(&fx, &["gc", "--keep", "1", "--grace", "0s"]);
    assert_eq!(swept["unreferenced_pages_deleted"], orphans.len());
    let (epochs, referenced) = referenced_pages(&fx);
    assert_eq!(stored_pages(&fx), referenced);
    assert_eq!(epochs.len(), 1);
    checkpoints(&fx, &["verify", "--all"]).ok();

    // The newest checkpoint restores, and the output is exact.
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["checkpoints"]["resumed_from"], epochs[0]);
    assert_exact_output(&fx, RECORDS);
    checkpoints(&fx, &["verify", "--all"]).ok();
}

/// Runs the pipeline in `fx` until it kills itself at `crash_at` (during a
/// page upload), and meanwhile, once `committed()` says an epoch is,
/// `gc --keep 1`, `verify` and `list` on the store at `location` over and
/// over; each must succeed, and gc must have run 3 times at least and
/// deleted epochs.
fn gc_beside_a_writer(fx: &Fixture, location: &str, crash_at: &str, committed: &dyn Fn() -> bool) {
    let mut writer = Command::new(weir_bin())
        .args(["run", "pipeline.toml"])
        .current_dir(fx.dir.path())
        .env("WEIR_LOG", "error")
        .env("WEIR_CRASH_AT", crash_at)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut rounds, mut collected) = (0, 0);
    let status = loop {
        if let Some(status) = writer.try_wait().unwrap() {
            break status;
        }
        if !committed() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let gc = checkpoints_at_json(fx, location, &["gc", "--keep", "1"]);
        collected += gc["epochs_deleted"].as_array().unwrap().len();
        for command in [&["verify"][..], &["list"]] {
            let run = checkpoints_at(fx, location, command);
            assert!(
                run.success,
                "`{command:?}` failed while the pipeline wrote:\n{}{}",
                run.stdout, run.stderr
            );
        }
        rounds += 1;
    };
    assert_eq!(
        status.code(),
        None,
        "the writer was to be killed mid-upload"
    );
    eprintln!(
        "gc ran {rounds} times while the pipeline wrote to {location}, deleting {collected} epochs"
    );
    assert!(
        rounds >= 3 && collected > 0,
        "gc ran {rounds} times and deleted {collected} epochs while the pipeline wrote"
    );
}

/// Whether some epoch has a commit marker.
fn has_commit(fx: &Fixture) -> bool {
    std::fs::read_dir(fx.path("weir-data/test/tasks/main/epochs"))
        .into_iter()
        .flatten()
        .any(|e| e.is_ok_and(|e| e.path().join("commit").exists()))
}

#[test]
fn errors_are_one_clear_line() {
    let (fx, _) = finished_run();
    one_line_error(
        fx.weir(&["checkpoints", "--store", "nowhere", "list"]),
        &["no checkpoint store at `nowhere`: the directory does not exist"],
    );
    assert!(!fx.path("nowhere").exists(), "inspection created the store");
    one_line_error(
        fx.weir(&[
            "checkpoints",
            "--store",
            "file:///nowhere/at/all",
            "show",
            "1",
        ]),
        &["no checkpoint store at `file:///nowhere/at/all`"],
    );
    one_line_error(
        checkpoints(&fx, &["show", "9"]),
        &["task `main` of pipeline `test` has no epoch 9 (epochs: 2, 3, 4)"],
    );
    one_line_error(
        checkpoints(&fx, &["--task", "p7", "list"]),
        &["pipeline `test` has no checkpoints of task `p7` (tasks: main)"],
    );
    one_line_error(
        checkpoints(&fx, &["--pipeline", "other", "list"]),
        &["holds no checkpoints of pipeline `other` (pipelines there: test)"],
    );
    one_line_error(
        fx.weir(&["checkpoints", "list"]),
        &["--store LOCATION or --pipeline-file FILE"],
    );

    // A corrupt manifest: `show` refuses it, `list` marks it and fails.
    let path = epoch_dir(&fx, 4).join("manifest");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let key = "test/tasks/main/epochs/00000000000000000004/manifest";
    one_line_error(
        checkpoints(&fx, &["show", "4"]),
        &[&format!("checkpoint store weir-data: {key} is corrupt")],
    );
    let run = checkpoints(&fx, &["list"]);
    assert_contains(&run.stdout, &["    4  ", "DAMAGED", "epoch 4: "]);
    one_line_error(run, &["epoch 4: ", key, "is corrupt"]);
    // Without a commit marker it is only decoded, and that fails too.
    std::fs::remove_file(epoch_dir(&fx, 4).join("commit")).unwrap();
    one_line_error(checkpoints(&fx, &["show", "4"]), &[key, "cannot decode"]);
    // Several pipelines in one store: name one.
    let other = Fixture::new();
    for name in ["alpha", "beta"] {
        std::fs::create_dir_all(other.path(&format!("store/{name}/tasks/main/epochs"))).unwrap();
    }
    one_line_error(
        other.weir(&["checkpoints", "--store", "store", "list"]),
        &["holds the checkpoints of several pipelines (alpha, beta): name one with --pipeline"],
    );
}

#[test]
fn a_pipeline_file_names_the_store_and_the_pipeline() {
    let (fx, _) = finished_run();
    let by_store = checkpoints_json(&fx, &["list"]);
    // From another directory: the store is relative to the pipeline file.
    let run: Run = Command::new(weir_bin())
        .args(["checkpoints", "list", "--json", "--pipeline-file"])
        .arg(fx.path("pipeline.toml"))
        .current_dir(repo_root())
        .output()
        .unwrap()
        .into();
    let by_file: Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(by_file["epochs"], by_store["epochs"]);
    assert_eq!(by_file["pipeline"], "test");
    assert!(by_file["store"].as_str().unwrap().ends_with("/weir-data"));
}

#[test]
fn help_describes_every_subcommand_and_where_the_checkpoints_are() {
    let help = Fixture::new().weir(&["checkpoints", "--help"]).ok().stdout;
    assert_contains(
        &help,
        &[
            "Inspect, verify and clean up the checkpoints in a store",
            "list",
            "show",
            "diff",
            "dump",
            "verify",
            "gc",
            "--store <LOCATION>",
            "--pipeline-file <FILE>",
            "--pipeline <NAME>",
            "--task <NAME>",
            "--json",
            "s3://bucket/prefix",
            "EPOCH is a number or `latest`",
        ],
    );
    let gc = Fixture::new()
        .weir(&["checkpoints", "gc", "--help"])
        .ok()
        .stdout;
    assert_contains(&gc, &["--keep <N>", "--grace <DURATION>", "[default: 10m]"]);
}

fn python_reader(args: &[PathBuf]) -> Value {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/read_manifest.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "read_manifest.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// tests/read_manifest.py knows the format only from
/// docs/checkpoint-format.md: it must read a real manifest exactly as weir
/// does.
#[test]
fn the_documented_format_is_enough_to_read_a_manifest() {
    let (fx, _) = finished_run();
    let dir = epoch_dir(&fx, 4);
    let mut from_spec = python_reader(&[dir.join("manifest"), dir.join("commit")]);
    let marker = from_spec.as_object_mut().unwrap().remove("commit").unwrap();
    assert_eq!(marker["format_version"], weir::checkpoint::FORMAT_VERSION);
    assert_eq!(
        marker["manifest"],
        Hash::of(&std::fs::read(dir.join("manifest")).unwrap()).to_string()
    );
    let shown = checkpoints_json(&fx, &["show", "4"]);
    let fields = from_spec.as_object().unwrap();
    assert_eq!(fields.len(), 8, "every field of the manifest table");
    for (field, value) in fields {
        assert_eq!(&shown[field], value, "field `{field}`");
    }

    // And the manifest of format version 1 kept in the repository, which has
    // what a real run may not: a NaN global, a pollable handle, a shared
    // page.
    let golden = repo_root().join("tests/data/manifest-v1.postcard");
    let decoded = Manifest::decode(&std::fs::read(&golden).unwrap()).unwrap();
    let view = serde_json::to_value(weir::inspect::view::ManifestView::from(&decoded)).unwrap();
    assert_eq!(python_reader(&[golden]), view);
}

// ---------------------------------------------------------------------------
// The same commands against the S3-compatible test server, and the garbage
// collection protocol (docs/checkpoint-format.md) on both kinds of store.

/// [`finished_run`] with its checkpoints in a fresh bucket: returns the
/// fixture and the store's location.
fn finished_run_on_s3() -> (Fixture, String) {
    let location = format!("s3://{}/team/weir", fresh_bucket("inspect"));
    let fx = Fixture::new();
    fx.write("input.csv", input(100));
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(
            10,
            &format!("interval_records = 30\ninterval_ms = 0\nkeep = 3\nstore = {location:?}"),
        ),
    );
    fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    assert_exact_output(&fx, 100);
    (fx, location)
}

/// Every key in `bucket` under `prefix`, listed by boto3 (a client weir
/// does not use).
fn bucket_keys(bucket: &str, prefix: &str) -> BTreeSet<String> {
    let script = r#"
import sys, boto3
s3 = boto3.client("s3")
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1], Prefix=sys.argv[2])
for page in pages:
    for obj in page.get("Contents", []):
        print(obj["Key"])
"#;
    let out = Command::new(test_python())
        .args(["-c", script, bucket, prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "listing {bucket} with boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The bucket of an `s3://bucket/prefix` location, and the prefix.
fn bucket_of(location: &str) -> (&str, &str) {
    location
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap()
}

#[test]
fn every_subcommand_reads_an_s3_store_as_it_reads_a_local_one() {
    let (local, _) = finished_run();
    let (fx, s3) = finished_run_on_s3();
    let (bucket, prefix) = bucket_of(&s3);

    // list: the same epochs, positions and state as the local run's.
    let text = checkpoints_at(&fx, &s3, &["list"]).ok().stdout;
    assert_contains(
        &text,
        &[&format!(
            "pipeline test, task main, store {s3}: 3 epoch(s), 3 committed"
        )],
    );
    let (on_s3, on_disk) = (
        checkpoints_at_json(&fx, &s3, &["list"]),
        checkpoints_json(&local, &["list"]),
    );
    assert_eq!(on_s3["store"], s3.as_str());
    for (a, b) in on_s3["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(on_disk["epochs"].as_array().unwrap())
    {
        for field in ["epoch", "committed", "source_position", "problem"] {
            assert_eq!(a[field], b[field], "{field}");
        }
        for stat in ["records_in", "state_bytes"] {
            assert_eq!(a["stats"][stat], b["stats"][stat], "{stat}");
        }
    }
    assert_eq!(on_s3["epochs"].as_array().unwrap().len(), 3);

    // show: the same operators, memories, pages and state hash.
    let shown = checkpoints_at_json(&fx, &s3, &["show", "latest"]);
    let local_shown = checkpoints_json(&local, &["show", "latest"]);
    assert_eq!(shown["epoch"], 4);
    for field in ["operators", "state_hash", "source_position", "committed"] {
        assert_eq!(shown[field], local_shown[field], "{field}");
    }
    assert_contains(
        &checkpoints_at(&fx, &s3, &["show", "4"]).ok().stdout,
        &[
            "epoch 4 of pipeline test, task main: committed",
            "operator faulty",
        ],
    );

    // diff: manifests only, so exactly the local diff.
    let diff = checkpoints_at_json(&fx, &s3, &["diff", "2", "4"]);
    let local_diff = checkpoints_json(&local, &["diff", "2", "4"]);
    for field in ["records_delta", "position_delta", "same_state", "operators"] {
        assert_eq!(diff[field], local_diff[field], "{field}");
    }
    assert_contains(
        &checkpoints_at(&fx, &s3, &["diff", "2", "latest"])
            .ok()
            .stdout,
        &[
            "pipeline test, task main: epoch 2 -> epoch 4",
            "state hash changed",
        ],
    );

    // dump: the memory, assembled from pages downloaded and verified.
    checkpoints_at(
        &fx,
        &s3,
        &["dump", "3", "--operator", "faulty", "-o", "s3.bin"],
    )
    .ok();
    checkpoints(
        &local,
        &["dump", "3", "--operator", "faulty", "-o", "local.bin"],
    )
    .ok();
    let dumped = std::fs::read(fx.path("s3.bin")).unwrap();
    assert!(dumped == std::fs::read(local.path("local.bin")).unwrap());
    let json = checkpoints_at_json(
        &fx,
        &s3,
        &["dump", "3", "--operator", "faulty", "--output", "again.bin"],
    );
    assert_eq!(json["blake3"], Hash::of(&dumped).to_string());
    let out = Command::new(weir_bin())
        .args([
            "checkpoints",
            "--store",
            &s3,
            "dump",
            "latest",
            "--operator",
            "faulty",
        ])
        .current_dir(fx.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout.len() as u64,
        shown["operators"][0]["memories"][0]["size_bytes"]
            .as_u64()
            .unwrap()
    );

    // verify: every page and component downloaded and checked.
    let verdict = checkpoints_at_json(&fx, &s3, &["verify", "--all"]);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["epochs"].as_array().unwrap().len(), 3);
    assert_contains(
        &checkpoints_at(&fx, &s3, &["verify", "--all"]).ok().stdout,
        &[
            "epoch 2: ok",
            "epoch 3: ok",
            "epoch 4: ok",
            "3 epoch(s): 3 ok, 0 failed",
        ],
    );

    // gc --keep 1: what is left in the bucket, listed by another client, is
    // epoch 4 and exactly the pages it references.
    let before = bucket_keys(bucket, prefix);
    let gc = checkpoints_at_json(&fx, &s3, &["gc", "--keep", "1"]);
    assert_eq!(gc["epochs_deleted"], serde_json::json!([2, 3]));
    assert_eq!(gc["epochs_left"], serde_json::json!([4]));
    assert!(gc["pages_deleted"].as_u64().unwrap() > 0, "{gc}");
    assert!(gc["bytes_deleted"].as_u64().unwrap() > 0, "{gc}");
    let after = bucket_keys(bucket, prefix);
    assert!(after.len() < before.len());
    let root = format!("{prefix}/test/tasks/main/");
    let pages: BTreeSet<String> = after
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{root}pages/")))
        .map(|k| k.rsplit('/').next().unwrap().to_owned())
        .collect();
    let referenced: BTreeSet<String> = shown["operators"][0]["memories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["pages"].as_array().unwrap())
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pages, referenced, "pages left in the bucket");
    let epoch_keys: Vec<&String> = after
        .iter()
        .filter(|k| k.starts_with(&format!("{root}epochs/")))
        .collect();
    assert_eq!(
        epoch_keys,
        [
            &format!("{root}epochs/00000000000000000004/commit"),
            &format!("{root}epochs/00000000000000000004/manifest"),
        ]
    );
    assert!(
        !after.iter().any(|k| k.starts_with(&format!("{root}gc/"))),
        "gc left its lease behind: {after:?}"
    );
    checkpoints_at(&fx, &s3, &["verify", "--all"]).ok();
    // ...and the kept checkpoint restores.
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["checkpoints"]["resumed_from"], 4);
    assert_exact_output(&fx, 100);
}

#[test]
fn store_errors_on_s3_are_one_clear_line() {
    let env = s3_env();
    let (fx, s3) = finished_run_on_s3();
    let missing = weir_tests::services::unique_bucket_name("no-such");
    let missing_store = format!("s3://{missing}/x");
    for command in [
        &["list"][..],
        &["show", "1"],
        &["diff", "1", "2"],
        &["dump", "1", "--operator", "faulty", "-o", "x.bin"],
        &["verify", "--all"],
        &["gc", "--keep", "1"],
    ] {
        one_line_error(
            checkpoints_at(&fx, &missing_store, command),
            &[&format!(
                "error: checkpoint store {missing_store}: bucket `{missing}` does not exist at {} (S3 error NoSuchBucket); create it first",
                env.endpoint
            )],
        );
    }
    let (bucket, _) = bucket_of(&s3);
    let denied: Run = Command::new(weir_bin())
        .args(["checkpoints", "--store", &s3, "show", "latest"])
        .current_dir(fx.dir.path())
        .env("WEIR_LOG", "warn")
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .output()
        .unwrap()
        .into();
    one_line_error(
        denied,
        &[&format!(
            "access denied to bucket `{bucket}` at {} (S3 error SignatureDoesNotMatch on list ",
            env.endpoint
        )],
    );
    one_line_error(
        checkpoints_at(&fx, &s3, &["show", "9"]),
        &["task `main` of pipeline `test` has no epoch 9 (epochs: 2, 3, 4)"],
    );
    one_line_error(
        checkpoints_at(&fx, &format!("s3://{bucket}/elsewhere"), &["list"]),
        &[&format!(
            "checkpoint store `s3://{bucket}/elsewhere` holds no checkpoints"
        )],
    );
    // A corrupt manifest in the bucket.
    let store = weir::checkpoint::CheckpointStore::open(&s3, "test").unwrap();
    let key = weir::checkpoint::layout::manifest(store.root(), "main", 4);
    block_on(async {
        use object_store::ObjectStoreExt;
        let bytes = store
            .object_store()
            .get(&key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        store
            .object_store()
            .put(&key, bytes.slice(..bytes.len() / 2).into())
            .await
            .unwrap();
    });
    one_line_error(
        checkpoints_at(&fx, &s3, &["show", "4"]),
        &[&format!("checkpoint store {s3}: {key} is corrupt")],
    );
    let run = checkpoints_at(&fx, &s3, &["verify", "4"]);
    assert_contains(&run.stdout, &["epoch 4: FAILED"]);
    one_line_error(run, &["epoch 4 failed verification: ", key.as_ref()]);
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The S3 twin of [`gc_while_a_pipeline_writes_never_damages_a_checkpoint`]:
/// `gc --keep 1` and `verify` over and over while a pipeline writes to the
/// bucket, the pipeline killed during a page upload, the orphans spared and
/// then swept, and a resume that is exact.
#[test]
fn gc_while_a_pipeline_writes_to_s3_never_damages_a_checkpoint() {
    const RECORDS: usize = 20_000;
    let location = format!("s3://{}/w", fresh_bucket("gc-while-writing"));
    let store = weir::checkpoint::CheckpointStore::open(&location, "test").unwrap();
    let fx = Fixture::new();
    fx.write("input.csv", input(RECORDS));
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(
            50,
            &format!("interval_records = 200\ninterval_ms = 0\nkeep = 3\nstore = {location:?}"),
        ),
    );
    let committed = || {
        block_on(store.epochs("main"))
            .unwrap()
            .iter()
            .any(|e| e.committed)
    };
    gc_beside_a_writer(&fx, &location, "during-page-upload:60", &committed);

    // The killed epoch's pages are in the bucket, referenced by nothing:
    // young, so spared; with no grace, swept.
    let referenced = |store: &weir::checkpoint::CheckpointStore| -> (Vec<u64>, BTreeSet<Hash>) {
        block_on(async {
            let epochs = store.epochs("main").await.unwrap();
            let mut pages = BTreeSet::new();
            for e in &epochs {
                if let Some(m) = store.read_manifest("main", e.epoch).await.unwrap() {
                    pages.extend(m.pages());
                }
            }
            (epochs.iter().map(|e| e.epoch).collect(), pages)
        })
    };
    let stored = || -> BTreeSet<Hash> {
        block_on(store.list_pages("main"))
            .unwrap()
            .iter()
            .map(|p| p.hash)
            .collect()
    };
    let (_, pages) = referenced(&store);
    let orphans = stored().difference(&pages).count();
    assert!(orphans > 0, "the kill left no page behind");
    let spared = checkpoints_at_json(&fx, &location, &["gc", "--keep", "1"]);
    assert_eq!(spared["unreferenced_pages_spared"], orphans);
    assert_eq!(spared["unreferenced_pages_deleted"], 0);
    let swept = checkpoints_at_json(&fx, &location, &["gc", "--keep", "1", "--grace", "0s"]);
    assert_eq!(swept["unreferenced_pages_deleted"], orphans);
    let (epochs, pages) = referenced(&store);
    assert_eq!(stored(), pages);
    assert_eq!(epochs.len(), 1);
    checkpoints_at(&fx, &location, &["verify", "--all"]).ok();

    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["checkpoints"]["resumed_from"], epochs[0]);
    assert_exact_output(&fx, RECORDS);
    checkpoints_at(&fx, &location, &["verify", "--all"]).ok();
}

/// What the protocol tests need: a manifest to make others from (a real
/// run's, so it has every field a manifest has), an async runtime, and a
/// store of each kind, a local directory and a prefix in a fresh bucket
/// (`name`).
#[allow(clippy::type_complexity)]
fn protocol_fixture(
    name: &str,
) -> (
    Manifest,
    tokio::runtime::Runtime,
    Vec<(Option<tempfile::TempDir>, String)>,
) {
    let (local, _) = finished_run();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store").display().to_string();
    let stores = vec![
        (Some(dir), path),
        (None, format!("s3://{}/p", fresh_bucket(name))),
    ];
    (manifest(&local, 4), runtime, stores)
}

/// The store of pipeline `proto` at `location`, and an uploader for its
/// task `main` keeping 3 epochs.
fn uploader_at(
    location: &str,
    runtime: &tokio::runtime::Runtime,
) -> (weir::checkpoint::CheckpointStore, Uploader) {
    let store = weir::checkpoint::CheckpointStore::open(location, "proto").unwrap();
    let uploader =
        Uploader::spawn(store.clone(), "main".into(), 3, runtime.handle().clone()).unwrap();
    (store, uploader)
}

/// A manifest of pipeline `proto`, task `main`, epoch `epoch`, whose one
/// operator's memory is `pages` (built from a real run's, so it has every
/// field a manifest has).
fn proto_manifest(template: &Manifest, epoch: u64, pages: &[Hash]) -> Manifest {
    let mut m = template.clone();
    m.pipeline = "proto".into();
    m.task = "main".into();
    m.epoch = epoch;
    m.operators.truncate(1);
    m.operators[0].memories = vec![weir::checkpoint::MemoryState {
        size_bytes: 65536 * pages.len() as u64,
        page_bytes: 65536,
        pages: pages.to_vec(),
    }];
    m
}

fn page_bytes(fill: u8) -> (Hash, bytes::Bytes) {
    let bytes = bytes::Bytes::from(vec![fill; 65536]);
    (Hash::of(&bytes), bytes)
}

/// Waits (bounded) for the uploader's next report.
fn next_event(uploader: &mut Uploader) -> UploadEvent {
    let started = std::time::Instant::now();
    loop {
        if let Some(event) = uploader.poll().pop() {
            return event;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no report in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The race the writer's half of the protocol closes: an epoch reuses a
/// page that is in the store but referenced by no manifest (an earlier
/// crashed attempt's), and a collector that decided to delete it (it holds
/// its lease) deletes it after the writer found it there. The writer does
/// not commit while the lease is live; then it finds the page gone, writes
/// it again, and commits an epoch that restores.
#[test]
fn a_writer_restores_a_reused_page_a_collector_deleted_under_it_local_and_s3() {
    let (template, runtime, stores) = protocol_fixture("reused-page");
    for (_dir, location) in stores {
        let (store, mut uploader) = uploader_at(&location, &runtime);
        let (a, a_bytes) = page_bytes(1);
        let (b, b_bytes) = page_bytes(2);
        uploader.submit(EpochUpload {
            manifest: proto_manifest(&template, 1, &[a]),
            fresh_pages: vec![(a, a_bytes.clone())],
            components: Vec::new(),
        });
        assert!(
            matches!(next_event(&mut uploader), UploadEvent::Committed(_)),
            "{location}"
        );

        // Page b: left by a crashed attempt, referenced by nothing. A
        // collector takes its lease and decides to delete it.
        runtime
            .block_on(store.put_page("main", &b, b_bytes.clone()))
            .unwrap();
        let lease = runtime
            .block_on(store.acquire_gc_lease("main", Duration::from_secs(60)))
            .unwrap();
        // Epoch 2 changes its memory so that it holds b again.
        uploader.submit(EpochUpload {
            manifest: proto_manifest(&template, 2, &[a, b]),
            fresh_pages: vec![(b, b_bytes.clone())],
            components: Vec::new(),
        });
        let started = std::time::Instant::now();
        while runtime
            .block_on(store.read_manifest("main", 2))
            .unwrap()
            .is_none()
        {
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(10));
        }
        // The manifest is stored; the writer now waits for the lease.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            uploader.poll().is_empty(),
            "{location}: committed under a live lease"
        );
        // The collector's deletion lands, and it gives its lease up.
        runtime.block_on(store.delete_page("main", &b)).unwrap();
        runtime.block_on(store.release_gc_lease(&lease)).unwrap();
        match next_event(&mut uploader) {
            UploadEvent::Committed(m) => assert_eq!(m.epoch, 2),
            UploadEvent::Failed { error, .. } => panic!("{location}: {error}"),
        }
        assert!(
            runtime.block_on(store.has_page("main", &b)).unwrap(),
            "{location}"
        );
        let restored = runtime
            .block_on(weir::checkpoint::recovery::newest_restorable(
                &store, "main",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(restored.manifest.epoch, 2);
        assert!(restored.memories[0][0] == [a_bytes.as_ref(), b_bytes.as_ref()].concat());
    }
}

/// The collector's half: pages an epoch being written references (its
/// manifest stored, not committed yet) are never deleted, even when only
/// the epochs being collected referenced them before; the in-flight epoch
/// itself is left alone.
#[test]
fn gc_never_deletes_a_page_an_uncommitted_manifest_references_local_and_s3() {
    let (template, _, stores) = protocol_fixture("in-flight");
    for (_dir, location) in stores {
        let store = weir::checkpoint::CheckpointStore::open(&location, "proto").unwrap();
        let pages: Vec<(Hash, bytes::Bytes)> = (1..=4).map(page_bytes).collect();
        block_on(async {
            for (hash, bytes) in &pages {
                store.put_page("main", hash, bytes.clone()).await.unwrap();
            }
            // Epochs 1-3 committed, each with its own page; epoch 4 in
            // flight, reverting to epoch 1's page.
            for (epoch, page) in [(1, 0), (2, 1), (3, 2), (4, 0)] {
                let m = proto_manifest(&template, epoch, &[pages[page].0, pages[3].0]);
                let marker = store.put_manifest(&m).await.unwrap();
                if epoch < 4 {
                    store.commit("main", epoch, &marker).await.unwrap();
                }
            }
        });
        let fx = Fixture::new();
        let gc = checkpoints_at_json(&fx, &location, &["gc", "--keep", "1", "--grace", "0s"]);
        assert_eq!(
            gc["epochs_deleted"],
            serde_json::json!([1, 2]),
            "{location}"
        );
        assert_eq!(gc["epochs_left"], serde_json::json!([3, 4]), "{location}");
        assert_eq!(
            gc["pages_deleted"], 1,
            "{location}: only epoch 2's own page"
        );
        let left: BTreeSet<Hash> = block_on(store.list_pages("main"))
            .unwrap()
            .iter()
            .map(|p| p.hash)
            .collect();
        let expected: BTreeSet<Hash> = [0, 2, 3].iter().map(|&i| pages[i].0).collect();
        assert_eq!(left, expected, "{location}");
        assert!(block_on(store.read_manifest("main", 4)).unwrap().is_some());
    }
}

/// The first epoch a run stores keeps pages of the checkpoint it resumed
/// from without writing them; if one is gone (a collector deleted that
/// checkpoint, which was not the newest), the epoch fails rather than
/// commit a checkpoint that cannot be restored.
#[test]
fn a_first_epoch_whose_kept_page_is_gone_is_not_committed_local_and_s3() {
    let (template, runtime, stores) = protocol_fixture("kept-page-gone");
    for (_dir, location) in stores {
        let (store, mut uploader) = uploader_at(&location, &runtime);
        let (gone, _) = page_bytes(7);
        let (fresh, fresh_bytes) = page_bytes(8);
        uploader.submit(EpochUpload {
            manifest: proto_manifest(&template, 5, &[gone, fresh]),
            fresh_pages: vec![(fresh, fresh_bytes)],
            components: Vec::new(),
        });
        match next_event(&mut uploader) {
            UploadEvent::Failed { epoch, error, .. } => {
                assert_eq!(epoch, 5);
                assert_contains(
                    &error.to_string(),
                    &[
                        &store.page_key("main", &gone),
                        "is gone, but epoch 5 reuses it from the checkpoint this run resumed from",
                        "the epoch is not committed",
                    ],
                );
            }
            UploadEvent::Committed(_) => panic!("{location}: committed with a page missing"),
        }
        let epochs = runtime.block_on(store.epochs("main")).unwrap();
        assert!(
            epochs.iter().all(|e| !e.committed),
            "{location}: {epochs:?}"
        );
    }
}
