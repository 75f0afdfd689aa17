//! Optimizers (Adam, AdamW, SGD with momentum) and learning-rate schedules.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::layers::{Param, ParamKind};

/// Values per parallel work item in the element-wise updates.
const CHUNK: usize = 1 << 14;

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam; weight decay, if any, is added to the gradient (L2), as `torch.optim.Adam`.
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
    },
    /// AdamW: Adam with decoupled weight decay `p ← p − lr·wd·p`.
    AdamW {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
    },
    /// SGD with (optionally Nesterov) momentum, as `torch.optim.SGD`.
    Sgd {
        /// Momentum factor (0 for plain SGD).
        momentum: f32,
        /// Nesterov's look-ahead form.
        nesterov: bool,
    },
}

impl OptimizerKind {
    /// Adam with the usual betas (0.9, 0.999) and epsilon 1e-7 (Keras' default).
    pub fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        }
    }

    /// AdamW with betas (0.9, 0.999) and epsilon 1e-8.
    pub fn adamw() -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// SGD with Nesterov momentum 0.9.
    pub fn nesterov() -> Self {
        OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: true,
        }
    }
}

/// An optimizer's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Weight decay factor (0 for none).
    pub weight_decay: f32,
    /// Whether weight decay also applies to biases and normalisation parameters
    /// (usually not: decaying them only hurts).
    pub decay_bias_and_norm: bool,
}

impl OptimizerConfig {
    /// `kind` without weight decay.
    pub fn new(kind: OptimizerKind) -> Self {
        Self {
            kind,
            weight_decay: 0.0,
            decay_bias_and_norm: false,
        }
    }

    /// The same settings with weight decay `wd`.
    pub fn with_weight_decay(self, wd: f32) -> Self {
        Self {
            weight_decay: wd,
            ..self
        }
    }
}

/// An optimizer with its per-parameter state (moments or momentum buffers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Optimizer {
    config: OptimizerConfig,
    steps: u64,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            steps: 0,
            first: Vec::new(),
            second: Vec::new(),
        }
    }

    /// How many steps were taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The per-parameter state, in [`crate::Network::params_mut`] order: first moments
    /// (or SGD's momentum buffers) and second moments; both empty before the first step.
    pub fn moments(&self) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.first, &self.second)
    }

    /// An optimizer that continues from a checkpoint: `steps` already taken and the
    /// moments as [`Optimizer::moments`] gave them.
    pub fn restore(
        config: OptimizerConfig,
        steps: u64,
        first: Vec<Vec<f32>>,
        second: Vec<Vec<f32>>,
    ) -> Self {
        Self {
            config,
            steps,
            first,
            second,
        }
    }

    /// Applies one update with learning rate `lr` to `params` (always the same list, in
    /// the same order, as [`crate::Network::params_mut`] gives it).
    pub fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        if self.first.len() != params.len() {
            self.first = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
            self.second = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
        }
        self.steps += 1;
        let t = self.steps as i32;
        let cfg = self.config;
        for ((p, m), v) in params.iter_mut().zip(&mut self.first).zip(&mut self.second) {
            let decays = p.kind == ParamKind::Weight || cfg.decay_bias_and_norm;
            let wd = if decays { cfg.weight_decay } else { 0.0 };
            let (value, grad) = (p.value.data_mut(), p.grad.data());
            // Element-wise updates: parallel chunks give the same result on any thread count.
            let chunks = value
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK));
            match cfg.kind {
                OptimizerKind::Adam { beta1, beta2, eps }
                | OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let decoupled = matches!(cfg.kind, OptimizerKind::AdamW { .. });
                    let c1 = 1.0 - beta1.powi(t);
                    let c2 = 1.0 - beta2.powi(t);
                    chunks.for_each(|(((value, grad), m), v)| {
                        for (((p, &g), m), v) in value.iter_mut().zip(grad).zip(m).zip(v) {
                            let mut g = g;
                            if decoupled {
                                *p -= lr * wd * *p;
                            } else {
                                g += wd * *p;
                            }
                            *m = beta1 * *m + (1.0 - beta1) * g;
                            *v = beta2 * *v + (1.0 - beta2) * g * g;
                            let mhat = *m / c1;
                            let vhat = *v / c2;
                            *p -= lr * mhat / (vhat.sqrt() + eps);
                        }
                    });
                }
                OptimizerKind::Sgd { momentum, nesterov } => {
                    chunks.for_each(|(((value, grad), m), _)| {
                        for ((p, &g), buf) in value.iter_mut().zip(grad).zip(m) {
                            let mut g = g + wd * *p;
                            if momentum != 0.0 {
                                // PyTorch starts the buffer at the first gradient.
                                *buf = if t == 1 { g } else { momentum * *buf + g };
                                g = if nesterov { g + momentum * *buf } else { *buf };
                            }
                            *p -= lr * g;
                        }
                    });
                }
            }
        }
    }
}

