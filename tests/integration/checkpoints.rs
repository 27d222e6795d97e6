//! Checkpoints through the real binary: the seed-002 scenario, snapshot
//! fidelity, refusal of components whose state cannot be captured, and
//! damaged checkpoints.

use std::path::PathBuf;

use weir::checkpoint::Manifest;
use weir_tests::{
    Fixture, Run, assert_contains, faulty_parts_pipeline, operator, read_parts, weir_bin,
};

fn run_json(fx: &Fixture, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", "pipeline.toml", "--json"];
    args.extend_from_slice(extra);
    let run = fx.weir(&args).ok();
    serde_json::from_str(&run.stdout).unwrap()
}

/// Runs with `WEIR_CRASH_AT=<point>` and checks weir died by SIGKILL there.
fn run_until_crash(fx: &Fixture, point: &str) {
    let output = std::process::Command::new(weir_bin())
        .args(["run", "pipeline.toml"])
        .current_dir(fx.dir.path())
        .env("WEIR_LOG", "warn")
        .env("WEIR_CRASH_AT", point)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        None,
        "weir was not killed at {point}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        &[&format!(
            "crashing at `{}`",
            point.split(':').next().unwrap()
        )],
    );
}

fn output(fx: &Fixture) -> String {
    String::from_utf8(read_parts(&fx.path("out/main"))).unwrap()
}

/// Seed 002: five records, a running count, a crash after the sink write
/// but before the commit. The naive processor of the seed ends with six
/// rows (counts 1..6, offset 2 twice); weir's committed output has five
/// rows with counts 1..5.
#[test]
fn seed_002_crash_after_sink_write_before_commit_leaves_five_rows_counting_1_to_5() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nb\nc\nd\ne\n");
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(1, "interval_records = 2\ninterval_ms = 0"),
    );
    // Records a and b are checkpointed (epoch 1); c is processed and its
    // row written to the sink, then weir is killed before any commit.
    run_until_crash(&fx, "after-sink-write:3");
    let after_crash = output(&fx);
    assert!(
        after_crash.is_empty() || after_crash == "seen 1: a\nseen 2: b\n",
        "a reader saw uncommitted output: {after_crash:?}"
    );
    // Epoch 1 (a, b) may or may not have committed before the kill (its
    // upload runs in the background); either way c's epoch had not.
    let summary = run_json(&fx, &[]);
    let resumed = &summary["checkpoints"]["resumed_from"];
    assert!(resumed.is_null() || *resumed == 1, "{summary}");
    assert_eq!(
        output(&fx),
        "seen 1: a\nseen 2: b\nseen 3: c\nseen 4: d\nseen 5: e\n"
    );
}

/// Two runs over the same input: one with a barrier after every batch, one
/// whose only barrier is at the end. Same outputs, same final state (every
/// memory byte, memory size, global and held handle).
fn barriers_do_not_perturb(fx_input: &str, pipeline: &dyn Fn(&str) -> String, batches: u64) {
    let every = Fixture::new();
    every.write("input.csv", fx_input);
    every.write(
        "pipeline.toml",
        pipeline("interval_records = 1\ninterval_ms = 0"),
    );
    let every_summary = run_json(&every, &[]);
    assert_eq!(every_summary["checkpoints"]["committed"], batches);

    let once = Fixture::new();
    once.write("input.csv", fx_input);
    once.write(
        "pipeline.toml",
        pipeline("interval_records = 1000000000\ninterval_ms = 0"),
    );
    let once_summary = run_json(&once, &[]);
    assert_eq!(once_summary["checkpoints"]["committed"], 1);

    assert_eq!(
        read_parts(&every.path("out/main")),
        read_parts(&once.path("out/main"))
    );
    assert!(every_summary["checkpoints"]["state_hash"].is_string());
    assert_eq!(
        every_summary["checkpoints"]["state_hash"],
        once_summary["checkpoints"]["state_hash"]
    );
}

