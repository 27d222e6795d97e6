//! The sections appended to the component: the host import, the accessor
//! core module, and the lifted `access` instance.

use wasm_encoder::{
    Alias, BlockType, CanonicalFunctionSection, CanonicalOption, CodeSection, Component,
    ComponentAliasSection, ComponentExportKind, ComponentExportSection, ComponentImportSection,
    ComponentInstanceSection, ComponentTypeRef, ComponentTypeSection, ComponentValType, EntityType,
    ExportKind, ExportSection, Function, FunctionSection, GlobalType as CoreGlobalType,
    ImportSection, InstanceSection, InstanceType, MemoryType, Module, ModuleArg, ModuleSection,
    PrimitiveValType, TypeSection, ValType,
};

use crate::layout::{GlobalType, StateLayout};
use crate::{ACCESS_INSTANCE, HOST_INSTANCE, PUT_MEMORY};

/// Sizes of the top-level component's index spaces before instrumentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexCounts {
    pub component_types: u32,
    pub component_funcs: u32,
    pub component_instances: u32,
    pub core_funcs: u32,
    pub core_memories: u32,
    pub core_instances: u32,
    pub core_modules: u32,
}

/// Export names of the items added to each instrumented core instance, in
/// layout order.
pub(crate) struct Exported<'a> {
    /// Per memory `k`: the core instance defining it and its export name.
    pub memories: Vec<(u32, &'a str)>,
    /// Per global `k`: the core instance defining it and its export name.
    pub globals: Vec<(u32, &'a str)>,
    /// Per resource `k`: the component instance (an import) exporting it.
    pub resource_instances: Vec<u32>,
}

/// Name under which the accessor module imports the exports of core
/// instance `instance`.
fn instance_import(instance: u32) -> String {
    format!("instance{instance}")
}

/// Name under which the accessor module imports the lowered `put-memory`
/// for memory `k`.
fn put_import(k: usize) -> String {
    format!("put-memory{k}")
}

/// Name under which the accessor module imports `resource.drop` of
/// resource `k`.
fn drop_import(k: usize) -> String {
    format!("drop-resource{k}")
}

const HOST_CORE_INSTANCE: &str = "host";
const PAGE_SHIFT: i32 = 16;
/// Pages in a 4 GiB memory: its byte length does not fit a `u32` list length.
const MAX_PAGES: i32 = 1 << 16;

fn global_val_type(ty: GlobalType) -> ValType {
    match ty {
        GlobalType::I32 => ValType::I32,
        GlobalType::I64 => ValType::I64,
        GlobalType::F32 => ValType::F32,
        GlobalType::F64 => ValType::F64,
    }
}

/// The core module that reads and writes every captured memory and global.
///
/// Imports, in order: per memory `k` the function `host.put-memory{k}`
/// (function index `k`), then per memory `k` the memory itself (memory index
/// `k`), then per global `k` the global (global index `k`). Defines, per
/// memory, `snapshot-memory{k}`, `realloc-memory{k}` and `restore-memory{k}`,
/// then per global `get-global{k}` and `set-global{k}`, exported under those
/// names.
fn accessor_module(layout: &StateLayout, exported: &Exported<'_>) -> Module {
    let mut types = TypeSection::new();
    // Type indices.
    const T_PUT: u32 = 0; // (index, ptr, len) -> ()
    const T_VOID: u32 = 1; // () -> ()
    const T_REALLOC: u32 = 2; // (old_ptr, old_size, align, new_size) -> ptr
    const T_RESTORE: u32 = 3; // (ptr, len) -> ()
    const T_GET32: u32 = 4;
    const T_GET64: u32 = 5;
    const T_SET32: u32 = 6;
    const T_SET64: u32 = 7;
    const T_ADOPT: u32 = 8; // (i32) -> i32
    types.ty().function([ValType::I32; 3], []);
    types.ty().function([], []);
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    types.ty().function([ValType::I32; 2], []);
    types.ty().function([], [ValType::I32]);
    types.ty().function([], [ValType::I64]);
    types.ty().function([ValType::I32], []);
    types.ty().function([ValType::I64], []);
    types.ty().function([ValType::I32], [ValType::I32]);

    let mut imports = ImportSection::new();
    for k in 0..layout.memories.len() {
        imports.import(
            HOST_CORE_INSTANCE,
            &put_import(k),
            EntityType::Function(T_PUT),
        );
    }
    for k in 0..layout.resources.len() {
        imports.import(
            HOST_CORE_INSTANCE,
            &drop_import(k),
            EntityType::Function(T_SET32),
        );
    }
    for (info, (instance, name)) in layout.memories.iter().zip(&exported.memories) {
        imports.import(
            &instance_import(*instance),
            name,
            EntityType::Memory(MemoryType {
                minimum: info.initial_pages,
                maximum: info.maximum_pages,
                memory64: false,
                shared: false,
                page_size_log2: None,
            }),
        );
    }
    for (info, (instance, name)) in layout.globals.iter().zip(&exported.globals) {
        imports.import(
            &instance_import(*instance),
            name,
            EntityType::Global(CoreGlobalType {
                val_type: global_val_type(info.ty),
                mutable: true,
                shared: false,
            }),
        );
    }

    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    let imported_funcs = (layout.memories.len() + layout.resources.len()) as u32;
    let mut next_func = imported_funcs;
    let mut define = |name: String, ty: u32, body: Function| {
        functions.function(ty);
        code.function(&body);
        exports.export(&name, ExportKind::Func, next_func);
        next_func += 1;
    };

    for (k, info) in layout.memories.iter().enumerate() {
        let mem = k as u32;

        // snapshot-memory{k}: host.put-memory{k}(k, 0, memory.size << 16).
        // Reads nothing, writes nothing: the lowered import reads the list
        // straight out of memory k.
        let mut f = Function::new([]);
        f.instructions()
            .memory_size(mem)
            .i32_const(MAX_PAGES)
            .i32_ge_u()
            .if_(BlockType::Empty)
            .unreachable()
            .end()
            .i32_const(mem as i32)
            .i32_const(0)
            .memory_size(mem)
            .i32_const(PAGE_SHIFT)
            .i32_shl()
            .call(k as u32)
            .end();
        define(info.snapshot_func(), T_VOID, f);

        // realloc-memory{k}(_, _, _, new_size): make memory k exactly
        // new_size bytes (a whole number of pages, never smaller than it
        // is) and return 0, so the canonical ABI copies the list to 0.
        // Locals: 4 = current pages, 5 = wanted pages.
        let mut f = Function::new([(2, ValType::I32)]);
        f.instructions()
            // new_size must be whole pages.
            .local_get(3)
            .i32_const((1 << PAGE_SHIFT) - 1)
            .i32_and()
            .if_(BlockType::Empty)
            .unreachable()
            .end()
            .local_get(3)
            .i32_const(PAGE_SHIFT)
            .i32_shr_u()
            .local_set(5)
            .memory_size(mem)
            .local_tee(4)
            // A memory that is already larger cannot shrink: refuse.
            .local_get(5)
            .i32_gt_u()
            .if_(BlockType::Empty)
            .unreachable()
            .end()
            .local_get(4)
            .local_get(5)
            .i32_lt_u()
            .if_(BlockType::Empty)
            .local_get(5)
            .local_get(4)
            .i32_sub()
            .memory_grow(mem)
            .i32_const(-1)
            .i32_eq()
            .if_(BlockType::Empty)
            .unreachable()
            .end()
            .end()
            .i32_const(0)
            .end();
        define(format!("realloc-memory{k}"), T_REALLOC, f);

        // restore-memory{k}(ptr, len): nothing left to do, the canonical
        // ABI has copied the bytes by the time this runs.
        let mut f = Function::new([]);
        f.instructions().end();
        define(info.restore_func(), T_RESTORE, f);
    }

    for (k, info) in layout.globals.iter().enumerate() {
        let global = k as u32;
        let wide = info.ty.is_64();

        let mut f = Function::new([]);
        let mut ins = f.instructions();
        ins.global_get(global);
        match info.ty {
            GlobalType::F32 => {
                ins.i32_reinterpret_f32();
            }
            GlobalType::F64 => {
                ins.i64_reinterpret_f64();
            }
            GlobalType::I32 | GlobalType::I64 => {}
        }
        ins.end();
        define(info.get_func(), if wide { T_GET64 } else { T_GET32 }, f);

        let mut f = Function::new([]);
        let mut ins = f.instructions();
        ins.local_get(0);
        match info.ty {
            GlobalType::F32 => {
                ins.f32_reinterpret_i32();
            }
            GlobalType::F64 => {
                ins.f64_reinterpret_i64();
            }
            GlobalType::I32 | GlobalType::I64 => {}
        }
        ins.global_set(global).end();
        define(info.set_func(), if wide { T_SET64 } else { T_SET32 }, f);
    }

    for (k, info) in layout.resources.iter().enumerate() {
        // adopt-resource{k}(handle) -> handle: the canonical ABI has put the
        // handle in the table; keep it there and report its index.
        let mut f = Function::new([]);
        f.instructions().local_get(0).end();
        define(info.adopt_func(), T_ADOPT, f);

        // drop-resource{k}(index): `resource.drop`.
        let mut f = Function::new([]);
        f.instructions()
            .local_get(0)
            .call((layout.memories.len() + k) as u32)
            .end();
        define(info.drop_func(), T_SET32, f);
    }

    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&exports)
        .section(&code);
    module
}

