//! A 3×3 stride-1 convolution with what follows it in most small CNNs, as one layer:
//! ReLU and 2×2 max pooling, batch norm, ReLU and 2×2 max pooling, or batch norm and ReLU.
//!
//! Training runs the plain layers ([`Conv2d`], [`BatchNorm`] with its ReLU, the pool) and
//! keeps their outputs for backward, so its results are those of the unfused layers bit
//! for bit; except a block of few input channels with ReLU and pool (a network's first
//! layer), which trains with its own direct kernels ([`train`]): the plain layers'
//! im2col matrix and full-size output cost that layer several times its arithmetic.
//! Inference folds the batch norm (running statistics) into the convolution's
//! weights and bias and never materialises the convolution's output: each 2×2 block of
//! outputs is computed from the 4×4 input window under it and written rectified, or
//! pooled when a pool follows, in which case only the outputs the pool reads are
//! computed (an 11×11 map pooled to 5×5 reads 10×10). Layers with many input channels use
//! Winograd's F(2×2, 3×3) algorithm ([`winograd`]: 16 multiplications per channel pair
//! for a 2×2 block instead of 36), layers with few a direct loop ([`direct`]; only before
//! a pool); both are checked against the plain layers. Inference in bf16 on AMX
//! ([`crate::Precision`]) runs the implicit tile product of [`super::conv_amx`] on the
//! folded weights, then ReLU and the pool, for channel counts that fit it; other layers
//! and other precisions keep the fp32 kernels.

mod direct;
#[cfg(target_arch = "x86_64")]
mod direct_bf16;
mod isa;
mod tiles;
mod train;
mod winograd;
#[cfg(target_arch = "x86_64")]
mod winograd_bf16;
mod winograd_train;

use rayon::prelude::*;

use super::{BatchNorm, Context, Conv2d, Layer, MaxPool2d, Mode, Param, ReluMaxPool2d, TensorKey};
use crate::Tensor;
use isa::Isa;
use tiles::{Pass, Tiles};
use winograd_train::OutputGrad;

/// Input channels from which inference uses Winograd's algorithm rather than the direct
/// loop: its transforms cost about as much as 8 channels of direct work per tile.
pub(crate) const WINOGRAD_FROM_CHANNELS: usize = 8;

/// Parallel parts of an inference pass per thread (more than one, so that a thread slowed
/// by other work is helped out).
const PARTS_PER_THREAD: usize = 4;

/// The kernels that train a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernels {
    /// The plain layers.
    Plain,
    /// The direct kernels ([`train`]): few input channels, ReLU and pool.
    Direct,
    /// Winograd's algorithm ([`winograd_train`]): more input channels, ReLU and pool.
    Winograd,
    /// Winograd's algorithm for the convolution, then the plain batch norm (and pool).
    WinogradMap,
}

/// What follows the convolution.
enum Tail {
    /// ReLU and 2×2 max pool.
    ReluPool(ReluMaxPool2d),
    /// Batch norm with its ReLU, then 2×2 max pool.
    NormPool(BatchNorm, MaxPool2d),
    /// Batch norm with its ReLU.
    Norm(BatchNorm),
}

impl Tail {
    /// The batch norm, if there is one.
    fn norm(&self) -> Option<&BatchNorm> {
        match self {
            Tail::ReluPool(_) => None,
            Tail::NormPool(n, _) | Tail::Norm(n) => Some(n),
        }
    }

    /// The batch norm, if there is one, for change.
    fn norm_mut(&mut self) -> Option<&mut BatchNorm> {
        match self {
            Tail::ReluPool(_) => None,
            Tail::NormPool(n, _) | Tail::Norm(n) => Some(n),
        }
    }
}

/// A 3×3 stride-1 convolution (any padding, optional bias) followed by one of: ReLU and
/// 2×2 max pool; batch norm, ReLU and 2×2 max pool; batch norm and ReLU. `x` is
/// `[n, h, w, c]`; `y` is the last layer's output. Built by the network in place of
/// those layers; its tensors keep their names (the batch norm's are the next layer's).
pub struct ConvBlock {
    conv: Conv2d,
    tail: Tail,
    out_shape: Vec<usize>,
    /// The convolution's output in training, kept for backward, and its gradient.
    conv_out: Tensor,
    conv_grad: Tensor,
    /// The batch norm's output before the pool, and its gradient.
    norm_out: Tensor,
    norm_grad: Tensor,
    /// Whether the plain layers ran in the last forward pass (an inference pass skips
    /// them).
    plain_current: bool,
    tiles: Tiles,
    /// The weights (with the batch norm folded in) as inference uses them: see
    /// [`winograd::transform_weights`] and [`direct::arrange_weights`].
    eval_weights: Vec<f32>,
    /// The bias (likewise), padded to [`Tiles::padded_filters`].
    eval_bias: Vec<f32>,
    /// The folded weights before their arrangement.
    folded: Vec<f32>,
    /// Whether `eval_weights` and `eval_bias` follow the parameters and statistics:
    /// cleared when the parameters are handed out for change (`params_mut`,
    /// `tensors_mut`, the only ways to reach them) and by every training pass (which
    /// moves the running statistics).
    eval_current: bool,
    /// Per-part workspaces of the inference kernels, and their results before they are
    /// stored.
    workspaces: Vec<(Vec<f32>, Vec<f32>, Vec<u32>)>,
    /// Whether fused training kernels (direct or Winograd, as [`ConvBlock::kernels`]
    /// says) ran in the last forward pass.
    fused_current: bool,
    /// The arithmetic of the last training pass, which its backward repeats.
    precision: crate::Precision,
    /// Which of its window's four convolution outputs each pooled output of the last
    /// fused training pass came from (0–3, row by row).
    won: Vec<u8>,
    /// Per-part weight and bias gradients of the fused training kernels.
    grad_parts: Vec<f32>,
    /// The tiles of the convolution's whole output (its training by Winograd's
    /// algorithm when batch norm follows).
    map_tiles: Tiles,
    /// The convolution's own weights and bias (no batch norm folded in) as the Winograd
    /// training kernels use them ([`ConvBlock::prepare_train_weights`]), the weights
    /// also transposed ([`winograd_train::transpose_weights`]) or as bf16 pairs.
    train_weights: Vec<f32>,
    train_bias: Vec<f32>,
    weights_t: Vec<f32>,
    #[cfg(target_arch = "x86_64")]
    train_bf16: winograd_bf16::Weights,
    /// The Winograd weights as bf16 pairs, for products on AVX512-BF16.
    #[cfg(target_arch = "x86_64")]
    bf16_weights: winograd_bf16::Weights,
    /// The one-channel direct kernel's weights as bf16 tap pairs, for inference on
    /// AVX512-BF16.
    #[cfg(target_arch = "x86_64")]
    direct_bf16: direct_bf16::Weights,
    /// Whether `bf16_weights` and `direct_bf16` follow `eval_weights`.
    bf16_current: bool,
    /// The implicit AMX product's geometry, where the convolution fits it: inference in
    /// bf16 on AMX then runs it ([`ConvBlock::infer_amx`]).
    #[cfg(target_arch = "x86_64")]
    implicit: Option<super::conv_amx::Implicit>,
    /// The folded weights as that product's B tiles.
    #[cfg(target_arch = "x86_64")]
    amx_weights: Vec<u32>,
}

impl ConvBlock {
    /// `conv`, then ReLU and a 2×2 stride-2 max pool.
    pub fn relu_pool(conv: Conv2d) -> Result<Self, crate::Error> {
        let [oh, ow, oc] = conv_output(&conv)?;
        Self::build(
            conv,
            Tail::ReluPool(ReluMaxPool2d::new(&[oh, ow, oc], 2, 2)?),
        )
    }

    /// `conv`, then batch norm (`momentum`, `eps`) with ReLU, and a 2×2 stride-2 max pool
    /// when `pool`. Without a pool, only convolutions of at least
    /// [`WINOGRAD_FROM_CHANNELS`] input channels.
    pub fn norm_relu(
        conv: Conv2d,
        momentum: f32,
        eps: f32,
        pool: bool,
    ) -> Result<Self, crate::Error> {
        let shape = conv_output(&conv)?;
        let norm = BatchNorm::with_relu(&shape, momentum, eps)?;
        let tail = if pool {
            Tail::NormPool(norm, MaxPool2d::new(&shape, 2, 2)?)
        } else if conv.input_hwc().2 >= WINOGRAD_FROM_CHANNELS {
            Tail::Norm(norm)
        } else {
            return Err(crate::Error::Spec(
                "a convolution of few channels fuses only with a pool".into(),
            ));
        };
        Self::build(conv, tail)
    }

