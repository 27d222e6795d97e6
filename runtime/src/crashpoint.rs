//! Named points where crash tests kill weir, for real.
//!
//! A timer in a test cannot reliably hit the narrow windows that matter
//! (between a manifest and its commit marker, between a commit and the
//! publication of outputs). With `WEIR_CRASH_AT=<point>:<n>` in its
//! environment, weir sends itself SIGKILL the `n`th time it reaches `point`
//! — the same signal `kill -9` sends, so nothing is flushed or cleaned up.
//! With `WEIR_PAUSE_AT=<point>:<n>` it sends itself SIGSTOP there instead,
//! so a test can change the world (freeze a server) at that moment and
//! then let it go on with SIGCONT. Without the variables this costs one
//! relaxed atomic load each per point.
//!
//! Points: `after-sink-write` (a batch's outputs were handed to the sinks),
//! `during-page-upload` (the first page of an epoch is stored, others are
//! not), `before-commit` (the manifest is stored, the marker is not),
//! `after-commit` (the marker is stored, outputs are not published),
//! `during-publish` (some sinks published the epoch, others not yet),
//! `before-txn-commit` (an exactly-once Kafka sink added the epoch's offsets
//! to its transaction, which is not committed yet: the checkpoint is
//! durable, the output is not) and `after-txn-commit` (the transaction is
//! committed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const ENV: &str = "WEIR_CRASH_AT";

/// The environment variable that arms a pause point.
pub const PAUSE_ENV: &str = "WEIR_PAUSE_AT";

struct Armed {
    point: String,
    remaining: AtomicU64,
}

impl Armed {
    fn from_env(var: &str) -> Option<Armed> {
        let value = std::env::var(var).ok()?;
        let (point, n) = value.rsplit_once(':').unwrap_or((&value, "1"));
        let n = n.parse::<u64>().ok().filter(|&n| n > 0).unwrap_or(1);
        Some(Armed {
            point: point.to_owned(),
            remaining: AtomicU64::new(n),
        })
    }

    /// Whether this arrival at `point` is the armed one.
    fn fires(&self, point: &str) -> bool {
        self.point == point && self.remaining.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

fn crash() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| Armed::from_env(ENV)).as_ref()
}

fn pause() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| Armed::from_env(PAUSE_ENV)).as_ref()
}

/// Kills the process if `point` is armed for a crash and this is its `n`th
/// arrival; stops it if it is armed for a pause.
pub fn reached(point: &str) {
    if pause().is_some_and(|armed| armed.fires(point)) {
        tracing::warn!("{PAUSE_ENV}: stopping at `{point}` with SIGSTOP");
        // Returns once someone sends SIGCONT.
        signal_self("-STOP");
    }
    if crash().is_some_and(|armed| armed.fires(point)) {
        tracing::warn!("{ENV}: crashing at `{point}` with SIGKILL");
        // `kill` delivers SIGKILL while we wait for it, so nothing after
        // this line runs; without a `kill` command, abort (no cleanup
        // either).
        signal_self("-KILL");
        std::process::abort();
    }
}

fn signal_self(signal: &str) {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args([signal, &pid])
        .status();
}
