//! Batch normalisation over the last (channel) axis.

use super::{Context, Layer, Mode, Param, ParamKind};
use crate::Tensor;

/// Batch normalisation per channel (the last axis): `BatchNorm2d` on NHWC maps and
/// `BatchNorm1d` on `[n, features]`.
///
/// Training normalises with the batch's mean and biased variance and updates running
/// statistics (`r ← (1-m)·r + m·batch`, unbiased variance, as PyTorch); inference uses them.
/// `y = γ · (x - μ)/√(σ² + ε) + β`; `γ` (weight) and `β` (bias) are `[c]`.
pub struct BatchNorm {
    shape: Vec<usize>,
    gamma: Param,
    beta: Param,
    running_mean: Tensor,
    running_var: Tensor,
    momentum: f32,
    eps: f32,
    /// The normalised input `x̂` of the last forward, for backward.
    xhat: Vec<f32>,
    /// `1/√(σ² + ε)` per channel used in the last forward.
    inv_std: Vec<f32>,
    last_mode: Mode,
}

impl BatchNorm {
    /// Batch norm for inputs of `shape` (channels last).
    pub fn new(shape: &[usize], momentum: f32, eps: f32) -> Result<Self, crate::Error> {
        let c = *shape
            .last()
            .ok_or_else(|| crate::Error::Spec("batch_norm on a scalar".into()))?;
        if !(0.0..=1.0).contains(&momentum) || eps.is_nan() || eps <= 0.0 || c == 0 {
            return Err(crate::Error::Spec(format!(
                "batch_norm needs momentum in [0, 1], eps > 0 and channels, got {momentum}, {eps}, {c}"
            )));
        }
        let ones = Tensor::from_vec(&[c], vec![1.0; c])?;
        Ok(Self {
            shape: shape.to_vec(),
            gamma: Param::new(ones.clone(), ParamKind::Norm),
            beta: Param::new(Tensor::zeros(&[c]), ParamKind::Norm),
            running_mean: Tensor::zeros(&[c]),
            running_var: ones,
            momentum,
            eps,
            xhat: Vec::new(),
            inv_std: vec![0.0; c],
            last_mode: Mode::Eval,
        })
    }

    fn channels(&self) -> usize {
        self.gamma.value.len()
    }
}

impl Layer for BatchNorm {
    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        let c = self.channels();
        let rows = x.len() / c;
        self.last_mode = ctx.mode;
        let mean: Vec<f32> = if ctx.mode == Mode::Train && rows > 0 {
            // Two passes in f64: exact enough that finite differences agree in f32.
            let mut sum = vec![0.0f64; c];
            for px in x.data().chunks_exact(c) {
                for (s, &v) in sum.iter_mut().zip(px) {
                    *s += v as f64;
                }
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / rows as f64).collect();
            let mut sq = vec![0.0f64; c];
            for px in x.data().chunks_exact(c) {
                for ((s, &v), &m) in sq.iter_mut().zip(px).zip(&mean) {
                    *s += (v as f64 - m).powi(2);
                }
            }
            let m = self.momentum;
            for ch in 0..c {
                let var = sq[ch] / rows as f64;
                self.inv_std[ch] = (1.0 / (var + self.eps as f64).sqrt()) as f32;
                let unbiased = if rows > 1 {
                    sq[ch] / (rows - 1) as f64
                } else {
                    var
                };
                let rm = &mut self.running_mean.data_mut()[ch];
                *rm = (1.0 - m) * *rm + m * mean[ch] as f32;
                let rv = &mut self.running_var.data_mut()[ch];
                *rv = (1.0 - m) * *rv + m * unbiased as f32;
            }
            mean.iter().map(|&v| v as f32).collect()
        } else {
            for (s, &v) in self.inv_std.iter_mut().zip(self.running_var.data()) {
                *s = 1.0 / (v + self.eps).sqrt();
            }
            self.running_mean.data().to_vec()
        };
        y.resize(x.shape());
        self.xhat.resize(x.len(), 0.0);
        let (g, b) = (self.gamma.value.data(), self.beta.value.data());
        let rows_iter = x.data().chunks_exact(c).zip(self.xhat.chunks_exact_mut(c));
        for ((px, xh), out) in rows_iter.zip(y.data_mut().chunks_exact_mut(c)) {
            for ch in 0..c {
                xh[ch] = (px[ch] - mean[ch]) * self.inv_std[ch];
                out[ch] = g[ch] * xh[ch] + b[ch];
            }
        }
    }

    // dγ = Σ dy·x̂;  dβ = Σ dy;  train: dx = γ/σ · (dy - mean(dy) - x̂·mean(dy·x̂)); eval: dx = γ/σ · dy
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let c = self.channels();
        let rows = (x.len() / c).max(1);
        let mut sum_dy = vec![0.0f64; c];
        let mut sum_dy_xhat = vec![0.0f64; c];
        for (g, xh) in dy.data().chunks_exact(c).zip(self.xhat.chunks_exact(c)) {
            for ch in 0..c {
                sum_dy[ch] += g[ch] as f64;
                sum_dy_xhat[ch] += (g[ch] * xh[ch]) as f64;
            }
        }
        for ch in 0..c {
            self.gamma.grad.data_mut()[ch] = sum_dy_xhat[ch] as f32;
            self.beta.grad.data_mut()[ch] = sum_dy[ch] as f32;
        }
        let Some(dx) = dx else { return };
        dx.resize(x.shape());
        let gamma = self.gamma.value.data();
        let train = self.last_mode == Mode::Train;
        let mean_dy: Vec<f32> = sum_dy.iter().map(|s| (s / rows as f64) as f32).collect();
        let mean_dyx: Vec<f32> = sum_dy_xhat
            .iter()
            .map(|s| (s / rows as f64) as f32)
            .collect();
        let rows_iter = dx
            .data_mut()
            .chunks_exact_mut(c)
            .zip(dy.data().chunks_exact(c));
        for ((d, g), xh) in rows_iter.zip(self.xhat.chunks_exact(c)) {
            for ch in 0..c {
                let scale = gamma[ch] * self.inv_std[ch];
                d[ch] = if train {
                    scale * (g[ch] - mean_dy[ch] - xh[ch] * mean_dyx[ch])
                } else {
                    scale * g[ch]
                };
            }
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }

    fn tensors(&self) -> Vec<(String, &Tensor)> {
        vec![
            ("weight".into(), &self.gamma.value),
            ("bias".into(), &self.beta.value),
            ("running_mean".into(), &self.running_mean),
            ("running_var".into(), &self.running_var),
        ]
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("weight".into(), &mut self.gamma.value),
            ("bias".into(), &mut self.beta.value),
            ("running_mean".into(), &mut self.running_mean),
            ("running_var".into(), &mut self.running_var),
        ]
    }
}
