//! The inference kernels compiled for the best instruction set the CPU has, chosen at run
//! time (the rest of the crate is built for the baseline x86-64, so that one binary runs
//! everywhere).
//!
//! The kernels are written once, as plain loops over fixed-size blocks of output channels
//! that the compiler vectorises; each instruction set gets its own copy. Every lane does
//! the same arithmetic in the same order in each copy, and all of them use fused
//! multiply-adds where the CPU has them, so the AVX-512 and AVX2 copies agree bit for bit.

use super::tiles::Tiles;
use super::{direct, winograd};

/// Whether the generic copy may use fused multiply-adds (as fast as a multiply there).
const GENERIC_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// An instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX-512F with FMA (32 vector registers: 12-tile Winograd groups).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 with FMA (16 vector registers: 4-tile groups).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Whatever the build targets.
    Generic,
}

impl Isa {
    /// The best one this CPU runs.
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// Every instruction set this CPU runs, best first (for tests).
    #[cfg(test)]
    pub(super) fn available() -> Vec<Self> {
        let mut all = vec![Self::detect()];
        #[cfg(target_arch = "x86_64")]
        if all[0] == Isa::Avx512 {
            all.push(Isa::Avx2);
        }
        all.push(Isa::Generic);
        all.dedup();
        all
    }

    /// Tiles per Winograd group.
    pub(super) fn winograd_group(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 12,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 4,
            Isa::Generic => 4,
        }
    }

    /// [`winograd::group`] with [`Isa::winograd_group`] tiles.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd(
        self,
        t: &Tiles,
        x: &[f32],
        u: &[f32],
        bias: &[f32],
        first: usize,
        out: &mut [f32],
        ws: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { winograd_avx512(t, x, u, bias, first, out, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { winograd_avx2(t, x, u, bias, first, out, ws) },
            Isa::Generic => winograd::group::<4, GENERIC_FMA>(t, x, u, bias, first, out, ws),
        }
    }

    /// [`direct::tiles`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn direct(
        self,
        t: &Tiles,
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        first: usize,
        out: &mut [f32],
        ws: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { direct_avx512(t, x, wt, bias, first, out, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { direct_avx2(t, x, wt, bias, first, out, ws) },
            Isa::Generic => direct::tiles::<GENERIC_FMA>(t, x, wt, bias, first, out, ws),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn winograd_avx512(
    t: &Tiles,
    x: &[f32],
    u: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    winograd::group::<12, true>(t, x, u, bias, first, out, ws)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn winograd_avx2(
    t: &Tiles,
    x: &[f32],
    u: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    winograd::group::<4, true>(t, x, u, bias, first, out, ws)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_avx512(
    t: &Tiles,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    direct::tiles::<true>(t, x, wt, bias, first, out, ws)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_avx2(
    t: &Tiles,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    first: usize,
    out: &mut [f32],
    ws: &mut [f32],
) {
    direct::tiles::<true>(t, x, wt, bias, first, out, ws)
}
