//! The AMX kernel: a 32×32 output block as four 16×16 fp32 tiles, fed by two A tiles
//! (16 rows × 32 bf16) and two B tiles (16 pair rows × 16 columns) per 32 values of `k`.
//! Tile instructions are not among Rust's stable intrinsics, hence the `asm!`; the
//! compiler never uses tile registers itself, so they survive between statements.

use super::bf16::{BLOCK, Shape};
use std::arch::asm;

/// The tile configuration (`ldtilecfg`'s 64-byte operand): palette 1, tiles 0–7 each
/// 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Tile registers configured on this thread until dropped (`tilerelease`).
pub(crate) struct Tiles(());

impl Tiles {
    /// Configures the tiles on the calling thread. Callers must have checked
    /// [`crate::precision::Bf16Isa::Amx`] is available (which also asks Linux for the
    /// tile permission).
    pub(crate) fn configure() -> Self {
        let mut cfg = Config([0; 64]);
        cfg.0[0] = 1;
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64;
            cfg.0[48 + t] = 16;
        }
        // SAFETY: a valid palette-1 configuration; AMX is available (see above).
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
        Tiles(())
    }

    /// `out` (32×32 row-major) = rows `a` (32 × `s.kp` bf16, from value `k_offset`) ·
    /// pair rows `b` (`k_blocks`·16 × `s.n_pad`, from column block `ni`).
    ///
    /// # Safety
    /// The CPU runs AMX-BF16 (with the permission granted) and `self` configured it.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(
        &mut self,
        a: &[u16],
        s: &Shape,
        k_offset: usize,
        k_blocks: usize,
        b: &[u32],
        ni: usize,
        out: &mut [f32; BLOCK * BLOCK],
    ) {
        // SAFETY: `out` holds 32 rows of 32 values, BLOCK apart (the caller's contract
        // otherwise).
        unsafe {
            self.block_into(
                a,
                s,
                k_offset,
                k_blocks,
                b,
                ni,
                out.as_mut_ptr(),
                BLOCK,
                false,
            )
        }
    }

    /// As [`Tiles::block`], but the 32×32 result goes straight to rows `row_len` values
    /// apart from `o` (a full block of the caller's row-major output: no copy through
    /// a scratch block), added to what is there when `accumulate`.
    ///
    /// # Safety
    /// As [`Tiles::block`]; and `o` is valid for reads and writes of 32 rows of 32
    /// values, `row_len` apart.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block_into(
        &mut self,
        a: &[u16],
        s: &Shape,
        k_offset: usize,
        k_blocks: usize,
        b: &[u32],
        ni: usize,
        o: *mut f32,
        row_len: usize,
        accumulate: bool,
    ) {
        s.check_block(a, k_offset, k_blocks, b, ni);
        let so = row_len * 4;
        if accumulate {
            // SAFETY: the output's 32 rows of 128 bytes, `row_len` values apart, are
            // valid for reads by the caller's contract.
            unsafe {
                asm!(
                    "tileloadd tmm0, [{o0} + {so}*1]",
                    "tileloadd tmm1, [{o1} + {so}*1]",
                    "tileloadd tmm2, [{o2} + {so}*1]",
                    "tileloadd tmm3, [{o3} + {so}*1]",
                    o0 = in(reg) o,
                    o1 = in(reg) o.add(16),
                    o2 = in(reg) o.add(16 * row_len),
                    o3 = in(reg) o.add(16 * row_len + 16),
                    so = in(reg) so,
                    options(nostack, readonly),
                );
            }
        } else {
            self.zero();
        }
        for kb in 0..k_blocks {
            let at = k_offset + kb * BLOCK;
            let pb = ni * BLOCK + kb * BLOCK / 2 * s.n_pad;
            self.step(
                [
                    Operand::new(a, at, s.kp),
                    Operand::new(a, at + 16 * s.kp, s.kp),
                ],
                [
                    Operand::new(b, pb, s.n_pad),
                    Operand::new(b, pb + 16, s.n_pad),
                ],
            );
        }
        // SAFETY: the output is valid for writes of 32 rows of 32 values, `row_len`
        // apart (the caller's contract).
        unsafe { store_rows(o, row_len) };
    }
}

