//! Exponential moving average of a network's weights (Polyak averaging).

use rayon::prelude::*;

use crate::{Network, Tensor};

/// Values per parallel task: small tensors stay on one thread.
const CHUNK: usize = 1 << 14;

/// A running average `ā ← d·ā + (1 − d)·w` of every tensor of a network (weights and
/// batch-norm statistics alike), updated after each optimizer step. The averaged weights
/// usually generalise better than the last ones, most visibly while the rate is high.
///
/// The decay warms up as `min(d, (1 + t)/(10 + t))` so that early steps, when the
/// average still holds the random initialisation, do not dominate it.
#[derive(Clone, Debug)]
pub struct Ema {
    decay: f32,
    updates: u64,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at `net`'s current tensors.
    pub fn new(net: &Network, decay: f32) -> Self {
        Self {
            decay,
            updates: 0,
            shadow: net.snapshot(),
        }
    }

    /// An average that continues from a checkpoint: `decay`, the `updates` made so far
    /// and the averaged tensors in [`Network::tensors`] order.
    pub fn restore(decay: f32, updates: u64, shadow: Vec<Tensor>) -> Self {
        Self {
            decay,
            updates,
            shadow,
        }
    }

    /// The configured decay.
    pub fn decay(&self) -> f32 {
        self.decay
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay used for the next update.
    fn current_decay(&self) -> f32 {
        let t = self.updates as f32;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Folds `net`'s current tensors into the average.
    pub fn update(&mut self, net: &Network) {
        let d = self.current_decay();
        self.updates += 1;
        for (avg, (_, w)) in self.shadow.iter_mut().zip(net.tensors()) {
            avg.data_mut()
                .par_chunks_mut(CHUNK)
                .zip(w.data().par_chunks(CHUNK))
                .for_each(|(a, w)| {
                    for (a, &w) in a.iter_mut().zip(w) {
                        *a = d * *a + (1.0 - d) * w;
                    }
                });
        }
    }

    /// Exchanges the averaged tensors with `net`'s (call twice to swap back).
    pub fn swap(&mut self, net: &mut Network) {
        for (avg, (_, w)) in self.shadow.iter_mut().zip(net.tensors_mut()) {
            std::mem::swap(avg, w);
        }
    }

    /// The averaged tensors, in [`Network::tensors`] order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LayerSpec, ModelSpec, Rng};

    fn net() -> Network {
        ModelSpec {
            name: String::new(),
            input: vec![3],
            init: Default::default(),
            layers: vec![LayerSpec::Linear {
                units: 2,
                bias: true,
            }],
        }
        .build(&mut Rng::new(1))
        .unwrap()
    }

    #[test]
    fn average_follows_the_formula_and_swaps_back() {
        let mut n = net();
        let w0: Vec<f32> = n.tensors()[0].1.data().to_vec();
        let mut ema = Ema::new(&n, 0.5);
        // First update: decay min(0.5, 1/10) = 0.1.
        for (_, t) in n.tensors_mut() {
            t.data_mut().iter_mut().for_each(|v| *v += 1.0);
        }
        ema.update(&n);
        let expect: Vec<f32> = w0.iter().map(|&w| 0.1 * w + 0.9 * (w + 1.0)).collect();
        assert_eq!(ema.tensors()[0].data(), &expect[..]);
        // Second: min(0.5, 2/11).
        ema.update(&n);
        let d = 2.0f32 / 11.0;
        let expect2: Vec<f32> = expect
            .iter()
            .zip(&w0)
            .map(|(&a, &w)| d * a + (1.0 - d) * (w + 1.0))
            .collect();
        assert_eq!(ema.tensors()[0].data(), &expect2[..]);
        let live: Vec<f32> = n.tensors()[0].1.data().to_vec();
        ema.swap(&mut n);
        assert_eq!(n.tensors()[0].1.data(), &expect2[..]);
        ema.swap(&mut n);
        assert_eq!(n.tensors()[0].1.data(), &live[..]);
    }
}
