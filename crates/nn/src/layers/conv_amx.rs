//! A stride-1 convolution in bf16 on AMX tiles without an im2col matrix (an "implicit"
//! matrix product), for channel counts that are multiples of 32.
//!
//! The input is rounded once into a zero-padded bf16 copy. Output `(oy, ox)` is counted
//! as row `q = oy·wp + ox` of the padded width `wp`, so tap `(ky, kx)` reads pixel
//! `q + ky·wp + kx` for every row: each tap's A tile is 16 consecutive pixels of the copy,
//! loaded in place, and the rows with `ox ≥ ow` are computed and dropped. The input
//! gradient is the same product on the output gradient with a zero border of `k − 1`,
//! taps mirrored; the weight gradient multiplies the transposed padded input (its A
//! tiles start at any pixel) by pairs of consecutive output-gradient rows. Products of bf16 values are summed
//! in fp32, in a fixed order: per image, and for the weight gradient over fixed runs of
//! images added in order, so results depend on neither the thread count nor the batch's
//! split among threads. The bias is added in fp32 (the packed product rounds it, as a
//! column of ones). Inference ([`infer_relu`]) is the forward product per image, with
//! ReLU and the 2×2 pool applied to each image's map as it leaves the tiles.

use rayon::prelude::*;

use crate::matmul::amx::{Operand, Tiles};
use crate::matmul::bf16::{BLOCK, aligned, aligned_mut, round_row, to_bf16};

/// Images per part of the weight gradient.
const IMAGES_PER_PART: usize = 16;

/// Sizes of one implicit convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Implicit {
    h: usize,
    w: usize,
    c: usize,
    oc: usize,
    k: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    /// Width and height of the padded input.
    wp: usize,
    hp: usize,
    /// Output rows per image, counted along the padded width, rounded up to 32.
    mq: usize,
    /// Pixels per image of the padded copy: the rows' reach, rounded up to 32 (rows of
    /// the transposed copy then start on cache lines).
    img_px: usize,
    /// Width of the output gradient with its border.
    wd: usize,
    /// Input-gradient rows per image, counted along `wd`, rounded up to 32.
    mr: usize,
    /// Pixels per image of the bordered output gradient: the rows' reach.
    d_px: usize,
}

impl Implicit {
    /// The geometry of a stride-1 `k×k` convolution of `[h, w, c]` inputs to `oc`
    /// filters with padding `pad`, if both channel counts are multiples of 32.
    pub(super) fn new([h, w, c]: [usize; 3], oc: usize, k: usize, pad: usize) -> Option<Self> {
        if k == 0 || c == 0 || oc == 0 || !c.is_multiple_of(BLOCK) || !oc.is_multiple_of(BLOCK) {
            return None;
        }
        // Checked: the sizes may come from an architecture file.
        let add = |a: usize, b: usize| a.checked_add(b);
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let round = |a: usize| a.checked_next_multiple_of(BLOCK);
        let (hp, wp) = (add(h, mul(2, pad)?)?, add(w, mul(2, pad)?)?);
        let (oh, ow) = (hp.checked_sub(k)? + 1, wp.checked_sub(k)? + 1);
        let mq = round(mul(oh, wp)?)?;
        let img_px = round(add(add(mq, mul(k - 1, add(wp, 1)?)?)?, 2)?)?;
        let wd = add(ow, mul(2, k - 1)?)?;
        let mr = round(mul(hp, wd)?)?;
        let d_px = add(add(mr, mul(k - 1, add(wd, 1)?)?)?, 1)?;
        // The buffers' size per example must be countable too.
        add(add(mul(img_px, c)?, mul(mq / 2, oc)?)?, mul(d_px, oc)? / 2)?;
        Some(Self {
            h,
            w,
            c,
            oc,
            k,
            pad,
            oh,
            ow,
            wp,
            hp,
            mq,
            img_px,
            wd,
            mr,
            d_px,
        })
    }

    /// The buffers' size per example, in f32 values: the padded copy and its transpose
    /// (bf16), the output gradient's pairs, and the bordered output gradient (bf16).
    pub(super) fn values_per_example(&self) -> usize {
        self.img_px * self.c + self.mq / 2 * self.oc + self.d_px * self.oc / 2
    }

    fn taps(&self) -> usize {
        self.k * self.k
    }

    /// Pairs of bf16 weights of the forward product.
    fn weight_pairs(&self) -> usize {
        self.taps() * self.c / 2 * self.oc
    }
}

