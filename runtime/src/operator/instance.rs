//! One running operator instance.

use std::sync::Arc;

use wasmtime::component::{HasData, HasSelf, Instance, Linker, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, StoreContextMut, Trap};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_snapshot::wasi::{HandleJournal, JournalHost, Stdio};

use super::OperatorError;
use super::bindings::weir::operator::{host, recorded, types};
use super::bindings::{Operator, OperatorPre};
use super::guest_output::GuestOutput;
use super::load::{ComponentCache, LoadedComponent};
use super::packed::{self, ProcessPacked};
use super::policy::{self, DeniedPolicy};
use super::recorded::{RandomStream, TaskInputs};
use super::state::PageBaseline;
use crate::checkpoint::{LookupAnswer, LookupRequest, RecordedState};
use crate::record::{BatchResult, Record};

/// Resource limits of an instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Fuel per record of a batch.
    pub fuel_per_record: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes_max: u64,
}

/// `init` may do setup work (build tables, parse config): it gets the budget
/// of this many records.
const INIT_FUEL_RECORDS: u64 = 1024;

/// Largest table an instance may grow to, in elements.
const TABLE_ELEMENTS_MAX: usize = 1 << 20;

/// Why a call into the guest failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guest trapped (a panic, `unreachable`, out-of-bounds access...).
    #[error("trapped: {trap}{}", guest_said(.guest_output))]
    Trap {
        /// The trap, as wasmtime describes it.
        trap: String,
        /// What the guest printed to stdout/stderr in this call (tail).
        guest_output: String,
    },
    /// The call used all its fuel.
    #[error(
        "CPU limit exceeded: the batch of {records} record(s) used its whole budget of {fuel} fuel ({fuel_per_record} per record; raise limits.fuel_per_record if the work is legitimate)"
    )]
    Fuel {
        /// Records in the batch.
        records: usize,
        /// The budget of the call.
        fuel: u64,
        /// The configured per-record budget.
        fuel_per_record: u64,
    },
    /// The guest needed more memory than allowed.
    #[error("memory limit reached: the guest asked to grow its memory to {requested_bytes} bytes, over limits.memory_mib = {limit_mib}{}", guest_said(.guest_output))]
    Memory {
        /// What the guest asked for.
        requested_bytes: u64,
        /// The limit.
        limit_mib: u64,
        /// What the guest printed.
        guest_output: String,
    },
}

fn guest_said(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!("; the guest printed: {output}")
    }
}

/// Per-store host state.
pub struct HostState {
    operator: Arc<str>,
    wasi: WasiCtx,
    /// The task's recorded inputs (time of the batch, lookup answers).
    inputs: TaskInputs,
    /// The instance's random streams (`random`, `insecure`), when recorded.
    random: Option<(RandomStream, RandomStream)>,
    /// Lookups made so far (denied ones not counted).
    lookups: u64,
    /// The guest's stdio, for streams created when it asks for them.
    stdout: GuestOutput,
    stderr: GuestOutput,
    /// Which WASI handles the guest acquired, so a restore recreates them.
    journal: HandleJournal,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// What the last capture (or the restore) saw, and what the current
    /// capture receives.
    pub(super) pages: PageBaseline,
}

impl HostState {
    /// The operator's name.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// How far the instance has read its recorded inputs.
    pub(super) fn recorded_state(&self) -> RecordedState {
        let (random_bytes, insecure_random_bytes) = self
            .random
            .as_ref()
            .map_or((0, 0), |(r, i)| (r.position(), i.position()));
        RecordedState {
            random_bytes,
            insecure_random_bytes,
            lookups: self.lookups,
        }
    }

    /// Continues the recorded inputs from `at` (a restore).
    pub(super) fn set_recorded_state(&mut self, at: &RecordedState) {
        if let Some((random, insecure)) = &self.random {
            random.set_position(at.random_bytes);
            insecure.set_position(at.insecure_random_bytes);
        }
        self.lookups = at.lookups;
        self.inputs.restored(&self.operator, at.lookups);
    }

    fn lookup(&mut self, request: LookupRequest) -> wasmtime::Result<Result<LookupAnswer, String>> {
        let index = self.lookups;
        match self.inputs.lookup(&self.operator, index, request) {
            Ok(Ok(answer)) => {
                self.lookups += 1;
                Ok(Ok(answer))
            }
            Ok(Err(denied)) => Ok(Err(denied)),
            Err(trap) => Err(wasmtime::Error::msg(trap)),
        }
    }
}

