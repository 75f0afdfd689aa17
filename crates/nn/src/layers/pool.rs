//! Pooling on NHWC activations: windowed max and average, and global (whole-map) pooling.

use rayon::prelude::*;

use super::{Context, Layer};
use crate::Tensor;
use crate::copy::copy_row;

/// Window geometry shared by the windowed pools.
#[derive(Clone, Copy, Debug)]
struct Window {
    h: usize,
    w: usize,
    c: usize,
    size: usize,
    stride: usize,
    oh: usize,
    ow: usize,
}

impl Window {
    fn new(name: &str, input: &[usize], size: usize, stride: usize) -> Result<Self, crate::Error> {
        let [h, w, c] = *input else {
            return Err(crate::Error::Spec(format!(
                "{name} needs a [height, width, channels] input, got {input:?}"
            )));
        };
        if size == 0 || stride == 0 || size > h || size > w {
            return Err(crate::Error::Spec(format!(
                "{name} size {size} stride {stride} does not fit a {h}×{w} input"
            )));
        }
        let (oh, ow) = ((h - size) / stride + 1, (w - size) / stride + 1);
        Ok(Self {
            h,
            w,
            c,
            size,
            stride,
            oh,
            ow,
        })
    }

    fn in_size(&self) -> usize {
        self.h * self.w * self.c
    }

    fn out_size(&self) -> usize {
        self.oh * self.ow * self.c
    }
}

/// Max pooling over `size × size` windows every `stride` pixels, no padding.
/// `x` is `[n, h, w, c]`, `y` is `[n, (h-size)/stride+1, (w-size)/stride+1, c]`.
///
/// No argmax is stored: backward finds, in each window, the first input equal to the
/// output. Both passes are then plain per-channel selects that vectorise.
pub struct MaxPool2d {
    win: Window,
    out_shape: Vec<usize>,
}

impl MaxPool2d {
    /// A max pool for `[h, w, c]` inputs.
    pub fn new(input: &[usize], size: usize, stride: usize) -> Result<Self, crate::Error> {
        let win = Window::new("max_pool2d", input, size, stride)?;
        Ok(Self {
            win,
            out_shape: vec![win.oh, win.ow, win.c],
        })
    }
}

impl Window {
    /// Offset in one image of the first channel of window slot `slot` of output `o`.
    fn slot_offset(&self, o: usize, slot: usize) -> usize {
        let (oy, ox) = (o / self.ow, o % self.ow);
        let (i, j) = (slot / self.size, slot % self.size);
        ((oy * self.stride + i) * self.w + ox * self.stride + j) * self.c
    }
}

impl Layer for MaxPool2d {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    // y[oy,ox,c] = max over the window of x[oy·s+i, ox·s+j, c]
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        let g = self.win;
        y.resize_batch(x.batch(), &self.out_shape);
        y.data_mut()
            .par_chunks_mut(g.out_size())
            .zip(x.data().par_chunks(g.in_size()))
            .for_each(|(out, img)| {
                for (o, out) in out.chunks_exact_mut(g.c).enumerate() {
                    let first = g.slot_offset(o, 0);
                    copy_row(out, &img[first..first + g.c]);
                    for slot in 1..g.size * g.size {
                        let base = g.slot_offset(o, slot);
                        for (m, &v) in out.iter_mut().zip(&img[base..base + g.c]) {
                            *m = if v > *m { v } else { *m };
                        }
                    }
                }
            });
    }

    // dx[first window position where x = y] += dy (ties go to the first, as in PyTorch)
    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        if let Some(dx) = dx {
            max_pool_backward(&self.win, x, y, dy, dx, false);
        }
    }
}

/// The backward pass of max pooling, after a ReLU when `relu`: each output's gradient goes
/// to the first input of its window equal to the output (none when a ReLU zeroed it).
fn max_pool_backward(g: &Window, x: &Tensor, y: &Tensor, dy: &Tensor, dx: &mut Tensor, relu: bool) {
    dx.resize(x.shape());
    let images = dx
        .data_mut()
        .par_chunks_mut(g.in_size())
        .zip(x.data().par_chunks(g.in_size()));
    let outputs = y
        .data()
        .par_chunks(g.out_size())
        .zip(dy.data().par_chunks(g.out_size()));
    images.zip(outputs).for_each(|((d, img), (out, gy))| {
        d.fill(0.0);
        let mut pending = vec![0.0f32; g.c];
        for (o, (out, gy)) in out.chunks_exact(g.c).zip(gy.chunks_exact(g.c)).enumerate() {
            // The gradient still to place; zero once placed, so later equal inputs get none.
            if relu {
                for ((p, &yv), &gv) in pending.iter_mut().zip(out).zip(gy) {
                    // A zero output came from ReLU (or a zero input): no gradient flows.
                    *p = if yv > 0.0 { gv } else { 0.0 };
                }
            } else {
                copy_row(&mut pending, gy);
            }
            scatter_to_first_max(g, o, img, out, &mut pending, d);
        }
    });
}

