//! Whole-network behaviour: learning, determinism, architectures as data.

mod common;

use common::normal;
use nn::{
    LayerSpec as L, Mode, ModelSpec, Optimizer, OptimizerConfig, OptimizerKind, Rng, Tensor, loss,
};

fn small_cnn() -> ModelSpec {
    ModelSpec {
        name: "small".into(),
        input: vec![8, 8, 1],
        init: nn::Init::GlorotUniform,
        layers: vec![
            L::Conv2d {
                filters: 8,
                kernel: 3,
                stride: 1,
                padding: 1,
                bias: true,
            },
            L::BatchNorm {
                momentum: 0.1,
                eps: 1e-5,
            },
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
            L::Residual {
                body: vec![
                    L::Conv2d {
                        filters: 8,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        bias: true,
                    },
                    L::Gelu,
                ],
            },
            L::Flatten,
            L::Linear {
                units: 32,
                bias: true,
            },
            L::Relu,
            L::Dropout { rate: 0.1 },
            L::Linear {
                units: 10,
                bias: true,
            },
        ],
    }
}

/// Trains `steps` full-batch Adam steps on 64 fixed images with random labels; returns
/// the final loss and the final weights.
fn fit(steps: usize, seed: u64) -> (f32, Vec<f32>, usize) {
    let x = normal(&[64, 8, 8, 1], 1);
    let mut rng = Rng::new(2);
    let labels: Vec<usize> = (0..64).map(|_| rng.below(10)).collect();
    let mut net = small_cnn().build(&mut Rng::new(seed)).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::new(OptimizerKind::adam()));
    let mut dropout = Rng::new(seed + 1);
    let mut grad = Tensor::default();
    let mut last = f32::NAN;
    for _ in 0..steps {
        let logits = net.forward(&x, Mode::Train, &mut dropout);
        last = loss::softmax_cross_entropy(logits, &labels, 0.0, &mut grad);
        net.backward(&x, &grad, None);
        opt.step(&mut net.params_mut(), 3e-3);
    }
    let logits = net.forward(&x, Mode::Eval, &mut dropout).clone();
    let right = loss::correct(&logits, &labels);
    let weights = net
        .tensors()
        .iter()
        .flat_map(|(_, t)| t.data().to_vec())
        .collect();
    (last, weights, right)
}

#[test]
fn memorises_64_random_labels() {
    let (loss, _, right) = fit(300, 7);
    assert!(loss < 0.05, "loss {loss}");
    assert_eq!(right, 64);
}

#[test]
fn same_seed_and_threads_give_identical_weights() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (l1, w1, _) = pool.install(|| fit(20, 3));
        let (l2, w2, _) = pool.install(|| fit(20, 3));
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert!(w1.iter().zip(&w2).all(|(a, b)| a.to_bits() == b.to_bits()));
        let (_, w3, _) = pool.install(|| fit(20, 4));
        assert_ne!(w1, w3, "a different seed must give a different model");
    }
}

