//! Turns a pipeline spec into live parts: source, sinks, prepared operators.

use crate::config::{KafkaDelivery, KafkaSinkSpec, Pipeline, SinkSpec, SourceSpec};
use crate::operator::{ComponentCache, Limits, PreparedOperator, new_engine, new_linker};
use crate::sink::kafka::SharedProducer;
use crate::sink::{KafkaAtLeastOnceSink, KafkaSink, LineSink, NullSink, PartFileSink, Sink};
use crate::source::kafka::KafkaClient;
use crate::source::{FileSource, GeneratorSource, Source};

use super::PipelineError;

/// Sinks in a fixed order, found by name.
pub struct Sinks {
    /// `(name, sink)`, sorted by name.
    pub entries: Vec<(String, Box<dyn Sink>)>,
}

impl Sinks {
    /// Index of the sink called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    /// The newest epoch any exactly-once sink holds outputs of.
    pub fn newest_epoch(&mut self) -> Result<u64, PipelineError> {
        let mut newest = 0;
        for (_, sink) in &mut self.entries {
            if let Some(sink) = sink.as_epoch_sink() {
                newest = newest.max(sink.newest_epoch()?);
            }
        }
        Ok(newest)
    }

    /// Names, for messages.
    pub fn names(&self) -> String {
        self.entries
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Opens the pipeline's source.
pub fn source(pipeline: &Pipeline) -> Result<Box<dyn Source>, PipelineError> {
    Ok(match &pipeline.spec.source {
        SourceSpec::File {
            path,
            format,
            max_line_bytes,
        } => Box::new(FileSource::open(path, *format, *max_line_bytes)?),
        SourceSpec::Generator {
            profile,
            records,
            seed,
        } => Box::new(GeneratorSource::new(*profile, *seed, *records)),
        SourceSpec::Kafka(spec) => {
            return Err(PipelineError::Checkpoint(format!(
                "internal: the Kafka source of topic {} runs one task per partition, not one source",
                spec.topic
            )));
        }
    })
}

/// How a Kafka sink reaches its cluster: its own `bootstrap`, else the
/// Kafka source's.
pub fn kafka_sink_client(pipeline: &Pipeline, spec: &KafkaSinkSpec) -> KafkaClient {
    let bootstrap = spec
        .bootstrap
        .clone()
        .unwrap_or_else(|| match &pipeline.spec.source {
            SourceSpec::Kafka(source) => source.bootstrap.clone(),
            _ => String::new(),
        });
    KafkaClient {
        bootstrap,
        properties: crate::config::kafka_properties(&spec.properties),
    }
}

/// Opens every sink. `committed` is the checkpoint the run resumes from
/// (`None`: from the start): exactly-once sinks are brought in line with it,
/// plain files are appended to instead of truncated. `from_scratch` also
/// discards exactly-once sinks' earlier outputs. `producer` is the task's
/// transactional producer, which exactly-once Kafka sinks write through.
pub fn sinks(
    pipeline: &Pipeline,
    committed: Option<u64>,
    from_scratch: bool,
    producer: Option<&SharedProducer>,
) -> Result<Sinks, PipelineError> {
    let mut entries: Vec<(String, Box<dyn Sink>)> = Vec::new();
    for (name, spec) in &pipeline.spec.sinks {
        let sink: Box<dyn Sink> = match spec {
            SinkSpec::File { path } => {
                Box::new(LineSink::open_file(name, path, committed.is_none())?)
            }
            SinkSpec::Parts { dir, extension } => {
                let mut sink = PartFileSink::open(name, dir, extension)?;
                if from_scratch {
                    sink.discard_all()?;
                }
                crate::sink::EpochSink::recover(&mut sink, committed.unwrap_or(0))?;
                Box::new(sink)
            }
            SinkSpec::Stdout => Box::new(LineSink::stdout(name)),
            SinkSpec::Null => Box::new(NullSink::new(name)),
            SinkSpec::Kafka(spec) => match (spec.delivery, producer) {
                (KafkaDelivery::AtLeastOnce, _) => Box::new(KafkaAtLeastOnceSink::open(
                    name,
                    &spec.topic,
                    &kafka_sink_client(pipeline, spec),
                )?),
                (KafkaDelivery::ExactlyOnce, Some(producer)) => {
                    let mut sink = KafkaSink::exactly_once(name, &spec.topic, producer.clone());
                    crate::sink::EpochSink::recover(&mut sink, committed.unwrap_or(0))?;
                    Box::new(sink)
                }
                (KafkaDelivery::ExactlyOnce, None) => {
                    return Err(PipelineError::Checkpoint(format!(
                        "sink {name}: exactly-once Kafka output needs a Kafka source"
                    )));
                }
            },
        };
        entries.push((name.clone(), sink));
    }
    Ok(Sinks { entries })
}

/// Compiles (or loads from cache), checks and links every operator.
pub fn operators(
    pipeline: &Pipeline,
    cache: &ComponentCache,
) -> Result<Vec<PreparedOperator>, PipelineError> {
    let host = OperatorHost::new(pipeline)?;
    pipeline
        .spec
        .operators
        .iter()
        .map(|op| {
            let loaded = cache.load(&host.engine, &op.name, &op.component)?;
            host.link(pipeline, &op.name, loaded, op.init_config())
        })
        .collect()
}

/// The engine, linker and limits operators of a pipeline are prepared with.
pub struct OperatorHost {
    /// The engine.
    pub engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<crate::operator::HostState>,
    limits: Limits,
}

impl OperatorHost {
    /// The host of `pipeline`'s operators.
    pub fn new(pipeline: &Pipeline) -> Result<OperatorHost, PipelineError> {
        let engine = new_engine().map_err(|e| PipelineError::Engine(format!("{e:#}")))?;
        let linker = new_linker(&engine).map_err(|e| PipelineError::Engine(format!("{e:#}")))?;
        let limits = Limits {
            fuel_per_record: pipeline.spec.limits.fuel_per_record,
            memory_bytes_max: pipeline.spec.limits.memory_mib << 20,
        };
        Ok(OperatorHost {
            engine,
            linker,
            limits,
        })
    }

    /// Links a loaded component as operator `name` under the pipeline's
    /// `[determinism] denied` policy.
    pub fn link(
        &self,
        pipeline: &Pipeline,
        name: &str,
        loaded: crate::operator::LoadedComponent,
        config: Vec<(String, String)>,
    ) -> Result<PreparedOperator, PipelineError> {
        Ok(PreparedOperator::link(
            &self.engine,
            &self.linker,
            name,
            loaded,
            config,
            self.limits,
            pipeline.spec.determinism.denied,
        )?)
    }
}
