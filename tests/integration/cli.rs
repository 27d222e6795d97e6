//! The `weir` command's surface: help, validate, generate, the summary.

use weir_tests::{Fixture, assert_contains, pipeline, repo_root};

#[test]
fn help_explains_the_commands() {
    let run = Fixture::new().weir(&["--help"]).ok();
    assert_contains(&run.stdout, &["run", "validate", "generate", "WEIR_LOG"]);
    let run = Fixture::new().weir(&["run", "--help"]).ok();
    assert_contains(&run.stdout, &["The pipeline file", "--json"]);
}

#[test]
fn validate_accepts_both_examples() {
    for (example, operator) in [("payments", "dedup"), ("rides", "revenue")] {
        let path = repo_root()
            .join("examples")
            .join(example)
            .join("pipeline.toml");
        let run = Fixture::new()
            .weir(&["validate", path.to_str().unwrap()])
            .ok();
        assert_contains(&run.stdout, &["ok (1 operator(s): ", operator]);
    }
}

#[test]
fn generate_is_deterministic_per_seed() {
    let fx = Fixture::new();
    let a = fx
        .weir(&["generate", "payments", "--records", "20000", "--seed", "3"])
        .ok()
        .stdout;
    let b = fx
        .weir(&["generate", "payments", "--records", "20000", "--seed", "3"])
        .ok()
        .stdout;
    let c = fx
        .weir(&["generate", "payments", "--records", "20000", "--seed", "4"])
        .ok()
        .stdout;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.lines().count(), 20000);
    let mean = a.len() / 20000;
    assert!((85..=115).contains(&mean), "mean record size {mean} bytes");
    // Some payments are delivered more than once (re-deliveries point 1,000
    // to 10,000 deliveries back).
    let mut keys: Vec<&str> = a.lines().map(|l| l.split(',').next().unwrap()).collect();
    keys.sort_unstable();
    let total = keys.len();
    keys.dedup();
    assert!(
        keys.len() < total * 95 / 100,
        "{} distinct keys in {total}",
        keys.len()
    );
}

#[test]
fn summary_counts_records_per_operator_and_sink() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nb\nc\n");
    let run = fx
        .run_pipeline(&pipeline(&[("faulty", "faulty", "")], ""))
        .ok();
    assert_contains(
        &run.stderr,
        &[
            "pipeline test: 3 records in, 3 out",
            "operator  faulty: 3 in, 3 out, 0 rejected, 0 faults",
            "sink main (file",
            "3 written",
        ],
    );
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["records_in"], 3);
    assert_eq!(summary["operators"][0]["outputs"], 3);
}

#[test]
fn a_chain_of_two_operators_feeds_the_first_into_the_second() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nb\n");
    let toml = pipeline(&[("first", "faulty", ""), ("second", "faulty", "")], "");
    fx.run_pipeline(&toml).ok();
    assert_eq!(
        fx.read("out/main.csv"),
        "seen 1: seen 1: a\nseen 2: seen 2: b\n"
    );
}

#[test]
fn components_are_compiled_once_and_cached_on_disk() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\n");
    fx.write("pipeline.toml", pipeline(&[("faulty", "faulty", "")], ""));
    let cache = fx.path("cache");
    let cached = || -> Vec<std::path::PathBuf> {
        match std::fs::read_dir(cache.join("components")) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    };
    let run = |fx: &Fixture| {
        fx.weir(&[
            "run",
            "pipeline.toml",
            "--cache-dir",
            cache.to_str().unwrap(),
        ])
        .ok()
    };
    run(&fx);
    let files = cached();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    let modified = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    run(&fx);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        modified,
        "the cached component was rewritten"
    );
    // A damaged cache entry is not trusted: weir recompiles and replaces it.
    std::fs::write(&files[0], b"garbage").unwrap();
    assert_eq!(fx.read("out/main.csv"), "seen 1: a\n");
    let rerun = run(&fx);
    assert_contains(&rerun.stderr, &["ignoring unusable cached component"]);
    assert_eq!(fx.read("out/main.csv"), "seen 1: a\n");
    assert_ne!(std::fs::read(&files[0]).unwrap(), b"garbage");
}
