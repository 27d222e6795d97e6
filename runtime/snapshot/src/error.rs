//! Why a component cannot be instrumented.

use thiserror::Error;

/// Why [`instrument`](crate::instrument) refused a component.
///
/// Every variant that concerns a core module names it by its index in the
/// top-level component's core-module index space (the `N` of `(core module
/// N)` in the text format) and the item by its index in that module's own
/// index space (imports included), so the message can be checked against
/// `wasm-tools print`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InstrumentError {
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(#[from] wasmparser::BinaryReaderError),

    /// The bytes are a core module, not a component.
    #[error("expected a WebAssembly component, found a core module")]
    CoreModule,

    /// The component already carries the snapshot instrumentation.
    #[error(
        "component is already instrumented: it already has `{0}`; instrument the original bytes"
    )]
    AlreadyInstrumented(&'static str),

    /// A shared memory: other threads could write it while it is copied,
    /// and its contents are not owned by one instance.
    #[error(
        "core module {module}, memory {memory}: shared memories are not supported \
         (a snapshot of memory other threads may write is not consistent)"
    )]
    SharedMemory {
        /// Core module index.
        module: u32,
        /// Memory index within the module.
        memory: u32,
    },

    /// A 64-bit memory.
    #[error(
        "core module {module}, memory {memory}: 64-bit memories (memory64) are not supported \
         (the snapshot accessors address memory with 32-bit `list<u8>` pointers)"
    )]
    Memory64 {
        /// Core module index.
        module: u32,
        /// Memory index within the module.
        memory: u32,
    },

    /// A memory with a page size other than 64 KiB.
    #[error(
        "core module {module}, memory {memory}: custom page size 2^{page_size_log2} is not \
         supported (the accessors assume 64 KiB pages)"
    )]
    CustomPageSize {
        /// Core module index.
        module: u32,
        /// Memory index within the module.
        memory: u32,
        /// log2 of the declared page size.
        page_size_log2: u32,
    },

    /// A mutable global whose value cannot be carried as plain bits.
    #[error(
        "core module {module}, global {global}: mutable global of type {ty} is not supported \
         (only i32, i64, f32 and f64 values can be captured as bits; a reference or a shared \
         global points at state outside linear memory)"
    )]
    UnsupportedGlobal {
        /// Core module index.
        module: u32,
        /// Global index within the module.
        global: u32,
        /// The global's type, as text.
        ty: String,
    },

    /// Code that mutates a table: the snapshot does not capture tables, so
    /// a restored instance would see the table as instantiation left it.
    #[error(
        "core module {module}, function {function}: `{instruction}` mutates a table, and tables \
         are not part of a snapshot (only what instantiation puts in a table is restored)"
    )]
    TableMutation {
        /// Core module index.
        module: u32,
        /// Function index within the module.
        function: u32,
        /// The offending instruction.
        instruction: &'static str,
    },

    /// Code that drops a passive data or element segment: whether a segment
    /// was dropped is instance state outside memory and globals.
    #[error(
        "core module {module}, function {function}: `{instruction}` drops a segment, and \
         dropped segments are not part of a snapshot (a restored instance would still have it)"
    )]
    SegmentDrop {
        /// Core module index.
        module: u32,
        /// Function index within the module.
        function: u32,
        /// The offending instruction.
        instruction: &'static str,
    },

    /// GC (struct/array) or stack-switching (continuation) types: such
    /// objects live outside linear memory.
    #[error(
        "core module {module}, type {ty}: {kind} types are not supported (GC objects and \
         continuations live outside linear memory and are not part of a snapshot)"
    )]
    UnsupportedType {
        /// Core module index.
        module: u32,
        /// Type index within the module.
        ty: u32,
        /// `struct`, `array` or `continuation`.
        kind: &'static str,
    },

    /// The same core module is instantiated twice.
    #[error(
        "core module {module} is instantiated twice (core instances {first} and {second}); \
         each core module must be instantiated at most once"
    )]
    ModuleInstantiatedTwice {
        /// Core module index.
        module: u32,
        /// First core instance of it.
        first: u32,
        /// Second core instance of it.
        second: u32,
    },

    /// A core module that is not defined in the component (imported or
    /// aliased) is instantiated: its state cannot be instrumented.
    #[error(
        "core instance {instance} instantiates core module {module}, which is {origin}; only \
         core modules defined inside the component can be instrumented"
    )]
    ForeignModule {
        /// Core module index.
        module: u32,
        /// Core instance index.
        instance: u32,
        /// Where the module comes from.
        origin: &'static str,
    },

    /// A nested component that defines or instantiates core modules.
    #[error(
        "nested component {component} {what}; core instances inside nested components are \
         not supported (their state cannot be reached)"
    )]
    NestedComponentWithModules {
        /// Index in the component index space.
        component: u32,
        /// `defines a core module` or `instantiates a core module`.
        what: &'static str,
    },

    /// A component-model feature whose state lives outside core instances.
    #[error("{feature} is not supported: {reason}")]
    UnsupportedComponentFeature {
        /// What was found, e.g. `canonical function 7 (stream.new)`.
        feature: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Re-encoding a module failed (a bug or an input wasm-encoder cannot
    /// round-trip).
    #[error("core module {module}: could not re-encode: {message}")]
    Reencode {
        /// Core module index.
        module: u32,
        /// The encoder's message.
        message: String,
    },
}
