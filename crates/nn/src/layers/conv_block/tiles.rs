//! The geometry both inference kernels share: a tile is a 2×2 block of convolution
//! outputs (one pooling window when a pool follows) and the 4×4 input window under it.

use crate::copy::copy_row;

/// Output channels are computed in blocks of this many lanes (two AVX-512 registers).
pub(super) const LANES: usize = 32;

/// Sizes of a fused convolution (and pool), and where each tile's input lies.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiles {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub k: usize,
    /// Zero padding of the convolution.
    pub pad: usize,
    /// The convolution's output height.
    pub oh: usize,
    /// The convolution's output width.
    pub ow: usize,
    /// Whether a 2×2 max pool follows: a tile then gives one pooled output (tiles cover
    /// the pool's windows), else its four convolution outputs (tiles cover the whole map;
    /// those of an odd map's last row or column are cut).
    pub pool: bool,
    /// Tiles per image, down.
    pub th: usize,
    /// Tiles per image, across.
    pub tw: usize,
}

impl Tiles {
    pub(super) fn new(
        [h, w, c]: [usize; 3],
        k: usize,
        pad: usize,
        [oh, ow]: [usize; 2],
        pool: bool,
    ) -> Self {
        let (th, tw) = if pool {
            (oh / 2, ow / 2)
        } else {
            (oh.div_ceil(2), ow.div_ceil(2))
        };
        Self {
            h,
            w,
            c,
            k,
            pad,
            oh,
            ow,
            pool,
            th,
            tw,
        }
    }

    /// Tiles per image.
    pub(super) fn per_image(&self) -> usize {
        self.th * self.tw
    }

    /// Output values per tile: `k` pooled, or `4·k` (the block's outputs, row by row).
    pub(super) fn tile_values(&self) -> usize {
        if self.pool { self.k } else { 4 * self.k }
    }

    /// Output values per image.
    pub(super) fn image_values(&self) -> usize {
        if self.pool {
            self.th * self.tw * self.k
        } else {
            self.oh * self.ow * self.k
        }
    }

    /// Writes the 2×2 output blocks of `count` tiles from tile `first` on (`res`, each
    /// `4·k` values, row by row) into `out`, the output of the images from `image` on,
    /// cutting the blocks of an odd map's last row or column. (Pooled outputs need no
    /// such step: they are in tile order.)
    pub(super) fn store_blocks(
        &self,
        res: &[f32],
        first: usize,
        count: usize,
        out: &mut [f32],
        image: usize,
    ) {
        let base = image * self.per_image();
        for (r, block) in res.chunks_exact(4 * self.k).take(count).enumerate() {
            let t = first + r - base;
            let (img, at) = (t / self.per_image(), t % self.per_image());
            let (y0, x0) = (2 * (at / self.tw), 2 * (at % self.tw));
            for (q, values) in block.chunks_exact(self.k).enumerate() {
                let (y, x) = (y0 + q / 2, x0 + q % 2);
                if y < self.oh && x < self.ow {
                    let o = ((img * self.oh + y) * self.ow + x) * self.k;
                    copy_row(&mut out[o..o + self.k], values);
                }
            }
        }
    }

    /// Output channels rounded up to whole lane blocks (weights and bias are padded with
    /// zeros to this).
    pub(super) fn padded_filters(&self) -> usize {
        self.k.next_multiple_of(LANES)
    }

    /// Where the 4×4 input window of tile `t` (counted over the whole batch) starts in the
    /// batch (its top-left pixel's first value; rows `w·c` values apart), when it lies
    /// wholly inside the image: then it is read in place, else [`Tiles::gather`]ed.
    #[inline(always)]
    pub(super) fn window_at(&self, t: usize) -> Option<usize> {
        let per_image = self.per_image();
        let (image, at) = (t / per_image, t % per_image);
        let (y0, x0) = (
            (2 * (at / self.tw)).checked_sub(self.pad)?,
            (2 * (at % self.tw)).checked_sub(self.pad)?,
        );
        (y0 + 4 <= self.h && x0 + 4 <= self.w)
            .then(|| ((image * self.h + y0) * self.w + x0) * self.c)
    }

