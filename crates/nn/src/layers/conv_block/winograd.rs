//! Winograd's F(2×2, 3×3) convolution, fused with ReLU and 2×2 max pooling.
//!
//! A 2×2 block of 3×3-convolution outputs from a 4×4 input window `d` and kernel `g` is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray, 2015), with
//!
//! ```text
//!      ⎡1  0 -1  0⎤        ⎡ 1    0    0 ⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢1/2  1/2  1/2⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 -1  1  0⎥        ⎢1/2 -1/2  1/2⎥         ⎣0  1 -1 -1⎦
//!      ⎣0  1  0 -1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! Summed over input channels, the 16 element-wise products become 16 matrix products
//! `M[ξ] = V[ξ] · U[ξ]` (tiles × input channels times input × output channels): 16
//! multiply-adds per channel pair and output block where the plain convolution needs 36.
//! The 2×2 block is exactly one max-pool window, so the output transform ends in the
//! pooled value and the convolution's output is never stored.
//!
//! Tiles are processed in groups: transform the group's windows (`V`, in L1), multiply
//! (`M`, in L1), transform back and pool. Each tile's arithmetic is the same whatever its
//! group, batch or thread, so an image's result does not depend on them.

// The transforms index rows and columns as the matrix formulas above do.
#![allow(clippy::needless_range_loop)]

use super::tiles::{LANES, Pass, Tiles, fmadd, head, pool_relu, relu};
use crate::copy::copy_row;

/// Channels per block in the transforms (one AVX-512 register).
pub(super) const BLOCK: usize = 16;

/// Fills `u` with the transformed weights `U[ξ][c][k] = (G g Gᵀ)[ξ]` for the kernel
/// `g = w[k, :, :, c]` of `w` (`[k, 3, 3, c]`), output channels padded with zeros to
/// [`Tiles::padded_filters`]. Computed in f64 and rounded once.
pub(super) fn transform_weights(t: &Tiles, w: &[f32], u: &mut Vec<f32>) {
    let (c, kp) = (t.c, t.padded_filters());
    u.clear();
    u.resize(16 * c * kp, 0.0);
    for k in 0..t.k {
        for ch in 0..c {
            let g = |i: usize, j: usize| w[((k * 3 + i) * 3 + j) * c + ch] as f64;
            // G·g: 4×3.
            let mut gg = [[0.0f64; 3]; 4];
            for j in 0..3 {
                gg[0][j] = g(0, j);
                gg[1][j] = 0.5 * (g(0, j) + g(1, j) + g(2, j));
                gg[2][j] = 0.5 * (g(0, j) - g(1, j) + g(2, j));
                gg[3][j] = g(2, j);
            }
            // (G·g)·Gᵀ: 4×4.
            for (i, r) in gg.iter().enumerate() {
                let row = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                for (j, &v) in row.iter().enumerate() {
                    u[((i * 4 + j) * c + ch) * kp + k] = v as f32;
                }
            }
        }
    }
}

/// Workspace values for groups of `group` tiles: `V`, `M` and one gathered window.
pub(super) fn workspace_len(t: &Tiles, group: usize) -> usize {
    windows_len(t.c, group) + group * 16 * t.padded_filters() + 16 * t.c
}

/// `Bᵀ d B` for a block of channels: `d` and the result are 4×4 grids, row by row.
#[inline(always)]
fn input_transform(d: &[[f32; BLOCK]; 16]) -> [[f32; BLOCK]; 16] {
    let mut t = [[0.0; BLOCK]; 16];
    let mut v = [[0.0; BLOCK]; 16];
    for j in 0..4 {
        for l in 0..BLOCK {
            let (d0, d1, d2, d3) = (d[j][l], d[4 + j][l], d[8 + j][l], d[12 + j][l]);
            t[j][l] = d0 - d2;
            t[4 + j][l] = d1 + d2;
            t[8 + j][l] = d2 - d1;
            t[12 + j][l] = d1 - d3;
        }
    }
    for i in 0..4 {
        for l in 0..BLOCK {
            let (t0, t1, t2, t3) = (
                t[4 * i][l],
                t[4 * i + 1][l],
                t[4 * i + 2][l],
                t[4 * i + 3][l],
            );
            v[4 * i][l] = t0 - t2;
            v[4 * i + 1][l] = t1 + t2;
            v[4 * i + 2][l] = t2 - t1;
            v[4 * i + 3][l] = t1 - t3;
        }
    }
    v
}

