//! `nondet`: an operator that reads everything a replay must reproduce —
//! the clocks, random numbers (the `rand` crate seeded from WASI random, and
//! fresh system randomness per record), a `std` `HashMap` seeded by the
//! host, float math producing NaNs, and (if configured) a recorded HTTP
//! lookup per record — and writes all of it into its output and its state.
//! For testing weir's recorded inputs (docs/determinism.md).
//!
//! Per record it emits one line:
//!
//! ```text
//! <value>,wall=<ms>,mono=<ns since init>,seeded=<u64>,fresh=<u64>,nan=<bits hex>,first=<key>,lookup=<answer>
//! ```
//!
//! - `wall`: `SystemTime::now()` in ms; `mono`: `Instant::now()` since
//!   `init`, in ns;
//! - `seeded`: the next number of a `StdRng` seeded at `init` from the
//!   system; `fresh`: 8 bytes drawn from the system for this record;
//! - `nan`: the bits of a NaN computed from a NaN with a payload and the
//!   record's length (canonical under weir);
//! - `first`: the first key, in iteration order, of a `HashMap` (std's
//!   randomly seeded hasher) holding every record value seen so far,
//!   hashed to a `u64`;
//! - `lookup`: with config `lookup = "<url prefix>"`, the status and body of
//!   a GET of `<prefix><word>` (or the error), where `<word>` is the last
//!   space-separated word of the value; else `-`.
//!
//! With config `echo = "true"` it also prints each line to its stdout (weir's
//! log), so a test sees what a run computed even if its outputs were never
//! committed.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng, TryRng};

/// The operator's state.
pub struct Nondet {
    started: Instant,
    seeded: rand::rngs::StdRng,
    seen: HashMap<u64, u64>,
    lookup: Option<String>,
    /// Whether each line is also printed to stdout.
    pub echo: bool,
}

impl Nondet {
    /// Seeds its generator from the system; `lookup` is the URL prefix of
    /// the per-record GET, if any.
    pub fn new(lookup: Option<String>) -> Result<Nondet, String> {
        let seeded = rand::rngs::StdRng::try_from_rng(&mut rand::rngs::SysRng)
            .map_err(|e| format!("no system randomness: {e}"))?;
        Ok(Nondet {
            started: Instant::now(),
            seeded,
            seen: HashMap::new(),
            lookup,
            echo: false,
        })
    }

    /// The URL prefix of the per-record GET, if configured.
    pub fn lookup_prefix(&self) -> Option<&str> {
        self.lookup.as_deref()
    }

    /// The line for one record; `lookup` is the answer to the GET (if any).
    pub fn line(&mut self, value: &[u8], lookup: Option<String>) -> Result<String, String> {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mono = self.started.elapsed().as_nanos();
        let seeded = self.seeded.next_u64();
        let fresh = rand::rngs::SysRng
            .try_next_u64()
            .map_err(|e| format!("no system randomness: {e}"))?;
        let payload = std::hint::black_box(f64::from_bits(0x7ff8_0000_dead_beef));
        let nan = (payload * std::hint::black_box(value.len() as f64 + 0.5)).to_bits();
        let key = value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        *self.seen.entry(key).or_insert(0) += 1;
        let first = self.seen.keys().next().copied().unwrap_or(0);
        Ok(format!(
            "{},wall={wall},mono={mono},seeded={seeded},fresh={fresh},nan={nan:016x},first={first},lookup={}",
            String::from_utf8_lossy(value),
            lookup.as_deref().unwrap_or("-")
        ))
    }
}

#[cfg(feature = "component")]
mod component {
    use super::Nondet;
    use weir_guest::recorded::{LookupError, http_get};
    use weir_guest::{Config, Emitter, Operator, Record, Reject};

    impl Operator for Nondet {
        fn init(config: &Config) -> Result<Self, String> {
            config.reject_unknown_keys(&["lookup", "echo"])?;
            let mut nondet = Nondet::new(config.get("lookup").map(str::to_owned))?;
            nondet.echo = config.get("echo") == Some("true");
            Ok(nondet)
        }

        fn process(&mut self, record: &Record, out: &mut Emitter) -> Result<(), Reject> {
            let value = record.value_str()?;
            let word = value.rsplit(' ').next().unwrap_or(value);
            let lookup =
                self.lookup_prefix()
                    .map(|prefix| match http_get(&format!("{prefix}{word}")) {
                        Ok(r) => format!("{}:{}", r.status, String::from_utf8_lossy(&r.body)),
                        Err(LookupError::Denied(why)) => format!("denied:{why}"),
                        Err(LookupError::Failed(why)) => format!("failed:{why}"),
                        Err(LookupError::TooLarge(limit)) => format!("too-large:{limit}"),
                    });
            let line = self.line(record.value(), lookup)?;
            if self.echo {
                println!("{line}");
            }
            out.emit(line);
            Ok(())
        }
    }

    weir_guest::export_operator!(Nondet);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_every_input() {
        let mut op = Nondet::new(None).unwrap();
        let line = op.line(b"a", Some("200:x".into())).unwrap();
        assert!(line.starts_with("a,wall="), "{line}");
        assert!(line.ends_with(",lookup=200:x"), "{line}");
        assert!(line.contains(",nan="), "{line}");
    }
}
