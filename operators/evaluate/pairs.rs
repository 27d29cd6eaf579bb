//! Genuine and impostor comparison pairs of an embedded dataset, and their cosine scores.
//!
//! **Genuine pairs** are a self-join of the `(identity, row)` collection on `identity`: a small
//! differential-dataflow computation (one thread, [`timely::execute_directly`]) arranges the
//! collection by key once and joins the arrangement with itself (`join_core`), keeping
//! `row_a < row_b`. The join emits its output a bounded amount of work at a time and every
//! joined pair is handed straight to a [`PairSink`] that scores it, so the pairs themselves are
//! never collected; only the f64 scores are kept.
//!
//! **Impostor pairs** are cross-identity pairs. When there are at most `max_all` of them, all
//! are used (ascending `(a, b)` order); otherwise `count` pairs are drawn with replacement
//! from a [`KeyedRng`] keyed by the pipeline seed (rejecting same-identity draws), so the draw
//! does not depend on worker count or scheduling.

use differential_dataflow::input::Input;
use idflow_dataset::rng::KeyedRng;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

/// Key component separating the impostor draw from other random streams of the pipeline.
const IMPOSTOR_STREAM: u64 = 0x696d_706f_7374_6f72; // "impostor"

/// Receives the genuine pairs of [`join_genuine_pairs`] as the join produces them.
pub trait PairSink: Send + 'static {
    /// One within-identity pair of rows, `row_a < row_b`.
    fn pair(&mut self, identity: u32, row_a: u32, row_b: u32);
}

/// Runs the differential self-join of `(identity, row)` on identity and calls
/// `sink.pair(identity, row_a, row_b)` once for every within-identity pair with
/// `row_a < row_b` (n(n−1)/2 calls for an identity of n rows). Returns the sink.
///
/// Rows are indices into `identities`. The order of the calls is deterministic for a given
/// input (one worker, sorted arrangements) but is not `(a, b)`-sorted.
pub fn join_genuine_pairs<S: PairSink>(identities: &[u32], sink: S) -> S {
    let records: Vec<(u32, u32)> = identities.iter().enumerate().map(|(row, &id)| (id, row as u32)).collect();
    // `execute_directly` wants a `Sync` closure; the mutex hands the inputs over once.
    let cell = Mutex::new(Some((records, sink)));
    timely::execute_directly(move |worker| {
        let Some((records, sink)) = cell.lock().ok().and_then(|mut g| g.take()) else { unreachable!("the dataflow closure runs once") };
        let sink = Rc::new(RefCell::new(sink));
        let out = sink.clone();
        let (mut input, probe) = worker.dataflow::<u32, _, _>(move |scope| {
            let (input, rows) = scope.new_collection::<(u32, u32), isize>();
            let by_identity = rows.arrange_by_key();
            let (probe, _) = by_identity
                .clone()
                .join_core(by_identity, |id: &u32, a: &u32, b: &u32| (a < b).then_some((*id, *a, *b)))
                .inspect(move |((id, a, b), _time, diff)| {
                    // Rows are distinct, so every pair has multiplicity one.
                    for _ in 0..*diff {
                        out.borrow_mut().pair(*id, *a, *b);
                    }
                })
                .probe();
            (input, probe)
        });
        for r in records {
            input.insert(r);
        }
        input.advance_to(1);
        input.flush();
        drop(input);
        worker.step_while(|| !probe.done());
        drop(probe);
        while worker.has_dataflows() {
            worker.step();
        }
        match Rc::try_unwrap(sink) {
            Ok(cell) => cell.into_inner(),
            Err(_) => unreachable!("the dataflow holding the sink has been dropped"),
        }
    })
}

/// Number of cross-identity pairs among rows labelled by `identities`.
pub fn cross_pair_count(identities: &[u32]) -> u64 {
    let n = identities.len() as u64;
    let mut sizes = std::collections::HashMap::<u32, u64>::new();
    for &id in identities {
        *sizes.entry(id).or_default() += 1;
    }
    let within: u64 = sizes.values().map(|&k| k * (k.saturating_sub(1)) / 2).sum();
    (n * n.saturating_sub(1) / 2) - within
}

/// How the impostor pairs were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImpostorSelection {
    /// Every cross-identity pair.
    All,
    /// A seeded random draw with replacement.
    Sampled,
}

/// Calls `sink(a, b)` for the impostor pairs: all cross-identity pairs when there are at most
/// `max_all`, otherwise `count` pairs drawn with the keyed RNG of `seed`. Returns how they were
/// chosen. With fewer than two identities there are no pairs.
pub fn impostor_pairs(identities: &[u32], seed: u64, count: u64, max_all: u64, mut sink: impl FnMut(u32, u32)) -> ImpostorSelection {
    let total = cross_pair_count(identities);
    let n = identities.len();
    if total <= max_all {
        for a in 0..n {
            for b in a + 1..n {
                if identities[a] != identities[b] {
                    sink(a as u32, b as u32);
                }
            }
        }
        return ImpostorSelection::All;
    }
    let mut rng = KeyedRng::new(&[seed, IMPOSTOR_STREAM]);
    let mut drawn = 0;
    while drawn < count {
        let a = rng.below(n as u64) as usize;
        let b = rng.below(n as u64) as usize;
        if identities[a] == identities[b] {
            continue;
        }
        sink(a.min(b) as u32, a.max(b) as u32);
        drawn += 1;
    }
    ImpostorSelection::Sampled
}

