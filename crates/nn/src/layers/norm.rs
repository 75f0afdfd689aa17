//! Batch normalisation over the last (channel) axis.

use rayon::prelude::*;

use super::{Context, Layer, Mode, Param, ParamKind, Role, TensorKey};
use crate::Tensor;

/// Rows (pixels) per parallel task; fixed, so results do not depend on the thread count.
const ROWS_PER_TASK: usize = 1024;

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
    /// Whether a ReLU follows in the same pass.
    relu: bool,
    /// Per-channel mean used in the last forward.
    mean: Vec<f32>,
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
            relu: false,
            mean: vec![0.0; c],
            inv_std: vec![0.0; c],
            last_mode: Mode::Eval,
        })
    }

    /// Batch norm followed by ReLU in the same pass over memory (the fast path for the
    /// spec `batch_norm, relu`; the two plain layers are its test oracle).
    pub fn with_relu(shape: &[usize], momentum: f32, eps: f32) -> Result<Self, crate::Error> {
        Ok(Self {
            relu: true,
            ..Self::new(shape, momentum, eps)?
        })
    }

    fn channels(&self) -> usize {
        self.gamma.value.len()
    }

    /// The per-channel `(a, b)` of inference, `y = a·x + b` (from the running statistics),
    /// in f64 for folding into a preceding layer.
    pub(crate) fn eval_scale_shift(&self) -> (Vec<f64>, Vec<f64>) {
        let parts = self
            .gamma
            .value
            .data()
            .iter()
            .zip(self.beta.value.data())
            .zip(self.running_mean.data().iter().zip(self.running_var.data()));
        parts
            .map(|((&g, &b), (&m, &v))| {
                let a = g as f64 / (v as f64 + self.eps as f64).sqrt();
                (a, b as f64 - m as f64 * a)
            })
            .unzip()
    }
}

