//! The `weir` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir::inspect::EpochSelector;
use weir::operator::ComponentCache;
use weir::source::{GeneratorProfile, GeneratorSource};
use weir::{Pipeline, RunOptions};

/// weir runs stream operators written as WebAssembly components between a
/// replayable source and sinks.
///
/// Start with `weir run examples/payments/pipeline.toml` (after
/// `./scripts/demo payments` has built the operators and the data), or
/// `weir validate PIPELINE.toml` to check a pipeline without running it.
/// Logs go to stderr; set WEIR_LOG=debug (or warn, ...) to change how much.
#[derive(Parser)]
#[command(name = "weir", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory for compiled components (default: $WEIR_CACHE_DIR or
    /// ~/.cache/weir/components).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components on every start instead of caching them.
    #[arg(long, global = true)]
    no_cache: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline to the end of its input and print a summary.
    ///
    /// With checkpoints (the default), a run resumes from the newest
    /// committed checkpoint in the pipeline's store: after a crash or
    /// kill -9, run the same command again. A damaged newest checkpoint is
    /// reported and the previous one used.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print the summary as JSON on stdout instead of text on stderr.
        #[arg(long)]
        json: bool,
        /// Start over: delete the pipeline's checkpoints and the outputs of
        /// its exactly-once (`parts`) sinks, then run from the beginning of
        /// the input. Without it, weir never discards checkpoints.
        #[arg(long)]
        from_scratch: bool,
    },
    /// Check a pipeline file and its components without running anything.
    Validate {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Inspect, verify and clean up the checkpoints in a store.
    ///
    /// Where the checkpoints are: --store LOCATION (a local directory,
    /// file:///dir, or s3://bucket/prefix configured by the usual AWS_*
    /// variables), or --pipeline-file FILE (its `[checkpoint] store` and
    /// `name`). A store holds PIPELINE/tasks/TASK/...; --pipeline picks the
    /// pipeline (default: the only one in the store) and --task the task
    /// (default `main`, the one task of a pipeline with a local source).
    /// Nothing is created: a store that does not exist is an error.
    ///
    /// EPOCH is a number or `latest` (the newest committed epoch). Tables go
    /// to stdout and errors to stderr (one line, exit status 1); with --json,
    /// stdout is one JSON document whose field names are stable and follow
    /// docs/checkpoint-format.md, the format's reference.
    #[command(
        after_help = "Examples:\n  weir checkpoints --pipeline-file pipeline.toml list\n  weir checkpoints --store weir-data show latest --json\n  weir checkpoints --store s3://bucket/weir diff 7 9\n  weir checkpoints --store weir-data dump 9 --operator dedup --output dedup.mem\n  weir checkpoints --store weir-data verify --all\n  weir checkpoints --store weir-data gc --keep 1"
    )]
    Checkpoints(CheckpointsArgs),
    /// Prove checkpoints by replay: restore each epoch's base checkpoint,
    /// replay the epoch's journal over the same input, and compare.
    ///
    /// For each committed epoch chosen (default: the newest), weir restores
    /// the checkpoint the epoch started from (or fresh instances), replays
    /// the epoch's recorded inputs (where batches were cut, recorded times,
    /// the seed, lookup answers; no lookup is performed again) over the
    /// source's records, and compares every operator's memories page by
    /// page, globals and handles with the epoch's checkpoint, and the
    /// outputs with the epoch's published part files (`parts` sinks; other
    /// sinks by count). Prints a verdict per epoch; exits with status 1 on
    /// the first divergence, naming the operator and memory page, or the
    /// sink and output. An epoch whose base was garbage-collected is
    /// skipped (raise [checkpoint] keep to verify more).
    Verify {
        /// The pipeline file (TOML): its source, sinks, operators' config
        /// and checkpoint store.
        pipeline: PathBuf,
        /// The epoch (a number or `latest`) [default: latest].
        #[arg(conflicts_with_all = ["all", "from", "to"])]
        epoch: Option<EpochSelector>,
        /// Every committed epoch.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        all: bool,
        /// The first epoch of a range (with --to).
        #[arg(long, value_name = "EPOCH", requires = "to")]
        from: Option<u64>,
        /// The last epoch of a range (with --from).
        #[arg(long, value_name = "EPOCH", requires = "from")]
        to: Option<u64>,
        /// The task whose epochs to verify.
        #[arg(long, value_name = "NAME", default_value = weir::inspect::DEFAULT_TASK)]
        task: String,
        /// Print JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write generated records to stdout, one per line (the data behind the
    /// bundled examples and benchmarks).
    Generate {
        /// What to generate.
        #[arg(value_enum)]
        profile: GeneratorProfile,
        /// How many records.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Seed; the same seed gives the same bytes everywhere.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Where the checkpoints are, and how to print (valid before or after the
/// subcommand).
#[derive(clap::Args)]
struct CheckpointsArgs {
    /// The checkpoint store: a local directory, file:///dir, or
    /// s3://bucket/prefix.
    #[arg(long, global = true, value_name = "LOCATION")]
    store: Option<String>,
    /// Take the store and the pipeline's name from this pipeline file.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "store")]
    pipeline_file: Option<PathBuf>,
    /// The pipeline whose checkpoints to read [default: the only one in the
    /// store].
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        conflicts_with = "pipeline_file"
    )]
    pipeline: Option<String>,
    /// The task whose checkpoints to read.
    #[arg(long, global = true, value_name = "NAME", default_value = weir::inspect::DEFAULT_TASK)]
    task: String,
    /// Print JSON on stdout instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CheckpointsCommand,
}

