//! Fully connected (dense) layer.

use super::{Context, Layer, Mode, Param, ParamKind, TensorKey, WeightBias, batch_and_rest};
use crate::Precision;
use crate::copy::broadcast_rows;
use crate::matmul::bf16::{PackedB, matmul_bf16_packed_b};
use crate::matmul::{Mat, bf16_isa, column_sums, matmul_in};
use crate::{Init, Rng, Tensor};

/// Dense layer `y = x · Wᵀ + b`: `x` is `[n, in]`, `W` is `[out, in]`, `b` is `[out]`,
/// `y` is `[n, out]`.
pub struct Linear {
    inputs: usize,
    params: WeightBias,
    out_shape: Vec<usize>,
    /// Per-block partial bias gradients.
    parts: Vec<f32>,
    /// The arithmetic of the last forward pass, which its backward repeats.
    precision: Precision,
    /// The weights packed for bf16 inference, kept while they do not change.
    packed: PackedB,
    /// Whether `packed` holds the current weights.
    packed_current: bool,
}

impl Linear {
    /// A dense layer for `[inputs]`-shaped examples.
    pub fn new(
        input: &[usize],
        units: usize,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self, crate::Error> {
        let [inputs] = *input else {
            return Err(crate::Error::Spec(format!(
                "linear needs a flat [features] input (add a flatten layer), got {input:?}"
            )));
        };
        if units == 0 || inputs == 0 {
            return Err(crate::Error::Spec(
                "linear needs at least one input and one unit".into(),
            ));
        }
        let weight = init.weight(&[units, inputs], inputs, units, rng);
        let bias = bias.then(|| Param::new(init.bias(units, inputs, rng), ParamKind::Bias));
        Ok(Self {
            inputs,
            params: WeightBias {
                weight: Param::new(weight, ParamKind::Weight),
                bias,
            },
            out_shape: vec![units],
            parts: Vec::new(),
            precision: Precision::F32,
            packed: PackedB::default(),
            packed_current: false,
        })
    }
}

impl Layer for Linear {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn flops(&self) -> u64 {
        2 * (self.inputs * self.out_shape[0]) as u64
    }

    // y = x · Wᵀ + b
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        self.precision = ctx.precision;
        let (n, _) = batch_and_rest(x);
        let out = self.out_shape[0];
        y.resize_batch(n, &self.out_shape);
        if let Some(b) = &self.params.bias {
            broadcast_rows(y.data_mut(), b.value.data());
        }
        let w = Mat::new(self.params.weight.value.data(), out, self.inputs).t();
        let (xv, bias) = (
            Mat::new(x.data(), n, self.inputs),
            self.params.bias.is_some(),
        );
        // Where matmul_in would multiply in bf16, the same values from weights packed once.
        match bf16_isa(self.precision, &xv, &w) {
            Some(isa) if ctx.mode == Mode::Eval => {
                if !self.packed_current {
                    self.packed.pack(isa, w);
                    self.packed_current = true;
                }
                matmul_bf16_packed_b(isa, y.data_mut(), xv, &self.packed, bias);
            }
            _ => matmul_in(self.precision, y.data_mut(), xv, w, bias),
        }
    }

    // dW = dyᵀ · x;  db = Σ_n dy;  dx = dy · W
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let (n, _) = batch_and_rest(x);
        let out = self.out_shape[0];
        let dyv = Mat::new(dy.data(), n, out);
        matmul_in(
            self.precision,
            self.params.weight.grad.data_mut(),
            dyv.t(),
            Mat::new(x.data(), n, self.inputs),
            false,
        );
        if let Some(b) = &mut self.params.bias {
            column_sums(b.grad.data_mut(), dy.data(), &mut self.parts);
        }
        if let Some(dx) = dx {
            dx.resize(x.shape());
            let w = Mat::new(self.params.weight.value.data(), out, self.inputs);
            matmul_in(self.precision, dx.data_mut(), dyv, w, false);
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.packed_current = false;
        self.params.params_mut()
    }

    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        self.params.tensors()
    }

    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        self.packed_current = false;
        self.params.tensors_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bf16Isa;

    fn run(l: &mut Linear, x: &Tensor, mode: Mode, precision: Precision) -> Vec<f32> {
        let mut y = Tensor::default();
        let mut rng = Rng::new(0);
        let ctx = &mut Context {
            mode,
            rng: &mut rng,
            precision,
        };
        l.forward(x, &mut y, ctx);
        y.data().to_vec()
    }

    #[test]
    fn bf16_inference_reuses_the_packed_weights_until_they_change() {
        let isas = Bf16Isa::available();
        if isas.is_empty() {
            eprintln!("no bf16 instructions here: the packed path cannot run");
            return;
        }
        let mut rng = Rng::new(7);
        let mut l = Linear::new(&[100], 40, true, Init::Torch, &mut rng).unwrap();
        let values = |n: usize, rng: &mut Rng| (0..n).map(|_| rng.uniform() - 0.5).collect();
        let x = Tensor::from_vec(&[64, 100], values(6400, &mut rng)).unwrap();
        for isa in isas {
            let p = Precision::Bf16(isa);
            // Train mode multiplies through matmul_in, which packs the weights each time.
            let eval = run(&mut l, &x, Mode::Eval, p);
            assert_eq!(eval, run(&mut l, &x, Mode::Train, p), "{isa:?}");
            assert_ne!(eval, run(&mut l, &x, Mode::Eval, Precision::F32), "{isa:?}");
            assert_eq!(eval, run(&mut l, &x, Mode::Eval, p), "{isa:?}");
            l.params_mut()[0].value.data_mut()[3] += 0.25;
            let changed = run(&mut l, &x, Mode::Eval, p);
            assert_ne!(changed, eval, "{isa:?}: stale packed weights");
            assert_eq!(changed, run(&mut l, &x, Mode::Train, p), "{isa:?}");
            l.tensors_mut()[0].1.data_mut()[5] -= 0.25;
            let again = run(&mut l, &x, Mode::Eval, p);
            assert_ne!(again, changed, "{isa:?}: stale packed weights");
            assert_eq!(again, run(&mut l, &x, Mode::Train, p), "{isa:?}");
        }
    }
}
