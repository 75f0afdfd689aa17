//! Training kernels for a Winograd block (a 3×3 convolution of many input channels, then
//! ReLU and a 2×2 max pool: `simple`'s second layer) in place of the plain layers, whose
//! im2col products take 36 multiply-adds per channel pair and output block, compute the
//! outputs the pool drops, and write and reread a full-size output and its gradient.
//!
//! Forward is inference's F(2×2, 3×3) pass ([`super::winograd`]), ending as the direct
//! training pass does: the pooled, rectified output, and which of the window's four
//! outputs won. Backward runs the algorithm backwards. With `Gy` a tile's 2×2 output
//! gradient (the pooled gradient at the winner if the output is positive, else zero),
//! the gradient of its transformed products `M[ξ]` is `dM = A Gy Aᵀ`, and then
//!
//! ```text
//! dU[ξ] = Σ_tiles V[ξ]ᵀ · dM[ξ]    dW = Gᵀ dU G          (weights)
//! dV[ξ] = dM[ξ] · U[ξ]ᵀ            dd = B dV Bᵀ          (each 4×4 input window)
//! ```
//!
//! with the windows' gradients summed where they overlap: 16 multiply-adds per channel
//! pair and tile in each product, as forward. The gradients are those of the plain layers
//! up to rounding (the transforms are exact in real arithmetic).
//!
//! Every sum runs in a fixed order: the weight gradient over a part's tiles in order,
//! the parts of [`images_per_part`] images then added in order; the input gradient over
//! output channels, each pixel's windows in tile order. So the result depends on neither
//! the thread count nor the instruction set (every copy uses fused multiply-adds).

// The transforms index rows and columns as the matrix formulas above do.
#![allow(clippy::needless_range_loop)]

use super::tiles::{LANES, Pass, Tiles, head};
use super::train::{first_max, head_mut, shares};
use super::winograd::{
    BLOCK, block_outputs, panel, transform_windows, transformed_products, windows_len,
};
use crate::copy::copy_row;

/// Images per part of the weight gradient (parts are summed in order, whatever the
/// number of threads): at least 8, and enough that a part's transformed gradient
/// (`16·c·kp` values) takes no more per image than the plain layers' im2col matrix
/// (`9·c` values per output position), which the memory budget counts.
pub(super) fn images_per_part(t: &Tiles) -> usize {
    (16 * t.padded_filters())
        .div_ceil((9 * t.oh * t.ow).max(1))
        .max(8)
}

/// `a · b + c`, rounded once.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Input channels rounded up to whole lane blocks (the input gradient's products run
/// over them in lanes).
pub(super) fn padded_channels(t: &Tiles) -> usize {
    t.c.next_multiple_of(LANES)
}

/// Values of a part's gradient: the transformed weight gradient `dU[ξ][c][kp]`, then the
/// bias gradient (`kp`).
pub(super) fn part_values(t: &Tiles) -> usize {
    16 * t.c * t.padded_filters() + t.padded_filters()
}

/// Fills `ut` with `U[ξ]ᵀ` as `[ξ][kp][cp]` (input channels padded with zeros to
/// [`padded_channels`]) from `u` as [`super::winograd::transform_weights`] made it.
pub(super) fn transpose_weights(t: &Tiles, u: &[f32], ut: &mut Vec<f32>) {
    let (c, kp, cp) = (t.c, t.padded_filters(), padded_channels(t));
    ut.clear();
    ut.resize(16 * kp * cp, 0.0);
    for xi in 0..16 {
        for ch in 0..c {
            for k in 0..kp {
                ut[(xi * kp + k) * cp + ch] = u[(xi * c + ch) * kp + k];
            }
        }
    }
}

/// The products in the transformed domain, in fp32 ([`F32Products`]) or bf16
/// ([`super::winograd_bf16`]).
pub(super) trait Products {
    /// The transformed products `M[r][ξ][k]` of the `tiles` tiles (at most `R`) from tile
    /// `first` on, into `ws` (of [`super::winograd::workspace_len`]`(t, R)`) from the
    /// returned offset on.
    fn forward<const R: usize>(
        &self,
        p: &Pass,
        first: usize,
        tiles: usize,
        ws: &mut [f32],
        scratch: &mut [u32],
    ) -> usize;