/// A tile operand: 16 rows of 64 bytes, `stride` elements apart, from `start` in a slice.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    ptr: *const T,
    stride_bytes: usize,
    data: std::marker::PhantomData<&'a [T]>,
}

impl<'a, T> Operand<'a, T> {
    /// The 16 rows of 64 bytes from `data[start]`, `stride` elements apart; panics unless
    /// they all lie inside `data`.
    #[inline(always)]
    pub(crate) fn new(data: &'a [T], start: usize, stride: usize) -> Self {
        let size = std::mem::size_of::<T>();
        let row = 64 / size;
        assert!(
            start + 15 * stride + row <= data.len(),
            "tile operand outside its buffer"
        );
        Self {
            // SAFETY: inside `data` (just checked).
            ptr: unsafe { data.as_ptr().add(start) },
            stride_bytes: stride * size,
            data: std::marker::PhantomData,
        }
    }
}

impl Tiles {
    /// Zeroes the four accumulator tiles (a 32×32 fp32 block: tiles 0–3 are its
    /// top-left, top-right, bottom-left and bottom-right 16×16 quarters).
    #[inline(always)]
    pub(crate) fn zero(&mut self) {
        // SAFETY: the tiles are configured (`self` exists) and AMX is available.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack)
            )
        };
    }

    /// Adds to the 32×32 block the products of the two A tiles (its top and bottom 16
    /// rows, 32 bf16 values each) and the two B tiles (its left and right 16 columns, 16
    /// pair rows each): one 32-value step of the inner dimension.
    #[inline(always)]
    pub(crate) fn step(&mut self, a: [Operand<'_, u16>; 2], b: [Operand<'_, u32>; 2]) {
        // SAFETY: each operand's 16 rows of 64 bytes lie inside its buffer (checked when
        // it was made; its lifetime keeps the buffer alive); AMX is configured.
        unsafe {
            asm!(
                "tileloadd tmm4, [{a0} + {sa0}*1]",
                "tileloadd tmm5, [{a1} + {sa1}*1]",
                "tileloadd tmm6, [{b0} + {sb0}*1]",
                "tileloadd tmm7, [{b1} + {sb1}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a[0].ptr,
                a1 = in(reg) a[1].ptr,
                b0 = in(reg) b[0].ptr,
                b1 = in(reg) b[1].ptr,
                sa0 = in(reg) a[0].stride_bytes,
                sa1 = in(reg) a[1].stride_bytes,
                sb0 = in(reg) b[0].stride_bytes,
                sb1 = in(reg) b[1].stride_bytes,
                options(nostack, readonly),
            )
        };
    }

    /// Stores the 32×32 block into `out` (row-major, 32 wide).
    #[inline(always)]
    pub(crate) fn store(&mut self, out: &mut [f32; BLOCK * BLOCK]) {
        // SAFETY: `out` holds 32 rows of 32 values; AMX is configured.
        unsafe { store_rows(out.as_mut_ptr(), BLOCK) };
    }
}

/// Stores the accumulator tiles' 32×32 block to the 32 rows of 32 values `row_len` apart
/// from `o`.
///
/// # Safety
/// AMX is configured on this thread, and `o` is valid for writes of those rows.
#[inline(always)]
unsafe fn store_rows(o: *mut f32, row_len: usize) {
    let so = row_len * 4;
    // SAFETY: by the contract above.
    unsafe {
        asm!(
            "tilestored [{o0} + {so}*1], tmm0",
            "tilestored [{o1} + {so}*1], tmm1",
            "tilestored [{o2} + {so}*1], tmm2",
            "tilestored [{o3} + {so}*1], tmm3",
            o0 = in(reg) o,
            o1 = in(reg) o.add(16),
            o2 = in(reg) o.add(16 * row_len),
            o3 = in(reg) o.add(16 * row_len + 16),
            so = in(reg) so,
            options(nostack),
        )
    };
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure` on this thread.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
