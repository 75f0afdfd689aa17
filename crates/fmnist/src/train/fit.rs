//! The training loop: shuffled mini-batches, per-epoch validation, the best epoch kept,
//! the test set measured once at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use nn::{Ema, Mode, ModelSpec, Optimizer, Rng, Tensor};

use super::augment::Augment;
use super::checkpoint::{Best, Checkpoint, TrainedMember};
use super::config::{TrainConfig, check_memory};
use super::history::EpochRecord;
use crate::data::{Dataset, FOOTWEAR, FashionMnist, PIXELS};
use crate::eval::evaluate;
use crate::model::classifier::{Classifier, TrainingSummary};

/// Receives progress as training runs (the CLI draws a progress bar with it).
pub trait Progress {
    /// Network `member` (1-based) of an ensemble of `members` begins to train, with
    /// `seed` (called only for ensembles).
    fn member_start(&mut self, _member: usize, _members: usize, _seed: u64) {}
    /// An epoch of `batches` steps begins.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A step finished: running mean loss and accuracy of the epoch so far.
    fn step(&mut self, _done: usize, _loss: f64, _accuracy: f64, _images_per_s: f64) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// What training produced.
pub struct TrainOutcome {
    /// The classifier with the best epoch's weights, its summary filled in.
    pub model: Classifier,
    /// One record per epoch.
    pub history: Vec<EpochRecord>,
    /// The kept weights' outputs on the test set (measured once, after training; empty,
    /// with NaN loss and accuracy, when `data.test` is).
    pub test: crate::eval::Evaluation,
}

/// Trains `spec` on `data` with `cfg`. Runs on the current rayon pool's threads.
pub fn train(
    data: &FashionMnist,
    spec: ModelSpec,
    cfg: &TrainConfig,
    progress: &mut dyn Progress,
) -> anyhow::Result<TrainOutcome> {
    train_with(data, spec, cfg, progress, RunControl::default())
}

/// How a run is saved, continued and stopped, beyond its recipe.
#[derive(Default)]
pub struct RunControl<'a> {
    /// Write a checkpoint here after every epoch (atomically; the last one is kept if
    /// training fails or is interrupted).
    pub checkpoint: Option<PathBuf>,
    /// Continue from this state (its recipe and architecture must be the ones given).
    pub resume: Option<Checkpoint>,
    /// When set (by Ctrl-C), training stops before the next step with [`Interrupted`].
    pub stop: Option<&'a AtomicBool>,
    /// Start from these weights ([`nn::Network::snapshot`] of the same architecture)
    /// instead of the seed's initialisation: fine-tuning. A resumed run takes its
    /// checkpoint's weights instead.
    pub init: Option<Vec<nn::Tensor>>,
}

/// Training was stopped on request; `checkpoint` holds the last finished epoch, if any.
#[derive(Debug)]
pub struct Interrupted {
    /// The epoch that was running.
    pub epoch: usize,
    /// The checkpoint to resume from, when one was written.
    pub checkpoint: Option<PathBuf>,
    /// Epochs of the running network the checkpoint holds.
    pub saved_epochs: Option<usize>,
    /// For an ensemble: the running network (1-based) and how many there are.
    pub network: Option<(usize, usize)>,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let of = |n: Option<(usize, usize)>| {
            n.map(|(k, n)| format!(" of network {k} of {n}"))
                .unwrap_or_default()
        };
        match (&self.checkpoint, self.saved_epochs, self.network) {
            (Some(path), Some(done), network) => write!(
                f,
                "interrupted in epoch {}{}; the run is saved after epoch {done}{}: continue it \
                 with `fmnist train --resume {}`",
                self.epoch,
                of(network),
                of(network),
                path.display()
            ),
            (Some(path), None, Some((k, n))) if k > 1 => write!(
                f,
                "interrupted in epoch {} of network {k} of {n}; the run is saved after \
                 network {}: continue it with `fmnist train --resume {}`",
                self.epoch,
                k - 1,
                path.display()
            ),
            _ => write!(
                f,
                "interrupted in epoch {}, before the first checkpoint; nothing was saved",
                self.epoch
            ),
        }
    }
}