    /// `dU[ξ][c][k] += Σ_r V[ξ][c][r] · dM[ξ][r][k]` over the first `count` of the group's
    /// `R` tiles (`v` as [`transform_windows`] lays it out, `dm` likewise; both zeros for
    /// missing tiles).
    fn weight<const R: usize>(
        &self,
        t: &Tiles,
        v: &[f32],
        dm: &[f32],
        du: &mut [f32],
        count: usize,
        scratch: &mut [u32],
    );

    /// `dV[r][ξ][c] = Σ_k dM[ξ][r][k] · U[ξ][c][k]` for the group's `R` tiles.
    fn input<const R: usize>(&self, t: &Tiles, dm: &[f32], dv: &mut [f32], scratch: &mut [u32]);
}

/// The fp32 products, with fused multiply-adds on every CPU. `ut` as
/// [`transpose_weights`].
pub(super) struct F32Products<'a> {
    pub ut: &'a [f32],
}

impl Products for F32Products<'_> {
    #[inline(always)]
    fn forward<const R: usize>(
        &self,
        p: &Pass,
        first: usize,
        tiles: usize,
        ws: &mut [f32],
        _: &mut [u32],
    ) -> usize {
        transformed_products::<R, true>(p, first, tiles, ws)
    }

    #[inline(always)]
    fn weight<const R: usize>(
        &self,
        t: &Tiles,
        v: &[f32],
        dm: &[f32],
        du: &mut [f32],
        count: usize,
        _: &mut [u32],
    ) {
        // Only the group's tiles: adding a missing one's zero could turn a −0 into a +0,
        // and groups differ between instruction sets.
        if count == R {
            weight_products::<R>(t, v, dm, du, R);
        } else {
            weight_products::<R>(t, v, dm, du, count);
        }
    }

    #[inline(always)]
    fn input<const R: usize>(&self, t: &Tiles, dm: &[f32], dv: &mut [f32], _: &mut [u32]) {
        let (kp, cp) = (t.padded_filters(), padded_channels(t));
        let kblocks = kp / BLOCK;
        // dV[r][ξ][c] = Σ_k dM[ξ][r][k] · U[ξ][c][k], the output channels in order.
        for xi in 0..16 {
            let utx = &self.ut[xi * kp * cp..][..kp * cp];
            for c0 in (0..cp).step_by(LANES) {
                let mut acc = [[0.0f32; LANES]; R];
                for k in 0..t.k {
                    let (b, l) = (k / BLOCK, k % BLOCK);
                    let panel = panel::<R>(&dm[(xi * kblocks + b) * R * BLOCK..]);
                    let w: [f32; LANES] = *head(&utx[k * cp + c0..]);
                    for (acc, a) in acc.iter_mut().zip(panel) {
                        let a = a[l];
                        for (s, &w) in acc.iter_mut().zip(&w) {
                            *s = fma(a, w, *s);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    copy_row(&mut dv[(r * 16 + xi) * cp + c0..][..LANES], acc);
                }
            }
        }
    }
}

/// The pooled, rectified outputs (`k` per tile, into `out`) of the `out.len() / k` tiles
/// (at most `R`) from tile `first` on, and for each which of its window's four outputs
/// (0–3, row by row) was the first maximum (into `won`). `p.w` as
/// [`super::winograd::transform_weights`]; `ws` of
/// [`super::winograd::workspace_len`]`(t, R)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn forward<const R: usize, P: Products>(
    prods: &P,
    p: &Pass,
    first: usize,
    out: &mut [f32],
    won: &mut [u8],
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    let t = p.t;
    let kp = t.padded_filters();
    let tiles = out.len() / t.k;
    let at = prods.forward::<R>(p, first, tiles, ws, scratch);
    let m = &ws[at..];
    for (r, (out, won)) in out
        .chunks_exact_mut(t.k)
        .zip(won.chunks_exact_mut(t.k))
        .enumerate()
    {
        let mr = &m[r * 16 * kp..][..16 * kp];
        for k0 in (0..t.k).step_by(BLOCK) {
            let y = block_outputs(mr, kp, k0);
            // The plain layers' comparisons, as the direct training pass makes them.
            let (best, at) = first_max(y, *head::<BLOCK>(&p.bias[k0..]));
            let n = BLOCK.min(t.k - k0);
            copy_row(&mut out[k0..k0 + n], &best[..n]);
            for (w, &a) in won[k0..k0 + n].iter_mut().zip(&at) {
                *w = a as u8;
            }
        }
    }
}

