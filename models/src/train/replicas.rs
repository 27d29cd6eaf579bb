//! Data-parallel replicas inside one optimiser step: the batch is cut into contiguous row
//! ranges, each range's forward and backward pass runs on its own thread against the shared
//! parameters, and the parameter gradients are summed in replica order, so a step's result
//! depends on the number of replicas but never on thread scheduling.
//!
//! candle's CPU kernels of one small model leave most of a core idle between ops (its step time
//! is dominated by per-op bookkeeping, not arithmetic), so two replicas on two cores train about
//! twice as many images per second as one thread with two kernel threads. Scoped threads
//! (`std::thread::scope`) are enough here; no crate adds anything.

use std::ops::Range;

use candle_core::backprop::GradStore;

use super::optim::Param;
use crate::error::Result;

/// Stack of a replica thread: candle's backward pass walks the graph recursively.
const REPLICA_STACK_BYTES: usize = 64 << 20;

/// `rows` cut into at most `replicas` contiguous, nearly equal, non-empty ranges.
pub fn split_rows(rows: usize, replicas: usize) -> Vec<Range<usize>> {
    let parts = replicas.clamp(1, rows.max(1));
    (0..parts).map(|i| i * rows / parts..(i + 1) * rows / parts).filter(|r| !r.is_empty()).collect()
}

/// Runs `work(replica, rows)` for every part, part 0 on the calling thread and the others on
/// scoped threads, and returns the results in replica order (the first error wins).
pub fn run_replicas<T, F>(parts: &[Range<usize>], work: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, Range<usize>) -> Result<T> + Sync,
{
    if parts.len() <= 1 {
        return parts.iter().cloned().enumerate().map(|(i, r)| work(i, r)).collect();
    }
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = parts[1..]
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, rows)| {
                std::thread::Builder::new()
                    .name(format!("idflow-replica-{}", i + 1))
                    .stack_size(REPLICA_STACK_BYTES)
                    .spawn_scoped(scope, move || work(i + 1, rows))
            })
            .collect();
        let mut out = vec![work(0, parts[0].clone())];
        for handle in handles {
            let joined = match handle {
                Ok(h) => h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(e) => Err(candle_core::Error::Msg(format!("cannot start a training replica thread: {e}")).into()),
            };
            out.push(joined);
        }
        out.into_iter().collect()
    })
}

/// The replicas' gradients of `params` summed in replica order, in the first replica's store
/// (parameters without a gradient in some replica are summed over those that have one).
pub fn sum_gradients(stores: Vec<GradStore>, params: &[Param]) -> Result<GradStore> {
    let mut stores = stores.into_iter();
    let mut total = stores.next().ok_or_else(|| candle_core::Error::Msg("no replica gradients to sum".into()))?;
    for store in stores {
        for p in params {
            let var = p.var.as_tensor();
            let Some(g) = store.get(var) else { continue };
            let sum = match total.get(var) {
                Some(acc) => (acc + g)?,
                None => g.clone(),
            };
            total.insert(var, sum);
        }
    }
    Ok(total)
}
