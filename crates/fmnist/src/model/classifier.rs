//! A trained classifier and its file: safetensors weights with the architecture, class
//! names, input normalisation and training summary in the metadata, so one file is the
//! whole model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use nn::{Mode, ModelSpec, Network, Rng, Tensor};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::data::{CLASS_NAMES, Normalization, PIXELS};
use crate::io::{atomic, bounded};
use crate::model::architectures as models;
use crate::model::summary;
use crate::train::augment;

/// The metadata value that marks an fmnist model file (and its format version).
pub const FORMAT: &str = "fmnist-model/1";
/// Model files larger than this are refused before reading (the largest network fmnist
/// builds, [`nn::MAX_PARAMS`] weights, takes 128 MiB).
const MAX_MODEL_BYTES: u64 = 256 << 20;
/// Longest class name in a model file.
const MAX_CLASS_NAME: usize = 64;
/// Most networks one model file may hold (an ensemble; see [`Classifier::members`]).
pub const MAX_MEMBERS: usize = 8;
/// Images per forward pass when classifying many (the training batch, so buffers are
/// shared): larger batches were no faster and doubled peak memory.
const INFER_BATCH: usize = 128;

/// How a model was trained (stored in its file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSummary {
    /// Epochs run.
    pub epochs: usize,
    /// Epochs planned (more than run when training stopped early).
    pub planned_epochs: usize,
    /// The epoch whose weights were kept (best validation accuracy), 1-based.
    pub best_epoch: usize,
    /// Validation accuracy of the kept weights (NaN, stored as null, when unknown: an
    /// imported model).
    #[serde(with = "crate::train::history::nan_as_null")]
    pub val_accuracy: f64,
    /// Test accuracy of the kept weights, measured once after training (NaN, stored
    /// as null, when training had no test set).
    #[serde(with = "crate::train::history::nan_as_null")]
    pub test_accuracy: f64,
    /// For an ensemble trained by fmnist, on its first network: the whole ensemble's
    /// test accuracy (`test_accuracy` is the network's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_test_accuracy: Option<f64>,
    /// Training images per epoch.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f32,
    /// Optimizer settings, as JSON.
    pub optimizer: serde_json::Value,
    /// Learning-rate schedule, as JSON.
    pub schedule: serde_json::Value,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Training-image augmentation.
    pub augment: crate::train::augment::Augment,
    /// Weight-averaging decay, if the average was kept.
    pub ema: Option<f32>,
    /// Whether validation and test used flip test-time augmentation.
    pub flip_tta: bool,
    /// Seed.
    pub seed: u64,
    /// Threads used.
    pub threads: usize,
    /// Wall-clock seconds of training (including per-epoch validation).
    pub seconds: f64,
    /// fmnist version that trained it (or imported it).
    pub version: String,
    /// Where the weights came from when they were imported rather than trained here
    /// (`"PyTorch state_dict model.pt"`); absent for models trained by fmnist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

/// How a classifier turns images into probabilities (stored in its file).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inference {
    /// Test-time augmentation: average the probabilities of each image and its mirror
    /// image (twice the work; worth it for models trained with flips).
    pub flip_tta: bool,
    /// Logits are divided by this before the softmax, so that a probability of 0.8
    /// is right about 80 % of the time (fitted on the validation split after training;
    /// 1 in files from before it was fitted).
    pub temperature: f32,
}

impl Default for Inference {
    fn default() -> Self {
        Self {
            flip_tta: false,
            temperature: 1.0,
        }
    }
}

/// Range of ln(temperature) searched when calibrating.
const LN_TEMPERATURE: (f64, f64) = (-2.0, 2.5);

/// Softmax of `logits / temperature`, row by row (`c` classes), averaged with that of
/// `mirrored` when given.
fn tempered_probabilities(
    logits: &[f32],
    mirrored: Option<&[f32]>,
    c: usize,
    temperature: f32,
) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    let mut other = vec![0.0; c];
    for (i, (row, o)) in logits
        .chunks_exact(c)
        .zip(out.chunks_exact_mut(c))
        .enumerate()
    {
        nn::loss::softmax_row(row, temperature, o);
        if let Some(m) = mirrored {
            nn::loss::softmax_row(&m[i * c..][..c], temperature, &mut other);
            for (a, &b) in o.iter_mut().zip(&other) {
                *a = 0.5 * (*a + b);
            }
        }
    }
    out
}

