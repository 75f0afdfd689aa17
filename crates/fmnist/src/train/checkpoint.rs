//! Checkpoints: the whole state of a training run after an epoch (weights, optimizer,
//! weight average, random streams, history, the best epoch so far), written atomically
//! so that `fmnist train --resume` continues an interrupted run and ends with the same
//! model as a run that was never interrupted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use nn::{Ema, ModelSpec, Optimizer, Rng, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::history::EpochRecord;
use crate::io::atomic::PendingFile;
use crate::io::bounded;
use crate::model::Classifier;

/// The `format` metadata of a checkpoint file.
pub const FORMAT: &str = "fmnist-checkpoint-1";

/// Largest checkpoint read: weights, best weights, their average and two optimizer
/// moments of the largest network fmnist builds ([`nn::MAX_PARAMS`], 128 MiB each).
const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;

/// The checkpoint beside a model: `model.safetensors` → `model.checkpoint.safetensors`.
pub fn path_for(model: &Path) -> PathBuf {
    model.with_extension("checkpoint.safetensors")
}

/// The model a checkpoint belongs beside: `model.checkpoint.safetensors` →
/// `model.safetensors`; `None` for a file not named like a checkpoint.
pub fn model_path_for(checkpoint: &Path) -> Option<PathBuf> {
    let name = checkpoint.file_name()?.to_str()?;
    let stem = name.strip_suffix(".checkpoint.safetensors")?;
    (!stem.is_empty()).then(|| checkpoint.with_file_name(format!("{stem}.safetensors")))
}

/// The best epoch so far: its score (validation accuracy), number and weights.
#[derive(Clone, Debug)]
pub struct Best {
    /// What model selection compares (validation accuracy, or the epoch without one).
    pub score: f64,
    /// 1-based epoch.
    pub epoch: usize,
    /// The kept tensors, in [`nn::Network::tensors`] order.
    pub weights: Vec<Tensor>,
}

/// A network of an ensemble whose training is finished.
pub struct TrainedMember {
    /// The network with its kept weights, temperature and summary.
    pub model: Classifier,
    /// One record per epoch of its training.
    pub history: Vec<EpochRecord>,
}

/// A training run's state after `epochs_done` epochs of its current network.
pub struct Checkpoint {
    /// The recipe (a resumed run uses it, not the command line's).
    pub config: TrainConfig,
    /// The networks of the ensemble finished before the current one, in order (empty
    /// for a one-network recipe).
    pub earlier: Vec<TrainedMember>,
    /// The architecture.
    pub spec: ModelSpec,
    /// Epochs finished.
    pub epochs_done: usize,
    /// One record per finished epoch.
    pub history: Vec<EpochRecord>,
    /// The best epoch so far.
    pub best: Option<Best>,
    /// The current weights, in [`nn::Network::tensors`] order.
    pub weights: Vec<Tensor>,
    /// The optimizer with its moments.
    pub optimizer: Optimizer,
    /// The weight average, when the recipe keeps one.
    pub ema: Option<Ema>,
    /// Dropout's random stream.
    pub dropout_rng: Rng,
    /// Augmentation's random stream.
    pub augment_rng: Rng,
    /// Worker threads of the run (the same count reproduces it bit for bit).
    pub threads: usize,
    /// Seconds spent training so far.
    pub seconds: f64,
}

/// The small part of the state, stored as JSON in the file's metadata.
#[derive(Serialize, Deserialize)]
struct Meta {
    config: TrainConfig,
    spec: ModelSpec,
    epochs_done: usize,
    history: Vec<EpochRecord>,
    best: Option<(f64, usize)>,
    optimizer: nn::OptimizerConfig,
    optimizer_steps: u64,
    /// Number of first and second moment vectors (0 before the first step).
    moments: usize,
    ema: Option<(f32, u64)>,
    dropout_rng: Rng,
    augment_rng: Rng,
    threads: usize,
    seconds: f64,
    /// The finished networks' descriptions and histories (their tensors are under
    /// `earlier/{i}/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    earlier: Vec<EarlierMeta>,
}

/// A finished network of the ensemble as the metadata holds it.
#[derive(Serialize, Deserialize)]
struct EarlierMeta {
    network: std::collections::BTreeMap<String, String>,
    history: Vec<EpochRecord>,
}