#[test]
fn a_barrier_after_every_batch_does_not_perturb_a_guest_that_prints() {
    // `print:` makes the guest print (so it holds WASI stream handles).
    let input: String = (0..300)
        .map(|i| {
            if i % 7 == 0 {
                format!("print:line {i}\n")
            } else {
                format!("r{i}\n")
            }
        })
        .collect();
    barriers_do_not_perturb(&input, &|c| faulty_parts_pipeline(16, c), 300 / 16 + 1);
}

#[test]
fn a_barrier_after_every_batch_does_not_perturb_the_payments_operator() {
    let fx = Fixture::new();
    let generated = fx
        .weir(&["generate", "payments", "--records", "20000", "--seed", "3"])
        .ok();
    let input = generated.stdout;
    let pipeline = |checkpoint: &str| {
        format!(
            r#"name = "payments"
[source]
kind = "file"
path = "input.csv"
[[operators]]
name = "dedup"
component = {:?}
[operators.config]
ttl_minutes = 60
[sinks.main]
kind = "parts"
dir = "out/main"
[batch]
max_records = 512
[checkpoint]
{checkpoint}
"#,
            operator("payments-dedup").display().to_string()
        )
    };
    barriers_do_not_perturb(&input, &pipeline, 20000 / 512 + 1);
}

#[test]
fn a_restored_instance_continues_exactly_as_the_original() {
    let input: String = (0..200)
        .map(|i| {
            if i % 5 == 0 {
                format!("print:p{i}\n")
            } else {
                format!("r{i}\n")
            }
        })
        .collect();
    let checkpoint = "interval_records = 20\ninterval_ms = 0";
    let reference = Fixture::new();
    reference.write("input.csv", &input);
    reference.write("pipeline.toml", faulty_parts_pipeline(10, checkpoint));
    let expected = run_json(&reference, &[]);

    for point in ["after-commit:3", "before-commit:4", "after-sink-write:5"] {
        let fx = Fixture::new();
        fx.write("input.csv", &input);
        fx.write("pipeline.toml", faulty_parts_pipeline(10, checkpoint));
        run_until_crash(&fx, point);
        let resumed = run_json(&fx, &[]);
        assert!(
            resumed["checkpoints"]["resumed_from"].is_u64(),
            "{point}: {resumed}"
        );
        assert_eq!(output(&fx), output(&reference), "{point}");
        assert_eq!(
            resumed["checkpoints"]["state_hash"], expected["checkpoints"]["state_hash"],
            "{point}: the restored instance ended in a different state"
        );
    }
}

#[test]
fn a_component_whose_state_cannot_be_captured_is_refused_at_load() {
    let fx = Fixture::new();
    let component = wat::parse_str(
        r#"(component
             (core module $m
               (table 1 funcref)
               (func (export "grow") (drop (table.grow (ref.null func) (i32.const 1)))))
             (core instance (instantiate $m)))"#,
    )
    .unwrap();
    fx.write("grows-table.wasm", component);
    fx.write("input.csv", "a\n");
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(1, "").replace(
            &format!("{:?}", operator("faulty").display().to_string()),
            "\"grows-table.wasm\"",
        ),
    );
    let message = fx.weir(&["validate", "pipeline.toml"]).failed();
    assert_contains(
        &message,
        &[
            "operator `faulty`",
            "grows-table.wasm",
            "weir cannot checkpoint this component's state, so it refuses to run it",
            "`table.grow` mutates a table, and tables are not part of a snapshot",
        ],
    );
}

/// A finished run with several committed checkpoints, for damaging.
fn finished_run() -> (Fixture, String) {
    let fx = Fixture::new();
    let input: String = (0..100).map(|i| format!("r{i}\n")).collect();
    fx.write("input.csv", &input);
    fx.write(
        "pipeline.toml",
        faulty_parts_pipeline(10, "interval_records = 30\ninterval_ms = 0\nkeep = 3"),
    );
    run_json(&fx, &[]);
    let out = output(&fx);
    (fx, out)
}

