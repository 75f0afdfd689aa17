//! Softmax cross-entropy and accuracy.

use crate::Tensor;

/// Row-wise softmax of `logits` (`[n, classes]`) into `probs`, numerically stable.
pub fn softmax(logits: &Tensor, probs: &mut Tensor) {
    probs.resize(logits.shape());
    let c = logits.shape().last().copied().unwrap_or(1).max(1);
    for (row, out) in logits
        .data()
        .chunks_exact(c)
        .zip(probs.data_mut().chunks_exact_mut(c))
    {
        softmax_row(row, 1.0, out);
    }
}

/// Softmax of one row of logits divided by `temperature` into `out`, numerically stable
/// (a temperature of 1 is the plain softmax, bit for bit).
pub fn softmax_row(row: &[f32], temperature: f32, out: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for (o, &v) in out.iter_mut().zip(row) {
        *o = ((v - max) / temperature).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

/// Mean softmax cross-entropy of `logits` (`[n, classes]`) against integer `labels`, with
/// label smoothing `smoothing` (targets `(1-ε)·onehot + ε/classes`). Writes
/// dLoss/dlogits `= (softmax - target)/n` into `grad` and returns the loss.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[usize],
    smoothing: f32,
    grad: &mut Tensor,
) -> f32 {
    let n = logits.batch();
    assert_eq!(labels.len(), n, "one label per row");
    let c = logits.len() / n.max(1);
    softmax(logits, grad);
    let off = smoothing / c as f32;
    let on = 1.0 - smoothing + off;
    let mut total = 0.0f64;
    for ((row, g), &label) in logits
        .data()
        .chunks_exact(c)
        .zip(grad.data_mut().chunks_exact_mut(c))
        .zip(labels)
    {
        assert!(label < c, "label {label} out of range for {c} classes");
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max as f64
            + row
                .iter()
                .map(|&v| ((v - max) as f64).exp())
                .sum::<f64>()
                .ln();
        for (j, (gj, &z)) in g.iter_mut().zip(row).enumerate() {
            let target = if j == label { on } else { off };
            total -= target as f64 * (z as f64 - lse);
            *gj = (*gj - target) / n as f32;
        }
    }
    (total / n.max(1) as f64) as f32
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// How many rows of `logits` have their maximum at the label.
pub fn correct(logits: &Tensor, labels: &[usize]) -> usize {
    let c = logits.len() / logits.batch().max(1);
    logits
        .data()
        .chunks_exact(c)
        .zip(labels)
        .filter(|(row, l)| argmax(row) == **l)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_log_classes_and_known_gradient() {
        let logits = Tensor::zeros(&[2, 4]);
        let mut g = Tensor::default();
        let loss = softmax_cross_entropy(&logits, &[1, 3], 0.0, &mut g);
        assert!((loss - 4f32.ln()).abs() < 1e-6);
        // (0.25 - onehot)/2
        assert_eq!(g.data()[1], (0.25 - 1.0) / 2.0);
        assert_eq!(g.data()[0], 0.25 / 2.0);
    }

    #[test]
    fn smoothing_changes_the_target() {
        let logits = Tensor::from_vec(&[1, 2], vec![10.0, -10.0]).unwrap();
        let mut g = Tensor::default();
        let plain = softmax_cross_entropy(&logits, &[0], 0.0, &mut g);
        let smooth = softmax_cross_entropy(&logits, &[0], 0.2, &mut g);
        assert!(plain < 1e-6 && smooth > 1.0);
        // target = [0.9, 0.1]; softmax ≈ [1, 0]
        assert!((g.data()[0] - 0.1).abs() < 1e-4 && (g.data()[1] + 0.1).abs() < 1e-4);
    }

    #[test]
    fn large_logits_stay_finite() {
        let logits = Tensor::from_vec(&[1, 3], vec![1e4, -1e4, 0.0]).unwrap();
        let mut g = Tensor::default();
        let loss = softmax_cross_entropy(&logits, &[1], 0.0, &mut g);
        assert!((loss - 2e4).abs() < 1.0 && g.data().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn argmax_and_correct() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        let logits = Tensor::from_vec(&[2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        assert_eq!(correct(&logits, &[0, 0]), 1);
    }
}