/// Buffers of one layer, kept between its passes.
#[derive(Default)]
pub(super) struct Buffers {
    /// The padded bf16 input, `[n, img_px, c]` (kept for the weight gradient).
    xp: Vec<u16>,
    /// Weights as B tiles of the forward product: pairs along `(tap, channel)`,
    /// `k²·c/2 × oc` in [`tiled`] order.
    wf: Vec<u32>,
    /// Weights as B tiles of the input-gradient product: pairs along the filters,
    /// `k²·oc/2 × c` in [`tiled`] order.
    wt: Vec<u32>,
    /// The padded input transposed, `[n, c, img_px]`.
    xt: Vec<u16>,
    /// The output gradient as pairs of consecutive rows `q`: `[n]` of `mq/2 × oc` in
    /// [`tiled`] order.
    dy_pairs: Vec<u32>,
    /// The output gradient with its zero border, `[n, d_px, oc]`.
    bordered: Vec<u16>,
    /// Weight-gradient parts.
    parts: Vec<f32>,
}

/// Where pair row `row`, column `col` of a B operand `cols` wide is kept when each
/// 16×16 tile is stored whole, one after another (row-major over tiles): a tile load then
/// reads 1 KB in one piece, measured faster than 16 rows from a wider matrix.
#[inline(always)]
fn tiled(row: usize, col: usize, cols: usize) -> usize {
    ((row / 16) * (cols / 16) + col / 16) * 256 + (row % 16) * 16 + col % 16
}

/// Two bf16 values as one pair, `lo` in the low half.
#[inline(always)]
fn pair(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | (u32::from(hi) << 16)
}

/// `dst` (`cols × rows`) = the transpose of `src` (`rows × cols`, `cols` a multiple
/// of 32), through 32×32 blocks held in registers-sized arrays (element by element
/// with a stride, it cost as much as the products it feeds).
fn transpose(src: &[u16], dst: &mut [u16], rows: usize, cols: usize) {
    const B: usize = BLOCK;
    for r0 in (0..rows).step_by(B) {
        let height = B.min(rows - r0);
        for c0 in (0..cols).step_by(B) {
            let mut block = [[0u16; B]; B];
            for (r, row) in block.iter_mut().take(height).enumerate() {
                if let Some(s) = src[(r0 + r) * cols + c0..].first_chunk::<B>() {
                    *row = *s;
                }
            }
            for c in 0..B {
                let mut col = [0u16; B];
                for (r, v) in col.iter_mut().enumerate() {
                    *v = block[r][c];
                }
                dst[(c0 + c) * rows + r0..][..height].copy_from_slice(&col[..height]);
            }
        }
    }
}

/// Copies the 32×32 `block` rows that `place` maps to an offset into `out` (32 values
/// each), added to `add` (a bias) when given.
#[inline(always)]
fn scatter(
    block: &[f32; BLOCK * BLOCK],
    out: &mut [f32],
    add: Option<&[f32]>,
    place: impl Fn(usize) -> Option<usize>,
) {
    for (r, row) in block.chunks_exact(BLOCK).enumerate() {
        let Some(at) = place(r) else { continue };
        let dst = &mut out[at..at + BLOCK];
        match add {
            Some(b) => {
                for ((d, &v), &b) in dst.iter_mut().zip(row).zip(b) {
                    *d = v + b;
                }
            }
            None => dst.copy_from_slice(row),
        }
    }
}

/// Rounds image `img` (`[h, w, c]`) into `xp`, its zero-padded bf16 copy.
fn pad_round(g: &Implicit, img: &[f32], xp: &mut [u16]) {
    xp.fill(0);
    for (iy, row) in img.chunks_exact(g.w * g.c).enumerate() {
        let at = ((iy + g.pad) * g.wp + g.pad) * g.c;
        round_row(&mut xp[at..at + g.w * g.c], row);
    }
}

/// `weight` (`[oc, k, k, c]`) as the forward product's B tiles: pairs along
/// `(tap, channel)`, `k²·c/2 × oc` in [`tiled`] order, in `wf` from its first 64-byte
/// boundary (where [`aligned`] finds them again).
pub(super) fn tile_weights(g: &Implicit, weight: &[f32], wf: &mut Vec<u32>) {
    let (c, oc) = (g.c, g.oc);
    let wf = aligned_mut(wf, g.weight_pairs());
    wf.fill(0);
    for o in 0..oc {
        for tap in 0..g.taps() {
            let src = &weight[(o * g.taps() + tap) * c..][..c];
            for (j, two) in src.chunks_exact(2).enumerate() {
                wf[tiled(tap * c / 2 + j, o, oc)] = pair(to_bf16(two[0]), to_bf16(two[1]));
            }
        }
    }
}

