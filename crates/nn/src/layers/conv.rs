//! 2-D convolution on NHWC activations, as im2col followed by one matrix product; in bf16
//! on AMX, stride 1 with channel counts that are multiples of 32, as the implicit product
//! of [`super::conv_amx`] (no im2col matrix).

use rayon::prelude::*;

use super::{Context, Layer, Param, ParamKind, TensorKey, WeightBias};
use crate::Precision;
use crate::copy::copy_row;
use crate::matmul::bf16::{self, BLOCK};
use crate::matmul::{Mat, column_sums, matmul_in, matmul_tn_reduce_in};
use crate::precision::Bf16Isa;
use crate::{Init, Rng, Tensor};

/// 2-D convolution with square kernels, stride and zero padding.
///
/// `x` is `[n, h, w, c]`, `y` is `[n, oh, ow, oc]` with `oh = (h + 2p - k)/s + 1`;
/// the weight is `[oc, k, k, c]` and the optional bias `[oc]`.
pub struct Conv2d {
    geom: Geometry,
    params: WeightBias,
    out_shape: Vec<usize>,
    /// im2col workspace `[n·oh·ow, k·k·c (+1)]`, reused between batches (and by backward).
    /// With a bias, each row ends in a 1 and the bias is the weights' last column, so the
    /// product adds it: the output is written once instead of broadcast, read and rewritten.
    col: Vec<f32>,
    /// The im2col matrix rounded to bf16 and packed (rows `padded(ld)` wide), in place
    /// of `col` when the products run in bf16.
    col_bf16: Vec<u16>,
    /// The weights with the bias appended as a last column, `[oc, k·k·c + 1]`.
    weight_bias: Vec<f32>,
    /// Per-block partial weight gradients.
    parts: Vec<f32>,
    /// The arithmetic of the last forward pass, which its backward repeats.
    precision: Precision,
    /// The geometry of the implicit AMX product, where it applies (stride 1, channel
    /// counts multiples of 32): in bf16 on AMX, no im2col matrix.
    #[cfg(target_arch = "x86_64")]
    implicit: Option<super::conv_amx::Implicit>,
    /// Its buffers.
    #[cfg(target_arch = "x86_64")]
    amx: super::conv_amx::Buffers,
}

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    h: usize,
    w: usize,
    c: usize,
    oc: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// Columns of the im2col matrix: one kernel window.
    fn window(&self) -> usize {
        self.k * self.k * self.c
    }

    /// Output positions per image.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
}

impl Conv2d {
    /// A convolution for `[h, w, c]` inputs; errors if the kernel does not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: &[usize],
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self, crate::Error> {
        let [h, w, c] = *input else {
            return Err(crate::Error::Spec(format!(
                "conv2d needs a [height, width, channels] input, got {input:?}"
            )));
        };
        if filters == 0 || kernel == 0 || stride == 0 {
            return Err(crate::Error::Spec(
                "conv2d filters, kernel and stride must be at least 1".into(),
            ));
        }
        // Checked: the numbers may come from a file, and must not wrap round.
        let span = |n: usize| padding.checked_mul(2)?.checked_add(n)?.checked_sub(kernel);
        let (Some(span_h), Some(span_w)) = (span(h), span(w)) else {
            return Err(crate::Error::Spec(format!(
                "conv2d kernel {kernel} does not fit a {h}×{w} input with padding {padding}"
            )));
        };
        let (oh, ow) = (span_h / stride + 1, span_w / stride + 1);
        let geom = Geometry {
            h,
            w,
            c,
            oc: filters,
            k: kernel,
            stride,
            pad: padding,
            oh,
            ow,
        };
        let fan_in = kernel * kernel * c;
        let fan_out = kernel * kernel * filters;
        let weight = init.weight(&[filters, kernel, kernel, c], fan_in, fan_out, rng);
        let bias = bias.then(|| init.bias(filters, fan_in, rng));
        Ok(Self {
            geom,
            params: WeightBias {
                weight: Param::new(weight, ParamKind::Weight),
                bias: bias.map(|b| Param::new(b, ParamKind::Bias)),
            },
            out_shape: vec![oh, ow, filters],
            col: Vec::new(),
            col_bf16: Vec::new(),
            weight_bias: Vec::new(),
            parts: Vec::new(),
            precision: Precision::F32,
            #[cfg(target_arch = "x86_64")]
            implicit: (stride == 1)
                .then(|| super::conv_amx::Implicit::new([h, w, c], filters, kernel, padding))
                .flatten(),
            #[cfg(target_arch = "x86_64")]
            amx: Default::default(),
        })
    }
}