/// ReLU followed by max pooling, in one pass: `y = max(0, max over the window of x)`.
/// The same function and gradients as [`super::Relu`] then [`MaxPool2d`] (their test
/// oracle), without the intermediate tensor. Built in their place by the network.
pub struct ReluMaxPool2d {
    pool: MaxPool2d,
}

impl ReluMaxPool2d {
    /// A fused ReLU and max pool for `[h, w, c]` inputs.
    pub fn new(input: &[usize], size: usize, stride: usize) -> Result<Self, crate::Error> {
        Ok(Self {
            pool: MaxPool2d::new(input, size, stride)?,
        })
    }
}

impl Layer for ReluMaxPool2d {
    fn output_shape(&self) -> &[usize] {
        &self.pool.out_shape
    }

    // y = max(0, maxpool(x)) = maxpool(relu(x))
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        self.pool.forward(x, y, ctx);
        for v in y.data_mut() {
            *v = if *v < 0.0 { 0.0 } else { *v };
        }
    }

    // dx = dy at the first window position where x = y, when y > 0 (else ReLU blocks it)
    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        if let Some(dx) = dx {
            max_pool_backward(&self.pool.win, x, y, dy, dx, true);
        }
    }
}

/// Adds `pending[ch]` to `d` at the first position of window `o` where the input equals the
/// output, per channel; `pending` is consumed (zeroed where placed).
#[inline(always)]
fn scatter_to_first_max(
    g: &Window,
    o: usize,
    img: &[f32],
    out: &[f32],
    pending: &mut [f32],
    d: &mut [f32],
) {
    for slot in 0..g.size * g.size {
        let base = g.slot_offset(o, slot);
        let lanes = d[base..base + g.c].iter_mut().zip(&img[base..base + g.c]);
        for ((dv, &xv), (&yv, p)) in lanes.zip(out.iter().zip(pending.iter_mut())) {
            // Bit masks rather than `if`: the compiler would turn `*p = if hit { 0.0 }
            // else { *p }` into a conditional store, which does not vectorise.
            let hit = if xv == yv { u32::MAX } else { 0 };
            *dv += f32::from_bits(p.to_bits() & hit);
            *p = f32::from_bits(p.to_bits() & !hit);
        }
    }
}

/// Average pooling over `size × size` windows every `stride` pixels, no padding.
/// Shapes as [`MaxPool2d`].
pub struct AvgPool2d {
    win: Window,
    out_shape: Vec<usize>,
}

impl AvgPool2d {
    /// An average pool for `[h, w, c]` inputs.
    pub fn new(input: &[usize], size: usize, stride: usize) -> Result<Self, crate::Error> {
        let win = Window::new("avg_pool2d", input, size, stride)?;
        Ok(Self {
            win,
            out_shape: vec![win.oh, win.ow, win.c],
        })
    }
}