/// Row-major `[n, dim]` embeddings with their inverse L2 norms, so a pair's cosine is one
/// dot product (accumulated in f64) times two stored factors, without a normalised copy.
#[derive(Clone, Debug)]
pub struct UnitRows {
    values: Vec<f32>,
    inv_norms: Vec<f64>,
    dim: usize,
}

impl UnitRows {
    /// Takes the rows and computes their norms (f64); an all-zero row gets cosine 0 to
    /// everything.
    pub fn new(values: Vec<f32>, dim: usize) -> Self {
        let inv_norms = values
            .chunks_exact(dim.max(1))
            .map(|row| {
                let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                if norm > 0.0 {
                    1.0 / norm
                } else {
                    0.0
                }
            })
            .collect();
        Self { values, inv_norms, dim }
    }

    /// Row `i`, as given.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Cosine similarity of rows `a` and `b`.
    pub fn cosine(&self, a: usize, b: usize) -> f64 {
        let dot: f64 = self.row(a).iter().zip(self.row(b)).map(|(&x, &y)| x as f64 * y as f64).sum();
        dot * self.inv_norms[a] * self.inv_norms[b]
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All rows as given, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Collect(Vec<(u32, u32, u32)>, BTreeMap<u32, u64>);

    impl PairSink for Collect {
        fn pair(&mut self, identity: u32, a: u32, b: u32) {
            self.0.push((identity, a, b));
            *self.1.entry(identity).or_default() += 1;
        }
    }

    fn shuffled_identities() -> Vec<u32> {
        // Identities of sizes 1, 2, 3, 5 and 7, interleaved.
        let mut ids = Vec::new();
        for (id, n) in [(3u32, 1usize), (10, 2), (4, 3), (7, 5), (0, 7)] {
            ids.extend(std::iter::repeat_n(id, n));
        }
        let mut rng = KeyedRng::new(&[1]);
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i as u64 + 1) as usize);
        }
        ids
    }

    #[test]
    fn join_yields_n_choose_2_pairs_per_identity() {
        let ids = shuffled_identities();
        let Collect(mut pairs, counts) = join_genuine_pairs(&ids, Collect(Vec::new(), BTreeMap::new()));
        for &(id, a, b) in &pairs {
            assert!(a < b);
            assert_eq!((ids[a as usize], ids[b as usize]), (id, id));
        }
        let expected_counts: BTreeMap<u32, u64> = [(0, 21), (4, 3), (7, 10), (10, 1)].into_iter().collect();
        assert_eq!(counts, expected_counts, "n(n-1)/2 per identity; a single-row identity has none");
        pairs.sort_unstable();
        let mut expected: Vec<(u32, u32, u32)> =
            idflow_dataset::metrics::scores::genuine_pairs(&ids).into_iter().map(|(a, b)| (ids[a], a as u32, b as u32)).collect();
        expected.sort_unstable();
        assert_eq!(pairs, expected, "same pairs as an independent enumeration");
    }

    #[test]
    fn join_scales_to_thousands_of_pairs_per_identity() {
        // 20 identities × 100 rows: 20 × 4950 pairs through the streaming join.
        let ids: Vec<u32> = (0..2000u32).map(|i| i % 20).collect();
        let Collect(pairs, counts) = join_genuine_pairs(&ids, Collect(Vec::new(), BTreeMap::new()));
        assert_eq!(pairs.len(), 20 * 4950);
        assert!(counts.values().all(|&c| c == 4950));
    }

    #[test]
    fn impostors_are_all_cross_pairs_or_a_seeded_draw() {
        let ids = shuffled_identities();
        let total = cross_pair_count(&ids);
        assert_eq!(total, 18 * 17 / 2 - 35);
        let mut all = Vec::new();
        assert_eq!(impostor_pairs(&ids, 5, 10, total, |a, b| all.push((a, b))), ImpostorSelection::All);
        assert_eq!(all.len() as u64, total);
        assert!(all.iter().all(|&(a, b)| a < b && ids[a as usize] != ids[b as usize]));
        let draw = |seed| {
            let mut v = Vec::new();
            assert_eq!(impostor_pairs(&ids, seed, 40, total - 1, |a, b| v.push((a, b))), ImpostorSelection::Sampled);
            v
        };
        let (d1, d2, d3) = (draw(5), draw(5), draw(6));
        assert_eq!(d1.len(), 40);
        assert_eq!(d1, d2, "same seed, same draw");
        assert_ne!(d1, d3, "the draw follows the seed");
        assert!(d1.iter().all(|&(a, b)| a < b && ids[a as usize] != ids[b as usize]));
    }

    #[test]
    fn cosine_of_unit_rows() {
        let rows = UnitRows::new(vec![3.0, 4.0, 0.0, 2.0, 0.0, 0.0], 2);
        assert!((rows.cosine(0, 1) - 0.8).abs() < 1e-7);
        assert_eq!(rows.cosine(0, 2), 0.0);
    }
}
