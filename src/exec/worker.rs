//! One worker's dataflow: a timely input per source node, a task operator per other node, the
//! commit steps, and the loop that feeds the sources while bounding the epochs in flight.

use super::failure::{Failure, ABORT_MARKER};
use super::task::task_operator;
use super::{Dest, Tagged, COMMIT, HERE};
use crate::batch::Batch;
use crate::operators::{Emit, OpError, Partition, ResumeSet, SourceTask, Started, Task, TaskContext};
use crate::plan::Plan;
use crate::report::NodeStats;
use arrow_array::{RecordBatch, StringArray};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Input, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

/// A task standing in for a node that could not start: consumes and drops its input.
struct Drain;
impl Task for Drain {
    fn process(&mut self, _: usize, _: RecordBatch, _: &mut Emit) -> Result<(), OpError> {
        Ok(())
    }
}

struct SourceSlot {
    node: usize,
    handle: Option<InputHandle<u64, CapacityContainerBuilder<Vec<Batch>>>>,
    task: Box<dyn SourceTask>,
    epoch: u64,
}

pub(super) fn run_worker(
    worker: &mut timely::worker::Worker,
    plan: &Plan,
    stats: &[Arc<NodeStats>],
    failure: &Arc<Failure>,
    resume: &Arc<Vec<Arc<ResumeSet>>>,
    max_in_flight: u64,
    local_workers: usize,
) {
    let index = worker.index();
    let partition = Partition { worker: index, peers: worker.peers() };
    let probe = ProbeHandle::<u64>::new();
    let mut sources: Vec<SourceSlot> = Vec::new();

    worker.dataflow::<u64, _, _>(|scope| {
        let mut streams: Vec<Option<StreamVec<'_, u64, (Dest, Batch)>>> = vec![None; plan.nodes.len()];
        for &i in &plan.order {
            let node = &plan.nodes[i];
            let (id, op_name) = (node.spec.id.clone(), node.info.name);
            let st = stats[i].clone();
            let ctx = TaskContext {
                partition: partition.clone(),
                on_error: node.spec.on_error,
                counters: st.task.clone(),
                resume: resume[i].clone(),
                local_workers,
            };
            let started = node.op.start(&ctx).unwrap_or_else(|e| {
                failure.record(&id, op_name, e);
                if node.inputs.is_empty() {
                    Started::Source(Box::new(EmptySource))
                } else {
                    Started::Task(Box::new(Drain))
                }
            });
            let stream = match started {
                Started::Source(task) => {
                    if let Some(n) = task.expected_rows() {
                        st.expected_rows.fetch_add(n, Relaxed);
                        st.expected_known.store(true, Relaxed);
                    }
                    let (handle, stream) = scope.new_input::<Vec<Batch>>();
                    sources.push(SourceSlot { node: i, handle: Some(handle), task, epoch: 0 });
                    stream.map(|b| (HERE, b))
                }
                Started::Task(task) => {
                    let tagged: Vec<StreamVec<'_, u64, Tagged>> = node
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(port, &up)| {
                            let s = streams[up].clone().expect("inputs are built first");
                            s.map(move |(dest, b)| (port as u32, dest, b))
                        })
                        .collect();
                    let merged: StreamVec<'_, u64, Tagged> = scope.concatenate(tagged);
                    let fixed = node.op.routing().target(partition.peers).map(|w| w as u64);
                    let target = move |dest: Dest| match (fixed, dest) {
                        (Some(w), _) => w,
                        (None, HERE) => index as u64,
                        (None, w) => w,
                    };
                    let out = task_operator(merged, target, task, id.clone(), op_name, st, failure.clone());
                    if node.op.has_commit() {
                        commit_step(&out, node, index, failure, &probe);
                    }
                    out.flat_map(|(dest, b)| (dest != COMMIT).then_some((dest, b)))
                }
            };
            if node.consumers.is_empty() {
                streams[i] = Some(stream.probe_with(&probe));
            } else {
                streams[i] = Some(stream);
            }
        }
    });

    feed_sources(worker, &mut sources, plan, stats, failure, &probe, max_in_flight);
}