#[derive(Subcommand)]
enum CheckpointsCommand {
    /// A table of the task's epochs.
    ///
    /// One line per epoch: wall time, committed or not, source position,
    /// records read, state size, bytes new in the epoch, capture pause,
    /// upload time. An epoch whose manifest cannot be read is marked
    /// DAMAGED and makes the exit status 1.
    List,
    /// Everything one epoch holds.
    ///
    /// Each operator's component hash, memories (size, pages), globals and
    /// held WASI handles; the source position, stats, state hash (as
    /// `weir run --json` prints it), and whether the epoch is committed.
    Show {
        /// The epoch (a number or `latest`).
        #[arg(default_value = "latest")]
        epoch: EpochSelector,
    },
    /// What changed between two epochs.
    ///
    /// Per operator: pages and bytes changed (by address, compared by
    /// hash), globals and handles; and how far the source position and the
    /// record count moved. Reads only the two manifests.
    Diff {
        /// The earlier epoch.
        from: EpochSelector,
        /// The later epoch.
        to: EpochSelector,
    },
    /// Write one memory of one operator at an epoch, byte for byte.
    ///
    /// The memory is assembled from pages checked against their hashes and
    /// written to stdout (not a terminal) or --output FILE, for your own
    /// tools (xxd, strings, a debugger). A summary goes to stderr.
    Dump {
        /// The epoch (a number or `latest`).
        epoch: EpochSelector,
        /// The operator (its name in the pipeline).
        #[arg(long, value_name = "NAME")]
        operator: String,
        /// Which of the operator's memories (`show` lists them).
        #[arg(long, value_name = "I", default_value_t = 0)]
        memory: usize,
        /// Write to this file instead of stdout (required with --json).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check that an epoch (default: latest) or all of them can be trusted.
    ///
    /// Checks the commit marker, the manifest against the hash the marker
    /// names, and every page and component against its hash and length.
    /// Prints a verdict per epoch and exits with status 1 if any fails,
    /// naming each damaged object.
    Verify {
        /// The epoch (a number or `latest`) [default: latest].
        #[arg(conflicts_with = "all")]
        epoch: Option<EpochSelector>,
        /// Verify every epoch (uncommitted ones are listed and skipped).
        #[arg(long)]
        all: bool,
        /// Also replay each epoch from its base and compare the state and
        /// outputs it reaches (what `weir verify` does; needs
        /// --pipeline-file).
        #[arg(long)]
        deep: bool,
    },
    /// Delete old checkpoints and pages nothing needs.
    ///
    /// Keeps the newest N committed epochs; deletes every older epoch
    /// (committed or not), the pages only deleted epochs reference, and
    /// pages no manifest references once they are older than --grace
    /// (left by crashed attempts). Epochs newer than the newest committed
    /// one are never touched, and young unreferenced pages may belong to
    /// an epoch being written, so it is safe while a pipeline writes to
    /// the same store.
    Gc {
        /// Committed epochs to keep (the newest ones).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
        /// How old a page no manifest references must be to be deleted
        /// (s, m, h or d): younger ones may belong to an epoch being
        /// written.
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = weir::inspect::units::parse_duration)]
        grace: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cache = if cli.no_cache {
        ComponentCache::new(None)
    } else {
        ComponentCache::new(
            cli.cache_dir
                .map(|d| d.join("components"))
                .or_else(ComponentCache::default_dir),
        )
    };
    let mut options = RunOptions {
        cache,
        stop: Arc::new(AtomicBool::new(false)),
        from_scratch: false,
    };
    match cli.command {
        Command::Run {
            pipeline,
            json,
            from_scratch,
        } => {
            options.from_scratch = from_scratch;
            let pipeline = Pipeline::load(&pipeline)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let stop = options.stop.clone();
            let summary = runtime.block_on(async move {
                tokio::spawn(stop_on_signal(stop));
                tokio::task::spawn_blocking(move || weir::run(&pipeline, &options))
                    .await
                    .context("the pipeline task panicked")
            })??;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                eprintln!("{summary}");
            }
            if summary.stopped_early {
                return Err(anyhow::anyhow!(
                    "stopped by a signal before the end of the input"
                ));
            }
        }
        Command::Validate { pipeline } => {
            let loaded = Pipeline::load(&pipeline)?;
            let operators = weir::validate(&loaded, &options)?;
            println!(
                "{}: ok ({} operator(s): {})",
                pipeline.display(),
                operators.len(),
                operators.join(", ")
            );
        }
        Command::Checkpoints(args) => checkpoints(args, &options.cache)?,
        Command::Verify {
            pipeline,
            epoch,
            all,
            from,
            to,
            task,
            json,
        } => {
            let scope = match (all, from, to) {
                (true, _, _) => weir::verify::Scope::All,
                (false, Some(from), Some(to)) => weir::verify::Scope::Range(from, to),
                _ => weir::verify::Scope::Epoch(epoch.unwrap_or(EpochSelector::Latest)),
            };
            let loaded = Pipeline::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            deep_verify(&loaded, &options.cache, &task, scope, json)?;
        }
        Command::Generate {
            profile,
            records,
            seed,
        } => {
            let generator = GeneratorSource::new(profile, seed, records);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut line = Vec::with_capacity(128);
            for i in 0..records {
                generator.value_of(i, &mut line);
                line.push(b'\n');
                out.write_all(&line).context("cannot write to stdout")?;
            }
            out.flush().context("cannot write to stdout")?;
        }
    }
    Ok(())
}

