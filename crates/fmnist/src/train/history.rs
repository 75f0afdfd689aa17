//! What each epoch measured, as the run keeps it and as `NAME.history.csv` holds it.

use serde::{Deserialize, Serialize};

/// One epoch's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The network of an ensemble it trained, 1-based (1 for a lone network).
    #[serde(default = "first_network")]
    pub member: usize,
    /// 1-based epoch (of its network's training).
    pub epoch: usize,
    /// Mean training loss over the epoch (with dropout active).
    pub train_loss: f64,
    /// Training accuracy over the epoch (with dropout active).
    pub train_accuracy: f64,
    /// Validation loss (NaN without a validation set).
    #[serde(with = "nan_as_null")]
    pub val_loss: f64,
    /// Validation accuracy (NaN without a validation set).
    #[serde(with = "nan_as_null")]
    pub val_accuracy: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f32,
    /// Seconds for the epoch, validation included.
    pub seconds: f64,
    /// Training throughput (validation excluded).
    pub train_images_per_s: f64,
}

fn first_network() -> usize {
    1
}

/// JSON has no NaN: a missing validation figure is stored as `null`.
pub(crate) mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The history as CSV, one row per epoch; an ensemble's starts with the network's
/// number (`member`).
pub fn history_csv(history: &[EpochRecord]) -> String {
    let ensemble = history.iter().any(|r| r.member > 1);
    let mut out = String::from(if ensemble { "member," } else { "" });
    out.push_str(
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,train_images_per_s\n",
    );
    for r in history {
        if ensemble {
            out.push_str(&format!("{},", r.member));
        }
        out.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:e},{:.3},{:.1}\n",
            r.epoch,
            r.train_loss,
            r.train_accuracy,
            r.val_loss,
            r.val_accuracy,
            r.lr,
            r.seconds,
            r.train_images_per_s
        ));
    }
    out
}