    fn build(conv: Conv2d, tail: Tail) -> Result<Self, crate::Error> {
        let (h, w, c) = conv.input_hwc();
        let (k, stride, pad) = conv.kernel_stride_pad();
        if k != 3 || stride != 1 {
            return Err(crate::Error::Spec(format!(
                "only 3×3 stride-1 convolutions fuse, not {k}×{k} stride {stride}"
            )));
        }
        let [oh, ow, oc] = conv_output(&conv)?;
        let (out_shape, pool) = match &tail {
            Tail::ReluPool(p) => (p.output_shape().to_vec(), true),
            Tail::NormPool(_, p) => (p.output_shape().to_vec(), true),
            Tail::Norm(n) => (n.output_shape().to_vec(), false),
        };
        Ok(Self {
            conv,
            tail,
            out_shape,
            conv_out: Tensor::default(),
            conv_grad: Tensor::default(),
            norm_out: Tensor::default(),
            norm_grad: Tensor::default(),
            plain_current: false,
            tiles: Tiles::new([h, w, c], oc, pad, [oh, ow], pool),
            eval_weights: Vec::new(),
            eval_bias: Vec::new(),
            folded: Vec::new(),
            eval_current: false,
            workspaces: Vec::new(),
            fused_current: false,
            precision: crate::Precision::F32,
            won: Vec::new(),
            grad_parts: Vec::new(),
            map_tiles: Tiles::new([h, w, c], oc, pad, [oh, ow], false),
            train_weights: Vec::new(),
            train_bias: Vec::new(),
            weights_t: Vec::new(),
            #[cfg(target_arch = "x86_64")]
            train_bf16: Default::default(),
            #[cfg(target_arch = "x86_64")]
            bf16_weights: Default::default(),
            #[cfg(target_arch = "x86_64")]
            direct_bf16: Default::default(),
            bf16_current: false,
            #[cfg(target_arch = "x86_64")]
            implicit: super::conv_amx::Implicit::new([h, w, c], oc, 3, pad),
            #[cfg(target_arch = "x86_64")]
            amx_weights: Vec::new(),
        })
    }

    /// Whether inference uses Winograd's algorithm (else the direct loop).
    fn uses_winograd(&self) -> bool {
        self.tiles.c >= WINOGRAD_FROM_CHANNELS
    }

    /// Whether training uses the direct kernels: few input channels, then ReLU and pool.
    /// They run in fp32 whatever the precision: products of so few channels are too thin
    /// for bf16 to pay.
    fn trains_direct(&self) -> bool {
        matches!(self.tail, Tail::ReluPool(_)) && !self.uses_winograd()
    }

    /// Whether Winograd's products run in bf16 in `precision`: on AVX512-BF16 (AMX runs
    /// its implicit tile product instead), for layers of enough channels.
    fn winograd_in_bf16(&self, precision: crate::Precision) -> bool {
        cfg!(target_arch = "x86_64")
            && self.uses_winograd()
            && precision == crate::Precision::Bf16(crate::Bf16Isa::Avx512Bf16)
    }

    /// Whether inference runs the one-channel direct kernel in bf16 in `precision`: on
    /// AVX512-BF16 (AMX keeps the fp32 kernel: few channels are too thin for tiles), for
    /// a first layer (one input channel) followed by ReLU and the pool.
    fn direct_in_bf16(&self, precision: crate::Precision) -> bool {
        cfg!(target_arch = "x86_64")
            && self.tiles.c == 1
            && self.tiles.pool
            && precision == crate::Precision::Bf16(crate::Bf16Isa::Avx512Bf16)
    }

    /// Packs the bf16 Winograd or direct weights if they are behind (after
    /// [`ConvBlock::prepare_eval_weights`]).
    fn prepare_bf16_weights(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if !self.bf16_current {
            if self.uses_winograd() {
                self.bf16_weights.pack(&self.tiles, &self.eval_weights);
            } else if self.tiles.c == 1 {
                self.direct_bf16.pack(&self.tiles, &self.eval_weights);
            }
            self.bf16_current = true;
        }
    }

    /// Which kernels train the block in the arithmetic of its last training pass:
    /// Winograd's in fp32, or in bf16 on AVX512-BF16 (AMX runs its implicit product).
    fn kernels(&self) -> Kernels {
        let winograd = self.uses_winograd()
            && (self.precision == crate::Precision::F32 || self.winograd_in_bf16(self.precision));
        match (&self.tail, winograd) {
            _ if self.trains_direct() => Kernels::Direct,
            (_, false) => Kernels::Plain,
            (Tail::ReluPool(_), true) => Kernels::Winograd,
            (_, true) => Kernels::WinogradMap,
        }
    }

    /// Arranges the convolution's own weights and bias (no batch norm folded in) for the
    /// Winograd training kernels, in the arithmetic of the last training pass.
    fn prepare_train_weights(&mut self) {
        let t = self.tiles;
        winograd::transform_weights(&t, self.conv.weight(), &mut self.train_weights);
        self.train_bias.clear();
        match self.conv.bias() {
            Some(b) => self.train_bias.extend_from_slice(b),
            None => self.train_bias.resize(t.k, 0.0),
        }
        self.train_bias.resize(t.padded_filters(), 0.0);
        #[cfg(target_arch = "x86_64")]
        if self.winograd_in_bf16(self.precision) {
            self.train_bf16.pack(&t, &self.train_weights);
            return;
        }
        winograd_train::transpose_weights(&t, &self.train_weights, &mut self.weights_t);
    }

    /// Tiles per Winograd training group and the bf16 scratch it needs, for the kernels
    /// of `isa` or (`bf16`) the bf16 products.
    fn winograd_group(&self, isa: Isa, bf16: bool) -> (usize, usize) {
        #[cfg(target_arch = "x86_64")]
        if bf16 {
            return (
                winograd_bf16::GROUP,
                winograd_bf16::scratch_len(&self.tiles),
            );
        }
        let _ = bf16;
        (isa.winograd_group(), 0)
    }

    /// The Winograd training pass of a ReLU-pool block with the kernels compiled for
    /// `isa` (or the bf16 products): `y`, and which output won each pooling window, from
    /// `x`.
    fn winograd_forward(&mut self, isa: Isa, x: &Tensor, y: &mut Tensor) {
        self.prepare_train_weights();
        let t = self.tiles;
        let images = x.batch();
        y.resize_batch(images, &self.out_shape);
        self.won.resize(images * t.image_values(), 0);
        let (group, scratch_len) = self.winograd_group(isa, self.winograd_in_bf16(self.precision));
        let ws_len = winograd::workspace_len(&t, group);
        let pass = Pass {
            t,
            x: x.data(),
            w: &self.train_weights,
            bias: &self.train_bias,
        };
        #[cfg(target_arch = "x86_64")]
        let prods = train_products(self.winograd_in_bf16(self.precision), &self.train_bf16);
        // A few parts per thread, each a run of whole images; a tile's result does not
        // depend on its part or group.
        let parts = images
            .min(PARTS_PER_THREAD * rayon::current_num_threads())
            .max(1);
        let per_part = images.div_ceil(parts);
        // (At least 1: an empty batch or map has no chunks to run.)
        let values = (per_part * t.image_values()).max(1);
        y.data_mut()
            .par_chunks_mut(values)
            .zip(self.won.par_chunks_mut(values))
            .enumerate()
            .for_each_init(
                || (vec![0.0; ws_len], vec![0u32; scratch_len]),
                |(ws, scratch), (part, (out, won))| {
                    let first = part * per_part * t.per_image();
                    for (g, (out, won)) in out
                        .chunks_mut(group * t.k)
                        .zip(won.chunks_mut(group * t.k))
                        .enumerate()
                    {
                        let first = first + g * group;
                        #[cfg(target_arch = "x86_64")]
                        if let Some(prods) = &prods {
                            // SAFETY: `Bf16Products::new` checked for AVX512-BF16 (whose
                            // CPUs have AVX-512F, BW and FMA).
                            unsafe {
                                winograd_bf16::train_forward(
                                    prods, &pass, first, out, won, ws, scratch,
                                )
                            };
                            continue;
                        }
                        let _ = &scratch;
                        isa.winograd_train_forward(&pass, first, out, won, ws);
                    }
                },
            );
        self.plain_current = false;
        self.fused_current = true;
    }

    /// The convolution of a batch-norm block by Winograd's algorithm, into `conv_out`,
    /// with the kernels compiled for `isa` (or the bf16 products).
    fn winograd_map_forward(&mut self, isa: Isa, x: &Tensor) {
        self.prepare_train_weights();
        let t = self.map_tiles;
        let images = x.batch();
        self.conv_out.resize_batch(images, &[t.oh, t.ow, t.k]);
        let (group, scratch_len) = self.winograd_group(isa, self.winograd_in_bf16(self.precision));
        let ws_len = winograd::workspace_len(&t, group);
        let pass = Pass {
            t,
            x: x.data(),
            w: &self.train_weights,
            bias: &self.train_bias,
        };
        #[cfg(target_arch = "x86_64")]
        let prods = train_products(self.winograd_in_bf16(self.precision), &self.train_bf16);
        let parts = images
            .min(PARTS_PER_THREAD * rayon::current_num_threads())
            .max(1);
        let per_part = images.div_ceil(parts);
        let map = t.oh * t.ow * t.k;
        self.conv_out
            .data_mut()
            .par_chunks_mut((per_part * map).max(1))
            .enumerate()
            .for_each_init(
                || {
                    let res = vec![0.0; group * t.tile_values()];
                    (vec![0.0; ws_len], res, vec![0u32; scratch_len])
                },
                |(ws, res, scratch), (part, out)| {
                    let image = part * per_part;
                    let first = image * t.per_image();
                    let end = first + out.len() / map.max(1) * t.per_image();
                    for g in (first..end).step_by(group) {
                        let count = group.min(end - g);
                        let dst = &mut res[..count * t.tile_values()];
                        #[cfg(target_arch = "x86_64")]
                        if let Some(prods) = &prods {
                            // SAFETY: `Bf16Products::new` checked for AVX512-BF16 (whose
                            // CPUs have AVX-512F, BW and FMA).
                            unsafe {
                                winograd_bf16::train_map_forward(prods, &pass, g, dst, ws, scratch)
                            };
                            t.store_blocks(res, g, count, out, image);
                            continue;
                        }
                        let _ = &scratch;
                        isa.winograd_map_forward(&pass, g, dst, ws);
                        t.store_blocks(res, g, count, out, image);
                    }
                },
            );
    }

