//! A whole training run with its files, as `fmnist train` performs it and as a library
//! user or a test drives it: the recipe and architecture checked, every output reserved
//! and the disk's free space checked before any work, a checkpoint after every epoch,
//! resumption from one, and at the end the model, its history and its pictures written
//! atomically and the checkpoint removed.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use fmnist::train::{Run, Silent, TrainConfig};
//! let data = fmnist::data::load(&Default::default())?;
//! let run = Run::new(fmnist::model::simple(), TrainConfig::default(), "m.safetensors".as_ref())?;
//! let done = run.execute(&data, &mut Silent)?;
//! println!("test accuracy {:.2} %", 100.0 * done.test.accuracy);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use nn::ModelSpec;

use super::checkpoint::{self, Checkpoint};
use super::config::{TrainConfig, check_memory};
use super::fit::{Progress, RunControl, train_with};
use super::history::{EpochRecord, history_csv};
use crate::data::FashionMnist;
use crate::eval::{self, Metrics};
use crate::io::atomic::PendingFile;
use crate::io::space;
use crate::model::{Classifier, build_checked};
use crate::report::plots;

/// The files a run writes: the model and, beside it, its history, training curves,
/// confusion matrix and (while it runs) its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// The model file (`NAME.safetensors`).
    pub model: PathBuf,
    /// One CSV row per epoch (`NAME.history.csv`).
    pub history: PathBuf,
    /// Loss and accuracy per epoch (`NAME.curves.png`).
    pub curves: PathBuf,
    /// The test set's confusion matrix (`NAME.confusion.png`).
    pub confusion: PathBuf,
    /// The state after the last finished epoch (`NAME.checkpoint.safetensors`), removed
    /// once the run is complete.
    pub checkpoint: PathBuf,
}

impl Outputs {
    /// The files of a run whose model is `model`.
    pub fn beside(model: &Path) -> Self {
        Self {
            model: model.to_path_buf(),
            history: model.with_extension("history.csv"),
            curves: model.with_extension("curves.png"),
            confusion: model.with_extension("confusion.png"),
            checkpoint: checkpoint::path_for(model),
        }
    }
}

/// A training run, ready to go: see the module's documentation.
pub struct Run<'a> {
    spec: ModelSpec,
    config: TrainConfig,
    outputs: Outputs,
    params: usize,
    resume: Option<Checkpoint>,
    stop: Option<&'a AtomicBool>,
    /// Weights to start from (fine-tuning).
    init: Option<Vec<nn::Tensor>>,
    /// Reserved: model, history, curves, confusion matrix.
    files: [PendingFile; 4],
}

/// What a finished run produced; its files are written.
pub struct Finished {
    /// The classifier with the kept epoch's weights and its summary.
    pub model: Classifier,
    /// One record per epoch.
    pub history: Vec<EpochRecord>,
    /// The kept weights on the test set, measured once after training.
    pub test: Metrics,
    /// Where everything was written (the checkpoint is gone).
    pub outputs: Outputs,
}

impl<'a> Run<'a> {
    /// A new run of `spec` with `config`, writing `model` and the files beside it.
    pub fn new(spec: ModelSpec, config: TrainConfig, model: &Path) -> anyhow::Result<Self> {
        Self::prepare(spec, config, Outputs::beside(model), None)
    }

    /// Continues the run saved in `checkpoint` with the recipe it was started with. Its
    /// outputs go beside the checkpoint (`NAME.checkpoint.safetensors` gives
    /// `NAME.safetensors`) or to `model` when given: a checkpoint never chooses where
    /// files are written.
    pub fn resume(checkpoint: &Path, model: Option<&Path>) -> anyhow::Result<Self> {
        let state = Checkpoint::load(checkpoint)?;
        let model = match model {
            Some(m) => m.to_path_buf(),
            None => checkpoint::model_path_for(checkpoint).with_context(|| {
                format!(
                    "{} is not named NAME.checkpoint.safetensors, so the model's name is \
                     unknown: give --out",
                    checkpoint.display()
                )
            })?,
        };
        let outputs = Outputs {
            checkpoint: checkpoint.to_path_buf(),
            ..Outputs::beside(&model)
        };
        Self::prepare(
            state.spec.clone(),
            state.config.clone(),
            outputs,
            Some(state),
        )
    }

