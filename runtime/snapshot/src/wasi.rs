//! The host side of the WASI resource-handle protocol (feature `wasi`).
//!
//! See the crate docs, "Resource handles", for why this exists. In short: a
//! guest built with wasi-libc acquires its stdio streams and one pollable
//! per stream on first use and keeps their handle indices in linear memory.
//! A fresh instance restored from that memory must have the same handles
//! at the same indices. This module
//!
//! 1. journals, per store, which of those handles the guest acquired and in
//!    what order ([`add_journaling`], [`HandleJournal`]);
//! 2. checks at a checkpoint that the journal explains every WASI resource
//!    the guest holds ([`check_handles`]);
//! 3. recreates the journaled handles in a fresh instance, through the
//!    instrumented component's `adopt-resource{k}` exports, before its
//!    memory is restored ([`rebuild_handles`]), and lets the host verify the
//!    result ([`probe_handles`]).
//!
//! A host's store data implements [`JournalHost`]; the whole protocol,
//! with the memory and global accessors left out:
//!
//! ```no_run
//! use wasmtime::component::{Component, Linker, ResourceTable};
//! use wasmtime::{Engine, Store};
//! use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, pipe::ClosedInputStream};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//! use weir_snapshot::wasi::{self, CaptureStream, HandleJournal, JournalHost, Stdio};
//!
//! struct HostState {
//!     wasi: WasiCtx,
//!     table: ResourceTable,
//!     journal: HandleJournal,
//!     output: CaptureStream,
//! }
//!
//! impl WasiView for HostState {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//!
//! impl JournalHost for HostState {
//!     fn journal(&mut self) -> &mut HandleJournal {
//!         &mut self.journal
//!     }
//!     fn stdin_stream(&mut self) -> DynInputStream {
//!         Box::new(ClosedInputStream)
//!     }
//!     fn output_stream(&mut self, _which: Stdio) -> DynOutputStream {
//!         Box::new(self.output.clone())
//!     }
//! }
//!
//! fn host(engine: &Engine) -> Store<HostState> {
//!     let state = HostState {
//!         wasi: WasiCtx::builder().build(),
//!         table: ResourceTable::new(),
//!         journal: HandleJournal::default(),
//!         output: CaptureStream::default(),
//!     };
//!     Store::new(engine, state)
//! }
//!
//! fn checkpoint_and_restore(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<()> {
//!     let instrumented = weir_snapshot::instrument(wasm)?;
//!     let component = Component::new(engine, &instrumented.component)?;
//!     let mut linker = Linker::new(engine);
//!     wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
//!     wasi::add_journaling(&mut linker)?;
//!     // (and `weir:snapshot/host`'s `put-memory`, and the host's own imports)
//!
//!     let mut store = host(engine);
//!     let instance = linker.instantiate(&mut store, &component)?;
//!     // ... calls into the guest ...
//!     // Checkpoint, between two calls: store `journal` with the snapshot.
//!     let journal = wasi::check_handles(store.data_mut())?;
//!     // ... snapshot-memory{k}, get-global{k} ...
//!
//!     // Restore into a fresh instance, handles first.
//!     let mut fresh = host(engine);
//!     let restored = linker.instantiate(&mut fresh, &component)?;
//!     wasi::rebuild_handles(&mut fresh, &restored, &instrumented.layout, &journal)?;
//!     // ... restore-memory{k}, set-global{k} ...
//!     Ok(())
//! }
//! ```
//!
//! Host streams must be deterministic: a stream whose `check-write` budget
//! depends on what was written so far leaks that into the guest's memory
//! (see [`CaptureStream`]).

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Instance, Linker, Resource, ResourceTable, ResourceTableError};
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable, StreamResult};

use crate::{ACCESS_INSTANCE, StateLayout};

/// The version under which `wasmtime_wasi::p2::add_to_linker_sync` (in
/// wasmtime-wasi 48) defines the WASI 0.2 interfaces, and hence the names
/// [`add_journaling`] shadows (`wasi:io/streams@0.2.12`, ...).
///
/// wasmtime-wasi does not export it. Guests importing any `0.2.x` are
/// matched to it by wasmtime's semver rules. If an upgrade of wasmtime-wasi
/// changes it, [`add_journaling`] fails with
/// [`HandleError::WasiNotLinked`] instead of silently adding functions
/// nobody calls: update this constant then.
pub const WASI_P2_VERSION: &str = "0.2.12";

