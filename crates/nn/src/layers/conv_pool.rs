//! A 3×3 stride-1 convolution, ReLU and 2×2 max pooling as one layer, the stage every
//! small classification CNN is built from.
//!
//! Training runs the plain layers ([`Conv2d`] then [`ReluMaxPool2d`]) and keeps the
//! convolution's output for backward, so its results are those of the unfused layers bit
//! for bit. Inference never materialises the convolution's output: each pooled output is
//! computed from the 4×4 input window under it, straight into the pooled map, and only
//! the convolution outputs the pool reads are computed (an 11×11 map pooled to 5×5 reads
//! 10×10). Layers with many input channels use Winograd's F(2×2, 3×3) algorithm
//! ([`winograd`]: 16 multiplications per channel pair for a 2×2 output block instead of
//! 36), layers with few a direct loop ([`direct`]); both are checked against the plain
//! layers.

mod direct;
mod isa;
mod tiles;
mod winograd;

use rayon::prelude::*;

use super::{Context, Conv2d, Layer, Mode, Param, ReluMaxPool2d};
use crate::Tensor;
use isa::Isa;
use tiles::Tiles;

/// Input channels from which inference uses Winograd's algorithm rather than the direct
/// loop: its transforms cost about as much as 8 channels of direct work per tile.
const WINOGRAD_FROM_CHANNELS: usize = 8;

/// Parallel parts of an inference pass per thread (more than one, so that a thread slowed
/// by other work is helped out).
const PARTS_PER_THREAD: usize = 4;

/// Convolution (3×3, stride 1, any padding, optional bias), ReLU and 2×2 max pooling
/// with stride 2. `x` is `[n, h, w, c]`, `y` is `[n, oh/2, ow/2, oc]` where `oh × ow` is
/// the convolution's output. Built by the network in place of those three layers.
pub struct ConvReluMaxPool2d {
    conv: Conv2d,
    pool: ReluMaxPool2d,
    /// The convolution's output in training, kept for backward.
    conv_out: Tensor,
    /// Whether `conv_out` belongs to the last forward pass (an inference pass skips it).
    conv_out_current: bool,
    /// Its gradient.
    conv_grad: Tensor,
    tiles: Tiles,
    /// The weights as inference uses them (see [`winograd::transform_weights`] and
    /// [`direct::arrange_weights`]).
    eval_weights: Vec<f32>,
    /// The bias padded to [`Tiles::padded_filters`] (zeros without a bias).
    eval_bias: Vec<f32>,
    /// Whether `eval_weights` and `eval_bias` follow the parameters: cleared whenever
    /// they are handed out for change (`params_mut`, `tensors_mut`), the only ways to
    /// reach them.
    eval_weights_current: bool,
    /// Per-part workspaces of the inference kernels.
    workspaces: Vec<Vec<f32>>,
}

impl ConvReluMaxPool2d {
    /// Fuses `conv` with a ReLU and a 2×2 stride-2 max pool; errors when `conv` is not a
    /// 3×3 stride-1 convolution or its output is smaller than one pooling window.
    pub fn new(conv: Conv2d) -> Result<Self, crate::Error> {
        let (h, w, c) = conv.input_hwc();
        let (k, stride, pad) = conv.kernel_stride_pad();
        let [oh, ow, oc] = *conv.output_shape() else {
            return Err(crate::Error::Spec("conv2d output is not a map".into()));
        };
        if k != 3 || stride != 1 {
            return Err(crate::Error::Spec(format!(
                "only 3×3 stride-1 convolutions fuse with pooling, not {k}×{k} stride {stride}"
            )));
        }
        let pool = ReluMaxPool2d::new(&[oh, ow, oc], 2, 2)?;
        Ok(Self {
            conv,
            pool,
            conv_out: Tensor::default(),
            conv_out_current: false,
            conv_grad: Tensor::default(),
            tiles: Tiles::new(h, w, c, oc, pad, oh / 2, ow / 2),
            eval_weights: Vec::new(),
            eval_bias: Vec::new(),
            eval_weights_current: false,
            workspaces: Vec::new(),
        })
    }

    /// Whether inference uses Winograd's algorithm (else the direct loop).
    fn uses_winograd(&self) -> bool {
        self.tiles.c >= WINOGRAD_FROM_CHANNELS
    }

