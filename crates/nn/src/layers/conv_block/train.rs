//! Training kernels for a direct block (few input channels, ReLU, 2×2 max pool: a
//! network's first layer), in place of the plain layers' im2col matrix, full-size output
//! and separate pooling passes, which cost that layer more than its arithmetic.
//!
//! Forward computes each pooling window's four convolution outputs in registers, as
//! inference does (the same values, bit for bit), and keeps only which of the four won
//! the pool. Backward sums the weight and bias gradients from the winners alone, over
//! fixed runs of images ([`IMAGES_PER_PART`]) added in order, so that the result depends
//! on neither the thread count nor the instruction set: every copy uses fused
//! multiply-adds (a library call where the CPU lacks them, slower but the same bits).

use super::direct::{one_channel_outputs, outputs};
use super::tiles::{LANES, Pass, head};

/// Images per part of the weight gradient: parts are summed in order, whatever the
/// number of threads.
pub(super) const IMAGES_PER_PART: usize = 4;

/// `a · b + c`, rounded once.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// The pooled, rectified outputs (`k` per tile, in tile order, into `out`) of the tiles
/// from tile `first` on, and for each the window position (0–3, row by row) of the first
/// maximum of the four convolution outputs (into `won`). `p.w` as
/// [`super::direct::arrange_weights`]; `patch` holds `16·c` values.
#[inline(always)]
pub(super) fn forward(p: &Pass, first: usize, out: &mut [f32], won: &mut [u8], patch: &mut [f32]) {
    let (t, kp, c) = (p.t, p.t.padded_filters(), p.t.c);
    // Output channels outermost: with one input channel, a block's nine weights stay in
    // registers while the tiles pass under them.
    for k0 in (0..kp).step_by(LANES) {
        let bias: [f32; LANES] = *head(&p.bias[k0..]);
        let n = LANES.min(t.k - k0);
        // One input channel: the block's nine weights, loaded once.
        let mut w1 = [[0.0f32; LANES]; 9];
        if c == 1 {
            for (tap, w) in w1.iter_mut().enumerate() {
                *w = *head(&p.w[tap * kp + k0..]);
            }
        }
        for (r, (out, won)) in out
            .chunks_exact_mut(t.k)
            .zip(won.chunks_exact_mut(t.k))
            .enumerate()
        {
            t.gather(p.x, first + r, patch);
            // Inference's arithmetic, with fused multiply-adds on every CPU.
            let acc = if c == 1 {
                one_channel_outputs::<true>(&w1, patch)
            } else {
                outputs::<true>(p, &patch[..16 * c], k0)
            };
            // The plain layers' comparisons: the first strictly greater value wins.
            // (Fresh arrays by value at each stage keep them in registers.)
            let (best, at) = first_max(acc, bias);
            let mut at8 = [0u8; LANES];
            for (w, &a) in at8.iter_mut().zip(&at) {
                *w = a as u8;
            }
            if let (Some(o), Some(w)) = (
                out[k0..].first_chunk_mut::<LANES>(),
                won[k0..].first_chunk_mut::<LANES>(),
            ) {
                (*o, *w) = (best, at8);
            } else {
                out[k0..k0 + n].copy_from_slice(&best[..n]);
                won[k0..k0 + n].copy_from_slice(&at8[..n]);
            }
        }
    }
}

/// The rectified maximum over the four outputs `acc` (plus `bias`) of each lane, and
/// which of them was the first maximum.
#[inline(always)]
pub(super) fn first_max<const N: usize>(
    acc: [[f32; N]; 4],
    bias: [f32; N],
) -> ([f32; N], [u32; N]) {
    let mut best = [0.0f32; N];
    for l in 0..N {
        best[l] = acc[0][l] + bias[l];
    }
    let mut at = [0u32; N];
    for (q, acc) in acc.iter().enumerate().skip(1) {
        let (mut next, mut next_at) = ([0.0f32; N], [0u32; N]);
        for l in 0..N {
            let v = acc[l] + bias[l];
            let wins = v > best[l];
            next[l] = if wins { v } else { best[l] };
            next_at[l] = if wins { q as u32 } else { at[l] };
        }
        (best, at) = (next, next_at);
    }
    let mut out = [0.0f32; N];
    for l in 0..N {
        out[l] = if best[l] < 0.0 { 0.0 } else { best[l] };
    }
    (out, at)
}