/// Import names are matched against the component's own imports (any 0.2.x).
const STREAMS_PREFIX: &str = "wasi:io/streams@0.2.";
const POLL_PREFIX: &str = "wasi:io/poll@0.2.";

/// A stdio stream a guest acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stdio {
    /// From `wasi:cli/stdin.get-stdin` (an `input-stream`).
    Stdin,
    /// From `wasi:cli/stdout.get-stdout` (an `output-stream`).
    Stdout,
    /// From `wasi:cli/stderr.get-stderr` (an `output-stream`).
    Stderr,
}

/// A WASI handle the host knows how to recreate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Held {
    /// A stream from `get-stdin`, `get-stdout` or `get-stderr`.
    Stream(Stdio),
    /// A pollable from `subscribe` on the stream of journal entry `of`
    /// (always an earlier [`Held::Stream`] entry).
    Pollable {
        /// Index of the stream's entry in the journal.
        of: u32,
    },
}

/// The handles a guest acquired, per store: entries in acquisition order,
/// each with its rep (key) in the store's WASI [`ResourceTable`].
///
/// Filled by the functions [`add_journaling`] installs and by
/// [`rebuild_handles`]. Entries are never removed: a handle the guest drops
/// leaves a stale entry, which makes [`check_handles`] refuse.
#[derive(Debug, Clone, Default)]
pub struct HandleJournal {
    entries: Vec<(Held, u32)>,
}

impl HandleJournal {
    /// The entries, in acquisition order (what a snapshot stores).
    pub fn entries(&self) -> impl Iterator<Item = Held> + '_ {
        self.entries.iter().map(|(held, _)| *held)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the guest acquired nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry (for a store whose instance is discarded).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn push(&mut self, held: Held, rep: u32) {
        self.entries.push((held, rep));
    }

    /// The latest stream entry whose resource has `rep`: a dropped stream's
    /// rep may be reused, and the live one is then the most recent.
    fn stream_with_rep(&self, rep: u32) -> Option<u32> {
        let n = self
            .entries
            .iter()
            .rposition(|(held, r)| matches!(held, Held::Stream(_)) && *r == rep)?;
        u32::try_from(n).ok()
    }
}

/// What the store data gives the journaling functions.
pub trait JournalHost: WasiView + 'static {
    /// This store's journal.
    fn journal(&mut self) -> &mut HandleJournal;

    /// A new host stream for the guest's stdin (called for each
    /// `get-stdin`, as wasmtime-wasi's own getter makes one per call).
    fn stdin_stream(&mut self) -> DynInputStream;

    /// A new host stream for `which`, [`Stdio::Stdout`] or
    /// [`Stdio::Stderr`]: the host decides where guest output goes. It
    /// should have a constant `check-write` budget (see [`CaptureStream`]).
    fn output_stream(&mut self, which: Stdio) -> DynOutputStream;
}

