//! The AVX512-BF16 kernel: a 32×32 output block in groups of 8 rows, each row's 32
//! columns in two registers, one `vdpbf16ps` per row, register and pair of `k`.

use super::bf16::{BLOCK, Shape};
use std::arch::x86_64::*;

/// Rows per register group: 8 rows × 2 registers = 16 accumulators.
const ROWS: usize = 8;

/// `out` (32×32 row-major) = rows `a` (32 × `s.kp` bf16, from value `k_offset`) · pair
/// rows `b` (`k_blocks`·16 × `s.n_pad`, from column block `ni`).
///
/// # Safety
/// The CPU runs AVX-512F, BW and BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn block(
    a: &[u16],
    s: &Shape,
    k_offset: usize,
    k_blocks: usize,
    b: &[u32],
    ni: usize,
    out: &mut [f32; BLOCK * BLOCK],
) {
    s.check_block(a, k_offset, k_blocks, b, ni);
    let pairs = k_blocks * BLOCK / 2;
    let row_pairs = s.kp / 2;
    // SAFETY: pair p of row r is at a[(r·kp + k_offset)/2 + p] (as u32), inside `a` by
    // `check_block`; b's pair row p holds n_pad ≥ (ni+1)·32 pairs.
    unsafe {
        let a32 = a.as_ptr().cast::<u32>().add(k_offset / 2);
        let b0 = b.as_ptr().add(ni * BLOCK);
        for g in 0..BLOCK / ROWS {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            for p in 0..pairs {
                let pb = b0.add(p * s.n_pad);
                let lo: __m512bh = std::mem::transmute(_mm512_loadu_si512(pb.cast()));
                let hi: __m512bh = std::mem::transmute(_mm512_loadu_si512(pb.add(16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let pair = a32.add((g * ROWS + r) * row_pairs + p).read_unaligned();
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, lo);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, hi);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let o = out.as_mut_ptr().add((g * ROWS + r) * BLOCK);
                _mm512_storeu_ps(o, acc[0]);
                _mm512_storeu_ps(o.add(16), acc[1]);
            }
        }
    }
}
