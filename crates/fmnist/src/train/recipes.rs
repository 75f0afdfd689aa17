//! Whole training recipes for `fmnist train --preset`: an architecture and every
//! setting, each the best trade-off we measured for its time budget on a 2-core CPU.

use nn::{OptimizerConfig, OptimizerKind, Schedule};

use crate::train::TrainConfig;
use crate::train::augment::Augment;

/// Names of the presets, fastest first.
pub const NAMES: [&str; 3] = ["fast", "standard", "best"];

/// An architecture name (see [`crate::model::architectures`]) and a training configuration.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// Preset name (`"default"` for the seed recipe).
    pub name: &'static str,
    /// Built-in architecture.
    pub model: &'static str,
    /// Everything else.
    pub config: TrainConfig,
}

impl Default for Recipe {
    /// The seed assignment's network and recipe, which `fmnist train` uses without a preset.
    fn default() -> Self {
        Self {
            name: "default",
            model: "simple",
            config: TrainConfig::default(),
        }
    }
}

/// The preset `name`, if there is one.
pub fn recipe(name: &str) -> Option<Recipe> {
    let base = TrainConfig::default();
    let (model, config) = match name {
        "fast" => (
            "simple-bn",
            TrainConfig {
                epochs: 5,
                lr: 3e-3,
                optimizer: OptimizerConfig::new(OptimizerKind::adamw()).with_weight_decay(5e-4),
                schedule: Schedule::one_cycle(),
                augment: Augment {
                    shift: 0,
                    flip: true,
                    erase: 0.0,
                },
                flip_tta: true,
                ..base
            },
        ),
        "standard" => (
            "cnn-bn",
            TrainConfig {
                epochs: 12,
                batch_size: 128,
                lr: 3e-3,
                optimizer: OptimizerConfig::new(OptimizerKind::adamw()).with_weight_decay(5e-2),
                schedule: Schedule::one_cycle(),
                label_smoothing: 0.1,
                augment: Augment {
                    shift: 2,
                    flip: true,
                    erase: 0.0,
                },
                flip_tta: true,
                ..base
            },
        ),
        "best" => (
            "resnet9",
            TrainConfig {
                epochs: 22,
                batch_size: 128,
                lr: 3e-3,
                optimizer: OptimizerConfig::new(OptimizerKind::adamw()).with_weight_decay(5e-2),
                schedule: Schedule::one_cycle(),
                label_smoothing: 0.1,
                augment: Augment {
                    shift: 2,
                    flip: true,
                    erase: 0.25,
                },
                ema: Some(0.999),
                flip_tta: true,
                ..base
            },
        ),
        _ => return None,
    };
    Some(Recipe {
        name: NAMES.into_iter().find(|n| *n == name)?,
        model,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_names_a_model() {
        for name in NAMES {
            let r = recipe(name).unwrap();
            assert_eq!(r.name, name);
            r.config.validate().unwrap();
            assert!(
                crate::model::architectures::preset(r.model).is_some(),
                "{}",
                r.model
            );
        }
        assert!(recipe("slow").is_none());
    }
}
