//! What state an instrumented component has, and the names of its accessors.

/// The value type of a captured global.
///
/// All four are carried as raw bits: `i32`/`f32` as `u32`, `i64`/`f64` as
/// `u64` (floats through `i32.reinterpret_f32` / `f32.reinterpret_i32` and
/// their 64-bit twins, so no float operation, canonical-ABI float lift or
/// Cranelift NaN canonicalization ever touches the value: a non-canonical
/// NaN survives bit for bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalType {
    /// `i32`, carried as `u32`.
    I32,
    /// `i64`, carried as `u64`.
    I64,
    /// `f32`, carried as its `u32` bit pattern.
    F32,
    /// `f64`, carried as its `u64` bit pattern.
    F64,
}

impl GlobalType {
    /// Whether the accessors use `u64` (`i64`, `f64`) rather than `u32`.
    pub fn is_64(self) -> bool {
        matches!(self, GlobalType::I64 | GlobalType::F64)
    }
}

/// Where a captured item lives inside the original component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Index of the core module in the top-level component's core-module
    /// index space.
    pub module: u32,
    /// Index of the core instance (of that module) in the top-level
    /// component's core-instance index space.
    pub instance: u32,
    /// Index of the item in the module's own memory or global index space
    /// (imports included).
    pub index: u32,
}

/// A defined linear memory of one core instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Position `k` in [`StateLayout::memories`]; the accessors are
    /// `snapshot-memory{k}` and `restore-memory{k}`.
    pub k: u32,
    /// Where the memory is defined.
    pub origin: Origin,
    /// Declared minimum size, in 64 KiB pages.
    pub initial_pages: u64,
    /// Declared maximum size, in 64 KiB pages.
    pub maximum_pages: Option<u64>,
}

impl MemoryInfo {
    /// Name of the export (in [`ACCESS_INSTANCE`](crate::ACCESS_INSTANCE))
    /// that sends this memory to the host's `put-memory`.
    pub fn snapshot_func(&self) -> String {
        format!("snapshot-memory{}", self.k)
    }

    /// Name of the export that overwrites this memory with a `list<u8>`.
    pub fn restore_func(&self) -> String {
        format!("restore-memory{}", self.k)
    }
}

/// A defined mutable global of one core instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Position `k` in [`StateLayout::globals`]; the accessors are
    /// `get-global{k}` and `set-global{k}`.
    pub k: u32,
    /// Where the global is defined.
    pub origin: Origin,
    /// Its value type.
    pub ty: GlobalType,
}

impl GlobalInfo {
    /// Name of the getter export (`func() -> u32` or `func() -> u64`).
    pub fn get_func(&self) -> String {
        format!("get-global{}", self.k)
    }

    /// Name of the setter export (`func(v: u32)` or `func(v: u64)`).
    pub fn set_func(&self) -> String {
        format!("set-global{}", self.k)
    }
}

/// A resource type the component imports (from an imported instance).
///
/// Handles to such resources live in wasmtime's per-instance handle table,
/// not in linear memory. The accessors let the host rebuild that table in a
/// fresh instance: `adopt-resource{k}` moves an `own` handle into the
/// instance's table and returns its index (the guest code never sees it),
/// `drop-resource{k}` drops a handle by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Position `k` in [`StateLayout::resources`].
    pub k: u32,
    /// Name of the imported instance, e.g. `wasi:io/streams@0.2.6`.
    pub interface: String,
    /// Name of the resource in it, e.g. `output-stream`.
    pub name: String,
}

impl ResourceInfo {
    /// Name of `adopt-resource{k}: func(handle: own<T>) -> u32`.
    pub fn adopt_func(&self) -> String {
        format!("adopt-resource{}", self.k)
    }

    /// Name of `drop-resource{k}: func(index: u32)`.
    pub fn drop_func(&self) -> String {
        format!("drop-resource{}", self.k)
    }
}

/// All mutable state of a component's core instances.
///
/// Order (fixed, and the meaning of `k` in every accessor name): core
/// instances in the order the component creates them (ascending core
/// instance index); within an instance, memories (respectively globals) by
/// ascending index in the module. Only *defined* memories and *mutable
/// defined* globals appear: an imported memory or global is captured where
/// it is defined. Instances of modules with neither contribute nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateLayout {
    /// Linear memories, `k = 0..`.
    pub memories: Vec<MemoryInfo>,
    /// Mutable globals, `k = 0..`.
    pub globals: Vec<GlobalInfo>,
    /// Imported resource types, in import order, then in the order of the
    /// imported instance type's exports. Not state: the means to rebuild the
    /// handle table (see the crate docs, "Resource handles").
    pub resources: Vec<ResourceInfo>,
}

impl StateLayout {
    /// The resource `name` of the imported instance `interface`, if imported.
    /// The interface must match exactly, version included.
    pub fn resource(&self, interface: &str, name: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.interface == interface && r.name == name)
    }
}
