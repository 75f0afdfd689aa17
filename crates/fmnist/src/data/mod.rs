//! Fashion-MNIST: the four official files, found or downloaded, verified and split.

pub mod idx;
mod locate;

use std::path::PathBuf;

use anyhow::{Context, bail};
use nn::{Rng, Tensor};

pub use locate::{DataOptions, Origin, cache_dir, download_all, load};

/// Class names in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The labels of the footwear classes (Sandal, Sneaker, Ankle boot): the only ones that
/// come in pairs.
pub const FOOTWEAR: [usize; 3] = [5, 7, 9];

/// Image side in pixels.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

/// One of the four official files: its name without `.gz`, and the MD5 and size of its
/// decompressed bytes (the Debian package re-compresses the files, so only the
/// decompressed bytes can be checked against the published sums).
#[derive(Clone, Copy, Debug)]
pub struct DataFile {
    /// File name without `.gz`.
    pub stem: &'static str,
    /// MD5 of the decompressed bytes, lowercase hex.
    pub md5: &'static str,
    /// Decompressed size in bytes.
    pub size: usize,
}

/// The training images, training labels, test images and test labels.
pub const FILES: [DataFile; 4] = [
    DataFile {
        stem: "train-images-idx3-ubyte",
        md5: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        size: 47_040_016,
    },
    DataFile {
        stem: "train-labels-idx1-ubyte",
        md5: "9018921c3c673c538a1fc5bad174d6f9",
        size: 60_008,
    },
    DataFile {
        stem: "t10k-images-idx3-ubyte",
        md5: "8181f5470baa50b63fa0f6fddb340f0a",
        size: 7_840_016,
    },
    DataFile {
        stem: "t10k-labels-idx1-ubyte",
        md5: "15d484375f8d13e6eb1aabb0c3f46965",
        size: 10_008,
    },
];

/// Images (u8, `rows × cols` each, row-major) and their labels.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// All pixels, image after image.
    pub images: Vec<u8>,
    /// One label (0–9) per image.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// A dataset from raw pixels (784 per image) and labels (0–9), checking that they
    /// agree.
    pub fn from_raw(images: Vec<u8>, labels: Vec<u8>) -> anyhow::Result<Self> {
        if !images.len().is_multiple_of(PIXELS) {
            bail!(
                "{} pixels is not a whole number of 28×28 images",
                images.len()
            );
        }
        let n = labels.len();
        Self::from_idx(
            idx::Idx {
                dims: vec![images.len() / PIXELS, SIDE, SIDE],
                data: images,
            },
            idx::Idx {
                dims: vec![n],
                data: labels,
            },
        )
    }

    /// Builds a dataset from parsed IDX images and labels, checking that they agree.
    pub fn from_idx(images: idx::Idx, labels: idx::Idx) -> anyhow::Result<Self> {
        if images.dims.len() != 3 || images.dims[1] != SIDE || images.dims[2] != SIDE {
            bail!(
                "images have dimensions {:?}, expected [count, 28, 28]",
                images.dims
            );
        }
        if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
            bail!(
                "{} images but label dimensions {:?}",
                images.dims[0],
                labels.dims
            );
        }
        if let Some(bad) = labels
            .data
            .iter()
            .find(|&&l| l as usize >= CLASS_NAMES.len())
        {
            bail!("label {bad} is not a class (0–9)");
        }
        Ok(Self {
            images: images.data,
            labels: labels.data,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset {
            images: Vec::with_capacity(indices.len() * PIXELS),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.images.extend_from_slice(self.image(i));
            out.labels.push(self.labels[i]);
        }
        out
    }

    /// Images per class.
    pub fn class_counts(&self) -> [usize; 10] {
        let mut counts = [0; 10];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Splits off `size` images chosen at random (by `seed`) as a validation set; returns
    /// `(train, validation)`. Model selection uses it so that it never sees the test set.
    pub fn split_validation(&self, size: usize, seed: u64) -> anyhow::Result<(Dataset, Dataset)> {
        if size >= self.len() {
            bail!(
                "validation size {size} leaves no training images (of {})",
                self.len()
            );
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).fork(0x5eed_5b17).shuffle(&mut order);
        let (val, train) = order.split_at(size);
        let (mut train, mut val) = (train.to_vec(), val.to_vec());
        // Keep the original order within each part: splitting is selection, not shuffling.
        train.sort_unstable();
        val.sort_unstable();
        Ok((self.subset(&train), self.subset(&val)))
    }
}

/// Training and test sets, and where they came from.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    /// The 60,000 training images.
    pub train: Dataset,
    /// The 10,000 test images.
    pub test: Dataset,
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// How that directory was chosen.
    pub origin: Origin,
}