/// One image's convolution `out` (`[oh, ow, oc]`) from its padded copy `xp` and the
/// tiled weights `wf`, plus `bias`.
fn image_product(g: &Implicit, xp: &[u16], wf: &[u32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (c, oc) = (g.c, g.oc);
    let mut tiles = Tiles::configure();
    let mut block = [0.0f32; BLOCK * BLOCK];
    for q0 in (0..g.mq).step_by(BLOCK) {
        for n0 in (0..oc).step_by(BLOCK) {
            tiles.zero();
            for tap in 0..g.taps() {
                let off = tap / g.k * g.wp + tap % g.k;
                for cb in (0..c).step_by(BLOCK) {
                    let a = |r: usize| Operand::new(xp, (q0 + r + off) * c + cb, c);
                    let kb = (tap * c + cb) / 2;
                    let bt = |col: usize| Operand::new(wf, tiled(kb, n0 + col, oc), 16);
                    tiles.step([a(0), a(16)], [bt(0), bt(16)]);
                }
            }
            tiles.store(&mut block);
            let bias = bias.map(|b| &b[n0..n0 + BLOCK]);
            scatter(&block, out, bias, |r| {
                let (oy, ox) = ((q0 + r) / g.wp, (q0 + r) % g.wp);
                (oy < g.oh && ox < g.ow).then(|| (oy * g.ow + ox) * oc + n0)
            });
        }
    }
}

/// `y` (`[n, oh, ow, oc]`) = the convolution of `x` (`[n, h, w, c]`) with `weight`
/// (`[oc, k, k, c]`) plus `bias`. The caller has checked that AMX is available.
pub(super) fn forward(
    g: &Implicit,
    b: &mut Buffers,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let c = g.c;
    let n = x.len() / (g.h * g.w * c);
    aligned_mut(&mut b.xp, n * g.img_px * c)
        .par_chunks_mut(g.img_px * c)
        .zip(x.par_chunks(g.h * g.w * c))
        .for_each(|(xp, img)| pad_round(g, img, xp));
    tile_weights(g, weight, &mut b.wf);
    let xp = aligned(&b.xp, n * g.img_px * c);
    let wf = aligned(&b.wf, g.weight_pairs());
    y.par_chunks_mut(g.oh * g.ow * g.oc)
        .zip(xp.par_chunks(g.img_px * c))
        .for_each(|(out, xp)| image_product(g, xp, wf, bias, out));
}

/// Inference of the convolution with ReLU after it, and a 2×2 stride-2 max pool when
/// `pool`: `y` (`[n, oh/2, ow/2, oc]` pooled, else `[n, oh, ow, oc]`) from `x`
/// (`[n, h, w, c]`), the weights `wf` as [`tile_weights`] left them, and `bias`
/// (`oc` values or more). Image by image: the padded copy and the convolution's output
/// stay in the thread's buffers. The caller has checked that AMX is available.
pub(super) fn infer_relu(
    g: &Implicit,
    wf: &[u32],
    bias: &[f32],
    pool: bool,
    x: &[f32],
    y: &mut [f32],
) {
    let oc = g.oc;
    let out_len = if pool {
        (g.oh / 2) * (g.ow / 2) * oc
    } else {
        g.oh * g.ow * oc
    };
    let wf = aligned(wf, g.weight_pairs());
    let bias = &bias[..oc];
    y.par_chunks_mut(out_len)
        .zip(x.par_chunks(g.h * g.w * g.c))
        .for_each_init(
            || (Vec::new(), vec![0.0f32; g.oh * g.ow * oc]),
            |(xp, conv), (out, img)| {
                let xp = aligned_mut(xp, g.img_px * g.c);
                pad_round(g, img, xp);
                image_product(g, xp, wf, Some(bias), conv);
                if pool {
                    relu_pool(conv, g.ow, oc, out);
                } else {
                    for (o, &v) in out.iter_mut().zip(conv.iter()) {
                        *o = v.max(0.0);
                    }
                }
            },
        );
}

/// `out` (`[h/2, w/2, c]`) = ReLU of the 2×2 stride-2 max pool of `map` (`[h, w, c]`, an
/// odd last row or column left out): the maximum of each window, or 0 if it is below.
fn relu_pool(map: &[f32], w: usize, c: usize, out: &mut [f32]) {
    let (pw, row) = (w / 2, w * c);
    for (py, out_row) in out.chunks_exact_mut(pw * c).enumerate() {
        let (top, bottom) = (
            &map[2 * py * row..][..row],
            &map[(2 * py + 1) * row..][..row],
        );
        for (px, o) in out_row.chunks_exact_mut(c).enumerate() {
            let at = 2 * px * c;
            let (a, b) = (&top[at..at + 2 * c], &bottom[at..at + 2 * c]);
            for (ch, o) in o.iter_mut().enumerate() {
                *o = a[ch].max(a[c + ch]).max(b[ch].max(b[c + ch])).max(0.0);
            }
        }
    }
}

/// The weight gradient (`dw`, `[oc, k, k, c]`) and, when asked for, the input gradient
/// (`dx`, `[n, h, w, c]`) of the last [`forward`] (whose padded input `b` kept) for the
/// output gradient `dy`.
pub(super) fn backward(
    g: &Implicit,
    b: &mut Buffers,
    weight: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (c, oc) = (g.c, g.oc);
    let n = dy.len() / (g.oh * g.ow * oc);
    if n == 0 {
        dw.fill(0.0);
        return;
    }
    assert!(b.xp.len() > n * g.img_px * c, "backward before forward");
    // The output gradient rounded, with its border (the input gradient's A operand),
    // and as pairs of consecutive rows `q` (the weight gradient's B operand).
    aligned_mut(&mut b.bordered, n * g.d_px * oc)
        .par_chunks_mut(g.d_px * oc)
        .zip(aligned_mut(&mut b.dy_pairs, n * g.mq / 2 * oc).par_chunks_mut(g.mq / 2 * oc))
        .zip(dy.par_chunks(g.oh * g.ow * oc))
        .for_each(|((bordered, pairs), dy)| {
            bordered.fill(0);
            for (oy, row) in dy.chunks_exact(g.ow * oc).enumerate() {
                let at = ((oy + g.k - 1) * g.wd + g.k - 1) * oc;
                round_row(&mut bordered[at..at + g.ow * oc], row);
            }
            // Row `q`'s gradient (zeros where `ox ≥ ow` or `oy ≥ oh`).
            let zeros = vec![0u16; oc];
            let row = |q: usize| {
                let (oy, ox) = (q / g.wp, q % g.wp);
                if oy < g.oh && ox < g.ow {
                    &bordered[((oy + g.k - 1) * g.wd + ox + g.k - 1) * oc..][..oc]
                } else {
                    &zeros[..]
                }
            };
            for j in 0..g.mq / 2 {
                let (lo, hi) = (row(2 * j), row(2 * j + 1));
                for o0 in (0..oc).step_by(16) {
                    let dst = &mut pairs[tiled(j, o0, oc)..][..16];
                    for ((d, &l), &h) in dst.iter_mut().zip(&lo[o0..]).zip(&hi[o0..]) {
                        *d = pair(l, h);
                    }
                }
            }
        });
    // The padded input transposed: channel by channel, each a row of pixels.
    aligned_mut(&mut b.xt, n * c * g.img_px)
        .par_chunks_mut(c * g.img_px)
        .zip(aligned(&b.xp, n * g.img_px * c).par_chunks(g.img_px * c))
        .for_each(|(xt, xp)| transpose(xp, xt, g.img_px, c));
    // Weight gradient, transposed (`[k², c, oc]`): the padded input's channels under
    // each tap times the output gradient, over each part's images in the tiles, the
    // parts added in order.
    let per_part = oc * g.taps() * c;
    let parts = n.div_ceil(IMAGES_PER_PART);
    b.parts.resize((parts + 1) * per_part, 0.0);
    let (sum, part_grads) = b.parts.split_at_mut(per_part);
    let xt = aligned(&b.xt, n * c * g.img_px);
    let dy_pairs = aligned(&b.dy_pairs, n * g.mq / 2 * oc);
    part_grads
        .par_chunks_mut(per_part)
        .enumerate()
        .for_each(|(part, out)| {
            let mut tiles = Tiles::configure();
            let mut block = [0.0f32; BLOCK * BLOCK];
            let images = part * IMAGES_PER_PART..((part + 1) * IMAGES_PER_PART).min(n);
            for tap in 0..g.taps() {
                let off = tap / g.k * g.wp + tap % g.k;
                for m0 in (0..c).step_by(BLOCK) {
                    for n0 in (0..oc).step_by(BLOCK) {
                        tiles.zero();
                        for img in images.clone() {
                            let xt = &xt[img * c * g.img_px..][..c * g.img_px];
                            let dyp = &dy_pairs[img * g.mq / 2 * oc..][..g.mq / 2 * oc];
                            for kq in (0..g.mq).step_by(BLOCK) {
                                let a = |r: usize| {
                                    Operand::new(xt, (m0 + r) * g.img_px + kq + off, g.img_px)
                                };
                                let bt =
                                    |col: usize| Operand::new(dyp, tiled(kq / 2, n0 + col, oc), 16);
                                tiles.step([a(0), a(16)], [bt(0), bt(16)]);
                            }
                        }
                        tiles.store(&mut block);
                        scatter(&block, out, None, |r| Some((tap * c + m0 + r) * oc + n0));
                    }
                }
            }
        });
    // Each value's parts in order, values in parallel.
    let part_grads = &part_grads[..parts * per_part];
    sum.par_chunks_mut(BLOCK * BLOCK)
        .enumerate()
        .for_each(|(i, sum)| {
            let at = i * BLOCK * BLOCK;
            sum.copy_from_slice(&part_grads[at..at + sum.len()]);
            for part in part_grads.chunks_exact(per_part).skip(1) {
                for (s, &v) in sum.iter_mut().zip(&part[at..]) {
                    *s += v;
                }
            }
        });
    // Back to the weights' `[oc, k², c]`.
    for (i, d) in dw.iter_mut().enumerate() {
        let (o, tap, ch) = (i / (g.taps() * c), i / c % g.taps(), i % c);
        *d = sum[(tap * c + ch) * oc + o];
    }
    let Some(dx) = dx else { return };
    // Input gradient: the bordered output gradient under the mirrored taps.
    let wt = aligned_mut(&mut b.wt, g.taps() * oc / 2 * c);
    wt.fill(0);
    for tap in 0..g.taps() {
        for o in (0..oc).step_by(2) {
            let lo = &weight[(o * g.taps() + tap) * c..][..c];
            let hi = &weight[((o + 1) * g.taps() + tap) * c..][..c];
            for (ch, (&l, &h)) in lo.iter().zip(hi).enumerate() {
                wt[tiled((tap * oc + o) / 2, ch, c)] = pair(to_bf16(l), to_bf16(h));
            }
        }
    }
    let bordered = aligned(&b.bordered, n * g.d_px * oc);
    let wt = aligned(&b.wt, g.taps() * oc / 2 * c);
    dx.par_chunks_mut(g.h * g.w * c)
        .zip(bordered.par_chunks(g.d_px * oc))
        .for_each(|(dx, d)| {
            let mut tiles = Tiles::configure();
            let mut block = [0.0f32; BLOCK * BLOCK];
            for r0 in (0..g.mr).step_by(BLOCK) {
                for n0 in (0..c).step_by(BLOCK) {
                    tiles.zero();
                    for tap in 0..g.taps() {
                        let (ky, kx) = (tap / g.k, tap % g.k);
                        let off = (g.k - 1 - ky) * g.wd + (g.k - 1 - kx);
                        for ob in (0..oc).step_by(BLOCK) {
                            let a = |r: usize| Operand::new(d, (r0 + r + off) * oc + ob, oc);
                            let kb = (tap * oc + ob) / 2;
                            let bt = |col: usize| Operand::new(wt, tiled(kb, n0 + col, c), 16);
                            tiles.step([a(0), a(16)], [bt(0), bt(16)]);
                        }
                    }
                    tiles.store(&mut block);
                    scatter(&block, dx, None, |r| {
                        let (py, px) = ((r0 + r) / g.wd, (r0 + r) % g.wd);
                        let (iy, ix) = (py.checked_sub(g.pad)?, px.checked_sub(g.pad)?);
                        (py < g.hp && iy < g.h && ix < g.w).then(|| (iy * g.w + ix) * c + n0)
                    });
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_that_do_not_fit_are_refused_without_overflow() {
        // `simple`'s second layer: 11 rows of the 13-pixel padded width, rounded to 32.
        let g = Implicit::new([13, 13, 32], 64, 3, 0).expect("fits");
        assert_eq!((g.oh, g.ow, g.mq, g.wd), (11, 11, 160, 15));
        assert_eq!(g.img_px % BLOCK, 0);
        assert!(g.img_px > g.mq + 2 * (g.wp + 1), "rows reach past the copy");
        for (hwc, oc, k, pad) in [
            ([13, 13, 33], 64, 3, 0),              // channels not a multiple of 32
            ([13, 13, 32], 48, 3, 0),              // nor filters
            ([13, 13, 32], 64, 0, 0),              // no kernel
            ([2, 2, 32], 64, 5, 0),                // kernel larger than the input
            ([13, 13, 32], 64, 3, usize::MAX / 2), // sizes that overflow
            ([usize::MAX / 4, 13, 32], 64, 3, 1),
        ] {
            assert!(
                Implicit::new(hwc, oc, k, pad).is_none(),
                "{hwc:?} {oc} {k} {pad}"
            );
        }
    }
}