    fn prepare(
        spec: ModelSpec,
        config: TrainConfig,
        outputs: Outputs,
        resume: Option<Checkpoint>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let net = build_checked(&spec, &mut nn::Rng::new(0))?;
        check_memory(&net, config.batch_size)?;
        let params = net.num_params();
        drop(net);
        // Reserve the outputs first: an unwritable destination fails now, not after
        // training.
        let files = [
            PendingFile::reserve(&outputs.model)?,
            PendingFile::reserve(&outputs.history)?,
            PendingFile::reserve(&outputs.curves)?,
            PendingFile::reserve(&outputs.confusion)?,
        ];
        PendingFile::reserve(&outputs.checkpoint)?;
        // Upper bounds: a checkpoint holds up to five copies of the weights (weights,
        // best weights, two optimizer moments, their average) and the ensemble's
        // finished networks, and the old one stays until the new one is complete; charts
        // and history take well under 512 KiB.
        let weights = 4 * params as u64;
        let networks = config.members as u64;
        let checkpoint = (4 + networks) * weights + (64 << 10) * networks;
        space::ensure_room(&[
            (
                &outputs.model,
                networks * (weights + (64 << 10)) + (512 << 10),
            ),
            (&outputs.checkpoint, 2 * checkpoint),
        ])?;
        Ok(Self {
            spec,
            config,
            outputs,
            params,
            resume,
            stop: None,
            init: None,
            files,
        })
    }

    /// Fine-tunes `model` instead of training from the seed's initialisation: the run's
    /// architecture must be the model's, and its recipe should carry the model's input
    /// normalisation (see [`crate::train::TrainConfig::normalization`]). A resumed run
    /// already holds its weights; this is for a run's start.
    pub fn starting_from(mut self, model: &crate::model::Classifier) -> anyhow::Result<Self> {
        if model.networks() > 1 {
            anyhow::bail!(
                "the model to start from is an {}: fine-tuning starts from one network",
                model.describe()
            );
        }
        if model.spec.layers != self.spec.layers || model.spec.input != self.spec.input {
            anyhow::bail!("the model to start from has another architecture than the run's");
        }
        self.init = Some(model.net.snapshot());
        Ok(self)
    }

    /// Stops the run before its next step once `flag` is set (by Ctrl-C, say), with
    /// [`super::Interrupted`] naming the checkpoint to resume from.
    pub fn stop_when(mut self, flag: &'a AtomicBool) -> Self {
        self.stop = Some(flag);
        self
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The recipe.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Where the run writes.
    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    /// The network's parameter count.
    pub fn params(&self) -> usize {
        self.params
    }

    /// For a resumed run: epochs already done (of the running network) and the thread
    /// count they ran on.
    pub fn resumed(&self) -> Option<(usize, usize)> {
        self.resume.as_ref().map(|c| (c.epochs_done, c.threads))
    }

    /// For a resumed ensemble: the networks already finished.
    pub fn resumed_networks(&self) -> usize {
        self.resume.as_ref().map_or(0, |c| c.earlier.len())
    }

    /// Trains on `data` (on the current rayon pool), then writes the model, history and
    /// pictures and removes the checkpoint. On failure or interruption the last
    /// checkpoint stays and no other file is touched.
    pub fn execute(
        self,
        data: &FashionMnist,
        progress: &mut dyn Progress,
    ) -> anyhow::Result<Finished> {
        let control = RunControl {
            checkpoint: Some(self.outputs.checkpoint.clone()),
            resume: self.resume,
            stop: self.stop,
            init: self.init,
        };
        let outcome = train_with(data, self.spec, &self.config, progress, control)?;
        let test = eval::metrics(&outcome.test, &data.test.labels, &outcome.model.classes);
        let [model_file, history_file, curves_file, confusion_file] = self.files;
        model_file.commit(&outcome.model.to_bytes()?)?;
        history_file.commit(history_csv(&outcome.history).as_bytes())?;
        curves_file.commit(&plots::training_curves(&outcome.history)?)?;
        confusion_file.commit(&plots::confusion_matrix(
            &test.confusion,
            &test.classes,
            &format!(
                "Confusion matrix on the test set (accuracy {:.2} %)",
                100.0 * test.accuracy
            ),
        )?)?;
        // The run is complete: its checkpoint has nothing left to give.
        let _ = std::fs::remove_file(&self.outputs.checkpoint);
        Ok(Finished {
            model: outcome.model,
            history: outcome.history,
            test,
            outputs: self.outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_sit_beside_the_model_and_a_checkpoint_names_its_model() {
        let o = Outputs::beside(Path::new("runs/m.safetensors"));
        assert_eq!(o.history, Path::new("runs/m.history.csv"));
        assert_eq!(o.checkpoint, Path::new("runs/m.checkpoint.safetensors"));
        assert_eq!(
            checkpoint::model_path_for(&o.checkpoint).unwrap(),
            Path::new("runs/m.safetensors")
        );
        assert_eq!(checkpoint::model_path_for(Path::new("x.safetensors")), None);
        assert_eq!(
            checkpoint::model_path_for(Path::new(".checkpoint.safetensors")),
            None
        );
    }

    #[test]
    fn a_run_is_refused_before_any_file_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.safetensors");
        let config = TrainConfig {
            batch_size: 60_000,
            ..TrainConfig::default()
        };
        let err = Run::new(crate::model::simple(), config, &out)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("training budget; use --batch-size"), "{err}");
        let config = TrainConfig {
            epochs: 1_000_000_000_000,
            ..TrainConfig::default()
        };
        assert!(Run::new(crate::model::simple(), config, &out).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
