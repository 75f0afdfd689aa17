//! Forward passes against their plain definitions.

mod common;

use common::{net, normal};
use nn::layers::conv2d_reference;
use nn::{LayerSpec as L, Mode, Rng, Tensor};

fn forward(input: &[usize], layers: Vec<L>, x: &Tensor, mode: Mode) -> Tensor {
    net(input, layers, 1)
        .forward(x, mode, &mut Rng::new(0))
        .clone()
}

/// `spec` built with and without fusing, with the same weights.
fn fused_and_plain(spec: &nn::ModelSpec) -> (nn::Network, nn::Network) {
    let fused = spec.build_with(&mut Rng::new(1), true).unwrap();
    let plain = spec.build_with(&mut Rng::new(1), false).unwrap();
    (fused, plain)
}

/// Inference through `fused` gives what `plain` gives, to within rounding (fused
/// inference may sum in another order, or by Winograd's algorithm).
fn assert_infers_close(fused: &mut nn::Network, plain: &mut nn::Network, x: &Tensor) {
    let yf = fused.forward(x, Mode::Eval, &mut Rng::new(0)).clone();
    let yp = plain.forward(x, Mode::Eval, &mut Rng::new(0)).clone();
    assert_eq!(yf.shape(), yp.shape());
    for (a, b) in yf.data().iter().zip(yp.data()) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

/// Every tensor's name.
fn names(n: &nn::Network) -> Vec<String> {
    n.tensors().into_iter().map(|(k, _)| k).collect()
}

/// One pass in `mode` and back through `fused` and `plain` (one architecture built with
/// and without fusing, the same weights): outputs, input gradients, parameter gradients
/// and every tensor (running statistics included) must agree bit for bit.
fn assert_same_step(fused: &mut nn::Network, plain: &mut nn::Network, x: &Tensor, mode: Mode) {
    let yf = fused.forward(x, mode, &mut Rng::new(0)).clone();
    let yp = plain.forward(x, mode, &mut Rng::new(0)).clone();
    assert!(yf == yp, "{mode:?}: outputs differ");
    let dy = normal(yf.shape(), 8);
    let (mut dxf, mut dxp) = (Tensor::default(), Tensor::default());
    fused.backward(x, &dy, Some(&mut dxf));
    plain.backward(x, &dy, Some(&mut dxp));
    assert!(dxf == dxp, "{mode:?}: input gradients differ");
    assert!(
        dxf.data().iter().any(|&v| v != 0.0),
        "{mode:?}: no gradient"
    );
    let grads = |n: &mut nn::Network| {
        n.params_mut()
            .iter()
            .map(|p| p.grad.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        grads(fused) == grads(plain),
        "{mode:?}: parameter gradients differ"
    );
    assert!(
        fused.snapshot() == plain.snapshot(),
        "{mode:?}: tensors differ"
    );
}

/// As [`assert_same_step`], to within rounding: a block of few input channels, ReLU and
/// a 2×2 pool trains with its own direct kernels, which sum in another order.
fn assert_close_step(fused: &mut nn::Network, plain: &mut nn::Network, x: &Tensor) {
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&a, &b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
    };
    let yf = fused.forward(x, Mode::Train, &mut Rng::new(0)).clone();
    let yp = plain.forward(x, Mode::Train, &mut Rng::new(0)).clone();
    assert!(close(yf.data(), yp.data()), "outputs differ");
    let dy = normal(yf.shape(), 8);
    let (mut dxf, mut dxp) = (Tensor::default(), Tensor::default());
    fused.backward(x, &dy, Some(&mut dxf));
    plain.backward(x, &dy, Some(&mut dxp));
    assert!(close(dxf.data(), dxp.data()), "input gradients differ");
    assert!(dxf.data().iter().any(|&v| v != 0.0), "no gradient");
    for (p, q) in fused.params_mut().into_iter().zip(plain.params_mut()) {
        assert!(
            close(p.grad.data(), q.grad.data()),
            "parameter gradients differ"
        );
    }
}

#[test]
fn conv2d_matches_the_reference_on_many_geometries() {
    // (h, w, c, filters, kernel, stride, padding, bias)
    let cases = [
        (28, 28, 1, 32, 3, 1, 0, true),
        (13, 13, 32, 64, 3, 1, 0, true),
        (9, 7, 3, 5, 3, 2, 1, false),
        (8, 8, 4, 6, 5, 1, 2, true),
        (6, 6, 2, 3, 1, 1, 0, true),
        (7, 7, 2, 4, 3, 3, 1, true),
        // Single-channel inputs take the direct path where the CPU has wide vectors.
        (9, 8, 1, 16, 3, 2, 1, false),
        (10, 10, 1, 8, 5, 1, 2, true),
        (6, 7, 1, 100, 3, 1, 1, true),
    ];
    for (i, &(h, w, c, f, k, s, p, bias)) in cases.iter().enumerate() {
        let spec = L::Conv2d {
            filters: f,
            kernel: k,
            stride: s,
            padding: p,
            bias,
        };
        let mut n = net(&[h, w, c], vec![spec], i as u64);
        let x = normal(&[3, h, w, c], 100 + i as u64);
        let got = n.forward(&x, Mode::Eval, &mut Rng::new(0)).clone();
        let t = n.tensors();
        let want = conv2d_reference(&x, t[0].1, bias.then(|| t[1].1), s, p);
        assert_eq!(got.shape(), want.shape(), "case {i}");
        for (a, b) in got.data().iter().zip(want.data()) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "case {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn max_and_avg_pool_on_a_known_map() {
    // One 4×4 single-channel map with values 0..16.
    let x = Tensor::from_vec(&[1, 4, 4, 1], (0..16).map(|v| v as f32).collect()).unwrap();
    let max = forward(
        &[4, 4, 1],
        vec![L::MaxPool2d {
            size: 2,
            stride: None,
        }],
        &x,
        Mode::Eval,
    );
    assert_eq!(max.shape(), &[1, 2, 2, 1]);
    assert_eq!(max.data(), &[5.0, 7.0, 13.0, 15.0]);
    let avg = forward(
        &[4, 4, 1],
        vec![L::AvgPool2d {
            size: 2,
            stride: None,
        }],
        &x,
        Mode::Eval,
    );
    assert_eq!(avg.data(), &[2.5, 4.5, 10.5, 12.5]);
    let over = forward(
        &[4, 4, 1],
        vec![L::MaxPool2d {
            size: 3,
            stride: Some(1),
        }],
        &x,
        Mode::Eval,
    );
    assert_eq!(over.data(), &[10.0, 11.0, 14.0, 15.0]);
    let gmax = forward(&[4, 4, 1], vec![L::GlobalMaxPool], &x, Mode::Eval);
    let gavg = forward(&[4, 4, 1], vec![L::GlobalAvgPool], &x, Mode::Eval);
    assert_eq!((gmax.data(), gavg.data()), (&[15.0][..], &[7.5][..]));
}

#[test]
fn channels_stay_separate_in_pooling() {
    // Two channels: the second is the negation of the first.
    let v: Vec<f32> = (0..16).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let x = Tensor::from_vec(&[1, 4, 4, 2], v).unwrap();
    let max = forward(
        &[4, 4, 2],
        vec![L::MaxPool2d {
            size: 2,
            stride: None,
        }],
        &x,
        Mode::Eval,
    );
    assert_eq!(max.data(), &[5.0, 0.0, 7.0, -2.0, 13.0, -8.0, 15.0, -10.0]);
}

#[test]
fn batch_norm_normalises_in_training_and_tracks_running_statistics() {
    let bn = || {
        vec![L::BatchNorm {
            momentum: 0.1,
            eps: 1e-5,
        }]
    };
    let x = normal(&[8, 3, 3, 2], 4);
    let shifted =
        Tensor::from_vec(x.shape(), x.data().iter().map(|v| 3.0 * v + 5.0).collect()).unwrap();
    let mut n = net(&[3, 3, 2], bn(), 0);
    let y = n.forward(&shifted, Mode::Train, &mut Rng::new(0)).clone();
    for ch in 0..2 {
        let vals: Vec<f64> = y
            .data()
            .iter()
            .skip(ch)
            .step_by(2)
            .map(|&v| v as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
            "channel {ch}: {mean} {var}"
        );
    }
    let t = n.tensors();
    let (rm, rv) = (t[2].1.data(), t[3].1.data());
    // One update from (0, 1) with momentum 0.1 towards mean ≈ 5, variance ≈ 9.
    assert!(rm.iter().all(|&m| (m - 0.5).abs() < 0.15), "{rm:?}");
    assert!(rv.iter().all(|&v| (v - 1.8).abs() < 0.5), "{rv:?}");
    // Inference uses the running statistics, not the batch's.
    let e = n.forward(&shifted, Mode::Eval, &mut Rng::new(0)).clone();
    assert!((e.data()[0] - y.data()[0]).abs() > 0.5);
}

#[test]
fn dropout_drops_at_its_rate_in_training_only() {
    let x = Tensor::from_vec(&[10, 1000], vec![1.0; 10_000]).unwrap();
    let train = forward(&[1000], vec![L::Dropout { rate: 0.3 }], &x, Mode::Train);
    let zeros = train.data().iter().filter(|&&v| v == 0.0).count();
    assert!((2700..3300).contains(&zeros), "{zeros}");
    assert!(
        train
            .data()
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6)
    );
    let eval = forward(&[1000], vec![L::Dropout { rate: 0.3 }], &x, Mode::Eval);
    assert_eq!(eval, x);
}

#[test]
fn activations_and_residual() {
    let x = Tensor::from_vec(&[1, 4], vec![-2.0, -0.5, 0.0, 1.5]).unwrap();
    assert_eq!(
        forward(&[4], vec![L::Relu], &x, Mode::Eval).data(),
        &[0.0, 0.0, 0.0, 1.5]
    );
    let g = forward(&[4], vec![L::Gelu], &x, Mode::Eval);
    // x/2 · (1 + tanh(√(2/π)(x + 0.044715x³))), evaluated in f64
    let want: [f32; 4] = [-0.045_402_306, -0.154_286, 0.0, 1.399_571_6];
    for (a, b) in g.data().iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let r = forward(
        &[4],
        vec![L::Residual {
            body: vec![L::Relu],
        }],
        &x,
        Mode::Eval,
    );
    assert_eq!(r.data(), &[-2.0, -0.5, 0.0, 3.0]);
}

#[test]
fn fused_relu_max_pool_matches_the_plain_layers() {
    for (size, stride) in [(2, 2), (3, 2), (2, 1), (3, 3)] {
        let spec = nn::ModelSpec {
            name: String::new(),
            input: vec![9, 9, 2],
            init: nn::Init::Torch,
            layers: vec![
                L::Conv2d {
                    filters: 4,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    bias: true,
                },
                L::Relu,
                L::MaxPool2d {
                    size,
                    stride: Some(stride),
                },
                L::Flatten,
                L::Linear {
                    units: 3,
                    bias: true,
                },
            ],
        };
        let (mut fused, mut plain) = fused_and_plain(&spec);
        assert_eq!(names(&fused), names(&plain));
        assert_eq!(names(&fused), ["0.weight", "0.bias", "4.weight", "4.bias"]);
        let x = normal(&[3, 9, 9, 2], 7);
        if (size, stride) == (2, 2) {
            // Built with the convolution as one block, which trains with direct kernels.
            assert_eq!(fused.layers_len(), 3, "block, flatten, linear");
            assert_close_step(&mut fused, &mut plain, &x);
        } else {
            assert_same_step(&mut fused, &mut plain, &x, Mode::Train);
        }
    }
}

#[test]
fn fused_convolution_stages_infer_what_the_plain_layers_do() {
    // The `simple` classifier's shape: two fused stages (direct, then Winograd), a head.
    let conv = |filters| L::Conv2d {
        filters,
        kernel: 3,
        stride: 1,
        padding: 0,
        bias: true,
    };
    let pool = L::MaxPool2d {
        size: 2,
        stride: None,
    };
    let spec = nn::ModelSpec {
        name: String::new(),
        input: vec![28, 28, 1],
        init: nn::Init::Torch,
        layers: vec![
            conv(32),
            L::Relu,
            pool.clone(),
            conv(64),
            L::Relu,
            pool,
            L::Flatten,
            L::Linear {
                units: 10,
                bias: true,
            },
        ],
    };
    let (mut fused, mut plain) = fused_and_plain(&spec);
    assert_eq!(fused.layers_len(), 4, "two fused stages, flatten, linear");
    let x = normal(&[9, 28, 28, 1], 4);
    assert_infers_close(&mut fused, &mut plain, &x);
    // Training runs both stages' own kernels (direct, Winograd): the plain layers'
    // results within rounding.
    assert_close_step(&mut fused, &mut plain, &x);
}

#[test]
fn fused_convolution_blocks_with_batch_norm_train_as_the_plain_layers_and_keep_their_names() {
    let conv = |filters| L::Conv2d {
        filters,
        kernel: 3,
        stride: 1,
        padding: 1,
        bias: false,
    };
    let bn = L::BatchNorm {
        momentum: 0.1,
        eps: 1e-5,
    };
    let spec = nn::ModelSpec {
        name: String::new(),
        input: vec![8, 8, 1],
        init: nn::Init::HeUniform,
        layers: vec![
            // conv, batch norm, ReLU, pool (the plain layers: few channels); conv, batch
            // norm, ReLU (the convolution by Winograd's algorithm in training)
            conv(8),
            bn.clone(),
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
            conv(12),
            bn,
            L::Relu,
            L::Flatten,
            L::Linear {
                units: 3,
                bias: true,
            },
        ],
    };
    let (mut fused, mut plain) = fused_and_plain(&spec);
    assert_eq!(fused.layers_len(), 4, "two blocks, flatten, linear");
    assert_eq!(names(&fused), names(&plain));
    assert!(names(&fused).contains(&"5.running_var".to_string()));
    let x = normal(&[3, 8, 8, 1], 7);
    for _ in 0..2 {
        assert_close_step(&mut fused, &mut plain, &x);
        // The running statistics too.
        for (a, b) in fused.snapshot().iter().zip(plain.snapshot()) {
            for (a, b) in a.data().iter().zip(b.data()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        // A step of the same size for both, so the next pass starts from new weights.
        for (p, q) in fused.params_mut().into_iter().zip(plain.params_mut()) {
            for (v, w) in p.value.data_mut().iter_mut().zip(q.value.data_mut()) {
                *v -= 0.1 * (*v).signum();
                *w -= 0.1 * (*w).signum();
            }
        }
    }
    assert_infers_close(&mut fused, &mut plain, &x);
}

#[test]
fn fused_batch_norm_relu_matches_the_plain_layers_bit_for_bit() {
    let spec = nn::ModelSpec {
        name: String::new(),
        input: vec![6, 6, 2],
        init: nn::Init::HeUniform,
        layers: vec![
            L::Conv2d {
                filters: 5,
                kernel: 3,
                stride: 1,
                padding: 1,
                bias: false,
            },
            L::BatchNorm {
                momentum: 0.1,
                eps: 1e-5,
            },
            L::Relu,
            L::GlobalAvgPool,
            L::Linear {
                units: 3,
                bias: true,
            },
        ],
    };
    let (mut fused, mut plain) = fused_and_plain(&spec);
    assert_eq!(
        fused.layers_len() + 1,
        plain.layers_len(),
        "the pair is fused"
    );
    assert_eq!(names(&fused), names(&plain));
    for mode in [Mode::Train, Mode::Eval] {
        assert_same_step(&mut fused, &mut plain, &normal(&[4, 6, 6, 2], 9), mode);
    }
}
