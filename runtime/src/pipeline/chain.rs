//! The operator chain of a task: runs a batch through every operator in turn
//! and routes outputs to the next operator or to sinks.

use crate::checkpoint::Manifest;
use crate::checkpoint::recovery::MemoryImages;
use crate::config::MAIN_SINK;
use crate::operator::{
    CapturedState, Fault, OperatorError, OperatorInstance, PreparedOperator, TaskInputs,
};
use crate::record::{Output, Position, Record};

use super::PipelineError;
use super::build::Sinks;
use super::dead_letter::Origin;
use super::summary::OperatorStats;

/// A record an operator refused, with what is needed to report it.
pub struct Rejected {
    /// Index of the operator in the chain.
    pub operator: usize,
    /// Where it came from.
    pub origin: Origin,
    /// The operator's reason.
    pub reason: String,
    /// The refused record's value.
    pub value: Vec<u8>,
}

/// Why a batch could not go through the chain.
pub enum ChainError {
    /// Operator `operator` faulted; every instance must be rebuilt.
    Fault {
        /// Index of the operator in the chain.
        operator: usize,
        /// What happened.
        fault: Fault,
    },
    /// Any other failure; the pipeline stops.
    Stop(PipelineError),
}

/// Where an operator's main stream goes.
#[derive(Clone, Copy)]
enum MainRoute {
    Next,
    Sink(usize),
    Missing,
}

/// Operators of a task, in order, with their live instances.
pub struct Chain {
    prepared: Vec<PreparedOperator>,
    instances: Vec<OperatorInstance>,
    /// The task's recorded inputs, which every instance reads.
    inputs: TaskInputs,
    main_routes: Vec<MainRoute>,
    main_sink: Option<usize>,
}

impl Chain {
    /// Instantiates every operator, on the task's recorded inputs.
    pub fn new(
        prepared: Vec<PreparedOperator>,
        sinks: &Sinks,
        inputs: TaskInputs,
    ) -> Result<Chain, PipelineError> {
        let main_sink = sinks.index(MAIN_SINK);
        let last = prepared.len().saturating_sub(1);
        let main_routes = (0..prepared.len())
            .map(|k| match (k < last, main_sink) {
                (true, _) => MainRoute::Next,
                (false, Some(i)) => MainRoute::Sink(i),
                (false, None) => MainRoute::Missing,
            })
            .collect();
        let mut chain = Chain {
            prepared,
            instances: Vec::new(),
            inputs,
            main_routes,
            main_sink,
        };
        chain.rebuild()?;
        Ok(chain)
    }

