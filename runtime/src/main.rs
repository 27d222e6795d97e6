//! The `weir` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
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