/// [`forward`] in fp32.
#[inline(always)]
pub(super) fn forward_f32<const R: usize>(
    p: &Pass,
    first: usize,
    out: &mut [f32],
    won: &mut [u8],
    ws: &mut [f32],
) {
    forward::<R, _>(&F32Products { ut: &[] }, p, first, out, won, ws, &mut []);
}

/// [`backward`] in fp32; `ut` as [`transpose_weights`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn backward_f32<const R: usize>(
    p: &Pass,
    ut: &[f32],
    image: usize,
    grad: OutputGrad,
    grads: &mut [f32],
    dx: Option<&mut [f32]>,
    ws: &mut [f32],
) {
    let prods = F32Products { ut };
    backward::<R, _>(&prods, p, image, grad, grads, dx, ws, &mut []);
}

/// The convolution's outputs (before anything follows it, bias added) of the
/// `out.len() / (4·k)` tiles (at most `R`) from tile `first` on, each tile's 2×2 block
/// row by row, into `out`; `p.t` covers the map (no pool).
#[inline(always)]
pub(super) fn map_forward<const R: usize, P: Products>(
    prods: &P,
    p: &Pass,
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    let t = p.t;
    let kp = t.padded_filters();
    let tiles = out.len() / (4 * t.k);
    let at = prods.forward::<R>(p, first, tiles, ws, scratch);
    let m = &ws[at..];
    for (r, out) in out.chunks_exact_mut(4 * t.k).enumerate() {
        let mr = &m[r * 16 * kp..][..16 * kp];
        for k0 in (0..t.k).step_by(BLOCK) {
            let b = head::<BLOCK>(&p.bias[k0..]);
            let y = block_outputs(mr, kp, k0);
            let mut o = [[0.0; BLOCK]; 4];
            for (o, y) in o.iter_mut().zip(&y) {
                for l in 0..BLOCK {
                    o[l] = y[l] + b[l];
                }
            }
            let n = BLOCK.min(t.k - k0);
            for (q, o) in o.iter().enumerate() {
                copy_row(&mut out[q * t.k + k0..][..n], &o[..n]);
            }
        }
    }
}

/// [`map_forward`] in fp32.
#[inline(always)]
pub(super) fn map_forward_f32<const R: usize>(
    p: &Pass,
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    map_forward::<R, _>(&F32Products { ut: &[] }, p, first, out, ws, &mut []);
}

/// Workspace values of [`backward`] for groups of `r` tiles: `dM` in panels as
/// [`transform_windows`] lays out `V` (`[ξ][k / BLOCK][r][k % BLOCK]`), `V`,
/// `dV[r][ξ][cp]` and one gathered window.
pub(super) fn backward_workspace_len(t: &Tiles, r: usize) -> usize {
    16 * r * (t.padded_filters() + padded_channels(t)) + windows_len(t.c, r) + 16 * t.c
}

/// Where each tile's 2×2 output gradient comes from: the tiles of a part's images.
#[derive(Clone, Copy)]
pub(super) enum OutputGrad<'a> {
    /// A pooled block's outputs, their gradients and winners (`k` per tile): only the
    /// winner of a window with a positive output passes its gradient on.
    Pool {
        y: &'a [f32],
        dy: &'a [f32],
        won: &'a [u8],
    },
    /// The gradient of the convolution's whole output, `[n, oh, ow, k]` (tiles cover the
    /// map; those of an odd map's last row or column reach past it, where it is zero).
    Map { dy: &'a [f32] },
}

