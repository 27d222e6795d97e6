//! Bad input never panics the runtime and never loses a record silently:
//! each case gets a message that names the thing, and the dead-letter policy
//! keeps going with the operator's state intact.

use weir_tests::{Fixture, assert_contains, operator, pipeline};

const DEAD_LETTER: &str = "[sinks.dlq]\nkind = \"file\"\npath = \"out/dlq.jsonl\"\n[errors]\npolicy = \"dead-letter\"\ndead_letter_sink = \"dlq\"\n";

fn faulty(extra: &str) -> String {
    pipeline(&[("faulty", "faulty", "")], extra)
}

/// A pipeline whose only operator is the component at `component`.
fn with_component(fx: &Fixture, component: &std::path::Path) -> String {
    fx.write("input.csv", "a\n");
    format!(
        "name = \"t\"\n[source]\nkind = \"file\"\npath = \"input.csv\"\n[[operators]]\nname = \"op\"\ncomponent = {:?}\n[sinks.main]\nkind = \"stdout\"\n",
        component.display().to_string()
    )
}

fn refused_component(bytes: &[u8]) -> String {
    let fx = Fixture::new();
    let path = fx.write("op.wasm", bytes);
    let toml = with_component(&fx, &path);
    let err = fx.run_pipeline(&toml).failed();
    // `validate` refuses it the same way, without running.
    let validate = fx.weir(&["validate", "pipeline.toml"]).failed();
    assert_eq!(err.lines().next(), validate.lines().next());
    assert_contains(&err, &["operator `op`", "op.wasm"]);
    err
}

#[test]
fn invalid_wasm_is_refused() {
    let err = refused_component(b"this is not wasm");
    assert_contains(&err, &["not a WebAssembly component"]);
}

#[test]
fn core_module_is_refused_with_a_hint() {
    let err = refused_component(&wat::parse_str("(module (func (export \"process\")))").unwrap());
    assert_contains(
        &err,
        &["core WebAssembly module, not a component", "wasm32-wasip2"],
    );
}

#[test]
fn component_without_the_operator_world_is_refused() {
    let err = refused_component(&wat::parse_str("(component)").unwrap());
    assert_contains(
        &err,
        &[
            "does not implement the weir operator world",
            "weir:operator/handler@0.1.0",
            "its exports: none",
        ],
    );
}

#[test]
fn component_built_for_another_wit_version_is_refused() {
    let wat = r#"(component (instance $i) (export "weir:operator/handler@0.2.0" (instance $i)))"#;
    let err = refused_component(&wat::parse_str(wat).unwrap());
    assert_contains(
        &err,
        &[
            "implements `weir:operator/handler@0.2.0`",
            "this weir runs `weir:operator/handler@0.1.0`",
            "rebuild",
        ],
    );
}

#[test]
fn corrupt_component_is_refused() {
    let mut bytes = std::fs::read(operator("faulty")).unwrap();
    bytes.truncate(bytes.len() / 2);
    let err = refused_component(&bytes);
    assert_contains(&err, &["invalid component"]);
}

#[test]
fn trap_stops_the_pipeline_naming_operator_position_and_trap() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nb\ntrap\nc\n");
    let err = fx.run_pipeline(&faulty("")).failed();
    assert_contains(
        &err,
        &[
            "operator `faulty` failed on file",
            "input.csv line 3 (byte 4)",
            "trapped:",
            "faulty: trap requested",
            "policy = \"dead-letter\"",
        ],
    );
    // The records before the trap were processed and written.
    assert_eq!(fx.read("out/main.csv"), "seen 1: a\nseen 2: b\n");
}

#[test]
fn trap_with_dead_letter_policy_removes_the_record_and_keeps_state() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nb\ntrap\nc\nd\n");
    let run = fx.run_pipeline(&faulty(DEAD_LETTER)).ok();
    // The count is the operator's in-memory state: it survived the trap,
    // and the trapping record never counted.
    assert_eq!(
        fx.read("out/main.csv"),
        "seen 1: a\nseen 2: b\nseen 3: c\nseen 4: d\n"
    );
    let dlq = fx.read("out/dlq.jsonl");
    assert_eq!(dlq.lines().count(), 1, "{dlq}");
    let letter: serde_json::Value = serde_json::from_str(dlq.trim()).unwrap();
    assert_eq!(letter["operator"], "faulty");
    assert_eq!(letter["position"], "line 3 (byte 4)");
    assert_eq!(letter["value"], "trap");
    assert_contains(
        letter["reason"].as_str().unwrap(),
        &["trapped", "faulty: trap requested"],
    );
    assert_contains(&run.stderr, &["dead letters: 1", "recoveries by replay: 2"]);
}

#[test]
fn fuel_exhaustion_is_reported_as_cpu_limit() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nspin\nb\n");
    let err = fx
        .run_pipeline(&faulty("[limits]\nfuel_per_record = 2000000\n"))
        .failed();
    assert_contains(
        &err,
        &[
            "operator `faulty`",
            "line 2",
            "CPU limit exceeded",
            "limits.fuel_per_record",
        ],
    );
}

#[test]
fn fuel_exhaustion_with_dead_letter_policy_continues() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nspin\nb\n");
    fx.run_pipeline(&faulty(&format!(
        "[limits]\nfuel_per_record = 2000000\n{DEAD_LETTER}"
    )))
    .ok();
    assert_eq!(fx.read("out/main.csv"), "seen 1: a\nseen 2: b\n");
    assert_contains(
        &fx.read("out/dlq.jsonl"),
        &["\"value\":\"spin\"", "CPU limit exceeded"],
    );
}

