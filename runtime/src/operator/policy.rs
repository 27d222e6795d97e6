//! What an operator may import, and what happens to the rest
//! (docs/determinism.md, "Denied calls").
//!
//! weir provides the operator world (`weir:operator/*`), the snapshot
//! protocol its instrumentation adds, and the WASI 0.2 interfaces whose
//! answers are deterministic or recorded: `wasi:cli` (no arguments, no
//! environment, empty stdin), `wasi:io`, `wasi:clocks` and `wasi:random`
//! (recorded), and `wasi:filesystem/types` (inert: without a preopened
//! directory no descriptor can ever be had). Everything else is denied:
//! `wasi:filesystem/preopens` (the only way to a file), `wasi:sockets/*`,
//! `wasi:http/*`, and any interface weir does not know.
//!
//! Under [`DeniedPolicy::Strict`] a component importing a denied interface
//! is refused at load, naming every such import; under
//! [`DeniedPolicy::Trap`] each denied function is linked to a stub that
//! traps when called, with the same explanation.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::types::{ComponentInstance, ComponentItem};
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceType};

use super::instance::HostState;

/// What to do with imports weir denies (`[determinism] denied`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeniedPolicy {
    /// Refuse the component at load.
    #[default]
    Strict,
    /// Load it; a call to a denied function traps.
    Trap,
}

impl fmt::Display for DeniedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeniedPolicy::Strict => "strict",
            DeniedPolicy::Trap => "trap",
        })
    }
}

/// Interfaces weir provides, without their version (`namespace:package/name`).
const PROVIDED: &[&str] = &[
    "weir:operator/types",
    "weir:operator/host",
    "weir:operator/recorded",
    "weir:snapshot/host",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
];

/// Whether weir provides the interface `import` (a full import name such as
/// `wasi:io/streams@0.2.6`). WASI interfaces must be of version 0.2.x and
/// weir's of 0.1.x (what this weir links).
pub fn provided(import: &str) -> bool {
    let (name, version) = import.split_once('@').unwrap_or((import, ""));
    let version_ok = if name.starts_with("wasi:") {
        version.starts_with("0.2.")
    } else if name.starts_with("weir:") {
        version.starts_with("0.1.")
    } else {
        false
    };
    version_ok && PROVIDED.contains(&name)
}

/// Why weir denies the interface `import`, and what to use instead.
pub fn advice(import: &str) -> String {
    let name = import.split_once('@').map_or(import, |(n, _)| n);
    let version = import.split_once('@').map_or("", |(_, v)| v);
    if name == "wasi:filesystem/preopens" {
        "weir grants operators no files (a file can change between a run and its replay); \
         pass the data in records or the operator's config, or read an allow-listed file \
         with `weir:operator/recorded.read-file`"
            .into()
    } else if name.starts_with("wasi:sockets/") || name.starts_with("wasi:http/") {
        "network access is not replayable; fetch an allow-listed URL with \
         `weir:operator/recorded.http-get` (performed once, journaled, replayed)"
            .into()
    } else if PROVIDED.contains(&name) {
        format!(
            "weir provides `{name}` at version {} only, not {version}; build the operator \
             for wasm32-wasip2 against wit/operator.wit",
            if name.starts_with("weir:") {
                "0.1.x"
            } else {
                "0.2.x"
            }
        )
    } else {
        "weir does not provide this interface; an operator may import only `weir:operator/*` \
         and the WASI 0.2 interfaces listed in docs/determinism.md"
            .into()
    }
}

/// One import weir denies: the interface and its functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedImport {
    /// The full import name, e.g. `wasi:sockets/tcp@0.2.6`.
    pub interface: String,
    /// The functions the component imports from it (for a bare function
    /// import: its name).
    pub functions: Vec<String>,
}

impl fmt::Display for DeniedImport {
    /// `` `interface` (function f, g and 3 more) ``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self.functions.iter().take(3).map(String::as_str).collect();
        let more = self.functions.len().saturating_sub(shown.len());
        write!(f, "`{}`", self.interface)?;
        if !shown.is_empty() {
            write!(
                f,
                " (function{} {}{})",
                if self.functions.len() == 1 { "" } else { "s" },
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )?;
        }
        Ok(())
    }
}

/// The imports of `component` that weir denies, in import order.
pub fn denied_imports(engine: &Engine, component: &Component) -> Vec<DeniedImport> {
    component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| !provided(name))
        .map(|(name, item)| DeniedImport {
            interface: name.to_owned(),
            functions: match item.ty {
                ComponentItem::ComponentInstance(instance) => functions(engine, &instance),
                _ => vec![name.to_owned()],
            },
        })
        .collect()
}

fn functions(engine: &Engine, instance: &ComponentInstance) -> Vec<String> {
    instance
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The message of a strict refusal: every denied import, grouped by why.
pub fn refusal(operator: &str, denied: &[DeniedImport]) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for d in denied {
        let why = advice(&d.interface);
        match groups.iter_mut().find(|(w, _)| *w == why) {
            Some((_, imports)) => imports.push(d.to_string()),
            None => groups.push((why, vec![d.to_string()])),
        }
    }
    let lines: Vec<String> = groups
        .into_iter()
        .map(|(why, imports)| format!("  - {}: {why}", imports.join(", ")))
        .collect();
    format!(
        "operator `{operator}` imports what weir denies ([determinism] denied = \"strict\"):\n{}\n\
         rebuild it without these calls, or set [determinism] denied = \"trap\" to load it \
         and trap only if it makes one",
        lines.join("\n")
    )
}

