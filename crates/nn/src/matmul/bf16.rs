//! bf16 matrix products with fp32 accumulation: both operands rounded to bf16 (nearest
//! even) into packed copies, then multiplied by AMX tiles or AVX512-BF16 dot products.
//!
//! Packed layouts, shared by both instruction sets (`kp` is `k` rounded up to 32, rows
//! and columns are padded with zeros to multiples of 32, so every block is full):
//! - `a`: `m_pad × kp` bf16, row-major: an AMX A tile is 16 rows of 32 values.
//! - `b`: `kp/2 × n_pad` pairs (`u32`: the even-`k` value in the low half), the "VNNI"
//!   form both `tdpbf16ps` and `vdpbf16ps` read: an AMX B tile is 16 pair rows of 16
//!   columns.
//!
//! Each 32×32 block of the output is computed by one thread over a fixed range of `k`,
//! so results do not depend on the number of threads; long reductions (weight
//! gradients) are split into a fixed number of `k` ranges summed in order.

use super::{Mat, add_parts, sum_parts};
use crate::precision::Bf16Isa;
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows and columns of one output block.
pub(crate) const BLOCK: usize = 32;

/// `x` rounded to the nearest bf16, ties to even (NaN stays a quiet NaN). The same
/// rounding as `vcvtneps2bf16`, written in integers so that every copy agrees.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 a bf16 value stands for (exact).
#[inline(always)]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

