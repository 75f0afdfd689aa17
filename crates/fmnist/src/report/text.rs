//! Text reports for the terminal.

use std::fmt::Write;

use crate::data::{CLASS_NAMES, FashionMnist};
use crate::eval::Metrics;
use crate::predict::Prediction;
use crate::train::{EpochRecord, TrainConfig};
use nn::{OptimizerKind, Schedule};

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `1m 05s` or `12.3 s`.
pub fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        format!(
            "{}m {:02}s",
            (seconds / 60.0) as u64,
            (seconds % 60.0) as u64
        )
    }
}

/// The recipe in one line: `12 epochs, batch 128, AdamW lr 3e-3 (decay 0.05), one-cycle, …`.
pub fn recipe(cfg: &TrainConfig) -> String {
    let opt = match cfg.optimizer.kind {
        OptimizerKind::Adam { .. } => "Adam",
        OptimizerKind::AdamW { .. } => "AdamW",
        OptimizerKind::Sgd { nesterov: true, .. } => "SGD Nesterov",
        OptimizerKind::Sgd { .. } => "SGD",
    };
    let schedule = match cfg.schedule {
        Schedule::Constant => "constant rate",
        Schedule::Cosine { .. } => "cosine",
        Schedule::OneCycle { .. } => "one-cycle",
    };
    let mut s = format!(
        "{} epoch{}, batch {}, {opt} lr {:e}",
        cfg.epochs,
        if cfg.epochs == 1 { "" } else { "s" },
        cfg.batch_size,
        cfg.lr
    );
    if cfg.optimizer.weight_decay > 0.0 {
        let _ = write!(s, " (weight decay {})", cfg.optimizer.weight_decay);
    }
    let _ = write!(s, ", {schedule}");
    if cfg.label_smoothing > 0.0 {
        let _ = write!(s, ", label smoothing {}", cfg.label_smoothing);
    }
    let a = &cfg.augment;
    let mut aug = Vec::new();
    if a.shift > 0 {
        aug.push(format!("shift ±{}", a.shift));
    }
    if a.flip {
        aug.push("flip".to_string());
    }
    if a.erase > 0.0 {
        aug.push(format!("erase {}", a.erase));
    }
    if a.photo > 0.0 {
        aug.push(format!("photo {}", a.photo));
    }
    if !aug.is_empty() {
        let _ = write!(s, ", augment {}", aug.join(" + "));
    }
    if let Some(d) = cfg.ema {
        let _ = write!(s, ", weight average {d}");
    }
    if let Some(p) = cfg.patience {
        let _ = write!(s, ", patience {p}");
    }
    if cfg.flip_tta {
        s.push_str(", flip TTA");
    }
    if cfg.precision != nn::Precision::F32 {
        let _ = write!(s, ", mixed precision {}", cfg.precision.name());
    }
    if cfg.members > 1 {
        let _ = write!(
            s,
            "; {} networks (seeds {}-{}), probabilities averaged",
            cfg.members,
            cfg.seed,
            cfg.member(cfg.members - 1).seed
        );
    }
    s
}

/// What `fmnist data` prints.
pub fn data_summary(data: &FashionMnist) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Fashion-MNIST in {} ({})",
        data.dir.display(),
        data.origin
    );
    let _ = writeln!(
        s,
        "verified: 4 files, MD5 of the decompressed bytes matches the published checksums"
    );
    let _ = writeln!(
        s,
        "train: {} images, test: {} images, 28×28 grayscale, 10 classes\n",
        thousands(data.train.len()),
        thousands(data.test.len())
    );
    let (train, test) = (data.train.class_counts(), data.test.class_counts());
    let _ = writeln!(s, "label  class         train   test");
    for (k, name) in CLASS_NAMES.iter().enumerate() {
        let _ = writeln!(
            s,
            "{k:>5}  {name:<12} {:>6} {:>6}",
            thousands(train[k]),
            thousands(test[k])
        );
    }
    s
}

/// One line per epoch during training.
pub fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let width = epochs.to_string().len();
    format!(
        "epoch {:>w$}/{epochs}  train loss {:.4} acc {:6.2} %  val loss {:.4} acc {:6.2} %  {:>7}  {:>6} img/s",
        r.epoch,
        r.train_loss,
        100.0 * r.train_accuracy,
        r.val_loss,
        100.0 * r.val_accuracy,
        duration(r.seconds),
        thousands(r.train_images_per_s.round() as usize),
        w = width
    )
}

/// Short column headers for the confusion matrix.
fn short(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .take(5)
        .collect()
}

/// What `fmnist eval` prints.
pub fn metrics_table(m: &Metrics) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "test accuracy {:.2} %  ({} images, loss {:.4})\n",
        100.0 * m.accuracy,
        thousands(m.images),
        m.loss
    );
    let _ = writeln!(s, "class         precision  recall      f1  support");
    for c in &m.per_class {
        let _ = writeln!(
            s,
            "{:<12}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
            c.class, c.precision, c.recall, c.f1, c.support
        );
    }
    let _ = writeln!(
        s,
        "\nconfusion matrix (rows: true class, columns: predicted)"
    );
    let _ = write!(s, "{:<12}", "");
    for name in &m.classes {
        let _ = write!(s, " {:>5}", short(name));
    }
    s.push('\n');
    for (name, row) in m.classes.iter().zip(&m.confusion) {
        let _ = write!(s, "{name:<12}");
        for v in row {
            let _ = write!(s, " {v:>5}");
        }
        s.push('\n');
    }
    s
}