impl Checkpoint {
    /// The file's bytes.
    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let net = self.spec.build(&mut Rng::new(0))?;
        let names: Vec<String> = net.tensors().into_iter().map(|(n, _)| n).collect();
        let (first, second) = self.optimizer.moments();
        let meta = Meta {
            config: self.config.clone(),
            spec: self.spec.clone(),
            epochs_done: self.epochs_done,
            history: self.history.clone(),
            best: self.best.as_ref().map(|b| (b.score, b.epoch)),
            optimizer: *self.optimizer.config(),
            optimizer_steps: self.optimizer.steps(),
            moments: first.len(),
            ema: self.ema.as_ref().map(|e| (e.decay(), e.updates())),
            dropout_rng: self.dropout_rng.clone(),
            augment_rng: self.augment_rng.clone(),
            threads: self.threads,
            seconds: self.seconds,
            earlier: self
                .earlier
                .iter()
                .map(|m| {
                    Ok(EarlierMeta {
                        network: m.model.description()?,
                        history: m.history.clone(),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let mut entries: Vec<(String, &[usize], &[f32])> = Vec::new();
        let earlier: Vec<Vec<(String, &Tensor)>> =
            self.earlier.iter().map(|m| m.model.net.tensors()).collect();
        for (i, tensors) in earlier.iter().enumerate() {
            for (name, t) in tensors {
                entries.push((format!("earlier/{i}/{name}"), t.shape(), t.data()));
            }
        }
        for (name, t) in names.iter().zip(&self.weights) {
            entries.push((format!("model/{name}"), t.shape(), t.data()));
        }
        if let Some(best) = &self.best {
            for (name, t) in names.iter().zip(&best.weights) {
                entries.push((format!("best/{name}"), t.shape(), t.data()));
            }
        }
        if let Some(ema) = &self.ema {
            for (name, t) in names.iter().zip(ema.tensors()) {
                entries.push((format!("ema/{name}"), t.shape(), t.data()));
            }
        }
        // Moments are flat: each needs a one-element shape that outlives `entries`.
        let lengths: Vec<[[usize; 1]; 2]> = first
            .iter()
            .zip(second)
            .map(|(m, v)| [[m.len()], [v.len()]])
            .collect();
        for (i, ((m, v), [m_len, v_len])) in first.iter().zip(second).zip(&lengths).enumerate() {
            entries.push((format!("optimizer/{i}/first"), m_len, m));
            entries.push((format!("optimizer/{i}/second"), v_len, v));
        }
        let mut metadata = HashMap::new();
        metadata.insert("format".to_string(), FORMAT.to_string());
        metadata.insert("state".to_string(), serde_json::to_string(&meta)?);
        crate::io::tensor_file::f32_safetensors(&entries, metadata)
    }

    /// Writes the checkpoint to `path` atomically: a crash at any moment leaves either
    /// the previous checkpoint or this one, never a mixture.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = self.to_bytes()?;
        let mut pending = PendingFile::reserve(path)?;
        if stall_requested(self.epochs_done) {
            // Fault injection for the tests: half a file, then wait to be killed.
            pending.write_unfinished(&bytes[..bytes.len() / 2])?;
            eprintln!("fault injection: stalled writing {}", path.display());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        pending.commit(&bytes)
    }

    /// Reads a checkpoint file, checking everything against its architecture.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = bounded::read(
            path,
            MAX_CHECKPOINT_BYTES,
            "larger than any fmnist checkpoint",
        )?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("{} is not a usable fmnist checkpoint", path.display()))
    }

    /// Parses a checkpoint file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("not a safetensors file ({e})"))?;
        let metadata = header
            .metadata()
            .as_ref()
            .ok_or_else(|| anyhow!("a safetensors file, but not a checkpoint (no metadata)"))?;
        match metadata.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) if f.starts_with("fmnist-model") => {
                bail!("this is a model file, not a checkpoint")
            }
            Some(f) => bail!("format \"{f}\" is not {FORMAT}"),
            None => bail!("a safetensors file, but not a checkpoint (no \"format\" metadata)"),
        }
        let meta: Meta = serde_json::from_str(
            metadata
                .get("state")
                .ok_or_else(|| anyhow!("metadata has no \"state\""))?,
        )
        .context("training state")?;
        // The same checks as the command line's flags, reported as a damaged file.
        meta.config
            .validate()
            .map_err(|e| anyhow!("its recipe is refused: {e}"))?;
        if meta.history.len() != meta.epochs_done || meta.epochs_done > meta.config.epochs {
            bail!("inconsistent epoch count");
        }
        if meta
            .best
            .is_some_and(|(_, e)| e == 0 || e > meta.epochs_done)
        {
            bail!("inconsistent best epoch");
        }
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| anyhow!("corrupt tensor data ({e})"))?;
        let read = |name: &str, shape: &[usize]| -> anyhow::Result<Vec<f32>> {
            let view = file
                .tensor(name)
                .map_err(|_| anyhow!("tensor {name} is missing"))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                bail!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                );
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if data.iter().any(|v| !v.is_finite()) {
                bail!("tensor {name} holds non-finite values");
            }
            Ok(data)
        };
        let mut net = meta.spec.build(&mut Rng::new(0))?;
        let layout: Vec<(String, Vec<usize>)> = net
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        let tensors = |prefix: &str| -> anyhow::Result<Vec<Tensor>> {
            layout
                .iter()
                .map(|(name, shape)| {
                    Ok(Tensor::from_vec(
                        shape,
                        read(&format!("{prefix}/{name}"), shape)?,
                    )?)
                })
                .collect()
        };
        let weights = tensors("model")?;
        let best = match meta.best {
            Some((score, epoch)) => Some(Best {
                score,
                epoch,
                weights: tensors("best")?,
            }),
            None => None,
        };
        let ema = match meta.ema {
            Some((decay, updates)) => Some(Ema::restore(decay, updates, tensors("ema")?)),
            None => None,
        };
        let sizes: Vec<usize> = net.params_mut().iter().map(|p| p.value.len()).collect();
        if meta.moments != 0 && meta.moments != sizes.len() {
            bail!(
                "{} optimizer moments for {} parameters",
                meta.moments,
                sizes.len()
            );
        }
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for (i, &n) in sizes.iter().enumerate().take(meta.moments) {
            first.push(read(&format!("optimizer/{i}/first"), &[n])?);
            second.push(read(&format!("optimizer/{i}/second"), &[n])?);
        }
        if meta.earlier.len() >= meta.config.members {
            bail!(
                "{} finished networks of an ensemble of {}",
                meta.earlier.len(),
                meta.config.members
            );
        }
        let mut budget = nn::MAX_PARAMS;
        let mut earlier_names = Vec::new();
        let mut earlier = Vec::new();
        for (i, m) in meta.earlier.into_iter().enumerate() {
            let model = Classifier::network_from(
                &m.network,
                &file,
                &format!("earlier/{i}/"),
                &mut budget,
                &mut earlier_names,
            )
            .with_context(|| format!("finished network {} of the ensemble", i + 1))?;
            earlier.push(TrainedMember {
                model,
                history: m.history,
            });
        }
        let expected = layout.len()
            * (1 + usize::from(best.is_some()) + usize::from(ema.is_some()))
            + 2 * meta.moments
            + earlier_names.len();
        if file.len() != expected {
            bail!("{} tensors, expected {expected}", file.len());
        }
        Ok(Self {
            optimizer: Optimizer::restore(meta.optimizer, meta.optimizer_steps, first, second),
            config: meta.config,
            earlier,
            spec: meta.spec,
            epochs_done: meta.epochs_done,
            history: meta.history,
            best,
            weights,
            ema,
            dropout_rng: meta.dropout_rng,
            augment_rng: meta.augment_rng,
            threads: meta.threads,
            seconds: meta.seconds,
        })
    }
}

