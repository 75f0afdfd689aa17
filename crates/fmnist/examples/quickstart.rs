//! The classic Keras workflow with the fmnist library: load the data, build the `simple`
//! CNN, fit, evaluate, predict. Run: `cargo run --release --example quickstart`.

use fmnist::{Classifier, DataOptions, TrainConfig, data, eval, models, predict, train};

fn main() -> anyhow::Result<()> {
    // keras.datasets.fashion_mnist.load_data(): found locally or downloaded, verified.
    let data = data::load(&DataOptions::default())?;

    // model = Sequential([...]); model.compile(Adam(1e-3), cross-entropy); batch 128.
    let spec = models::simple();
    let config = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };

    // model.fit(): keeps the epoch with the best validation accuracy.
    let outcome = train(&data, spec, &config, &mut train::Silent)?;
    for epoch in &outcome.history {
        println!(
            "epoch {}: val accuracy {:.4}",
            epoch.epoch, epoch.val_accuracy
        );
    }
    let mut model: Classifier = outcome.model;

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
    if let Some(path) = std::env::args().nth(1) {
        let pixels = predict::preprocess(&predict::load_image(path.as_ref())?);
        let ranked = predict::rank(&mut model, &[path], &pixels, 3);
        println!(
            "{}: {} ({:.3})",
            ranked[0].file, ranked[0].class, ranked[0].probability
        );
    }

    model.save("quickstart.safetensors".as_ref())?;
    Ok(())
}