impl Conv2d {
    /// The implicit AMX product's geometry, if this pass runs it.
    #[cfg(target_arch = "x86_64")]
    fn implicit(&self) -> Option<super::conv_amx::Implicit> {
        match self.precision {
            Precision::Bf16(Bf16Isa::Amx) => self.implicit,
            _ => None,
        }
    }

    /// The bf16 instruction set of this layer's products for `rows` output positions, if
    /// they run in bf16: with bf16 precision and every side of every product (positions,
    /// kernel window, filters) at least one block long, as in [`matmul_in`].
    fn bf16_isa(&self, rows: usize) -> Option<Bf16Isa> {
        match self.precision {
            Precision::Bf16(isa) if rows.min(self.geom.window()).min(self.geom.oc) >= BLOCK => {
                Some(isa)
            }
            _ => None,
        }
    }

    /// The input's `[h, w, c]`.
    pub(crate) fn input_hwc(&self) -> (usize, usize, usize) {
        (self.geom.h, self.geom.w, self.geom.c)
    }

    /// Kernel side, stride and padding.
    pub(crate) fn kernel_stride_pad(&self) -> (usize, usize, usize) {
        (self.geom.k, self.geom.stride, self.geom.pad)
    }

    /// The weights, `[oc, k, k, c]`.
    pub(crate) fn weight(&self) -> &[f32] {
        self.params.weight.value.data()
    }

    /// The bias, `[oc]`, if there is one.
    pub(crate) fn bias(&self) -> Option<&[f32]> {
        self.params.bias.as_ref().map(|b| b.value.data())
    }
}

