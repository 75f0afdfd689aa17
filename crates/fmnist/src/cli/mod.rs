//! The command line: [`args`] (what each subcommand takes), one function per subcommand
//! here, and [`progress`] (the training progress bar and Ctrl-C). The work is the
//! library's; this side parses, prints and dispatches.

mod args;
mod progress;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

pub use args::*;
use fmnist::data;
use fmnist::eval::{self, photo_folders, photos};
use fmnist::interop::{self, InputScaling};
use fmnist::io::atomic::PendingFile;
use fmnist::model::Classifier;
use fmnist::report::{self, plots};
use fmnist::train;
use fmnist::{bench, predict, serve};
use progress::{Bar, interrupt_flag};

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(a) => run_data(&a),
        Command::Train(a) => run_train(&a),
        Command::Eval(a) => run_eval(&a),
        Command::Predict(a) => run_predict(&a),
        Command::Bench(a) => run_bench(&a),
        Command::Serve(a) => run_serve(&a),
        Command::Export(a) => run_export(&a),
        Command::Import(a) => run_import(&a),
    }
}

fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`fmnist eval | head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output"),
    }
}

/// `fmnist data`
pub fn run_data(a: &DataArgs) -> anyhow::Result<()> {
    let preview = a.preview.as_deref().map(PendingFile::reserve).transpose()?;
    let data = data::load(&a.source.options())?;
    out(&report::data_summary(&data))?;
    if let Some(file) = preview {
        let classes: Vec<String> = data::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
        let shown = file.path().display().to_string();
        file.commit(&plots::samples(&data.train, &classes, 40)?)?;
        out(&format!("\nwrote {shown}\n"))?;
    }
    Ok(())
}

/// `fmnist train`
pub fn run_train(a: &TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let run = match &a.resume {
        Some(checkpoint) => train::Run::resume(checkpoint, a.out.as_deref())?,
        None => {
            let (spec, cfg, start) = a.recipe()?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| "fmnist-model.safetensors".into());
            let run = train::Run::new(spec, cfg, &out)?;
            match &start {
                Some(model) => run.starting_from(model)?,
                None => run,
            }
        }
    };
    let data = data::load(&a.source.options())?;
    let (spec, cfg) = (run.spec(), run.config());
    out(&format!(
        "training {} ({} parameters){} on {} threads\n{}\n",
        fmnist::model::summary::name(spec),
        match cfg.members {
            1 => report::thousands(run.params()),
            n => format!("{n} × {}", report::thousands(run.params())),
        },
        a.preset
            .as_deref()
            .map(|p| format!(", preset {p},"))
            .unwrap_or_default(),
        rayon::current_num_threads(),
        report::recipe(cfg),
    ))?;
    if let Some((done, threads)) = run.resumed() {
        let network = match cfg.members {
            1 => String::new(),
            n => format!(" of network {} of {n}", run.resumed_networks() + 1),
        };
        out(&format!(
            "resuming after epoch {done} of {}{network} from {}\n",
            cfg.epochs,
            run.outputs().checkpoint.display()
        ))?;
        if threads != rayon::current_num_threads() {
            eprintln!(
                "warning: the run started on {threads} threads and continues on {}; the model \
                 will differ in its last bits from an uninterrupted run (use --threads {threads})",
                rayon::current_num_threads(),
            );
        }
    }
    let mut bar = Bar::new(cfg.epochs);
    let done = run.stop_when(interrupt_flag()).execute(&data, &mut bar)?;
    let s = &done.model.summary;
    // An ensemble's lines below give each network's best epoch instead.
    if done.model.networks() == 1 && s.epochs < s.planned_epochs {
        out(&format!(
            "stopped after epoch {}: no better validation accuracy for {} epochs\n",
            s.epochs,
            s.epochs - s.best_epoch
        ))?;
    }
    let o = &done.outputs;
    let mut text = String::new();
    if done.model.networks() > 1 {
        for (i, m) in done.model.each_network().enumerate() {
            let s = &m.summary;
            let stopped = if s.epochs < s.planned_epochs {
                format!(" (stopped after epoch {})", s.epochs)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "network {} (seed {}): best epoch {}{stopped}, val acc {:.2} %, test accuracy \
                 {:.2} %\n",
                i + 1,
                s.seed,
                s.best_epoch,
                100.0 * s.val_accuracy,
                100.0 * s.test_accuracy,
            ));
        }
        text.push_str(&format!(
            "test accuracy of the ensemble {:.2} % ({} images)\n",
            100.0 * done.test.accuracy,
            report::thousands(data.test.len()),
        ));
    } else {
        text.push_str(&format!(
            "best epoch {}: val acc {:.2} %\ntest accuracy {:.2} % ({} images)\n",
            s.best_epoch,
            100.0 * s.val_accuracy,
            100.0 * s.test_accuracy,
            report::thousands(data.test.len()),
        ));
    }
    text.push_str(&format!(
        "saved {} in {}; beside it: {}, {}, {}\n",
        o.model.display(),
        report::duration(started.elapsed().as_secs_f64()),
        o.history.display(),
        o.curves.display(),
        o.confusion.display(),
    ));
    out(&text)
}

/// `fmnist eval`
pub fn run_eval(a: &EvalArgs) -> anyhow::Result<()> {
    let mut models = a
        .models
        .iter()
        .map(|p| Classifier::load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let precision = parse_precision(&a.inference.precision)?;
    for model in &mut models {
        model.set_precision(precision);
    }
    if a.photos.is_some() && models.len() > 1 {
        anyhow::bail!("--photos measures one model at a time");
    }
    let data = data::load(&a.source.options())?;
    let evaluation = eval::evaluate_ensemble(&mut models, &data.test)?;
    let photos = a
        .photos
        .map(|n| photos::robustness(&mut models[0], &data.test, n as usize, 0));
    let metrics = eval::metrics(&evaluation, &data.test.labels, &models[0].classes);
    let real = match &a.photos_dir {
        Some(dir) => {
            let set = photo_folders::open(dir, a.labels.as_deref(), &models[0].classes)?;
            Some(photo_folders::evaluate(&mut models, &set)?)
        }
        None => None,
    };
    let mut pictures = match &a.report {
        Some(dir) => write_report(dir, &data.test, &evaluation, &metrics)?,
        None => Vec::new(),
    };
    if let (Some(dir), Some(real)) = (&a.report, &real) {
        let path = dir.join("photos.png");
        plots::save(&path, &plots::photos_sheet(real, &metrics.classes, 400)?)?;
        pictures.push(path);
    }
    if a.json {
        let mut json = serde_json::to_value(&metrics)?;
        json["precision"] = precision.name().into();
        if let Some(real) = &real {
            json["photos_dir"] = serde_json::to_value(real)?;
        }
        if let Some(rows) = &photos {
            json["photos"] = rows
                .iter()
                .map(|(style, acc)| serde_json::json!({"style": style.describe(), "accuracy": acc}))
                .collect();
        }
        return out(&format!("{json}\n"));
    }
    let mut text = String::new();
    for (path, model) in a.models.iter().zip(&models) {
        let name = model.describe();
        let origin = match (&model.summary.imported_from, model.summary.epochs) {
            (Some(source), 0) => format!("imported from {source}"),
            (Some(source), n) => format!("trained {n} epochs, imported from {source}"),
            (None, n) if model.networks() > 1 => format!("trained {n} epochs each"),
            (None, n) => format!("trained {n} epochs"),
        };
        text.push_str(&format!(
            "model {} ({name}, {} parameters, {origin}{}{})\n",
            path.display(),
            report::thousands(model.num_params()),
            if model.inference.flip_tta {
                ", flip TTA"
            } else {
                ""
            },
            match precision {
                nn::Precision::F32 => String::new(),
                p => format!(", inference in {}", p.name()),
            }
        ));
    }
    if models.len() > 1 {
        text.push_str(&format!(
            "ensemble of {} models (average of their probabilities)\n",
            models.len()
        ));
    }
    text.push_str(&report::metrics_table(&metrics));
    if let Some(rows) = &photos {
        text.push_str(&format!(
            "\nthe first {} test images as photos, through predict's preprocessing\n",
            report::thousands(a.photos.unwrap_or(0) as usize)
        ));
        for (style, acc) in rows {
            text.push_str(&format!(
                "  {:<52} {:6.2} %\n",
                style.describe(),
                100.0 * acc
            ));
        }
    }
    if let (Some(real), Some(dir)) = (&real, &a.photos_dir) {
        text.push_str(&report::photos_table(
            real,
            &metrics.classes,
            &dir.display().to_string(),
        ));
    }
    for p in pictures {
        text.push_str(&format!("wrote {}\n", p.display()));
    }
    out(&text)
}

/// Writes `eval --report`'s pictures into `dir`; returns their paths.
fn write_report(
    dir: &std::path::Path,
    test: &data::Dataset,
    evaluation: &eval::Evaluation,
    metrics: &eval::Metrics,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pictures = [
        (
            "confusion.png",
            plots::confusion_matrix(
                &metrics.confusion,
                &metrics.classes,
                &format!(
                    "Confusion matrix on the test set (accuracy {:.2} %)",
                    100.0 * metrics.accuracy
                ),
            )?,
        ),
        ("per_class.png", plots::class_scores(metrics)?),
        (
            "mistakes.png",
            plots::mistakes(test, evaluation, &metrics.classes, 36)?,
        ),
    ];
    let mut written = Vec::new();
    for (name, bytes) in pictures {
        let path = dir.join(name);
        plots::save(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// `fmnist predict`
pub fn run_predict(a: &PredictArgs) -> anyhow::Result<()> {
    let mut model = Classifier::load(&a.model)?;
    model.set_precision(parse_precision(&a.inference.precision)?);
    let inputs = predict::prepare_files(&a.images)?;
    let names: Vec<String> = a.images.iter().map(|p| p.display().to_string()).collect();
    let predictions = predict::rank_inputs(&mut model, &names, &inputs, a.top as usize);
    if let Some(dir) = &a.show_input {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for ((image, (name, renamed)), (input, prediction)) in a
            .images
            .iter()
            .zip(predict::input_names(&a.images))
            .zip(inputs.iter().zip(&predictions))
        {
            let path = dir.join(name);
            plots::save(&path, &predict::input_png(input.seen(prediction.view))?)?;
            if renamed {
                eprintln!(
                    "note: an earlier image has the name of {}: its input is {}",
                    image.display(),
                    path.display()
                );
            }
        }
    }
    let mut text = String::new();
    for p in &predictions {
        if a.json {
            text.push_str(&serde_json::to_string(p)?);
            text.push('\n');
        } else {
            text.push_str(&report::prediction(p));
        }
    }
    if a.json || predictions.len() == 1 {
        out(&text)
    } else {
        out(&text.replace("\n\n", "\n"))
    }
}

/// `fmnist bench`
pub fn run_bench(a: &BenchArgs) -> anyhow::Result<()> {
    let spec = architecture(&a.model, a.arch.as_deref())?;
    let data = data::load(&a.source.options())?;
    let cfg = bench::BenchConfig {
        batches: a.batches as usize,
        batch_size: a.batch_size as usize,
        precision: parse_precision(&a.precision)?,
        ..Default::default()
    };
    let r = bench::run(&data, spec, &cfg)?;
    if a.json {
        out(&format!("{}\n", serde_json::to_string(&r)?))
    } else {
        out(&bench::table(&r))
    }
}

/// A `--precision` value, or its one-line error where this CPU lacks the instructions.
fn parse_precision(name: &str) -> anyhow::Result<nn::Precision> {
    nn::Precision::parse(name).map_err(anyhow::Error::msg)
}

/// `fmnist serve`
pub fn run_serve(a: &ServeArgs) -> anyhow::Result<()> {
    let mut model = Classifier::load(&a.model)?;
    model.set_precision(parse_precision(&a.inference.precision)?);
    // Test images for the page's "random test image"; the server works without them.
    let mut options = a.source.options();
    options.offline = true;
    options.verbose = false;
    let samples = data::load(&options).ok().map(|d| d.test);
    let cfg = serve::ServeConfig {
        addr: a.addr,
        max_body: a.max_upload_mib as usize * 1024 * 1024,
        concurrency: a.concurrency as usize,
        threads: rayon::current_num_threads(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    let has_samples = samples.is_some();
    let name = a.model.display().to_string();
    runtime.block_on(serve::serve(model, samples, cfg, |addr| {
        let _ = out(&format!(
            "serving {name} on http://{addr}/{} (Ctrl-C to stop)\n",
            if has_samples {
                ""
            } else {
                " without test images (dataset not found)"
            }
        ));
    }))?;
    out("stopped\n")
}

/// Runs the command on a pool of `--threads` workers (default: all cores). The command
/// itself runs on a worker, so each parallel region starts where it is called instead of
/// waking the pool from outside and sleeping until it is done.
pub fn run_in_pool(cli: Cli) -> anyhow::Result<()> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads {
        builder = builder.num_threads(n as usize);
    }
    let pool = builder.build().context("cannot start worker threads")?;
    pool.install(|| run(cli))
}

/// `fmnist export`
pub fn run_export(a: &ExportArgs) -> anyhow::Result<()> {
    let file = PendingFile::reserve(&a.onnx)?;
    let model = Classifier::load(&a.model)?;
    let bytes = interop::onnx_export::to_onnx(&model)?;
    let shown = file.path().display().to_string();
    file.commit(&bytes)?;
    out(&format!(
        "wrote {shown}: ONNX opset {}, input \"{}\" [N, 1, 28, 28] (pixels / 255), output \"{}\" \
         [N, {}] probabilities{}\n",
        interop::onnx_export::OPSET,
        interop::onnx_export::INPUT,
        interop::onnx_export::OUTPUT,
        model.classes.len(),
        if model.inference.flip_tta {
            " (averaged with the mirror image, as fmnist does)"
        } else {
            ""
        }
    ))
}

/// `fmnist import`
pub fn run_import(a: &ImportArgs) -> anyhow::Result<()> {
    let file = PendingFile::reserve(&a.out)?;
    let arch = a.architecture()?;
    let scaling = InputScaling {
        scale: a.input_scale,
        mean: a.input_mean,
        std: a.input_std,
    };
    let (model, _) = interop::import(&a.file, arch.as_ref(), scaling)?;
    let bytes = model.to_bytes()?;
    let shown = file.path().display().to_string();
    file.commit(&bytes)?;
    let n = model.normalization;
    out(&format!(
        "imported {} ({} parameters, input normalisation mean {} std {}{})\nwrote {shown}\n",
        model.summary.imported_from.as_deref().unwrap_or("model"),
        report::text::thousands(model.net.num_params()),
        n.mean,
        n.std,
        if model.inference.flip_tta {
            ", flip test-time augmentation"
        } else {
            ""
        }
    ))
}