impl std::error::Error for Interrupted {}

/// [`train`] with checkpoints, resumption and a stop flag. A recipe of several
/// [`TrainConfig::members`] trains them one after another (a checkpoint carries the
/// finished ones) and returns them as one ensemble, measured on the test set together;
/// its history holds every network's epochs in turn.
pub fn train_with(
    data: &FashionMnist,
    spec: ModelSpec,
    cfg: &TrainConfig,
    progress: &mut dyn Progress,
    control: RunControl,
) -> anyhow::Result<TrainOutcome> {
    cfg.validate()?;
    let RunControl {
        checkpoint,
        mut resume,
        stop,
        init,
    } = control;
    let mut earlier = resume
        .as_mut()
        .map(|ck| std::mem::take(&mut ck.earlier))
        .unwrap_or_default();
    let mut last = None;
    while earlier.len() < cfg.members {
        if cfg.members > 1 {
            let member = earlier.len();
            progress.member_start(member + 1, cfg.members, cfg.member(member).seed);
        }
        let control = RunControl {
            checkpoint: checkpoint.clone(),
            resume: resume.take(),
            stop,
            init: init.clone(),
        };
        let outcome = train_member(data, &spec, cfg, progress, control, &mut earlier)?;
        earlier.push(TrainedMember {
            model: outcome.model,
            history: outcome.history,
        });
        last = Some(outcome.test);
    }
    let mut networks = earlier.into_iter();
    let first = networks
        .next()
        .ok_or_else(|| anyhow::anyhow!("no network trained"))?;
    let (mut model, mut history) = (first.model, first.history);
    for m in networks {
        model.members.push(m.model);
        history.extend(m.history);
    }
    let test = match last {
        Some(test) if model.members.is_empty() => test,
        _ if data.test.is_empty() => no_test(),
        _ => {
            let test = evaluate(&mut model, &data.test);
            model.summary.ensemble_test_accuracy = Some(test.accuracy);
            test
        }
    };
    Ok(TrainOutcome {
        model,
        history,
        test,
    })
}

/// The evaluation of an empty test set.
fn no_test() -> crate::eval::Evaluation {
    crate::eval::Evaluation {
        probabilities: Vec::new(),
        predictions: Vec::new(),
        loss: f64::NAN,
        accuracy: f64::NAN,
    }
}

