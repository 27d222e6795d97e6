//! Analysis and rewriting of one core module of the component.

use std::collections::HashSet;

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, RoundtripReencoder};
use wasmparser::{CompositeInnerType, Operator, Parser, Payload, TypeRef, ValType};

use crate::InstrumentError;
use crate::layout::GlobalType;

/// A defined memory of a module.
#[derive(Debug, Clone)]
pub(crate) struct DefinedMemory {
    /// Index in the module's memory index space (imports included).
    pub index: u32,
    pub initial_pages: u64,
    pub maximum_pages: Option<u64>,
    /// Name under which the rewritten module exports it.
    pub export_name: String,
}

/// A defined mutable global of a module.
#[derive(Debug, Clone)]
pub(crate) struct DefinedGlobal {
    /// Index in the module's global index space (imports included).
    pub index: u32,
    pub ty: GlobalType,
    /// Name under which the rewritten module exports it.
    pub export_name: String,
}

/// What instrumentation needs to know about a core module.
#[derive(Debug, Default)]
pub(crate) struct ModuleFacts {
    pub memories: Vec<DefinedMemory>,
    pub globals: Vec<DefinedGlobal>,
}

/// Prefix of the exports added to instrumented modules.
const EXPORT_PREFIX: &str = "weir-snapshot:";

/// Picks `base`, or `base` with a numeric suffix, so that it collides with no
/// existing export.
fn unique_name(base: String, taken: &HashSet<String>) -> String {
    if !taken.contains(&base) {
        return base;
    }
    (1u32..)
        .map(|n| format!("{base}~{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(base)
}

/// Reads a core module, refuses what cannot be captured, and lists the
/// defined memories and mutable globals to export.
///
/// `module` is the module's index in the component's core-module index space
/// (used in error messages).
pub(crate) fn analyze(module: u32, bytes: &[u8]) -> Result<ModuleFacts, InstrumentError> {
    let mut imported_funcs = 0u32;
    let mut imported_memories = 0u32;
    let mut imported_globals = 0u32;
    let mut type_index = 0u32;
    let mut memories = Vec::new();
    let mut globals = Vec::new();
    let mut export_names = HashSet::new();
    let mut function = 0u32;

    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group?.into_types() {
                        let kind = match sub.composite_type.inner {
                            CompositeInnerType::Func(_) => None,
                            CompositeInnerType::Array(_) => Some("array"),
                            CompositeInnerType::Struct(_) => Some("struct"),
                            CompositeInnerType::Cont(_) => Some("continuation"),
                        };
                        if let Some(kind) = kind {
                            return Err(InstrumentError::UnsupportedType {
                                module,
                                ty: type_index,
                                kind,
                            });
                        }
                        type_index += 1;
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import?.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => imported_funcs += 1,
                        TypeRef::Memory(_) => imported_memories += 1,
                        TypeRef::Global(_) => imported_globals += 1,
                        TypeRef::Table(_) | TypeRef::Tag(_) => {}
                    }
                }
                function = imported_funcs;
            }
            Payload::MemorySection(reader) => {
                for (i, memory) in reader.into_iter().enumerate() {
                    let memory = memory?;
                    let index = imported_memories + i as u32;
                    if memory.shared {
                        return Err(InstrumentError::SharedMemory {
                            module,
                            memory: index,
                        });
                    }
                    if memory.memory64 {
                        return Err(InstrumentError::Memory64 {
                            module,
                            memory: index,
                        });
                    }
                    if let Some(log2) = memory.page_size_log2
                        && log2 != 16
                    {
                        return Err(InstrumentError::CustomPageSize {
                            module,
                            memory: index,
                            page_size_log2: log2,
                        });
                    }
                    memories.push(DefinedMemory {
                        index,
                        initial_pages: memory.initial,
                        maximum_pages: memory.maximum,
                        export_name: String::new(),
                    });
                }
            }
            Payload::GlobalSection(reader) => {
                for (i, global) in reader.into_iter().enumerate() {
                    let global = global?;
                    let index = imported_globals + i as u32;
                    let ty = global.ty;
                    if !ty.mutable {
                        continue;
                    }
                    let supported = match ty.content_type {
                        ValType::I32 => Some(GlobalType::I32),
                        ValType::I64 => Some(GlobalType::I64),
                        ValType::F32 => Some(GlobalType::F32),
                        ValType::F64 => Some(GlobalType::F64),
                        ValType::V128 | ValType::Ref(_) => None,
                    };
                    match supported {
                        Some(gty) if !ty.shared => globals.push(DefinedGlobal {
                            index,
                            ty: gty,
                            export_name: String::new(),
                        }),
                        _ => {
                            let shared = if ty.shared { "shared " } else { "" };
                            return Err(InstrumentError::UnsupportedGlobal {
                                module,
                                global: index,
                                ty: format!("{shared}{}", ty.content_type),
                            });
                        }
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    export_names.insert(export?.name.to_owned());
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader()?;
                while !ops.eof() {
                    let bad = match ops.read()? {
                        Operator::TableSet { .. } => Some((true, "table.set")),
                        Operator::TableGrow { .. } => Some((true, "table.grow")),
                        Operator::TableFill { .. } => Some((true, "table.fill")),
                        Operator::TableCopy { .. } => Some((true, "table.copy")),
                        Operator::TableInit { .. } => Some((true, "table.init")),
                        Operator::ElemDrop { .. } => Some((false, "elem.drop")),
                        Operator::DataDrop { .. } => Some((false, "data.drop")),
                        _ => None,
                    };
                    match bad {
                        Some((true, instruction)) => {
                            return Err(InstrumentError::TableMutation {
                                module,
                                function,
                                instruction,
                            });
                        }
                        Some((false, instruction)) => {
                            return Err(InstrumentError::SegmentDrop {
                                module,
                                function,
                                instruction,
                            });
                        }
                        None => {}
                    }
                }
                function += 1;
            }
            _ => {}
        }
    }

    let mut taken = export_names;
    for memory in &mut memories {
        memory.export_name = unique_name(format!("{EXPORT_PREFIX}memory{}", memory.index), &taken);
        taken.insert(memory.export_name.clone());
    }
    for global in &mut globals {
        global.export_name = unique_name(format!("{EXPORT_PREFIX}global{}", global.index), &taken);
        taken.insert(global.export_name.clone());
    }
    Ok(ModuleFacts { memories, globals })
}

