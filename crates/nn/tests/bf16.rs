//! bf16 matrix products on every bf16 instruction set this CPU has, against the exact
//! product of the same bf16-rounded operands, against fp32, and across thread counts.

use nn::matmul::bf16::{from_bf16, to_bf16};
use nn::matmul::{Mat, matmul, matmul_in, matmul_tn_reduce_in};
use nn::{Bf16Isa, Precision, Rng};

/// The instruction sets to test: every one this CPU runs. A CPU that reports
/// AVX512-BF16 must offer at least that one, so the tests cannot pass by testing none.
fn isas() -> Vec<Bf16Isa> {
    let all = Bf16Isa::available();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512bf16") {
        assert!(
            all.contains(&Bf16Isa::Avx512Bf16),
            "AVX512-BF16 not offered"
        );
    }
    eprintln!("bf16 instruction sets tested: {all:?}");
    all
}

fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

/// The exact (f64) product of the bf16-rounded operands, and Σ|a·b| per output (the
/// scale of fp32 accumulation error). A product with a side under 32 runs in fp32
/// (`matmul_in`): its reference rounds nothing.
fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let bf16 = m.min(k).min(n) >= 32;
    let r = |x: f32| {
        if bf16 {
            from_bf16(to_bf16(x)) as f64
        } else {
            x as f64
        }
    };
    let (mut c, mut scale) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let v = r(a[i * k + p]) * r(b[p * n + j]);
                c[i * n + j] += v;
                scale[i * n + j] += v.abs();
            }
        }
    }
    (c, scale)
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| x[(i % rows) * cols + i / rows])
        .collect()
}

#[test]
fn products_match_the_exact_product_of_the_rounded_operands() {
    let mut rng = Rng::new(7);
    let shapes = [
        (1, 1, 1),
        (3, 5, 2),
        (31, 33, 17),
        (32, 32, 32),
        (33, 10, 65),
        (70, 288, 64),
        (128, 1600, 10),
        (5, 3000, 7),
    ];
    for isa in isas() {
        for &(m, k, n) in &shapes {
            let a = random(&mut rng, m * k);
            let b = random(&mut rng, k * n);
            let (want, scale) = reference(&a, &b, m, k, n);
            let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
            let init = random(&mut rng, m * n);
            // Plain, both operands stored transposed, and accumulating.
            for case in 0..3 {
                let mut got = if case == 2 {
                    init.clone()
                } else {
                    vec![f32::NAN; m * n]
                };
                let (av, bv) = match case {
                    1 => (Mat::new(&at, k, m).t(), Mat::new(&bt, n, k).t()),
                    _ => (Mat::new(&a, m, k), Mat::new(&b, k, n)),
                };
                matmul_in(Precision::Bf16(isa), &mut got, av, bv, case == 2);
                for i in 0..m * n {
                    let w = want[i] + if case == 2 { init[i] as f64 } else { 0.0 };
                    let tol = 1e-6 * (scale[i] + 1.0) * (k as f64).sqrt();
                    let err = (got[i] as f64 - w).abs();
                    assert!(
                        err <= tol,
                        "{isa:?} {m}×{k}×{n} case {case} [{i}]: {} vs {w} (error {err:e}, bound {tol:e})",
                        got[i]
                    );
                }
            }
        }
    }
}