/// Why the WASI handles of a guest cannot be journaled, checked or rebuilt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// [`add_journaling`] found no definition to shadow.
    #[error(
        "the linker defines no `{func}` in `{interface}`: call \
         wasmtime_wasi::p2::add_to_linker_sync before add_journaling; if that was done, \
         wasmtime-wasi defines WASI 0.2 under a version other than {WASI_P2_VERSION} and \
         weir_snapshot::wasi::WASI_P2_VERSION must be updated"
    )]
    WasiNotLinked {
        /// The interface, with [`WASI_P2_VERSION`].
        interface: String,
        /// The function.
        func: &'static str,
    },

    /// The guest dropped a journaled handle (or the journal is inconsistent).
    #[error(
        "journal entry {entry} ({held:?}) is no longer held by the guest: it dropped that \
         handle, which leaves a hole in its handle table that cannot be recreated after a \
         restore; refusing to checkpoint"
    )]
    Stale {
        /// Index of the entry in the journal.
        entry: usize,
        /// The entry.
        held: Held,
    },

    /// The guest holds WASI resources the journal does not explain.
    #[error(
        "the guest holds {live} WASI resources but only {journaled} of them are stdio \
         streams or their pollables, which can be recreated after a restore; refusing to \
         checkpoint"
    )]
    Unjournaled {
        /// Live entries of the store's WASI resource table.
        live: usize,
        /// Entries of the journal.
        journaled: usize,
    },

    /// A journal (e.g. read back with a snapshot) whose pollable entry does
    /// not refer to an earlier stream entry.
    #[error(
        "invalid handle journal: entry {entry} is a pollable of entry {of}, which is not an \
         earlier stream entry"
    )]
    BadJournal {
        /// Index of the pollable entry.
        entry: usize,
        /// The entry it refers to.
        of: u32,
    },

    /// [`rebuild_handles`] on a store whose guest already acquired handles.
    #[error(
        "rebuilding handles needs a fresh instance, but this store's journal already has \
         {entries} entries"
    )]
    NotFresh {
        /// Entries already in the store's journal.
        entries: usize,
    },

    /// The component does not import the resource type needed to recreate
    /// a handle, so it cannot have held one.
    #[error(
        "the component imports no `{name}` from `{interface}*`, which is needed to recreate \
         its handles; the journal does not belong to this component"
    )]
    MissingResource {
        /// Interface name prefix, e.g. `wasi:io/streams@0.2.`.
        interface: &'static str,
        /// Resource name, e.g. `output-stream`.
        name: &'static str,
    },

    /// The instance lacks an accessor export the layout names.
    #[error(
        "the instance has no export `{0}` in `{ACCESS_INSTANCE}`: it is not an instance of \
         the instrumented component this layout describes"
    )]
    MissingExport(String),

    /// The store's WASI resource table refused an operation.
    #[error("WASI resource table: {0}")]
    Table(#[from] ResourceTableError),

    /// A call into the instance or a WASI operation failed.
    #[error("{what}: {error:#}")]
    Wasmtime {
        /// What was done.
        what: String,
        /// wasmtime's error (not a `std::error::Error`, hence not a source).
        error: wasmtime::Error,
    },
}

/// An output stream that records what is written and always grants the
/// same `check-write` budget ([`CaptureStream::BUDGET`]).
///
/// wasmtime-wasi's `MemoryOutputPipe` grants a budget that shrinks as it
/// fills; wasi-libc leaves that number in the guest's (dead) stack bytes, so
/// a restored instance writing into a new, empty pipe ends with different
/// memory than one that was never interrupted. A deterministic host must
/// not let the amount written so far leak into the guest. Clones share
/// the buffer.
#[derive(Debug, Clone, Default)]
pub struct CaptureStream(Arc<Mutex<Vec<u8>>>);