/// Fills `col` (`[oh·ow, ld]` for one image) from one image `x` (`[h, w, c]`): each row
/// holds a kernel window, then a 1 when `ld` leaves room for it (the bias column).
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32], ld: usize) {
    let kc = g.k * g.c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let full = &mut col[(oy * g.ow + ox) * ld..][..ld];
            let (row, ones) = full.split_at_mut(g.window());
            ones.fill(1.0);
            for ky in 0..g.k {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                let dst = &mut row[ky * kc..][..kc];
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let x0 = (ox * g.stride) as isize - g.pad as isize;
                if x0 >= 0 && x0 as usize + g.k <= g.w {
                    // The whole kernel row is inside the image: one contiguous copy.
                    let start = (iy as usize * g.w + x0 as usize) * g.c;
                    copy_row(dst, &x[start..start + kc]);
                } else {
                    for kx in 0..g.k {
                        let ix = x0 + kx as isize;
                        let d = &mut dst[kx * g.c..][..g.c];
                        if ix < 0 || ix >= g.w as isize {
                            d.fill(0.0);
                        } else {
                            let s = (iy as usize * g.w + ix as usize) * g.c;
                            copy_row(d, &x[s..s + g.c]);
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns `col` back into image gradient `dx` (`[h, w, c]`): im2col's adjoint.
fn col2im(g: &Geometry, col: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let kc = g.k * g.c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let row = &col[(oy * g.ow + ox) * g.window()..][..g.window()];
            for ky in 0..g.k {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let src = &row[ky * kc..][..kc];
                let x0 = (ox * g.stride) as isize - g.pad as isize;
                if x0 >= 0 && x0 as usize + g.k <= g.w {
                    // The whole kernel row is inside the image: one contiguous add.
                    let start = (iy as usize * g.w + x0 as usize) * g.c;
                    for (a, &b) in dx[start..start + kc].iter_mut().zip(src) {
                        *a += b;
                    }
                    continue;
                }
                for kx in 0..g.k {
                    let ix = x0 + kx as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let d = &mut dx[(iy as usize * g.w + ix as usize) * g.c..][..g.c];
                    for (a, &b) in d.iter_mut().zip(&src[kx * g.c..][..g.c]) {
                        *a += b;
                    }
                }
            }
        }
    }
}

impl Layer for Conv2d {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    // The im2col matrix, one row per output position (padding included), plus the
    // bias column; or the implicit product's bf16 copies, if they are larger.
    fn scratch_per_example(&self) -> usize {
        let im2col = self
            .geom
            .positions()
            .saturating_mul(self.geom.window().saturating_add(1));
        #[cfg(target_arch = "x86_64")]
        if let Some(implicit) = &self.implicit {
            return im2col.max(implicit.values_per_example());
        }
        im2col
    }

    fn flops(&self) -> u64 {
        2 * (self.geom.positions() * self.geom.window() * self.geom.oc) as u64
    }

    // col = [im2col(x), 1];  y[n·oh·ow, oc] = col · [W, b]ᵀ
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        self.precision = ctx.precision;
        let g = self.geom;
        let n = x.batch();
        let (rows, window) = (n * g.positions(), g.window());
        let ld = window + usize::from(self.params.bias.is_some());
        let in_size = g.h * g.w * g.c;
        #[cfg(target_arch = "x86_64")]
        if let Some(implicit) = self.implicit() {
            assert!(Bf16Isa::Amx.is_available(), "AMX is not available");
            y.resize_batch(n, &self.out_shape);
            let bias = self.params.bias.as_ref().map(|b| b.value.data());
            let w = self.params.weight.value.data();
            super::conv_amx::forward(&implicit, &mut self.amx, x.data(), w, bias, y.data_mut());
            return;
        }
        let bf16 = self.bf16_isa(rows);
        if bf16.is_some() {
            // Each image's columns are built in fp32 in a small buffer and rounded into
            // the packed matrix: the full fp32 matrix is never written.
            let kp = bf16::padded(ld);
            let packed = bf16::aligned_mut(&mut self.col_bf16, bf16::padded(rows) * kp);
            let (images, tail) = packed.split_at_mut(rows * kp);
            tail.fill(0);
            images
                .par_chunks_mut(g.positions() * kp)
                .zip(x.data().par_chunks(in_size))
                .for_each_init(Vec::new, |buf: &mut Vec<f32>, (dst, img)| {
                    buf.resize(g.positions() * ld, 0.0);
                    im2col(&g, img, buf, ld);
                    for (d, s) in dst.chunks_exact_mut(kp).zip(buf.chunks_exact(ld)) {
                        bf16::round_row(d, s);
                    }
                });
        } else {
            self.col.resize(rows * ld, 0.0);
            self.col
                .par_chunks_mut(g.positions() * ld)
                .zip(x.data().par_chunks(in_size))
                .for_each(|(col, img)| im2col(&g, img, col, ld));
        }
        y.resize_batch(n, &self.out_shape);
        let w = self.params.weight.value.data();
        let weights = match &self.params.bias {
            Some(b) => {
                self.weight_bias.resize(g.oc * ld, 0.0);
                for ((dst, src), &bias) in self
                    .weight_bias
                    .chunks_exact_mut(ld)
                    .zip(w.chunks_exact(window))
                    .zip(b.value.data())
                {
                    dst[..window].copy_from_slice(src);
                    dst[window] = bias;
                }
                &self.weight_bias[..]
            }
            None => w,
        };
        let weights = Mat::new(weights, g.oc, ld).t();
        match bf16 {
            Some(isa) => {
                let kp = bf16::padded(ld);
                let pa = bf16::aligned(&self.col_bf16, bf16::padded(rows) * kp);
                bf16::matmul_bf16_packed_a(isa, y.data_mut(), pa, rows, kp, weights, false);
            }
            None => matmul_in(
                self.precision,
                y.data_mut(),
                Mat::new(&self.col, rows, ld),
                weights,
                false,
            ),
        }
    }

    // dW[oc, kkc] = dyᵀ · col;  db = Σ_rows dy;  dcol = dy · W;  dx = col2im(dcol)
    fn backward(&mut self, _x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let g = self.geom;
        let n = dy.batch();
        let (rows, window) = (n * g.positions(), g.window());
        let dyv = Mat::new(dy.data(), rows, g.oc);
        let ld = window + usize::from(self.params.bias.is_some());
        #[cfg(target_arch = "x86_64")]
        if let Some(implicit) = self.implicit() {
            let (w, dw) = (
                self.params.weight.value.data(),
                self.params.weight.grad.data_mut(),
            );
            let dx = dx.map(|dx| {
                dx.resize_batch(n, &[g.h, g.w, g.c]);
                dx.data_mut()
            });
            super::conv_amx::backward(&implicit, &mut self.amx, w, dy.data(), dw, dx);
            if let Some(b) = &mut self.params.bias {
                column_sums(b.grad.data_mut(), dy.data(), &mut self.parts);
            }
            return;
        }
        let bf16 = self.bf16_isa(rows);
        let dw = self.params.weight.grad.data_mut();
        match bf16 {
            Some(isa) => {
                let kp = bf16::padded(ld);
                let packed = bf16::aligned(&self.col_bf16, bf16::padded(rows) * kp);
                bf16::matmul_bf16_tn_rows(isa, dw, dyv, packed, kp, window);
            }
            None => {
                let col = Mat::with_stride(&self.col, rows, window, ld);
                matmul_tn_reduce_in(self.precision, dw, dyv, col, &mut self.parts);
            }
        }
        if let Some(b) = &mut self.params.bias {
            column_sums(b.grad.data_mut(), dy.data(), &mut self.parts);
        }
        let Some(dx) = dx else { return };
        // The columns are no longer needed: reuse the workspace for their gradient.
        self.col.resize(rows * window, 0.0);
        matmul_in(
            self.precision,
            &mut self.col,
            dyv,
            Mat::new(self.params.weight.value.data(), g.oc, window),
            false,
        );
        dx.resize_batch(n, &[g.h, g.w, g.c]);
        let in_size = g.h * g.w * g.c;
        dx.data_mut()
            .par_chunks_mut(in_size)
            .zip(self.col.par_chunks(g.positions() * window))
            .for_each(|(img, col)| col2im(&g, col, img));
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.params.params_mut()
    }

    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        self.params.tensors()
    }

    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        self.params.tensors_mut()
    }
}

/// The plain definition of convolution, the test oracle of [`Conv2d`]:
/// `y[n,oy,ox,o] = b[o] + Σ_{ky,kx,c} x[n, oy·s+ky-p, ox·s+kx-p, c] · w[o,ky,kx,c]`.
pub fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Tensor {
    let [n, h, wd, c] = *x.shape() else {
        panic!("x must be NHWC")
    };
    let [oc, k, _, _] = *w.shape() else {
        panic!("w must be [oc,k,k,c]")
    };
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let mut y = Tensor::zeros(&[n, oh, ow, oc]);
    let (xd, wdat) = (x.data(), w.data());
    for i in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..oc {
                    let mut acc = b.map_or(0.0, |b| b.data()[o] as f64);
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for ci in 0..c {
                                let xv = xd[((i * h + iy as usize) * wd + ix as usize) * c + ci];
                                let wv = wdat[((o * k + ky) * k + kx) * c + ci];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y.data_mut()[((i * oh + oy) * ow + ox) * oc + o] = acc as f32;
                }
            }
        }
    }
    y
}
