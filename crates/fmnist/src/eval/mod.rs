//! Evaluation: accuracy, loss, per-class precision / recall / F1 and the confusion matrix.

use serde::Serialize;

pub mod photo_folders;
pub mod photos;

use crate::data::Dataset;
use crate::model::classifier::{Classifier, average_probabilities};

/// A model's outputs on a dataset.
pub struct Evaluation {
    /// Class probabilities, `n × 10` row after row.
    pub probabilities: Vec<f32>,
    /// The most probable class of each image.
    pub predictions: Vec<u8>,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly (0–1).
    pub accuracy: f64,
}

/// Runs `model` over `data` in inference mode.
pub fn evaluate(model: &mut Classifier, data: &Dataset) -> Evaluation {
    let probabilities = model.probabilities(&data.images);
    score(probabilities, &data.labels, model.classes.len())
}

/// Runs every model over `data` and scores the average of their probabilities (an
/// ensemble). The models must share their class list.
pub fn evaluate_ensemble(models: &mut [Classifier], data: &Dataset) -> anyhow::Result<Evaluation> {
    let Some((first, rest)) = models.split_first_mut() else {
        anyhow::bail!("an ensemble needs at least one model");
    };
    if let Some(other) = rest.iter().find(|m| m.classes != first.classes) {
        anyhow::bail!(
            "the models disagree on the classes ({:?} vs {:?})",
            first.classes,
            other.classes
        );
    }
    let c = first.classes.len();
    let sum = average_probabilities(models.iter_mut().map(|m| m.probabilities(&data.images)));
    Ok(score(sum, &data.labels, c))
}

/// Predictions, loss and accuracy from probabilities (`c` per image) and true labels.
fn score(probabilities: Vec<f32>, labels: &[u8], c: usize) -> Evaluation {
    let mut loss = 0.0f64;
    let mut right = 0usize;
    let mut predictions = Vec::with_capacity(labels.len());
    for (row, &label) in probabilities.chunks_exact(c).zip(labels) {
        let p = nn::loss::argmax(row);
        predictions.push(p as u8);
        right += usize::from(p == label as usize);
        loss -= (row[label as usize].max(1e-12) as f64).ln();
    }
    let n = labels.len().max(1) as f64;
    Evaluation {
        probabilities,
        predictions,
        loss: loss / n,
        accuracy: right as f64 / n,
    }
}

/// One class's scores.
#[derive(Clone, Debug, Serialize)]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// Of the images predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the images of this class, the fraction found.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Images of this class.
    pub support: usize,
}

/// Everything `fmnist eval` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    /// Fraction correct (0–1).
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Images evaluated.
    pub images: usize,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Per-class scores, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Scores `eval` against the true `labels`.
pub fn metrics(eval: &Evaluation, labels: &[u8], classes: &[String]) -> Metrics {
    let c = classes.len();
    let mut confusion = vec![vec![0usize; c]; c];
    for (&t, &p) in labels.iter().zip(&eval.predictions) {
        confusion[t as usize][p as usize] += 1;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class = (0..c)
        .map(|k| {
            let tp = confusion[k][k];
            let predicted: usize = confusion.iter().map(|row| row[k]).sum();
            let support: usize = confusion[k].iter().sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                class: classes[k].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    Metrics {
        accuracy: eval.accuracy,
        loss: eval.loss,
        images: labels.len(),
        classes: classes.to_vec(),
        per_class,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_and_confusion_by_hand() {
        // Truth 0 0 1 1 1 2; predicted 0 1 1 1 2 2.
        let eval = Evaluation {
            probabilities: vec![],
            predictions: vec![0, 1, 1, 1, 2, 2],
            loss: 0.0,
            accuracy: 4.0 / 6.0,
        };
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = metrics(&eval, &[0, 0, 1, 1, 1, 2], &names);
        assert_eq!(
            m.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 1], vec![0, 0, 1]]
        );
        let b = &m.per_class[1];
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12 && (b.recall - 2.0 / 3.0).abs() < 1e-12);
        let c = &m.per_class[2];
        assert_eq!((c.precision, c.recall, c.support), (0.5, 1.0, 1));
        assert!((c.f1 - 2.0 / 3.0).abs() < 1e-12);
    }
}