impl CaptureStream {
    /// The `check-write` budget, in bytes.
    pub const BUDGET: usize = 4096;

    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl wasmtime_wasi::p2::OutputStream for CaptureStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(Self::BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

/// Shadows, in `linker`, wasmtime-wasi's `get-stdin`, `get-stdout`,
/// `get-stderr` and the `subscribe` methods of `input-stream` and
/// `output-stream` with versions that do the same (the streams come from
/// [`JournalHost::stdin_stream`] and [`JournalHost::output_stream`]) and
/// also append to the store's [`HandleJournal`].
///
/// Call it after `wasmtime_wasi::p2::add_to_linker_sync`; it fails with
/// [`HandleError::WasiNotLinked`] if those functions are not defined at
/// [`WASI_P2_VERSION`]. It leaves name shadowing disabled (wasmtime's
/// default).
pub fn add_journaling<T: JournalHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let streams = format!("wasi:io/streams@{WASI_P2_VERSION}");
    let cli = |name: &str| format!("wasi:cli/{name}@{WASI_P2_VERSION}");
    let shadowed = [
        (streams.clone(), "[method]output-stream.subscribe"),
        (streams.clone(), "[method]input-stream.subscribe"),
        (cli("stdin"), "get-stdin"),
        (cli("stdout"), "get-stdout"),
        (cli("stderr"), "get-stderr"),
    ];
    // The linker cannot be asked what it defines; but defining a name
    // without shadowing succeeds exactly when it was not defined yet. Try
    // that on a copy, so a wrong version fails here, not by never
    // journaling anything.
    let mut probe = linker.clone();
    probe.allow_shadowing(false);
    for (interface, func) in &shadowed {
        let defined = probe
            .instance(interface)?
            .func_wrap(func, |_: StoreContextMut<'_, T>, (): ()| Ok(()));
        if defined.is_ok() {
            return Err(HandleError::WasiNotLinked {
                interface: interface.clone(),
                func,
            }
            .into());
        }
    }
    drop(probe);

    linker.allow_shadowing(true);
    let result = define_journaling(linker, &streams, cli);
    linker.allow_shadowing(false);
    result
}

fn define_journaling<T: JournalHost>(
    linker: &mut Linker<T>,
    streams: &str,
    cli: impl Fn(&str) -> String,
) -> wasmtime::Result<()> {
    let mut inst = linker.instance(streams)?;
    inst.func_wrap(
        "[method]output-stream.subscribe",
        |mut cx: StoreContextMut<'_, T>, (stream,): (Resource<DynOutputStream>,)| {
            Ok((subscribe_journaled(cx.data_mut(), stream)?,))
        },
    )?;
    inst.func_wrap(
        "[method]input-stream.subscribe",
        |mut cx: StoreContextMut<'_, T>, (stream,): (Resource<DynInputStream>,)| {
            Ok((subscribe_journaled(cx.data_mut(), stream)?,))
        },
    )?;
    linker
        .instance(&cli("stdin"))?
        .func_wrap("get-stdin", |mut cx: StoreContextMut<'_, T>, (): ()| {
            Ok((acquire_stdin(cx.data_mut())?,))
        })?;
    for (name, which) in [("stdout", Stdio::Stdout), ("stderr", Stdio::Stderr)] {
        linker.instance(&cli(name))?.func_wrap(
            &format!("get-{name}"),
            move |mut cx: StoreContextMut<'_, T>, (): ()| {
                Ok((acquire_output(cx.data_mut(), which)?,))
            },
        )?;
    }
    Ok(())
}

/// `get-stdin`, journaled.
fn acquire_stdin<T: JournalHost>(
    host: &mut T,
) -> Result<Resource<DynInputStream>, ResourceTableError> {
    let stream = host.stdin_stream();
    let resource = host.ctx().table.push(stream)?;
    host.journal()
        .push(Held::Stream(Stdio::Stdin), resource.rep());
    Ok(resource)
}

/// `get-stdout` or `get-stderr`, journaled.
fn acquire_output<T: JournalHost>(
    host: &mut T,
    which: Stdio,
) -> Result<Resource<DynOutputStream>, ResourceTableError> {
    let stream = host.output_stream(which);
    let resource = host.ctx().table.push(stream)?;
    host.journal().push(Held::Stream(which), resource.rep());
    Ok(resource)
}

/// `subscribe` as wasmtime-wasi does it; journaled if the stream is (a
/// pollable of an unjournaled stream then makes `check_handles` refuse).
fn subscribe_journaled<T: JournalHost, S: Pollable>(
    host: &mut T,
    stream: Resource<S>,
) -> wasmtime::Result<Resource<DynPollable>> {
    let stream_rep = stream.rep();
    let pollable = wasmtime_wasi::p2::subscribe(host.ctx().table, stream)?;
    let journal = host.journal();
    if let Some(of) = journal.stream_with_rep(stream_rep) {
        journal.push(Held::Pollable { of }, pollable.rep());
    }
    Ok(pollable)
}