#[test]
fn specs_round_trip_through_json_and_reject_nonsense() {
    let spec = small_cnn();
    let json = spec.to_json();
    assert_eq!(ModelSpec::from_json(&json).unwrap(), spec);
    let minimal = r#"{"input":[4,4,1],"layers":[{"type":"flatten"},{"type":"linear","units":2}]}"#;
    let net = ModelSpec::from_json(minimal)
        .unwrap()
        .build(&mut Rng::new(0))
        .unwrap();
    assert_eq!(net.output_shape(), &[2]);
    assert_eq!(net.num_params(), 16 * 2 + 2);

    let err = |j: &str| match ModelSpec::from_json(j) {
        Err(e) => e.to_string(),
        Ok(s) => match s.build(&mut Rng::new(0)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {j}"),
        },
    };
    assert!(err(r#"{"input":[4,4,1],"layers":[{"type":"conv3d"}]}"#).contains("conv3d"));
    assert!(
        err(r#"{"input":[4,4,1],"layers":[{"type":"max_pool2d","size":2,"strde":1}]}"#)
            .contains("strde")
    );
    // Unknown fields are refused everywhere, named, with the message said once.
    for (json, field) in [
        (
            r#"{"input":[4,4,1],"bogus":1,"layers":[{"type":"flatten"}]}"#,
            "bogus",
        ),
        (
            r#"{"input":[4,4,1],"layers":[{"type":"flatten","bogus":1}]}"#,
            "bogus",
        ),
        (
            r#"{"input":[4],"layers":[{"type":"residual","body":[{"type":"relu","x":2}]}]}"#,
            "x",
        ),
    ] {
        let e = err(json);
        assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
        assert_eq!(e.matches("unknown field").count(), 1, "{e}");
    }
    let big = err(r#"{"input":[4,4,1],"layers":[{"type":"conv2d","filters":2,"kernel":5}]}"#);
    assert!(
        big.contains("layer 0 (conv2d)") && big.contains("does not fit"),
        "{big}"
    );
    // Padding so large that twice it wraps round is refused, fused or not.
    for tail in ["", r#",{"type":"relu"},{"type":"max_pool2d","size":2}"#] {
        let pad = err(&format!(
            r#"{{"input":[4,4,1],"layers":[{{"type":"conv2d","filters":2,"kernel":3,"padding":9223372036854775808}}{tail}]}}"#
        ));
        assert!(pad.contains("does not fit"), "{pad}");
    }
    let flat = err(r#"{"input":[4,4,1],"layers":[{"type":"linear","units":2}]}"#);
    assert!(flat.contains("flatten"), "{flat}");
    assert!(err(r#"{"input":[4,4,1],"layers":[]}"#).contains("at least one layer"));
    let drop = err(r#"{"input":[4],"layers":[{"type":"dropout","rate":1.5}]}"#);
    assert!(drop.contains("[0, 1)"), "{drop}");
    let huge =
        r#"{"input":[4,4,1],"layers":[{"type":"flatten"},{"type":"linear","units":100000000000}]}"#;
    assert!(err(huge).contains("too many"));
    // Layers that each fit but together exceed the budget are refused before the one that
    // overflows it is allocated: 2 layers of 2^24 weights (64 MiB each) fit, a 3rd not.
    let wide = r#"{"type":"linear","units":4096}"#;
    let deep = format!(r#"{{"input":[4096],"layers":[{}]}}"#, [wide; 3].join(","));
    let e = err(&deep);
    assert!(
        e.contains("layer 2 (linear)") && e.contains("too many"),
        "{e}"
    );
    // A million (or 60,000) cheap layers are refused from their count, before any is built.
    for n in [1_025, 60_000, 1_000_000] {
        let many = format!(
            r#"{{"input":[28,28,1],"layers":[{}]}}"#,
            vec![r#"{"type":"relu"}"#; n].join(",")
        );
        let e = err(&many);
        assert!(e.contains(&format!("{n} layers is too many")), "{e}");
    }
    let nested = format!(
        r#"{{"input":[4],"layers":[{{"type":"residual","body":[{}]}}]}}"#,
        vec![r#"{"type":"relu"}"#; 1_024].join(",")
    );
    assert!(err(&nested).contains("1025 layers is too many"));
    // A 1×1 convolution with padding 2000 has few weights, but each image becomes
    // 4001×4001 and its im2col matrix twice that: refused from the spec, whatever the
    // layer after it.
    for tail in [
        r#"{"type":"global_avg_pool"},{"type":"linear","units":10}"#,
        r#"{"type":"relu"},{"type":"max_pool2d","size":2}"#,
    ] {
        let padded = err(&format!(
            r#"{{"input":[28,28,1],"layers":[{{"type":"conv2d","filters":1,"kernel":1,"padding":2000}},{tail}]}}"#
        ));
        assert!(padded.contains("values per image"), "{padded}");
    }
    assert!(err(r#"{"input":[100000,100000,1],"layers":[{"type":"relu"}]}"#).contains("too large"));
    let blowup =
        err(r#"{"input":[28,28,1],"layers":[{"type":"conv2d","filters":100000,"kernel":1}]}"#);
    assert!(blowup.contains("layer 0 (conv2d) gives shape"), "{blowup}");
    let res = err(
        r#"{"input":[4,4,1],"layers":[{"type":"residual","body":[{"type":"conv2d","filters":3,"kernel":1}]}]}"#,
    );
    assert!(res.contains("keep the shape"), "{res}");
}