/// A network ready to classify Fashion-MNIST images.
pub struct Classifier {
    /// The architecture.
    pub spec: ModelSpec,
    /// The network with its weights.
    pub net: Network,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// How pixels become inputs.
    pub normalization: Normalization,
    /// How it was trained.
    pub summary: TrainingSummary,
    /// How it classifies.
    pub inference: Inference,
    /// The other networks of an ensemble (empty for one network): [`Self::probabilities`]
    /// averages theirs with this one's. Each has its own architecture, normalisation,
    /// summary and inference settings, and no members of its own.
    pub members: Vec<Classifier>,
    input: Tensor,
    flipped: Vec<u8>,
    rng: Rng,
}

impl Classifier {
    /// A freshly initialised classifier for `spec` (weights drawn from `seed`).
    pub fn new(spec: ModelSpec, seed: u64) -> anyhow::Result<Self> {
        let net = models::build_checked(&spec, &mut Rng::new(seed).fork(0))?;
        Ok(Self {
            spec,
            net,
            classes: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            normalization: Normalization::default(),
            summary: TrainingSummary::default(),
            inference: Inference::default(),
            members: Vec::new(),
            input: Tensor::default(),
            flipped: Vec::new(),
            rng: Rng::new(0),
        })
    }

    /// Class probabilities (`n × 10`, row after row) for `images` (u8, 784 per image);
    /// for an ensemble, the mean of its networks' probabilities.
    pub fn probabilities(&mut self, images: &[u8]) -> Vec<f32> {
        let own = self.own_probabilities(images);
        average_probabilities(
            std::iter::once(own)
                .chain(self.members.iter_mut().map(|m| m.own_probabilities(images))),
        )
    }

    /// This network's probabilities, without its members'.
    fn own_probabilities(&mut self, images: &[u8]) -> Vec<f32> {
        let (logits, mirrored) = self.view_logits(images);
        tempered_probabilities(
            &logits,
            mirrored.as_deref(),
            self.classes.len(),
            self.inference.temperature,
        )
    }

    /// How many networks classify: 1, or an ensemble's size.
    pub fn networks(&self) -> usize {
        1 + self.members.len()
    }

    /// This network and its members, in the order their probabilities are averaged.
    pub fn each_network(&self) -> impl Iterator<Item = &Classifier> {
        std::iter::once(self).chain(&self.members)
    }

    /// Weights of every network.
    pub fn num_params(&self) -> usize {
        self.each_network().map(|m| m.net.num_params()).sum()
    }

    /// Sets the arithmetic of every network's inference.
    pub fn set_precision(&mut self, precision: nn::Precision) {
        self.net.set_precision(precision);
        for m in &mut self.members {
            m.net.set_precision(precision);
        }
    }

    /// The architecture's name, or "custom"; an ensemble's says how many networks.
    pub fn describe(&self) -> String {
        if self.members.is_empty() {
            return summary::name(&self.spec).to_string();
        }
        let mut names: Vec<&str> = self
            .each_network()
            .map(|m| summary::name(&m.spec))
            .collect();
        names.dedup();
        if names.len() == 1 {
            format!("ensemble of {} {}", self.networks(), names[0])
        } else {
            format!("ensemble of {}", names.join(" + "))
        }
    }

    /// The logits of `images`, and of their mirror images when flip test-time
    /// augmentation is on (`n × 10` each).
    fn view_logits(&mut self, images: &[u8]) -> (Vec<f32>, Option<Vec<f32>>) {
        let rows = images.len() / PIXELS * self.classes.len();
        let mut out = Vec::with_capacity(rows);
        let mut mirrored = self.inference.flip_tta.then(|| Vec::with_capacity(rows));
        for chunk in images.chunks(INFER_BATCH * PIXELS) {
            self.normalization.batch_into(chunk, &mut self.input);
            let logits = self.net.forward(&self.input, Mode::Eval, &mut self.rng);
            out.extend_from_slice(logits.data());
            if let Some(m) = mirrored.as_mut() {
                self.flipped.clear();
                self.flipped.extend_from_slice(chunk);
                augment::flip_images(&mut self.flipped);
                self.normalization
                    .batch_into(&self.flipped, &mut self.input);
                let logits = self.net.forward(&self.input, Mode::Eval, &mut self.rng);
                m.extend_from_slice(logits.data());
            }
        }
        (out, mirrored)
    }

