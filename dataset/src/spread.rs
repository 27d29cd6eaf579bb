//! The greedy `max_similarity` spread, screened with exact integer products.
//!
//! The walk keeps candidate `j` when `cos(j, k) ≤ τ` for every kept `k < j`, where the cosine
//! is the f64 dot product of the two f32 rows, rounded to f32 (so a kept set is defined to the
//! last bit, independently of how a matrix library sums). Comparing every pair that way costs
//! O(N·K·dim) f64 work; instead every pair is first *screened*:
//!
//! 1. All rows are quantised once to int8 with one global scale `S = 127 / max|v|`:
//!    `q = round(v·S)`, `v̂ = q / S`. Per row, the residual norm `e = ‖v − v̂‖`, the norm `‖v‖`
//!    and the quantised norm `‖v̂‖` are computed in f64.
//! 2. The integer dot product `q_j·q_k` is exact (i32), and
//!    `|v_j·v_k − v̂_j·v̂_k| = |v̂_j·(v_k − v̂_k) + (v_j − v̂_j)·v_k| ≤ ‖v̂_j‖·e_max + e_j·‖v‖_max`
//!    (Cauchy–Schwarz), so with that bound `b_j` (plus a 1e-6 margin that covers f64 and f32
//!    rounding of the exact walk) a screened value below `τ − b_j` is a certain pass and one
//!    above `τ + b_j` a certain rejection.
//! 3. Only pairs in between are recomputed exactly, the same way as the one-by-one walk.
//!
//! The kept set therefore equals the one-by-one walk's exactly (tested against a brute-force
//! walk, also with pairs placed right at the threshold and with badly quantised rows).
//!
//! The integer products run in blocks: each block of [`BLOCK`] candidates is compared with all
//! rows kept before it (the maximum per candidate decides, unless it falls in the uncertain
//! band), then resolved in order with the block's own Gram matrix. On CPUs with AVX-512 VNNI a
//! register-blocked kernel (`vpdpbusd`, 8 candidates × 48 kept rows per tile) does 64 int8
//! multiply-adds per instruction; elsewhere a portable loop computes the same integers. Blocks
//! are split across threads by candidate rows.

use std::ops::Range;

/// Candidate rows per block.
const BLOCK: usize = 1024;
/// Candidate rows per kernel tile.
const MR: usize = 8;
/// Kept rows per packed panel (three 16-lane registers).
const NR: usize = 48;
/// Absolute slack added to every screening bound (covers the rounding of the exact walk: f64
/// sums, then the f32 cast, whose half-ulp is below 6e-8 for |cos| ≤ 1).
const MARGIN: f64 = 1e-6;

/// Which integer kernel screens the similarities (the kept set is the same for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScreenKernel {
    /// The fastest the CPU supports: AVX-512 VNNI when present, else [`ScreenKernel::Portable`].
    Auto,
    /// Plain Rust integer dot products, any CPU.
    Portable,
}

/// Int8 copy of the rows with the per-row screening bounds.
struct Quantized<'a> {
    values: &'a [f32],
    dim: usize,
    /// `dim` rounded up to a multiple of 4 (zero padding).
    dp: usize,
    /// `n × dp` quantised values.
    q: Vec<i8>,
    /// `1 / S²`: converts an integer dot product to a screened cosine.
    inv_s2: f64,
    /// Per row: `‖v̂_j‖·e_max + e_j·‖v‖_max + margin`.
    bound: Vec<f64>,
}

