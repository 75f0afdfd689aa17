//! Weight layouts: fmnist keeps activations NHWC and convolution weights `[oc, k, k, c]`;
//! ONNX and PyTorch use NCHW and `[oc, c, k, k]` (OIHW). These functions move between them.

/// `[oc, c, k, k]` (OIHW) weights from fmnist's `[oc, k, k, c]`.
pub fn oihw_from_ohwi(w: &[f32], oc: usize, k: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..oc {
        for y in 0..k {
            for x in 0..k {
                for ch in 0..c {
                    out[((o * c + ch) * k + y) * k + x] = w[((o * k + y) * k + x) * c + ch];
                }
            }
        }
    }
    out
}

/// fmnist's `[oc, k, k, c]` weights from `[oc, c, k, k]` (OIHW).
pub fn ohwi_from_oihw(w: &[f32], oc: usize, k: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..oc {
        for ch in 0..c {
            for y in 0..k {
                for x in 0..k {
                    out[((o * k + y) * k + x) * c + ch] = w[((o * c + ch) * k + y) * k + x];
                }
            }
        }
    }
    out
}

/// For each position `j` of fmnist's flattened `[h, w, c]` map (NHWC order), the
/// position of the same value in an NCHW flatten (PyTorch's `nn.Flatten`, ONNX's
/// `Flatten` of an NCHW tensor).
pub fn nchw_positions(h: usize, w: usize, c: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                out.push((ch * h + y) * w + x);
            }
        }
    }
    out
}

/// A `[rows, from.len()]` matrix whose column `j` is column `from[j]` of `m`.
pub fn gather_columns(m: &[f32], from: &[usize]) -> Vec<f32> {
    let cols = from.len();
    let mut out = Vec::with_capacity(m.len());
    for row in m.chunks_exact(cols) {
        out.extend(from.iter().map(|&j| row[j]));
    }
    out
}

/// `values` reordered so that entry `j` is `values[from[j]]`.
pub fn gather(values: &[f32], from: &[usize]) -> Vec<f32> {
    from.iter().map(|&j| values[j]).collect()
}

/// The transpose of a `[rows, cols]` matrix.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_layouts_round_trip_and_place_each_value() {
        let (oc, k, c) = (3, 2, 4);
        let w: Vec<f32> = (0..oc * k * k * c).map(|i| i as f32).collect();
        let oihw = oihw_from_ohwi(&w, oc, k, c);
        // fmnist [o=2, y=1, x=0, ch=3] is OIHW [o=2, ch=3, y=1, x=0].
        assert_eq!(
            oihw[((2 * c + 3) * k + 1) * k],
            w[((2 * k + 1) * k) * c + 3]
        );
        assert_eq!(ohwi_from_oihw(&oihw, oc, k, c), w);
    }

    #[test]
    fn nchw_positions_are_a_permutation_that_matches_both_flattens() {
        let (h, w, c) = (2, 3, 4);
        let p = nchw_positions(h, w, c);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..h * w * c).collect::<Vec<_>>());
        // The value at (y=1, x=2, ch=3): NHWC index (1*3+2)*4+3 = 23, NCHW 3*6+1*3+2 = 23.
        assert_eq!(p[23], 23);
        // (y=0, x=1, ch=0): NHWC 4, NCHW 1.
        assert_eq!(p[4], 1);
    }

    #[test]
    fn gather_columns_and_transpose() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3
        assert_eq!(
            gather_columns(&m, &[2, 0, 1]),
            [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]
        );
        assert_eq!(transpose(&m, 2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