struct EmptySource;
impl SourceTask for EmptySource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, OpError> {
        Ok(None)
    }
}

/// Feeds the sources one batch (one epoch) at a time, at most `max_in_flight` epochs ahead of
/// the slowest point of the dataflow, and steps the worker until everything has drained.
fn feed_sources(
    worker: &mut timely::worker::Worker,
    sources: &mut [SourceSlot],
    plan: &Plan,
    stats: &[Arc<NodeStats>],
    failure: &Arc<Failure>,
    probe: &ProbeHandle<u64>,
    max_in_flight: u64,
) {
    loop {
        let aborted = failure.abort.load(Relaxed);
        let frontier: Option<u64> = probe.with_frontier(|f| f.first().copied());
        let mut pushed = false;
        for s in sources.iter_mut() {
            let Some(handle) = s.handle.as_mut() else { continue };
            if aborted {
                s.task.abort();
                s.handle = None;
                continue;
            }
            if frontier.is_some_and(|f| s.epoch >= f + max_in_flight) {
                continue;
            }
            let node = &plan.nodes[s.node];
            let st = &stats[s.node];
            let t0 = Instant::now();
            let res = s.task.next_batch();
            st.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
            match res {
                Ok(Some(b)) => {
                    st.rows_out.fetch_add(b.num_rows() as u64, Relaxed);
                    st.batches_out.fetch_add(1, Relaxed);
                    handle.send(Batch::new(b));
                    s.epoch += 1;
                    handle.advance_to(s.epoch);
                    pushed = true;
                }
                Ok(None) => s.handle = None,
                Err(e) => {
                    failure.record(&node.spec.id, node.info.name, e);
                    s.task.abort();
                    s.handle = None;
                }
            }
        }
        if sources.iter().all(|s| s.handle.is_none()) && probe.done() {
            break;
        }
        if pushed {
            worker.step();
        } else {
            worker.step_or_park(Some(Duration::from_millis(2)));
        }
    }
}

/// The node's commit step: gathers its commit rows on worker 0 and calls `Operator::commit` once
/// every worker (of every process) has finished, unless this or another process failed.
fn commit_step<'s>(
    out: &StreamVec<'s, u64, (Dest, Batch)>,
    node: &crate::plan::PlannedNode,
    index: usize,
    failure: &Arc<Failure>,
    probe: &ProbeHandle<u64>,
) {
    let (id, op_name) = (node.spec.id.clone(), node.info.name);
    let op = node.op.clone();
    let fail = failure.clone();
    let name = format!("{id}/commit");
    out.clone()
        .flat_map(|(dest, b)| (dest == COMMIT).then_some(b))
        .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Exchange::new(|_: &Batch| 0u64), &name, move |_cap, _info| {
            let mut rows: Vec<RecordBatch> = Vec::new();
            let mut remote_abort: Option<String> = None;
            let mut done = false;
            move |(input, frontier), _output| {
                input.for_each(|_cap, data| {
                    for b in data.drain(..) {
                        if let Some(c) = b.0.column_by_name(ABORT_MARKER) {
                            let from = c.as_any().downcast_ref::<StringArray>().map(|a| a.value(0).to_string());
                            remote_abort = remote_abort.take().or(from);
                        } else {
                            rows.push(b.into_inner());
                        }
                    }
                });
                if frontier.frontier().is_empty() && !done {
                    done = true;
                    if index == 0 && remote_abort.is_none() && !fail.abort.load(Relaxed) {
                        if let Err(e) = op.commit(std::mem::take(&mut rows)) {
                            fail.record(&id, op_name, e);
                        }
                    } else if index == 0 && !fail.abort.load(Relaxed) {
                        // Only an abort from another process: this one had no error to tell.
                        let from = remote_abort.as_deref().unwrap_or("?");
                        fail.record(
                            &id,
                            op_name,
                            OpError::new(format!("process {from} failed (its own output names the error); nothing was published")),
                        );
                    }
                }
            }
        })
        .probe_with(probe);
}