    /// Copies the 4×4 input window of tile `t` (counted over the whole batch `x`) into
    /// `patch` (`16·c` values, pixel after pixel, zeros in the padding): four row copies
    /// where the window lies inside the image.
    #[inline(always)]
    pub(super) fn gather(&self, x: &[f32], t: usize, patch: &mut [f32]) {
        let per_image = self.per_image();
        let (image, at) = (t / per_image, t % per_image);
        let (y0, x0) = (
            (2 * (at / self.tw)).wrapping_sub(self.pad),
            (2 * (at % self.tw)).wrapping_sub(self.pad),
        );
        let c = self.c;
        let img = &x[image * self.h * self.w * c..][..self.h * self.w * c];
        let patch = &mut patch[..16 * c];
        // Wrapped (negative) origins are huge, so these also test the top and left edges.
        let inside = |at: usize, size: usize| at.checked_add(4).is_some_and(|end| end <= size);
        if inside(y0, self.h) && inside(x0, self.w) {
            for (i, row) in patch.chunks_exact_mut(4 * c).enumerate() {
                copy_row(row, &img[((y0 + i) * self.w + x0) * c..][..4 * c]);
            }
            return;
        }
        for (i, px) in patch.chunks_exact_mut(c).enumerate() {
            let (iy, ix) = (y0.wrapping_add(i / 4), x0.wrapping_add(i % 4));
            if iy < self.h && ix < self.w {
                copy_row(px, &img[(iy * self.w + ix) * c..][..c]);
            } else {
                px.fill(0.0);
            }
        }
    }
}

/// What every tile of one inference pass reads: the geometry, the input batch, and the
/// weights and bias as the kernel arranged them.
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    /// The geometry.
    pub t: Tiles,
    /// The batch, `[n, h, w, c]`.
    pub x: &'a [f32],
    /// The arranged weights.
    pub w: &'a [f32],
    /// The bias, padded to [`Tiles::padded_filters`].
    pub bias: &'a [f32],
}

/// The first `N` values of `s` as an array (a fixed-size view the compiler vectorises).
#[inline(always)]
pub(super) fn head<const N: usize>(s: &[f32]) -> &[f32; N] {
    match s.first_chunk() {
        Some(a) => a,
        None => panic!("fewer than {N} values"),
    }
}

/// `a · b + c`, fused where the instruction set has it: a fused multiply-add rounds once,
/// and without the instruction `mul_add` would be a slow library call.
#[inline(always)]
pub(super) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `max(0, y + bias)`, with the plain layers' comparison.
#[inline(always)]
pub(super) fn relu(y: f32, bias: f32) -> f32 {
    let v = y + bias;
    if v < 0.0 { 0.0 } else { v }
}

/// [`pool_relu`] for each lane of the four accumulated outputs of a block.
#[inline(always)]
pub(super) fn pool_relu_lanes(acc: [[f32; LANES]; 4], bias: [f32; LANES]) -> [f32; LANES] {
    // Arrays by value, and a plain loop rather than `array::from_fn`: a reference or a
    // closure would keep `acc` in memory instead of registers (measured: 10 % slower).
    let mut o = [0.0; LANES];
    for (l, o) in o.iter_mut().enumerate() {
        *o = pool_relu([acc[0][l], acc[1][l], acc[2][l], acc[3][l]], bias[l]);
    }
    o
}

/// The pooled, rectified output of one 2×2 block of convolution outputs and the bias:
/// `max(0, max(y00, y01, y10, y11) + bias)`, with the plain layers' comparisons (adding
/// the bias after the maximum gives the same value: rounding is monotonic).
#[inline(always)]
pub(super) fn pool_relu(y: [f32; 4], bias: f32) -> f32 {
    let mut m = y[0];
    for &v in &y[1..] {
        m = if v > m { v } else { m };
    }
    let m = m + bias;
    if m < 0.0 { 0.0 } else { m }
}
