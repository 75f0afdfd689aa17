//! Winograd's products in bf16 on AVX512-BF16 (`vdpbf16ps`: two products per lane and
//! instruction, twice fp32's rate): the transformed windows, weights and output
//! gradients are rounded to bf16 (nearest even) and their products summed in fp32. The
//! transforms around them, the bias, ReLU and pool stay fp32, as in [`super::winograd`]
//! and [`super::winograd_train`], whose kernels these products slot into.
//!
//! `vdpbf16ps` multiplies pairs: each 32-bit lane holds two bf16 values adjacent along
//! the sum's dimension. Forward and the input gradient sum over channels, which the fp32
//! panels already hold side by side (rounding them in order pairs channels); the weight
//! gradient sums over tiles, whose rows are interleaved pairwise. Every tile's sums run
//! in a fixed order for this instruction set (groups of [`GROUP`] tiles, a short last
//! group padded with zeros), whatever the thread count.

use std::arch::x86_64::*;

use super::tiles::{LANES, Pass, Tiles};
use super::winograd::{self, BLOCK, transform_windows, windows_len};
use super::winograd_train::{self, OutputGrad, Products, padded_channels};
use crate::matmul::bf16::to_bf16;

/// Tiles per group (an even number: the weight gradient pairs tiles).
pub(super) const GROUP: usize = 12;

/// Pairs in a panel row of [`BLOCK`] values.
const PAIRS: usize = BLOCK / 2;

/// The transformed weights `U` as bf16 pairs: over input channels (`[ξ][c/2][kp]`, for
/// forward) and over output channels (`[ξ][kp/2][cp]`, for the input gradient).
#[derive(Default)]
pub(super) struct Weights {
    over_c: Vec<u32>,
    over_k: Vec<u32>,
}

/// Two values rounded to bf16, `lo` in the low half.
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

impl Weights {
    /// Packs `u` (`[ξ][c][kp]`, as [`winograd::transform_weights`] makes it).
    pub(super) fn pack(&mut self, t: &Tiles, u: &[f32]) {
        let (c, kp, cp) = (t.c, t.padded_filters(), padded_channels(t));
        let cpairs = c.div_ceil(2);
        let at = |xi: usize, ch: usize, k: usize| {
            if ch < c {
                u[(xi * c + ch) * kp + k]
            } else {
                0.0
            }
        };
        self.over_c.clear();
        for xi in 0..16 {
            for j in 0..cpairs {
                for k in 0..kp {
                    self.over_c
                        .push(pair(at(xi, 2 * j, k), at(xi, 2 * j + 1, k)));
                }
            }
        }
        self.over_k.clear();
        for xi in 0..16 {
            for j in 0..kp / 2 {
                for ch in 0..cp {
                    self.over_k
                        .push(pair(at(xi, ch, 2 * j), at(xi, ch, 2 * j + 1)));
                }
            }
        }
    }
}

/// bf16 workspace values (`u32` pairs) for groups of [`GROUP`] tiles: the rounded
/// windows (either pairing) and the rounded output gradients (both pairings).
pub(super) fn scratch_len(t: &Tiles) -> usize {
    windows_len(t.c, GROUP) / 2 + 16 * GROUP * t.padded_filters()
}