/// The 2×2 block of convolution outputs, row by row, of the channels from `k0` on (a
/// block) of one tile whose transformed products `mr` holds (`M[ξ][k]`, rows `kp` apart).
#[inline(always)]
pub(super) fn block_outputs(mr: &[f32], kp: usize, k0: usize) -> [[f32; BLOCK]; 4] {
    let mut mb = [[0.0; BLOCK]; 16];
    for (xi, mb) in mb.iter_mut().enumerate() {
        *mb = *head::<BLOCK>(&mr[xi * kp + k0..]);
    }
    output_transform_block(&mb)
}

/// `Aᵀ m A` for a block of channels: `m` the 16 transformed products, the result the
/// 2×2 block of convolution outputs, row by row.
#[inline(always)]
fn output_transform_block(m: &[[f32; BLOCK]; 16]) -> [[f32; BLOCK]; 4] {
    let mut s = [[[0.0; BLOCK]; 4]; 2];
    for j in 0..4 {
        for l in 0..BLOCK {
            s[0][j][l] = m[j][l] + m[4 + j][l] + m[8 + j][l];
            s[1][j][l] = m[4 + j][l] - m[8 + j][l] - m[12 + j][l];
        }
    }
    let mut y = [[0.0; BLOCK]; 4];
    for l in 0..BLOCK {
        y[0][l] = s[0][0][l] + s[0][1][l] + s[0][2][l];
        y[1][l] = s[0][1][l] - s[0][2][l] - s[0][3][l];
        y[2][l] = s[1][0][l] + s[1][1][l] + s[1][2][l];
        y[3][l] = s[1][1][l] - s[1][2][l] - s[1][3][l];
    }
    y
}

/// Results for the `out.len() /` [`Tiles::tile_values`] tiles (at most `R`) from tile
/// `first` on: each tile's pooled output or its 2×2 block of outputs, all rectified, in
/// `out` one after the other. `p.w` as [`transform_weights`]; `ws` of
/// [`workspace_len`]`(t, R)`.
#[inline(always)]
pub(super) fn group<const R: usize, const FMA: bool>(
    p: &Pass,
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    let tiles = out.len() / p.t.tile_values();
    let at = transformed_products::<R, FMA>(p, first, tiles, ws);
    finish::<R>(p, &ws[at..], out);
}

/// The end of [`group`]: the tiles' transformed products `m` (`M[r][ξ][k]`) back to 2×2
/// blocks, then bias, ReLU and the max pool if any, into `out`.
#[inline(always)]
pub(super) fn finish<const R: usize>(p: &Pass, m: &[f32], out: &mut [f32]) {
    let (t, bias) = (p.t, p.bias);
    let kp = t.padded_filters();
    // A block of channels at a time (`kp` is a whole number of lane blocks, so every
    // block can be read in full).
    for (r, out) in out.chunks_exact_mut(t.tile_values()).take(R).enumerate() {
        let mr = &m[r * 16 * kp..][..16 * kp];
        for k0 in (0..t.k).step_by(BLOCK) {
            let b = head::<BLOCK>(&bias[k0..]);
            let y = block_outputs(mr, kp, k0);
            let mut o = [[0.0; BLOCK]; 4];
            for l in 0..BLOCK {
                let y = [y[0][l], y[1][l], y[2][l], y[3][l]];
                if t.pool {
                    o[0][l] = pool_relu(y, b[l]);
                } else {
                    for (o, &y) in o.iter_mut().zip(&y) {
                        o[l] = relu(y, b[l]);
                    }
                }
            }
            let n = BLOCK.min(t.k - k0);
            for (q, o) in o.iter().take(t.tile_values() / t.k).enumerate() {
                copy_row(&mut out[q * t.k + k0..][..n], &o[..n]);
            }
        }
    }
}