    /// The Winograd training kernels' backward pass, after [`ConvBlock::winograd_forward`]
    /// gave `y` (a ReLU-pool block) or [`ConvBlock::winograd_map_forward`] gave
    /// `conv_out` (whose gradient `conv_grad` then holds): the convolution's parameter
    /// gradients, and `dx` if asked for.
    fn winograd_backward(
        &mut self,
        isa: Isa,
        x: &Tensor,
        pooled: Option<(&Tensor, &Tensor)>,
        dx: Option<&mut Tensor>,
    ) {
        let t = if pooled.is_some() {
            self.tiles
        } else {
            self.map_tiles
        };
        let images = x.batch();
        let per_part = winograd_train::part_values(&t);
        let chunk = winograd_train::images_per_part(&t);
        let parts = images.div_ceil(chunk);
        self.grad_parts.resize(parts.max(1) * per_part, 0.0);
        let image_len = t.h * t.w * t.c;
        let dx_parts: Vec<Option<&mut [f32]>> = match dx {
            Some(dx) => {
                dx.resize_batch(images, &[t.h, t.w, t.c]);
                let len = (chunk * image_len).max(1);
                dx.data_mut().chunks_mut(len).map(Some).collect()
            }
            None => (0..parts).map(|_| None).collect(),
        };
        let pass = Pass {
            t,
            x: x.data(),
            w: &self.train_weights,
            bias: &self.train_bias,
        };
        let (won, conv_grad, ut) = (&self.won[..], self.conv_grad.data(), &self.weights_t[..]);
        // Each part's output gradient: its images' tiles.
        let grad = |image: usize| {
            let images = image..(image + chunk).min(x.batch());
            match pooled {
                Some((y, dy)) => {
                    let at = images.start * t.image_values()..images.end * t.image_values();
                    OutputGrad::Pool {
                        y: &y.data()[at.clone()],
                        dy: &dy.data()[at.clone()],
                        won: &won[at],
                    }
                }
                None => {
                    let map = t.oh * t.ow * t.k;
                    OutputGrad::Map {
                        dy: &conv_grad[images.start * map..images.end * map],
                    }
                }
            }
        };
        let bf16 = self.winograd_in_bf16(self.precision);
        let (group, scratch_len) = if bf16 {
            self.winograd_group(isa, true)
        } else {
            (isa.winograd_backward_group(), 0)
        };
        let ws_len = winograd_train::backward_workspace_len(&t, group);
        #[cfg(target_arch = "x86_64")]
        let prods = train_products(self.winograd_in_bf16(self.precision), &self.train_bf16);
        self.grad_parts[..parts * per_part]
            .par_chunks_mut(per_part)
            .zip(dx_parts)
            .enumerate()
            .for_each_init(
                || (vec![0.0; ws_len], vec![0u32; scratch_len]),
                |(ws, scratch), (part, (grads, dx))| {
                    grads.fill(0.0);
                    let image = part * chunk;
                    #[cfg(target_arch = "x86_64")]
                    if let Some(prods) = &prods {
                        // SAFETY: `Bf16Products::new` checked for AVX512-BF16 (whose CPUs
                        // have AVX-512F, BW and FMA).
                        unsafe {
                            winograd_bf16::train_backward(
                                prods,
                                &pass,
                                image,
                                grad(image),
                                grads,
                                dx,
                                ws,
                                scratch,
                            )
                        };
                        return;
                    }
                    let _ = &scratch;
                    isa.winograd_train_backward(&pass, ut, image, grad(image), grads, dx, ws);
                },
            );
        if parts == 0 {
            self.grad_parts[..per_part].fill(0.0);
        }
        let (sum, rest) = self.grad_parts.split_at_mut(per_part);
        crate::matmul::add_parts(sum, &rest[..(parts.max(1) - 1) * per_part]);
        let (du, db) = sum.split_at(16 * t.c * t.padded_filters());
        let mut params = self.conv.params_mut().into_iter();
        if let Some(weight) = params.next() {
            winograd_train::weight_grad(&t, du, weight.grad.data_mut());
        }
        if let Some(bias) = params.next() {
            bias.grad.data_mut().copy_from_slice(&db[..t.k]);
        }
    }

    /// A batch-norm block's training pass: the convolution by Winograd's algorithm, then
    /// the plain batch norm (with its ReLU) and pool, keeping what their backward needs.
    fn norm_forward(&mut self, isa: Isa, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        debug_assert!(self.tail.norm().is_some(), "a block with batch norm");
        self.winograd_map_forward(isa, x);
        self.tail_forward(y, ctx);
        self.plain_current = false;
        self.fused_current = true;
    }

    /// [`ConvBlock::norm_forward`]'s backward pass (after it, or redoing it as inference
    /// would: batch norm on its running statistics).
    fn norm_backward(
        &mut self,
        isa: Isa,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) {
        let mut redone = Tensor::default();
        let y = if self.fused_current {
            y
        } else {
            let mut rng = crate::Rng::new(0);
            let mut ctx = Context {
                mode: Mode::Eval,
                rng: &mut rng,
                precision: self.precision,
            };
            self.norm_forward(isa, x, &mut redone, &mut ctx);
            &redone
        };
        self.tail_backward(y, dy);
        self.winograd_backward(isa, x, None, dx);
    }

    /// The direct training pass with the kernels compiled for `isa`: `y`, and which
    /// output won each pooling window, from `x`.
    fn direct_forward(&mut self, isa: Isa, x: &Tensor, y: &mut Tensor) {
        // No batch norm: the arranged inference weights are the convolution's.
        self.prepare_eval_weights();
        let t = self.tiles;
        let images = x.batch();
        y.resize_batch(images, &self.out_shape);
        self.won.resize(images * t.image_values(), 0);
        let pass = Pass {
            t,
            x: x.data(),
            w: &self.eval_weights,
            bias: &self.eval_bias,
        };
        y.data_mut()
            .par_chunks_mut(t.image_values())
            .zip(self.won.par_chunks_mut(t.image_values()))
            .enumerate()
            .for_each_init(
                || vec![0.0; 16 * t.c],
                |patch, (image, (out, won))| {
                    isa.train_forward(&pass, image * t.per_image(), out, won, patch)
                },
            );
        self.plain_current = false;
        self.fused_current = true;
    }

    /// The direct training kernels' backward pass, after [`ConvBlock::direct_forward`]
    /// gave `y`: the convolution's parameter gradients, and `dx` if asked for.
    fn direct_backward(
        &mut self,
        isa: Isa,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) {
        if !self.eval_current {
            self.prepare_eval_weights();
        }
        let t = self.tiles;
        let images = dy.batch();
        let (kp, values) = (t.padded_filters(), t.image_values());
        let per_part = 9 * t.c * kp + kp;
        if images == 0 {
            for p in self.conv.params_mut() {
                p.grad.data_mut().fill(0.0);
            }
            if let Some(dx) = dx {
                dx.resize_batch(0, &[t.h, t.w, t.c]);
            }
            return;
        }
        self.grad_parts
            .resize(images.div_ceil(train::IMAGES_PER_PART) * per_part, 0.0);
        let pass = Pass {
            t,
            x: x.data(),
            w: &self.eval_weights,
            bias: &self.eval_bias,
        };
        let (y, dy, won) = (y.data(), dy.data(), &self.won[..]);
        self.grad_parts
            .par_chunks_mut(per_part)
            .enumerate()
            .for_each_init(
                || vec![0.0; 16 * t.c],
                |patch, (part, grads)| {
                    grads.fill(0.0);
                    let (dw, db) = grads.split_at_mut(9 * t.c * kp);
                    let first = part * train::IMAGES_PER_PART;
                    let at =
                        first * values..((first + train::IMAGES_PER_PART).min(images) * values);
                    let (y, dy, won) = (&y[at.clone()], &dy[at.clone()], &won[at]);
                    isa.train_weight_grads(&pass, first * t.per_image(), y, dy, won, dw, db, patch);
                },
            );
        let (sum, rest) = self.grad_parts.split_at_mut(per_part);
        crate::matmul::add_parts(sum, &rest[..rest.len() / per_part * per_part]);
        let (dw, db) = sum.split_at(9 * t.c * kp);
        let mut params = self.conv.params_mut().into_iter();
        if let Some(weight) = params.next() {
            // From `[9·c, kp]` back to the convolution's `[k, 3, 3, c]`.
            for (i, g) in weight.grad.data_mut().iter_mut().enumerate() {
                let (k, tap_ch) = (i / (9 * t.c), i % (9 * t.c));
                *g = dw[tap_ch * kp + k];
            }
        }
        if let Some(bias) = params.next() {
            bias.grad.data_mut().copy_from_slice(&db[..t.k]);
        }
        let Some(dx) = dx else { return };
        dx.resize_batch(images, &[t.h, t.w, t.c]);
        dx.data_mut()
            .par_chunks_mut(t.h * t.w * t.c)
            .zip(y.par_chunks(values).zip(dy.par_chunks(values)))
            .zip(won.par_chunks(values))
            .for_each(|((d, (y, dy)), won)| isa.train_input_grad(&pass, y, dy, won, d));
    }