/// The 32 bf16 values of `v`'s bits.
#[inline(always)]
fn bf16x32(v: __m512i) -> __m512bh {
    // SAFETY: both are 64 bytes of plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// The bits of 32 bf16 values.
#[inline(always)]
fn bits(v: __m512bh) -> __m512i {
    // SAFETY: both are 64 bytes of plain bits.
    unsafe { std::mem::transmute::<__m512bh, __m512i>(v) }
}

/// `dst[i] = (src[2i], src[2i+1])` rounded to bf16, for `src` a whole number of
/// 32-value pieces.
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn round_pairs(dst: &mut [u32], src: &[f32]) {
    assert!(
        src.len().is_multiple_of(32) && dst.len() * 2 >= src.len(),
        "round_pairs sizes"
    );
    for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(32)) {
        // SAFETY: 16 u32 and 32 f32 in bounds (chunks).
        unsafe {
            let lo = _mm512_loadu_ps(s.as_ptr());
            let hi = _mm512_loadu_ps(s.as_ptr().add(16));
            let v = bits(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(d.as_mut_ptr().cast(), v);
        }
    }
}

/// Rows `a` and `b` (16 values each) rounded to bf16 and interleaved: lane `i` holds
/// `(a[i], b[i])`.
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16; 16 values at each pointer.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave(a: *const f32, b: *const f32) -> __m512i {
    // Word i of the rounded pair is a[i] for i < 16, b[i − 16] above: take 0, 16, 1, 17, …
    const ORDER: [i16; 32] = {
        let mut o = [0i16; 32];
        let mut i = 0;
        while i < 16 {
            o[2 * i] = i as i16;
            o[2 * i + 1] = i as i16 + 16;
            i += 1;
        }
        o
    };
    // SAFETY: the caller's.
    unsafe {
        let both: __m512i = bits(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(b), _mm512_loadu_ps(a)));
        let order = _mm512_loadu_si512(ORDER.as_ptr().cast());
        _mm512_permutexvar_epi16(order, both)
    }
}

/// `out[r][ξ][n] = Σ_j a[ξ][j][r] · b[ξ][j][n]` over `pairs` pairs `j`, for the `R`
/// rows of the group: `a` in pair panels (`[ξ][j / PAIRS][r][j % PAIRS]`, `blocks`
/// panels per ξ), `b` as `[ξ][b_pairs][n]`, `n` a multiple of [`LANES`].
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn products<const R: usize>(
    a: &[u32],
    blocks: usize,
    pairs: usize,
    b: &[u32],
    b_pairs: usize,
    n: usize,
    out: &mut [f32],
) {
    assert!(
        pairs <= blocks * PAIRS
            && pairs <= b_pairs
            && n.is_multiple_of(LANES)
            && a.len() >= 16 * blocks * R * PAIRS
            && b.len() >= 16 * b_pairs * n
            && out.len() >= R * 16 * n,
        "products sizes"
    );
    for xi in 0..16 {
        for n0 in (0..n).step_by(LANES) {
            // SAFETY: every index below is within the sizes asserted above.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for j in 0..pairs {
                    let w = b.as_ptr().add((xi * b_pairs + j) * n + n0);
                    let w0 = bf16x32(_mm512_loadu_si512(w.cast()));
                    let w1 = bf16x32(_mm512_loadu_si512(w.add(16).cast()));
                    let panel = a
                        .as_ptr()
                        .add((xi * blocks + j / PAIRS) * R * PAIRS + j % PAIRS);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = bf16x32(_mm512_set1_epi32(*panel.add(r * PAIRS) as i32));
                        acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let o = out.as_mut_ptr().add((r * 16 + xi) * n + n0);
                    _mm512_storeu_ps(o, acc[0]);
                    _mm512_storeu_ps(o.add(16), acc[1]);
                }
            }
        }
    }
}

/// `du[ξ][ch][k] += Σ_q v[ξ][ch / BLOCK][q][ch % BLOCK] · g[ξ][q][k]` over the `R / 2`
/// tile pairs `q` (`v` and `g` pairs of tiles), `k` in `kp` lanes.
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn weight_products<const R: usize>(
    v: &[u32],
    c: usize,
    g: &[u32],
    kp: usize,
    du: &mut [f32],
) {
    let (blocks, half) = (c.div_ceil(BLOCK), R / 2);
    assert!(
        kp.is_multiple_of(LANES)
            && v.len() >= 16 * blocks * half * BLOCK
            && g.len() >= 16 * half * kp
            && du.len() >= 16 * c * kp,
        "weight_products sizes"
    );
    for xi in 0..16 {
        for k0 in (0..kp).step_by(LANES) {
            // SAFETY: every index below is within the sizes asserted above.
            unsafe {
                let zero = _mm512_setzero_si512();
                let mut gr = [[zero; 2]; 6];
                for (q, gr) in gr.iter_mut().enumerate().take(half) {
                    let p = g.as_ptr().add((xi * half + q) * kp + k0);
                    gr[0] = _mm512_loadu_si512(p.cast());
                    gr[1] = _mm512_loadu_si512(p.add(16).cast());
                }
                for ch in 0..c {
                    let row = du.as_mut_ptr().add((xi * c + ch) * kp + k0);
                    let mut acc = [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16))];
                    let panel = v
                        .as_ptr()
                        .add((xi * blocks + ch / BLOCK) * half * BLOCK + ch % BLOCK);
                    for (q, gr) in gr.iter().enumerate().take(half) {
                        let x = bf16x32(_mm512_set1_epi32(*panel.add(q * BLOCK) as i32));
                        let (g0, g1) = (bf16x32(gr[0]), bf16x32(gr[1]));
                        acc[0] = _mm512_dpbf16_ps(acc[0], x, g0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], x, g1);
                    }
                    _mm512_storeu_ps(row, acc[0]);
                    _mm512_storeu_ps(row.add(16), acc[1]);
                }
            }
        }
    }
}