impl<'a> Quantized<'a> {
    fn new(values: &'a [f32], dim: usize) -> Self {
        let n = values.len() / dim;
        let dp = dim.div_ceil(4) * 4;
        let max_abs = values.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let scale = if max_abs > 0.0 { 127.0 / max_abs } else { 1.0 };
        let mut q = vec![0i8; n * dp];
        let (mut e, mut norm, mut qnorm) = (vec![0f64; n], vec![0f64; n], vec![0f64; n]);
        for j in 0..n {
            let (mut se, mut sn, mut sq) = (0f64, 0f64, 0f64);
            for d in 0..dim {
                let v = values[j * dim + d] as f64;
                let qi = (v * scale).round().clamp(-127.0, 127.0);
                q[j * dp + d] = qi as i8;
                let vh = qi / scale;
                se += (v - vh) * (v - vh);
                sn += v * v;
                sq += vh * vh;
            }
            (e[j], norm[j], qnorm[j]) = (se.sqrt(), sn.sqrt(), sq.sqrt());
        }
        let e_max = e.iter().fold(0f64, |m, &x| m.max(x));
        let n_max = norm.iter().fold(0f64, |m, &x| m.max(x));
        // 1e-9 relative slack for the rounding of the norms themselves; the margin grows with
        // the squared norm for rows that are not unit (the exact walk's f64 error scales so).
        let margin = MARGIN * (1.0 + n_max * n_max);
        let bound = (0..n).map(|j| (qnorm[j] * e_max + e[j] * n_max) * (1.0 + 1e-9) + margin).collect();
        Self { values, dim, dp, q, inv_s2: 1.0 / (scale * scale), bound }
    }

    fn row(&self, j: usize) -> &[i8] {
        &self.q[j * self.dp..(j + 1) * self.dp]
    }

    /// Exact integer dot product of two quantised rows.
    fn dot(&self, j: usize, k: usize) -> i32 {
        dot_i8(self.row(j), self.row(k))
    }

    /// Classifies a screened integer product of candidate `j`: certain pass, certain
    /// rejection, or an exact recomputation of pair `(j, k)` (`k` as given).
    fn rejects(&self, j: usize, k: usize, dot: i32, tau: f32) -> bool {
        let s = dot as f64 * self.inv_s2;
        let b = self.bound[j];
        if s + b < tau as f64 {
            false
        } else if s - b > tau as f64 {
            true
        } else {
            exact_cos(self.values, self.dim, j, k) > tau
        }
    }

    /// Whether a screened value certainly rejects.
    fn certainly_rejects(&self, j: usize, dot: i32, tau: f32) -> bool {
        dot as f64 * self.inv_s2 - self.bound[j] > tau as f64
    }

    /// Whether a screened value could reject (is not a certain pass).
    fn may_reject(&self, j: usize, dot: i32, tau: f32) -> bool {
        dot as f64 * self.inv_s2 + self.bound[j] >= tau as f64
    }
}

/// The cosine of the one-by-one walk: f64 dot product of the f32 rows, rounded to f32.
fn exact_cos(values: &[f32], dim: usize, j: usize, k: usize) -> f32 {
    let dot: f64 = (0..dim).map(|d| values[j * dim + d] as f64 * values[k * dim + d] as f64).sum();
    dot as f32
}

/// Exact integer dot product: each product is at most 127², so the sum fits an i32 for any
/// width below 133,000 (wrapping adds let the loop vectorise also with overflow checks on).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |acc, (&x, &y)| acc.wrapping_add(x as i32 * y as i32))
}

/// Kept rows packed for the tile kernel: per panel of up to [`NR`] rows, for each group of 4
/// dimensions the 4 bytes of every row (`[dp/4][NR][4]`), and each row's sum of values (the
/// kernel multiplies unsigned bytes, `q + 128`, so `128·Σq` is subtracted afterwards).
struct Panels {
    dp: usize,
    panels: Vec<Panel>,
}

struct Panel {
    bytes: Vec<u8>,
    colsum: [i32; NR],
    /// Global row indices, at most [`NR`].
    rows: Vec<usize>,
}

impl Panels {
    fn new(dp: usize) -> Self {
        Self { dp, panels: Vec::new() }
    }

    fn push(&mut self, q: &Quantized, row: usize, packed: bool) {
        if self.panels.last().is_none_or(|p| p.rows.len() == NR) {
            let bytes = if packed { vec![0u8; self.dp * NR] } else { Vec::new() };
            self.panels.push(Panel { bytes, colsum: [0; NR], rows: Vec::with_capacity(NR) });
        }
        let p = self.panels.last_mut().expect("just pushed");
        let c = p.rows.len();
        let src = q.row(row);
        if packed {
            for g in 0..self.dp / 4 {
                for i in 0..4 {
                    p.bytes[(g * NR + c) * 4 + i] = src[g * 4 + i] as u8;
                }
            }
        }
        p.colsum[c] = src.iter().map(|&v| v as i32).sum();
        p.rows.push(row);
    }