    /// Folds the batch norm into the convolution and arranges the result for the kernels.
    fn prepare_eval_weights(&mut self) {
        let t = self.tiles;
        let w = self.conv.weight();
        let mut bias: Vec<f64> = match self.conv.bias() {
            Some(b) => b.iter().map(|&v| v as f64).collect(),
            None => vec![0.0; t.k],
        };
        self.folded.clear();
        self.folded.extend_from_slice(w);
        if let Some((scale, shift)) = self.tail.norm().map(BatchNorm::eval_scale_shift) {
            let per_filter = w.len() / t.k;
            for (k, filter) in self.folded.chunks_exact_mut(per_filter).enumerate() {
                for v in filter {
                    *v = (*v as f64 * scale[k]) as f32;
                }
                bias[k] = bias[k] * scale[k] + shift[k];
            }
        }
        if self.uses_winograd() {
            winograd::transform_weights(&t, &self.folded, &mut self.eval_weights);
        } else {
            direct::arrange_weights(&t, &self.folded, &mut self.eval_weights);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(g) = &self.implicit {
            super::conv_amx::tile_weights(g, &self.folded, &mut self.amx_weights);
        }
        self.eval_bias.clear();
        self.eval_bias.extend(bias.iter().map(|&b| b as f32));
        self.eval_bias.resize(t.padded_filters(), 0.0);
        self.eval_current = true;
        self.bf16_current = false;
    }

    /// The inference pass: `y` straight from `x`, without the convolution's output, with
    /// the kernels compiled for `isa`.
    fn infer(&mut self, isa: Isa, precision: crate::Precision, x: &Tensor, y: &mut Tensor) {
        let t = self.tiles;
        let images = x.batch();
        y.resize_batch(images, &self.out_shape);
        if !self.eval_current {
            self.prepare_eval_weights();
        }
        let winograd = self.uses_winograd();
        let bf16 = self.winograd_in_bf16(precision) || self.direct_in_bf16(precision);
        if bf16 {
            assert!(
                crate::Bf16Isa::Avx512Bf16.is_available(),
                "AVX512-BF16 is not available"
            );
            self.prepare_bf16_weights();
        }
        let (group, ws_len, scratch_len) = match (winograd, bf16) {
            #[cfg(target_arch = "x86_64")]
            (true, true) => (
                winograd_bf16::GROUP,
                winograd::workspace_len(&t, winograd_bf16::GROUP),
                winograd_bf16::scratch_len(&t),
            ),
            (true, _) => {
                let group = isa.winograd_group();
                (group, winograd::workspace_len(&t, group), 0)
            }
            // Whole images at a time: each is rounded once into the kernel's own copy.
            #[cfg(target_arch = "x86_64")]
            (false, true) => (t.per_image().max(1), direct_bf16::workspace_len(&t), 0),
            (false, _) => (direct::GROUP, direct::workspace_len(&t), 0),
        };
        // A few parts per thread, each a run of whole images with its own workspace, kept
        // between batches. A tile's result does not depend on its part or group.
        let parts = images
            .min(PARTS_PER_THREAD * rayon::current_num_threads())
            .max(1);
        let per_part = images.div_ceil(parts);
        self.workspaces.resize_with(parts, Default::default);
        for (ws, res, scratch) in &mut self.workspaces {
            ws.resize(ws_len, 0.0);
            res.resize(if t.pool { 0 } else { group * t.tile_values() }, 0.0);
            scratch.resize(scratch_len, 0);
        }
        let pass = Pass {
            t,
            x: x.data(),
            w: &self.eval_weights,
            bias: &self.eval_bias,
        };
        #[cfg(target_arch = "x86_64")]
        let (bf16_weights, direct_weights) = (&self.bf16_weights, &self.direct_bf16);
        // (At least 1: an empty batch or map has no chunks to run.)
        let chunk = (per_part * t.image_values()).max(1);
        y.data_mut()
            .par_chunks_mut(chunk)
            .zip(self.workspaces.par_iter_mut())
            .enumerate()
            .for_each(|(part, (out, (ws, res, scratch)))| {
                let image = part * per_part;
                let first = image * t.per_image();
                let end = first + out.len() / t.image_values().max(1) * t.per_image();
                for g in (first..end).step_by(group) {
                    let count = group.min(end - g);
                    // Pooled outputs are in tile order: straight into the output. Blocks
                    // of outputs go through `res` to be cut to the map.
                    let dst = if t.pool {
                        &mut out[(g - first) * t.k..][..count * t.k]
                    } else {
                        &mut res[..count * t.tile_values()]
                    };
                    match (winograd, bf16) {
                        // SAFETY: AVX512-BF16 is available (asserted above; every CPU
                        // with it has AVX-512F, BW and FMA).
                        #[cfg(target_arch = "x86_64")]
                        (true, true) => unsafe {
                            winograd_bf16::infer(bf16_weights, &pass, g, dst, ws, scratch)
                        },
                        (true, _) => isa.winograd(&pass, g, dst, ws),
                        // SAFETY: as above.
                        #[cfg(target_arch = "x86_64")]
                        (false, true) => unsafe {
                            direct_bf16::infer(direct_weights, &pass, g, dst, ws)
                        },
                        (false, _) => isa.direct(&pass, g, dst, ws),
                    }
                    if !t.pool {
                        t.store_blocks(res, g, count, out, image);
                    }
                }
            });
    }

    /// The inference pass in bf16 on AMX tiles (the implicit product, then ReLU and the
    /// pool), where `precision` asks for it and the convolution fits; false, and nothing
    /// done, otherwise. Few-channel layers stay with the fp32 kernels, as in training.
    fn infer_amx(&mut self, precision: crate::Precision, x: &Tensor, y: &mut Tensor) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let (crate::Precision::Bf16(crate::Bf16Isa::Amx), Some(g)) = (precision, self.implicit) {
            assert!(crate::Bf16Isa::Amx.is_available(), "AMX is not available");
            if !self.eval_current {
                self.prepare_eval_weights();
            }
            y.resize_batch(x.batch(), &self.out_shape);
            super::conv_amx::infer_relu(
                &g,
                &self.amx_weights,
                &self.eval_bias,
                self.tiles.pool,
                x.data(),
                y.data_mut(),
            );
            return true;
        }
        let _ = (precision, x, y);
        false
    }

    /// The plain layers' pass, keeping what their backward needs.
    fn plain_forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        self.conv.forward(x, &mut self.conv_out, ctx);
        self.tail_forward(y, ctx);
        self.plain_current = true;
        self.fused_current = false;
    }

    /// The layers after the convolution as plain layers: `y` from the convolution's
    /// output (`conv_out`), keeping what their backward needs.
    fn tail_forward(&mut self, y: &mut Tensor, ctx: &mut Context<'_>) {
        match &mut self.tail {
            Tail::ReluPool(pool) => pool.forward(&self.conv_out, y, ctx),
            Tail::NormPool(norm, pool) => {
                norm.forward(&self.conv_out, &mut self.norm_out, ctx);
                pool.forward(&self.norm_out, y, ctx);
            }
            Tail::Norm(norm) => norm.forward(&self.conv_out, y, ctx),
        }
    }

    /// [`ConvBlock::tail_forward`]'s backward pass: the convolution's output gradient
    /// (`conv_grad`) from the block's output `y` and its gradient `dy`.
    fn tail_backward(&mut self, y: &Tensor, dy: &Tensor) {
        match &mut self.tail {
            Tail::ReluPool(pool) => pool.backward(&self.conv_out, y, dy, Some(&mut self.conv_grad)),
            Tail::NormPool(norm, pool) => {
                pool.backward(&self.norm_out, y, dy, Some(&mut self.norm_grad));
                norm.backward(
                    &self.conv_out,
                    &self.norm_out,
                    &self.norm_grad,
                    Some(&mut self.conv_grad),
                );
            }
            Tail::Norm(norm) => norm.backward(&self.conv_out, y, dy, Some(&mut self.conv_grad)),
        }
    }

    /// The plain layers' backward pass (after their forward pass, or redoing it).
    fn plain_backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        // Backward after an inference pass (unusual, but allowed) differentiates what the
        // plain layers infer: redo their pass, whose output (not the fused one, which may
        // differ in the last bit) tells the pool's backward where each maximum was.
        let mut redone = Tensor::default();
        let y = if self.plain_current {
            y
        } else {
            let mut rng = crate::Rng::new(0);
            let mut ctx = Context {
                mode: Mode::Eval,
                rng: &mut rng,
                precision: crate::Precision::F32,
            };
            self.plain_forward(x, &mut redone, &mut ctx);
            &redone
        };
        self.tail_backward(y, dy);
        self.conv.backward(x, &self.conv_out, &self.conv_grad, dx);
    }
}

/// The bf16 products of the training kernels with `weights`, where `bf16` asks for them.
#[cfg(target_arch = "x86_64")]
fn train_products(
    bf16: bool,
    weights: &winograd_bf16::Weights,
) -> Option<winograd_bf16::Bf16Products<'_>> {
    bf16.then(|| winograd_bf16::Bf16Products::new(weights).expect("AVX512-BF16 is available"))
}

/// A convolution's output shape as `[h, w, c]`.
fn conv_output(conv: &Conv2d) -> Result<[usize; 3], crate::Error> {
    match *conv.output_shape() {
        [oh, ow, oc] => Ok([oh, ow, oc]),
        _ => Err(crate::Error::Spec("conv2d output is not a map".into())),
    }
}

impl Layer for ConvBlock {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    // Training keeps the convolution's output and the batch norm's, each with its
    // gradient, on top of the convolution's own im2col matrix; the direct kernels only
    // a byte per output (which output won its window). Winograd's kernels (in whichever
    // precision a step runs) keep less than the plain layers: that byte, or the outputs
    // batch norm needs, and per part of images a transformed weight gradient no larger
    // than those images' im2col matrices (`winograd_train::images_per_part`).
    fn scratch_per_example(&self) -> usize {
        if self.trains_direct() {
            return self.tiles.image_values().div_ceil(4);
        }
        let conv_out: usize = self.conv.output_shape().iter().product();
        self.conv
            .scratch_per_example()
            .saturating_add(conv_out.saturating_mul(4))
    }