/// Each window position's share of the output gradient for channels `k0..`: the
/// gradient `dy` where the output is positive (else ReLU blocks it), at the position
/// that won, zero at the other three.
#[inline(always)]
pub(super) fn shares(y: &[f32], dy: &[f32], won: &[u8], k0: usize) -> [[f32; LANES]; 4] {
    let mut g = [[0.0f32; LANES]; 4];
    let (mut yv, mut gv, mut wv) = ([0.0f32; LANES], [0.0f32; LANES], [0u8; LANES]);
    if let (Some(a), Some(b), Some(c)) = (
        y[k0..].first_chunk(),
        dy[k0..].first_chunk(),
        won[k0..].first_chunk(),
    ) {
        // A whole block: vector loads (lane by lane stores read back as a vector would
        // stall on store forwarding).
        (yv, gv, wv) = (*a, *b, *c);
    } else {
        let n = y.len() - k0;
        yv[..n].copy_from_slice(&y[k0..]);
        gv[..n].copy_from_slice(&dy[k0..]);
        wv[..n].copy_from_slice(&won[k0..]);
    }
    for (q, g) in g.iter_mut().enumerate() {
        for l in 0..LANES {
            g[l] = if yv[l] > 0.0 && usize::from(wv[l]) == q {
                gv[l]
            } else {
                0.0
            };
        }
    }
    g
}

/// Adds the weight gradient (into `dw`, laid out as the arranged weights: `[9·c, kp]`)
/// and the bias gradient (into `db`, `kp`) of the tiles from tile `first` on, whose
/// outputs, gradients and winners are `y`, `dy` and `won` (`k` per tile).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn weight_grads(
    p: &Pass,
    first: usize,
    y: &[f32],
    dy: &[f32],
    won: &[u8],
    dw: &mut [f32],
    db: &mut [f32],
    patch: &mut [f32],
) {
    let (t, kp, c) = (p.t, p.t.padded_filters(), p.t.c);
    if c == 1 {
        return weight_grads_one_channel(p, first, y, dy, won, dw, db, patch);
    }
    for (r, ((y, dy), won)) in y
        .chunks_exact(t.k)
        .zip(dy.chunks_exact(t.k))
        .zip(won.chunks_exact(t.k))
        .enumerate()
    {
        t.gather(p.x, first + r, patch);
        let patch = &patch[..16 * c];
        for k0 in (0..kp).step_by(LANES) {
            let g = shares(y, dy, won, k0);
            let b: &mut [f32; LANES] = head_mut(&mut db[k0..]);
            for g in &g {
                for (s, &g) in b.iter_mut().zip(g) {
                    *s += g;
                }
            }
            for tap in 0..9 {
                let at = (tap / 3 * 4 + tap % 3) * c;
                for ch in 0..c {
                    let a = [
                        patch[at + ch],
                        patch[at + c + ch],
                        patch[at + 4 * c + ch],
                        patch[at + 5 * c + ch],
                    ];
                    let row: &mut [f32; LANES] = head_mut(&mut dw[(tap * c + ch) * kp + k0..]);
                    for (g, &a) in g.iter().zip(&a) {
                        for (s, &g) in row.iter_mut().zip(g) {
                            *s = fma(a, g, *s);
                        }
                    }
                }
            }
        }
    }
}

