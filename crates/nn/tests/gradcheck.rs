//! Finite-difference checks of every layer's backward pass and of the loss.
//!
//! For a layer `y = f(x)` we take `L = Σ y·r` with a fixed random `r`, so `dL/dy = r`,
//! and compare the analytic dL/dx and dL/dθ with central differences
//! `D(h) = (L(x+h) − L(x−h)) / 2h`, Richardson-extrapolated: `(4·D(ε/2) − D(ε)) / 3`
//! cancels the h² truncation term; `L` is summed in f64.
//!
//! Tolerance (f32 engine): relative error `|a−n| / max(|a|, |n|, 1e-2)` below 1e-3.
//! The engine computes in f32, so `L` carries rounding noise of ≈ 1e-7 relative per
//! output touched, which a step `h` turns into ≈ 1e-6/h of error in `n`: steps are as large
//! as each layer allows. Layers linear in what is perturbed (convolution, dense, pooling,
//! dropout) are exact for any step and use ε = 0.1; smooth layers (GELU, batch norm, the
//! loss) use ε = 0.05, where the extrapolated truncation error O(ε⁴) is ≈ 1e-5; layers
//! with kinks (ReLU, max) get inputs spaced 0.05 apart and ε = 0.02, so no step crosses one.

mod common;

use common::{net, normal, spaced};
use nn::{LayerSpec as L, Mode, Network, Rng, Tensor, loss};

/// Step for layers linear in what is perturbed.
const LINEAR: f32 = 0.1;
/// Step for smooth non-linear layers.
const SMOOTH: f32 = 0.05;
/// Step for inputs spaced 0.05 apart around kinks.
const KINKED: f32 = 0.02;
const TOL: f64 = 1e-3;
const SAMPLES: usize = 24;