impl Layer for AvgPool2d {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    // y[oy,ox,c] = mean over the window of x[oy·s+i, ox·s+j, c]
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        let g = self.win;
        y.resize_batch(x.batch(), &self.out_shape);
        let scale = 1.0 / (g.size * g.size) as f32;
        y.data_mut()
            .par_chunks_mut(g.out_size())
            .zip(x.data().par_chunks(g.in_size()))
            .for_each(|(out, img)| {
                out.fill(0.0);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = &mut out[(oy * g.ow + ox) * g.c..][..g.c];
                        for i in 0..g.size {
                            for j in 0..g.size {
                                let base = ((oy * g.stride + i) * g.w + ox * g.stride + j) * g.c;
                                for (a, &v) in o.iter_mut().zip(&img[base..base + g.c]) {
                                    *a += v;
                                }
                            }
                        }
                        o.iter_mut().for_each(|a| *a *= scale);
                    }
                }
            });
    }

    // dx[window] += dy / size²
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        let g = self.win;
        dx.resize(x.shape());
        let scale = 1.0 / (g.size * g.size) as f32;
        dx.data_mut()
            .par_chunks_mut(g.in_size())
            .zip(dy.data().par_chunks(g.out_size()))
            .for_each(|(d, gy)| {
                d.fill(0.0);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = &gy[(oy * g.ow + ox) * g.c..][..g.c];
                        for i in 0..g.size {
                            for j in 0..g.size {
                                let base = ((oy * g.stride + i) * g.w + ox * g.stride + j) * g.c;
                                for (a, &v) in d[base..base + g.c].iter_mut().zip(o) {
                                    *a += v * scale;
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// Checks a global pool's input and returns `(h·w, c)`.
fn global_dims(name: &str, input: &[usize]) -> Result<(usize, usize), crate::Error> {
    match *input {
        [h, w, c] if h * w * c > 0 => Ok((h * w, c)),
        _ => Err(crate::Error::Spec(format!(
            "{name} needs a non-empty [height, width, channels] input, got {input:?}"
        ))),
    }
}

/// Global average pooling: `[n, h, w, c]` to `[n, c]`, the mean over all positions.
pub struct GlobalAvgPool {
    hw: usize,
    out_shape: Vec<usize>,
}

impl GlobalAvgPool {
    /// A global average pool for `[h, w, c]` inputs.
    pub fn new(input: &[usize]) -> Result<Self, crate::Error> {
        let (hw, c) = global_dims("global_avg_pool", input)?;
        Ok(Self {
            hw,
            out_shape: vec![c],
        })
    }
}

impl Layer for GlobalAvgPool {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    // y[n,c] = Σ_p x[n,p,c] / (h·w)
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        let c = self.out_shape[0];
        y.resize_batch(x.batch(), &self.out_shape);
        let scale = 1.0 / self.hw as f32;
        for (out, img) in y
            .data_mut()
            .chunks_exact_mut(c)
            .zip(x.data().chunks_exact(self.hw * c))
        {
            out.fill(0.0);
            for px in img.chunks_exact(c) {
                for (a, &v) in out.iter_mut().zip(px) {
                    *a += v;
                }
            }
            out.iter_mut().for_each(|a| *a *= scale);
        }
    }

    // dx[n,p,c] = dy[n,c] / (h·w)
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        let c = self.out_shape[0];
        dx.resize(x.shape());
        let scale = 1.0 / self.hw as f32;
        for (d, g) in dx
            .data_mut()
            .chunks_exact_mut(self.hw * c)
            .zip(dy.data().chunks_exact(c))
        {
            for px in d.chunks_exact_mut(c) {
                for (a, &v) in px.iter_mut().zip(g) {
                    *a = v * scale;
                }
            }
        }
    }
}

/// Global max pooling: `[n, h, w, c]` to `[n, c]`, the maximum over all positions.
pub struct GlobalMaxPool {
    hw: usize,
    out_shape: Vec<usize>,
    argmax: Vec<u32>,
}

impl GlobalMaxPool {
    /// A global max pool for `[h, w, c]` inputs.
    pub fn new(input: &[usize]) -> Result<Self, crate::Error> {
        let (hw, c) = global_dims("global_max_pool", input)?;
        Ok(Self {
            hw,
            out_shape: vec![c],
            argmax: Vec::new(),
        })
    }
}

impl Layer for GlobalMaxPool {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    // y[n,c] = max_p x[n,p,c]
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        let c = self.out_shape[0];
        let n = x.batch();
        y.resize_batch(n, &self.out_shape);
        self.argmax.resize(n * c, 0);
        let chunks = y
            .data_mut()
            .chunks_exact_mut(c)
            .zip(self.argmax.chunks_exact_mut(c));
        for ((out, arg), img) in chunks.zip(x.data().chunks_exact(self.hw * c)) {
            out.copy_from_slice(&img[..c]);
            arg.iter_mut()
                .enumerate()
                .for_each(|(ch, a)| *a = ch as u32);
            for (p, px) in img.chunks_exact(c).enumerate().skip(1) {
                for ch in 0..c {
                    if px[ch] > out[ch] {
                        out[ch] = px[ch];
                        arg[ch] = (p * c + ch) as u32;
                    }
                }
            }
        }
    }

    // dx[n, argmax, c] = dy[n, c]
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        let c = self.out_shape[0];
        dx.resize(x.shape());
        let chunks = dx
            .data_mut()
            .chunks_exact_mut(self.hw * c)
            .zip(self.argmax.chunks_exact(c));
        for ((d, arg), g) in chunks.zip(dy.data().chunks_exact(c)) {
            d.fill(0.0);
            for (&a, &v) in arg.iter().zip(g) {
                d[a as usize] = v;
            }
        }
    }
}
