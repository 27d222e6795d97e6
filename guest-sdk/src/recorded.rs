//! Recorded inputs: what an operator may read besides its records, and what
//! it gets on every replay (docs/determinism.md is the reference).
//!
//! - **Clocks.** `std::time::SystemTime::now()` and `Instant::now()` work
//!   and return the *recorded time of the batch* being processed: the time
//!   weir read it from the source, the same on every replay, and the same
//!   for every record of the batch (time does not pass during a call).
//!   [`now_ms`] is the wall clock in milliseconds. During `init` the clocks
//!   read 0 (the Unix epoch).
//! - **Randomness.** `getrandom`, `rand`'s `SysRng`/`rng()`, and
//!   `std::collections::HashMap::new()`'s seed come from a stream weir
//!   derives from a seed recorded when the task first started; a restored
//!   instance continues the stream where its checkpoint left it.
//! - **Lookups.** [`http_get`] and [`read_file`] reach what the pipeline
//!   file allows (`[determinism.lookups]`). weir performs each once, records
//!   the answer before returning it, and answers every replay from the
//!   record; ask for what your records say, in record order.
//!
//! Denied, whatever the code: files (other than through [`read_file`]),
//! sockets and HTTP (other than through [`http_get`]), environment
//! variables and arguments (there are none).
//!
//! In a native build (unit tests), the clocks are the host's and lookups
//! fail with [`LookupError::Denied`].

pub use crate::bindings::weir::operator::recorded::{HttpResponse, LookupError};

/// The recorded time of the batch being processed, in milliseconds since the
/// Unix epoch (the wall clock weir gives operators).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// GET `url` (it must start with a prefix listed in `[determinism.lookups]
/// http`), performed once and replayed from the record. Any status is an
/// `Ok` response; a connection failure or timeout is
/// [`LookupError::Failed`], recorded like an answer.
pub fn http_get(url: &str) -> Result<HttpResponse, LookupError> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::weir::operator::recorded::http_get(url);
    #[cfg(not(target_arch = "wasm32"))]
    Err(native(url))
}

/// The content of `path`, a file listed exactly so in `[determinism.lookups]
/// files`; read once and replayed from the record.
pub fn read_file(path: &str) -> Result<Vec<u8>, LookupError> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::weir::operator::recorded::read_file(path);
    #[cfg(not(target_arch = "wasm32"))]
    Err(native(path))
}

#[cfg(not(target_arch = "wasm32"))]
fn native(what: &str) -> LookupError {
    LookupError::Denied(format!(
        "`{what}`: lookups are answered by weir only; this is a native build"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natively_lookups_are_denied_and_the_clock_is_the_hosts() {
        let err = http_get("http://127.0.0.1/x").err();
        assert!(matches!(err, Some(LookupError::Denied(_))), "{err:?}");
        let err = read_file("f").err();
        assert!(
            matches!(&err, Some(LookupError::Denied(why)) if why.starts_with("`f`")),
            "{err:?}"
        );
        assert!(now_ms() > 1_600_000_000_000);
    }
}
