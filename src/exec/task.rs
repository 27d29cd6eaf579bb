//! The timely operator around one node's [`Task`]: batches in, emitted rows and commit rows
//! out, errors recorded once, a long `finish` run on a thread of its own.

use super::failure::{abort_marker, Failure};
use super::{Dest, Out, Tagged, COMMIT, HERE};
use crate::batch::Batch;
use crate::operators::{Emit, OpError, OpResult, Task};
use crate::report::NodeStats;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

/// Gives an [`Emit`]'s rows (counted) and commit rows to an output session.
macro_rules! emit_into {
    ($session:expr, $emit:expr, $st:expr) => {{
        let emit: Emit = $emit;
        let routed = emit.rows.into_iter().map(|b| (HERE, b)).chain(emit.rows_to.into_iter().map(|(w, b)| (w as Dest, b)));
        for (dest, b) in routed {
            $st.rows_out.fetch_add(b.num_rows() as u64, Relaxed);
            $st.batches_out.fetch_add(1, Relaxed);
            $session.give((dest, Batch::new(b)));
        }
        for b in emit.commit {
            $session.give((COMMIT, Batch::new(b)));
        }
    }};
}
/// The timely operator around one [`Task`].
pub(super) fn task_operator<'s>(
    merged: StreamVec<'s, u64, Tagged>,
    target: impl Fn(Dest) -> u64 + 'static,
    mut task: Box<dyn Task>,
    id: String,
    op_name: &'static str,
    st: Arc<NodeStats>,
    failure: Arc<Failure>,
) -> StreamVec<'s, u64, Out> {
    let name = id.clone();
    let scope = merged.scope();
    merged.unary_frontier::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
        Exchange::new(move |t: &Tagged| target(t.1)),
        &name,
        move |cap, info| {
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            let mut held = Some(cap);
            let mut failed = false;
            // a finish running on its own thread: its result, and how long it took
            let mut pending: Option<FinishSlot> = None;
            move |(input, frontier), output| {
                if failure.abort.load(Relaxed) && !failed {
                    failed = true;
                    task.abort();
                }
                input.for_each(|icap, data| {
                    let Some(c) = icap.retain_least(0) else { return };
                    let mut session = output.session(&c);
                    for (port, _dest, batch) in data.drain(..) {
                        if failed {
                            continue;
                        }
                        let batch = batch.into_inner();
                        st.rows_in.fetch_add(batch.num_rows() as u64, Relaxed);
                        let mut emit = Emit::default();
                        let t0 = Instant::now();
                        let res = task.process(port as usize, batch, &mut emit);
                        st.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
                        match res {
                            Ok(()) => emit_into!(session, emit, st),
                            Err(e) => {
                                failed = true;
                                task.abort();
                                failure.record(&id, op_name, e);
                                session.give((COMMIT, abort_marker(failure.process)));
                            }
                        }
                    }
                });
                // A finish's result: its rows go downstream, an error fails the run.
                macro_rules! settle {
                    ($cap:expr, $res:expr) => {{
                        let mut session = output.session($cap);
                        match $res {
                            Ok(emit) => emit_into!(session, emit, st),
                            Err(e) => {
                                task.abort();
                                failure.record(&id, op_name, e);
                                session.give((COMMIT, abort_marker(failure.process)));
                            }
                        }
                    }};
                }
                let f = frontier.frontier();
                if f.is_empty() && pending.is_none() {
                    if let Some(c) = held.take() {
                        if failed || failure.abort.load(Relaxed) {
                            if !failed {
                                task.abort();
                            }
                            output.session(&c).give((COMMIT, abort_marker(failure.process)));
                        } else if let Some(job) = task.finish_in_background() {
                            // The capability stays held until the job's rows are out. A run that
                            // fails meanwhile waits for the job: it cannot be interrupted.
                            match spawn_finish(&id, job, activator.clone()) {
                                Ok(slot) => {
                                    pending = Some(slot);
                                    held = Some(c);
                                }
                                Err(e) => settle!(&c, Err(e)),
                            }
                        } else {
                            let mut emit = Emit::default();
                            let t0 = Instant::now();
                            let res = task.finish(&mut emit).map(|()| emit);
                            st.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
                            settle!(&c, res);
                        }
                    }
                } else if let (Some(c), Some(t), None) = (held.as_mut(), f.first(), &pending) {
                    if c.time() < t {
                        c.downgrade(t);
                    }
                }
                if let Some((res, took)) = pending.as_ref().and_then(|slot| slot.lock().ok().and_then(|mut r| r.take())) {
                    pending = None;
                    st.busy_ns.fetch_add(took.as_nanos() as u64, Relaxed);
                    if let Some(c) = held.take() {
                        settle!(&c, res);
                    }
                }
            }
        },
    )
}

/// Where a background finish leaves its result and how long it took.
type FinishSlot = Arc<Mutex<Option<(OpResult<Emit>, Duration)>>>;

/// Starts a task's [`crate::operators::BackgroundFinish`] on a thread of its own; when it ends, its result
/// lands in the returned slot and the operator is activated to emit it.
fn spawn_finish(
    node: &str,
    job: crate::operators::BackgroundFinish,
    activator: timely::scheduling::activate::SyncActivator,
) -> Result<FinishSlot, OpError> {
    let slot = Arc::new(Mutex::new(None));
    let done = slot.clone();
    let label = node.to_string();
    std::thread::Builder::new()
        .name(format!("idflow-{node}"))
        .spawn(move || {
            let t0 = Instant::now();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                .unwrap_or_else(|_| Err(OpError::new(format!("node `{label}`: the background job panicked"))));
            if let Ok(mut r) = done.lock() {
                *r = Some((res, t0.elapsed()));
            }
            // the worker may already be gone (a failed run); nothing is left to tell then
            let _ = activator.activate();
        })
        .map_err(|e| OpError::new(format!("node `{node}`: cannot start a thread: {e}")))?;
    Ok(slot)
}