/// Trains the next network of `recipe`'s ensemble (the one after `earlier`, which each
/// checkpoint carries) with its own recipe, [`TrainConfig::member`].
fn train_member(
    data: &FashionMnist,
    spec: &ModelSpec,
    recipe: &TrainConfig,
    progress: &mut dyn Progress,
    control: RunControl,
    earlier: &mut Vec<TrainedMember>,
) -> anyhow::Result<TrainOutcome> {
    let member = earlier.len();
    let cfg = &recipe.member(member);
    let started = Instant::now();
    let (mut train_set, val_set) = if cfg.val_size > 0 {
        data.train.split_validation(cfg.val_size, cfg.seed)?
    } else {
        (data.train.clone(), Default::default())
    };
    if let Some(limit) = cfg.limit {
        let keep: Vec<usize> = (0..limit.min(train_set.len())).collect();
        train_set = train_set.subset(&keep);
    }
    if train_set.is_empty() {
        bail!("no training images left");
    }
    let mut model = Classifier::new(spec.clone(), cfg.seed)?;
    check_memory(&model.net, cfg.batch_size)?;
    model.inference.flip_tta = cfg.flip_tta;
    model.normalization = cfg.normalization;
    if let Some(init) = &control.init {
        let want: Vec<Vec<usize>> = model
            .net
            .snapshot()
            .iter()
            .map(|t| t.shape().to_vec())
            .collect();
        let got: Vec<Vec<usize>> = init.iter().map(|t| t.shape().to_vec()).collect();
        if want != got {
            bail!("the starting weights are not those of this architecture");
        }
        model.net.load_snapshot(init);
    }
    let mut ema = cfg.ema.map(|decay| Ema::new(&model.net, decay));
    let root = Rng::new(cfg.seed);
    let mut shuffle_rng = root.fork(1);
    let mut stepper = Stepper::new(cfg);
    let n = train_set.len();
    let batches = n.div_ceil(cfg.batch_size);
    let total_steps = batches * cfg.epochs;
    let mut order: Vec<usize> = (0..n).collect();
    let mut history = Vec::new();
    let mut best: Option<Best> = None;
    let mut lr = cfg.lr;
    let mut first_epoch = 1;
    let mut seconds_before = 0.0;
    let mut saved_epochs = None;
    if let Some(ck) = control.resume {
        if ck.spec != *spec || ck.config != *recipe {
            bail!("the checkpoint was written by a different architecture or recipe");
        }
        model.net.load_snapshot(&ck.weights);
        ema = ck.ema;
        stepper.opt = ck.optimizer;
        stepper.dropout_rng = ck.dropout_rng;
        stepper.augment_rng = ck.augment_rng;
        // Each epoch reshuffles the previous order: replaying the shuffles restores both
        // the order and the shuffling stream.
        for _ in 0..ck.epochs_done {
            shuffle_rng.shuffle(&mut order);
        }
        lr = ck.history.last().map_or(cfg.lr, |r| r.lr);
        history = ck.history;
        best = ck.best;
        first_epoch = ck.epochs_done + 1;
        seconds_before = ck.seconds;
        saved_epochs = Some(ck.epochs_done);
    }
    let stop_requested = || control.stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let kept = |saved: Option<usize>| match (&control.checkpoint, saved) {
        (Some(path), Some(e)) => format!(
            "; the last good state, after epoch {e}, is kept in {}",
            path.display()
        ),
        _ => String::new(),
    };

    let stopped_early = |history: &[EpochRecord], best: &Option<Best>| {
        let best_epoch = best.as_ref().map_or(history.len(), |b| b.epoch);
        cfg.patience
            .is_some_and(|p| history.len() - best_epoch >= p)
    };
    for epoch in first_epoch..=cfg.epochs {
        if stopped_early(&history, &best) {
            break;
        }
        let epoch_start = Instant::now();
        progress.epoch_start(epoch, cfg.epochs, batches);
        shuffle_rng.shuffle(&mut order);
        let (mut loss_sum, mut right, mut seen) = (0.0f64, 0usize, 0usize);
        let mut train_seconds = 0.0;
        for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
            if stop_requested() {
                // An ensemble's earlier networks were saved with the last epoch of each.
                let saved_before = member > 0;
                return Err(Interrupted {
                    epoch,
                    checkpoint: control
                        .checkpoint
                        .clone()
                        .filter(|_| saved_epochs.is_some() || saved_before),
                    saved_epochs,
                    network: (recipe.members > 1).then_some((member + 1, recipe.members)),
                }
                .into());
            }
            let step_start = Instant::now();
            lr = cfg
                .schedule
                .lr(cfg.lr, (epoch - 1) * batches + b, total_steps);
            let (loss, correct) = stepper.step(&mut model, &train_set, idx, lr);
            if !loss.is_finite() {
                bail!(
                    "training diverged: the loss became {loss} at epoch {epoch}, step {}; \
                     the learning rate ({lr:e}) is probably too high{}",
                    b + 1,
                    kept(saved_epochs)
                );
            }
            if let Some(ema) = &mut ema {
                ema.update(&model.net);
            }
            right += correct;
            loss_sum += loss as f64 * idx.len() as f64;
            seen += idx.len();
            train_seconds += step_start.elapsed().as_secs_f64();
            progress.step(
                b + 1,
                loss_sum / seen as f64,
                right as f64 / seen as f64,
                seen as f64 / train_seconds,
            );
        }
        // ReLU and max pooling can hide non-finite weights from the loss for a while.
        if let Some((name, _)) = model
            .net
            .tensors()
            .iter()
            .find(|(_, t)| t.data().iter().any(|v| !v.is_finite()))
        {
            bail!(
                "training diverged: weights {name} became non-finite in epoch {epoch}; \
                 the learning rate ({lr:e}) is probably too high{}",
                kept(saved_epochs)
            );
        }
        // Validate (and keep) the averaged weights when there are any.
        if let Some(ema) = &mut ema {
            ema.swap(&mut model.net);
        }
        let (val_loss, val_accuracy) = if val_set.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let e = evaluate(&mut model, &val_set);
            (e.loss, e.accuracy)
        };
        let record = EpochRecord {
            member: member + 1,
            epoch,
            train_loss: loss_sum / seen as f64,
            train_accuracy: right as f64 / seen as f64,
            val_loss,
            val_accuracy,
            lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
            train_images_per_s: seen as f64 / train_seconds,
        };
        progress.epoch_end(&record);
        history.push(record);
        // Without a validation set the last epoch is kept.
        let score = if val_accuracy.is_nan() {
            epoch as f64
        } else {
            val_accuracy
        };
        if best.as_ref().is_none_or(|b| score > b.score) {
            best = Some(Best {
                score,
                epoch,
                weights: model.net.snapshot(),
            });
        }
        if let Some(ema) = &mut ema {
            ema.swap(&mut model.net);
        }
        // The last epoch of a network is saved only when another network follows: an
        // interruption then keeps the finished one.
        let last_epoch = epoch == cfg.epochs || stopped_early(&history, &best);
        if let Some(path) = &control.checkpoint
            && (!last_epoch || member + 1 < recipe.members)
        {
            let ck = Checkpoint {
                config: recipe.clone(),
                earlier: std::mem::take(earlier),
                spec: spec.clone(),
                epochs_done: epoch,
                history: history.clone(),
                best: best.clone(),
                weights: model.net.snapshot(),
                optimizer: stepper.opt.clone(),
                ema: ema.clone(),
                dropout_rng: stepper.dropout_rng.clone(),
                augment_rng: stepper.augment_rng.clone(),
                threads: rayon::current_num_threads(),
                seconds: seconds_before + started.elapsed().as_secs_f64(),
            };
            // A failed write (a full disk) leaves the previous checkpoint as it was.
            let saved = ck.save(path);
            *earlier = ck.earlier;
            saved.with_context(|| {
                format!(
                    "cannot save the checkpoint of epoch {epoch}{}",
                    kept(saved_epochs)
                )
            })?;
            saved_epochs = Some(epoch);
        }
    }
    let best = best.ok_or_else(|| anyhow::anyhow!("no epoch ran"))?;
    let best_epoch = best.epoch;
    model.net.load_snapshot(&best.weights);
    // Probabilities that mean what they say: the temperature fitted on images training
    // never learned from.
    let labels: Vec<usize> = val_set.labels.iter().map(|&l| l as usize).collect();
    model.calibrate(&val_set.images, &labels);
    // A library caller may train without a test set (Python's `fit`): nothing to measure.
    let test = if data.test.is_empty() {
        no_test()
    } else {
        evaluate(&mut model, &data.test)
    };
    model.summary = TrainingSummary {
        epochs: history.len(),
        planned_epochs: cfg.epochs,
        best_epoch,
        val_accuracy: history[best_epoch - 1].val_accuracy,
        test_accuracy: test.accuracy,
        train_images: train_set.len(),
        val_images: val_set.len(),
        batch_size: cfg.batch_size,
        lr: cfg.lr,
        optimizer: serde_json::to_value(cfg.optimizer)?,
        schedule: serde_json::to_value(cfg.schedule)?,
        label_smoothing: cfg.label_smoothing,
        augment: cfg.augment,
        ema: cfg.ema,
        flip_tta: cfg.flip_tta,
        seed: cfg.seed,
        threads: rayon::current_num_threads(),
        seconds: seconds_before + started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        imported_from: None,
        ensemble_test_accuracy: None,
    };
    Ok(TrainOutcome {
        model,
        history,
        test,
    })
}

