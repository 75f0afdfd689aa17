//! The inference kernels compiled for the best instruction set the CPU has, chosen at run
//! time (the rest of the crate is built for the baseline x86-64, so that one binary runs
//! everywhere).
//!
//! The kernels are written once, as plain loops over fixed-size blocks of output channels
//! that the compiler vectorises; each instruction set gets its own copy. Every lane does
//! the same arithmetic in the same order in each copy, and all of them use fused
//! multiply-adds where the CPU has them, so the AVX-512 and AVX2 copies agree bit for bit.

use super::tiles::Pass;
use super::winograd_train::OutputGrad;
use super::{direct, train, winograd, winograd_train};

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

    /// Tiles per group of [`winograd_train::backward`]: each keeps one block of output
    /// channels of its transformed gradient in registers.
    pub(super) fn winograd_backward_group(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 12,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 2,
            Isa::Generic => 2,
        }
    }

    /// [`winograd::group`] with [`Isa::winograd_group`] tiles.
    pub(super) fn winograd(self, p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { winograd_avx512(p, first, out, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { winograd_avx2(p, first, out, ws) },
            Isa::Generic => winograd::group::<4, GENERIC_FMA>(p, first, out, ws),
        }
    }

    /// [`direct::tiles`].
    pub(super) fn direct(self, p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { direct_avx512(p, first, out, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { direct_avx2(p, first, out, ws) },
            Isa::Generic => direct::tiles::<GENERIC_FMA>(p, first, out, ws),
        }
    }
    /// [`train::forward`].
    pub(super) fn train_forward(
        self,
        p: &Pass,
        first: usize,
        out: &mut [f32],
        won: &mut [u8],
        patch: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { train_forward_avx512(p, first, out, won, patch) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { train_forward_avx2(p, first, out, won, patch) },
            Isa::Generic => train::forward(p, first, out, won, patch),
        }
    }

    /// [`winograd_train::forward`] with [`Isa::winograd_group`] tiles.
    pub(super) fn winograd_train_forward(
        self,
        p: &Pass,
        first: usize,
        out: &mut [f32],
        won: &mut [u8],
        ws: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { winograd_forward_avx512(p, first, out, won, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { winograd_forward_avx2(p, first, out, won, ws) },
            Isa::Generic => winograd_train::forward_f32::<4>(p, first, out, won, ws),
        }
    }

    /// [`winograd_train::backward`] with [`Isa::winograd_backward_group`] tiles.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd_train_backward(
        self,
        p: &Pass,
        ut: &[f32],
        image: usize,
        grad: OutputGrad,
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
        ws: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { winograd_backward_avx512(p, ut, image, grad, grads, dx, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { winograd_backward_avx2(p, ut, image, grad, grads, dx, ws) },
            Isa::Generic => winograd_train::backward_f32::<2>(p, ut, image, grad, grads, dx, ws),
        }
    }

    /// [`winograd_train::map_forward`] with [`Isa::winograd_group`] tiles.
    pub(super) fn winograd_map_forward(
        self,
        p: &Pass,
        first: usize,
        out: &mut [f32],
        ws: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { winograd_map_avx512(p, first, out, ws) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { winograd_map_avx2(p, first, out, ws) },
            Isa::Generic => winograd_train::map_forward_f32::<4>(p, first, out, ws),
        }
    }

    /// [`train::weight_grads`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_weight_grads(
        self,
        p: &Pass,
        first: usize,
        y: &[f32],
        dy: &[f32],
        won: &[u8],
        dw: &mut [f32],
        db: &mut [f32],
        patch: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { train_grads_avx512(p, first, y, dy, won, dw, db, patch) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { train_grads_avx2(p, first, y, dy, won, dw, db, patch) },
            Isa::Generic => train::weight_grads(p, first, y, dy, won, dw, db, patch),
        }
    }

    /// [`train::input_grad`].
    pub(super) fn train_input_grad(
        self,
        p: &Pass,
        y: &[f32],
        dy: &[f32],
        won: &[u8],
        dx: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { train_input_avx512(p, y, dy, won, dx) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { train_input_avx2(p, y, dy, won, dx) },
            Isa::Generic => train::input_grad(p, y, dy, won, dx),
        }
    }
}

/// `unsafe fn $name`: the kernel `$kernel` compiled with the target features `$features`
/// (callers must check that the CPU has them).
macro_rules! compiled_with {
    ($name:ident, $features:literal, $kernel:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32]) {
            $kernel(p, first, out, ws)
        }
    };
}

compiled_with!(
    winograd_avx512,
    "avx512f,avx2,fma",
    winograd::group::<12, true>
);
compiled_with!(winograd_avx2, "avx2,fma", winograd::group::<4, true>);
compiled_with!(direct_avx512, "avx512f,avx2,fma", direct::tiles::<true>);
compiled_with!(direct_avx2, "avx2,fma", direct::tiles::<true>);

/// `unsafe fn`s: the training kernel `$kernel` (or a pair of them, one for each)
/// compiled with AVX-512 (`$avx512`) and with AVX2 (`$avx2`), both with FMA (callers
/// must check that the CPU has them).
macro_rules! training_copies {
    ($avx512:ident, $avx2:ident, $kernel:path, ($($arg:ident: $ty:ty),*)) => {
        training_copies!($avx512, $avx2, ($kernel, $kernel), ($($arg: $ty),*));
    };
    ($avx512:ident, $avx2:ident, ($k512:expr, $k2:expr), ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx512($($arg: $ty),*) {
            $k512($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx2($($arg: $ty),*) {
            $k2($($arg),*)
        }
    };
}

training_copies!(
    train_forward_avx512,
    train_forward_avx2,
    train::forward,
    (p: &Pass, first: usize, out: &mut [f32], won: &mut [u8], patch: &mut [f32])
);
training_copies!(
    train_grads_avx512,
    train_grads_avx2,
    train::weight_grads,
    (
        p: &Pass,
        first: usize,
        y: &[f32],
        dy: &[f32],
        won: &[u8],
        dw: &mut [f32],
        db: &mut [f32],
        patch: &mut [f32]
    )
);
training_copies!(
    train_input_avx512,
    train_input_avx2,
    train::input_grad,
    (p: &Pass, y: &[f32], dy: &[f32], won: &[u8], dx: &mut [f32])
);
training_copies!(
    winograd_forward_avx512,
    winograd_forward_avx2,
    (winograd_train::forward_f32::<12>, winograd_train::forward_f32::<4>),
    (p: &Pass, first: usize, out: &mut [f32], won: &mut [u8], ws: &mut [f32])
);
training_copies!(
    winograd_backward_avx512,
    winograd_backward_avx2,
    (winograd_train::backward_f32::<12>, winograd_train::backward_f32::<2>),
    (
        p: &Pass,
        ut: &[f32],
        image: usize,
        grad: OutputGrad,
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
        ws: &mut [f32]
    )
);
training_copies!(
    winograd_map_avx512,
    winograd_map_avx2,
    (winograd_train::map_forward_f32::<12>, winograd_train::map_forward_f32::<4>),
    (p: &Pass, first: usize, out: &mut [f32], ws: &mut [f32])
);