/// [`weight_grads`] for one input channel: a block of output channels' nine tap
/// gradients stay in registers while every tile passes under them, then are added to
/// `dw`. Each value's sum runs over the tiles in the same order as in [`weight_grads`],
/// but from zero rather than from `dw`'s value, which is then added.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn weight_grads_one_channel(
    p: &Pass,
    first: usize,
    y: &[f32],
    dy: &[f32],
    won: &[u8],
    dw: &mut [f32],
    db: &mut [f32],
    patch: &mut [f32],
) {
    let (t, kp) = (p.t, p.t.padded_filters());
    for k0 in (0..kp).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; 9];
        let mut bias = [0.0f32; LANES];
        for (r, ((y, dy), won)) in y
            .chunks_exact(t.k)
            .zip(dy.chunks_exact(t.k))
            .zip(won.chunks_exact(t.k))
            .enumerate()
        {
            t.gather(p.x, first + r, patch);
            let g = shares(y, dy, won, k0);
            for g in &g {
                for (s, &g) in bias.iter_mut().zip(g) {
                    *s += g;
                }
            }
            for (tap, acc) in acc.iter_mut().enumerate() {
                let at = tap / 3 * 4 + tap % 3;
                let a = [patch[at], patch[at + 1], patch[at + 4], patch[at + 5]];
                for (g, &a) in g.iter().zip(&a) {
                    for (s, &g) in acc.iter_mut().zip(g) {
                        *s = fma(a, g, *s);
                    }
                }
            }
        }
        for (tap, acc) in acc.iter().enumerate() {
            let row: &mut [f32; LANES] = head_mut(&mut dw[tap * kp + k0..]);
            for (d, &v) in row.iter_mut().zip(acc) {
                *d += v;
            }
        }
        let b: &mut [f32; LANES] = head_mut(&mut db[k0..]);
        for (d, &v) in b.iter_mut().zip(&bias) {
            *d += v;
        }
    }
}

/// The input gradient of one image (`dx`, `[h, w, c]`, overwritten) whose tiles'
/// outputs, gradients and winners are `y`, `dy` and `won`; `w` are the arranged weights.
pub(super) fn input_grad(p: &Pass, y: &[f32], dy: &[f32], won: &[u8], dx: &mut [f32]) {
    let (t, kp, c) = (p.t, p.t.padded_filters(), p.t.c);
    dx.fill(0.0);
    for (r, ((y, dy), won)) in y
        .chunks_exact(t.k)
        .zip(dy.chunks_exact(t.k))
        .zip(won.chunks_exact(t.k))
        .enumerate()
    {
        let (ty, tx) = (r / t.tw, r % t.tw);
        for k0 in (0..kp).step_by(LANES) {
            let g = shares(y, dy, won, k0);
            for (q, g) in g.iter().enumerate() {
                if g.iter().all(|&v| v == 0.0) {
                    continue;
                }
                // Convolution output (oy, ox) reads input (oy + ky − pad, ox + kx − pad).
                let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                for tap in 0..9 {
                    let iy = (oy + tap / 3).wrapping_sub(t.pad);
                    let ix = (ox + tap % 3).wrapping_sub(t.pad);
                    if iy >= t.h || ix >= t.w {
                        continue;
                    }
                    let d = &mut dx[(iy * t.w + ix) * c..][..c];
                    for (ch, d) in d.iter_mut().enumerate() {
                        let w: &[f32; LANES] = head(&p.w[(tap * c + ch) * kp + k0..]);
                        let mut s = *d;
                        for (&g, &w) in g.iter().zip(w) {
                            s = fma(g, w, s);
                        }
                        *d = s;
                    }
                }
            }
        }
    }
}

/// The first `N` values of `s` as an array, for change.
#[inline(always)]
pub(super) fn head_mut<const N: usize>(s: &mut [f32]) -> &mut [f32; N] {
    match s.first_chunk_mut() {
        Some(a) => a,
        None => panic!("fewer than {N} values"),
    }
}