#[test]
fn memory_limit_is_reported() {
    let fx = Fixture::new();
    fx.write("input.csv", "grow\n");
    // Enough fuel to reach the limit: the guest zeroes each chunk it allocates.
    let err = fx
        .run_pipeline(&faulty(
            "[limits]\nmemory_mib = 32\nfuel_per_record = 4000000000\n",
        ))
        .failed();
    assert_contains(
        &err,
        &[
            "operator `faulty`",
            "line 1",
            "memory limit reached",
            "limits.memory_mib = 32",
        ],
    );
}

#[test]
fn rejected_record_stops_or_goes_to_dead_letters() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\nreject\nb\n");
    let err = fx.run_pipeline(&faulty("")).failed();
    assert_contains(
        &err,
        &[
            "operator `faulty` rejected the record at file",
            "line 2 (byte 2)",
            "faulty: rejected on request",
        ],
    );

    let fx = Fixture::new();
    fx.write("input.csv", "a\nreject\nb\n");
    fx.run_pipeline(&faulty(DEAD_LETTER)).ok();
    assert_eq!(fx.read("out/main.csv"), "seen 1: a\nseen 2: b\n");
    assert_contains(
        &fx.read("out/dlq.jsonl"),
        &[
            "\"reason\":\"faulty: rejected on request\"",
            "\"value\":\"reject\"",
        ],
    );
}

#[test]
fn malformed_input_line_stops_or_goes_to_dead_letters() {
    let toml = |extra: &str| {
        pipeline(&[("faulty", "faulty", "")], extra).replace(
            "path = \"input.csv\"\n",
            "path = \"input.csv\"\nformat = \"jsonl\"\n",
        )
    };
    let input = "{\"value\":\"a\"}\n{\"value\": 3}\n{\"value\":\"b\"}\n";
    let fx = Fixture::new();
    fx.write("input.csv", input);
    let err = fx.run_pipeline(&toml("")).failed();
    assert_contains(
        &err,
        &["input.csv: malformed record at line 2", "not a JSON record"],
    );

    let fx = Fixture::new();
    fx.write("input.csv", input);
    let run = fx.run_pipeline(&toml(DEAD_LETTER)).ok();
    assert_eq!(fx.read("out/main.csv"), "seen 1: a\nseen 2: b\n");
    assert_contains(
        &fx.read("out/dlq.jsonl"),
        &[
            "\"position\":\"line 2 (byte 14)\"",
            "not a JSON record",
            "\"operator\":null",
        ],
    );
    assert_contains(
        &run.stderr,
        &["3 records in".replace('3', "2").as_str(), "1 malformed"],
    );
}

#[test]
fn overlong_line_is_malformed() {
    let fx = Fixture::new();
    fx.write("input.csv", format!("a\n{}\nb\n", "x".repeat(5000)));
    let toml = faulty("").replace(
        "path = \"input.csv\"\n",
        "path = \"input.csv\"\nmax_line_bytes = 4096\n",
    );
    let err = fx.run_pipeline(&toml).failed();
    assert_contains(
        &err,
        &[
            "malformed record at line 2",
            "longer than max_line_bytes = 4096",
        ],
    );
}

#[test]
fn missing_files_are_named() {
    let fx = Fixture::new();
    let err = fx.run_pipeline(&faulty("")).failed();
    assert_contains(&err, &["file", "input.csv", "open", "No such file"]);

    let fx = Fixture::new();
    let err = fx
        .run_pipeline(&with_component(&fx, &fx.path("nowhere/op.wasm")))
        .failed();
    assert_contains(
        &err,
        &[
            "operator `op`",
            "nowhere/op.wasm",
            "cannot read the component",
        ],
    );

    let fx = Fixture::new();
    let err = fx.weir(&["run", "absent.toml"]).failed();
    assert_contains(&err, &["cannot read pipeline file absent.toml"]);
}

#[test]
fn init_error_is_reported() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\n");
    let err = fx
        .run_pipeline(&pipeline(
            &[(
                "faulty",
                "faulty",
                "init_error = \"threshold must be positive\"",
            )],
            "",
        ))
        .failed();
    assert_contains(
        &err,
        &["operator `faulty`: init failed: threshold must be positive"],
    );
}

#[test]
fn output_to_a_missing_sink_is_named() {
    let fx = Fixture::new();
    // The second ride is 3 hours older than the first: late, so the rides
    // operator sends it to the `late` sink, which this pipeline lacks.
    fx.write(
        "input.csv",
        "ride-1,5,1700010800000,1700011000000,500,0\nride-2,5,1700000000000,1700000100000,500,0\n",
    );
    let err = fx
        .run_pipeline(&pipeline(&[("revenue", "rides-revenue", "")], ""))
        .failed();
    assert_contains(
        &err,
        &[
            "operator `revenue` wrote to sink `late`",
            "no sink of that name (sinks: main)",
            "[sinks.late]",
        ],
    );
}

#[test]
fn pipeline_file_errors_name_line_column_and_key() {
    let fx = Fixture::new();
    fx.write("input.csv", "a\n");
    let err = fx
        .run_pipeline(&faulty("[batch]\nmax_recods = 10\n"))
        .failed();
    assert_contains(
        &err,
        &[
            "pipeline.toml:",
            "unknown field `max_recods`",
            "max_records",
        ],
    );
    let line_col = err.split("pipeline.toml:").nth(1).unwrap();
    let expected_line = faulty("").lines().count() + 2;
    assert!(
        line_col.starts_with(&format!("{expected_line}:1:")),
        "{err}"
    );
}
