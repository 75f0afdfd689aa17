//! The `--preset` recipes: every feature they switch on (augmentation, weight averaging,
//! flip test-time augmentation, early stopping) is deterministic and never looks at the
//! test set. Sizes are cut down; the full recipes are measured in the README.

mod common;

use common::{SYSTEM_DATA, Sandbox};
use fmnist::data::DataOptions;
use fmnist::train::recipes;

/// The real data with the test set cut to its first 1,000 images (fast to evaluate).
fn data() -> fmnist::FashionMnist {
    let opts = DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    };
    let mut data = fmnist::data::load(&opts).expect("real data");
    let first: Vec<usize> = (0..1000).collect();
    data.test = data.test.subset(&first);
    data
}

/// Every weight of every network (an ensemble's too).
fn weights(model: &fmnist::Classifier) -> Vec<u32> {
    model
        .each_network()
        .flat_map(|m| m.net.tensors())
        .flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        .collect()
}

fn train_preset(data: &fmnist::FashionMnist, name: &str, seed: u64) -> fmnist::Classifier {
    let recipe = recipes::recipe(name).unwrap();
    let cfg = fmnist::TrainConfig {
        epochs: 2,
        limit: Some(768),
        val_size: 500,
        seed,
        ..recipe.config
    };
    let spec = fmnist::model::preset(recipe.model).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| fmnist::train(data, spec, &cfg, &mut fmnist::train::Silent))
        .unwrap()
        .model
}

#[test]
fn every_preset_is_reproducible_and_blind_to_the_test_set() {
    let data = data();
    let mut shuffled = data.clone();
    shuffled.test.labels.rotate_left(1);
    for name in recipes::NAMES {
        let recipe = recipes::recipe(name).unwrap();
        let a = train_preset(&data, name, 3);
        let b = train_preset(&data, name, 3);
        let c = train_preset(&data, name, 4);
        let blind = train_preset(&shuffled, name, 3);
        assert_eq!(weights(&a), weights(&b), "{name}: same seed, same model");
        assert_ne!(weights(&a), weights(&c), "{name}: another seed");
        assert_eq!(weights(&a), weights(&blind), "{name}: test labels unused");
        assert_eq!(a.summary.best_epoch, blind.summary.best_epoch);
        assert_ne!(a.summary.test_accuracy, blind.summary.test_accuracy);
        assert!(a.inference.flip_tta, "{name} classifies with flip TTA");
        assert_eq!(a.networks(), recipe.config.members, "{name}");
    }
}

#[test]
fn weight_averaging_keeps_the_average_not_the_last_weights() {
    let data = data();
    let base = recipes::recipe("best").unwrap();
    let spec = fmnist::model::preset("simple-bn").unwrap();
    let run = |ema| {
        let cfg = fmnist::TrainConfig {
            epochs: 1,
            limit: Some(512),
            val_size: 500,
            ema,
            ..base.config.clone()
        };
        fmnist::train(&data, spec.clone(), &cfg, &mut fmnist::train::Silent).unwrap()
    };
    let (plain, averaged) = (run(None), run(Some(0.9)));
    assert_ne!(weights(&plain.model), weights(&averaged.model));
    // Same updates underneath: the training losses agree, only the kept weights differ.
    assert_eq!(plain.history[0].train_loss, averaged.history[0].train_loss);
}

#[test]
fn early_stopping_ends_when_validation_stops_improving() {
    // A rate too small to change any weight: validation accuracy never improves after
    // the first epoch, so patience 2 stops after epoch 3 of 10.
    let sb = Sandbox::new();
    let out = sb.ok(&[
        "train",
        "--epochs",
        "10",
        "--lr",
        "1e-12",
        "--patience",
        "2",
        "--limit",
        "256",
        "--val-size",
        "500",
        "--out",
        "m.safetensors",
        "--offline",
    ]);
    assert!(
        out.contains("stopped after epoch 3: no better validation accuracy for 2 epochs"),
        "{out}"
    );
    let m = fmnist::Classifier::load(&sb.path("m.safetensors")).unwrap();
    assert_eq!(
        (
            m.summary.epochs,
            m.summary.planned_epochs,
            m.summary.best_epoch
        ),
        (3, 10, 1)
    );
    let history = std::fs::read_to_string(sb.path("m.history.csv")).unwrap();
    assert_eq!(history.lines().count(), 1 + 3);
}

#[test]
fn a_preset_sets_the_recipe_and_explicit_flags_override_it() {
    let sb = Sandbox::new();
    let out = sb.ok(&[
        "train",
        "--preset",
        "fast",
        "--epochs",
        "1",
        "--limit",
        "1000",
        "--val-size",
        "500",
        "--tta",
        "false",
        "--erase",
        "0.5",
        "--out",
        "f.safetensors",
        "--offline",
    ]);
    assert!(out.contains("training simple-bn"), "{out}");
    assert!(out.contains("preset fast"), "{out}");
    assert!(
        out.contains("1 epoch, batch 128, AdamW lr 3e-3") && out.contains("flip + erase 0.5"),
        "{out}"
    );
    assert!(!out.contains("TTA"), "{out}");
    let m = fmnist::Classifier::load(&sb.path("f.safetensors")).unwrap();
    assert!(!m.inference.flip_tta);
    assert!(m.summary.augment.flip && m.summary.augment.erase == 0.5);
    assert_eq!(m.summary.epochs, 1);
}

#[test]
fn eval_of_a_tta_model_repeats_the_accuracy_training_reported() {
    let sb = Sandbox::new();
    let out = sb.ok(&[
        "train",
        "--preset",
        "fast",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--val-size",
        "500",
        "--out",
        "t.safetensors",
        "--offline",
    ]);
    assert!(out.contains("flip TTA"), "{out}");
    let m = fmnist::Classifier::load(&sb.path("t.safetensors")).unwrap();
    assert!(m.inference.flip_tta);
    let reported = format!("{:.2} %", 100.0 * m.summary.test_accuracy);
    let eval = sb.ok(&["eval", "t.safetensors", "--offline"]);
    assert!(
        out.contains(&format!("test accuracy {reported}")) && eval.contains(&reported),
        "{out}\n{eval}"
    );
    // An ensemble of a model with itself is the model; with another, the average.
    let twice = sb.ok(&["eval", "t.safetensors", "t.safetensors", "--offline"]);
    assert!(
        twice.contains("ensemble of 2 models") && twice.contains(&reported),
        "{twice}"
    );
    sb.ok(&[
        "train",
        "--preset",
        "fast",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--val-size",
        "500",
        "--seed",
        "9",
        "--out",
        "u.safetensors",
        "--offline",
    ]);
    let mut models =
        ["t.safetensors", "u.safetensors"].map(|f| fmnist::Classifier::load(&sb.path(f)).unwrap());
    let full = fmnist::data::load(&DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    })
    .unwrap()
    .test;
    let ensemble = fmnist::eval::evaluate_ensemble(&mut models, &full).unwrap();
    let pair = sb.ok(&["eval", "t.safetensors", "u.safetensors", "--offline"]);
    assert!(
        pair.contains(&format!("test accuracy {:.2} %", 100.0 * ensemble.accuracy)),
        "{pair}"
    );
}