/// How the learning rate moves over training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up over `warmup` (a fraction of all steps), then cosine decay to 0.
    Cosine {
        /// Fraction of the steps spent warming up.
        warmup: f32,
    },
    /// One-cycle (as `torch.optim.lr_scheduler.OneCycleLR`): cosine rise from
    /// `base/div_factor` to `base` over `pct_start` of the steps, then cosine decay to
    /// `base/(div_factor·final_div_factor)`.
    OneCycle {
        /// Fraction of the steps spent rising.
        pct_start: f32,
        /// Initial rate is `base/div_factor`.
        div_factor: f32,
        /// Final rate is the initial over this.
        final_div_factor: f32,
    },
}

impl Schedule {
    /// The usual one-cycle settings (25 %, 25, 10⁴).
    pub fn one_cycle() -> Self {
        Schedule::OneCycle {
            pct_start: 0.25,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// The learning rate at `step` (0-based) of `total`.
    pub fn lr(&self, base: f32, step: usize, total: usize) -> f32 {
        let total = total.max(1) as f32;
        let s = step as f32;
        let cos = |from: f32, to: f32, frac: f32| {
            to + (from - to) * 0.5 * (1.0 + (std::f32::consts::PI * frac.clamp(0.0, 1.0)).cos())
        };
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine { warmup } => {
                let w = (warmup * total).max(0.0);
                if s < w {
                    base * (s + 1.0) / w
                } else {
                    cos(base, 0.0, (s - w) / (total - w).max(1.0))
                }
            }
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let start = base / div_factor;
                let end = start / final_div_factor;
                let up = (pct_start * total - 1.0).max(1.0);
                if s <= up {
                    cos(start, base, s / up)
                } else {
                    cos(base, end, (s - up) / (total - 1.0 - up).max(1.0))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    fn param(kind: ParamKind) -> Param {
        Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap(), kind)
    }

    /// Two steps with gradients 0.5 then -1 at lr 0.1; expected values computed by hand
    /// (in f64) from the update formulas of the PyTorch / Keras documentation.
    fn run(kind: OptimizerKind, wd: f32, pkind: ParamKind) -> [f32; 2] {
        let mut cfg = OptimizerConfig::new(kind);
        cfg.weight_decay = wd;
        let mut opt = Optimizer::new(cfg);
        let mut p = param(pkind);
        let mut out = [0.0; 2];
        for (i, g) in [0.5, -1.0].into_iter().enumerate() {
            p.grad.data_mut()[0] = g;
            opt.step(&mut [&mut p], 0.1);
            out[i] = p.value.data()[0];
        }
        out
    }

    fn close(got: [f32; 2], want: [f64; 2]) {
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn adam_matches_hand_computation() {
        close(
            run(OptimizerKind::adam(), 0.0, ParamKind::Weight),
            [0.9000000200, 0.9366103681],
        );
        close(
            run(OptimizerKind::adam(), 0.1, ParamKind::Weight),
            [0.9000000167, 0.9252635314],
        );
    }

    #[test]
    fn adamw_decays_decoupled_and_skips_biases() {
        close(
            run(OptimizerKind::adamw(), 0.1, ParamKind::Weight),
            [0.8900000020, 0.9177103542],
        );
        let no_decay = run(OptimizerKind::adamw(), 0.1, ParamKind::Bias);
        let plain = run(OptimizerKind::adamw(), 0.0, ParamKind::Bias);
        assert_eq!(no_decay, plain);
    }

    #[test]
    fn sgd_momentum_and_nesterov_match_hand_computation() {
        close(
            run(OptimizerKind::nesterov(), 0.1, ParamKind::Weight),
            [0.886, 1.010566],
        );
        let heavy_ball = OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        };
        close(run(heavy_ball, 0.0, ParamKind::Weight), [0.95, 1.005]);
        let plain = OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
        };
        close(run(plain, 0.0, ParamKind::Norm), [0.95, 1.05]);
    }

    #[test]
    fn schedules_have_the_documented_shape() {
        assert_eq!(Schedule::Constant.lr(0.1, 50, 100), 0.1);
        let oc = Schedule::one_cycle();
        assert!((oc.lr(1.0, 0, 100) - 0.04).abs() < 1e-6);
        assert!((oc.lr(1.0, 24, 100) - 1.0).abs() < 1e-6);
        assert!(oc.lr(1.0, 99, 100) < 1e-5);
        let lrs: Vec<f32> = (0..100).map(|s| oc.lr(1.0, s, 100)).collect();
        assert!(lrs[..25].windows(2).all(|w| w[0] <= w[1]));
        assert!(lrs[24..].windows(2).all(|w| w[0] >= w[1]));
        let cos = Schedule::Cosine { warmup: 0.1 };
        assert!((cos.lr(1.0, 0, 100) - 0.1).abs() < 1e-6);
        assert!((cos.lr(1.0, 9, 100) - 1.0).abs() < 1e-6);
        assert!((cos.lr(1.0, 55, 100) - 0.5).abs() < 0.02);
        assert!(cos.lr(1.0, 99, 100) < 1e-3);
    }
}