    /// Names of the operators, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prepared.iter().map(PreparedOperator::name)
    }

    /// Replaces every instance with a fresh one (state as after `init`).
    pub fn rebuild(&mut self) -> Result<(), PipelineError> {
        self.instances = self
            .prepared
            .iter()
            .map(|p| p.instantiate_with(&self.inputs))
            .collect::<Result<_, OperatorError>>()?;
        Ok(())
    }

    /// Replaces every instance with one restored from the checkpoint
    /// `manifest` (its operators' states and recorded inputs) and the bytes
    /// of their memories.
    pub fn restore(
        &mut self,
        manifest: &Manifest,
        memories: &MemoryImages,
    ) -> Result<(), PipelineError> {
        let recorded = super::recorder::recorded_states(manifest);
        self.instances = self
            .prepared
            .iter()
            .zip(manifest.operators.iter().zip(memories).zip(&recorded))
            .map(|(prepared, ((state, memories), recorded))| {
                prepared.restore_with(&self.inputs, state, memories, recorded)
            })
            .collect::<Result<_, OperatorError>>()?;
        Ok(())
    }

    /// Captures every operator's state, in order.
    pub fn capture(&mut self) -> Result<Vec<CapturedState>, PipelineError> {
        Ok(self
            .instances
            .iter_mut()
            .zip(&self.prepared)
            .map(|(instance, prepared)| instance.capture(prepared))
            .collect::<Result<_, OperatorError>>()?)
    }

    /// The operators as prepared (their components, for checkpoints).
    pub fn prepared(&self) -> &[PreparedOperator] {
        &self.prepared
    }

    /// Runs `records` (read at `positions`) through the chain. Outputs for
    /// sinks are appended to `buffers` (one per sink), refused records to
    /// `rejected`. On error, what was appended must be discarded.
    pub fn run(
        &mut self,
        records: &[Record],
        positions: &[Position],
        sinks: &Sinks,
        buffers: &mut [Vec<Output>],
        rejected: &mut Vec<Rejected>,
        mut stats: Option<&mut [OperatorStats]>,
    ) -> Result<(), ChainError> {
        if self.instances.is_empty() {
            let Some(main) = self.main_sink else {
                return Err(ChainError::Stop(unknown_sink(
                    "(no operator)",
                    MAIN_SINK,
                    sinks,
                )));
            };
            buffers[main].extend(records.iter().map(|r| Output {
                sink: String::new(),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            }));
            return Ok(());
        }
        let derived = match (positions.first(), positions.last()) {
            (Some(first), Some(last)) => Origin::Derived {
                first: first.clone(),
                last: last.clone(),
            },
            _ => return Ok(()),
        };
        let mut owned: Vec<Record>;
        let mut input: &[Record] = records;
        let mut next = Vec::new();
        for k in 0..self.instances.len() {
            if input.is_empty() {
                break;
            }
            let result = self.instances[k].process(input).map_err(|e| match e {
                OperatorError::Fault { fault, .. } => ChainError::Fault { operator: k, fault },
                other => ChainError::Stop(other.into()),
            })?;
            if let Some(stats) = stats.as_deref_mut() {
                stats[k].records_in += input.len() as u64;
                stats[k].outputs += result.outputs.len() as u64;
                stats[k].rejected += result.rejections.len() as u64;
            }
            for rejection in result.rejections {
                let index = rejection.index as usize;
                let Some(record) = input.get(index) else {
                    return Err(ChainError::Stop(PipelineError::NotDeterministic {
                        operator: self.prepared[k].name().to_owned(),
                        detail: format!(
                            "it rejected record index {index} of a batch of {}",
                            input.len()
                        ),
                    }));
                };
                rejected.push(Rejected {
                    operator: k,
                    origin: if k == 0 {
                        Origin::Source(positions[index].clone())
                    } else {
                        derived.clone()
                    },
                    reason: rejection.reason,
                    value: record.value.clone(),
                });
            }
            for output in result.outputs {
                let target = if output.sink.is_empty() {
                    match self.main_routes[k] {
                        MainRoute::Next => {
                            next.push(Record {
                                key: output.key,
                                value: output.value,
                                timestamp_ms: None,
                                headers: output.headers,
                            });
                            continue;
                        }
                        MainRoute::Sink(i) => i,
                        MainRoute::Missing => {
                            return Err(ChainError::Stop(unknown_sink(
                                self.prepared[k].name(),
                                MAIN_SINK,
                                sinks,
                            )));
                        }
                    }
                } else {
                    match sinks.index(&output.sink) {
                        Some(i) => i,
                        None => {
                            return Err(ChainError::Stop(unknown_sink(
                                self.prepared[k].name(),
                                &output.sink,
                                sinks,
                            )));
                        }
                    }
                };
                buffers[target].push(output);
            }
            owned = std::mem::take(&mut next);
            input = &owned;
        }
        Ok(())
    }

    /// The name of operator `k`.
    pub fn name(&self, k: usize) -> &str {
        self.prepared[k].name()
    }
}

fn unknown_sink(operator: &str, sink: &str, sinks: &Sinks) -> PipelineError {
    PipelineError::UnknownSink {
        operator: operator.to_owned(),
        sink: sink.to_owned(),
        known: sinks.names(),
    }
}