#[test]
fn products_are_within_bf16_rounding_of_fp32() {
    let mut rng = Rng::new(8);
    let (m, k, n) = (100, 288, 64);
    let a = random(&mut rng, m * k);
    let b = random(&mut rng, k * n);
    let mut fp32 = vec![0.0; m * n];
    matmul(&mut fp32, Mat::new(&a, m, k), Mat::new(&b, k, n), false);
    let (_, scale) = reference(&a, &b, m, k, n);
    for isa in isas() {
        let mut got = vec![0.0; m * n];
        matmul_in(
            Precision::Bf16(isa),
            &mut got,
            Mat::new(&a, m, k),
            Mat::new(&b, k, n),
            false,
        );
        let mut worst = 0.0f64;
        for i in 0..m * n {
            // Each operand is within 2^-9 relative of its bf16 value, a product within
            // about 2^-8: the sum moves by at most 2^-8·Σ|a·b|.
            let rel = (got[i] as f64 - fp32[i] as f64).abs() / scale[i];
            assert!(
                rel <= 1.0 / 256.0,
                "{isa:?} [{i}]: {} vs {}",
                got[i],
                fp32[i]
            );
            worst = worst.max(rel);
        }
        // ...and rounding errors mostly cancel, so the typical difference is far smaller.
        assert!(worst > 0.0, "{isa:?}: bf16 gave fp32's results exactly");
        assert!(
            worst < 1.0 / 512.0,
            "{isa:?}: worst relative difference {worst}"
        );
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(9);
    // A long reduction (a weight gradient: split into fixed blocks of rows) and a tall
    // product (split over output rows).
    for (rows, m, n) in [(15_000, 64, 288), (2_000, 300, 40)] {
        let a = random(&mut rng, rows * m);
        let b = random(&mut rng, rows * n);
        for isa in isas() {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("thread pool");
                pool.install(|| {
                    let mut got = vec![0.0; m * n];
                    matmul_tn_reduce_in(
                        Precision::Bf16(isa),
                        &mut got,
                        Mat::new(&a, rows, m),
                        Mat::new(&b, rows, n),
                        &mut Vec::new(),
                    );
                    got
                })
            };
            let one = run(1);
            assert!(one.iter().all(|v| v.is_finite()));
            for threads in [2, 3] {
                assert!(
                    run(threads)
                        .iter()
                        .zip(&one)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa:?} {rows}×{m}×{n}: {threads} threads differ from 1"
                );
            }
        }
    }
}

#[test]
fn detection_prefers_amx_and_falls_back_to_avx512bf16_or_fp32() {
    assert_eq!(Bf16Isa::choose(true, true), Some(Bf16Isa::Amx));
    assert_eq!(Bf16Isa::choose(false, true), Some(Bf16Isa::Avx512Bf16));
    assert_eq!(Bf16Isa::choose(true, false), None);
    assert_eq!(Bf16Isa::choose(false, false), None);
    let here = Bf16Isa::detect();
    assert_eq!(here, Bf16Isa::available().first().copied());
    match here {
        Some(isa) => assert_eq!(Precision::parse("bf16"), Ok(Precision::Bf16(isa))),
        None => {
            let err = Precision::parse("bf16").expect_err("no bf16 here");
            assert!(err.contains("--precision fp32"), "{err}");
        }
    }
    for isa in [Bf16Isa::Amx, Bf16Isa::Avx512Bf16] {
        let name = format!("bf16-{}", isa.name());
        match Precision::parse(&name) {
            Ok(p) => {
                assert!(isa.is_available());
                assert_eq!(p.name(), name);
            }
            Err(e) => {
                assert!(!isa.is_available());
                assert!(e.contains(&name), "{e}");
            }
        }
    }
    assert_eq!(Precision::parse("fp32"), Ok(Precision::F32));
    assert!(Precision::parse("fp16").is_err());
}

#[test]
fn a_network_in_bf16_follows_fp32_within_bf16_rounding() {
    use nn::{LayerSpec as L, Mode, ModelSpec, Tensor};
    let spec = ModelSpec {
        name: String::new(),
        input: vec![9, 9, 32],
        init: nn::Init::GlorotUniform,
        layers: vec![
            L::Conv2d {
                filters: 32,
                kernel: 3,
                stride: 1,
                padding: 1,
                bias: true,
            },
            L::Relu,
            L::Conv2d {
                filters: 48,
                kernel: 3,
                stride: 2,
                padding: 1,
                bias: false,
            },
            L::Flatten,
            L::Linear {
                units: 40,
                bias: true,
            },
        ],
    };
    let mut rng = Rng::new(3);
    let x = Tensor::from_vec(&[6, 9, 9, 32], random(&mut rng, 6 * 9 * 9 * 32)).expect("shape");
    let run = |precision: Precision| {
        let mut net = spec.build(&mut Rng::new(0)).expect("network");
        net.set_precision(precision);
        let y = net.forward(&x, Mode::Train, &mut Rng::new(1)).clone();
        let dy = Tensor::from_vec(y.shape(), random(&mut Rng::new(4), y.len())).expect("shape");
        let mut dx = Tensor::default();
        net.backward(&x, &dy, Some(&mut dx));
        let mut out = vec![y, dx];
        out.extend(net.params_mut().iter().map(|p| p.grad.clone()));
        out
    };
    let fp32 = run(Precision::F32);
    for isa in isas() {
        let got = run(Precision::Bf16(isa));
        for (i, (g, f)) in got.iter().zip(&fp32).enumerate() {
            let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| x * x).sum::<f32>().sqrt();
            let diff = norm(&mut g.data().iter().zip(f.data()).map(|(a, b)| a - b));
            let rel = diff / norm(&mut f.data().iter().copied());
            // bf16 keeps 8 significant bits (2^-9 relative per rounding); through up to
            // three chained products, and ReLU gates of near-zero activations that flip,
            // the relative L2 difference stays within 5 % (3 % measured on dx with AMX).
            assert!(
                rel <= 0.05,
                "{isa:?} tensor {i}: relative L2 difference {rel}"
            );
            let worst = diff;
            // The last bias gradient sums the given dy in fp32: the same in both.
            if i + 1 < got.len() {
                assert!(
                    worst > 0.0,
                    "{isa:?} tensor {i}: identical to fp32, bf16 did not run"
                );
            }
        }
        assert_eq!(
            run(Precision::Bf16(isa))[0].data(),
            got[0].data(),
            "{isa:?}: not repeatable"
        );
    }
}

