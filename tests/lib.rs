//! Helpers shared by weir's integration tests: find the real `weir` binary
//! and the built operators, write pipeline files into a temporary directory,
//! run the binary, and check what it printed.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod services;
pub mod topics;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The `weir` binary built by `scripts/setup` (the same target directory as
/// this test binary, `debug` profile).
pub fn weir_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WEIR_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    let bin = exe.parent().unwrap().parent().unwrap().join("weir");
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/setup (or ./scripts/test) first",
        bin.display()
    );
    bin
}

/// A benchmark setting from the environment variable `name`, or `default`
/// when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A built operator component, e.g. `operator("faulty")`.
pub fn operator(name: &str) -> PathBuf {
    let path = repo_root()
        .join("operators/build")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/setup first",
        path.display()
    );
    path
}

/// What a run of the binary printed.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics unless the run succeeded.
    pub fn ok(self) -> Run {
        assert!(self.success, "weir failed:\n{}", self.stderr);
        self
    }

    /// Panics unless the run failed; returns the line(s) after `error: `.
    pub fn failed(self) -> String {
        assert!(
            !self.success,
            "weir succeeded but should have failed:\n{}",
            self.stderr
        );
        let at = self
            .stderr
            .find("error: ")
            .unwrap_or_else(|| panic!("no `error:` in stderr:\n{}", self.stderr));
        self.stderr[at..].to_owned()
    }
}

/// A pipeline named `test` over `input.csv` through the `faulty` operator
/// into an exactly-once `parts` sink at `out/main`, with the given batch
/// size and `[checkpoint]` settings.
pub fn faulty_parts_pipeline(batch: usize, checkpoint: &str) -> String {
    format!(
        r#"name = "test"
[source]
kind = "file"
path = "input.csv"
[[operators]]
name = "faulty"
component = {:?}
[sinks.main]
kind = "parts"
dir = "out/main"
[batch]
max_records = {batch}
[checkpoint]
{checkpoint}
"#,
        operator("faulty").display().to_string()
    )
}

/// What a reader of a `parts` sink's directory sees: the published parts,
/// concatenated in name order.
pub fn read_parts(dir: &Path) -> Vec<u8> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Not created yet (the sink was never opened): nothing to see.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let mut parts: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-"))
        })
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Asserts that `text` contains every one of `needles`.
#[track_caller]
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    }
}

/// A temporary directory holding a pipeline and its files.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes a file (creating directories).
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative))
            .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
    }

    /// Runs `weir ARGS...` in the fixture directory.
    pub fn weir(&self, args: &[&str]) -> Run {
        self.weir_with_env(args, &[])
    }

    /// Runs `weir ARGS...` in the fixture directory with extra environment.
    pub fn weir_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Command::new(weir_bin())
            .args(args)
            .current_dir(self.dir.path())
            .env("WEIR_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .unwrap()
            .into()
    }

    /// What `weir generate PROFILE --records N --seed S` prints.
    pub fn generate(&self, profile: &str, records: u64, seed: u64) -> String {
        let records = records.to_string();
        let seed = seed.to_string();
        let args = ["generate", profile, "--records", &records, "--seed", &seed];
        self.weir(&args).ok().stdout
    }

    /// Writes `pipeline.toml` and runs `weir run` on it.
    pub fn run_pipeline(&self, toml: &str) -> Run {
        self.write("pipeline.toml", toml);
        self.weir(&["run", "pipeline.toml"])
    }
}

/// A pipeline over `input.csv` with the given operator chain, a `main` file
/// sink at `out/main.csv`, and extra TOML appended.
pub fn pipeline(operators: &[(&str, &str, &str)], extra: &str) -> String {
    let mut toml =
        String::from("name = \"test\"\n[source]\nkind = \"file\"\npath = \"input.csv\"\n");
    for (name, component, config) in operators {
        toml += &format!(
            "[[operators]]\nname = \"{name}\"\ncomponent = {:?}\n[operators.config]\n{config}\n",
            operator(component).display().to_string()
        );
    }
    toml += "[sinks.main]\nkind = \"file\"\npath = \"out/main.csv\"\n";
    toml += extra;
    toml
}
