//! Host bindings generated from `wit/operator.wit`.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "operator",
});