thread_local! {
    /// Packed operands, reused between products on the calling thread.
    static PACKED: RefCell<(Vec<u16>, Vec<u32>, Vec<f32>)> = const {
        RefCell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

/// `dst = a · b` (or `dst += a · b`), `dst` row-major `a.rows × b.cols`, with bf16
/// operands and fp32 accumulation on `isa`, which the caller has checked is available.
pub(crate) fn matmul_bf16(isa: Bf16Isa, dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert!(
        isa.is_available(),
        "bf16 instruction set {isa:?} is not available"
    );
    let (m, k) = (a.rows, a.cols);
    let kp = padded(k);
    PACKED.with_borrow_mut(|(pa, pb, parts)| {
        let pa = grown(pa, padded(m) * kp);
        // SAFETY: a bf16 instruction set implies AVX-512F and BW (Bf16Isa::is_available).
        unsafe { pack_a(pa, a, kp) };
        product(isa, dst, pa, m, kp, b, accumulate, pb, parts);
    });
}

/// [`matmul_bf16`] with `a` already rounded and packed (`padded(m) × kp` bf16, zero
/// beyond its `m × k` values): a convolution writes its im2col matrix this way.
pub(crate) fn matmul_bf16_packed_a(
    isa: Bf16Isa,
    dst: &mut [f32],
    pa: &[u16],
    m: usize,
    kp: usize,
    b: Mat<'_>,
    accumulate: bool,
) {
    assert!(kp.is_multiple_of(BLOCK) && kp >= b.rows && pa.len() >= padded(m) * kp);
    PACKED.with_borrow_mut(|(_, pb, parts)| {
        product(isa, dst, pa, m, kp, b, accumulate, pb, parts);
    });
}

/// `b` rounded and packed once, for products that reuse it: a dense layer's weights
/// across inference batches (packing them cost a sixth of bf16 inference).
#[derive(Default)]
pub(crate) struct PackedB {
    pairs: Vec<u32>,
    k: usize,
    n: usize,
}

impl PackedB {
    /// Rounds and packs `b` as [`matmul_bf16`] would, on `isa`'s CPU (checked).
    pub(crate) fn pack(&mut self, isa: Bf16Isa, b: Mat<'_>) {
        assert!(
            isa.is_available(),
            "bf16 instruction set {isa:?} is not available"
        );
        let (k, n) = (b.rows, b.cols);
        let pb = grown(&mut self.pairs, padded(k) / 2 * padded(n));
        // SAFETY: as in matmul_bf16.
        unsafe { pack_b(pb, b, padded(n)) };
        (self.k, self.n) = (k, n);
    }
}

/// [`matmul_bf16`] with `b` packed beforehand: the same values, bit for bit.
pub(crate) fn matmul_bf16_packed_b(
    isa: Bf16Isa,
    dst: &mut [f32],
    a: Mat<'_>,
    b: &PackedB,
    accumulate: bool,
) {
    assert_eq!(a.cols, b.k, "inner dimensions differ");
    assert!(
        isa.is_available(),
        "bf16 instruction set {isa:?} is not available"
    );
    let (m, n) = (a.rows, b.n);
    assert!(dst.len() >= m * n, "destination too small");
    if m == 0 || n == 0 {
        return;
    }
    let (kp, n_pad) = (padded(b.k), padded(n));
    let pb = aligned(&b.pairs, kp / 2 * n_pad);
    PACKED.with_borrow_mut(|(pa, _, parts)| {
        let pa = grown(pa, padded(m) * kp);
        // SAFETY: as in matmul_bf16.
        unsafe { pack_a(pa, a, kp) };
        let shape = Shape { m, n, kp, n_pad };
        multiply(isa, dst, pa, pb, shape, accumulate, parts);
    });
}

/// `dst = aᵀ · r` for `a` (`rows × m` fp32) and `r` the first `n` columns of rows of
/// bf16 values `stride` apart (a packed im2col matrix): a convolution's weight gradient
/// from the columns its forward pass rounded.
pub(crate) fn matmul_bf16_tn_rows(
    isa: Bf16Isa,
    dst: &mut [f32],
    a: Mat<'_>,
    r: &[u16],
    stride: usize,
    n: usize,
) {
    let (rows, m) = (a.rows, a.cols);
    assert!(n <= stride && r.len() >= rows * stride, "rows too short");
    assert!(
        isa.is_available(),
        "bf16 instruction set {isa:?} is not available"
    );
    assert!(dst.len() >= m * n, "destination too small");
    if m == 0 || n == 0 {
        return;
    }
    let kp = padded(rows);
    let n_pad = padded(n);
    PACKED.with_borrow_mut(|(pa, pb, parts)| {
        let pa = grown(pa, padded(m) * kp);
        // SAFETY: as in matmul_bf16.
        unsafe { pack_a(pa, a.t(), kp) };
        let pb = grown(pb, kp / 2 * n_pad);
        pb.par_chunks_mut(n_pad).enumerate().for_each(|(p, row)| {
            let (k0, k1) = (2 * p, 2 * p + 1);
            if k0 >= rows {
                row.fill(0);
                return;
            }
            row[n..].fill(0);
            let lo = &r[k0 * stride..][..n];
            if k1 < rows {
                let hi = &r[k1 * stride..][..n];
                for ((d, &l), &h) in row.iter_mut().zip(lo).zip(hi) {
                    *d = u32::from(l) | (u32::from(h) << 16);
                }
            } else {
                for (d, &l) in row.iter_mut().zip(lo) {
                    *d = u32::from(l);
                }
            }
        });
        multiply(isa, dst, pa, pb, Shape { m, n, kp, n_pad }, false, parts);
    });
}

/// `len` values of `v`, grown (never shrunk) to hold them: the thread-local buffers
/// serve products of several shapes in turn, and re-zeroing megabytes on every
/// regrowth cost more than the arithmetic. Callers overwrite every value they read.
fn grown<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    aligned_mut(v, len)
}

/// Values a 64-byte boundary may be away from a buffer's start.
fn spare<T>() -> usize {
    64 / std::mem::size_of::<T>()
}

/// The `len` values of `v` from its first 64-byte boundary on, growing `v` to hold
/// them: packed rows are whole multiples of 64 bytes, so none then straddles two cache
/// lines (measured: a third off the AMX convolution's time). The same values as
/// [`aligned`] gives while `v` is not grown again.
pub(crate) fn aligned_mut<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len + spare::<T>() {
        v.resize(len + spare::<T>(), T::default());
    }
    let at = v.as_ptr().align_offset(64).min(spare::<T>());
    &mut v[at..at + len]
}

/// The `len` values of `v` that [`aligned_mut`] gave.
pub(crate) fn aligned<T>(v: &[T], len: usize) -> &[T] {
    let at = v.as_ptr().align_offset(64).min(spare::<T>());
    &v[at..at + len]
}

/// `k` rounded up to a whole number of blocks (at least one).
pub(crate) fn padded(k: usize) -> usize {
    k.div_ceil(BLOCK).max(1) * BLOCK
}