impl OutputGrad<'_> {
    /// Tiles it covers.
    pub(super) fn tiles(&self, t: &Tiles) -> usize {
        match *self {
            OutputGrad::Pool { y, .. } => y.len() / t.k,
            OutputGrad::Map { dy } => dy.len() / (t.oh * t.ow * t.k).max(1) * t.per_image(),
        }
    }

    /// The output gradient of tile `r` (of the part) for the output channels from `k0`
    /// on, its four positions row by row (zeros past `k`).
    #[inline(always)]
    fn tile(&self, t: &Tiles, r: usize, k0: usize) -> [[f32; LANES]; 4] {
        match *self {
            OutputGrad::Pool { y, dy, won } => {
                let at = r * t.k..(r + 1) * t.k;
                shares(&y[at.clone()], &dy[at.clone()], &won[at], k0)
            }
            OutputGrad::Map { dy } => {
                let (img, at) = (r / t.per_image(), r % t.per_image());
                let (y0, x0) = (2 * (at / t.tw), 2 * (at % t.tw));
                let n = LANES.min(t.k - k0);
                let mut g = [[0.0f32; LANES]; 4];
                for (q, g) in g.iter_mut().enumerate() {
                    let (oy, ox) = (y0 + q / 2, x0 + q % 2);
                    if oy < t.oh && ox < t.ow {
                        let src = &dy[((img * t.oh + oy) * t.ow + ox) * t.k + k0..];
                        match src.first_chunk::<LANES>() {
                            Some(s) if n == LANES => *g = *s,
                            _ => g[..n].copy_from_slice(&src[..n]),
                        }
                    }
                }
                g
            }
        }
    }
}

/// Adds to `grads` (as [`part_values`]) the weight and bias gradients of the tiles of
/// the images from `image` on whose output gradients `grad` gives, and writes those
/// images' input gradient into `dx` (`[n, h, w, c]`, overwritten) when given. `p.w` as
/// [`super::winograd::transform_weights`]; `ws` of [`backward_workspace_len`]`(t, R)`,
/// `scratch` as `prods` needs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn backward<const R: usize, P: Products>(
    prods: &P,
    p: &Pass,
    image: usize,
    grad: OutputGrad,
    grads: &mut [f32],
    mut dx: Option<&mut [f32]>,
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    let t = p.t;
    if let Some(dx) = dx.as_deref_mut() {
        dx.fill(0.0);
    }
    let tiles = grad.tiles(&t);
    for r in (0..tiles).step_by(R) {
        let count = R.min(tiles - r);
        group_backward::<R, P>(
            prods,
            p,
            image,
            r,
            count,
            grad,
            grads,
            dx.as_deref_mut(),
            ws,
            scratch,
        );
    }
}