/// One bias-carrying stride-1 convolution on `[h, w, c]` inputs.
fn one_conv(input: [usize; 3], filters: usize, kernel: usize, padding: usize) -> nn::ModelSpec {
    nn::ModelSpec {
        name: String::new(),
        input: input.to_vec(),
        init: nn::Init::Torch,
        layers: vec![nn::LayerSpec::Conv2d {
            filters,
            kernel,
            stride: 1,
            padding,
            bias: true,
        }],
    }
}

/// Rounded to bf16 and back, in f64.
fn rounded(x: f32) -> f64 {
    from_bf16(to_bf16(x)) as f64
}

#[test]
fn bf16_convolutions_match_the_exact_products_of_the_rounded_operands() {
    use nn::{Mode, Tensor};
    // Channel counts that are multiples of 32 and stride 1: on AMX, the implicit product
    // (no im2col matrix); elsewhere the packed one. Odd sizes, kernels 1 to 5, padding,
    // and batches of several weight-gradient parts.
    let mut pick = Rng::new(21);
    for round in 0..24 {
        let c = 32 * (1 + pick.below(2));
        let oc = 32 * (1 + pick.below(3));
        let k = [1, 2, 3, 3, 5][pick.below(5)];
        let pad = pick.below(3).min(k - 1);
        let (h, w) = (k + pick.below(9), k + pick.below(9));
        let (oh, ow) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
        let n = (1 + pick.below(20)).max(32usize.div_ceil(oh * ow));
        let spec = one_conv([h, w, c], oc, k, pad);
        let x = random(&mut pick, n * h * w * c);
        let dy = random(&mut pick, n * oh * ow * oc);
        for isa in isas() {
            let mut net = spec.build(&mut Rng::new(round)).expect("network");
            net.set_precision(Precision::Bf16(isa));
            let xt = Tensor::from_vec(&[n, h, w, c], x.clone()).expect("shape");
            let y = net.forward(&xt, Mode::Train, &mut Rng::new(1)).clone();
            let dyt = Tensor::from_vec(&[n, oh, ow, oc], dy.clone()).expect("shape");
            let mut dx = Tensor::default();
            net.backward(&xt, &dyt, Some(&mut dx));
            let params = net.params_mut();
            let (wt, b) = (params[0].value.data(), params[1].value.data());
            let (dw, db) = (params[0].grad.data(), params[1].grad.data());
            // Exact sums of the rounded products, and Σ|product| (fp32 accumulation's
            // scale), for output, input gradient and weight gradient.
            let mut want = [
                vec![(0.0f64, 0.0f64); y.len()],
                vec![(0.0, 0.0); dx.len()],
                vec![(0.0, 0.0); dw.len()],
            ];
            let at_x = |i, iy, ix, ch| ((i * h + iy) * w + ix) * c + ch;
            for i in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for o in 0..oc {
                            let yi = ((i * oh + oy) * ow + ox) * oc + o;
                            let g = rounded(dy[yi]);
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (oy + ky, ox + kx);
                                    if iy < pad || ix < pad || iy - pad >= h || ix - pad >= w {
                                        continue;
                                    }
                                    for ch in 0..c {
                                        let xi = at_x(i, iy - pad, ix - pad, ch);
                                        let wi = ((o * k + ky) * k + kx) * c + ch;
                                        let (xv, wv) = (rounded(x[xi]), rounded(wt[wi]));
                                        for (part, at, v) in
                                            [(0, yi, xv * wv), (1, xi, g * wv), (2, wi, g * xv)]
                                        {
                                            want[part][at].0 += v;
                                            want[part][at].1 += v.abs();
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // The bias, added in fp32 (implicit) or as a bf16 column (packed, so within
            // 2^-9 of itself).
            let slack: Vec<f64> = b.iter().map(|&b| (b as f64).abs() / 256.0).collect();
            for (y, b) in want[0].iter_mut().zip(b.iter().cycle()) {
                y.0 += *b as f64;
            }
            for (name, got, want, slack) in [
                ("output", y.data(), &want[0], &slack[..]),
                ("input gradient", dx.data(), &want[1], &[0.0][..]),
                ("weight gradient", dw, &want[2], &[0.0][..]),
            ] {
                assert_eq!(got.len(), want.len(), "{name}");
                let slack = slack.iter().cycle();
                for (j, ((&g, &(v, scale)), s)) in got.iter().zip(want).zip(slack).enumerate() {
                    assert!(
                        (g as f64 - v).abs() <= 1e-5 * scale + 1e-6 + s,
                        "{isa:?} round {round} ({h}×{w}×{c} → {oc}, k {k} pad {pad}, n {n}) \
                         {name}[{j}]: {g} vs {v}"
                    );
                }
            }
            // The bias gradient sums dy in fp32.
            for (o, &g) in db.iter().enumerate() {
                let s: f64 = dy.iter().skip(o).step_by(oc).map(|&v| v as f64).sum();
                assert!(
                    (g as f64 - s).abs() <= 1e-4 * (1.0 + s.abs()),
                    "{isa:?} db[{o}]"
                );
            }
        }
    }
}

#[test]
fn bf16_convolutions_do_not_depend_on_the_thread_count() {
    use nn::{Mode, Tensor};
    let spec = one_conv([13, 13, 32], 64, 3, 0);
    let mut rng = Rng::new(5);
    // 19 images: weight-gradient parts of different sizes.
    let x = Tensor::from_vec(&[19, 13, 13, 32], random(&mut rng, 19 * 13 * 13 * 32)).expect("x");
    let dy = Tensor::from_vec(&[19, 11, 11, 64], random(&mut rng, 19 * 11 * 11 * 64)).expect("dy");
    for isa in isas() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            pool.install(|| {
                let mut net = spec.build(&mut Rng::new(0)).expect("network");
                net.set_precision(Precision::Bf16(isa));
                let y = net.forward(&x, Mode::Train, &mut Rng::new(1)).clone();
                let mut dx = Tensor::default();
                net.backward(&x, &dy, Some(&mut dx));
                let mut all = vec![y, dx];
                all.extend(net.params_mut().iter().map(|p| p.grad.clone()));
                all
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(
                run(threads) == one,
                "{isa:?}: {threads} threads differ from 1"
            );
        }
    }
}

#[test]
fn bf16_convolutions_of_an_empty_batch_give_empty_outputs_and_zero_gradients() {
    use nn::{Mode, Tensor};
    let spec = one_conv([13, 13, 32], 64, 3, 1);
    for isa in isas() {
        let mut net = spec.build(&mut Rng::new(0)).expect("network");
        net.set_precision(Precision::Bf16(isa));
        let x = Tensor::from_vec(&[0, 13, 13, 32], Vec::new()).expect("x");
        let y = net.forward(&x, Mode::Train, &mut Rng::new(1)).clone();
        assert_eq!(y.len(), 0, "{isa:?}");
        let dy = Tensor::from_vec(y.shape(), Vec::new()).expect("dy");
        let mut dx = Tensor::default();
        net.backward(&x, &dy, Some(&mut dx));
        assert_eq!(dx.len(), 0, "{isa:?}");
        for p in net.params_mut() {
            assert!(p.grad.data().iter().all(|&g| g == 0.0), "{isa:?}");
        }
    }
}