/// Links, in `linker`, a trapping stub for every function of the denied
/// imports of `component`. The trap message names the operator (from the
/// store), the interface, the function, and what to use instead.
///
/// Resources must keep the types the rest of the component sees: the
/// denied WASI interfaces (`wasi:filesystem/preopens`, `wasi:sockets/*`) are
/// first linked as wasmtime-wasi implements them, so their resources (and
/// those they share with provided interfaces, like `descriptor` or
/// `pollable`) are the real ones, and only their functions are replaced.
/// Resources of other interfaces get a type of their own, except those that
/// are `wasi:io` streams or pollables.
pub fn link_trapping_stubs(
    engine: &Engine,
    linker: &mut Linker<HostState>,
    component: &Component,
) -> wasmtime::Result<()> {
    add_denied_wasi(linker)?;
    let imports: Vec<(String, ComponentItem)> = component
        .component_type()
        .imports(engine)
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    let io = io_resources(engine, &imports);
    linker.allow_shadowing(true);
    let result = (|| {
        for (name, item) in &imports {
            if provided(name) {
                continue;
            }
            let real_wasi =
                name.starts_with("wasi:sockets/") || name.starts_with("wasi:filesystem/preopens@");
            match item {
                ComponentItem::ComponentInstance(instance) => {
                    // The real ones are defined at the version wasmtime-wasi
                    // links; an instance at the component's version would
                    // hide them.
                    let at = match (real_wasi, name.split_once('@')) {
                        (true, Some((unversioned, _))) => {
                            format!("{unversioned}@{}", weir_snapshot::wasi::WASI_P2_VERSION)
                        }
                        _ => name.clone(),
                    };
                    let mut inst = linker.instance(&at)?;
                    stub_instance(engine, &mut inst, name, instance, real_wasi, &io)?;
                }
                ComponentItem::ComponentFunc(_) => {
                    stub_func(&mut linker.root(), name, name, "")?;
                }
                ComponentItem::Resource(_) => {
                    linker
                        .root()
                        .resource(name, ResourceType::host::<Denied>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
        Ok(())
    })();
    linker.allow_shadowing(false);
    result
}

/// wasmtime-wasi's own definitions of the WASI interfaces weir denies.
fn add_denied_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{filesystem, sockets, sync};
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};

    let l = linker;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    let options = sockets::network::LinkOptions::default();
    sockets::network::add_to_linker::<HostState, WasiSockets>(l, &options, HostState::sockets)?;
    sockets::instance_network::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sync::sockets::tcp::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sync::sockets::udp::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sync::sockets::udp_create_socket::add_to_linker::<HostState, WasiSockets>(
        l,
        HostState::sockets,
    )?;
    Ok(())
}

/// The component's view of the `wasi:io` resources it imports, with their
/// host types: a denied interface that uses them must name the same types.
fn io_resources(
    engine: &Engine,
    imports: &[(String, ComponentItem)],
) -> Vec<(wasmtime::component::types::ResourceType, ResourceType)> {
    let mut found = Vec::new();
    for (name, item) in imports {
        let ComponentItem::ComponentInstance(instance) = item else {
            continue;
        };
        if !(name.starts_with("wasi:io/") && provided(name)) {
            continue;
        }
        for (export, item) in instance.exports(engine) {
            let ComponentItem::Resource(ty) = item.ty else {
                continue;
            };
            let host = match export {
                "pollable" => ResourceType::host::<wasmtime_wasi::p2::DynPollable>(),
                "input-stream" => ResourceType::host::<wasmtime_wasi::p2::DynInputStream>(),
                "output-stream" => ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>(),
                _ => continue,
            };
            found.push((ty, host));
        }
    }
    found
}

/// The host type of a resource of a denied interface (no value of it is
/// ever made).
struct Denied;

fn stub_instance(
    engine: &Engine,
    inst: &mut LinkerInstance<'_, HostState>,
    interface: &str,
    instance: &ComponentInstance,
    real_wasi: bool,
    io: &[(wasmtime::component::types::ResourceType, ResourceType)],
) -> wasmtime::Result<()> {
    for (export, item) in instance.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(_) => stub_func(inst, export, interface, export)?,
            ComponentItem::Resource(_) if real_wasi => {}
            ComponentItem::Resource(ty) => {
                let host = io
                    .iter()
                    .find(|(seen, _)| *seen == ty)
                    .map_or_else(ResourceType::host::<Denied>, |(_, host)| *host);
                inst.resource(export, host, |_, _| Ok(()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn stub_func(
    inst: &mut LinkerInstance<'_, HostState>,
    name: &str,
    interface: &str,
    function: &str,
) -> wasmtime::Result<()> {
    let advice = advice(interface);
    let called = if function.is_empty() {
        format!("`{interface}`")
    } else {
        format!("`{interface}` function `{function}`")
    };
    inst.func_new(name, move |store, _, _, _| {
        Err(wasmtime::Error::msg(format!(
            "operator `{}` called {called}, which weir denies ([determinism] denied = \
             \"trap\"): {advice}",
            store.data().operator()
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_weir_provides() {
        assert!(provided("wasi:io/streams@0.2.6"));
        assert!(provided("wasi:random/insecure-seed@0.2.0"));
        assert!(provided("weir:operator/recorded@0.1.0"));
        assert!(!provided("wasi:io/streams@0.3.0"));
        assert!(!provided("wasi:filesystem/preopens@0.2.6"));
        assert!(!provided("wasi:sockets/tcp@0.2.6"));
        assert!(!provided("wasi:http/outgoing-handler@0.2.6"));
        assert!(!provided("acme:thing/frob"));
        assert!(advice("wasi:sockets/tcp@0.2.6").contains("http-get"));
        assert!(advice("wasi:filesystem/preopens@0.2.6").contains("read-file"));
        assert!(advice("wasi:io/streams@0.3.0").contains("0.2.x only"));
    }
}
