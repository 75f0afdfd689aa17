//! What a training run shows in the terminal: a progress bar per epoch, one line when it
//! ends, and Ctrl-C turned into a request to stop.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use super::out;
use fmnist::report;
use fmnist::train::{EpochRecord, Progress};

/// Draws a progress bar per epoch and prints one line when it ends.
pub struct Bar {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl Bar {
    /// A bar for a run of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Self { bar: None, epochs }
    }
}

impl Progress for Bar {
    fn member_start(&mut self, member: usize, members: usize, seed: u64) {
        let _ = out(&format!("network {member} of {members} (seed {seed})\n"));
    }

    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:28}] {pos}/{len} {msg} ETA {eta}")
                .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step(&mut self, done: usize, loss: f64, accuracy: f64, images_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(format!(
                "loss {loss:.4} acc {:.2} % {images_per_s:.0} img/s",
                100.0 * accuracy
            ));
        }
    }

    fn epoch_end(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = out(&format!("{}\n", report::epoch_line(record, self.epochs)));
    }
}

/// A flag that Ctrl-C sets, so that training stops between two steps and says how to
/// resume; a second Ctrl-C ends the process at once.
pub fn interrupt_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
        });
    });
    &STOP
}