/// `weir checkpoints`: finds the store, runs the subcommand, prints its
/// report. Errors are flattened to their one-line message (they already
/// name the store, pipeline, epoch or object).
fn checkpoints(args: CheckpointsArgs, cache: &ComponentCache) -> anyhow::Result<()> {
    use weir::inspect::{self, DumpTo, GcOptions, Progress, Target, VerifyScope};

    let (location, pipeline) = match (&args.store, &args.pipeline_file) {
        (Some(store), None) => (store.clone(), args.pipeline.clone()),
        (None, Some(file)) => {
            // The message already ends with its cause: print it once.
            let loaded = Pipeline::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
            (loaded.spec.checkpoint.store, Some(loaded.spec.name))
        }
        _ => anyhow::bail!(
            "say where the checkpoints are: --store LOCATION or --pipeline-file FILE (see weir checkpoints --help)"
        ),
    };
    let deep = match &args.command {
        CheckpointsCommand::Verify {
            deep: true,
            epoch,
            all,
        } => {
            let Some(file) = &args.pipeline_file else {
                anyhow::bail!(
                    "verify --deep replays epochs, which needs the pipeline's source, sinks and operator config: pass --pipeline-file FILE instead of --store"
                );
            };
            let scope = if *all {
                weir::verify::Scope::All
            } else {
                weir::verify::Scope::Epoch(epoch.unwrap_or(EpochSelector::Latest))
            };
            Some((file.clone(), scope))
        }
        _ => None,
    };
    if let CheckpointsCommand::Dump { output: None, .. } = args.command {
        if args.json {
            anyhow::bail!("dump --json needs --output FILE: stdout carries the memory's bytes");
        }
        if std::io::stdout().is_terminal() {
            anyhow::bail!(
                "dump writes raw bytes: redirect stdout (> FILE, | xxd) or pass --output FILE"
            );
        }
    }
    let progress = Progress::on_terminal();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let json = args.json;
    runtime
        .block_on(async {
            let target = Target::open(&location, pipeline.as_deref(), &args.task).await?;
            match args.command {
                CheckpointsCommand::List => {
                    let report = inspect::list(&target, &progress).await?;
                    print_report(&report, json)?;
                    let mut problems = report.problems();
                    if let Some((epoch, problem)) = problems.next() {
                        let more = problems.count();
                        anyhow::bail!(
                            "epoch {epoch}: {problem}{}",
                            if more > 0 {
                                format!(" (and {more} more damaged epoch(s), see above)")
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                CheckpointsCommand::Show { epoch } => {
                    let report = inspect::show(&target, epoch).await?;
                    print_report(&report, json)?;
                }
                CheckpointsCommand::Diff { from, to } => {
                    let report = inspect::diff(&target, from, to).await?;
                    print_report(&report, json)?;
                }
                CheckpointsCommand::Dump {
                    epoch,
                    operator,
                    memory,
                    output,
                } => {
                    let to = output.map_or(DumpTo::Stdout, DumpTo::File);
                    let report =
                        inspect::dump(&target, epoch, &operator, memory, &to, &progress).await?;
                    if json {
                        print_report(&report, json)?;
                    } else {
                        eprint!("{report}");
                    }
                }
                CheckpointsCommand::Verify { epoch, all, .. } => {
                    let scope = if all {
                        VerifyScope::All
                    } else {
                        VerifyScope::Epoch(epoch.unwrap_or(EpochSelector::Latest))
                    };
                    let report = inspect::verify(&target, scope, &progress).await?;
                    print_report(&report, json)?;
                    if let Some((epoch, problem)) = report.first_failure() {
                        anyhow::bail!(
                            "epoch {epoch} failed verification: {} {}",
                            problem.object,
                            problem.problem
                        );
                    }
                }
                CheckpointsCommand::Gc { keep, grace } => {
                    let options = GcOptions {
                        keep: keep as usize,
                        grace,
                    };
                    let report = inspect::gc(&target, &options).await?;
                    print_report(&report, json)?;
                }
            }
            Ok::<_, anyhow::Error>(())
        })
        .map_err(|e| match e.downcast::<weir::inspect::InspectError>() {
            Ok(e) => anyhow::anyhow!("{e}"),
            Err(e) => e,
        })?;
    drop(runtime);
    if let Some((file, scope)) = deep {
        let loaded = Pipeline::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
        deep_verify(&loaded, cache, &args.task, scope, json)?;
    }
    Ok(())
}

/// `weir verify` and `weir checkpoints verify --deep`: replays, prints the
/// verdicts, fails naming the first divergence.
fn deep_verify(
    pipeline: &Pipeline,
    cache: &ComponentCache,
    task: &str,
    scope: weir::verify::Scope,
    json: bool,
) -> anyhow::Result<()> {
    let report =
        weir::verify::verify(pipeline, cache, task, scope).map_err(|e| anyhow::anyhow!("{e}"))?;
    print_report(&report, json)?;
    if let Some((epoch, difference)) = report.first_divergence() {
        anyhow::bail!("epoch {epoch} diverged on replay: {difference}");
    }
    Ok(())
}

/// Prints a report on stdout: as JSON, or as text for people. A reader that
/// stops early (`| head`) is no error.
fn print_report<T: serde::Serialize + std::fmt::Display>(
    report: &T,
    json: bool,
) -> anyhow::Result<()> {
    let out = if json {
        serde_json::to_string_pretty(report)? + "\n"
    } else {
        report.to_string()
    };
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Asks the pipeline to stop at the next batch boundary on Ctrl-C or SIGTERM.
async fn stop_on_signal(stop: Arc<AtomicBool>) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    stop.store(true, Ordering::Relaxed);
}