fn epoch_dir(fx: &Fixture, epoch: u64) -> PathBuf {
    fx.path(&format!("weir-data/test/tasks/main/epochs/{epoch:020}"))
}

fn manifest(fx: &Fixture, epoch: u64) -> Manifest {
    Manifest::decode(&std::fs::read(epoch_dir(fx, epoch).join("manifest")).unwrap()).unwrap()
}

/// A page of the newest epoch (4) that epoch 3 does not have.
fn page_only_in_newest(fx: &Fixture) -> PathBuf {
    let pages = |m: &Manifest| -> Vec<_> {
        m.operators
            .iter()
            .flat_map(|o| &o.memories)
            .flat_map(|m| m.pages.clone())
            .collect()
    };
    let older = pages(&manifest(fx, 3));
    let hash = pages(&manifest(fx, 4))
        .into_iter()
        .find(|p| !older.contains(p))
        .expect("epoch 4 changed a page");
    let hex = hash.to_string();
    fx.path(&format!(
        "weir-data/test/tasks/main/pages/{}/{hex}",
        &hex[..2]
    ))
}

/// After damaging epoch 4 (the newest), a run says so, falls back to epoch
/// 3, replays the rest of the input and leaves the output exactly as it was.
fn falls_back_from_damaged_epoch_4(fx: &Fixture, out: &str, damage: &str) {
    let run: Run = fx.weir(&["run", "pipeline.toml"]).ok();
    assert_contains(
        &run.stderr,
        &[
            "checkpoint epoch 4 cannot be restored",
            damage,
            "falling back to the previous committed checkpoint",
            "resumed from epoch 3; skipped damaged epoch 4",
        ],
    );
    assert_eq!(output(fx), out, "the output changed after the fallback");
}

#[test]
fn a_flipped_byte_in_a_page_is_detected_and_the_previous_checkpoint_used() {
    let (fx, out) = finished_run();
    let page = page_only_in_newest(&fx);
    let mut bytes = std::fs::read(&page).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&page, bytes).unwrap();
    falls_back_from_damaged_epoch_4(&fx, &out, "is corrupt: its blake3 is");
}

#[test]
fn a_missing_page_is_detected_and_the_previous_checkpoint_used() {
    let (fx, out) = finished_run();
    std::fs::remove_file(page_only_in_newest(&fx)).unwrap();
    falls_back_from_damaged_epoch_4(&fx, &out, "does not exist");
}

#[test]
fn a_truncated_manifest_is_detected_and_the_previous_checkpoint_used() {
    let (fx, out) = finished_run();
    let path = epoch_dir(&fx, 4).join("manifest");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    falls_back_from_damaged_epoch_4(&fx, &out, "manifest is corrupt");
}

#[test]
fn when_every_checkpoint_is_damaged_weir_refuses_to_start_from_empty() {
    let (fx, out) = finished_run();
    for epoch in [2, 3, 4] {
        let path = epoch_dir(&fx, epoch).join("manifest");
        std::fs::write(&path, b"garbage").unwrap();
    }
    let message = fx.weir(&["run", "pipeline.toml"]).failed();
    assert_contains(
        &message,
        &[
            "task main has committed checkpoints, but none can be restored",
            "epoch 4: ",
            "epoch 2: ",
            "weir will not silently start from empty state",
            "--from-scratch",
        ],
    );
    assert_eq!(
        output(&fx),
        out,
        "a refused start must not touch the output"
    );
    // The explicit way out works and produces the same output again.
    run_json(&fx, &["--from-scratch"]);
    assert_eq!(output(&fx), out);
}

