//! The one-channel direct kernel (a network's first layer: 3×3 convolution, ReLU, 2×2 max
//! pool) for inference in bf16 on AVX512-BF16. In fp32 ([`super::direct`]) each of a
//! tile's four outputs takes nine multiply-adds per 16 output channels; `vdpbf16ps` takes
//! two taps at once, so five instructions do: the input pixels and weights are rounded to
//! bf16 (nearest even) and each output sums its products in fp32. The taps are paired
//! where the window holds them side by side in memory: the first two of each row (read
//! from the window row by row), the last of the first two rows (read column by column),
//! and the last tap alone, its partner's weight zero. Bias, ReLU and the pool stay fp32.

use std::arch::x86_64::*;

use super::tiles::{LANES, Pass, Tiles, head};
use crate::matmul::bf16::to_bf16;

/// The taps (`3·ky + kx`) of each pair, the second `None` for the last tap alone.
const TAP_PAIRS: [(usize, Option<usize>); 5] = [
    (0, Some(1)),
    (3, Some(4)),
    (6, Some(7)),
    (2, Some(5)),
    (8, None),
];

/// The weights as bf16 tap pairs: `[k / LANES][pair][LANES]` (output channels padded
/// with zeros to [`Tiles::padded_filters`]).
#[derive(Default)]
pub(super) struct Weights {
    pairs: Vec<u32>,
}

impl Weights {
    /// Packs the weights `w` as [`super::direct::arrange_weights`] lays them out for one
    /// input channel (`[3·3][kp]`).
    pub(super) fn pack(&mut self, t: &Tiles, w: &[f32]) {
        let kp = t.padded_filters();
        self.pairs.clear();
        for k0 in (0..kp).step_by(LANES) {
            for (a, b) in TAP_PAIRS {
                for k in k0..k0 + LANES {
                    let lo = to_bf16(w[a * kp + k]);
                    let hi = b.map_or(0, |b| to_bf16(w[b * kp + k]));
                    self.pairs.push(u32::from(lo) | (u32::from(hi) << 16));
                }
            }
        }
    }
}

/// The padded image's side lengths: the input and its zero padding, and room for the
/// reads of the last tile's pairs (a pixel pair to the right or below).
fn padded(t: &Tiles) -> (usize, usize) {
    (
        t.h.max(2 * t.th) + 2 * t.pad + 4,
        t.w.max(2 * t.tw) + 2 * t.pad + 4,
    )
}

/// Workspace values (f32-sized) of [`infer`]: an image rounded to bf16 with its padding,
/// and the same as vertical pairs.
pub(super) fn workspace_len(t: &Tiles) -> usize {
    let (ph, pw) = padded(t);
    (ph * pw).div_ceil(2) + ph * pw
}