    /// The inference pass: `y` straight from `x`, without the convolution's output, with
    /// the kernels compiled for `isa`.
    fn infer(&mut self, isa: Isa, x: &Tensor, y: &mut Tensor) {
        let t = self.tiles;
        y.resize_batch(x.batch(), self.pool.output_shape());
        let winograd = self.uses_winograd();
        if !self.eval_weights_current {
            let weights = self.conv.weight();
            if winograd {
                winograd::transform_weights(&t, weights, &mut self.eval_weights);
            } else {
                direct::arrange_weights(&t, weights, &mut self.eval_weights);
            }
            self.eval_bias.clear();
            self.eval_bias
                .extend_from_slice(self.conv.bias().unwrap_or(&[]));
            self.eval_bias.resize(t.padded_filters(), 0.0);
            self.eval_weights_current = true;
        }
        let (group, ws_len) = if winograd {
            let group = isa.winograd_group();
            (group, winograd::workspace_len(&t, group))
        } else {
            (direct::GROUP, direct::workspace_len(&t))
        };
        // A few parts per thread, each with its own workspace, kept between batches. Parts
        // are whole groups; a tile's result does not depend on its part or group.
        let tiles = y.len() / t.k;
        let parts = tiles
            .div_ceil(group)
            .min(PARTS_PER_THREAD * rayon::current_num_threads())
            .max(1);
        let per_part = tiles.div_ceil(group).div_ceil(parts) * group;
        self.workspaces.resize_with(parts, Vec::new);
        for ws in &mut self.workspaces {
            ws.resize(ws_len, 0.0);
        }
        let (x, w, bias) = (x.data(), &self.eval_weights[..], &self.eval_bias[..]);
        y.data_mut()
            .par_chunks_mut(per_part * t.k)
            .zip(self.workspaces.par_iter_mut())
            .enumerate()
            .for_each(|(part, (out, ws))| {
                for (g, out) in out.chunks_mut(group * t.k).enumerate() {
                    let first = part * per_part + g * group;
                    if winograd {
                        isa.winograd(&t, x, w, bias, first, out, ws);
                    } else {
                        isa.direct(&t, x, w, bias, first, out, ws);
                    }
                }
            });
    }
}

impl Layer for ConvReluMaxPool2d {
    fn output_shape(&self) -> &[usize] {
        self.pool.output_shape()
    }

    fn flops(&self) -> u64 {
        self.conv.flops()
    }

