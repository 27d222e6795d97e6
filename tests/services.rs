//! The real servers the integration tests talk to: an S3-compatible object
//! store and a Kafka broker, both on loopback. `./scripts/test` starts them
//! and exports where they are; a test that needs one calls the function
//! here, which panics with what to do when the variable is missing (a test
//! never skips because a server is not there).
//!
//! By hand, from the repository root:
//!
//! ```sh
//! eval "$(scripts/services/s3 start)"
//! export WEIR_KAFKA_BOOTSTRAP="$(scripts/services/kafka start)"
//! export WEIR_TEST_PYTHON=~/.cache/weir/venv-tests/bin/python   # made by ./scripts/test
//! cargo test -p weir-tests --test integration -- s3::
//! scripts/services/kafka stop; scripts/services/s3 stop
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::repo_root;

const HOW: &str = "run ./scripts/test, which starts the test servers, or start them yourself (see tests/services.rs)";

/// The value of `var`, which a test server's start script provides.
#[track_caller]
fn required(var: &str, what: &str, start: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{var} is not set, so {what} is unknown: {HOW}, e.g. `{start}`"),
    }
}

/// Where the S3-compatible server is and how to sign requests to it: what
/// `scripts/services/s3 start` exports.
#[derive(Debug, Clone)]
pub struct S3Env {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl S3Env {
    /// The `AWS_*` variables a `weir` process needs to use this server (what
    /// `scripts/services/s3 start` prints), for `Command::envs`.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
        ]
    }

    /// Creates `bucket` (an S3 `CreateBucket`, signed by curl).
    #[track_caller]
    pub fn create_bucket(&self, bucket: &str) {
        let out = Command::new("curl")
            .args(["-sS", "-X", "PUT", "-w", "\n%{http_code}"])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key_id, self.secret_access_key))
            .arg(format!("{}/{bucket}", self.endpoint))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.trim_end().ends_with("200"),
            "cannot create bucket {bucket} at {}: {text}{}",
            self.endpoint,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new, empty bucket with a name no other test uses.
    #[track_caller]
    pub fn fresh_bucket(&self, hint: &str) -> String {
        let bucket = unique_bucket_name(hint);
        self.create_bucket(&bucket);
        bucket
    }
}

/// The S3 server `./scripts/test` started (the `AWS_*` variables of
/// `scripts/services/s3 start`, which this process also passes on to the
/// `weir` processes it starts).
#[track_caller]
pub fn s3_env() -> S3Env {
    let start = "eval \"$(scripts/services/s3 start)\"";
    S3Env {
        endpoint: required("AWS_ENDPOINT_URL", "the S3 endpoint", start),
        access_key_id: required("AWS_ACCESS_KEY_ID", "the S3 access key", start),
        secret_access_key: required("AWS_SECRET_ACCESS_KEY", "the S3 secret key", start),
        region: required("AWS_REGION", "the S3 region", start),
    }
}

/// A fresh, uniquely named bucket on the test S3 server.
#[track_caller]
pub fn fresh_bucket(hint: &str) -> String {
    s3_env().fresh_bucket(hint)
}

/// `host:port` of the test Kafka broker.
#[track_caller]
pub fn kafka_bootstrap() -> String {
    required(
        "WEIR_KAFKA_BOOTSTRAP",
        "the Kafka broker",
        "export WEIR_KAFKA_BOOTSTRAP=\"$(scripts/services/kafka start)\"",
    )
}

/// A python with the independent clients the tests check outputs with
/// (`confluent-kafka`, `boto3`), from the venv `./scripts/test` keeps in
/// `~/.cache/weir/venv-tests`.
#[track_caller]
pub fn test_python() -> PathBuf {
    let python = PathBuf::from(required(
        "WEIR_TEST_PYTHON",
        "the python with confluent-kafka and boto3",
        "export WEIR_TEST_PYTHON=~/.cache/weir/venv-tests/bin/python",
    ));
    assert!(
        python.exists(),
        "WEIR_TEST_PYTHON={} does not exist: {HOW}",
        python.display()
    );
    python
}

/// A bucket name (3-63 of `a-z0-9-`) unique to this process and call.
pub fn unique_bucket_name(hint: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let hint: String = hint
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    format!(
        "weir-{}-{n}-{nanos:x}-{}",
        std::process::id(),
        hint.trim_matches('-')
    )
    .trim_end_matches('-')
    .to_owned()
}

/// An S3 server of this test's own (same backend as the shared one, on a
/// free port, in a temporary run directory), for tests that stop or freeze
/// the server and must not disturb others. Stopped when dropped.
pub struct PrivateS3 {
    run: tempfile::TempDir,
    port: u16,
    pub env: S3Env,
    pub pid: u32,
}

impl PrivateS3 {
    /// Starts it with `scripts/services/s3 start` (bounded wait).
    #[track_caller]
    pub fn start() -> PrivateS3 {
        let run = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = PrivateS3::script(run.path(), port, "start");
        assert!(
            out.status.success(),
            "cannot start a private S3 server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("`s3 start` printed no {name}:\n{printed}"))
                .to_owned()
        };
        let env = S3Env {
            endpoint: var("AWS_ENDPOINT_URL"),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            region: var("AWS_REGION"),
        };
        let pid = std::fs::read_to_string(run.path().join("s3/s3.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        PrivateS3 {
            run,
            port,
            env,
            pid,
        }
    }

    fn script(run: &std::path::Path, port: u16, command: &str) -> std::process::Output {
        Command::new(repo_root().join("scripts/services/s3"))
            .arg(command)
            .env("WEIR_SERVICES_RUN", run)
            .env("WEIR_S3_PORT", port.to_string())
            .output()
            .unwrap()
    }

    /// SIGSTOP: the server keeps its connections and data but answers
    /// nothing, like a host that stopped responding.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: it answers again.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        signal(self.pid, name);
    }
}

/// `kill -NAME pid`, which must succeed.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        // A frozen server would only die by the stop script's KILL, 20 s later.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
        let out = PrivateS3::script(self.run.path(), self.port, "stop");
        if !out.status.success() {
            eprintln!(
                "could not stop the private S3 server (pid {}): {}",
                self.pid,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