    fn flops(&self) -> u64 {
        self.conv.flops()
    }

    fn inference_flops(&self) -> u64 {
        let t = self.tiles;
        // Per tile: 16 products per channel pair (Winograd) or 4 outputs × 9 taps.
        let per_pair = if self.uses_winograd() { 16 } else { 36 };
        2 * (t.per_image() * per_pair * t.c * t.k) as u64
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        if ctx.mode == Mode::Eval {
            if !self.infer_amx(ctx.precision, x, y) {
                self.infer(Isa::detect(), ctx.precision, x, y);
            }
            self.plain_current = false;
            self.fused_current = false;
        } else {
            // Training moves the batch norm's running statistics.
            self.eval_current = false;
            self.precision = ctx.precision;
            match self.kernels() {
                Kernels::Direct => self.direct_forward(Isa::detect(), x, y),
                Kernels::Winograd => self.winograd_forward(Isa::detect(), x, y),
                Kernels::WinogradMap => self.norm_forward(Isa::detect(), x, y, ctx),
                Kernels::Plain => self.plain_forward(x, y, ctx),
            }
        }
    }

    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let isa = Isa::detect();
        let kernels = self.kernels();
        // After an inference pass, redo the training pass: which output won each window
        // is known only from it.
        let mut redone = Tensor::default();
        let y = match kernels {
            Kernels::Plain => return self.plain_backward(x, y, dy, dx),
            Kernels::WinogradMap => return self.norm_backward(isa, x, y, dy, dx),
            _ if self.fused_current => y,
            Kernels::Direct => {
                self.direct_forward(isa, x, &mut redone);
                &redone
            }
            Kernels::Winograd => {
                self.winograd_forward(isa, x, &mut redone);
                &redone
            }
        };
        if kernels == Kernels::Direct {
            self.direct_backward(isa, x, y, dy, dx);
        } else {
            self.winograd_backward(isa, x, Some((y, dy)), dx);
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.eval_current = false;
        let mut params = self.conv.params_mut();
        if let Some(norm) = self.tail.norm_mut() {
            params.extend(norm.params_mut());
        }
        params
    }

    // The batch norm's tensors belong to the next spec.
    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        let mut all = self.conv.tensors();
        if let Some(norm) = self.tail.norm() {
            all.extend(norm.tensors().into_iter().map(|(k, v)| (next_layer(k), v)));
        }
        all
    }

    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        self.eval_current = false;
        let mut all = self.conv.tensors_mut();
        if let Some(norm) = self.tail.norm_mut() {
            all.extend(
                norm.tensors_mut()
                    .into_iter()
                    .map(|(k, v)| (next_layer(k), v)),
            );
        }
        all
    }
}

