//! Fully connected (dense) layer.

use super::{Context, Layer, Param, ParamKind, TensorKey, WeightBias, batch_and_rest};
use crate::Precision;
use crate::copy::broadcast_rows;
use crate::matmul::{Mat, column_sums, matmul_in};
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
        matmul_in(
            self.precision,
            y.data_mut(),
            Mat::new(x.data(), n, self.inputs),
            Mat::new(self.params.weight.value.data(), out, self.inputs).t(),
            self.params.bias.is_some(),
        );
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
        self.params.params_mut()
    }

    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        self.params.tensors()
    }

    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        self.params.tensors_mut()
    }
}
