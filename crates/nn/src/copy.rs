//! Copying short rows without a library call.
//!
//! `copy_from_slice` on a slice of run-time length calls `memmove`. The inner loops of
//! im2col, bias broadcasting and pooling copy millions of rows of 3 to a few hundred
//! values per batch, where the call costs as much as the copy; fixed-size pieces compile
//! to plain vector moves instead.

/// `dst.copy_from_slice(src)` in 16-value pieces (then 4s, then singles).
#[inline(always)]
pub(crate) fn copy_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_row lengths");
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (a, b) in (&mut d).zip(&mut s) {
        if let (Ok(a), Ok(b)) = (<&mut [f32; 16]>::try_from(a), <&[f32; 16]>::try_from(b)) {
            *a = *b;
        }
    }
    let mut d4 = d.into_remainder().chunks_exact_mut(4);
    let mut s4 = s.remainder().chunks_exact(4);
    for (a, b) in (&mut d4).zip(&mut s4) {
        if let (Ok(a), Ok(b)) = (<&mut [f32; 4]>::try_from(a), <&[f32; 4]>::try_from(b)) {
            *a = *b;
        }
    }
    for (a, &b) in d4.into_remainder().iter_mut().zip(s4.remainder()) {
        *a = b;
    }
}

/// Fills `dst` with copies of `row` (`dst.len()` a multiple of `row.len()`).
#[inline]
pub(crate) fn broadcast_rows(dst: &mut [f32], row: &[f32]) {
    for d in dst.chunks_exact_mut(row.len()) {
        copy_row(d, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length() {
        for n in 0..70 {
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut dst = vec![-1.0; n];
            copy_row(&mut dst, &src);
            assert_eq!(dst, src);
        }
        let mut out = vec![0.0; 9];
        broadcast_rows(&mut out, &[1.0, 2.0, 3.0]);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