fn objective(net: &mut Network, x: &Tensor, r: &Tensor) -> f64 {
    let y = net.forward(x, Mode::Train, &mut Rng::new(99));
    y.data()
        .iter()
        .zip(r.data())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Richardson-extrapolated central difference of `f` at 0.
fn derivative(eps: f32, mut f: impl FnMut(f32) -> f64) -> f64 {
    let mut central = |h: f32| (f(h) - f(-h)) / (2.0 * h as f64);
    let (coarse, fine) = (central(eps), central(eps / 2.0));
    (4.0 * fine - coarse) / 3.0
}

fn rel_err(a: f64, n: f64) -> f64 {
    (a - n).abs() / a.abs().max(n.abs()).max(1e-2)
}

/// Checks dL/dx and dL/dθ of `layers` on input `x`; returns the worst relative error.
fn check(input: &[usize], layers: Vec<L>, x: Tensor, eps: f32) -> f64 {
    let mut net = net(input, layers, 11);
    let out_shape: Vec<usize> = std::iter::once(x.batch())
        .chain(net.output_shape().iter().copied())
        .collect();
    let r = normal(&out_shape, 5);
    objective(&mut net, &x, &r);
    let mut dx = Tensor::default();
    net.backward(&x, &r, Some(&mut dx));
    let grads: Vec<Tensor> = net.params_mut().iter().map(|p| p.grad.clone()).collect();
    let mut worst = 0.0f64;
    let mut pick = Rng::new(3);

    // Inputs.
    let mut xp = x.clone();
    for _ in 0..SAMPLES.min(x.len()) {
        let i = pick.below(x.len());
        let orig = xp.data()[i];
        let numeric = derivative(eps, |h| {
            xp.data_mut()[i] = orig + h;
            objective(&mut net, &xp, &r)
        });
        xp.data_mut()[i] = orig;
        let e = rel_err(dx.data()[i] as f64, numeric);
        assert!(
            e < TOL,
            "dx[{i}]: analytic {} numeric {numeric} (rel {e:.2e})",
            dx.data()[i]
        );
        worst = worst.max(e);
    }

    // Parameters.
    for (k, g) in grads.iter().enumerate() {
        for _ in 0..SAMPLES.min(g.len()) {
            let i = pick.below(g.len());
            let orig = net.params_mut()[k].value.data()[i];
            let numeric = derivative(eps, |h| {
                net.params_mut()[k].value.data_mut()[i] = orig + h;
                objective(&mut net, &x, &r)
            });
            net.params_mut()[k].value.data_mut()[i] = orig;
            let e = rel_err(g.data()[i] as f64, numeric);
            assert!(
                e < TOL,
                "param {k}[{i}]: analytic {} numeric {numeric} (rel {e:.2e})",
                g.data()[i]
            );
            worst = worst.max(e);
        }
    }
    worst
}

fn conv(filters: usize, kernel: usize, stride: usize, padding: usize, bias: bool) -> L {
    L::Conv2d {
        filters,
        kernel,
        stride,
        padding,
        bias,
    }
}

#[test]
fn conv2d_valid_stride1_with_bias() {
    check(
        &[6, 5, 3],
        vec![conv(4, 3, 1, 0, true)],
        normal(&[2, 6, 5, 3], 1),
        LINEAR,
    );
}

#[test]
fn conv2d_padded_stride2_without_bias() {
    check(
        &[7, 6, 2],
        vec![conv(3, 3, 2, 1, false)],
        normal(&[2, 7, 6, 2], 2),
        LINEAR,
    );
}

#[test]
fn conv2d_single_channel_direct_path() {
    check(
        &[6, 5, 1],
        vec![conv(4, 3, 1, 1, true)],
        normal(&[3, 6, 5, 1], 23),
        LINEAR,
    );
    check(
        &[7, 7, 1],
        vec![conv(5, 3, 2, 0, false)],
        normal(&[2, 7, 7, 1], 24),
        LINEAR,
    );
}

#[test]
fn conv2d_one_by_one() {
    check(
        &[4, 4, 5],
        vec![conv(2, 1, 1, 0, true)],
        normal(&[3, 4, 4, 5], 3),
        LINEAR,
    );
}

#[test]
fn max_pool_disjoint_and_overlapping() {
    let pool = |size, stride| L::MaxPool2d {
        size,
        stride: Some(stride),
    };
    check(
        &[6, 6, 3],
        vec![pool(2, 2)],
        spaced(&[2, 6, 6, 3], 4),
        KINKED,
    );
    check(
        &[7, 7, 2],
        vec![pool(3, 2)],
        spaced(&[2, 7, 7, 2], 5),
        KINKED,
    );
    // Odd size: the last row and column are dropped, and get zero gradient.
    check(
        &[5, 5, 2],
        vec![pool(2, 2)],
        spaced(&[2, 5, 5, 2], 6),
        KINKED,
    );
}

#[test]
fn fused_relu_and_max_pool() {
    let pair = |size, stride| {
        vec![
            L::Relu,
            L::MaxPool2d {
                size,
                stride: Some(stride),
            },
        ]
    };
    check(&[6, 6, 3], pair(2, 2), spaced(&[2, 6, 6, 3], 21), KINKED);
    check(&[7, 7, 2], pair(3, 2), spaced(&[2, 7, 7, 2], 22), KINKED);
}

#[test]
fn fused_convolution_relu_and_max_pool() {
    // Built as one layer (3×3 stride-1 convolution, ReLU, 2×2 pool); its training pass is
    // checked here, its inference pass against this one in its unit tests.
    let triple = |padding, bias| {
        vec![
            conv(3, 3, 1, padding, bias),
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
        ]
    };
    // Small maps: few pooling windows, so no step of the check crosses a kink.
    check(
        &[4, 4, 2],
        triple(0, true),
        spaced(&[2, 4, 4, 2], 25),
        KINKED,
    );
    check(
        &[5, 4, 1],
        triple(1, false),
        spaced(&[1, 5, 4, 1], 26),
        KINKED,
    );
    // Eight or more input channels: Winograd's training kernels. One window per filter
    // and image, as few kinks as a check of many channels can have near its steps.
    check(
        &[4, 4, 8],
        triple(0, true),
        spaced(&[1, 4, 4, 8], 37),
        KINKED,
    );
    check(
        &[3, 3, 9],
        triple(1, false),
        spaced(&[1, 3, 3, 9], 28),
        KINKED,
    );
}

#[test]
fn avg_pool() {
    check(
        &[6, 4, 3],
        vec![L::AvgPool2d {
            size: 2,
            stride: None,
        }],
        normal(&[2, 6, 4, 3], 7),
        LINEAR,
    );
}

#[test]
fn global_pools() {
    check(
        &[3, 4, 5],
        vec![L::GlobalAvgPool],
        normal(&[2, 3, 4, 5], 8),
        LINEAR,
    );
    check(
        &[3, 4, 5],
        vec![L::GlobalMaxPool],
        spaced(&[2, 3, 4, 5], 9),
        KINKED,
    );
}

#[test]
fn batch_norm_on_maps_and_vectors() {
    let bn = L::BatchNorm {
        momentum: 0.1,
        eps: 1e-5,
    };
    check(
        &[3, 3, 4],
        vec![bn.clone()],
        normal(&[3, 3, 3, 4], 28),
        SMOOTH,
    );
    check(&[6], vec![bn], normal(&[5, 6], 11), SMOOTH);
}

#[test]
fn relu_and_gelu() {
    check(&[4, 4, 2], vec![L::Relu], spaced(&[2, 4, 4, 2], 12), KINKED);
    check(&[4, 4, 2], vec![L::Gelu], normal(&[2, 4, 4, 2], 13), SMOOTH);
}

#[test]
fn linear_with_and_without_bias() {
    check(
        &[7],
        vec![L::Linear {
            units: 5,
            bias: true,
        }],
        normal(&[4, 7], 14),
        LINEAR,
    );
    check(
        &[7],
        vec![L::Linear {
            units: 3,
            bias: false,
        }],
        normal(&[4, 7], 15),
        LINEAR,
    );
}

#[test]
fn dropout_and_flatten() {
    check(
        &[12],
        vec![L::Dropout { rate: 0.4 }],
        normal(&[4, 12], 16),
        LINEAR,
    );
    check(
        &[2, 3, 2],
        vec![
            L::Flatten,
            L::Linear {
                units: 3,
                bias: true,
            },
        ],
        normal(&[2, 2, 3, 2], 17),
        LINEAR,
    );
}

#[test]
fn residual_block() {
    let body = vec![
        conv(3, 3, 1, 1, false),
        L::BatchNorm {
            momentum: 0.1,
            eps: 1e-5,
        },
        L::Gelu,
    ];
    check(
        &[5, 5, 3],
        vec![L::Residual { body }],
        normal(&[2, 5, 5, 3], 18),
        SMOOTH,
    );
}

#[test]
fn a_whole_small_cnn() {
    let layers = vec![
        conv(4, 3, 1, 1, true),
        L::Gelu,
        L::AvgPool2d {
            size: 2,
            stride: None,
        },
        L::Residual {
            body: vec![conv(4, 3, 1, 1, true), L::Gelu],
        },
        L::Flatten,
        L::Linear {
            units: 3,
            bias: true,
        },
    ];
    check(&[6, 6, 2], layers, normal(&[2, 6, 6, 2], 19), SMOOTH);
}

#[test]
fn softmax_cross_entropy_with_smoothing() {
    let logits = normal(&[4, 5], 20);
    let labels = [0, 3, 4, 1];
    for smoothing in [0.0, 0.1] {
        let mut g = Tensor::default();
        loss::softmax_cross_entropy(&logits, &labels, smoothing, &mut g);
        let mut scratch = Tensor::default();
        for i in 0..logits.len() {
            let numeric = derivative(SMOOTH, |h| {
                let mut l = logits.clone();
                l.data_mut()[i] += h;
                loss::softmax_cross_entropy(&l, &labels, smoothing, &mut scratch) as f64
            });
            // The loss is a mean of O(1) terms: compare against the gradient scale 1/n.
            let e = (g.data()[i] as f64 - numeric).abs()
                / (g.data()[i].abs() as f64).max(numeric.abs()).max(0.25);
            assert!(
                e < TOL,
                "dlogits[{i}] smoothing {smoothing}: {} vs {numeric}",
                g.data()[i]
            );
        }
    }
}

/// `rows` rows of `c` channels where each channel holds ±0.5, ±1.5, … in a different
/// order: zero mean, so batch norm's outputs stay well away from ReLU's kink at 0.
fn symmetric_rows(shape: &[usize]) -> Tensor {
    let c = *shape.last().unwrap();
    let n: usize = shape.iter().product::<usize>() / c;
    assert!(n.is_multiple_of(2) && !n.is_multiple_of(3));
    let value = |k: usize| {
        let m = (k / 2) as f32 + 0.5;
        if k.is_multiple_of(2) { m } else { -m }
    };
    let data = (0..n * c).map(|i| value((i / c * 3 + i % c) % n)).collect();
    Tensor::from_vec(shape, data).unwrap()
}

#[test]
fn fused_batch_norm_and_relu() {
    let pair = vec![
        L::BatchNorm {
            momentum: 0.1,
            eps: 1e-5,
        },
        L::Relu,
    ];
    check(
        &[2, 2, 3],
        pair.clone(),
        symmetric_rows(&[2, 2, 2, 3]),
        KINKED,
    );
    check(&[4], pair, symmetric_rows(&[8, 4]), KINKED);
}