/// One optimisation step at a time, with the optimizer, dropout randomness and batch
/// buffers kept between steps (used by [`train`] and by the benchmark).
pub struct Stepper {
    opt: Optimizer,
    dropout_rng: Rng,
    augment: Augment,
    augment_rng: Rng,
    pixels: Vec<u8>,
    smoothing: f32,
    x: Tensor,
    dlogits: Tensor,
    labels: Vec<usize>,
    precision: nn::Precision,
}

impl Stepper {
    /// A fresh optimizer and dropout stream for `cfg`.
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            opt: Optimizer::new(cfg.optimizer),
            dropout_rng: Rng::new(cfg.seed).fork(2),
            augment: cfg.augment,
            augment_rng: Rng::new(cfg.seed).fork(3),
            pixels: Vec::new(),
            smoothing: cfg.label_smoothing,
            x: Tensor::default(),
            dlogits: Tensor::default(),
            labels: Vec::with_capacity(cfg.batch_size),
            precision: cfg.precision,
        }
    }

    /// Trains `model` on the images of `data` at `idx` with learning rate `lr`; returns the
    /// batch's mean loss (the step is skipped when it is not finite) and how many it got right.
    pub fn step(
        &mut self,
        model: &mut Classifier,
        data: &Dataset,
        idx: &[usize],
        lr: f32,
    ) -> (f32, usize) {
        if self.augment.is_active() {
            self.pixels.resize(idx.len() * PIXELS, 0);
            for (dst, &i) in self.pixels.chunks_exact_mut(PIXELS).zip(idx) {
                let paired = FOOTWEAR.contains(&(data.labels[i] as usize));
                self.augment
                    .apply(data.image(i), paired, dst, &mut self.augment_rng);
            }
            model.normalization.batch_into(&self.pixels, &mut self.x);
        } else {
            model.normalization.gather_into(data, idx, &mut self.x);
        }
        self.labels.clear();
        self.labels
            .extend(idx.iter().map(|&i| data.labels[i] as usize));
        // The training passes in the recipe's precision; every inference pass (validation,
        // the saved model) stays fp32.
        model.net.set_precision(self.precision);
        let logits = model
            .net
            .forward(&self.x, Mode::Train, &mut self.dropout_rng);
        let loss = nn::loss::softmax_cross_entropy(
            logits,
            &self.labels,
            self.smoothing,
            &mut self.dlogits,
        );
        if !loss.is_finite() {
            model.net.set_precision(nn::Precision::F32);
            return (loss, 0);
        }
        let correct = nn::loss::correct(logits, &self.labels);
        model.net.backward(&self.x, &self.dlogits, None);
        model.net.set_precision(nn::Precision::F32);
        self.opt.step(&mut model.net.params_mut(), lr);
        (loss, correct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_names_what_is_saved() {
        let path = Some(PathBuf::from("m.checkpoint.safetensors"));
        let say = |saved_epochs, network| {
            Interrupted {
                epoch: 3,
                checkpoint: path.clone(),
                saved_epochs,
                network,
            }
            .to_string()
        };
        assert_eq!(
            say(Some(2), None),
            "interrupted in epoch 3; the run is saved after epoch 2: continue it with \
             `fmnist train --resume m.checkpoint.safetensors`"
        );
        assert!(
            say(Some(2), Some((2, 3)))
                .starts_with("interrupted in epoch 3 of network 2 of 3; the run is saved after epoch 2 of network 2 of 3:")
        );
        // The second network had saved nothing yet: the first is kept whole.
        assert!(say(None, Some((2, 3))).starts_with(
            "interrupted in epoch 3 of network 2 of 3; the run is saved after network 1:"
        ));
        let nothing = Interrupted {
            epoch: 1,
            checkpoint: None,
            saved_epochs: None,
            network: Some((1, 3)),
        };
        assert!(nothing.to_string().ends_with("nothing was saved"));
    }
}