    fn inference_flops(&self) -> u64 {
        let t = self.tiles;
        // Per tile: 16 products per channel pair (Winograd) or 4 outputs × 9 taps.
        let per_pair = if self.uses_winograd() { 16 } else { 36 };
        2 * (t.ph * t.pw * per_pair * t.c * t.k) as u64
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        if ctx.mode == Mode::Eval {
            self.infer(Isa::detect(), x, y);
            self.conv_out_current = false;
            return;
        }
        self.conv.forward(x, &mut self.conv_out, ctx);
        self.pool.forward(&self.conv_out, y, ctx);
        self.conv_out_current = true;
    }

    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        if self.conv_out_current {
            self.pool
                .backward(&self.conv_out, y, dy, Some(&mut self.conv_grad));
        } else {
            // Backward after an inference pass (unusual, but allowed): redo the training
            // pass, whose pooled output (not the inference one, which may differ in the
            // last bit) tells the pool's backward where each maximum was.
            let mut rng = crate::Rng::new(0);
            let mut ctx = Context {
                mode: Mode::Train,
                rng: &mut rng,
            };
            let mut pooled = Tensor::default();
            self.forward(x, &mut pooled, &mut ctx);
            self.pool
                .backward(&self.conv_out, &pooled, dy, Some(&mut self.conv_grad));
        }
        self.conv.backward(x, &self.conv_out, &self.conv_grad, dx);
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.eval_weights_current = false;
        self.conv.params_mut()
    }

    fn tensors(&self) -> Vec<(String, &Tensor)> {
        self.conv.tensors()
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.eval_weights_current = false;
        self.conv.tensors_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Init, Rng};

    fn layer(hwc: [usize; 3], filters: usize, pad: usize, bias: bool) -> ConvReluMaxPool2d {
        let mut rng = Rng::new(hwc.iter().sum::<usize>() as u64 + filters as u64);
        let conv = Conv2d::new(&hwc, filters, 3, 1, pad, bias, Init::Torch, &mut rng);
        ConvReluMaxPool2d::new(conv.expect("conv")).expect("fusable")
    }

    fn normal(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect()).expect("shape")
    }

    fn run(l: &mut ConvReluMaxPool2d, x: &Tensor, mode: Mode) -> Tensor {
        let mut y = Tensor::default();
        let mut rng = Rng::new(0);
        l.forward(
            x,
            &mut y,
            &mut Context {
                mode,
                rng: &mut rng,
            },
        );
        y
    }

    /// (input [h, w, c], filters, padding, bias): the `simple` network's two layers, odd
    /// and even sizes, channel counts that leave partial lane blocks, padding.
    const CASES: [([usize; 3], usize, usize, bool); 8] = [
        ([28, 28, 1], 32, 0, true),
        ([13, 13, 32], 64, 0, true),
        ([7, 9, 3], 5, 1, false),
        ([6, 6, 8], 40, 1, true),
        ([5, 5, 20], 17, 0, true),
        ([4, 4, 1], 3, 2, true),
        ([9, 8, 12], 33, 1, false),
        ([4, 5, 7], 16, 0, true),
    ];

    #[test]
    fn inference_matches_the_training_pass_on_every_instruction_set() {
        for (hwc, filters, pad, bias) in CASES {
            for n in [1, 3, 13] {
                let mut l = layer(hwc, filters, pad, bias);
                let x = normal(&[n, hwc[0], hwc[1], hwc[2]], n as u64);
                let want = run(&mut l, &x, Mode::Train);
                for isa in Isa::available() {
                    let mut got = Tensor::default();
                    l.infer(isa, &x, &mut got);
                    assert_eq!(got.shape(), want.shape());
                    for (i, (&a, &b)) in got.data().iter().zip(want.data()).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{hwc:?} {filters} pad {pad} n {n} {isa:?} at {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn vector_instruction_sets_agree_bit_for_bit_and_images_do_not_mix() {
        for (hwc, filters, pad, bias) in CASES {
            let mut l = layer(hwc, filters, pad, bias);
            let x = normal(&[5, hwc[0], hwc[1], hwc[2]], 9);
            let outputs: Vec<Tensor> = Isa::available()
                .into_iter()
                .filter(|&isa| isa != Isa::Generic)
                .map(|isa| {
                    let mut y = Tensor::default();
                    l.infer(isa, &x, &mut y);
                    y
                })
                .collect();
            for y in &outputs[1..] {
                assert!(
                    y == &outputs[0],
                    "{hwc:?} {filters}: instruction sets differ"
                );
            }
            // Each image alone gives the values it gets in the batch.
            let all = run(&mut l, &x, Mode::Eval);
            let size = x.len() / 5;
            for i in 0..5 {
                let one = Tensor::from_vec(
                    &[1, hwc[0], hwc[1], hwc[2]],
                    x.data()[i * size..][..size].to_vec(),
                )
                .expect("shape");
                let y = run(&mut l, &one, Mode::Eval);
                assert_eq!(
                    y.data(),
                    &all.data()[i * y.len()..][..y.len()],
                    "{hwc:?} image {i}"
                );
            }
        }
    }

    #[test]
    fn backward_after_an_inference_pass_is_the_training_gradient() {
        let (hwc, filters, pad, bias) = CASES[3];
        let x = normal(&[2, hwc[0], hwc[1], hwc[2]], 4);
        let grads = |eval_first: bool| {
            let mut l = layer(hwc, filters, pad, bias);
            let y = run(&mut l, &x, Mode::Train);
            let dy = normal(y.shape(), 5);
            let y = if eval_first {
                run(&mut l, &x, Mode::Eval)
            } else {
                y
            };
            let mut dx = Tensor::default();
            l.backward(&x, &y, &dy, Some(&mut dx));
            let mut all = dx.into_vec();
            for p in l.params_mut() {
                all.extend_from_slice(p.grad.data());
            }
            all
        };
        assert_eq!(grads(true), grads(false));
    }

    #[test]
    fn inference_follows_weight_changes() {
        let (hwc, filters, pad, bias) = CASES[1];
        let mut l = layer(hwc, filters, pad, bias);
        let x = normal(&[2, hwc[0], hwc[1], hwc[2]], 6);
        let before = run(&mut l, &x, Mode::Eval);
        let close = |a: &Tensor, b: &Tensor| {
            a.data()
                .iter()
                .zip(b.data())
                .all(|(&a, &b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
        };
        // Through the optimizer's door...
        for p in l.params_mut() {
            p.value.data_mut().iter_mut().for_each(|v| *v *= -0.5);
        }
        let after = run(&mut l, &x, Mode::Eval);
        assert!(!close(&after, &before));
        assert!(close(&after, &run(&mut l, &x, Mode::Train)));
        // ...and the loader's.
        for (_, t) in l.tensors_mut() {
            t.data_mut().iter_mut().for_each(|v| *v += 0.25);
        }
        let loaded = run(&mut l, &x, Mode::Eval);
        assert!(!close(&loaded, &after));
        assert!(close(&loaded, &run(&mut l, &x, Mode::Train)));
    }
}
