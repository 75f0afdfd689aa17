//! Matrix products: fp32 through the `gemm` crate, with strides so that transposes cost
//! nothing, or bf16 with fp32 accumulation through AMX or AVX512-BF16 ([`bf16`]).

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512bf16;
pub mod bf16;

use crate::precision::{Bf16Isa, Precision};
use gemm::Parallelism;

/// A read-only row-major matrix view, optionally transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Mat<'a> {
    /// `data` as a `rows × cols` row-major matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix buffer too small");
        Self {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// `rows × cols` values whose rows start `row_stride` apart (a column slice of a
    /// wider matrix).
    pub fn with_stride(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(cols <= row_stride, "row stride shorter than a row");
        assert!(
            rows == 0 || data.len() >= (rows - 1) * row_stride + cols,
            "matrix buffer too small"
        );
        Self {
            data,
            rows,
            cols,
            row_stride: row_stride as isize,
            col_stride: 1,
        }
    }

    /// The transpose (a view: no data moves).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// Row blocks in [`matmul_tn_reduce`]: fixed, so that results do not depend on the
/// number of threads.
const REDUCE_CHUNKS: usize = 8;

/// `dst = aᵀ · b` for tall `a` (`rows × m`) and `b` (`rows × n`), the shape of weight
/// gradients (`rows` = batch positions, `m × n` small). `gemm` parallelises over the
/// output, which is too small here; instead the rows are split into fixed blocks, each
/// block's product computed on one thread into `parts`, and the blocks summed in order.
pub fn matmul_tn_reduce<'a>(dst: &mut [f32], a: Mat<'a>, b: Mat<'a>, parts: &mut Vec<f32>) {
    use rayon::prelude::*;
    assert_eq!(a.rows, b.rows, "row counts differ");
    let (rows, m, n) = (a.rows, a.cols, b.cols);
    let (per, chunks) = row_blocks(rows);
    parts.resize(chunks * m * n, 0.0);
    parts
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(i, part)| {
            let (start, end) = (i * per, ((i + 1) * per).min(rows));
            let block = |x: Mat<'a>| -> Mat<'a> {
                Mat {
                    data: &x.data[(start as isize * x.row_stride) as usize..],
                    rows: end.saturating_sub(start),
                    ..x
                }
            };
            matmul_with(part, block(a).t(), block(b), false, Parallelism::None);
        });
    sum_parts(&mut dst[..m * n], parts);
}

/// Rows per block and the number of blocks for a blocked reduction over `rows`; every
/// block is non-empty (18 rows make 6 blocks of 3, not 8).
fn row_blocks(rows: usize) -> (usize, usize) {
    let per = rows.div_ceil(REDUCE_CHUNKS).max(1);
    (per, rows.div_ceil(per).max(1))
}

/// `dst` = the sum of the `dst.len()`-sized parts, added in order.
fn sum_parts(dst: &mut [f32], parts: &[f32]) {
    dst.copy_from_slice(&parts[..dst.len()]);
    add_parts(dst, &parts[dst.len()..]);
}

/// `dst` += each `dst.len()`-sized part of `parts`, in order.
pub(crate) fn add_parts(dst: &mut [f32], parts: &[f32]) {
    for part in parts.chunks_exact(dst.len()) {
        for (d, &p) in dst.iter_mut().zip(part) {
            *d += p;
        }
    }
}

/// `dst[j] = Σ_i rows[i][j]` over a row-major `rows` of width `dst.len()` (bias
/// gradients), as a blocked reduction like [`matmul_tn_reduce`].
pub fn column_sums(dst: &mut [f32], rows: &[f32], parts: &mut Vec<f32>) {
    use rayon::prelude::*;
    let width = dst.len();
    let count = rows.len() / width.max(1);
    let (per, chunks) = row_blocks(count);
    parts.resize(chunks * width, 0.0);
    parts
        .par_chunks_mut(width)
        .zip(rows.par_chunks(per * width))
        .for_each(|(part, block)| {
            part.fill(0.0);
            for row in block.chunks_exact(width) {
                for (a, &v) in part.iter_mut().zip(row) {
                    *a += v;
                }
            }
        });
    sum_parts(dst, parts);
}

/// The parallelism to hand `gemm`: the current rayon pool's threads.
pub fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major `a.rows × b.cols`.
pub fn matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    matmul_with(dst, a, b, accumulate, parallelism());
}

/// The bf16 instruction set that `a · b` runs on in `precision`, or `None` for fp32. A
/// bf16 product with a side shorter than 32 (the 1-channel first convolution, 10-class
/// output) runs in fp32: its blocks would be mostly padding, and such products are bound
/// by memory, not arithmetic.
pub(crate) fn bf16_isa(precision: Precision, a: &Mat<'_>, b: &Mat<'_>) -> Option<Bf16Isa> {
    match precision {
        Precision::Bf16(isa) if a.rows.min(a.cols).min(b.cols) >= bf16::BLOCK => Some(isa),
        _ => None,
    }
}

/// [`matmul`] in the given precision (in fp32 where [`bf16_isa`] says so).
pub fn matmul_in(precision: Precision, dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    match bf16_isa(precision, &a, &b) {
        Some(isa) => bf16::matmul_bf16(isa, dst, a, b, accumulate),
        None => matmul(dst, a, b, accumulate),
    }
}

/// [`matmul_tn_reduce`] in the given precision (bf16 splits the rows into fixed blocks
/// of its own; a side shorter than 32 runs in fp32, as in [`matmul_in`]).
pub fn matmul_tn_reduce_in<'a>(
    precision: Precision,
    dst: &mut [f32],
    a: Mat<'a>,
    b: Mat<'a>,
    parts: &mut Vec<f32>,
) {
    match bf16_isa(precision, &a.t(), &b) {
        Some(isa) => bf16::matmul_bf16(isa, dst, a.t(), b, false),
        None => matmul_tn_reduce(dst, a, b, parts),
    }
}

/// [`matmul`] with explicit parallelism (single-threaded calls inside parallel loops).
pub fn matmul_with(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool, par: Parallelism) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(dst.len() >= m * n, "destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above bound every index gemm touches: a is rows×cols within
    // a.data (checked in Mat::new, and transposition swaps strides consistently), b likewise,
    // and dst holds m×n row-major values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr(),
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn blocked_reduction_matches_naive() {
        for rows in [1, 5, 8, 18, 37, 1000] {
            let (m, n) = (4, 3);
            let a: Vec<f32> = (0..rows * m).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let at: Vec<f32> = (0..m * rows)
                .map(|i| a[(i % rows) * m + i / rows])
                .collect();
            let want = naive(&at, &b, m, rows, n);
            let mut got = vec![0.0; m * n];
            matmul_tn_reduce(
                &mut got,
                Mat::new(&a, rows, m),
                Mat::new(&b, rows, n),
                &mut Vec::new(),
            );
            for (x, y) in got.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{rows}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(&mut c, Mat::new(&a, m, k), Mat::new(&b, k, n), false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // (bᵀ)ᵀ and (aᵀ)ᵀ via stored transposes.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c2 = vec![1.0; m * n];
        matmul(
            &mut c2,
            Mat::new(&at, k, m).t(),
            Mat::new(&bt, n, k).t(),
            true,
        );
        for (x, y) in c2.iter().zip(&want) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
    }
}