    /// Fits [`Inference::temperature`] to labelled images (the validation split): the
    /// one that minimises their cross-entropy, by golden-section search on its
    /// logarithm. Returns it; without images the temperature stays as it is. An
    /// ensemble's members keep theirs (each fitted when it was trained).
    pub fn calibrate(&mut self, images: &[u8], labels: &[usize]) -> f32 {
        if labels.is_empty() {
            return self.inference.temperature;
        }
        let c = self.classes.len();
        let (logits, mirrored) = self.view_logits(images);
        let loss = |ln_t: f64| -> f64 {
            let p = tempered_probabilities(&logits, mirrored.as_deref(), c, ln_t.exp() as f32);
            labels
                .iter()
                .enumerate()
                .map(|(i, &l)| -(p[i * c + l].max(1e-12) as f64).ln())
                .sum::<f64>()
        };
        let phi = (5f64.sqrt() - 1.0) / 2.0;
        let (mut a, mut b) = LN_TEMPERATURE;
        let (mut x1, mut x2) = (b - phi * (b - a), a + phi * (b - a));
        let (mut f1, mut f2) = (loss(x1), loss(x2));
        for _ in 0..40 {
            if f1 <= f2 {
                (b, x2, f2) = (x2, x1, f1);
                x1 = b - phi * (b - a);
                f1 = loss(x1);
            } else {
                (a, x1, f1) = (x1, x2, f2);
                x2 = a + phi * (b - a);
                f2 = loss(x2);
            }
        }
        self.inference.temperature = (0.5 * (a + b)).exp() as f32;
        self.inference.temperature
    }

    /// The metadata that describes this network (without members): what
    /// [`Self::network_from`] reads back.
    pub(crate) fn description(&self) -> anyhow::Result<BTreeMap<String, String>> {
        // Sorted, so that the same model always gives the same bytes.
        let mut meta = BTreeMap::new();
        meta.insert(
            "architecture".to_string(),
            serde_json::to_string(&self.spec)?,
        );
        meta.insert(
            "normalization".to_string(),
            serde_json::to_string(&self.normalization)?,
        );
        meta.insert(
            "training".to_string(),
            serde_json::to_string(&self.summary)?,
        );
        meta.insert(
            "inference".to_string(),
            serde_json::to_string(&self.inference)?,
        );
        Ok(meta)
    }

