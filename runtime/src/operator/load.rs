//! Loading a component: read, recognise, instrument for snapshots, compile
//! (once, cached on disk), and check that it implements the operator world
//! before anything runs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use wasmtime::Engine;
use wasmtime::component::Component;
use weir_snapshot::StateLayout;

use crate::checkpoint::Hash;
use wasmtime::component::types::ComponentItem;

use super::OperatorError;

/// The export every operator must have, with the version this weir speaks.
pub const HANDLER_EXPORT: &str = "weir:operator/handler@0.1.0";
const HANDLER_PREFIX: &str = "weir:operator/handler@";
const HANDLER_FUNCS: [&str; 2] = ["init", "process"];

/// A component ready to instantiate, with what checkpoints need of it.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The instrumented component, compiled.
    pub component: Component,
    /// Its memories, globals and imported resource types, in accessor order.
    pub layout: StateLayout,
    /// The component file's bytes, as the user built them (checkpoints store
    /// these, so every checkpoint names its exact code).
    pub original: Bytes,
    /// blake3 of `original`.
    pub hash: Hash,
}

/// Compiled components on disk, keyed by the hash of the component's bytes
/// and of the engine's configuration, so an upgrade or a config change never
/// loads stale code.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// Caches under `dir`; `None` compiles every time.
    pub fn new(dir: Option<PathBuf>) -> ComponentCache {
        ComponentCache { dir }
    }

    /// The default place: `$WEIR_CACHE_DIR`, else `~/.cache/weir/components`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
            return Some(PathBuf::from(dir).join("components"));
        }
        dirs::cache_dir().map(|d| d.join("weir").join("components"))
    }

    /// Reads, validates, instruments and compiles the component for operator
    /// `operator`. A component whose state cannot be captured faithfully is
    /// refused here, with the reason.
    pub fn load(
        &self,
        engine: &Engine,
        operator: &str,
        path: &Path,
    ) -> Result<LoadedComponent, OperatorError> {
        let fail = |message: String| OperatorError::Load {
            operator: operator.to_owned(),
            path: path.to_owned(),
            message,
        };
        let bytes =
            std::fs::read(path).map_err(|e| fail(format!("cannot read the component: {e}")))?;
        self.load_bytes(engine, operator, path, bytes)
    }

    /// Like [`ComponentCache::load`], for a component's bytes already read
    /// (from a checkpoint store, say); `path` names where they came from in
    /// messages.
    pub fn load_bytes(
        &self,
        engine: &Engine,
        operator: &str,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<LoadedComponent, OperatorError> {
        let fail = |message: String| OperatorError::Load {
            operator: operator.to_owned(),
            path: path.to_owned(),
            message,
        };
        if wasmparser::Parser::is_core_wasm(&bytes) {
            return Err(fail(
                "this is a core WebAssembly module, not a component; build the operator for \
                 `wasm32-wasip2` (Rust) or wrap the module with `wasm-tools component new`"
                    .into(),
            ));
        }
        if !wasmparser::Parser::is_component(&bytes) {
            return Err(fail("not a WebAssembly component (the file does not start with the wasm magic bytes and component version)".into()));
        }
        // Validate first, so that a broken component is reported as broken
        // rather than as something the instrumentation refuses.
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&bytes)
            .map_err(|e| fail(format!("invalid component: {e}")))?;
        let instrumented = weir_snapshot::instrument(&bytes).map_err(|e| {
            fail(format!(
                "weir cannot checkpoint this component's state, so it refuses to run it: {e}"
            ))
        })?;
        let component = self
            .compile(engine, &instrumented.component)
            .map_err(|e| fail(format!("invalid component: {e:#}")))?;
        check_world(engine, &component).map_err(fail)?;
        let original = Bytes::from(bytes);
        Ok(LoadedComponent {
            component,
            layout: instrumented.layout,
            hash: Hash::of(&original),
            original,
        })
    }

    fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes);
        };
        let file = dir.join(format!(
            "{}-{}.cwasm",
            blake3::hash(bytes).to_hex(),
            engine_fingerprint(engine)
        ));
        if file.exists() {
            match deserialize_cached(engine, &file) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %file.display(), "ignoring unusable cached component: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store_cached(&component, dir, &file) {
            tracing::warn!(dir = %dir.display(), "cannot cache the compiled component: {e:#}");
        }
        Ok(component)
    }
}

fn engine_fingerprint(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, file: &Path) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that the file was produced by
    // `Component::serialize` of a compatible engine and not modified since.
    // Only `store_cached` writes this directory, atomically (temp + rename),
    // under a name that includes the engine's compatibility hash; wasmtime
    // also checks the header and engine settings before using the code.
    unsafe { Component::deserialize_file(engine, file) }
}

fn store_cached(component: &Component, dir: &Path, file: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Checks the exports against the operator world, with a message that says
/// what is missing and what to do.
fn check_world(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let exports: Vec<(String, ComponentItem)> = ty
        .exports(engine)
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    let Some((_, item)) = exports.iter().find(|(name, _)| name == HANDLER_EXPORT) else {
        if let Some((name, _)) = exports
            .iter()
            .find(|(name, _)| name.starts_with(HANDLER_PREFIX))
        {
            return Err(format!(
                "the component implements `{name}`, but this weir runs `{HANDLER_EXPORT}`; \
                 rebuild the operator against the WIT shipped with this weir (wit/operator.wit)"
            ));
        }
        let names: Vec<&str> = exports
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != weir_snapshot::ACCESS_INSTANCE)
            .collect();
        return Err(format!(
            "the component does not implement the weir operator world: it has no export `{HANDLER_EXPORT}` \
             (its exports: {}); build it against wit/operator.wit, world `operator`",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    };
    let ComponentItem::ComponentInstance(instance) = item else {
        return Err(format!("export `{HANDLER_EXPORT}` is not an instance"));
    };
    let funcs: Vec<String> = instance
        .exports(engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    for f in HANDLER_FUNCS {
        if !funcs.iter().any(|n| n == f) {
            return Err(format!(
                "export `{HANDLER_EXPORT}` lacks function `{f}` (it has: {})",
                funcs.join(", ")
            ));
        }
    }
    Ok(())
}
