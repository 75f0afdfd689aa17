//! `fmnist._fmnist`: the thin layer between Python and the fmnist library. Arrays
//! arrive already checked and shaped by the Python package (`fmnist/__init__.py`);
//! everything here calls the library that the command line uses, so a model trained
//! from Python is the model `fmnist train` makes for the same seed and thread count.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fmnist::data::{Dataset, FashionMnist, PIXELS};
use fmnist::model::{Classifier, architectures, summary};
use fmnist::train::{self, EpochRecord, Progress, RunControl, TrainConfig, recipes};
use nn::ModelSpec;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray3,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    _fmnist,
    Error,
    PyException,
    "Every error fmnist raises: bad input, an unusable file, missing data."
);

fn error(e: anyhow::Error) -> PyErr {
    Error::new_err(format!("{e:#}"))
}

/// The worker threads every call runs on (`set_threads`); `None` until chosen: all cores.
static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

fn pool() -> PyResult<Arc<rayon::ThreadPool>> {
    let mut guard = POOL
        .lock()
        .map_err(|_| Error::new_err("the thread pool is unusable after a panic"))?;
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let p = Arc::new(build_pool(0)?);
    *guard = Some(p.clone());
    Ok(p)
}

fn build_pool(threads: usize) -> PyResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::new_err(format!("cannot start worker threads: {e}")))
}

/// Sets the worker threads for training and inference (0: one per core).
#[pyfunction]
fn set_threads(threads: usize) -> PyResult<()> {
    let p = Arc::new(build_pool(threads)?);
    let mut guard = POOL
        .lock()
        .map_err(|_| Error::new_err("the thread pool is unusable after a panic"))?;
    *guard = Some(p);
    Ok(())
}

/// The worker threads calls run on.
#[pyfunction]
fn threads() -> PyResult<usize> {
    Ok(pool()?.current_num_threads())
}

/// Runs `f` on the pool with the GIL released.
fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    let pool = pool()?;
    Ok(py.detach(|| pool.install(f)))
}

/// The four arrays of Fashion-MNIST, found or downloaded as `fmnist data` does.
#[pyfunction]
#[pyo3(signature = (data_dir=None, offline=false))]
#[allow(clippy::type_complexity)]
fn load_data<'py>(
    py: Python<'py>,
    data_dir: Option<PathBuf>,
    offline: bool,
) -> PyResult<(
    (Bound<'py, PyArray3<u8>>, Bound<'py, PyArray1<u8>>),
    (Bound<'py, PyArray3<u8>>, Bound<'py, PyArray1<u8>>),
)> {
    let opts = fmnist::DataOptions {
        data_dir,
        offline,
        verbose: false,
    };
    let data = py.detach(|| fmnist::data::load(&opts)).map_err(error)?;
    let arrays = |d: Dataset| -> PyResult<_> {
        let n = d.len();
        let images = d
            .images
            .into_pyarray(py)
            .reshape([n, 28, 28])
            .map_err(|e| Error::new_err(e.to_string()))?;
        Ok((images, d.labels.into_pyarray(py)))
    };
    Ok((arrays(data.train)?, arrays(data.test)?))
}

/// A network, its recipe and (once trained or loaded) its weights.
#[pyclass(module = "fmnist._fmnist")]
struct Engine {
    spec: ModelSpec,
    config: TrainConfig,
    /// Python objects may move between threads: the network's layers may not be
    /// shared without a lock.
    model: Mutex<Classifier>,
}

/// Calls Python's progress callback after each step (from the training worker); an
/// exception it raises stops training before the next step.
struct Reporter<'a> {
    callback: Option<Py<PyAny>>,
    stop: &'a AtomicBool,
    raised: Option<PyErr>,
    epoch: usize,
    epochs: usize,
    batches: usize,
}