/// [`Products::weight`] in bf16: `v` and `dm` (fp32 panels) rounded and paired over tiles
/// into `scratch`, then multiplied.
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn weight_step<const R: usize>(
    t: &Tiles,
    v: &[f32],
    dm: &[f32],
    du: &mut [f32],
    scratch: &mut [u32],
) {
    let (c, kp) = (t.c, t.padded_filters());
    let (blocks, kblocks, half) = (c.div_ceil(BLOCK), kp / BLOCK, R / 2);
    let (vp, gp) = scratch.split_at_mut(16 * blocks * half * BLOCK);
    // SAFETY: the caller's; every slice below is cut to the sizes the pointers read.
    unsafe {
        for xi in 0..16 {
            for b in 0..blocks {
                for q in 0..half {
                    let rows = &v[((xi * blocks + b) * R + 2 * q) * BLOCK..][..2 * BLOCK];
                    let pairs = interleave(rows.as_ptr(), rows.as_ptr().add(BLOCK));
                    let d = &mut vp[((xi * blocks + b) * half + q) * BLOCK..][..BLOCK];
                    _mm512_storeu_si512(d.as_mut_ptr().cast(), pairs);
                }
            }
            for kb in 0..kblocks {
                for q in 0..half {
                    let rows = &dm[((xi * kblocks + kb) * R + 2 * q) * BLOCK..][..2 * BLOCK];
                    let pairs = interleave(rows.as_ptr(), rows.as_ptr().add(BLOCK));
                    let d = &mut gp[(xi * half + q) * kp + kb * BLOCK..][..BLOCK];
                    _mm512_storeu_si512(d.as_mut_ptr().cast(), pairs);
                }
            }
        }
        weight_products::<R>(vp, c, gp, kp, du);
    }
}

/// The bf16 products of [`winograd_train::backward`], built only where the CPU runs
/// AVX512-BF16.
pub(super) struct Bf16Products<'a> {
    w: &'a Weights,
}

impl<'a> Bf16Products<'a> {
    /// The products with `w`; `None` on a CPU without AVX512-BF16.
    pub(super) fn new(w: &'a Weights) -> Option<Self> {
        crate::Bf16Isa::Avx512Bf16
            .is_available()
            .then_some(Self { w })
    }
}

