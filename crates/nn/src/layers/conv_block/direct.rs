//! Direct 3×3 convolution fused with ReLU and 2×2 max pooling, for layers with few input
//! channels (a network's first layer), where Winograd's transforms would cost more than
//! they save: each tile's four convolution outputs are summed in registers, pooled and
//! written, so the convolution's output never reaches memory.

use super::tiles::{LANES, Tiles, fmadd, pool_relu};

/// Tiles per parallel work item.
pub(super) const GROUP: usize = 64;

/// Fills `wt` with the weights `w` (`[k, 3, 3, c]`) as `[3·3, c, k]` (output channels
/// last, padded with zeros to [`Tiles::padded_filters`]).
pub(super) fn arrange_weights(t: &Tiles, w: &[f32], wt: &mut Vec<f32>) {
    let (c, kp) = (t.c, t.padded_filters());
    wt.clear();
    wt.resize(9 * c * kp, 0.0);
    for k in 0..t.k {
        for tap in 0..9 {
            for ch in 0..c {
                wt[(tap * c + ch) * kp + k] = w[(k * 9 + tap) * c + ch];
            }
        }
    }
}

/// Workspace values: the gathered windows of a group.
pub(super) fn workspace_len(t: &Tiles) -> usize {
    16 * t.c * GROUP
}

/// Pooled outputs for the `out.len() / k` tiles from tile `first` on; `wt` as
/// [`arrange_weights`], `bias` padded to [`Tiles::padded_filters`], `ws` of
/// [`workspace_len`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn tiles<const FMA: bool>(
    t: &Tiles,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    if t.c == 1 {
        one_channel::<FMA>(t, x, wt, bias, first, out, ws)
    } else {
        tiles_of::<FMA>(t, t.c, x, wt, bias, first, out, ws)
    }
}

/// [`tiles`] for one input channel (grey images, a network's first layer): the nine
/// taps' weights of a block of output channels stay in registers while every tile of the
/// group passes under them. Each lane's arithmetic is that of [`tiles_of`].
#[inline(always)]
fn one_channel<const FMA: bool>(
    t: &Tiles,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    let kp = t.padded_filters();
    let patches = &mut ws[..16 * GROUP];
    let tiles = out.len() / t.k;
    for (r, patch) in patches.chunks_exact_mut(16).take(tiles).enumerate() {
        t.gather(x, first + r, patch);
    }
    for k0 in (0..kp).step_by(LANES) {
        let mut w = [[0.0f32; LANES]; 9];
        for (tap, w) in w.iter_mut().enumerate() {
            *w = *lanes(&wt[tap * kp + k0..]);
        }
        let b = *lanes(&bias[k0..]);
        let n = LANES.min(t.k - k0);
        for (out, patch) in out.chunks_exact_mut(t.k).zip(patches.chunks_exact(16)) {
            let mut acc = [[0.0f32; LANES]; 4];
            for (tap, w) in w.iter().enumerate() {
                let at = tap / 3 * 4 + tap % 3;
                let a = [patch[at], patch[at + 1], patch[at + 4], patch[at + 5]];
                for (acc, &a) in acc.iter_mut().zip(&a) {
                    for (s, &w) in acc.iter_mut().zip(w) {
                        *s = fmadd::<FMA>(a, w, *s);
                    }
                }
            }
            let mut o = [0.0; LANES];
            for (l, o) in o.iter_mut().enumerate() {
                *o = pool_relu([acc[0][l], acc[1][l], acc[2][l], acc[3][l]], b[l]);
            }
            out[k0..k0 + n].copy_from_slice(&o[..n]);
        }
    }
}

/// The first [`LANES`] values of `s` as an array.
#[inline(always)]
fn lanes(s: &[f32]) -> &[f32; LANES] {
    match s.first_chunk() {
        Some(a) => a,
        None => panic!("fewer than {LANES} values"),
    }
}

/// [`tiles`] for `c` (= `t.c`) input channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles_of<const FMA: bool>(
    t: &Tiles,
    c: usize,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    let kp = t.padded_filters();
    let patch = &mut ws[..16 * c];
    for (r, out) in out.chunks_exact_mut(t.k).enumerate() {
        // The 4×4 window, pixel after pixel, in one short contiguous buffer.
        t.gather(x, first + r, patch);
        let patch = &patch[..];
        for k0 in (0..kp).step_by(LANES) {
            // acc[p]: convolution output p of the 2×2 block (row by row).
            let mut acc = [[0.0f32; LANES]; 4];
            for tap in 0..9 {
                let at = (tap / 3 * 4 + tap % 3) * c;
                let taps = &wt[tap * c * kp..][..c * kp];
                for ch in 0..c {
                    let w: [f32; LANES] = match taps[ch * kp + k0..].first_chunk() {
                        Some(w) => *w,
                        None => panic!("weights shorter than their padded size"),
                    };
                    // The input under this tap for each of the four outputs.
                    let a = [
                        patch[at + ch],
                        patch[at + c + ch],
                        patch[at + 4 * c + ch],
                        patch[at + 5 * c + ch],
                    ];
                    for (acc, &a) in acc.iter_mut().zip(&a) {
                        for (s, &w) in acc.iter_mut().zip(&w) {
                            *s = fmadd::<FMA>(a, w, *s);
                        }
                    }
                }
            }
            let b: &[f32; LANES] = match bias[k0..].first_chunk() {
                Some(b) => b,
                None => panic!("bias shorter than its padded size"),
            };
            // A plain loop, not `array::from_fn`: its closure would keep `acc` in memory.
            let mut o = [0.0; LANES];
            for (l, o) in o.iter_mut().enumerate() {
                *o = pool_relu([acc[0][l], acc[1][l], acc[2][l], acc[3][l]], b[l]);
            }
            let n = LANES.min(t.k - k0);
            out[k0..k0 + n].copy_from_slice(&o[..n]);
        }
    }
}