impl Reporter<'_> {
    fn call(&mut self, build: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyDict>>) {
        if self.raised.is_some() {
            return;
        }
        let outcome = Python::attach(|py| {
            if let Some(cb) = &self.callback {
                cb.call1(py, (build(py)?,))?;
            }
            Ok::<(), PyErr>(())
        });
        if let Err(e) = outcome {
            self.raised = Some(e);
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Progress for Reporter<'_> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        (self.epoch, self.epochs, self.batches) = (epoch, epochs, batches);
        self.call(|py| {
            let d = PyDict::new(py);
            d.set_item("event", "epoch_start")?;
            d.set_item("epoch", epoch)?;
            d.set_item("epochs", epochs)?;
            d.set_item("steps", batches)?;
            Ok(d)
        });
    }

    fn step(&mut self, done: usize, loss: f64, accuracy: f64, images_per_s: f64) {
        let (epoch, epochs, batches) = (self.epoch, self.epochs, self.batches);
        self.call(|py| {
            let d = PyDict::new(py);
            d.set_item("event", "step")?;
            d.set_item("epoch", epoch)?;
            d.set_item("epochs", epochs)?;
            d.set_item("step", done)?;
            d.set_item("steps", batches)?;
            d.set_item("loss", loss)?;
            d.set_item("accuracy", accuracy)?;
            d.set_item("images_per_s", images_per_s)?;
            Ok(d)
        });
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        let r = r.clone();
        let epochs = self.epochs;
        self.call(|py| {
            let d = record(py, &r)?;
            d.set_item("event", "epoch_end")?;
            d.set_item("epochs", epochs)?;
            Ok(d)
        });
    }
}

fn record<'py>(py: Python<'py>, r: &EpochRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", r.epoch)?;
    d.set_item("loss", r.train_loss)?;
    d.set_item("accuracy", r.train_accuracy)?;
    d.set_item("val_loss", r.val_loss)?;
    d.set_item("val_accuracy", r.val_accuracy)?;
    d.set_item("lr", r.lr)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("images_per_s", r.train_images_per_s)?;
    Ok(d)
}

/// An architecture from a built-in model or preset name, JSON text, or a JSON file;
/// a preset also brings its recipe.
fn resolve(arch: &str) -> anyhow::Result<(ModelSpec, TrainConfig)> {
    if let Some(r) = recipes::recipe(arch) {
        let spec = architectures::preset(r.model)
            .ok_or_else(|| anyhow::anyhow!("preset {arch} names no built-in model"))?;
        return Ok((spec, r.config));
    }
    if let Some(spec) = architectures::preset(arch) {
        return Ok((spec, TrainConfig::default()));
    }
    let spec = if arch.trim_start().starts_with('{') {
        let spec = ModelSpec::from_json(arch)?;
        architectures::check_fits(&spec)?;
        spec
    } else if arch.ends_with(".json") {
        architectures::load_arch(arch.as_ref())?
    } else {
        anyhow::bail!(
            "unknown model {arch:?}: give a built-in model ({}), a preset ({}), an \
             architecture as JSON or a dict, or a .json file",
            architectures::PRESETS.join(", "),
            recipes::NAMES.join(", ")
        );
    };
    Ok((spec, TrainConfig::default()))
}

fn dataset(images: &PyReadonlyArray3<u8>, labels: &PyReadonlyArray1<u8>) -> PyResult<Dataset> {
    let images = images
        .as_slice()
        .map_err(|_| Error::new_err("images must be a contiguous array"))?;
    let labels = labels
        .as_slice()
        .map_err(|_| Error::new_err("labels must be a contiguous array"))?;
    Dataset::from_raw(images.to_vec(), labels.to_vec()).map_err(error)
}

impl Engine {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Classifier>> {
        self.model
            .lock()
            .map_err(|_| Error::new_err("the model is unusable after a panic"))
    }

    fn model_mut(&mut self) -> PyResult<&mut Classifier> {
        self.model
            .get_mut()
            .map_err(|_| Error::new_err("the model is unusable after a panic"))
    }

    /// The model, set to infer in the recipe's precision (as Keras' policy covers both
    /// training and inference); training leaves it in fp32.
    fn inferring(&mut self) -> PyResult<&mut Classifier> {
        let precision = self.config.precision;
        let model = self.model_mut()?;
        model.set_precision(precision);
        Ok(model)
    }
}

#[pymethods]
impl Engine {
    #[new]
    fn new(arch: &str) -> PyResult<Self> {
        let (spec, config) = resolve(arch).map_err(error)?;
        let model = Classifier::new(spec.clone(), config.seed).map_err(error)?;
        Ok(Self {
            spec,
            config,
            model: Mutex::new(model),
        })
    }