/// Checks, between two calls of the guest, that every live entry of the
/// store's WASI [`ResourceTable`] is a journaled handle the guest still
/// holds, so [`rebuild_handles`] can recreate all of them. Returns the
/// journal to store with the snapshot.
///
/// Refuses ([`HandleError::Unjournaled`]) if the guest holds anything
/// else, and ([`HandleError::Stale`]) if it dropped a journaled handle.
/// Not detected: a dropped stream whose table slot now holds another
/// stream of the same direction that was not journaled (a host granting no
/// files or sockets hands out no such stream).
pub fn check_handles<T: JournalHost>(host: &mut T) -> Result<Vec<Held>, HandleError> {
    let entries = host.journal().entries.clone();
    let table = host.ctx().table;
    let mut reps = BTreeSet::new();
    for (entry, &(held, rep)) in entries.iter().enumerate() {
        if !reps.insert(rep) || !still_held(table, &entries, held, rep) {
            return Err(HandleError::Stale { entry, held });
        }
    }
    // Every entry is live, and their reps are distinct. `iter_mut` is the
    // table's only public enumeration of live entries. (It would also yield
    // the tombstones of deleted entries, which wasmtime 48 only leaves when
    // a development constant is flipped; one would make us refuse, never
    // accept.)
    let live = table.iter_mut().count();
    if live != entries.len() {
        return Err(HandleError::Unjournaled {
            live,
            journaled: entries.len(),
        });
    }
    Ok(entries.iter().map(|(held, _)| *held).collect())
}

/// Whether `rep` still holds what the journal says it does.
fn still_held(table: &ResourceTable, entries: &[(Held, u32)], held: Held, rep: u32) -> bool {
    match held {
        Held::Stream(Stdio::Stdin) => table
            .get(&Resource::<DynInputStream>::new_borrow(rep))
            .is_ok(),
        Held::Stream(_) => table
            .get(&Resource::<DynOutputStream>::new_borrow(rep))
            .is_ok(),
        Held::Pollable { of } => {
            let Ok(pollable) = table.get(&Resource::<DynPollable>::new_borrow(rep)) else {
                return false;
            };
            let Some(&(Held::Stream(_), stream_rep)) = entries.get(of as usize) else {
                return false;
            };
            // It must be a child of that stream: a dropped pollable's slot
            // may since hold another one (a clock's, say). (`iter_children`
            // does not check the type parameter.)
            let Ok(mut children) = table.iter_children(&Resource::<()>::new_borrow(stream_rep))
            else {
                return false;
            };
            children.any(|child| {
                std::ptr::addr_eq(
                    child as *const (dyn Any + Send),
                    pollable as *const DynPollable,
                )
            })
        }
    }
}

/// Recreates, in a fresh instance and before its memory is restored, the
/// handles of `journal` (from [`check_handles`] on the original) in the
/// same order, so that they get the handle indices the guest's restored
/// memory refers to. The store's journal (which must be empty) ends up
/// equal to the original's. Returns the indices the handles got.
///
/// Each stream comes from [`JournalHost::stdin_stream`] or
/// [`JournalHost::output_stream`], each pollable from `subscribe` on the
/// rebuilt stream; each is moved into the instance by its
/// `adopt-resource{k}`. On error, discard the instance.
pub fn rebuild_handles<T: JournalHost>(
    store: &mut Store<T>,
    instance: &Instance,
    layout: &StateLayout,
    journal: &[Held],
) -> Result<Vec<u32>, HandleError> {
    let entries = store.data_mut().journal().len();
    if entries != 0 {
        return Err(HandleError::NotFresh { entries });
    }
    let mut indices = Vec::with_capacity(journal.len());
    for (entry, &held) in journal.iter().enumerate() {
        let index = match held {
            Held::Stream(Stdio::Stdin) => {
                let stream = acquire_stdin(store.data_mut())?;
                adopt(
                    store,
                    instance,
                    layout,
                    STREAMS_PREFIX,
                    "input-stream",
                    stream,
                )?
            }
            Held::Stream(which) => {
                let stream = acquire_output(store.data_mut(), which)?;
                adopt(
                    store,
                    instance,
                    layout,
                    STREAMS_PREFIX,
                    "output-stream",
                    stream,
                )?
            }
            Held::Pollable { of } => {
                let bad = HandleError::BadJournal { entry, of };
                let Some(Held::Stream(which)) = journal[..entry].get(of as usize).copied() else {
                    return Err(bad);
                };
                // The store's journal started empty and follows `journal`.
                let host = store.data_mut();
                let Some(&(_, stream_rep)) = host.journal().entries.get(of as usize) else {
                    return Err(bad);
                };
                let subscribed = match which {
                    Stdio::Stdin => subscribe_journaled(
                        host,
                        Resource::<DynInputStream>::new_borrow(stream_rep),
                    ),
                    Stdio::Stdout | Stdio::Stderr => subscribe_journaled(
                        host,
                        Resource::<DynOutputStream>::new_borrow(stream_rep),
                    ),
                };
                let pollable = subscribed.map_err(|error| HandleError::Wasmtime {
                    what: format!("subscribing to the stream of journal entry {of}"),
                    error,
                })?;
                adopt(store, instance, layout, POLL_PREFIX, "pollable", pollable)?
            }
        };
        indices.push(index);
    }
    Ok(indices)
}

