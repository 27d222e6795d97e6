//! The bundled examples produce exactly what their independent Python
//! oracles compute from the same input.

use std::process::Command;

use weir_tests::{Fixture, read_parts, repo_root};

/// Runs `examples/<name>/pipeline.toml` (with its component paths made
/// absolute) on `records` generated records, and the example's oracle.
fn run_example(name: &str, records: u64, seed: u64, outputs: &[&str]) -> Fixture {
    run_example_with_env(name, records, seed, outputs, &[]).0
}

/// [`run_example`] with extra environment for `weir run`; also returns what
/// the run printed on stderr.
fn run_example_with_env(
    name: &str,
    records: u64,
    seed: u64,
    outputs: &[&str],
    env: &[(&str, &str)],
) -> (Fixture, String) {
    let fx = Fixture::new();
    let example = repo_root().join("examples").join(name);
    let generated = fx.generate(name, records, seed);
    fx.write("data/input.csv", &generated);
    let toml = std::fs::read_to_string(example.join("pipeline.toml")).unwrap();
    let build = repo_root().join("operators/build");
    fx.write(
        "pipeline.toml",
        toml.replace("../../operators/build", &build.display().to_string()),
    );
    let run = fx.weir_with_env(&["run", "pipeline.toml"], env).ok();
    assert!(
        run.stderr.contains(&format!("{records} records in")),
        "{}",
        run.stderr
    );

    let mut oracle = Command::new("python3");
    oracle
        .arg(example.join("expected.py"))
        .arg(fx.path("data/input.csv"));
    for out in outputs {
        oracle.arg(fx.path(&format!("expected/{out}")));
    }
    std::fs::create_dir_all(fx.path("expected")).unwrap();
    let status = oracle.status().unwrap();
    assert!(status.success(), "the oracle failed");
    for out in outputs {
        let dir = fx.path(&format!("out/{}", out.trim_end_matches(".csv")));
        let actual = read_parts(&dir);
        let expected = std::fs::read(fx.path(&format!("expected/{out}"))).unwrap();
        assert!(!expected.is_empty(), "the oracle produced an empty {out}");
        if actual != expected {
            let first = actual
                .split(|&b| b == b'\n')
                .zip(expected.split(|&b| b == b'\n'))
                .position(|(a, e)| a != e);
            panic!(
                "{name}: out/{out} differs from the oracle ({} vs {} bytes); first differing line: {first:?}",
                actual.len(),
                expected.len()
            );
        }
    }
    (fx, run.stderr)
}

#[test]
fn payments_output_equals_the_oracle() {
    let fx = run_example("payments", 100_000, 1, &["ledger.csv"]);
    let ledger = String::from_utf8(read_parts(&fx.path("out/ledger"))).unwrap();
    let rows = ledger.lines().count();
    // Duplicate deliveries were removed: fewer rows than events, and every
    // idempotency key appears once.
    assert!(rows < 100_000 && rows > 70_000, "{rows} ledger rows");
    let mut keys: Vec<&str> = ledger
        .lines()
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        rows,
        "an idempotency key appears twice in the ledger"
    );
}

#[test]
fn rides_output_equals_the_oracle() {
    let env = [("WEIR_LOG", "weir::operator=debug")];
    let (fx, log) = run_example_with_env("rides", 50_000, 2, &["revenue.csv", "late.csv"], &env);
    // Components built with the SDK take their batches packed.
    assert!(
        log.contains("batches go through packed-handler.process-packed"),
        "{log}"
    );
    assert!(
        !read_parts(&fx.path("out/late")).is_empty(),
        "the data set should have late rides"
    );
}

/// The SDK exports both `handler.process` and `process-packed`; weir uses
/// the packed one. Components of v0.1 have only `process`: the same example
/// through it gives the same output.
#[test]
fn payments_output_equals_the_oracle_through_unpacked_process() {
    let env = [
        (weir::operator::NO_PACKED_BATCHES_ENV, "1"),
        ("WEIR_LOG", "weir::operator=debug"),
    ];
    let (_, log) = run_example_with_env("payments", 20_000, 3, &["ledger.csv"], &env);
    assert!(log.contains("batches go through handler.process"), "{log}");
    assert!(!log.contains("process-packed"), "{log}");
}