/// A trap after several checkpoints: the operators are restored from the
/// newest checkpoint (not rebuilt from the start of the input), the records
/// since are replayed, and the count continues exactly.
#[test]
fn a_fault_after_checkpoints_restores_the_newest_one_and_loses_nothing() {
    let fx = Fixture::new();
    let mut input: String = (1..=47).map(|i| format!("r{i}\n")).collect();
    input += "trap\n";
    input += &(48..=60).map(|i| format!("r{i}\n")).collect::<String>();
    fx.write("input.csv", &input);
    let toml = faulty_parts_pipeline(5, "interval_records = 10\ninterval_ms = 0").replace(
        "[batch]",
        "[sinks.dlq]\nkind = \"file\"\npath = \"out/dlq.jsonl\"\n[errors]\npolicy = \"dead-letter\"\ndead_letter_sink = \"dlq\"\n[batch]",
    );
    fx.write("pipeline.toml", toml);
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    // Once to run the faulting batch record by record, once after removing
    // the record that traps; both from epoch 4 (records 1..=40).
    assert_eq!(summary["recoveries"], 2, "{summary}");
    assert_eq!(summary["dead_letters"], 1, "{summary}");
    assert_contains(
        &run.stderr,
        &["restoring the operators from checkpoint epoch 4 and replaying"],
    );
    assert!(!run.stderr.contains("since the start"), "{}", run.stderr);
    let expected: String = (1..=60).map(|i| format!("seen {i}: r{i}\n")).collect();
    assert_eq!(output(&fx), expected);
    assert_contains(&fx.read("out/dlq.jsonl"), &["line 48", "trap"]);
}

/// Dirty-page tracking only decides which pages a capture hashes; every
/// checkpoint must name exactly the pages that hashing all of memory names.
#[test]
fn checkpoints_with_dirty_page_tracking_equal_checkpoints_from_hashing_every_page() {
    let manifests = |tracking: bool| -> Vec<Manifest> {
        let fx = Fixture::new();
        let generated = fx
            .weir(&["generate", "payments", "--records", "30000", "--seed", "5"])
            .ok();
        fx.write("input.csv", &generated.stdout);
        fx.write(
            "pipeline.toml",
            faulty_parts_pipeline(256, "interval_records = 1024\ninterval_ms = 0\nkeep = 1000")
                .replace(
                    &format!("{:?}", operator("faulty").display().to_string()),
                    &format!(
                        "{:?}\n[operators.config]\nttl_minutes = 60",
                        operator("payments-dedup").display().to_string()
                    ),
                ),
        );
        let mut command = std::process::Command::new(weir_bin());
        command
            .args(["run", "pipeline.toml"])
            .current_dir(fx.dir.path())
            .env("WEIR_LOG", "warn");
        if !tracking {
            command.env(weir::operator::NO_DIRTY_TRACKING_ENV, "1");
        }
        let run: Run = command.output().unwrap().into();
        run.ok();
        (1..=30000u64.div_ceil(1024))
            .map(|epoch| {
                let mut m = manifest(&fx, epoch);
                m.created_unix_ms = 0;
                m.stats = Default::default();
                // Recorded inputs differ between runs (times, seeds).
                m.journal = None;
                m
            })
            .collect()
    };
    let tracked = manifests(true);
    let hashed = manifests(false);
    assert_eq!(tracked.len(), 30);
    for (t, h) in tracked.iter().zip(&hashed) {
        assert!(
            t == h,
            "epoch {}: tracked and fully hashed checkpoints differ",
            t.epoch
        );
    }
}

#[test]
fn resuming_with_a_different_component_is_refused_with_what_to_do() {
    let (fx, out) = finished_run();
    let toml = std::fs::read_to_string(fx.path("pipeline.toml"))
        .unwrap()
        .replace(
            &format!("{:?}", operator("faulty").display().to_string()),
            &format!("{:?}", operator("rides-revenue").display().to_string()),
        );
    fx.write("pipeline.toml", toml);
    let message = fx.weir(&["run", "pipeline.toml"]).failed();
    assert_contains(
        &message,
        &[
            "operator `faulty`: cannot restore state: the checkpoint was taken with component",
            "--from-scratch",
        ],
    );
    assert_eq!(output(&fx), out);
}
