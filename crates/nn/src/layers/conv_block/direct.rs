//! Direct 3×3 convolution fused with ReLU and 2×2 max pooling, for layers with few input
//! channels (a network's first layer), where Winograd's transforms would cost more than
//! they save: each tile's four convolution outputs are summed in registers, pooled and
//! written, so the convolution's output never reaches memory.

use super::tiles::{LANES, Pass, Tiles, fmadd, head, pool_relu_lanes};

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

/// Pooled outputs for the `out.len() / k` tiles from tile `first` on; `p.w` as
/// [`arrange_weights`], `ws` of [`workspace_len`].
#[inline(always)]
pub(super) fn tiles<const FMA: bool>(p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
    if p.t.c == 1 {
        one_channel::<FMA>(p, first, out, ws)
    } else {
        many_channels::<FMA>(p, first, out, ws)
    }
}

/// [`tiles`] for one input channel (grey images, a network's first layer): the nine
/// taps' weights of a block of output channels stay in registers while every tile of the
/// group passes under them. Each lane's arithmetic is that of [`many_channels`].
#[inline(always)]
fn one_channel<const FMA: bool>(p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
    let (t, kp) = (p.t, p.t.padded_filters());
    let patches = &mut ws[..16 * GROUP];
    let tiles = out.len() / t.k;
    for (r, patch) in patches.chunks_exact_mut(16).take(tiles).enumerate() {
        t.gather(p.x, first + r, patch);
    }
    for k0 in (0..kp).step_by(LANES) {
        let mut w = [[0.0f32; LANES]; 9];
        for (tap, w) in w.iter_mut().enumerate() {
            *w = *head(&p.w[tap * kp + k0..]);
        }
        let b: [f32; LANES] = *head(&p.bias[k0..]);
        let n = LANES.min(t.k - k0);
        for (out, patch) in out.chunks_exact_mut(t.k).zip(patches.chunks_exact(16)) {
            let acc = one_channel_outputs::<FMA>(&w, patch);
            out[k0..k0 + n].copy_from_slice(&pool_relu_lanes(acc, b)[..n]);
        }
    }
}

/// [`tiles`] for several input channels.
#[inline(always)]
fn many_channels<const FMA: bool>(p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
    let (t, kp, c) = (p.t, p.t.padded_filters(), p.t.c);
    let patch = &mut ws[..16 * c];
    for (r, out) in out.chunks_exact_mut(t.k).enumerate() {
        // The 4×4 window, pixel after pixel, in one short contiguous buffer.
        t.gather(p.x, first + r, patch);
        let patch = &patch[..];
        for k0 in (0..kp).step_by(LANES) {
            let acc = outputs::<FMA>(p, patch, k0);
            let n = LANES.min(t.k - k0);
            let o = pool_relu_lanes(acc, *head(&p.bias[k0..]));
            out[k0..k0 + n].copy_from_slice(&o[..n]);
        }
    }
}

/// The four convolution outputs (row by row, without bias) of the tile whose 4×4 window
/// is `patch` (`16·c` values), for output channels `k0..k0 + LANES`: tap by tap, channel
/// by channel. The training kernels share it, so both passes give the same values.
#[inline(always)]
pub(super) fn outputs<const FMA: bool>(p: &Pass, patch: &[f32], k0: usize) -> [[f32; LANES]; 4] {
    let (kp, c) = (p.t.padded_filters(), p.t.c);
    let mut acc = [[0.0f32; LANES]; 4];
    for tap in 0..9 {
        let at = (tap / 3 * 4 + tap % 3) * c;
        let taps = &p.w[tap * c * kp..][..c * kp];
        for ch in 0..c {
            let w: &[f32; LANES] = head(&taps[ch * kp + k0..]);
            // The input under this tap for each of the four outputs.
            let a = [
                patch[at + ch],
                patch[at + c + ch],
                patch[at + 4 * c + ch],
                patch[at + 5 * c + ch],
            ];
            for (acc, &a) in acc.iter_mut().zip(&a) {
                for (s, &w) in acc.iter_mut().zip(w) {
                    *s = fmadd::<FMA>(a, w, *s);
                }
            }
        }
    }
    acc
}

/// [`outputs`] for one input channel, with a block's nine weights `w` already loaded
/// (one row per tap): the same arithmetic.
#[inline(always)]
pub(super) fn one_channel_outputs<const FMA: bool>(
    w: &[[f32; LANES]; 9],
    patch: &[f32],
) -> [[f32; LANES]; 4] {
    // Pixel by pixel of the window, each multiplied into every output it lies under:
    // each value is broadcast once instead of once per tap and output (the broadcasts,
    // shuffles on AVX-512, were the limit). An output still takes its taps in order.
    let mut acc = [[0.0f32; LANES]; 4];
    for wy in 0..4 {
        for wx in 0..4 {
            let a = patch[wy * 4 + wx];
            for (o, acc) in acc.iter_mut().enumerate() {
                let (ky, kx) = (wy.wrapping_sub(o / 2), wx.wrapping_sub(o % 2));
                if ky < 3 && kx < 3 {
                    for (s, &w) in acc.iter_mut().zip(&w[ky * 3 + kx]) {
                        *s = fmadd::<FMA>(a, w, *s);
                    }
                }
            }
        }
    }
    acc
}