impl Products for Bf16Products<'_> {
    #[inline(always)]
    fn forward<const R: usize>(
        &self,
        p: &Pass,
        first: usize,
        tiles: usize,
        ws: &mut [f32],
        scratch: &mut [u32],
    ) -> usize {
        forward_products::<R>(self.w, p, first, tiles, ws, scratch)
    }

    #[inline(always)]
    fn weight<const R: usize>(
        &self,
        t: &Tiles,
        v: &[f32],
        dm: &[f32],
        du: &mut [f32],
        _count: usize,
        scratch: &mut [u32],
    ) {
        // A short group's missing tiles are zeros in `v` and `dm`: with pairs of tiles
        // they are summed like the rest, the same way whatever the thread count.
        // SAFETY: `new` checked that the CPU runs AVX512-BF16 (with AVX-512F and BW).
        unsafe { weight_step::<R>(t, v, dm, du, scratch) }
    }

    #[inline(always)]
    fn input<const R: usize>(&self, t: &Tiles, dm: &[f32], dv: &mut [f32], scratch: &mut [u32]) {
        let (kp, cp) = (t.padded_filters(), padded_channels(t));
        let dmp = &mut scratch[..16 * R * kp / 2];
        // SAFETY: `new` checked that the CPU runs AVX512-BF16 (with AVX-512F and BW).
        unsafe {
            round_pairs(dmp, &dm[..16 * R * kp]);
            products::<R>(
                dmp,
                kp / BLOCK,
                t.k.div_ceil(2),
                &self.w.over_k,
                kp / 2,
                cp,
                dv,
            );
        }
    }
}

/// The transformed products `M[r][ξ][k]` of the `tiles` tiles (at most `R`) from tile
/// `first` on, in bf16: the windows transformed in fp32 (in `ws`'s `V` part, laid out as
/// [`winograd::workspace_len`] says), rounded, and multiplied into `ws`'s `M` part.
/// Returns where `M` starts in `ws`.
#[inline(always)]
fn forward_products<const R: usize>(
    w: &Weights,
    p: &Pass,
    first: usize,
    tiles: usize,
    ws: &mut [f32],
    scratch: &mut [u32],
) -> usize {
    let t = p.t;
    let (c, kp) = (t.c, t.padded_filters());
    let len = windows_len(c, R);
    let (v, rest) = ws.split_at_mut(len);
    let (m, patch) = rest.split_at_mut(R * 16 * kp);
    transform_windows::<R>(p, first, tiles, v, patch);
    let vb = &mut scratch[..len / 2];
    // SAFETY: callers reach this only where the CPU runs AVX512-BF16 (through
    // `Bf16Products::new` or `infer`'s check).
    unsafe {
        round_pairs(vb, v);
        products::<R>(
            vb,
            c.div_ceil(BLOCK),
            c.div_ceil(2),
            &w.over_c,
            c.div_ceil(2),
            kp,
            m,
        );
    }
    len
}

/// [`winograd::group`] with bf16 products, for [`GROUP`] tiles.
///
/// # Safety
/// The CPU runs AVX512-BF16 (with AVX-512F and BW) and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub(super) unsafe fn infer(
    w: &Weights,
    p: &Pass,
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    let tiles = out.len() / p.t.tile_values();
    let at = forward_products::<GROUP>(w, p, first, tiles, ws, scratch);
    winograd::finish::<GROUP>(p, &ws[at..], out);
}

/// [`winograd_train::forward`] with bf16 products, for [`GROUP`] tiles.
///
/// # Safety
/// The CPU runs AVX512-BF16 (with AVX-512F and BW) and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub(super) unsafe fn train_forward(
    prods: &Bf16Products,
    p: &Pass,
    first: usize,
    out: &mut [f32],
    won: &mut [u8],
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    winograd_train::forward::<GROUP, _>(prods, p, first, out, won, ws, scratch);
}

/// [`winograd_train::backward`] with bf16 products, in groups of [`GROUP`] tiles.
///
/// # Safety
/// The CPU runs AVX512-BF16 (with AVX-512F and BW) and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub(super) unsafe fn train_backward(
    prods: &Bf16Products,
    p: &Pass,
    image: usize,
    grad: OutputGrad,
    grads: &mut [f32],
    dx: Option<&mut [f32]>,
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    winograd_train::backward::<GROUP, _>(prods, p, image, grad, grads, dx, ws, scratch);
}

/// [`winograd_train::map_forward`] with bf16 products, for [`GROUP`] tiles.
///
/// # Safety
/// The CPU runs AVX512-BF16 (with AVX-512F and BW) and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub(super) unsafe fn train_map_forward(
    prods: &Bf16Products,
    p: &Pass,
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    winograd_train::map_forward::<GROUP, _>(prods, p, first, out, ws, scratch);
}