/// Rounds `src` into the start of `dst` and zeroes the rest: one row of a packed `a`.
pub(crate) fn round_row(dst: &mut [u16], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512F and BW (checked just above).
        unsafe { round_row_avx512(dst, src) };
        return;
    }
    convert(&mut dst[..src.len()], src);
    dst[src.len()..].fill(0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_row_avx512(dst: &mut [u16], src: &[f32]) {
    convert(&mut dst[..src.len()], src);
    dst[src.len()..].fill(0);
}

/// Packs `b` and multiplies: the shared tail of the entry points.
#[allow(clippy::too_many_arguments)]
fn product(
    isa: Bf16Isa,
    dst: &mut [f32],
    pa: &[u16],
    m: usize,
    kp: usize,
    b: Mat<'_>,
    accumulate: bool,
    pb: &mut Vec<u32>,
    parts: &mut Vec<f32>,
) {
    assert!(
        isa.is_available(),
        "bf16 instruction set {isa:?} is not available"
    );
    let n = b.cols;
    assert!(dst.len() >= m * n, "destination too small");
    if m == 0 || n == 0 {
        return;
    }
    let n_pad = padded(n);
    let pb = grown(pb, kp / 2 * n_pad);
    // SAFETY: as in matmul_bf16.
    unsafe { pack_b(pb, b, n_pad) };
    multiply(
        isa,
        dst,
        pa,
        pb,
        Shape { m, n, kp, n_pad },
        accumulate,
        parts,
    );
}

/// `dst (+)= a · b` from packed operands.
fn multiply(
    isa: Bf16Isa,
    dst: &mut [f32],
    pa: &[u16],
    pb: &[u32],
    shape: Shape,
    accumulate: bool,
    parts: &mut Vec<f32>,
) {
    let (m, n, kp) = (shape.m, shape.n, shape.kp);
    let (m_blocks, k_blocks) = (padded(m) / BLOCK, kp / BLOCK);
    // Fixed by the shape alone, never by the thread count: enough tasks for a small
    // output with a long reduction (weight gradients).
    let chunks = if m_blocks >= 8 {
        1
    } else {
        (k_blocks / 8).clamp(1, 8)
    };
    if chunks == 1 {
        // Tasks of several row blocks: one task (and one tile configuration) per 32
        // rows would cost more than the arithmetic of a thin product.
        let group = m_blocks.div_ceil(16).clamp(1, 8);
        dst[..m * n]
            .par_chunks_mut(group * BLOCK * n)
            .enumerate()
            .for_each(|(g, out)| {
                for (i, rows) in out.chunks_mut(BLOCK * n).enumerate() {
                    let mi = g * group + i;
                    run_rows(isa, &shape, pa, pb, mi, 0..k_blocks, rows, accumulate);
                }
            });
        return;
    }
    let per = k_blocks.div_ceil(chunks);
    let parts = grown(parts, chunks * m * n);
    parts
        .par_chunks_mut(m * n)
        .enumerate()
        .flat_map(|(c, part)| {
            part.par_chunks_mut(BLOCK * n)
                .enumerate()
                .map(move |(mi, out)| (c, mi, out))
        })
        .for_each(|(c, mi, out)| {
            let ks = c * per..((c + 1) * per).min(k_blocks);
            run_rows(isa, &shape, pa, pb, mi, ks, out, false);
        });
    if accumulate {
        // The parts summed in order into the first, as `sum_parts` sums them, then added.
        let (sum, rest) = parts.split_at_mut(m * n);
        add_parts(sum, rest);
        add_parts(&mut dst[..m * n], sum);
    } else {
        sum_parts(&mut dst[..m * n], parts);
    }
}

/// The sizes a block computation needs.
pub(crate) struct Shape {
    m: usize,
    n: usize,
    /// The padded inner dimension (bf16 values per packed `a` row).
    pub(crate) kp: usize,
    /// The padded column count (pairs per packed `b` row).
    pub(crate) n_pad: usize,
}

impl Shape {
    /// Asserts that `a` holds 32 packed rows with `k_blocks` blocks from `k_offset`, and
    /// `b` the matching pair rows with column block `ni`: what a block kernel reads.
    pub(crate) fn check_block(
        &self,
        a: &[u16],
        k_offset: usize,
        k_blocks: usize,
        b: &[u32],
        ni: usize,
    ) {
        assert!(a.len() >= BLOCK * self.kp && k_offset + k_blocks * BLOCK <= self.kp);
        assert!(b.len() >= k_blocks * BLOCK / 2 * self.n_pad && (ni + 1) * BLOCK <= self.n_pad);
    }
}

/// Row block `mi` of the product over the `k` blocks `ks`, written to `out` (the block's
/// rows of the row-major output, `n` wide), or added to it with `accumulate`.
#[allow(clippy::too_many_arguments)]
fn run_rows(
    isa: Bf16Isa,
    s: &Shape,
    pa: &[u16],
    pb: &[u32],
    mi: usize,
    ks: std::ops::Range<usize>,
    out: &mut [f32],
    accumulate: bool,
) {
    let rows = out.len() / s.n;
    let a_rows = &pa[mi * BLOCK * s.kp..][..BLOCK * s.kp];
    let b_rows = &pb[ks.start * BLOCK / 2 * s.n_pad..ks.end * BLOCK / 2 * s.n_pad];
    let mut block = [0f32; BLOCK * BLOCK];
    let k_offset = ks.start * BLOCK;
    let k_blocks = ks.len();
    #[cfg(target_arch = "x86_64")]
    let mut tiles = (isa == Bf16Isa::Amx).then(super::amx::Tiles::configure);
    for ni in 0..s.n_pad / BLOCK {
        let cols = BLOCK.min(s.n - ni * BLOCK);
        #[cfg(target_arch = "x86_64")]
        if let (Some(t), BLOCK, BLOCK) = (&mut tiles, rows, cols) {
            // SAFETY: as below; and this block's 32 rows × 32 columns lie inside `out`
            // (32 rows of n ≥ (ni+1)·32 values).
            unsafe {
                let o = out.as_mut_ptr().add(ni * BLOCK);
                t.block_into(
                    a_rows, s, k_offset, k_blocks, b_rows, ni, o, s.n, accumulate,
                );
            }
            continue;
        }
        // SAFETY: the instruction set was checked by matmul_bf16; the slices hold the
        // 32 rows × k_blocks·32 values of `a` and k_blocks·16 pair rows of `b` that the
        // kernels read (their lengths are asserted inside).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match &mut tiles {
                Some(t) => t.block(a_rows, s, k_offset, k_blocks, b_rows, ni, &mut block),
                None => {
                    super::avx512bf16::block(a_rows, s, k_offset, k_blocks, b_rows, ni, &mut block)
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (isa, a_rows, b_rows, k_offset, k_blocks);
        for (r, row) in out.chunks_exact_mut(s.n).take(rows).enumerate() {
            let src = &block[r * BLOCK..][..cols];
            let dst = &mut row[ni * BLOCK..][..cols];
            if accumulate {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// Rounds `a` (`m × k`) into `pa`, row-major `m_pad × kp`, zero-padded.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
unsafe fn pack_a(pa: &mut [u16], a: Mat<'_>, kp: usize) {
    let (m, k) = (a.rows, a.cols);
    let (rs, cs) = (a.row_stride as usize, a.col_stride as usize);
    if a.col_stride == 1 {
        pa.par_chunks_mut(kp).enumerate().for_each(|(i, row)| {
            if i < m {
                convert(&mut row[..k], &a.data[i * rs..][..k]);
                row[k..].fill(0);
            } else {
                row.fill(0);
            }
        });
        return;
    }
    // Stored transposed (`dyᵀ` of a weight gradient): read 32 source columns at a time
    // along each source row, which are contiguous when the row stride is 1.
    pa.par_chunks_mut(BLOCK * kp)
        .enumerate()
        .for_each(|(mb, rows)| {
            rows.fill(0);
            let m0 = mb * BLOCK;
            let here = BLOCK.min(m.saturating_sub(m0));
            for kk in 0..k {
                for r in 0..here {
                    rows[r * kp + kk] = to_bf16(a.data[(m0 + r) * rs + kk * cs]);
                }
            }
        });
}

/// Rounds `b` (`k × n`) into `pb`, `kp/2 × n_pad` pairs, zero-padded.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
unsafe fn pack_b(pb: &mut [u32], b: Mat<'_>, n_pad: usize) {
    let (k, n) = (b.rows, b.cols);
    let (rs, cs) = (b.row_stride as usize, b.col_stride as usize);
    pb.par_chunks_mut(n_pad).enumerate().for_each(|(p, row)| {
        let (k0, k1) = (2 * p, 2 * p + 1);
        if k0 >= k {
            row.fill(0);
            return;
        }
        if b.col_stride == 1 {
            let lo = &b.data[k0 * rs..][..n];
            if k1 < k {
                let hi = &b.data[k1 * rs..][..n];
                for ((d, &l), &h) in row.iter_mut().zip(lo).zip(hi) {
                    *d = pair(l, h);
                }
            } else {
                for (d, &l) in row.iter_mut().zip(lo) {
                    *d = pair(l, 0.0);
                }
            }
        } else {
            for (j, d) in row[..n].iter_mut().enumerate() {
                let l = b.data[k0 * rs + j * cs];
                let h = if k1 < k {
                    b.data[k1 * rs + j * cs]
                } else {
                    0.0
                };
                *d = pair(l, h);
            }
        }
        row[n..].fill(0);
    });
}

/// Two values as one bf16 pair, the even-`k` one in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

#[inline(always)]
fn convert(dst: &mut [u16], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = to_bf16(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // Just above halfway rounds up.
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        // 1 + 3·2^-8 is halfway between two odd-even neighbours: up to the even one.
        assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
        for x in [0.0f32, 1.5, -3.25, 2f32.powi(-100), 65536.0] {
            assert_eq!(from_bf16(to_bf16(x)), x);
        }
    }
}
