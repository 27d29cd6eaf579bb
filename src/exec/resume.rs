//! What an interrupted run of the same plan already settled: each node's `prepare`, then the
//! per-node sets of `(identity, sample)` keys it need not produce.

use super::{RunError, RunOptions};
use crate::operators::{PrepareContext, Resume, ResumeSet};
use crate::plan::Plan;
use std::sync::Arc;

/// Runs every node's `prepare`, then works out per node which `(identity, sample)` keys it need
/// not produce, walking the plan from its ends back to its sources:
///
/// - a sink that resumes (its written keys `W`) needs only what is not in `W`, whatever is below
///   it (it replays its kept rows downstream);
/// - a node that writes outputs but does not resume them, or has no consumers, needs everything;
/// - any other node needs what any of its consumers needs (the intersection of their done keys);
/// - a node that decided keys `X` for good (the filter's final rejections) adds `X`: nothing
///   below it will ever see those.
pub(super) fn prepare(plan: &Plan, opts: &RunOptions) -> Result<Vec<Arc<ResumeSet>>, RunError> {
    let ctx = PrepareContext { process_id: opts.process_id, overwrite: opts.overwrite };
    let mut said: Vec<Option<Resume>> = Vec::with_capacity(plan.nodes.len());
    for n in &plan.nodes {
        let resume = n.op.prepare(&ctx).map_err(|e| {
            let msg = if e.0.contains("node `") { e.0 } else { format!("node `{}` ({}): {}", n.spec.id, n.info.name, e.0) };
            RunError::Failed(vec![msg])
        })?;
        match &resume {
            Some(Resume::Written(w)) if !w.is_empty() => {
                tracing::info!("node `{}`: resuming; {} samples already written", n.spec.id, w.len())
            }
            Some(Resume::Decided(d)) if !d.is_empty() => {
                tracing::info!("node `{}`: resuming; {} samples already decided", n.spec.id, d.len())
            }
            _ => {}
        }
        said.push(resume);
    }
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); plan.nodes.len()];
    for (i, n) in plan.nodes.iter().enumerate() {
        for &u in &n.inputs {
            consumers[u].push(i);
        }
    }
    // `None`: the node must produce every key.
    let mut done: Vec<Option<ResumeSet>> = (0..plan.nodes.len()).map(|_| None).collect();
    for &i in plan.order.iter().rev() {
        let below = if consumers[i].is_empty() { None } else { ResumeSet::intersection(consumers[i].iter().map(|&c| done[c].as_ref())) };
        done[i] = match said[i].take() {
            Some(Resume::Written(w)) => Some(w),
            Some(Resume::Decided(x)) => {
                let mut d = below.unwrap_or_default();
                d.extend(x);
                Some(d)
            }
            // a node that writes outputs from scratch needs every key
            None if !plan.nodes[i].op.outputs().is_empty() => None,
            None => below,
        };
    }
    Ok(done.into_iter().map(|d| Arc::new(d.unwrap_or_default())).collect())
}