/// Copies a module, adding exports for its defined memories and mutable
/// globals. Function bodies and custom sections are copied byte for byte.
pub(crate) fn rewrite(
    module: u32,
    bytes: &[u8],
    facts: &ModuleFacts,
) -> Result<wasm_encoder::Module, InstrumentError> {
    let extra = facts
        .memories
        .iter()
        .map(|m| {
            (
                m.export_name.clone(),
                wasm_encoder::ExportKind::Memory,
                m.index,
            )
        })
        .chain(facts.globals.iter().map(|g| {
            (
                g.export_name.clone(),
                wasm_encoder::ExportKind::Global,
                g.index,
            )
        }))
        .collect();
    let mut reencoder = AddExports {
        extra,
        added: false,
    };
    let mut out = wasm_encoder::Module::new();
    reencoder
        .parse_core_module(&mut out, Parser::new(0), bytes)
        .map_err(|e| InstrumentError::Reencode {
            module,
            message: e.to_string(),
        })?;
    Ok(out)
}

/// A re-encoder that copies a module and appends exports.
struct AddExports {
    extra: Vec<(String, wasm_encoder::ExportKind, u32)>,
    added: bool,
}

impl AddExports {
    fn push_extra(&mut self, exports: &mut wasm_encoder::ExportSection) {
        for (name, kind, index) in &self.extra {
            exports.export(name, *kind, *index);
        }
        self.added = true;
    }
}

impl Reencode for AddExports {
    type Error = std::convert::Infallible;

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        for export in section {
            let export = export?;
            exports.export(
                export.name,
                RoundtripReencoder.export_kind(export.kind)?,
                export.index,
            );
        }
        self.push_extra(exports);
        Ok(())
    }

    /// Inserts an export section where one belongs when the module has none.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<wasm_encoder::SectionId>,
        before: Option<wasm_encoder::SectionId>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        use wasm_encoder::SectionId;
        if self.added || self.extra.is_empty() {
            return Ok(());
        }
        // Sections that follow the export section in a module.
        let past_exports = matches!(
            before,
            None | Some(
                SectionId::Start
                    | SectionId::Element
                    | SectionId::DataCount
                    | SectionId::Code
                    | SectionId::Data
            )
        );
        if past_exports {
            let mut exports = wasm_encoder::ExportSection::new();
            self.push_extra(&mut exports);
            module.section(&exports);
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        code.raw(func.as_bytes());
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        module.section(&wasm_encoder::CustomSection {
            name: section.name().into(),
            data: section.data().into(),
        });
        Ok(())
    }
}