/// Appends the instrumentation to `out`, which already holds a copy of the
/// original component's sections (with the rewritten modules).
pub(crate) fn append(
    out: &mut Component,
    counts: IndexCounts,
    layout: &StateLayout,
    exported: &Exported<'_>,
) {
    let n_mem = layout.memories.len() as u32;

    // Component types.
    let t = counts.component_types;
    let t_list = t;
    let t_host = t + 1;
    let t_unit = t + 2;
    let t_restore = t + 3;
    let t_get32 = t + 4;
    let t_get64 = t + 5;
    let t_set32 = t + 6;
    let t_set64 = t + 7;
    let mut types = ComponentTypeSection::new();
    types
        .defined_type()
        .list(ComponentValType::Primitive(PrimitiveValType::U8));
    let mut host = InstanceType::new();
    host.ty()
        .defined_type()
        .list(ComponentValType::Primitive(PrimitiveValType::U8));
    host.ty()
        .function()
        .params([
            ("index", ComponentValType::Primitive(PrimitiveValType::U32)),
            ("data", ComponentValType::Type(0)),
        ])
        .result(None);
    host.export(PUT_MEMORY, ComponentTypeRef::Func(1));
    types.instance(&host);
    types
        .function()
        .params::<_, ComponentValType>([])
        .result(None);
    types
        .function()
        .params([("data", ComponentValType::Type(t_list))])
        .result(None);
    for prim in [PrimitiveValType::U32, PrimitiveValType::U64] {
        types
            .function()
            .params::<_, ComponentValType>([])
            .result(Some(ComponentValType::Primitive(prim)));
    }
    for prim in [PrimitiveValType::U32, PrimitiveValType::U64] {
        types
            .function()
            .params([("v", ComponentValType::Primitive(prim))])
            .result(None);
    }
    out.section(&types);

    // import weir:snapshot/host@0.1.0
    let host_instance = counts.component_instances;
    let mut imports = ComponentImportSection::new();
    imports.import(HOST_INSTANCE, ComponentTypeRef::Instance(t_host));
    out.section(&imports);

    // Alias put-memory and every captured memory.
    let put_func = counts.component_funcs;
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::InstanceExport {
        instance: host_instance,
        kind: ComponentExportKind::Func,
        name: PUT_MEMORY,
    });
    for (instance, name) in &exported.memories {
        aliases.alias(Alias::CoreInstanceExport {
            instance: *instance,
            kind: ExportKind::Memory,
            name,
        });
    }
    // The imported resource types: component types t + 8 + k.
    for (info, instance) in layout.resources.iter().zip(&exported.resource_instances) {
        aliases.alias(Alias::InstanceExport {
            instance: *instance,
            kind: ComponentExportKind::Type,
            name: &info.name,
        });
    }
    out.section(&aliases);
    let memory_index = |k: u32| counts.core_memories + k;

    // Per resource: `own<T>` and `func(handle: own<T>) -> u32`; then
    // `func(index: u32)`.
    let n_res = layout.resources.len() as u32;
    let t_resource = |k: u32| t + 8 + k;
    let t_adopt = |k: u32| t + 8 + n_res + 2 * k + 1;
    let t_drop = t + 8 + 3 * n_res;
    let mut types = ComponentTypeSection::new();
    for k in 0..n_res {
        types.defined_type().own(t_resource(k));
        types
            .function()
            .params([("handle", ComponentValType::Type(t + 8 + n_res + 2 * k))])
            .result(Some(ComponentValType::Primitive(PrimitiveValType::U32)));
    }
    types
        .function()
        .params([("index", ComponentValType::Primitive(PrimitiveValType::U32))])
        .result(None);
    out.section(&types);

    // Lower put-memory once per memory, each reading its own memory; then
    // `resource.drop` per resource.
    let mut canon = CanonicalFunctionSection::new();
    for k in 0..n_mem {
        canon.lower(put_func, [CanonicalOption::Memory(memory_index(k))]);
    }
    for k in 0..n_res {
        canon.resource_drop(t_resource(k));
    }
    if n_mem + n_res > 0 {
        out.section(&canon);
    }
    let lowered_put = |k: u32| counts.core_funcs + k;
    let resource_drop = |k: u32| counts.core_funcs + n_mem + k;

    // A core instance bundling the lowered imports, the accessor module and
    // its instance.
    let bag: Vec<(String, u32)> = (0..n_mem)
        .map(|k| (put_import(k as usize), lowered_put(k)))
        .chain((0..n_res).map(|k| (drop_import(k as usize), resource_drop(k))))
        .collect();
    let mut instances = InstanceSection::new();
    instances.export_items(
        bag.iter()
            .map(|(name, func)| (name.as_str(), ExportKind::Func, *func)),
    );
    out.section(&instances);
    let host_core_instance = counts.core_instances;

    out.section(&ModuleSection(&accessor_module(layout, exported)));
    let accessor_module_index = counts.core_modules;

    let mut args: Vec<(String, ModuleArg)> = vec![(
        HOST_CORE_INSTANCE.to_owned(),
        ModuleArg::Instance(host_core_instance),
    )];
    let mut seen = std::collections::BTreeSet::new();
    for (instance, _) in exported.memories.iter().chain(&exported.globals) {
        if seen.insert(*instance) {
            args.push((instance_import(*instance), ModuleArg::Instance(*instance)));
        }
    }
    let mut instances = InstanceSection::new();
    instances.instantiate(
        accessor_module_index,
        args.iter().map(|(name, arg)| (name.as_str(), *arg)),
    );
    out.section(&instances);
    let accessor_instance = counts.core_instances + 1;

    // Alias the accessor's functions and lift them.
    struct Lift {
        export: String,
        core_func: u32,
        ty: u32,
        options: Vec<CanonicalOption>,
    }
    let mut lifts = Vec::new();
    let mut core_aliases: Vec<String> = Vec::new();
    let first_alias = counts.core_funcs + n_mem + n_res;
    let mut alias = |name: String| {
        core_aliases.push(name);
        first_alias + core_aliases.len() as u32 - 1
    };
    for (k, info) in layout.memories.iter().enumerate() {
        let k = k as u32;
        lifts.push(Lift {
            export: info.snapshot_func(),
            core_func: alias(info.snapshot_func()),
            ty: t_unit,
            options: vec![],
        });
        let realloc = alias(format!("realloc-memory{k}"));
        lifts.push(Lift {
            export: info.restore_func(),
            core_func: alias(info.restore_func()),
            ty: t_restore,
            options: vec![
                CanonicalOption::Memory(memory_index(k)),
                CanonicalOption::Realloc(realloc),
            ],
        });
    }
    for info in &layout.globals {
        let wide = info.ty.is_64();
        lifts.push(Lift {
            export: info.get_func(),
            core_func: alias(info.get_func()),
            ty: if wide { t_get64 } else { t_get32 },
            options: vec![],
        });
        lifts.push(Lift {
            export: info.set_func(),
            core_func: alias(info.set_func()),
            ty: if wide { t_set64 } else { t_set32 },
            options: vec![],
        });
    }
    for info in &layout.resources {
        lifts.push(Lift {
            export: info.adopt_func(),
            core_func: alias(info.adopt_func()),
            ty: t_adopt(info.k),
            options: vec![],
        });
        lifts.push(Lift {
            export: info.drop_func(),
            core_func: alias(info.drop_func()),
            ty: t_drop,
            options: vec![],
        });
    }
    let mut aliases = ComponentAliasSection::new();
    for name in &core_aliases {
        aliases.alias(Alias::CoreInstanceExport {
            instance: accessor_instance,
            kind: ExportKind::Func,
            name,
        });
    }
    if !core_aliases.is_empty() {
        out.section(&aliases);
    }

    let mut canon = CanonicalFunctionSection::new();
    for lift in &lifts {
        canon.lift(lift.core_func, lift.ty, lift.options.iter().copied());
    }
    if !lifts.is_empty() {
        out.section(&canon);
    }
    let first_lift = put_func + 1;

    let mut instances = ComponentInstanceSection::new();
    instances.export_items(lifts.iter().enumerate().map(|(i, lift)| {
        (
            lift.export.as_str(),
            ComponentExportKind::Func,
            first_lift + i as u32,
        )
    }));
    out.section(&instances);

    let mut exports = ComponentExportSection::new();
    exports.export(
        ACCESS_INSTANCE,
        ComponentExportKind::Instance,
        host_instance + 1,
        None,
    );
    out.section(&exports);
}