    fn cols(&self) -> usize {
        self.panels.iter().map(|p| p.rows.len()).sum()
    }
}

/// Candidate rows `start..start + rows` as unsigned bytes (`q + 128`), padded to whole tiles.
fn candidate_bytes(q: &Quantized, rows: Range<usize>) -> Vec<u8> {
    let n = rows.len().div_ceil(MR) * MR;
    let mut out = vec![128u8; n * q.dp];
    for (i, j) in rows.enumerate() {
        for (o, &v) in out[i * q.dp..(i + 1) * q.dp].iter_mut().zip(q.row(j)) {
            *o = (v as i32 + 128) as u8;
        }
    }
    out
}

/// The integer kernel in use.
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Kernel {
    fn pick(k: ScreenKernel) -> Self {
        match k {
            ScreenKernel::Portable => Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            ScreenKernel::Auto if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni") => {
                Kernel::Vnni
            }
            ScreenKernel::Auto => Kernel::Portable,
        }
    }

    fn packed(self) -> bool {
        !matches!(self, Kernel::Portable)
    }
}

/// Calls `f(local row, panel index, tile)` for every tile of candidate rows `rows` (local to
/// `cand`, a multiple of [`MR`] at the start) against every panel; `tile[r·NR + c]` is the
/// integer product of local row `first + r` and the panel's `c`-th row (columns past the
/// panel's rows and rows past `total` are padding).
#[allow(clippy::too_many_arguments)]
fn for_each_tile(
    kernel: Kernel,
    q: &Quantized,
    cand: &[u8],
    cand_start: usize,
    total: usize,
    rows: Range<usize>,
    panels: &Panels,
    mut f: impl FnMut(usize, usize, &[i32; MR * NR]),
) {
    let mut tile = [0i32; MR * NR];
    for (pi, p) in panels.panels.iter().enumerate() {
        let mut r = rows.start;
        while r < rows.end {
            match kernel {
                Kernel::Portable => {
                    for rr in 0..MR.min(total - r) {
                        let a = q.row(cand_start + r + rr);
                        for (c, &k) in p.rows.iter().enumerate() {
                            tile[rr * NR + c] = dot_i8(a, q.row(k));
                        }
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Vnni => {
                    // SAFETY: `pick` checked the CPU features; `cand` holds whole tiles of `dp`
                    // bytes per row and `p.bytes` is `dp × NR` bytes.
                    unsafe { vnni::tile(cand[r * q.dp..].as_ptr(), q.dp, p.bytes.as_ptr(), &mut tile) };
                    for rr in 0..MR {
                        for (c, &sum) in p.colsum[..p.rows.len()].iter().enumerate() {
                            tile[rr * NR + c] -= 128 * sum;
                        }
                    }
                }
            }
            f(r, pi, &tile);
            r += MR;
        }
    }
}

/// Splits `0..rows` into per-thread ranges of whole tiles, with matching chunks of `out`
/// (`per_row` values per row), and runs `work(range, chunk)` on each.
fn parallel_rows<T: Send>(rows: usize, per_row: usize, out: &mut [T], work: impl Fn(Range<usize>, &mut [T]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows.div_ceil(MR)).max(1);
    let chunk = rows.div_ceil(MR).div_ceil(threads) * MR;
    if threads == 1 {
        work(0..rows, out);
        return;
    }
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(chunk * per_row).enumerate() {
            let start = t * chunk;
            let end = (start + chunk).min(rows);
            let work = &work;
            s.spawn(move || work(start..end, part));
        }
    });
}

