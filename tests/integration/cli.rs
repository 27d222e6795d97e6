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
    // A second run resumes from the checkpoint at the end of the input...
    let run = fx.weir(&["run", "pipeline.toml", "--json"]).ok();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["records_in"], 0);
    assert_eq!(summary["checkpoints"]["resumed_from"], 1);
    // ...unless told to start over.
    let run = fx
        .weir(&["run", "pipeline.toml", "--json", "--from-scratch"])
        .ok();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["records_in"], 3);
    assert_eq!(
        summary["checkpoints"]["resumed_from"],
        serde_json::Value::Null
    );
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

#[test]
fn sigterm_stops_at_a_batch_boundary_with_outputs_flushed_and_a_summary() {
    let fx = Fixture::new();
    let toml = pipeline(&[("faulty", "faulty", "")], "[batch]\nmax_records = 100\n").replace(
        "[source]\nkind = \"file\"\npath = \"input.csv\"\n",
        "[source]\nkind = \"generator\"\nprofile = \"rides\"\nrecords = 100000000\n",
    );
    fx.write("pipeline.toml", toml);
    let child = std::process::Command::new(weir_tests::weir_bin())
        .args(["run", "pipeline.toml"])
        .current_dir(fx.dir.path())
        .env("WEIR_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has produced output, then ask it to stop.
    let out = fx.path("out/main.csv");
    for _ in 0..200 {
        if std::fs::metadata(&out)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_contains(
        &stderr,
        &[
            "stopped on request before the end of the input",
            "error: stopped by a signal",
        ],
    );
    // Every output the summary counts is in the file, whole lines only.
    let written: u64 = stderr
        .lines()
        .find(|l| l.contains("sink main (file"))
        .and_then(|l| l.rsplit(": ").next())
        .and_then(|w| w.trim_end_matches(" written").parse().ok())
        .unwrap_or_else(|| panic!("no sink line in:\n{stderr}"));
    let content = fx.read("out/main.csv");
    assert!(written > 0 && written < 100_000_000);
    assert_eq!(content.lines().count() as u64, written);
    assert!(content.ends_with('\n'));
}
