//! The one wasmtime [`Engine`] of a process, configured for deterministic,
//! bounded execution.

use wasmtime::{Config, Engine, OptLevel};

/// Largest native stack a guest call may use.
const GUEST_STACK_BYTES_MAX: usize = 1 << 20;

/// Builds the engine every operator runs on.
///
/// - fuel metering: CPU is bounded per batch, deterministically (epochs
///   would depend on wall time);
/// - NaN canonicalization and deterministic relaxed SIMD: the same inputs
///   give the same bits on every machine, which replay needs;
/// - no threads or shared memory (wasmtime is built without its `threads`
///   feature, so such modules fail validation): one guest thread, nothing
///   racy to replay.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .cranelift_opt_level(OptLevel::Speed)
        .max_wasm_stack(GUEST_STACK_BYTES_MAX);
    Engine::new(&config)
}