/// A tensor of the layer after the convolution.
fn next_layer(mut key: TensorKey) -> TensorKey {
    key.path[0] += 1;
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Role;
    use crate::{Bf16Isa, Init, Rng};

    /// Which layers follow the convolution.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        ReluPool,
        NormPool,
        Norm,
    }

    const KINDS: [Kind; 3] = [Kind::ReluPool, Kind::NormPool, Kind::Norm];

    fn normal(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect()).expect("shape")
    }

    /// A block of `kind`, or `None` where it does not fuse (few channels, no pool). Batch
    /// norm gets statistics and parameters far from their initial values, so that folding
    /// them is tested.
    fn block(kind: Kind, (hwc, filters, pad, bias): Case) -> Option<ConvBlock> {
        let mut rng = Rng::new(hwc.iter().sum::<usize>() as u64 + filters as u64);
        let conv = Conv2d::new(&hwc, filters, 3, 1, pad, bias, Init::Torch, &mut rng).ok()?;
        let mut l = match kind {
            Kind::ReluPool => ConvBlock::relu_pool(conv),
            Kind::NormPool => ConvBlock::norm_relu(conv, 0.1, 1e-5, true),
            Kind::Norm => ConvBlock::norm_relu(conv, 0.1, 1e-5, false),
        }
        .ok()?;
        for (key, t) in l.tensors_mut() {
            let v = normal(t.shape(), key.to_string().len() as u64);
            if key.path != [1] {
                continue; // the convolution's own
            }
            for (t, v) in t.data_mut().iter_mut().zip(v.data()) {
                *t = match key.role {
                    Role::Weight => 1.0 + 0.3 * v,
                    Role::Bias => 0.2 * v,
                    Role::RunningMean => 0.1 * v,
                    Role::RunningVar => 0.5 + v.abs(),
                };
            }
        }
        Some(l)
    }

    fn run(l: &mut ConvBlock, x: &Tensor, mode: Mode) -> Tensor {
        run_in(l, x, mode, crate::Precision::F32)
    }

    fn run_in(l: &mut ConvBlock, x: &Tensor, mode: Mode, precision: crate::Precision) -> Tensor {
        let mut y = Tensor::default();
        let mut rng = Rng::new(0);
        l.forward(
            x,
            &mut y,
            &mut Context {
                mode,
                rng: &mut rng,
                precision,
            },
        );
        y
    }

    /// What the plain layers infer.
    fn plain(l: &mut ConvBlock, x: &Tensor) -> Tensor {
        let mut y = Tensor::default();
        let mut rng = Rng::new(0);
        l.plain_forward(
            x,
            &mut y,
            &mut Context {
                mode: Mode::Eval,
                rng: &mut rng,
                precision: crate::Precision::F32,
            },
        );
        y
    }

    fn close(a: &Tensor, b: &Tensor) -> bool {
        a.shape() == b.shape()
            && a.data()
                .iter()
                .zip(b.data())
                .all(|(&a, &b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
    }

    /// (input [h, w, c], filters, padding, bias).
    type Case = ([usize; 3], usize, usize, bool);

    /// The `simple` network's two layers, odd and even sizes, channel counts that leave
    /// partial lane blocks, padding.
    const CASES: [Case; 8] = [
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
    fn inference_matches_the_plain_layers_on_every_instruction_set() {
        let mut tried = 0;
        for kind in KINDS {
            for case in CASES {
                for n in [1, 3, 13] {
                    let Some(mut l) = block(kind, case) else {
                        continue;
                    };
                    tried += 1;
                    let (hwc, ..) = case;
                    let x = normal(&[n, hwc[0], hwc[1], hwc[2]], n as u64);
                    let want = plain(&mut l, &x);
                    for isa in Isa::available() {
                        let mut got = Tensor::default();
                        l.infer(isa, crate::Precision::F32, &x, &mut got);
                        assert!(close(&got, &want), "{kind:?} {case:?} n {n} {isa:?}");
                    }
                }
            }
        }
        // Without a pool only the Winograd layers (≥ 8 channels) fuse: 4 of the 8 cases.
        assert_eq!(tried, 3 * (8 + 8 + 4));
    }

    #[test]
    fn vector_instruction_sets_agree_bit_for_bit_and_images_do_not_mix() {
        for kind in KINDS {
            for case in CASES {
                let Some(mut l) = block(kind, case) else {
                    continue;
                };
                let (hwc, ..) = case;
                let x = normal(&[5, hwc[0], hwc[1], hwc[2]], 9);
                let outputs: Vec<Tensor> = Isa::available()
                    .into_iter()
                    .filter(|&isa| isa != Isa::Generic)
                    .map(|isa| {
                        let mut y = Tensor::default();
                        l.infer(isa, crate::Precision::F32, &x, &mut y);
                        y
                    })
                    .collect();
                for y in &outputs[1..] {
                    assert!(
                        y == &outputs[0],
                        "{kind:?} {case:?}: instruction sets differ"
                    );
                }
                // Each image alone gives the values it gets in the batch.
                let all = run(&mut l, &x, Mode::Eval);
                let size = x.len() / 5;
                for i in 0..5 {
                    let one = x.data()[i * size..][..size].to_vec();
                    let one = Tensor::from_vec(&[1, hwc[0], hwc[1], hwc[2]], one).expect("shape");
                    let y = run(&mut l, &one, Mode::Eval);
                    assert!(
                        y.data() == &all.data()[i * y.len()..][..y.len()],
                        "{kind:?} {case:?} image {i} alone differs from the batch"
                    );
                }
            }
        }
    }

    #[test]
    fn backward_after_an_inference_pass_is_the_plain_layers_gradient() {
        for kind in KINDS {
            let case = CASES[3];
            let (hwc, ..) = case;
            let x = normal(&[2, hwc[0], hwc[1], hwc[2]], 4);
            let grads = |fused: bool| {
                let mut l = block(kind, case).expect("fuses");
                let y = if fused {
                    run(&mut l, &x, Mode::Eval)
                } else {
                    plain(&mut l, &x)
                };
                let dy = normal(y.shape(), 5);
                let mut dx = Tensor::default();
                l.backward(&x, &y, &dy, Some(&mut dx));
                let mut all = dx.into_vec();
                for p in l.params_mut() {
                    all.extend_from_slice(p.grad.data());
                }
                all
            };
            assert!(grads(true) == grads(false), "{kind:?}");
        }
    }

    #[test]
    fn inference_follows_parameter_and_statistics_changes() {
        for kind in KINDS {
            let case = CASES[1];
            let mut l = block(kind, case).expect("fuses");
            let x = normal(&[4, 13, 13, 32], 6);
            let before = run(&mut l, &x, Mode::Eval);
            // Through the optimizer's door...
            for p in l.params_mut() {
                p.value.data_mut().iter_mut().for_each(|v| *v *= -0.5);
            }
            let after = run(&mut l, &x, Mode::Eval);
            assert!(!close(&after, &before), "{kind:?}");
            assert!(close(&after, &plain(&mut l, &x)), "{kind:?}");
            // ...the loader's...
            for (_, t) in l.tensors_mut() {
                t.data_mut().iter_mut().for_each(|v| *v += 0.25);
            }
            let loaded = run(&mut l, &x, Mode::Eval);
            assert!(!close(&loaded, &after), "{kind:?}");
            assert!(close(&loaded, &plain(&mut l, &x)), "{kind:?}");
            // ...and a training pass, which moves the running statistics.
            run(&mut l, &x, Mode::Train);
            let trained = run(&mut l, &x, Mode::Eval);
            assert!(close(&trained, &plain(&mut l, &x)), "{kind:?}");
            if kind != Kind::ReluPool {
                assert!(!close(&trained, &loaded), "{kind:?}");
            }
        }
    }

    #[test]
    fn inference_matches_the_plain_layers_on_random_geometries() {
        let mut pick = Rng::new(17);
        let mut fused = 0;
        for round in 0..300 {
            let hwc = [2 + pick.below(9), 2 + pick.below(9), 1 + pick.below(20)];
            let case = (hwc, 1 + pick.below(40), pick.below(3), pick.below(2) == 0);
            let kind = KINDS[pick.below(3)];
            // Geometries that do not fit (a map too small to pool) are refused, not fused.
            let Some(mut l) = block(kind, case) else {
                continue;
            };
            fused += 1;
            let x = normal(&[1 + pick.below(4), hwc[0], hwc[1], hwc[2]], round);
            let want = plain(&mut l, &x);
            for isa in Isa::available() {
                let mut got = Tensor::default();
                l.infer(isa, crate::Precision::F32, &x, &mut got);
                assert!(close(&got, &want), "{kind:?} {case:?} {isa:?}");
            }
        }
        assert!(fused > 150, "only {fused} geometries fused");
    }
    /// Convolution outputs of the exact (f64) products of the bf16-rounded `x` and the
    /// block's folded weights, plus its bias, each with the scale of fp32 accumulation
    /// error (Σ|product| and |bias|); then ReLU, and the pool when there is one (a
    /// window's maximum within the largest error of its four).
    fn exact_bf16_inference(l: &mut ConvBlock, x: &Tensor) -> Vec<(f64, f64)> {
        use crate::matmul::bf16::{from_bf16, to_bf16};
        let rounded = |v: f32| from_bf16(to_bf16(v)) as f64;
        l.prepare_eval_weights();
        let t = l.tiles;
        let (n, k) = (x.batch(), t.k);
        let mut conv = vec![(0.0f64, 0.0f64); n * t.oh * t.ow * k];
        for i in 0..n {
            for oy in 0..t.oh {
                for ox in 0..t.ow {
                    for o in 0..k {
                        let (mut sum, mut scale) = (l.eval_bias[o] as f64, 0.0);
                        scale += sum.abs();
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (Some(iy), Some(ix)) =
                                    ((oy + ky).checked_sub(t.pad), (ox + kx).checked_sub(t.pad))
                                else {
                                    continue;
                                };
                                if iy >= t.h || ix >= t.w {
                                    continue;
                                }
                                for ch in 0..t.c {
                                    let xv = x.data()[((i * t.h + iy) * t.w + ix) * t.c + ch];
                                    let wv = l.folded[((o * 3 + ky) * 3 + kx) * t.c + ch];
                                    let p = rounded(xv) * rounded(wv);
                                    sum += p;
                                    scale += p.abs();
                                }
                            }
                        }
                        conv[((i * t.oh + oy) * t.ow + ox) * k + o] = (sum, scale);
                    }
                }
            }
        }
        let relu = |(v, e): (f64, f64)| (v.max(0.0), e);
        if !t.pool {
            return conv.into_iter().map(relu).collect();
        }
        let mut out = Vec::new();
        for i in 0..n {
            for py in 0..t.oh / 2 {
                for px in 0..t.ow / 2 {
                    for o in 0..k {
                        let at = |dy: usize, dx: usize| {
                            conv[((i * t.oh + 2 * py + dy) * t.ow + 2 * px + dx) * k + o]
                        };
                        let four = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                        let v = four.iter().map(|p| p.0).fold(f64::MIN, f64::max);
                        let e = four.iter().map(|p| p.1).fold(0.0, f64::max);
                        out.push(relu((v, e)));
                    }
                }
            }
        }
        out
    }

    /// Asserts that `got` is `want`'s exact sums (value, sum of magnitudes) within the
    /// error of adding them in fp32.
    fn assert_bf16_sums(got: &Tensor, want: &[(f64, f64)], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (j, (&g, &(v, scale))) in got.data().iter().zip(want).enumerate() {
            assert!(
                (g as f64 - v).abs() <= 1e-5 * scale + 1e-6,
                "{what} [{j}]: {g} vs {v}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn amx_inference_matches_the_exact_products_of_the_rounded_operands() {
        use crate::{Bf16Isa, Precision};
        let amx = Precision::Bf16(Bf16Isa::Amx);
        if !Bf16Isa::Amx.is_available() {
            // Nothing runs it here; `bf16_inference_elsewhere_is_fp32_inference` covers the
            // fallback.
            eprintln!("AMX not available: its inference is not tested on this CPU");
            return;
        }
        let mut pick = Rng::new(23);
        let mut fused = 0;
        for round in 0..15 {
            let c = 32 * (1 + pick.below(2));
            let hwc = [3 + pick.below(12), 3 + pick.below(12), c];
            let case = (
                hwc,
                32 * (1 + pick.below(3)),
                pick.below(2),
                pick.below(2) == 0,
            );
            let kind = KINDS[round % 3];
            let Some(mut l) = block(kind, case) else {
                continue;
            };
            assert!(l.implicit.is_some(), "{case:?} fits the implicit product");
            fused += 1;
            let n = 1 + pick.below(5);
            let x = normal(&[n, hwc[0], hwc[1], hwc[2]], round as u64);
            let got = run_in(&mut l, &x, Mode::Eval, amx);
            let want = exact_bf16_inference(&mut l, &x);
            assert_bf16_sums(&got, &want, &format!("{kind:?} {case:?} n {n}"));
            // bf16 did run: fp32 inference differs.
            assert!(got != run(&mut l, &x, Mode::Eval), "{kind:?} {case:?}");
            // Without a batch norm, the plain layers in bf16 on AMX compute the same
            // product: the same bits.
            if kind == Kind::ReluPool {
                let mut plain = Tensor::default();
                let mut rng = Rng::new(0);
                let mut ctx = Context {
                    mode: Mode::Eval,
                    rng: &mut rng,
                    precision: amx,
                };
                l.plain_forward(&x, &mut plain, &mut ctx);
                assert!(plain == got, "{case:?}: not the plain layers' bits");
            }
            // Each image alone gives the values it gets in the batch.
            let size = x.len() / n;
            let last = x.data()[(n - 1) * size..].to_vec();
            let last = Tensor::from_vec(&[1, hwc[0], hwc[1], hwc[2]], last).expect("shape");
            let alone = run_in(&mut l, &last, Mode::Eval, amx);
            assert!(
                alone.data() == &got.data()[(n - 1) * alone.len()..],
                "{kind:?} {case:?}: an image alone differs from the batch"
            );
        }
        assert!(fused >= 10, "only {fused} geometries fused");
        // And an empty batch.
        let mut l = block(Kind::ReluPool, CASES[1]).expect("fuses");
        let y = run_in(&mut l, &Tensor::zeros(&[0, 13, 13, 32]), Mode::Eval, amx);
        assert_eq!(y.shape(), &[0, 5, 5, 64]);
    }

    #[test]
    fn bf16_inference_elsewhere_is_fp32_inference() {
        // AVX512-BF16 precision on a layer of a few channels but more than one (the
        // direct kernels), and every precision on a layer the implicit product does not
        // fit (channels not multiples of 32, few channels), infer with the fp32 kernels:
        // the same bits as fp32. (One channel then a pool runs in bf16: tested below.)
        use crate::Precision;
        for kind in KINDS {
            for case in [CASES[1], CASES[3], CASES[0]] {
                let Some(mut l) = block(kind, case) else {
                    continue;
                };
                let (hwc, ..) = case;
                let x = normal(&[3, hwc[0], hwc[1], hwc[2]], 8);
                let fp32 = run(&mut l, &x, Mode::Eval);
                let mut precisions = Vec::new();
                if !l.uses_winograd() && !l.direct_in_bf16(Precision::Bf16(Bf16Isa::Avx512Bf16)) {
                    precisions.push(Precision::Bf16(Bf16Isa::Avx512Bf16));
                }
                if hwc[2] % 32 != 0 || case.1 % 32 != 0 {
                    precisions.push(Precision::Bf16(Bf16Isa::Amx));
                }
                for p in precisions {
                    assert!(
                        run_in(&mut l, &x, Mode::Eval, p) == fp32,
                        "{kind:?} {case:?} {p:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_first_layer_inference_is_the_exact_products_of_the_rounded_operands() {
        use crate::Precision;
        let bf16 = Precision::Bf16(Bf16Isa::Avx512Bf16);
        if !Bf16Isa::Avx512Bf16.is_available() {
            eprintln!("AVX512-BF16 not available: its first-layer kernel is not tested here");
            return;
        }
        let mut pick = Rng::new(41);
        let mut tried = 0;
        for round in 0..40 {
            let case = if round == 0 {
                CASES[0]
            } else {
                let hwc = [2 + pick.below(29), 2 + pick.below(29), 1];
                (hwc, 1 + pick.below(70), pick.below(3), pick.below(2) == 0)
            };
            let kind = [Kind::ReluPool, Kind::NormPool][round % 2];
            let Some(mut l) = block(kind, case) else {
                continue;
            };
            if !l.direct_in_bf16(bf16) {
                continue;
            }
            tried += 1;
            let n = 1 + pick.below(4);
            let hwc = case.0;
            let x = normal(&[n, hwc[0], hwc[1], 1], 60 + round as u64);
            let got = run_in(&mut l, &x, Mode::Eval, bf16);
            let want = exact_bf16_inference(&mut l, &x);
            assert_bf16_sums(&got, &want, &format!("{kind:?} {case:?} n {n}"));
            // bf16 did run: fp32 inference differs.
            assert!(got != run(&mut l, &x, Mode::Eval), "{kind:?} {case:?}");
            // Each image alone gives the values it gets in the batch, on any thread count.
            let size = x.len() / n;
            let last = x.data()[(n - 1) * size..].to_vec();
            let last = Tensor::from_vec(&[1, hwc[0], hwc[1], 1], last).expect("shape");
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("a pool");
            let alone = one.install(|| run_in(&mut l, &last, Mode::Eval, bf16));
            assert!(
                alone.data() == &got.data()[(n - 1) * alone.len()..],
                "{kind:?} {case:?}: an image alone differs from the batch"
            );
        }
        assert!(tried >= 20, "only {tried} geometries ran the kernel");
        // An empty batch, and weights that change between passes.
        let mut l = block(Kind::ReluPool, CASES[0]).expect("fuses");
        let y = run_in(&mut l, &Tensor::zeros(&[0, 28, 28, 1]), Mode::Eval, bf16);
        assert_eq!(y.shape(), &[0, 13, 13, 32]);
        let x = normal(&[2, 28, 28, 1], 5);
        let before = run_in(&mut l, &x, Mode::Eval, bf16);
        for p in l.params_mut() {
            p.value.data_mut().iter_mut().for_each(|v| *v *= -1.0);
        }
        let after = run_in(&mut l, &x, Mode::Eval, bf16);
        assert!(before != after, "inference kept the old weights");
        let want = exact_bf16_inference(&mut l, &x);
        assert_bf16_sums(&after, &want, "after the weights changed");
    }

    /// Values `i/8` for integers `|i| ≤ 8`: every sum the layers form of such inputs,
    /// weights and gradients is exact in f32, so any order of summation gives the same
    /// bits, and ties are exact ties.
    fn eighths(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let v = (0..n).map(|_| (rng.below(17) as f32 - 8.0) / 8.0).collect();
        Tensor::from_vec(shape, v).expect("shape")
    }

    /// A block that trains by its own kernels (ReLU and pool), with parameters in
    /// eighths.
    fn fused_block(case: Case) -> Option<ConvBlock> {
        let mut l = block(Kind::ReluPool, case)?;
        for (i, (_, t)) in l.tensors_mut().into_iter().enumerate() {
            let v = eighths(t.shape(), 40 + i as u64);
            t.data_mut().copy_from_slice(v.data());
        }
        (l.kernels() != Kernels::Plain).then_some(l)
    }

    /// The training pass's output, and the input, weight and bias gradients for `dy`,
    /// of the fused kernels (`Some`: the block's own, compiled for `isa`) or the plain
    /// layers.
    fn trained(l: &mut ConvBlock, x: &Tensor, dy_seed: u64, fused: Option<Isa>) -> Vec<Vec<f32>> {
        let mut y = Tensor::default();
        let kernels = l.kernels();
        match (fused, kernels) {
            (Some(isa), Kernels::Direct) => l.direct_forward(isa, x, &mut y),
            (Some(isa), Kernels::Winograd) => l.winograd_forward(isa, x, &mut y),
            (Some(isa), Kernels::WinogradMap) => {
                let mut rng = Rng::new(0);
                let mut ctx = Context {
                    mode: Mode::Train,
                    rng: &mut rng,
                    precision: l.precision,
                };
                l.norm_forward(isa, x, &mut y, &mut ctx);
            }
            _ => {
                let mut rng = Rng::new(0);
                let mut ctx = Context {
                    mode: Mode::Train,
                    rng: &mut rng,
                    precision: crate::Precision::F32,
                };
                l.plain_forward(x, &mut y, &mut ctx);
            }
        }
        let dy = eighths(y.shape(), dy_seed);
        let mut dx = Tensor::default();
        match (fused, kernels) {
            (Some(isa), Kernels::Direct) => l.direct_backward(isa, x, &y, &dy, Some(&mut dx)),
            (Some(isa), Kernels::Winograd) => {
                l.winograd_backward(isa, x, Some((&y, &dy)), Some(&mut dx))
            }
            (Some(isa), Kernels::WinogradMap) => l.norm_backward(isa, x, &y, &dy, Some(&mut dx)),
            _ => l.plain_backward(x, &y, &dy, Some(&mut dx)),
        }
        let mut all = vec![y.into_vec(), dx.into_vec()];
        all.extend(l.params_mut().into_iter().map(|p| p.grad.data().to_vec()));
        all
    }

    /// Geometries of both fused kernels: the `simple` network's layers, partial lane
    /// blocks, padding, odd maps, and random ones (few channels for the direct kernels,
    /// more for Winograd's).
    fn fused_cases() -> Vec<Case> {
        let mut cases: Vec<Case> = CASES.to_vec();
        let mut pick = Rng::new(31);
        while cases.len() < 60 {
            let hwc = [2 + pick.below(9), 2 + pick.below(9), 1 + pick.below(7)];
            cases.push((hwc, 1 + pick.below(70), pick.below(3), pick.below(2) == 0));
        }
        while cases.len() < 100 {
            let hwc = [2 + pick.below(12), 2 + pick.below(12), 8 + pick.below(41)];
            cases.push((hwc, 1 + pick.below(70), pick.below(3), pick.below(2) == 0));
        }
        cases
    }

    #[test]
    fn fused_training_is_the_plain_layers_training_when_arithmetic_is_exact() {
        let mut tried = [0, 0];
        for (i, case) in fused_cases().into_iter().enumerate() {
            let Some(mut l) = fused_block(case) else {
                continue;
            };
            tried[usize::from(l.kernels() == Kernels::Winograd)] += 1;
            let (hwc, ..) = case;
            let x = eighths(&[1 + i % 4, hwc[0], hwc[1], hwc[2]], i as u64);
            let want = trained(&mut l, &x, 7, None);
            for isa in Isa::available() {
                let got = trained(&mut l, &x, 7, Some(isa));
                // Output, input gradient, weight gradient, bias gradient.
                for (part, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g == w, "{case:?} {isa:?}: part {part} differs");
                }
            }
            // In bf16 too: transformed eighths and their gradients are bf16 values.
            if let Some(bf16) = bf16_winograd(&l) {
                l.precision = bf16;
                let got = trained(&mut l, &x, 7, Some(Isa::detect()));
                l.precision = crate::Precision::F32;
                for (part, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g == w, "{case:?} in bf16: part {part} differs");
                }
            }
        }
        assert!(
            tried[0] > 40 && tried[1] > 30,
            "only {tried:?} geometries fused"
        );
    }

    /// The bf16 precision in which the Winograd block `l` runs bf16 products, where the
    /// CPU has them (every CPU that reports AVX512-BF16 must).
    fn bf16_winograd(l: &ConvBlock) -> Option<crate::Precision> {
        let p = crate::Precision::Bf16(Bf16Isa::Avx512Bf16);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512bf16") {
            assert!(
                Bf16Isa::Avx512Bf16.is_available(),
                "AVX512-BF16 not offered"
            );
        }
        (Bf16Isa::Avx512Bf16.is_available() && l.winograd_in_bf16(p)).then_some(p)
    }

    #[test]
    fn bf16_winograd_is_fp32_within_bf16_rounding() {
        // `simple`'s second layer and odd geometries, every block kind (inference);
        // random values, so that every operand is rounded. Each operand is rounded to 8
        // significant bits (relative error ≤ 2⁻⁹), then many products are summed: the
        // error is a small fraction of the values' scale, and not zero (the products did
        // run in bf16).
        let norm = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
        let off = |got: &[f32], want: &[f32]| {
            assert_eq!(got.len(), want.len());
            let diff: Vec<f32> = got.iter().zip(want).map(|(a, b)| a - b).collect();
            norm(&diff) / norm(want).max(1e-30)
        };
        let mut tried = 0;
        for case in [CASES[1], CASES[3], CASES[4], CASES[6]] {
            let (hwc, ..) = case;
            let x = normal(&[3, hwc[0], hwc[1], hwc[2]], 13);
            for kind in KINDS {
                let Some(mut l) = block(kind, case) else {
                    continue;
                };
                let Some(bf16) = bf16_winograd(&l) else {
                    eprintln!("no AVX512-BF16 here: bf16 Winograd not tested");
                    return;
                };
                let want = run(&mut l, &x, Mode::Eval);
                let rel = off(run_in(&mut l, &x, Mode::Eval, bf16).data(), want.data());
                assert!(
                    rel < 2e-2 && rel > 1e-6,
                    "{kind:?} {case:?}: inference off by {rel:.2e}"
                );
                tried += 1;
            }
            // Training: forward, then backward with the same winners (a window whose two
            // best outputs lie within rounding of each other may pick another in bf16,
            // and send its gradient elsewhere).
            let mut l = block(Kind::ReluPool, case).expect("fuses");
            let bf16 = bf16_winograd(&l).expect("checked above");
            let isa = Isa::detect();
            let mut y = Tensor::default();
            l.winograd_forward(isa, &x, &mut y);
            l.precision = bf16;
            let mut y16 = Tensor::default();
            l.winograd_forward(isa, &x, &mut y16);
            let rel = off(y16.data(), y.data());
            assert!(
                rel < 2e-2 && rel > 1e-6,
                "{case:?}: training output off by {rel:.2e}"
            );
            l.precision = crate::Precision::F32;
            l.winograd_forward(isa, &x, &mut y);
            let dy = normal(y.shape(), 5);
            let grads = |l: &mut ConvBlock| {
                let mut dx = Tensor::default();
                l.winograd_backward(isa, &x, Some((&y, &dy)), Some(&mut dx));
                let mut all = vec![dx.into_vec()];
                all.extend(l.params_mut().into_iter().map(|p| p.grad.data().to_vec()));
                all
            };
            let want = grads(&mut l);
            l.precision = bf16;
            let got = grads(&mut l);
            // Input, weight and bias gradients (the bias's sums no products).
            for (part, (g, w)) in got.iter().zip(&want).enumerate() {
                let rel = off(g, w);
                assert!(rel < 2e-2, "{case:?}: gradient {part} off by {rel:.2e}");
                assert!(
                    part == 2 || rel > 1e-6,
                    "{case:?}: gradient {part} is fp32's"
                );
            }
        }
        assert!(tried >= 10, "only {tried} blocks tried");
    }

    #[test]
    fn bf16_winograd_does_not_depend_on_thread_count_and_inference_agrees() {
        let case = CASES[1];
        let (hwc, ..) = case;
        let x = normal(&[17, hwc[0], hwc[1], hwc[2]], 14);
        let mut probe = block(Kind::ReluPool, case).expect("fuses");
        let Some(bf16) = bf16_winograd(&probe) else {
            eprintln!("no AVX512-BF16 here: bf16 Winograd not tested");
            return;
        };
        let run_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let mut l = block(Kind::ReluPool, case).expect("fuses");
                l.precision = bf16;
                trained(&mut l, &x, 9, Some(Isa::detect()))
            })
        };
        let first = run_with(1);
        for threads in [2, 3] {
            assert!(run_with(threads) == first, "{threads} threads");
        }
        // Inference in bf16 runs the same products and gives the training pass's output.
        let infer = run_in(&mut probe, &x, Mode::Eval, bf16);
        assert!(
            infer.data() == &first[0][..],
            "inference differs from training"
        );
        let fp32 = run_in(&mut probe, &x, Mode::Eval, crate::Precision::F32);
        assert!(infer.data() != fp32.data(), "inference in bf16 is fp32's");
    }

    #[test]
    fn winograd_convolution_of_a_batch_norm_block_is_the_plain_one_when_exact() {
        // The convolution alone (its output; its gradients for a given output gradient),
        // on eighths: every sum exact, so any order gives the same bits; in fp32, and in
        // bf16 (where transformed eighths are bf16 values).
        let mut tried = 0;
        for (i, case) in fused_cases().into_iter().enumerate() {
            for kind in [Kind::NormPool, Kind::Norm] {
                let Some(mut l) = block(kind, case) else {
                    continue;
                };
                for (j, (_, t)) in l.conv.tensors_mut().into_iter().enumerate() {
                    let v = eighths(t.shape(), 50 + j as u64);
                    t.data_mut().copy_from_slice(v.data());
                }
                if l.kernels() != Kernels::WinogradMap {
                    continue;
                }
                tried += 1;
                let (hwc, ..) = case;
                let x = eighths(&[1 + i % 3, hwc[0], hwc[1], hwc[2]], i as u64);
                let mut ctx_rng = Rng::new(0);
                let mut ctx = Context {
                    mode: Mode::Train,
                    rng: &mut ctx_rng,
                    precision: crate::Precision::F32,
                };
                let mut want = Tensor::default();
                l.conv.forward(&x, &mut want, &mut ctx);
                let grad = eighths(want.shape(), 3);
                let mut dx = Tensor::default();
                l.conv.backward(&x, &want, &grad, Some(&mut dx));
                let mut want_grads = vec![dx.into_vec()];
                want_grads.extend(
                    l.conv
                        .params_mut()
                        .into_iter()
                        .map(|p| p.grad.data().to_vec()),
                );
                let mut precisions = vec![crate::Precision::F32];
                precisions.extend(bf16_winograd(&l));
                for p in precisions {
                    l.precision = p;
                    l.winograd_map_forward(Isa::detect(), &x);
                    assert!(
                        l.conv_out == want,
                        "{kind:?} {case:?} {p:?}: output differs"
                    );
                    l.conv_grad = grad.clone();
                    let mut dx = Tensor::default();
                    l.winograd_backward(Isa::detect(), &x, None, Some(&mut dx));
                    let mut got = vec![dx.into_vec()];
                    got.extend(
                        l.conv
                            .params_mut()
                            .into_iter()
                            .map(|p| p.grad.data().to_vec()),
                    );
                    assert!(
                        got == want_grads,
                        "{kind:?} {case:?} {p:?}: gradients differ"
                    );
                }
            }
        }
        assert!(tried > 40, "only {tried} blocks tried");
    }

    #[test]
    fn fused_training_of_an_empty_batch_gives_empty_outputs_and_zero_gradients() {
        for (case, hwc) in [(CASES[0], [0, 28, 28, 1]), (CASES[1], [0, 13, 13, 32])] {
            let mut l = fused_block(case).expect("fuses");
            let x = eighths(&hwc, 1);
            let got = trained(&mut l, &x, 2, Some(Isa::detect()));
            assert!(got[0].is_empty() && got[1].is_empty(), "outputs");
            assert!(got[2..].iter().flatten().all(|&g| g == 0.0), "gradients");
        }
    }

    #[test]
    fn fused_training_matches_the_plain_layers_on_random_values() {
        // Every ReLU-pool geometry (direct or Winograd kernels), and the batch-norm
        // blocks of many channels (Winograd's convolution, then the plain layers).
        let mut runs: Vec<(Kind, Case)> = CASES.iter().map(|&c| (Kind::ReluPool, c)).collect();
        for kind in [Kind::NormPool, Kind::Norm] {
            runs.extend([CASES[1], CASES[3], CASES[4], CASES[6]].map(|c| (kind, c)));
        }
        for (kind, case) in runs {
            let mut l = block(kind, case).expect("fuses");
            assert!(l.kernels() != Kernels::Plain, "{kind:?} {case:?}");
            let (hwc, ..) = case;
            let x = normal(&[4, hwc[0], hwc[1], hwc[2]], 3);
            let want = trained(&mut l, &x, 8, None);
            let got = trained(&mut l, &x, 8, Some(Isa::detect()));
            for (part, (g, w)) in got.iter().zip(&want).enumerate() {
                // Sums of a few hundred products in another order (through batch norm):
                // a few f32 ulps of the largest term.
                let ok = g.len() == w.len()
                    && g.iter()
                        .zip(w)
                        .all(|(&g, &w)| (g - w).abs() <= 1e-4 * (1.0 + w.abs()));
                assert!(ok, "{kind:?} {case:?}: part {part} differs");
            }
        }
    }

    #[test]
    fn fused_training_does_not_depend_on_instruction_set_or_thread_count() {
        // `simple`'s two layers and the second with batch norm, 17 images: parts of every
        // kernel and a short last one.
        let runs = [
            (Kind::ReluPool, CASES[0]),
            (Kind::ReluPool, CASES[1]),
            (Kind::NormPool, CASES[1]),
            (Kind::Norm, CASES[1]),
        ];
        for (kind, case) in runs {
            let (hwc, ..) = case;
            let x = normal(&[17, hwc[0], hwc[1], hwc[2]], 12);
            let run_with = |threads: usize, isa: Isa| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                pool.install(|| {
                    let mut l = block(kind, case).expect("fuses");
                    assert!(l.kernels() != Kernels::Plain, "{case:?}");
                    trained(&mut l, &x, 9, Some(isa))
                })
            };
            let first = run_with(1, Isa::Generic);
            for isa in Isa::available() {
                for threads in [1, 2, 3] {
                    assert!(
                        run_with(threads, isa) == first,
                        "{case:?}: {isa:?} on {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn fused_training_gives_inference_output_and_follows_inference_passes() {
        let cases = fused_cases();
        for case in cases[..20].iter().chain(&cases[60..75]).copied() {
            let Some(mut l) = fused_block(case) else {
                continue;
            };
            let (hwc, ..) = case;
            let x = normal(&[3, hwc[0], hwc[1], hwc[2]], 2);
            let train = run(&mut l, &x, Mode::Train);
            let dy = normal(train.shape(), 6);
            let grads = |l: &mut ConvBlock, y: &Tensor| {
                let mut dx = Tensor::default();
                l.backward(&x, y, &dy, Some(&mut dx));
                let mut all = dx.into_vec();
                for p in l.params_mut() {
                    all.extend_from_slice(p.grad.data());
                }
                all
            };
            let after_train = grads(&mut l, &train);
            let infer = run(&mut l, &x, Mode::Eval);
            // The same arithmetic as inference on the vector instruction sets.
            if Isa::detect() != Isa::Generic {
                assert!(infer == train, "{case:?}");
            }
            assert!(grads(&mut l, &infer) == after_train, "{case:?}");
        }
    }
}
