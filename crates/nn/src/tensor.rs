//! A dense f32 tensor: a shape and a row-major buffer that layers reuse between batches.

/// A dense, row-major f32 tensor.
///
/// Activations are NHWC (`[batch, height, width, channels]`) or `[batch, features]`.
/// Buffers are resized in place so that a layer's workspaces are allocated once per run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Wraps `data`, which must hold exactly `shape.iter().product()` values.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self, crate::Error> {
        let want: usize = shape.iter().product();
        if want != data.len() {
            return Err(crate::Error::Shape(format!(
                "shape {shape:?} needs {want} values, got {}",
                data.len()
            )));
        }
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the tensor, returning its buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The first dimension (the batch for activations).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Changes the shape, reusing the buffer's capacity. New values are unspecified
    /// (zero on growth); callers overwrite them.
    pub fn resize(&mut self, shape: &[usize]) {
        if self.shape != shape {
            self.shape.clear();
            self.shape.extend_from_slice(shape);
        }
        let n = shape.iter().product();
        self.data.resize(n, 0.0);
    }

    /// Reshapes to `batch` followed by `rest`, reusing the buffer; contents unspecified.
    pub fn resize_batch(&mut self, batch: usize, rest: &[usize]) {
        let mut shape = Vec::with_capacity(rest.len() + 1);
        shape.push(batch);
        shape.extend_from_slice(rest);
        self.resize(&shape);
    }

    /// Sets every value to zero.
    pub fn fill_zero(&mut self) {
        self.data.fill(0.0);
    }

    /// Copies shape and values from `other`, reusing this buffer.
    pub fn copy_from(&mut self, other: &Tensor) {
        self.resize(&other.shape);
        self.data.copy_from_slice(&other.data);
    }
}
