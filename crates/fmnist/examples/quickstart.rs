//! The Keras course assignment in Rust: load, define, fit, evaluate, predict.
//! Run it with `cargo run --release --example quickstart [IMAGE]`.

use fmnist::train::{Run, Silent};
use fmnist::{DataOptions, TrainConfig, data, eval, model, predict};

fn main() -> anyhow::Result<()> {
    // keras.datasets.fashion_mnist.load_data(): found locally or downloaded, verified.
    let data = data::load(&DataOptions::default())?;

    // model = Sequential([...]); model.compile(Adam(1e-3), cross-entropy); batch 128.
    let spec = model::simple();
    let config = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };

    // model.fit(): keeps the epoch with the best validation accuracy, and writes the
    // model with its history, curves and confusion matrix (outputs checked first).
    let run = Run::new(spec, config, "quickstart.safetensors".as_ref())?;
    let mut model = run.execute(&data, &mut Silent)?.model;

    // model.evaluate()
    let test = eval::evaluate(&mut model, &data.test);
    println!("test accuracy {:.4}", test.accuracy);

    // model.predict() on raw 28×28 pixels, and on an image file of any size.
    let probabilities = model.probabilities(data.test.image(0));
    let best = nn::loss::argmax(&probabilities);
    println!(
        "first test image: {} ({:.3})",
        model.classes[best], probabilities[best]
    );
    if let Some(file) = std::env::args().nth(1) {
        let pixels = predict::preprocess(&predict::load_image(file.as_ref())?);
        let ranked = predict::rank(&mut model, &[file], &pixels, 3);
        println!(
            "{}: {} ({:.3})",
            ranked[0].file, ranked[0].class, ranked[0].probability
        );
    }
    Ok(())
}