/// The transformed products `M[r][ξ][k]` (`16·kp` values per tile, in `ws`'s `M` part,
/// which starts at the returned offset) of the `tiles` tiles (at most `R`) from tile
/// `first` on. `p.w` as [`transform_weights`]; `ws` of [`workspace_len`]`(t, R)`.
#[inline(always)]
pub(super) fn transformed_products<const R: usize, const FMA: bool>(
    p: &Pass,
    first: usize,
    tiles: usize,
    ws: &mut [f32],
) -> usize {
    let (t, u) = (p.t, p.w);
    let (c, kp) = (t.c, t.padded_filters());
    let (v, rest) = ws.split_at_mut(windows_len(c, R));
    let (m, patch) = rest.split_at_mut(R * 16 * kp);
    transform_windows::<R>(p, first, tiles, v, patch);

    // M[r][ξ][k] = Σ_c V[ξ][c][r] · U[ξ][c][k], one block of LANES output channels at a time
    // with R × LANES accumulators in registers.
    let blocks = c.div_ceil(BLOCK);
    for xi in 0..16 {
        let ux = &u[xi * c * kp..][..c * kp];
        for k0 in (0..kp).step_by(LANES) {
            let mut acc = [[0.0f32; LANES]; R];
            for ch in 0..c {
                let (b, l) = (ch / BLOCK, ch % BLOCK);
                let panel = panel::<R>(&v[(xi * blocks + b) * R * BLOCK..]);
                // (The weights by value: a reference would leave the accumulators in
                // memory.)
                let w: [f32; LANES] = *head(&ux[ch * kp + k0..]);
                for (acc, a) in acc.iter_mut().zip(panel) {
                    let a = a[l];
                    for (s, &w) in acc.iter_mut().zip(&w) {
                        *s = fmadd::<FMA>(a, w, *s);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                copy_row(&mut m[(r * 16 + xi) * kp + k0..][..LANES], acc);
            }
        }
    }
    windows_len(c, R)
}

/// The `R` rows of `BLOCK` values at the start of `s` (a panel of [`transform_windows`]).
#[inline(always)]
pub(super) fn panel<const R: usize>(s: &[f32]) -> &[[f32; BLOCK]; R] {
    match s.as_chunks::<BLOCK>().0.first_chunk::<R>() {
        Some(p) => p,
        None => panic!("fewer than {R} rows"),
    }
}

/// Values of the transformed windows of `R` tiles (see [`transform_windows`]).
pub(super) fn windows_len(c: usize, r: usize) -> usize {
    16 * c.div_ceil(BLOCK) * r * BLOCK
}

/// The transformed input windows `V[ξ][c][r] = (Bᵀ d B)[ξ]` (into `v`, of
/// [`windows_len`]) of the `tiles` tiles (at most `R`) from tile `first` on, in panels:
/// `v[ξ][c / BLOCK][r][c % BLOCK]`, channels padded with zeros to whole blocks, so that
/// a channel's values for the `R` tiles lie a fixed step apart (the products broadcast
/// them from one base). Missing tiles of a last, short group are zeros. `patch` holds
/// `16·c` values.
#[inline(always)]
pub(super) fn transform_windows<const R: usize>(
    p: &Pass,
    first: usize,
    tiles: usize,
    v: &mut [f32],
    patch: &mut [f32],
) {
    let (t, c) = (p.t, p.t.c);
    let blocks = c.div_ceil(BLOCK);
    for r in 0..R {
        if r >= tiles {
            for xi in 0..16 {
                for b in 0..blocks {
                    v[((xi * blocks + b) * R + r) * BLOCK..][..BLOCK].fill(0.0);
                }
            }
            continue;
        }
        // The window in place where it lies inside the image, else gathered.
        let (src, row) = match t.window_at(first + r) {
            Some(at) => (&p.x[at..], t.w * c),
            None => {
                t.gather(p.x, first + r, patch);
                (&patch[..], 4 * c)
            }
        };
        for (b, c0) in (0..c).step_by(BLOCK).enumerate() {
            let n = BLOCK.min(c - c0);
            // (Plain loops here and below rather than `array::map` or `from_fn`, whose
            // closures the compiler does not always inline, leaving registers in memory.)
            let mut d = [[0.0; BLOCK]; 16];
            for (i, di) in d.iter_mut().enumerate() {
                let px = &src[(i / 4) * row + (i % 4) * c + c0..];
                if n == BLOCK {
                    *di = *head::<BLOCK>(px);
                } else {
                    // The last, partial block of channels: padded with zeros.
                    di[..n].copy_from_slice(&px[..n]);
                }
            }
            let tv = input_transform(&d);
            for (xi, tv) in tv.iter().enumerate() {
                copy_row(&mut v[((xi * blocks + b) * R + r) * BLOCK..][..BLOCK], tv);
            }
        }
    }
}