    /// The file's bytes. An ensemble's first network is stored as a lone network is; each
    /// member's description goes in the `members` metadata and its tensors under
    /// `member{i}/` (so a reader that knows no ensembles refuses the file).
    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut meta: HashMap<String, String> = self.description()?.into_iter().collect();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("classes".to_string(), serde_json::to_string(&self.classes)?);
        if self.members.iter().any(|m| !m.members.is_empty()) {
            bail!("an ensemble's networks cannot be ensembles themselves: flatten its members");
        }
        if !self.members.is_empty() {
            let members = self
                .members
                .iter()
                .map(|m| m.description())
                .collect::<anyhow::Result<Vec<_>>>()?;
            meta.insert("members".to_string(), serde_json::to_string(&members)?);
        }
        let mut tensors = Vec::new();
        for (i, m) in self.each_network().enumerate() {
            for (name, t) in m.net.tensors() {
                tensors.push((member_prefix(i) + &name, t));
            }
        }
        let entries: Vec<(String, &[usize], &[f32])> = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.shape(), t.data()))
            .collect();
        crate::io::tensor_file::f32_safetensors(&entries, meta)
    }

    /// Saves to `path` atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        atomic::write(path, &self.to_bytes()?)
    }

    /// Loads a model file, checking its metadata and every tensor's shape.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = bounded::read(path, MAX_MODEL_BYTES, "larger than any fmnist model")?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("{} is not a usable fmnist model", path.display()))
    }

    /// Parses a model file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("not a safetensors file ({e})"))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| anyhow!("a safetensors file, but not an fmnist model (no metadata)"))?;
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => bail!("format \"{f}\" is not {FORMAT}"),
            None => bail!("a safetensors file, but not an fmnist model (no \"format\" metadata)"),
        }
        let classes: Vec<String> = serde_json::from_str(
            meta.get("classes")
                .ok_or_else(|| anyhow!("metadata has no \"classes\""))?,
        )
        .context("classes")?;
        if classes.len() != CLASS_NAMES.len() {
            bail!(
                "{} class names, expected {}",
                classes.len(),
                CLASS_NAMES.len()
            );
        }
        // Class names are printed to terminals and pages: no escape sequences.
        for (label, name) in classes.iter().enumerate() {
            if name.trim().is_empty()
                || name.chars().count() > MAX_CLASS_NAME
                || name.chars().any(char::is_control)
            {
                bail!(
                    "class name {label} ({:?}) must be 1 to {MAX_CLASS_NAME} printable characters",
                    name.chars().take(MAX_CLASS_NAME).collect::<String>()
                );
            }
        }
        let members: Vec<BTreeMap<String, String>> = match meta.get("members") {
            Some(text) => serde_json::from_str(text).context("ensemble members")?,
            None => Vec::new(),
        };
        if members.len() + 1 > MAX_MEMBERS {
            bail!(
                "an ensemble of {} networks; at most {MAX_MEMBERS} are allowed",
                members.len() + 1
            );
        }
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| anyhow!("corrupt tensor data ({e})"))?;
        // Every network's size is known from its architecture before any is built: the
        // whole ensemble is held to one network's budget.
        let mut budget = nn::MAX_PARAMS;
        let mut expected: Vec<String> = Vec::new();
        let first: BTreeMap<String, String> =
            meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut model = Self::network_from(&first, &file, "", &mut budget, &mut expected)?;
        for (i, description) in members.iter().enumerate() {
            let prefix = member_prefix(i + 1);
            let mut member =
                Self::network_from(description, &file, &prefix, &mut budget, &mut expected)
                    .with_context(|| format!("network {} of the ensemble", i + 2))?;
            member.classes = classes.clone();
            model.members.push(member);
        }
        model.classes = classes;
        if let Some(extra) = file
            .names()
            .into_iter()
            .find(|n| !expected.iter().any(|e| e == *n))
        {
            bail!("unexpected tensor {extra} for this architecture");
        }
        Ok(model)
    }

    /// One network of a file (with the default class names): its description (`meta`,
    /// as [`Self::description`] writes it) checked and its tensors read from `file` under
    /// `prefix`, their names added to `expected`, its weights counted against `budget`.
    pub(crate) fn network_from(
        meta: &BTreeMap<String, String>,
        file: &SafeTensors,
        prefix: &str,
        budget: &mut usize,
        expected: &mut Vec<String>,
    ) -> anyhow::Result<Self> {
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| anyhow!("metadata has no \"{k}\""))
        };
        let spec = ModelSpec::from_json(get("architecture")?).context("architecture")?;
        let normalization: Normalization =
            serde_json::from_str(get("normalization")?).context("normalization")?;
        normalization.validate()?;
        let summary: TrainingSummary =
            serde_json::from_str(get("training")?).context("training summary")?;
        // Files from before test-time augmentation have no "inference" entry.
        let inference: Inference = match meta.get("inference") {
            Some(text) => serde_json::from_str(text).context("inference settings")?,
            None => Inference::default(),
        };
        // Logits are divided by it: zero, negative or not a number would make every
        // probability meaningless.
        if !(inference.temperature.is_finite() && inference.temperature > 0.0) {
            bail!(
                "inference temperature {} is not a positive number",
                inference.temperature
            );
        }
        // The tensors the file holds for this network bound its size before it is built.
        let declared: usize = file
            .tensors()
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|(_, view)| view.shape().iter().product::<usize>())
            .sum();
        if declared > *budget {
            bail!(
                "the ensemble's networks hold too many weights (at most {} in all)",
                nn::MAX_PARAMS
            );
        }
        let mut model = Self::new(spec, 0)?;
        if model.net.num_params() > *budget {
            bail!(
                "{} weights is too many: the ensemble's networks may have {} in all",
                model.net.num_params(),
                nn::MAX_PARAMS
            );
        }
        *budget -= model.net.num_params();
        model.normalization = normalization;
        model.summary = summary;
        model.inference = inference;
        for (name, dst) in model.net.tensors_mut() {
            let name = format!("{prefix}{name}");
            let view = file
                .tensor(&name)
                .map_err(|_| anyhow!("tensor {name} is missing"))?;
            if view.dtype() != Dtype::F32 {
                bail!("tensor {name} is {:?}, expected F32", view.dtype());
            }
            if view.shape() != dst.shape() {
                bail!(
                    "tensor {name} has shape {:?}, the architecture needs {:?}",
                    view.shape(),
                    dst.shape()
                );
            }
            for (v, b) in dst.data_mut().iter_mut().zip(view.data().chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            if dst.data().iter().any(|v| !v.is_finite()) {
                bail!("tensor {name} holds non-finite values");
            }
            expected.push(name);
        }
        Ok(model)
    }
}

