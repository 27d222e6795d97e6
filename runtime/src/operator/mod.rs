//! The operator host: runs one WebAssembly component operator, sandboxed and
//! bounded.
//!
//! [`PreparedOperator`] is a component compiled and linked once per process;
//! [`OperatorInstance`] is one running instance (one per task) with its own
//! store, fuel budget and memory limit.
//!
//! **Architecture Invariant:** this module knows nothing about sources,
//! sinks or positions. It turns a batch of records into a batch result or a
//! [`Fault`]; the pipeline says which record it was.

pub mod bindings;
pub mod clock;
mod engine;
mod guest_output;
mod instance;
mod load;
mod packed;
pub mod policy;
pub mod recorded;
mod state;

pub use clock::{TaskClock, TimeLog};
pub use engine::new_engine;
pub use instance::{Fault, HostState, Limits, OperatorInstance, PreparedOperator, new_linker};
pub use load::{ComponentCache, HANDLER_EXPORT, LoadedComponent};
pub use packed::NO_PACKED_BATCHES_ENV;
pub use policy::DeniedPolicy;
pub use recorded::{LookupLog, LookupPolicy, TaskInputs};
pub use state::{CapturedState, NO_DIRTY_TRACKING_ENV};

use std::path::PathBuf;

/// An operator that cannot be loaded, started or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// The component file is missing, not a component, or not an operator.
    #[error("operator `{operator}` ({}): {message}", path.display())]
    Load {
        /// The operator's name.
        operator: String,
        /// The component file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The component needs imports weir does not provide.
    #[error("operator `{operator}`: cannot be linked: {message}")]
    Link {
        /// The operator's name.
        operator: String,
        /// What is missing, as wasmtime reports it.
        message: String,
    },
    /// The component imports what weir denies, under the `strict` policy.
    #[error("{message}")]
    Denied {
        /// The operator's name.
        operator: String,
        /// Every denied import, with what to use instead (the message
        /// starts with the operator's name).
        message: String,
    },
    /// `init` returned an error or trapped.
    #[error("operator `{operator}`: init failed: {message}")]
    Init {
        /// The operator's name.
        operator: String,
        /// The operator's own message, or the trap.
        message: String,
    },
    /// The instance's state could not be captured or restored.
    #[error("operator `{operator}`: {message}")]
    State {
        /// The operator's name.
        operator: String,
        /// What failed.
        message: String,
    },
    /// A call to `process` failed; the instance is unusable afterwards.
    #[error("operator `{operator}`: {fault}")]
    Fault {
        /// The operator's name.
        operator: String,
        /// What went wrong.
        fault: Fault,
    },
}
