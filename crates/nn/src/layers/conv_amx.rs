//! A stride-1 convolution in bf16 on AMX tiles without an im2col matrix (an "implicit"
//! matrix product), for channel counts that are multiples of 32.
//!
//! The input is rounded once into a zero-padded bf16 copy. Output `(oy, ox)` is counted
//! as row `q = oy·wp + ox` of the padded width `wp`, so tap `(ky, kx)` reads pixel
//! `q + ky·wp + kx` for every row: each tap's A tile is 16 consecutive pixels of the copy,
//! loaded in place, and the rows with `ox ≥ ow` are computed and dropped. The input
//! gradient is the same product on the output gradient with a zero border of `k − 1`,
//! taps mirrored; the weight gradient multiplies the transposed output gradient by pairs
//! of consecutive input pixels (the tile's pair rows). Products of bf16 values are summed
//! in fp32, in a fixed order: per image, and for the weight gradient over fixed runs of
//! images added in order, so results depend on neither the thread count nor the batch's
//! split among threads. The bias is added in fp32 (the packed product rounds it, as a
//! column of ones).

use rayon::prelude::*;

use crate::matmul::amx::{Operand, Tiles};
use crate::matmul::bf16::{BLOCK, round_row, to_bf16};

/// Images per part of the weight gradient.
const IMAGES_PER_PART: usize = 8;

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
    /// Pixels per image of the padded copy: the rows' reach, and one more for pairs.
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
        if c == 0 || oc == 0 || !c.is_multiple_of(BLOCK) || !oc.is_multiple_of(BLOCK) {
            return None;
        }
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let (oh, ow) = (hp.checked_sub(k)? + 1, wp.checked_sub(k)? + 1);
        let mq = (oh * wp).next_multiple_of(BLOCK);
        let img_px = (mq + (k - 1) * (wp + 1) + 2).next_multiple_of(2);
        let wd = ow + 2 * (k - 1);
        let mr = (hp * wd).next_multiple_of(BLOCK);
        let d_px = mr + (k - 1) * (wd + 1) + 1;
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

    /// The buffers' size per example, in f32 values: the padded copy (bf16), its pairs,
    /// and the output gradient transposed and bordered (bf16).
    pub(super) fn values_per_example(&self) -> usize {
        self.img_px * self.c / 2
            + self.img_px * self.c
            + self.oc * self.mq / 2
            + self.d_px * self.oc / 2
    }

    fn taps(&self) -> usize {
        self.k * self.k
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
    /// Pairs of consecutive input pixels, from even and from odd pixels:
    /// `[n, 2, img_px/2, c]`.
    pairs: Vec<u32>,
    /// The output gradient transposed, `[n, oc, mq]`.
    dyt: Vec<u16>,
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
    let (c, oc) = (g.c, g.oc);
    let n = x.len() / (g.h * g.w * c);
    b.xp.resize(n * g.img_px * c, 0);
    b.xp.par_chunks_mut(g.img_px * c)
        .zip(x.par_chunks(g.h * g.w * c))
        .for_each(|(xp, img)| {
            xp.fill(0);
            for (iy, row) in img.chunks_exact(g.w * c).enumerate() {
                let at = ((iy + g.pad) * g.wp + g.pad) * c;
                round_row(&mut xp[at..at + g.w * c], row);
            }
        });
    b.wf.clear();
    b.wf.resize(g.taps() * c / 2 * oc, 0);
    for o in 0..oc {
        for tap in 0..g.taps() {
            let src = &weight[(o * g.taps() + tap) * c..][..c];
            for (j, two) in src.chunks_exact(2).enumerate() {
                b.wf[tiled(tap * c / 2 + j, o, oc)] = pair(to_bf16(two[0]), to_bf16(two[1]));
            }
        }
    }
    let (xp, wf) = (&b.xp, &b.wf);
    y.par_chunks_mut(g.oh * g.ow * oc)
        .zip(xp.par_chunks(g.img_px * c))
        .for_each(|(out, xp)| {
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
        });
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
    assert!(b.xp.len() >= n * g.img_px * c, "backward before forward");
    // The output gradient rounded: transposed for the weight gradient, bordered for
    // the input gradient.
    b.dyt.resize(n * oc * g.mq, 0);
    b.bordered.resize(n * g.d_px * oc, 0);
    b.dyt
        .par_chunks_mut(oc * g.mq)
        .zip(b.bordered.par_chunks_mut(g.d_px * oc))
        .zip(dy.par_chunks(g.oh * g.ow * oc))
        .for_each(|((dyt, bordered), dy)| {
            bordered.fill(0);
            for (oy, row) in dy.chunks_exact(g.ow * oc).enumerate() {
                let at = ((oy + g.k - 1) * g.wd + g.k - 1) * oc;
                round_row(&mut bordered[at..at + g.ow * oc], row);
            }
            // Filter by filter, reading across pixels: contiguous writes.
            for (o, row) in dyt.chunks_exact_mut(g.mq).enumerate() {
                row.fill(0);
                for oy in 0..g.oh {
                    let src = &bordered[((oy + g.k - 1) * g.wd + g.k - 1) * oc + o..];
                    let dst = &mut row[oy * g.wp..][..g.ow];
                    for (d, s) in dst.iter_mut().zip(src.iter().step_by(oc)) {
                        *d = *s;
                    }
                }
            }
        });
    // Pairs of consecutive pixels from even and from odd ones.
    let half = g.img_px / 2;
    b.pairs.resize(n * 2 * half * c, 0);
    b.pairs
        .par_chunks_mut(2 * half * c)
        .zip(b.xp.par_chunks(g.img_px * c))
        .for_each(|(pairs, xp)| {
            let (even, odd) = pairs.split_at_mut(half * c);
            let zeros = vec![0u16; c];
            for (j, (e, o)) in even
                .chunks_exact_mut(c)
                .zip(odd.chunks_exact_mut(c))
                .enumerate()
            {
                // Pixels 2j, 2j + 1 and 2j + 2 (past the copy's end: zeros).
                let px = |i: usize| xp.get(i * c..(i + 1) * c).unwrap_or(&zeros);
                let (p0, p1, p2) = (px(2 * j), px(2 * j + 1), px(2 * j + 2));
                for ((e, &l), &h) in e.iter_mut().zip(p0).zip(p1) {
                    *e = pair(l, h);
                }
                for ((o, &l), &h) in o.iter_mut().zip(p1).zip(p2) {
                    *o = pair(l, h);
                }
            }
        });
    // Weight gradient: each part's images summed in the tiles, the parts in order.
    let per_part = oc * g.taps() * c;
    let parts = n.div_ceil(IMAGES_PER_PART);
    b.parts.resize(parts * per_part, 0.0);
    let (dyt, pairs) = (&b.dyt, &b.pairs);
    b.parts
        .par_chunks_mut(per_part)
        .enumerate()
        .for_each(|(part, out)| {
            let mut tiles = Tiles::configure();
            let mut block = [0.0f32; BLOCK * BLOCK];
            let images = part * IMAGES_PER_PART..((part + 1) * IMAGES_PER_PART).min(n);
            for tap in 0..g.taps() {
                let off = tap / g.k * g.wp + tap % g.k;
                let parity = off % 2;
                for m0 in (0..oc).step_by(BLOCK) {
                    for n0 in (0..c).step_by(BLOCK) {
                        tiles.zero();
                        for img in images.clone() {
                            let dyt = &dyt[img * oc * g.mq..][..oc * g.mq];
                            let from = &pairs[(img * 2 + parity) * half * c..][..half * c];
                            for kq in (0..g.mq).step_by(BLOCK) {
                                let a = |r: usize| Operand::new(dyt, (m0 + r) * g.mq + kq, g.mq);
                                let row = (kq + off - parity) / 2;
                                let bt = |col: usize| Operand::new(from, row * c + n0 + col, c);
                                tiles.step([a(0), a(16)], [bt(0), bt(16)]);
                            }
                        }
                        tiles.store(&mut block);
                        scatter(&block, out, None, |r| {
                            Some(((m0 + r) * g.taps() + tap) * c + n0)
                        });
                    }
                }
            }
        });
    let (first, rest) = b.parts.split_at(per_part);
    dw.copy_from_slice(first);
    crate::matmul::add_parts(dw, rest);
    let Some(dx) = dx else { return };
    // Input gradient: the bordered output gradient under the mirrored taps.
    b.wt.clear();
    b.wt.resize(g.taps() * oc / 2 * c, 0);
    for tap in 0..g.taps() {
        for o in (0..oc).step_by(2) {
            let lo = &weight[(o * g.taps() + tap) * c..][..c];
            let hi = &weight[((o + 1) * g.taps() + tap) * c..][..c];
            for (ch, (&l, &h)) in lo.iter().zip(hi).enumerate() {
                b.wt[tiled((tap * oc + o) / 2, ch, c)] = pair(to_bf16(l), to_bf16(h));
            }
        }
    }
    let (bordered, wt) = (&b.bordered, &b.wt);
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