fn lookup_error(answer: LookupAnswer) -> recorded::LookupError {
    match answer {
        LookupAnswer::TooLarge { limit } => recorded::LookupError::TooLarge(limit),
        LookupAnswer::Failed { message } => recorded::LookupError::Failed(message),
        LookupAnswer::Http { .. } => {
            recorded::LookupError::Failed("the recorded answer is an HTTP response".into())
        }
        LookupAnswer::File { .. } => {
            recorded::LookupError::Failed("the recorded answer is a file's content".into())
        }
    }
}

impl recorded::Host for HostState {
    fn http_get(
        &mut self,
        url: String,
    ) -> wasmtime::Result<Result<recorded::HttpResponse, recorded::LookupError>> {
        Ok(match self.lookup(LookupRequest::HttpGet { url })? {
            Err(denied) => Err(recorded::LookupError::Denied(denied)),
            Ok(LookupAnswer::Http {
                status,
                headers,
                body,
            }) => Ok(recorded::HttpResponse {
                status,
                headers,
                body,
            }),
            Ok(other) => Err(lookup_error(other)),
        })
    }

    fn read_file(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<u8>, recorded::LookupError>> {
        Ok(match self.lookup(LookupRequest::ReadFile { path })? {
            Err(denied) => Err(recorded::LookupError::Denied(denied)),
            Ok(LookupAnswer::File { bytes }) => Ok(bytes),
            Ok(other) => Err(lookup_error(other)),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl JournalHost for HostState {
    fn journal(&mut self) -> &mut HandleJournal {
        &mut self.journal
    }

    fn stdin_stream(&mut self) -> wasmtime_wasi::p2::DynInputStream {
        // Operators read no stdin: an empty stream, as wasmtime-wasi's default.
        wasmtime_wasi::cli::StdinStream::p2_stream(&tokio::io::empty())
    }

    fn output_stream(&mut self, which: Stdio) -> wasmtime_wasi::p2::DynOutputStream {
        use wasmtime_wasi::cli::StdoutStream;
        match which {
            Stdio::Stderr => self.stderr.p2_stream(),
            Stdio::Stdout | Stdio::Stdin => self.stdout.p2_stream(),
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) {
        let operator = &*self.operator;
        match level {
            types::Level::Trace => tracing::trace!(operator, "{message}"),
            types::Level::Debug => tracing::debug!(operator, "{message}"),
            types::Level::Info => tracing::info!(operator, "{message}"),
            types::Level::Warn => tracing::warn!(operator, "{message}"),
            types::Level::Error => tracing::error!(operator, "{message}"),
        }
    }
}

/// Refuses memory growth past the limit and remembers that it did, so a
/// resulting trap is reported as what it is.
struct MemoryLimiter {
    memory_bytes_max: u64,
    refused_bytes: Option<u64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes_max {
            self.refused_bytes = Some(desired as u64);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }
}

/// The linker every operator is instantiated with: weir's host interfaces,
/// the snapshot receiver, and the WASI 0.2 interfaces weir provides
/// (`policy` lists them): no files, network, environment or arguments.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    add_provided_wasi(&mut linker)?;
    weir_snapshot::wasi::add_journaling(&mut linker)?;
    add_recorded_timers(&mut linker)?;
    Operator::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    super::state::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// `HasData` for the WASI interfaces that only need the resource table.
struct HasTable;

impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The WASI 0.2 interfaces weir provides (see `policy::PROVIDED`), as
/// wasmtime-wasi implements them; clocks and randomness read the recorded
/// values the `WasiCtx` is built with.
fn add_provided_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

    let l = linker;
    fn table(t: &mut HostState) -> &mut ResourceTable {
        &mut t.table
    }
    fn rng(t: &mut HostState) -> &mut wasmtime_wasi::random::WasiRandomCtx {
        WasiRandomView::random(t)
    }
    sync::io::error::add_to_linker::<HostState, HasTable>(l, table)?;
    sync::io::poll::add_to_linker::<HostState, HasTable>(l, table)?;
    sync::io::streams::add_to_linker::<HostState, HasTable>(l, table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, rng)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, rng)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, rng)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    sync::filesystem::types::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    Ok(())
}

/// A timer that is ready at once: recorded time does not pass during a
/// call, so a wait never has to wait (and never depends on the host).
struct ReadyNow;

#[wasmtime_wasi::async_trait]
impl Pollable for ReadyNow {
    async fn ready(&mut self) {}
}

/// Shadows `subscribe-instant` and `subscribe-duration` of
/// `wasi:clocks/monotonic-clock` with timers that are ready at once, so a
/// guest's sleep or `poll` never depends on how fast the host is.
fn add_recorded_timers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let name = format!(
        "wasi:clocks/monotonic-clock@{}",
        weir_snapshot::wasi::WASI_P2_VERSION
    );
    linker.allow_shadowing(true);
    let result = (|| {
        let mut inst = linker.instance(&name)?;
        for func in ["subscribe-instant", "subscribe-duration"] {
            inst.func_wrap(
                func,
                |mut cx: StoreContextMut<'_, HostState>, (_,): (u64,)| {
                    let table = &mut cx.data_mut().table;
                    let timer = table.push(ReadyNow)?;
                    let pollable: Resource<DynPollable> =
                        wasmtime_wasi::p2::subscribe(table, timer)?;
                    Ok((pollable,))
                },
            )?;
        }
        Ok(())
    })();
    linker.allow_shadowing(false);
    result
}

/// A component compiled, checked and linked; instantiate it once per task.
pub struct PreparedOperator {
    pub(super) name: Arc<str>,
    engine: Engine,
    pub(super) pre: OperatorPre<HostState>,
    pub(super) loaded: LoadedComponent,
    config: Vec<(String, String)>,
    limits: Limits,
}

impl PreparedOperator {
    /// Loads the component at `path` and links it (denied imports refused).
    pub fn prepare(
        engine: &Engine,
        linker: &Linker<HostState>,
        cache: &ComponentCache,
        name: &str,
        path: &std::path::Path,
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<PreparedOperator, OperatorError> {
        let loaded = cache.load(engine, name, path)?;
        PreparedOperator::link(
            engine,
            linker,
            name,
            loaded,
            config,
            limits,
            DeniedPolicy::Strict,
        )
    }

    /// Links a loaded component, applying `denied` to the imports weir does
    /// not provide.
    pub fn link(
        engine: &Engine,
        linker: &Linker<HostState>,
        name: &str,
        loaded: LoadedComponent,
        config: Vec<(String, String)>,
        limits: Limits,
        denied: DeniedPolicy,
    ) -> Result<PreparedOperator, OperatorError> {
        let link_error = |e: wasmtime::Error| OperatorError::Link {
            operator: name.to_owned(),
            message: format!("{e:#}"),
        };
        let refused = policy::denied_imports(engine, &loaded.component);
        let stubbed;
        let linker = match (denied, refused.is_empty()) {
            (_, true) => linker,
            (DeniedPolicy::Strict, false) => {
                return Err(OperatorError::Denied {
                    operator: name.to_owned(),
                    message: policy::refusal(name, &refused),
                });
            }
            (DeniedPolicy::Trap, false) => {
                let mut with_stubs = linker.clone();
                policy::link_trapping_stubs(engine, &mut with_stubs, &loaded.component)
                    .map_err(link_error)?;
                stubbed = with_stubs;
                &stubbed
            }
        };
        let instance_pre = linker
            .instantiate_pre(&loaded.component)
            .map_err(link_error)?;
        let pre = OperatorPre::new(instance_pre).map_err(link_error)?;
        Ok(PreparedOperator {
            name: name.into(),
            engine: engine.clone(),
            pre,
            loaded,
            config,
            limits,
        })
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component as loaded (its original bytes and hash, its layout).
    pub fn component(&self) -> &LoadedComponent {
        &self.loaded
    }

    /// A fresh instance, initialized with the operator's configuration.
    pub fn instantiate(&self) -> Result<OperatorInstance, OperatorError> {
        self.instantiate_with(&TaskInputs::default())
    }

    /// A fresh instance of a task with recorded inputs `inputs`, initialized
    /// with the operator's configuration.
    pub fn instantiate_with(&self, inputs: &TaskInputs) -> Result<OperatorInstance, OperatorError> {
        let init_error = |message: String| OperatorError::Init {
            operator: self.name.to_string(),
            message,
        };
        let mut instance = self
            .instantiate_bare(inputs)
            .map_err(|e| init_error(format!("instantiation failed: {e:#}")))?;
        instance
            .store
            .set_fuel(
                self.limits
                    .fuel_per_record
                    .saturating_mul(INIT_FUEL_RECORDS),
            )
            .map_err(|e| init_error(format!("{e:#}")))?;
        let result = instance
            .bindings
            .weir_operator_handler()
            .call_init(&mut instance.store, &self.config);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(init_error(message)),
            Err(e) => {
                return Err(init_error(format!(
                    "trapped: {e:#}{}",
                    guest_said(&instance.guest_output[1].tail())
                )));
            }
        }
        Ok(instance)
    }

    /// An instance on which nothing was called yet: the starting point of
    /// both `init` and a restore.
    pub(super) fn instantiate_bare(
        &self,
        inputs: &TaskInputs,
    ) -> wasmtime::Result<OperatorInstance> {
        let stdout = GuestOutput::new(self.name.clone(), "stdout");
        let stderr = GuestOutput::new(self.name.clone(), "stderr");
        let mut builder = WasiCtx::builder();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        let random = super::recorded::recording().then(|| {
            let (wall, monotonic) = inputs.clocks();
            let (random, insecure) = inputs.random_streams(&self.name, &RecordedState::default());
            builder
                .wall_clock(wall)
                .monotonic_clock(monotonic)
                .secure_random(random.clone())
                .insecure_random(insecure.clone())
                .insecure_random_seed(inputs.insecure_seed(&self.name));
            (random, insecure)
        });
        let wasi = builder.build();
        inputs.restored(&self.name, 0);
        let state = HostState {
            operator: self.name.clone(),
            wasi,
            inputs: inputs.clone(),
            random,
            lookups: 0,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            journal: HandleJournal::default(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                memory_bytes_max: self.limits.memory_bytes_max,
                refused_bytes: None,
            },
            pages: PageBaseline::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Snapshot and restore pass whole memories between guest and host;
        // wasmtime meters such copies (128 MiB by default).
        store.set_hostcall_fuel(
            usize::try_from(self.limits.memory_bytes_max.saturating_mul(2)).unwrap_or(usize::MAX),
        );
        // Instantiation runs the modules' start code under the init budget.
        store.set_fuel(
            self.limits
                .fuel_per_record
                .saturating_mul(INIT_FUEL_RECORDS),
        )?;
        let instance = self.pre.instance_pre().instantiate(&mut store)?;
        let bindings = Operator::new(&mut store, &instance)?;
        let process_packed = ProcessPacked::find(&mut store, &instance)?;
        tracing::debug!(
            operator = %self.name,
            "batches go through {}",
            if process_packed.is_some() { "packed-handler.process-packed" } else { "handler.process" }
        );
        Ok(OperatorInstance {
            name: self.name.clone(),
            store,
            instance,
            bindings,
            process_packed,
            packed: Vec::new(),
            limits: self.limits,
            guest_output: [stdout, stderr],
        })
    }
}

/// A running instance. After a [`Fault`] it must not be called again.
pub struct OperatorInstance {
    pub(super) name: Arc<str>,
    pub(super) store: Store<HostState>,
    pub(super) instance: Instance,
    bindings: Operator,
    /// `packed-handler.process-packed`, called instead of `process` when the
    /// component exports it, with the batch encoded into `packed`.
    process_packed: Option<ProcessPacked>,
    packed: Vec<u8>,
    limits: Limits,
    guest_output: [GuestOutput; 2],
}

impl OperatorInstance {
    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `process` on a non-empty batch.
    pub fn process(&mut self, batch: &[Record]) -> Result<BatchResult, OperatorError> {
        let fuel = self
            .limits
            .fuel_per_record
            .saturating_mul(batch.len() as u64);
        for out in &self.guest_output {
            out.clear_tail();
        }
        self.store.data_mut().limiter.refused_bytes = None;
        let call = self
            .store
            .set_fuel(fuel)
            .and_then(|()| match self.process_packed {
                Some(process) if packed::encode(batch, &mut self.packed) => {
                    process.call(&mut self.store, &self.packed)
                }
                _ => self
                    .bindings
                    .weir_operator_handler()
                    .call_process(&mut self.store, batch),
            });
        call.map_err(|error| OperatorError::Fault {
            operator: self.name.to_string(),
            fault: self.classify(error, batch.len(), fuel),
        })
    }

    fn classify(&self, error: wasmtime::Error, records: usize, fuel: u64) -> Fault {
        let guest_output = self
            .guest_output
            .iter()
            .map(GuestOutput::tail)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(requested_bytes) = self.store.data().limiter.refused_bytes {
            return Fault::Memory {
                requested_bytes,
                limit_mib: self.limits.memory_bytes_max >> 20,
                guest_output,
            };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
            return Fault::Fuel {
                records,
                fuel,
                fuel_per_record: self.limits.fuel_per_record,
            };
        }
        let trap = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            // A host function's own error (a denied call, a lookup that
            // cannot be recorded): its message, without wasmtime's backtrace.
            None => error.root_cause().to_string(),
        };
        Fault::Trap { trap, guest_output }
    }
}
