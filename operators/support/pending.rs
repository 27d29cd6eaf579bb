//! Planned work minus done work: which `(identity, sample)` jobs a resumed run still has to do,
//! computed as a differential-dataflow antijoin.
//!
//! A [`PendingWork`] owns a small single-threaded timely worker (one per task, stepped by the
//! task itself) with two differential collections:
//!
//! * `done`: the `(identity, sample)` keys an interrupted run already wrote (the
//!   [`ResumeSet`](crate::operators::ResumeSet) of the resumed sink), inserted once at time 0;
//! * `planned`: `((identity, sample), job)` for the jobs of the current input batch, one
//!   timestamp per batch. A batch's jobs are retracted again at the next timestamp, so the
//!   arrangements stay as small as one batch plus the done keys.
//!
//! `planned.antijoin(done)`, consolidated, is the work left to do: at timestamp `t` its
//! positive updates are exactly the jobs of batch `t` whose key is not done. The caller gets
//! their job numbers back in ascending order, so generation order (and therefore the output)
//! is the same as an uninterrupted run's, and does not depend on how the dataflow scheduled
//! the updates.

use differential_dataflow::input::{Input, InputSession};
use std::cell::RefCell;
use std::rc::Rc;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// A job key: `(identity, sample)`.
pub type Key = (u64, u64);

type Captured = Rc<RefCell<Vec<(u64, u64, isize)>>>;

/// The antijoin of planned jobs against done keys (see the module docs).
pub struct PendingWork {
    worker: Worker,
    planned: InputSession<u64, (Key, u64), isize>,
    done: InputSession<u64, Key, isize>,
    probe: ProbeHandle<u64>,
    /// Antijoin output not yet handed out: (job, time, diff).
    out: Captured,
    /// The next timestamp (one per [`PendingWork::pending`] call).
    epoch: u64,
    /// The previous call's planned jobs, retracted by the next call.
    last: Vec<(Key, u64)>,
    done_count: usize,
}

impl PendingWork {
    /// Builds the dataflow and loads the done keys (each key once).
    pub fn new(done: impl IntoIterator<Item = Key>) -> Self {
        let alloc = Allocator::Thread(Thread::default());
        let mut worker = Worker::new(timely::WorkerConfig::default(), alloc, Some(std::time::Instant::now()));
        let out: Captured = Rc::new(RefCell::new(Vec::new()));
        let sink = out.clone();
        let (planned, mut done_in, probe) = worker.dataflow::<u64, _, _>(move |scope| {
            let (planned_in, planned) = scope.new_collection::<(Key, u64), isize>();
            let (done_in, done) = scope.new_collection::<Key, isize>();
            let (probe, _) = planned
                .antijoin(done)
                .consolidate()
                .inspect(move |((_key, job), time, diff)| sink.borrow_mut().push((*job, *time, *diff)))
                .probe();
            (planned_in, done_in, probe)
        });
        let mut done_count = 0;
        for k in done {
            done_in.insert(k);
            done_count += 1;
        }
        Self { worker, planned, done: done_in, probe, out, epoch: 0, last: Vec::new(), done_count }
    }

    /// Number of done keys loaded.
    pub fn done_count(&self) -> usize {
        self.done_count
    }

    /// Feeds one batch of planned jobs `(key, job)` (job numbers unique over the life of this
    /// value) and returns the job numbers whose key is not done, ascending.
    pub fn pending(&mut self, planned: Vec<(Key, u64)>) -> Vec<u64> {
        for (key, job) in self.last.drain(..) {
            self.planned.update((key, job), -1);
        }
        for &(key, job) in &planned {
            self.planned.insert((key, job));
        }
        self.last = planned;
        let t = self.epoch;
        self.epoch += 1;
        let next = self.epoch;
        self.planned.advance_to(next);
        self.planned.flush();
        self.done.advance_to(next);
        self.done.flush();
        let probe = &self.probe;
        self.worker.step_while(|| probe.less_than(&next));
        let mut jobs: Vec<u64> = Vec::new();
        for (job, time, diff) in self.out.borrow_mut().drain(..) {
            // Negative updates at `t` retract the previous batch's jobs; every positive one
            // is a job of this batch (job numbers are unique, so its multiplicity is one).
            debug_assert!(time == t, "antijoin output at {time}, expected {t}");
            if time == t && diff > 0 {
                jobs.push(job);
            }
        }
        jobs.sort_unstable();
        jobs.dedup();
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antijoin_leaves_only_undone_jobs_per_batch() {
        let mut p = PendingWork::new([(0, 1), (2, 0), (2, 2), (9, 9)]);
        assert_eq!(p.done_count(), 4);
        let first: Vec<(Key, u64)> = (0..3u64).flat_map(|i| (0..3u64).map(move |s| ((i, s), i * 3 + s))).collect();
        assert_eq!(p.pending(first), vec![0, 2, 3, 4, 5, 7]);
        // the next batch sees nothing of the first one, only its own jobs
        assert_eq!(p.pending(vec![((2, 2), 100), ((3, 0), 101), ((0, 1), 102)]), vec![101]);
        assert_eq!(p.pending(Vec::new()), Vec::<u64>::new());
        assert_eq!(p.pending(vec![((5, 5), 200)]), vec![200]);
    }

    #[test]
    fn nothing_done_keeps_everything() {
        let mut p = PendingWork::new(std::iter::empty());
        let planned: Vec<(Key, u64)> = (0..50u64).map(|j| ((j / 5, j % 5), j)).collect();
        assert_eq!(p.pending(planned), (0..50).collect::<Vec<_>>());
    }
}