/// Greedy spread (see the module docs); returns the kept row indices in order.
pub fn greedy(values: &[f32], dim: usize, tau: f32, limit: Option<usize>, screen: ScreenKernel) -> Result<Vec<usize>, String> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(format!("{} values do not form rows of width {dim}", values.len()));
    }
    if dim > 130_000 {
        return Err(format!("rows of width {dim} are too wide for the int8 screen (at most 130000)"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("row {}: value is not finite", i / dim));
    }
    let n = values.len() / dim;
    let limit = limit.unwrap_or(usize::MAX);
    let kernel = Kernel::pick(screen);
    let q = Quantized::new(values, dim);
    let mut kept_panels = Panels::new(q.dp);
    let mut kept: Vec<usize> = Vec::new();
    let mut start = 0;
    while start < n && kept.len() < limit {
        let end = (start + BLOCK).min(n);
        let rows = end - start;
        let cand = if kernel.packed() { candidate_bytes(&q, start..end) } else { Vec::new() };
        // 1. against every row kept before this block: the largest screened product per
        //    candidate; uncertain ones are re-walked pair by pair.
        let mut rejected = vec![false; rows];
        if !kept.is_empty() {
            let mut best = vec![i32::MIN; rows.div_ceil(MR) * MR];
            parallel_rows(rows, 1, &mut best, |range, part| {
                let base = range.start;
                for_each_tile(kernel, &q, &cand, start, rows, range, &kept_panels, |r, pi, tile| {
                    let width = kept_panels.panels[pi].rows.len();
                    for rr in 0..MR.min(rows - r) {
                        let m = tile[rr * NR..rr * NR + width].iter().copied().max().unwrap_or(i32::MIN);
                        let slot = &mut part[r - base + rr];
                        *slot = (*slot).max(m);
                    }
                });
            });
            for (i, r) in rejected.iter_mut().enumerate() {
                let j = start + i;
                if q.certainly_rejects(j, best[i], tau) {
                    *r = true;
                } else if q.may_reject(j, best[i], tau) {
                    *r = kept.iter().any(|&k| q.rejects(j, k, q.dot(j, k), tau));
                }
            }
        }
        // 2. within the block, in order, with the block's Gram matrix.
        let survivors: Vec<usize> = (0..rows).filter(|&i| !rejected[i]).collect();
        if !survivors.is_empty() {
            let mut block_panels = Panels::new(q.dp);
            for j in start..end {
                block_panels.push(&q, j, kernel.packed());
            }
            let cols = block_panels.cols();
            let mut gram = vec![0i32; rows.div_ceil(MR) * MR * cols];
            parallel_rows(rows, cols, &mut gram, |range, part| {
                let base = range.start;
                for_each_tile(kernel, &q, &cand, start, rows, range, &block_panels, |r, pi, tile| {
                    let width = block_panels.panels[pi].rows.len();
                    for rr in 0..MR.min(rows - r) {
                        let row = &mut part[(r - base + rr) * cols + pi * NR..][..width];
                        row.copy_from_slice(&tile[rr * NR..rr * NR + width]);
                    }
                });
            });
            let mut in_block: Vec<usize> = Vec::new();
            for i in survivors {
                if kept.len() >= limit {
                    break;
                }
                let j = start + i;
                if in_block.iter().any(|&k| q.rejects(j, start + k, gram[i * cols + k], tau)) {
                    continue;
                }
                in_block.push(i);
                kept.push(j);
                kept_panels.push(&q, j, kernel.packed());
            }
        }
        start = end;
    }
    Ok(kept)
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// One `MR × NR` tile of `Σ_d a[r][d] · b[c][d]` with `a` unsigned (row-major, `dp`
    /// bytes per row) and `b` signed, packed `[dp/4][NR][4]`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512 VNNI; `a` must point at `MR × dp` bytes and
    /// `b` at `dp × NR` bytes; `dp` is a multiple of 4.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn tile(a: *const u8, dp: usize, b: *const u8, out: &mut [i32; MR * NR]) {
        let mut acc = [_mm512_setzero_si512(); MR * 3];
        for g in 0..dp / 4 {
            let bp = b.add(g * NR * 4);
            let b0 = _mm512_loadu_si512(bp.cast());
            let b1 = _mm512_loadu_si512(bp.add(64).cast());
            let b2 = _mm512_loadu_si512(bp.add(128).cast());
            for r in 0..MR {
                let av = _mm512_set1_epi32(a.add(r * dp + g * 4).cast::<i32>().read_unaligned());
                acc[r * 3] = _mm512_dpbusd_epi32(acc[r * 3], av, b0);
                acc[r * 3 + 1] = _mm512_dpbusd_epi32(acc[r * 3 + 1], av, b1);
                acc[r * 3 + 2] = _mm512_dpbusd_epi32(acc[r * 3 + 2], av, b2);
            }
        }
        for (i, v) in acc.iter().enumerate() {
            _mm512_storeu_si512(out.as_mut_ptr().add(i * 16).cast(), *v);
        }
    }
}