    /// A model file written by `save` or `fmnist train`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let model = py.detach(|| Classifier::load(&path)).map_err(error)?;
        let mut config = TrainConfig::default();
        let s = &model.summary;
        if s.epochs > 0 {
            config.epochs = s.planned_epochs;
            config.batch_size = s.batch_size;
            config.lr = s.lr;
            config.seed = s.seed;
            config.flip_tta = model.inference.flip_tta;
        }
        Ok(Self {
            spec: model.spec.clone(),
            config,
            model: Mutex::new(model),
        })
    }

    /// Writes the model file (atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let bytes = self.lock()?.to_bytes().map_err(error)?;
        py.detach(|| fmnist::io::atomic::write(&path, &bytes))
            .map_err(error)
    }

    /// The layer table (an ensemble's first network's, under a line that says so).
    fn summary(&self) -> PyResult<String> {
        let table = summary::table(&self.spec).map_err(error)?;
        let m = self.lock()?;
        Ok(if m.networks() > 1 {
            format!(
                "{} (probabilities averaged); the first network:\n{table}",
                m.describe()
            )
        } else {
            table
        })
    }

    /// Trained parameters (of every network of an ensemble).
    fn count_params(&self) -> PyResult<usize> {
        Ok(self.lock()?.num_params())
    }

    /// The architecture as JSON.
    fn architecture(&self) -> String {
        self.spec.to_json()
    }

    /// The recipe `fit` uses, as JSON.
    fn recipe(&self) -> PyResult<String> {
        serde_json::to_string(&self.config).map_err(|e| error(e.into()))
    }

    /// The class names, the normalisation and how the model was trained, as JSON.
    fn info(&self) -> PyResult<String> {
        let m = self.lock()?;
        serde_json::to_string(&serde_json::json!({
            "classes": m.classes,
            "normalization": m.normalization,
            "training": m.summary,
            "inference": m.inference,
            "parameters": m.num_params(),
            "networks": m.networks(),
        }))
        .map_err(|e| error(e.into()))
    }

    /// Changes the recipe; `None` keeps a setting.
    #[pyo3(signature = (optimizer=None, lr=None, schedule=None, weight_decay=None,
        label_smoothing=None, shift=None, flip=None, erase=None, ema=None, patience=None,
        tta=None, precision=None))]
    #[allow(clippy::too_many_arguments)]
    fn compile(
        &mut self,
        optimizer: Option<&str>,
        lr: Option<f32>,
        schedule: Option<&str>,
        weight_decay: Option<f32>,
        label_smoothing: Option<f32>,
        shift: Option<usize>,
        flip: Option<bool>,
        erase: Option<f32>,
        ema: Option<f32>,
        patience: Option<usize>,
        tta: Option<bool>,
        precision: Option<&str>,
    ) -> PyResult<()> {
        let overrides = recipes::Overrides {
            lr,
            optimizer: optimizer.map(str::to_string),
            weight_decay,
            schedule: schedule.map(str::to_string),
            label_smoothing,
            shift,
            flip,
            erase,
            ema,
            patience,
            flip_tta: tta,
            precision: precision.map(str::to_string),
            ..recipes::Overrides::default()
        };
        let c = overrides
            .apply(&self.config)
            .map_err(|e| Error::new_err(e.to_string()))?;
        c.validate().map_err(error)?;
        self.config = c;
        Ok(())
    }

    /// Trains from the seed's initialisation on `images` (uint8, `(N, 28, 28)`) and
    /// `labels`, holding out `val_size` of them; returns the per-epoch records.
    #[pyo3(signature = (images, labels, epochs=None, batch_size=None, val_size=0, seed=None,
        callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &mut self,
        py: Python<'py>,
        images: PyReadonlyArray3<'py, u8>,
        labels: PyReadonlyArray1<'py, u8>,
        epochs: Option<usize>,
        batch_size: Option<usize>,
        val_size: usize,
        seed: Option<u64>,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut cfg = self.config.clone();
        if let Some(e) = epochs {
            cfg.epochs = e;
        }
        if let Some(b) = batch_size {
            cfg.batch_size = b;
        }
        if let Some(s) = seed {
            cfg.seed = s;
        }
        cfg.val_size = val_size;
        cfg.validate().map_err(error)?;
        let data = FashionMnist::in_memory(dataset(&images, &labels)?, Dataset::default());
        drop((images, labels));
        let stop = AtomicBool::new(false);
        let mut reporter = Reporter {
            callback,
            stop: &stop,
            raised: None,
            epoch: 0,
            epochs: 0,
            batches: 0,
        };
        let spec = self.spec.clone();
        let pool = pool()?;
        let done = AtomicBool::new(false);
        let mut outcome = None;
        let mut signal = None;
        // Training runs on a worker; this (Python's main) thread waits without the GIL and
        // looks for Ctrl-C in between, since only the main thread runs signal handlers.
        pool.in_place_scope(|scope| {
            scope.spawn(|_| {
                let control = RunControl {
                    stop: Some(&stop),
                    ..Default::default()
                };
                outcome = Some(train::train_with(&data, spec, &cfg, &mut reporter, control));
                done.store(true, Ordering::Release);
            });
            while !done.load(Ordering::Acquire) {
                py.detach(|| std::thread::sleep(std::time::Duration::from_millis(20)));
                if signal.is_none()
                    && let Err(e) = py.check_signals()
                {
                    signal = Some(e);
                    stop.store(true, Ordering::Relaxed);
                }
            }
        });
        if let Some(e) = signal.or(reporter.raised) {
            return Err(e);
        }
        let outcome = outcome.ok_or_else(|| Error::new_err("training did not run"))?;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if e.is::<train::Interrupted>() => {
                return Err(PyKeyboardInterrupt::new_err("training interrupted"));
            }
            Err(e) => return Err(error(e)),
        };
        self.model = Mutex::new(outcome.model);
        self.config = cfg;
        outcome.history.iter().map(|r| record(py, r)).collect()
    }

    /// Class probabilities of `images` (uint8, `(N, 28, 28)`), `(N, classes)` float32.
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        images: PyReadonlyArray3<'py, u8>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pixels = images
            .as_slice()
            .map_err(|_| Error::new_err("images must be a contiguous array"))?;
        let n = pixels.len() / PIXELS;
        let model = self.inferring()?;
        let c = model.classes.len();
        let probs = compute(py, || model.probabilities(pixels))?;
        probs
            .into_pyarray(py)
            .reshape([n, c])
            .map_err(|e| Error::new_err(e.to_string()))
    }

    /// Loss, accuracy and the per-class report (as JSON) on `images` and `labels`.
    fn evaluate<'py>(
        &mut self,
        py: Python<'py>,
        images: PyReadonlyArray3<'py, u8>,
        labels: PyReadonlyArray1<'py, u8>,
    ) -> PyResult<(f64, f64, String)> {
        let data = dataset(&images, &labels)?;
        let model = self.inferring()?;
        let metrics = compute(py, || {
            let e = fmnist::eval::evaluate(model, &data);
            fmnist::eval::metrics(&e, &data.labels, &model.classes)
        })?;
        let json = serde_json::to_string(&metrics).map_err(|e| error(e.into()))?;
        Ok((metrics.loss, metrics.accuracy, json))
    }

    /// Classifies image files through the command line's photo path; JSON, one
    /// prediction per file with the `top` most probable classes.
    fn predict_images(
        &mut self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        top: usize,
    ) -> PyResult<String> {
        let model = self.inferring()?;
        let predictions =
            compute(py, || fmnist::predict::predict_files(model, &paths, top))?.map_err(error)?;
        serde_json::to_string(&predictions).map_err(|e| error(e.into()))
    }

    /// What the model sees of image files: their 28×28 inputs, `(N, 28, 28)` uint8.
    fn preprocess_images<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        let n = paths.len();
        let pixels = py
            .detach(|| fmnist::predict::preprocess_files(&paths))
            .map_err(error)?;
        pixels
            .into_pyarray(py)
            .reshape([n, 28, 28])
            .map_err(|e| Error::new_err(e.to_string()))
    }
}

#[pymodule]
fn _fmnist(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("CLASS_NAMES", fmnist::CLASS_NAMES.to_vec())?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(load_data, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(threads, m)?)?;
    Ok(())
}