/// The next `n` handle indices `instance` would allocate, found without
/// changing anything: adopts `n` throw-away output streams, notes their
/// indices, and drops them again in reverse order (the handle table's free
/// list is last-freed-first, so it ends as it was).
///
/// Comparing the result between the original instance (at the checkpoint)
/// and the rebuilt one verifies [`rebuild_handles`]. Needs a component that
/// imports `output-stream`.
pub fn probe_handles<T: JournalHost>(
    store: &mut Store<T>,
    instance: &Instance,
    layout: &StateLayout,
    n: usize,
) -> Result<Vec<u32>, HandleError> {
    let info = wasi_resource(layout, STREAMS_PREFIX, "output-stream")?;
    let drop_name = info.drop_func();
    let drop = access_func::<T, (u32,), ()>(store, instance, &drop_name)?;
    let mut indices = Vec::with_capacity(n);
    for _ in 0..n {
        let sink: DynOutputStream = Box::new(wasmtime_wasi::p2::pipe::SinkOutputStream);
        let sink = store.data_mut().ctx().table.push(sink)?;
        indices.push(adopt(
            store,
            instance,
            layout,
            STREAMS_PREFIX,
            "output-stream",
            sink,
        )?);
    }
    for index in indices.iter().rev() {
        drop.call(&mut *store, (*index,))
            .map_err(|error| HandleError::Wasmtime {
                what: format!("calling {drop_name}({index})"),
                error,
            })?;
    }
    Ok(indices)
}

/// Moves `handle` into `instance`'s handle table with the
/// `adopt-resource{k}` of the resource `name` of `interface*`.
fn adopt<T: JournalHost, R: 'static>(
    store: &mut Store<T>,
    instance: &Instance,
    layout: &StateLayout,
    interface: &'static str,
    name: &'static str,
    handle: Resource<R>,
) -> Result<u32, HandleError> {
    let func_name = wasi_resource(layout, interface, name)?.adopt_func();
    let func = access_func::<T, (Resource<R>,), (u32,)>(store, instance, &func_name)?;
    let (index,) = func
        .call(&mut *store, (handle,))
        .map_err(|error| HandleError::Wasmtime {
            what: format!("calling {func_name} ({interface}*/{name})"),
            error,
        })?;
    Ok(index)
}

/// The first imported resource `name` of an interface starting with
/// `interface` (several 0.2.x versions all link to the same host type).
fn wasi_resource<'a>(
    layout: &'a StateLayout,
    interface: &'static str,
    name: &'static str,
) -> Result<&'a crate::ResourceInfo, HandleError> {
    layout
        .resources
        .iter()
        .find(|r| r.interface.starts_with(interface) && r.name == name)
        .ok_or(HandleError::MissingResource { interface, name })
}

/// The accessor export `name`, typed.
fn access_func<T: 'static, P, R>(
    store: &mut Store<T>,
    instance: &Instance,
    name: &str,
) -> Result<wasmtime::component::TypedFunc<P, R>, HandleError>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    let missing = || HandleError::MissingExport(name.to_owned());
    let access = instance
        .get_export_index(&mut *store, None, ACCESS_INSTANCE)
        .ok_or_else(missing)?;
    let index = instance
        .get_export_index(&mut *store, Some(&access), name)
        .ok_or_else(missing)?;
    instance
        .get_typed_func::<P, R>(&mut *store, &index)
        .map_err(|error| HandleError::Wasmtime {
            what: format!("the type of {name}"),
            error,
        })
}