/// Whether the fault-injection variable `FMNIST_FAULT_STALL_CHECKPOINT` asks to stall the
/// checkpoint of this epoch (the tests use it to kill a run in the middle of a write).
fn stall_requested(epoch: usize) -> bool {
    std::env::var("FMNIST_FAULT_STALL_CHECKPOINT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let spec = crate::model::architectures::preset("simple").unwrap();
        let net = spec.build(&mut Rng::new(1)).unwrap();
        let weights = net.snapshot();
        let sizes: Vec<usize> = weights.iter().map(|t| t.len()).collect();
        let config = TrainConfig {
            ema: Some(0.9),
            ..TrainConfig::default()
        };
        let params = spec.build(&mut Rng::new(1)).unwrap().params_mut().len();
        let moments: Vec<Vec<f32>> = (0..params).map(|i| vec![i as f32; sizes[i]]).collect();
        Checkpoint {
            optimizer: Optimizer::restore(config.optimizer, 3, moments.clone(), moments),
            config,
            ema: Some(Ema::restore(0.9, 3, weights.clone())),
            best: Some(Best {
                score: 0.5,
                epoch: 1,
                weights: weights.clone(),
            }),
            weights,
            spec,
            epochs_done: 1,
            earlier: Vec::new(),
            history: vec![EpochRecord {
                member: 1,
                epoch: 1,
                train_loss: 1.0,
                train_accuracy: 0.5,
                val_loss: f64::NAN,
                val_accuracy: f64::NAN,
                lr: 1e-3,
                seconds: 1.0,
                train_images_per_s: 100.0,
            }],
            dropout_rng: Rng::new(5),
            augment_rng: Rng::new(6),
            threads: 2,
            seconds: 1.5,
        }
    }

    #[test]
    fn a_checkpoint_reads_back_to_the_same_bytes() {
        let bytes = sample().to_bytes().unwrap();
        let back = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back.epochs_done, 1);
        assert!(back.history[0].val_accuracy.is_nan());
        assert_eq!(back.optimizer.steps(), 3);
        assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn an_ensembles_checkpoint_carries_its_finished_networks() {
        let mut ck = sample();
        ck.config.members = 2;
        let mut done = Classifier::new(crate::model::simple(), 9).unwrap();
        done.inference.temperature = 0.8;
        let history = ck.history.clone();
        ck.earlier.push(TrainedMember {
            model: done,
            history,
        });
        let bytes = ck.to_bytes().unwrap();
        let back = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back.earlier.len(), 1);
        assert_eq!(back.earlier[0].model.inference.temperature, 0.8);
        assert!(back.to_bytes().unwrap() == bytes);
        // As many finished networks as the recipe has is no run to continue.
        let mut full = Checkpoint::from_bytes(&bytes).unwrap();
        full.config.members = 1;
        let e = format!(
            "{:#}",
            Checkpoint::from_bytes(&full.to_bytes().unwrap())
                .err()
                .unwrap()
        );
        assert!(e.contains("1 finished networks of an ensemble of 1"), "{e}");
    }

    #[test]
    fn a_checkpoint_resumes_only_in_a_precision_this_cpu_runs() {
        // Written on another machine, a bf16 recipe loads where its instruction set runs
        // and is otherwise refused, naming it; an unknown precision is a damaged file.
        for isa in [nn::Bf16Isa::Amx, nn::Bf16Isa::Avx512Bf16] {
            let mut ckpt = sample();
            ckpt.config.precision = nn::Precision::Bf16(isa);
            let read = Checkpoint::from_bytes(&ckpt.to_bytes().unwrap());
            if isa.is_available() {
                assert_eq!(read.unwrap().config.precision, nn::Precision::Bf16(isa));
            } else {
                let e = format!("{:#}", read.err().unwrap());
                assert!(
                    e.contains(&format!("bf16-{} is not available", isa.name())),
                    "{e}"
                );
            }
        }
        let mut bytes = sample().to_bytes().unwrap();
        let at = bytes.windows(9).position(|w| w == b"precision").unwrap();
        let fp32 = at + bytes[at..].windows(4).position(|w| w == b"fp32").unwrap();
        bytes[fp32..fp32 + 4].copy_from_slice(b"fp16");
        let e = format!("{:#}", Checkpoint::from_bytes(&bytes).err().unwrap());
        assert!(e.contains("unknown precision \"fp16\""), "{e}");
    }

    #[test]
    fn damaged_checkpoints_are_errors_not_panics() {
        let bytes = sample().to_bytes().unwrap();
        for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                Checkpoint::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A flipped byte in the JSON state or in the tensor data.
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut bad = bytes.clone();
        bad[8 + header / 2] ^= 0x55;
        assert!(Checkpoint::from_bytes(&bad).is_err());
        let mut nan = bytes.clone();
        let end = nan.len();
        nan[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Checkpoint::from_bytes(&nan).is_err());
    }
}