impl FashionMnist {
    /// Sets a library caller gave (arrays from Python, say), with no directory behind
    /// them; `test` may be empty, and training then measures no test accuracy.
    pub fn in_memory(train: Dataset, test: Dataset) -> Self {
        Self {
            train,
            test,
            dir: PathBuf::new(),
            origin: Origin::Memory,
        }
    }
}

/// How pixels become network inputs: `x = (pixel/255 − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Mean of pixel/255 over the training set.
    pub mean: f32,
    /// Standard deviation of pixel/255 over the training set.
    pub std: f32,
}

impl Default for Normalization {
    /// Fashion-MNIST's training-set statistics.
    fn default() -> Self {
        Self {
            mean: 0.2860,
            std: 0.3530,
        }
    }
}

impl Normalization {
    /// Checks that the statistics are usable: pixel/255 has its mean in [0, 1] and its
    /// deviation in (0, 1], so a mean outside [−1, 2] or a deviation outside
    /// [0.001, 10] (0.001 keeps 0–255 inputs, at 1/255, possible) is a damaged file, and
    /// a tiny deviation would turn every input into infinities.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(-1.0..=2.0).contains(&self.mean) || !(1e-3..=10.0).contains(&self.std) {
            bail!(
                "invalid input normalisation (mean {}, std {}): the mean must be in [-1, 2] \
                 and the std in [0.001, 10]",
                self.mean,
                self.std
            );
        }
        Ok(())
    }

    /// Fills `out` (`[n, 28, 28, 1]`) with the normalised images of `images` (u8, image after image).
    pub fn batch_into(&self, images: &[u8], out: &mut Tensor) {
        out.resize(&[images.len() / PIXELS, SIDE, SIDE, 1]);
        self.normalise(images, out.data_mut());
    }

    /// Like [`Normalization::batch_into`] for the images of `data` at `indices`.
    pub fn gather_into(&self, data: &Dataset, indices: &[usize], out: &mut Tensor) {
        out.resize(&[indices.len(), SIDE, SIDE, 1]);
        for (dst, &i) in out.data_mut().chunks_exact_mut(PIXELS).zip(indices) {
            self.normalise(data.image(i), dst);
        }
    }

    /// `dst[k] = (pixels[k]/255 − mean) / std`.
    fn normalise(&self, pixels: &[u8], dst: &mut [f32]) {
        let scale = 1.0 / (255.0 * self.std);
        let shift = self.mean / self.std;
        for (o, &p) in dst.iter_mut().zip(pixels) {
            *o = p as f32 * scale - shift;
        }
    }
}

/// Lowercase hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses and checks one file's decompressed bytes against its published checksum.
pub(crate) fn verify(file: &DataFile, bytes: &[u8]) -> anyhow::Result<()> {
    let sum = md5_hex(bytes);
    if sum != file.md5 {
        bail!(
            "checksum mismatch: MD5 of the decompressed {} bytes is {sum}, expected {} ({} bytes)",
            bytes.len(),
            file.md5,
            file.size
        );
    }
    Ok(())
}

/// Reads, decompresses, parses and verifies one file.
pub(crate) fn read_verified(path: &std::path::Path, file: &DataFile) -> anyhow::Result<idx::Idx> {
    let bytes = idx::read_maybe_gz(path)?;
    // Checksummed before parsing so that the 47 MB of images need not be copied; a
    // malformed file is still reported as malformed rather than as a mere mismatch.
    let checked = verify(file, &bytes);
    let parsed = idx::parse_owned(bytes)
        .with_context(|| format!("{} is not a valid IDX file", path.display()))?;
    checked.with_context(|| format!("{} is corrupt", path.display()))?;
    Ok(parsed)
}