/// What `fmnist predict` prints for one image.
pub fn prediction(p: &Prediction) -> String {
    let mut s = if p.unsure {
        format!(
            "{}: unsure, maybe none of the classes (best guess {}, {:.1} %)\n",
            p.file,
            p.class,
            100.0 * p.probability
        )
    } else {
        format!("{}: {} ({:.1} %)\n", p.file, p.class, 100.0 * p.probability)
    };
    if p.pair {
        s.insert_str(s.len() - 1, ", one of a pair: footwear only");
    }
    for r in &p.top {
        let bar = "█".repeat((r.probability * 20.0).round() as usize);
        let _ = writeln!(
            s,
            "  {:<12} {:5.1} %  {bar}",
            r.class,
            100.0 * r.probability
        );
    }
    s
}

/// What `fmnist eval --photos-dir` prints: accuracy, and per folder its recall and where
/// its photos went (folders mapped to no class last, unscored).
pub fn photos_table(
    r: &crate::eval::photo_folders::PhotoReport,
    classes: &[String],
    dir: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nreal photos in {dir}: {} in folders of a class{}",
        thousands(r.scored),
        if r.unscored > 0 {
            format!(
                ", {} in folders of none (reported apart)",
                thousands(r.unscored)
            )
        } else {
            String::new()
        }
    );
    let right: usize = r
        .folders
        .iter()
        .filter(|f| !f.accepts.is_empty())
        .map(|f| f.right)
        .sum();
    let _ = writeln!(
        s,
        "accuracy {:.2} %  ({} of {})\n",
        100.0 * r.accuracy,
        thousands(right),
        thousands(r.scored)
    );
    let width = r
        .folders
        .iter()
        .map(|f| f.folder.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = write!(
        s,
        "{:<width$}  {:>6}  {:>5}  {:>7}  {:>6}   predicted as:",
        "folder", "photos", "right", "recall", "unsure"
    );
    for c in classes {
        let _ = write!(s, " {:>5}", short(c));
    }
    let _ = writeln!(s, "   right answers");
    let mut ordered: Vec<&crate::eval::photo_folders::FolderScore> = r.folders.iter().collect();
    ordered.sort_by_key(|f| f.accepts.is_empty());
    for f in ordered {
        let (right, recall) = if f.accepts.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (f.right.to_string(), format!("{:.1} %", 100.0 * f.recall))
        };
        let _ = write!(
            s,
            "{:<width$}  {:>6}  {:>5}  {:>7}  {:>6}                ",
            f.folder, f.photos, right, recall, f.unsure
        );
        for n in &f.predicted {
            let _ = write!(s, " {n:>5}");
        }
        let accepts = if f.accepts.is_empty() {
            "(none of the ten)".to_string()
        } else {
            f.accepts.join(", ")
        };
        let _ = writeln!(s, "   {accepts}");
    }
    let sum = |pick: &dyn Fn(&crate::eval::photo_folders::FolderScore) -> usize, labelled: bool| {
        r.folders
            .iter()
            .filter(|f| f.accepts.is_empty() != labelled)
            .map(pick)
            .sum::<usize>()
    };
    let share = |part: usize, whole: usize| {
        format!(
            "{} of {} ({:.1} %)",
            thousands(part),
            thousands(whole),
            100.0 * part as f64 / whole.max(1) as f64
        )
    };
    let right_unsure = sum(&|f| f.right_unsure, true);
    let wrong_unsure = sum(&|f| f.unsure, true) - right_unsure;
    let _ = writeln!(
        s,
        "\nunsure (best class below {:.0} %): on {} right answers, {} wrong ones",
        100.0 * crate::predict::UNSURE_BELOW,
        share(right_unsure, right),
        share(wrong_unsure, r.scored - right)
    );
    if r.unscored > 0 {
        let _ = writeln!(
            s,
            "  and on {} photos of no class",
            share(sum(&|f| f.unsure, false), r.unscored)
        );
    }
    let _ = writeln!(s, "preprocessing: {:.1} ms a photo", r.preprocess_ms);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsure_predictions_say_so_with_their_best_guess() {
        let ranked = |class: &str, probability| crate::predict::Ranked {
            class: class.into(),
            label: 0,
            probability,
        };
        let mut p = Prediction {
            file: "a.jpg".into(),
            class: "Bag".into(),
            label: 8,
            probability: 0.42,
            unsure: true,
            top: vec![ranked("Bag", 0.42), ranked("Shirt", 0.3)],
            pair: false,
            view: crate::predict::View::Whole,
        };
        let text = prediction(&p);
        assert!(
            text.starts_with("a.jpg: unsure, maybe none of the classes (best guess Bag, 42.0 %)\n"),
            "{text}"
        );
        p.unsure = false;
        assert!(prediction(&p).starts_with("a.jpg: Bag (42.0 %)\n"));
        (p.class, p.pair) = ("Sneaker".into(), true);
        assert!(
            prediction(&p).starts_with("a.jpg: Sneaker (42.0 %), one of a pair: footwear only\n"),
            "{}",
            prediction(&p)
        );
    }

    #[test]
    fn the_recipe_line_names_a_bf16_precision_and_not_fp32() {
        let fp32 = TrainConfig::default();
        assert!(!recipe(&fp32).contains("precision"), "{}", recipe(&fp32));
        let bf16 = TrainConfig {
            precision: nn::Precision::Bf16(nn::Bf16Isa::Avx512Bf16),
            ..fp32
        };
        assert!(
            recipe(&bf16).ends_with(", mixed precision bf16-avx512bf16"),
            "{}",
            recipe(&bf16)
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(60000), "60,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(125.0), "2m 05s");
    }
}