/// Pooled outputs for the `out.len() / k` tiles from tile `first` on (whole images, one
/// input channel), as [`super::direct::tiles`] writes them; `ws` of [`workspace_len`].
///
/// Each image is rounded once into a zero-padded bf16 copy (`hp`, row by row) and a copy
/// of vertical pairs (`vp[y][x]` = pixels `(y, x)` and `(y + 1, x)`), so that every pair of
/// taps under an output is one 32-bit read.
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn infer(w: &Weights, p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
    let t = &p.t;
    if out.is_empty() {
        return;
    }
    let per_image = t.per_image();
    let tiles = out.len() / t.k;
    assert!(
        t.c == 1 && t.pool && first.is_multiple_of(per_image) && tiles.is_multiple_of(per_image),
        "whole images of the one-channel pooled kernel"
    );
    let kp = t.padded_filters();
    assert!(w.pairs.len() == kp / LANES * 5 * LANES, "packed weights");
    let (ph, pw) = padded(t);
    assert!(ws.len() >= workspace_len(t), "workspace");
    let (hp_part, vp_part) = ws.split_at_mut((ph * pw).div_ceil(2));
    // SAFETY: f32, u16 and u32 have no invalid bit patterns; u32 has f32's alignment and
    // u16 a smaller one; the lengths are within the parts.
    let (hp, vp) = unsafe {
        (
            std::slice::from_raw_parts_mut(hp_part.as_mut_ptr().cast::<u16>(), ph * pw),
            std::slice::from_raw_parts_mut(vp_part.as_mut_ptr().cast::<u32>(), ph * pw),
        )
    };
    hp.fill(0);
    let size = t.h * t.w;
    for (i, out) in out.chunks_exact_mut(per_image * t.k).enumerate() {
        let image = &p.x[(first / per_image + i) * size..][..size];
        for (y, row) in image.chunks_exact(t.w).enumerate() {
            let dst = &mut hp[(y + t.pad) * pw + t.pad..][..t.w];
            for (d, v) in dst.chunks_mut(16).zip(row.chunks(16)) {
                // SAFETY: AVX-512 as the caller promises; the masks keep the reads and
                // writes within `v` and `d` (of one length, at most 16).
                unsafe {
                    let mask = (1u32 << v.len()) - 1;
                    let x = _mm512_maskz_loadu_ps(mask as u16, v.as_ptr());
                    let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
                    _mm256_mask_storeu_epi16(d.as_mut_ptr().cast(), mask as u16, b);
                }
            }
        }
        for (i, v) in vp[..(ph - 1) * pw].iter_mut().enumerate() {
            *v = u32::from(hp[i]) | (u32::from(hp[i + pw]) << 16);
        }
        for (tile, out) in out.chunks_exact_mut(t.k).enumerate() {
            let (cy, cx) = (2 * (tile / t.tw), 2 * (tile % t.tw));
            // SAFETY: AVX-512 as the caller promises; the reads stay within `hp` and
            // `vp` (an output's window ends 3 rows and columns after it, and `padded`
            // leaves room for one more of each), `w.pairs` and the bias (padded to kp).
            unsafe {
                // Where each output's five pairs are read: three rows of `hp`, two
                // columns of `vp`.
                let hrow = |y: usize, x: usize| hp.as_ptr().add(y * pw + x).cast::<u32>();
                let vcol = |y: usize, x: usize| vp.as_ptr().add(y * pw + x);
                let pairs = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(oy, ox)| {
                    let (y, x) = (cy + oy, cx + ox);
                    [
                        hrow(y, x),
                        hrow(y + 1, x),
                        hrow(y + 2, x),
                        vcol(y, x + 2),
                        vcol(y + 2, x + 2),
                    ]
                });
                for (block, k0) in (0..kp).step_by(LANES).enumerate() {
                    let wp = &w.pairs[block * 5 * LANES..][..5 * LANES];
                    // The four outputs' sums side by side: eight independent chains.
                    let mut acc = [[_mm512_setzero_ps(); 2]; 4];
                    for j in 0..5 {
                        let wv = [0, 16].map(|h| {
                            bf16x32(_mm512_loadu_si512(wp[j * LANES + h..].as_ptr().cast()))
                        });
                        for (acc, pairs) in acc.iter_mut().zip(&pairs) {
                            let x = std::ptr::read_unaligned(pairs[j]);
                            let x = bf16x32(_mm512_set1_epi32(x as i32));
                            for (acc, wv) in acc.iter_mut().zip(wv) {
                                *acc = _mm512_dpbf16_ps(*acc, x, wv);
                            }
                        }
                    }
                    let m = [0, 1].map(|h| {
                        let top = _mm512_max_ps(acc[0][h], acc[1][h]);
                        _mm512_max_ps(top, _mm512_max_ps(acc[2][h], acc[3][h]))
                    });
                    let bias: &[f32; LANES] = head(&p.bias[k0..]);
                    let mut o = [0.0f32; LANES];
                    for (h, m) in m.iter().enumerate() {
                        let b = _mm512_loadu_ps(bias[16 * h..].as_ptr());
                        let v = _mm512_max_ps(_mm512_add_ps(*m, b), _mm512_setzero_ps());
                        _mm512_storeu_ps(o[16 * h..].as_mut_ptr(), v);
                    }
                    let n = LANES.min(t.k - k0);
                    out[k0..k0 + n].copy_from_slice(&o[..n]);
                }
            }
        }
    }
}

/// A vector's bits as 32 bf16 values.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16x32(v: __m512i) -> __m512bh {
    // SAFETY: same size, any bits are valid.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}