/// The mean of several models' probabilities of the same images (each `n × classes`, row
/// after row), summed in order and divided by their count: how an ensemble reads, whether
/// its networks share a file or come from several.
pub fn average_probabilities(all: impl IntoIterator<Item = Vec<f32>>) -> Vec<f32> {
    let mut all = all.into_iter();
    let Some(mut sum) = all.next() else {
        return Vec::new();
    };
    let mut n = 1;
    for probabilities in all {
        for (s, p) in sum.iter_mut().zip(probabilities) {
            *s += p;
        }
        n += 1;
    }
    if n > 1 {
        sum.iter_mut().for_each(|s| *s /= n as f32);
    }
    sum
}

/// Where network `index` of a model file keeps its tensors: the first at the top, as a
/// lone network's; members under `member{index}/`.
fn member_prefix(index: usize) -> String {
    if index == 0 {
        String::new()
    } else {
        format!("member{index}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temperature_is_fitted_to_the_labels_and_kept_in_the_file() {
        let mut model = Classifier::new(crate::model::architectures::simple(), 5).unwrap();
        let mut rng = Rng::new(9);
        let images: Vec<u8> = (0..64 * PIXELS)
            .map(|_| (rng.next_u32() >> 24) as u8)
            .collect();
        let before = model.probabilities(&images);
        // Labels the model's own answers: it should be surer than it is (T < 1).
        let own: Vec<usize> = before.chunks_exact(10).map(nn::loss::argmax).collect();
        let sharp = model.calibrate(&images, &own);
        assert!(sharp < 0.5, "{sharp}");
        // Labels its least likely class: it should be less sure (T > 1).
        let wrong: Vec<usize> = before
            .chunks_exact(10)
            .map(|row| nn::loss::argmax(&row.iter().map(|p| -p).collect::<Vec<_>>()))
            .collect();
        let soft = model.calibrate(&images, &wrong);
        assert!(soft > 2.0, "{soft}");
        // A temperature changes probabilities, never the best class.
        let after = model.probabilities(&images);
        let best: Vec<usize> = after.chunks_exact(10).map(nn::loss::argmax).collect();
        assert_eq!(best, own);
        let back = Classifier::from_bytes(&model.to_bytes().unwrap()).unwrap();
        assert_eq!(back.inference.temperature, soft);
        assert_eq!(model.calibrate(&[], &[]), soft, "no images: kept");
        // Files from before calibration divide by 1.
        let old: Inference = serde_json::from_str(r#"{"flip_tta":true}"#).unwrap();
        assert_eq!(old.temperature, 1.0);
        // A file whose temperature would wreck every probability is refused.
        for bad in [0.0, -1.0, f32::INFINITY] {
            let mut hostile = Classifier::from_bytes(&model.to_bytes().unwrap()).unwrap();
            hostile.inference.temperature = bad;
            let err = Classifier::from_bytes(&hostile.to_bytes().unwrap())
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("inference"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_ensemble_file_holds_every_network_and_averages_their_probabilities() {
        let mut rng = Rng::new(4);
        let images: Vec<u8> = (0..24 * PIXELS)
            .map(|_| (rng.next_u32() >> 24) as u8)
            .collect();
        let mut a = Classifier::new(crate::model::simple(), 1).unwrap();
        let mut b = Classifier::new(crate::model::architectures::simple_bn(), 2).unwrap();
        b.inference = Inference {
            flip_tta: true,
            temperature: 0.7,
        };
        b.normalization = Normalization {
            mean: 0.3,
            std: 0.4,
        };
        let (pa, pb) = (a.probabilities(&images), b.probabilities(&images));
        let params = a.net.num_params() + b.net.num_params();
        a.members.push(b);
        assert_eq!(a.networks(), 2);
        assert_eq!(a.num_params(), params);
        assert_eq!(a.describe(), "ensemble of simple + simple-bn");
        let mean: Vec<f32> = pa.iter().zip(&pb).map(|(x, y)| (x + y) / 2.0).collect();
        assert_eq!(a.probabilities(&images), mean);
        // The same arithmetic as several model files given to `eval`.
        assert_eq!(average_probabilities([pa.clone(), pb.clone()]), mean);
        assert_eq!(average_probabilities([pa.clone()]), pa);
        assert!(average_probabilities([]).is_empty());
        // Each network keeps its own settings through the file, and the file its bytes.
        let bytes = a.to_bytes().unwrap();
        let mut back = Classifier::from_bytes(&bytes).unwrap();
        assert!(back.to_bytes().unwrap() == bytes);
        for _ in 0..4 {
            assert!(a.to_bytes().unwrap() == bytes, "the same bytes every time");
        }
        assert_eq!(back.members[0].inference.temperature, 0.7);
        assert_eq!(back.members[0].normalization.std, 0.4);
        assert_eq!(back.probabilities(&images), mean);
        // An older reader's check: the first network's tensors are where a lone
        // network's are; the member's sit apart.
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert!(file.names().iter().any(|n| n.starts_with("member1/")));
        // Nested ensembles would lose their inner networks: refused.
        let inner = Classifier::from_bytes(&bytes).unwrap();
        back.members[0].members.push(inner);
        let e = back.to_bytes().err().unwrap().to_string();
        assert!(e.contains("cannot be ensembles themselves"), "{e}");
    }

    #[test]
    fn a_damaged_ensemble_is_refused_at_load() {
        let mut model = Classifier::new(crate::model::simple(), 1).unwrap();
        model
            .members
            .push(Classifier::new(crate::model::simple(), 2).unwrap());
        let bytes = model.to_bytes().unwrap();
        // Too many networks, declared in the metadata, is refused before any is built.
        let crowd = edit_header(&bytes, |h| {
            let meta = &mut h["__metadata__"]["members"];
            let one: Vec<serde_json::Value> = serde_json::from_str(meta.as_str().unwrap()).unwrap();
            *meta = serde_json::to_string(&vec![one[0].clone(); MAX_MEMBERS])
                .unwrap()
                .into();
        });
        let e = refused(&crowd);
        assert!(e.contains("at most 8"), "{e}");
        // A member whose tensors are gone, or whose description is, is named.
        let missing = edit_header(&bytes, |h| {
            let map = h.as_object_mut().unwrap();
            let name = map
                .keys()
                .find(|k| k.starts_with("member1/"))
                .unwrap()
                .clone();
            let renamed = name.replace("member1/", "member9/");
            let entry = map.remove(&name).unwrap();
            map.insert(renamed, entry);
        });
        let e = refused(&missing);
        assert!(e.contains("network 2 of the ensemble"), "{e}");
        assert!(e.contains("is missing"), "{e}");
        let bare = edit_header(&bytes, |h| {
            h["__metadata__"]["members"] = "[{}]".into();
        });
        let e = refused(&bare);
        assert!(e.contains("network 2") && e.contains("architecture"), "{e}");
    }

    #[test]
    fn the_same_model_gives_the_same_file_bytes() {
        let model = Classifier::new(crate::model::architectures::simple(), 3).unwrap();
        let bytes = model.to_bytes().unwrap();
        // Each serialisation draws a fresh hash order for the metadata.
        for _ in 0..8 {
            assert_eq!(model.to_bytes().unwrap(), bytes);
        }
        let back = Classifier::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn training_without_a_test_set_stores_no_test_accuracy() {
        use crate::data::{Dataset, FashionMnist, PIXELS};
        let mut rng = nn::Rng::new(5);
        let n = 64;
        let images: Vec<u8> = (0..n * PIXELS)
            .map(|_| (rng.next_u32() % 256) as u8)
            .collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        assert!(Dataset::from_raw(images[..PIXELS + 1].to_vec(), vec![0]).is_err());
        assert!(Dataset::from_raw(images.clone(), labels[..n - 1].to_vec()).is_err());
        assert!(Dataset::from_raw(images.clone(), vec![10; n]).is_err());
        let train = Dataset::from_raw(images, labels).unwrap();
        let data = FashionMnist::in_memory(train, Dataset::default());
        let cfg = crate::train::TrainConfig {
            epochs: 1,
            batch_size: 16,
            val_size: 16,
            ..Default::default()
        };
        let mut silent = crate::train::Silent;
        let out = crate::train::train(&data, crate::model::simple(), &cfg, &mut silent).unwrap();
        assert!(out.test.accuracy.is_nan() && out.model.summary.test_accuracy.is_nan());
        assert_eq!(out.model.summary.train_images, 48);
        // Stored as null, read back as NaN.
        let back = Classifier::from_bytes(&out.model.to_bytes().unwrap()).unwrap();
        assert!(back.summary.test_accuracy.is_nan());
    }

    /// `bytes` with its safetensors header changed by `edit` (the data left as it is).
    fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        edit(&mut header);
        let mut json = serde_json::to_vec(&header).unwrap();
        json.resize(json.len().next_multiple_of(8), b' ');
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend(json);
        out.extend_from_slice(&bytes[8 + len..]);
        out
    }

    fn refused(bytes: &[u8]) -> String {
        match Classifier::from_bytes(bytes) {
            Ok(_) => panic!("a damaged model loaded"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn damaged_metadata_is_refused_at_load() {
        let good = Classifier::new(crate::model::simple(), 3).unwrap();
        let bytes = good.to_bytes().unwrap();
        Classifier::from_bytes(&bytes).unwrap();
        // A deviation of 1e-45 made every input infinite: NaN % and 10.00 % accuracy.
        for (mean, std) in [
            (0.0, 1e-45),
            (0.0, 0.0),
            (f32::NAN, 0.3),
            (0.3, 1e9),
            (-5.0, 0.3),
        ] {
            let mut bad = Classifier::from_bytes(&bytes).unwrap();
            bad.normalization = Normalization { mean, std };
            let e = refused(&bad.to_bytes().unwrap());
            assert!(e.contains("normali"), "{e}");
        }
        // Class names reach terminals: escape codes and empty names are refused.
        for name in ["\u{1b}[31mred", "", "a\nb", &"x".repeat(65)] {
            let mut bad = Classifier::from_bytes(&bytes).unwrap();
            bad.classes[0] = name.to_string();
            let e = refused(&bad.to_bytes().unwrap());
            assert!(e.contains("class name 0"), "{e}");
        }
        // An invented architecture field is refused, named.
        let bogus = edit_header(&bytes, |h| {
            let meta = &mut h["__metadata__"]["architecture"];
            let text = meta.as_str().unwrap().replacen(
                r#""type":"relu""#,
                r#""type":"relu","bogus":1"#,
                1,
            );
            *meta = text.into();
        });
        assert!(refused(&bogus).contains("unknown field `bogus`"));
        // An architecture far larger than its tensors is refused from the budget, before
        // its weights are allocated.
        let huge = edit_header(&bytes, |h| {
            let spec = r#"{"input":[28,28,1],"layers":[{"type":"flatten"},{"type":"linear","units":100000},{"type":"linear","units":10}]}"#;
            h["__metadata__"]["architecture"] = spec.into();
        });
        let e = refused(&huge);
        assert!(e.contains("too many"), "{e}");
    }
}
