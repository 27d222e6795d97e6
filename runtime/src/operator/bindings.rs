//! Host bindings generated from `wit/operator.wit`.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "operator",
    // A lookup traps when its answer cannot be recorded or does not match
    // the journal (see `recorded`).
    imports: { "weir:operator/recorded": trappable },
});