/// Per-channel sums of `f(row)` over all rows of `data` (`c` values per row), in f64,
/// over fixed blocks of rows combined in order: the same result on any thread count.
fn channel_sums<F>(data: &[f32], c: usize, sums: usize, f: F) -> Vec<f64>
where
    F: Fn(&[f32], usize, &mut [f64]) + Sync,
{
    let block = ROWS_PER_TASK * c;
    let partial: Vec<Vec<f64>> = data
        .par_chunks(block)
        .enumerate()
        .map(|(b, chunk)| {
            let mut acc = vec![0.0f64; sums * c];
            f(chunk, b * ROWS_PER_TASK, &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0.0f64; sums * c];
    for p in partial {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

impl Layer for BatchNorm {
    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        let c = self.channels();
        let rows = x.len() / c;
        self.last_mode = ctx.mode;
        if ctx.mode == Mode::Train && rows > 0 {
            // Shifted one-pass moments in f64 (shift = the running mean, close to the batch
            // mean, so the subtraction loses nothing): exact enough for finite differences.
            let shift: Vec<f32> = self.running_mean.data().to_vec();
            let sums = channel_sums(x.data(), c, 2, |chunk, _, acc| {
                let (s1, s2) = acc.split_at_mut(c);
                for px in chunk.chunks_exact(c) {
                    for (((s1, s2), &v), &m) in s1.iter_mut().zip(s2.iter_mut()).zip(px).zip(&shift)
                    {
                        let d = (v - m) as f64;
                        *s1 += d;
                        *s2 += d * d;
                    }
                }
            });
            let m = self.momentum;
            for ch in 0..c {
                let dmean = sums[ch] / rows as f64;
                let sq = (sums[c + ch] - dmean * sums[ch]).max(0.0);
                let var = sq / rows as f64;
                let mean = shift[ch] as f64 + dmean;
                self.mean[ch] = mean as f32;
                self.inv_std[ch] = (1.0 / (var + self.eps as f64).sqrt()) as f32;
                let unbiased = if rows > 1 {
                    sq / (rows - 1) as f64
                } else {
                    var
                };
                let rm = &mut self.running_mean.data_mut()[ch];
                *rm = (1.0 - m) * *rm + m * mean as f32;
                let rv = &mut self.running_var.data_mut()[ch];
                *rv = (1.0 - m) * *rv + m * unbiased as f32;
            }
        } else {
            for (s, &v) in self.inv_std.iter_mut().zip(self.running_var.data()) {
                *s = 1.0 / (v + self.eps).sqrt();
            }
            self.mean.copy_from_slice(self.running_mean.data());
        }
        // y = x·a + b with a = γ/σ, b = β − μ·γ/σ
        let (g, be) = (self.gamma.value.data(), self.beta.value.data());
        let a: Vec<f32> = (0..c).map(|ch| g[ch] * self.inv_std[ch]).collect();
        let b: Vec<f32> = (0..c).map(|ch| be[ch] - self.mean[ch] * a[ch]).collect();
        let relu = self.relu;
        y.resize(x.shape());
        y.data_mut()
            .par_chunks_mut(ROWS_PER_TASK * c)
            .zip(x.data().par_chunks(ROWS_PER_TASK * c))
            .for_each(|(y, x)| {
                for (out, px) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for (((o, &v), &a), &b) in out.iter_mut().zip(px).zip(&a).zip(&b) {
                        let v = v * a + b;
                        // Not `max`: NaN must propagate.
                        *o = if relu && v < 0.0 { 0.0 } else { v };
                    }
                }
            });
    }

    // g = dy (masked by y > 0 when fused with ReLU); x̂ = (x − μ)/σ
    // dγ = Σ g·x̂;  dβ = Σ g;  train: dx = γ/σ · (g − mean(g) − x̂·mean(g·x̂)); eval: dx = γ/σ · g
    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let c = self.channels();
        let rows = (x.len() / c).max(1);
        let (mean, inv_std, relu) = (&self.mean, &self.inv_std, self.relu);
        let (xd, yd, dyd) = (x.data(), y.data(), dy.data());
        let sums = channel_sums(dyd, c, 2, |chunk, first_row, acc| {
            let (s_dy, s_dyx) = acc.split_at_mut(c);
            let at = first_row * c;
            let xs = &xd[at..at + chunk.len()];
            let ys = &yd[at..at + chunk.len()];
            for ((g, px), py) in chunk
                .chunks_exact(c)
                .zip(xs.chunks_exact(c))
                .zip(ys.chunks_exact(c))
            {
                let per_channel = s_dy
                    .iter_mut()
                    .zip(s_dyx.iter_mut())
                    .zip(mean.iter().zip(inv_std));
                for (((s_dy, s_dyx), (&m, &is)), ((&g, &v), &o)) in
                    per_channel.zip(g.iter().zip(px).zip(py))
                {
                    let g = if relu && o <= 0.0 { 0.0 } else { g };
                    *s_dy += g as f64;
                    *s_dyx += (g * ((v - m) * is)) as f64;
                }
            }
        });
        for ch in 0..c {
            self.gamma.grad.data_mut()[ch] = sums[c + ch] as f32;
            self.beta.grad.data_mut()[ch] = sums[ch] as f32;
        }
        let Some(dx) = dx else { return };
        dx.resize(x.shape());
        let gamma = self.gamma.value.data();
        let train = self.last_mode == Mode::Train;
        let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
        let (mean_dy, mean_dyx): (Vec<f32>, Vec<f32>) = if train {
            (
                sums[..c].iter().map(|s| (s / rows as f64) as f32).collect(),
                sums[c..].iter().map(|s| (s / rows as f64) as f32).collect(),
            )
        } else {
            (vec![0.0; c], vec![0.0; c])
        };
        let block = ROWS_PER_TASK * c;
        dx.data_mut()
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(b, d)| {
                let at = b * block;
                let n = d.len();
                let (dys, xs, ys) = (&dyd[at..at + n], &xd[at..at + n], &yd[at..at + n]);
                let rows_iter = d.chunks_exact_mut(c).zip(dys.chunks_exact(c));
                for ((d, g), (px, py)) in rows_iter.zip(xs.chunks_exact(c).zip(ys.chunks_exact(c)))
                {
                    let stats = mean
                        .iter()
                        .zip(inv_std)
                        .zip(scale.iter().zip(&mean_dy).zip(&mean_dyx));
                    for ((d, ((&g, &v), &o)), ((&m, &is), ((&s, &mdy), &mdyx))) in
                        d.iter_mut().zip(g.iter().zip(px).zip(py)).zip(stats)
                    {
                        let g = if relu && o <= 0.0 { 0.0 } else { g };
                        *d = s * (g - mdy - (v - m) * is * mdyx);
                    }
                }
            });
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }

    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        vec![
            (TensorKey::at(0, Role::Weight), &self.gamma.value),
            (TensorKey::at(0, Role::Bias), &self.beta.value),
            (TensorKey::at(0, Role::RunningMean), &self.running_mean),
            (TensorKey::at(0, Role::RunningVar), &self.running_var),
        ]
    }

    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        vec![
            (TensorKey::at(0, Role::Weight), &mut self.gamma.value),
            (TensorKey::at(0, Role::Bias), &mut self.beta.value),
            (TensorKey::at(0, Role::RunningMean), &mut self.running_mean),
            (TensorKey::at(0, Role::RunningVar), &mut self.running_var),
        ]
    }
}