/// [`backward`] for the `count` tiles (at most `R`) from the part's tile `r0` on. A
/// short last group is padded with zeros.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn group_backward<const R: usize, P: Products>(
    prods: &P,
    p: &Pass,
    image: usize,
    r0: usize,
    count: usize,
    grad: OutputGrad,
    grads: &mut [f32],
    dx: Option<&mut [f32]>,
    ws: &mut [f32],
    scratch: &mut [u32],
) {
    let t = p.t;
    let (c, kp, cp) = (t.c, t.padded_filters(), padded_channels(&t));
    let (du, db) = grads.split_at_mut(16 * c * kp);
    let (dm, rest) = ws.split_at_mut(16 * R * kp);
    let (v, rest) = rest.split_at_mut(windows_len(c, R));
    let (dv, patch) = rest.split_at_mut(16 * R * cp);

    // dM[ξ][r][k] = (A Gy Aᵀ)[ξ] in panels, and the bias gradient (Gy's sum).
    let kblocks = kp / BLOCK;
    for r in 0..R {
        if r >= count {
            for xi in 0..16 {
                for b in 0..kblocks {
                    dm[((xi * kblocks + b) * R + r) * BLOCK..][..BLOCK].fill(0.0);
                }
            }
            continue;
        }
        for k0 in (0..kp).step_by(LANES) {
            let g = grad.tile(&t, r0 + r, k0);
            let b: &mut [f32; LANES] = head_mut(&mut db[k0..]);
            for g in &g {
                for (s, &g) in b.iter_mut().zip(g) {
                    *s += g;
                }
            }
            // A = [1 0; 1 1; 1 −1; 0 −1]: rows of A·Gy, then their columns times Aᵀ.
            let mut m = [[0.0f32; LANES]; 16];
            for l in 0..LANES {
                let rows = [
                    [g[0][l], g[1][l]],
                    [g[0][l] + g[2][l], g[1][l] + g[3][l]],
                    [g[0][l] - g[2][l], g[1][l] - g[3][l]],
                    [-g[2][l], -g[3][l]],
                ];
                for (i, [a, b]) in rows.into_iter().enumerate() {
                    m[4 * i][l] = a;
                    m[4 * i + 1][l] = a + b;
                    m[4 * i + 2][l] = a - b;
                    m[4 * i + 3][l] = -b;
                }
            }
            for (xi, m) in m.iter().enumerate() {
                for (h, m) in m.chunks_exact(BLOCK).enumerate() {
                    let b = k0 / BLOCK + h;
                    copy_row(&mut dm[((xi * kblocks + b) * R + r) * BLOCK..][..BLOCK], m);
                }
            }
        }
    }

    // dU[ξ][c][k] += Σ_r V[ξ][c][r] · dM[ξ][r][k], the tiles in order.
    let first = image * t.per_image() + r0;
    transform_windows::<R>(p, first, count, v, patch);
    prods.weight::<R>(&t, v, dm, du, count, scratch);

    let Some(dx) = dx else { return };
    prods.input::<R>(&t, dm, dv, scratch);

    // dd = B dV Bᵀ per window, added into the image's gradient where it lies inside.
    let per_image = t.per_image();
    for r in 0..count {
        let tile = first + r;
        let (img, at) = (tile / per_image - image, tile % per_image);
        let (y0, x0) = (
            (2 * (at / t.tw)).wrapping_sub(t.pad),
            (2 * (at % t.tw)).wrapping_sub(t.pad),
        );
        let dx = &mut dx[img * t.h * t.w * c..][..t.h * t.w * c];
        let dvr = &dv[r * 16 * cp..][..16 * cp];
        for c0 in (0..c).step_by(BLOCK) {
            let n = BLOCK.min(c - c0);
            let mut d = [[0.0f32; BLOCK]; 16];
            for (xi, d) in d.iter_mut().enumerate() {
                *d = *head(&dvr[xi * cp + c0..]);
            }
            let dd = input_transform_backward(&d);
            for (i, dd) in dd.iter().enumerate() {
                let (iy, ix) = (y0.wrapping_add(i / 4), x0.wrapping_add(i % 4));
                if iy < t.h && ix < t.w {
                    let px = &mut dx[(iy * t.w + ix) * c + c0..];
                    match px.first_chunk_mut::<BLOCK>() {
                        // A whole block: one vector add.
                        Some(px) if n == BLOCK => {
                            for (s, &g) in px.iter_mut().zip(dd) {
                                *s += g;
                            }
                        }
                        _ => {
                            for (s, &g) in px[..n].iter_mut().zip(dd) {
                                *s += g;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dU[ξ][c][k] += Σ_r V[ξ][c][r] · dM[ξ][r][k]` over the first `count` of the group's
/// `R` tiles in order (`v` as [`transform_windows`] lays it out, `dm` likewise), with a
/// lane block of the group's `dM` in registers.
#[inline(always)]
fn weight_products<const R: usize>(t: &Tiles, v: &[f32], dm: &[f32], du: &mut [f32], count: usize) {
    let (c, kp) = (t.c, t.padded_filters());
    let (blocks, kblocks) = (c.div_ceil(BLOCK), kp / BLOCK);
    for xi in 0..16 {
        let dux = &mut du[xi * c * kp..][..c * kp];
        for k0 in (0..kp).step_by(LANES) {
            let mut g = [[0.0f32; LANES]; R];
            for (r, g) in g.iter_mut().enumerate() {
                for (h, g) in g.chunks_exact_mut(BLOCK).enumerate() {
                    let b = k0 / BLOCK + h;
                    g.copy_from_slice(head::<BLOCK>(&dm[((xi * kblocks + b) * R + r) * BLOCK..]));
                }
            }
            for ch in 0..c {
                let (b, l) = (ch / BLOCK, ch % BLOCK);
                let panel = panel::<R>(&v[(xi * blocks + b) * R * BLOCK..]);
                let row: &mut [f32; LANES] = head_mut(&mut dux[ch * kp + k0..]);
                let mut acc = *row;
                for (g, a) in g.iter().zip(panel).take(count) {
                    let a = a[l];
                    for (s, &g) in acc.iter_mut().zip(g) {
                        *s = fma(a, g, *s);
                    }
                }
                *row = acc;
            }
        }
    }
}

/// `B d Bᵀ` for a block of channels (the input transform's transpose): `d` and the
/// result are 4×4 grids, row by row.
#[inline(always)]
fn input_transform_backward(d: &[[f32; BLOCK]; 16]) -> [[f32; BLOCK]; 16] {
    // The columns of Bᵀ: (1 0 0 0), (0 1 −1 1), (−1 1 1 0), (0 0 0 −1).
    let mut s = [[0.0; BLOCK]; 16];
    let mut o = [[0.0; BLOCK]; 16];
    for j in 0..4 {
        for l in 0..BLOCK {
            let (d0, d1, d2, d3) = (d[j][l], d[4 + j][l], d[8 + j][l], d[12 + j][l]);
            s[j][l] = d0;
            s[4 + j][l] = d1 - d2 + d3;
            s[8 + j][l] = d1 + d2 - d0;
            s[12 + j][l] = -d3;
        }
    }
    for i in 0..4 {
        for l in 0..BLOCK {
            let (s0, s1, s2, s3) = (
                s[4 * i][l],
                s[4 * i + 1][l],
                s[4 * i + 2][l],
                s[4 * i + 3][l],
            );
            o[4 * i][l] = s0;
            o[4 * i + 1][l] = s1 - s2 + s3;
            o[4 * i + 2][l] = s1 + s2 - s0;
            o[4 * i + 3][l] = -s3;
        }
    }
    o
}

/// The convolution's weight gradient `dW = Gᵀ dU G` (into `dw`, `[k, 3, 3, c]`) from the
/// summed transformed gradient `du` (as [`part_values`]' first part), in f64, rounded
/// once.
pub(super) fn weight_grad(t: &Tiles, du: &[f32], dw: &mut [f32]) {
    let (c, kp) = (t.c, t.padded_filters());
    for k in 0..t.k {
        for ch in 0..c {
            let d = |i: usize, j: usize| du[((i * 4 + j) * c + ch) * kp + k] as f64;
            // Gᵀ·dU: 3×4, G's columns being (1 ½ ½ 0), (0 ½ −½ 0), (0 ½ ½ 1).
            let mut s = [[0.0f64; 4]; 3];
            for j in 0..4 {
                s[0][j] = d(0, j) + 0.5 * (d(1, j) + d(2, j));
                s[1][j] = 0.5 * (d(1, j) - d(2, j));
                s[2][j] = 0.5 * (d(1, j) + d(2, j)) + d(3, j);
            }
            for (a, s) in s.iter().enumerate() {
                let row = [
                    s[0] + 0.5 * (s[1] + s[2]),
                    0.5 * (s[1] - s[2]),
                    0.5 * (s[1] + s[2]) + s[3],
                ];
                for (b, &g) in row.iter().enumerate() {
                    dw[((k * 3 + a) * 3 + b) * c + ch] = g as f32;
                }
            }
        }
    }
}
