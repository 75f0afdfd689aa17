//! The arithmetic of matrix products: fp32 everywhere, or bf16 operands with fp32
//! accumulation on CPUs with bf16 instructions (mixed precision: weights, gradients,
//! optimizer state and everything outside matrix products stay fp32).
//!
//! The bf16 instruction set is chosen at run time. AMX and AVX512-BF16 round the same
//! bf16 operands but add the products in different orders, so a model is bit-for-bit
//! reproducible for a seed, a thread count and an instruction set.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The arithmetic of convolution and dense matrix products. Serialised by its
/// [`Precision::name`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Precision {
    /// fp32 operands and accumulation.
    #[default]
    F32,
    /// bf16 operands (rounded to nearest even), fp32 products and sums.
    Bf16(Bf16Isa),
}

/// An instruction set for bf16 matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Isa {
    /// Intel AMX tiles (`tdpbf16ps`): a 16×16 block of outputs per instruction.
    Amx,
    /// AVX512-BF16 (`vdpbf16ps`): 16 outputs per instruction.
    Avx512Bf16,
}

impl Bf16Isa {
    /// The name printed by `bench` and accepted by [`Precision::parse`] after `bf16-`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Isa::Amx => "amx",
            Bf16Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// Whether this CPU (and, for AMX, the operating system) runs it.
    pub fn is_available(self) -> bool {
        match self {
            Bf16Isa::Amx => has_avx512bf16() && amx_permitted(),
            Bf16Isa::Avx512Bf16 => has_avx512bf16(),
        }
    }

    /// The fastest one this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        Self::choose(
            Bf16Isa::Amx.is_available(),
            Bf16Isa::Avx512Bf16.is_available(),
        )
    }

    /// The choice [`Bf16Isa::detect`] makes, given what the CPU runs: AMX where it has
    /// tiles, else AVX512-BF16, else none (every AMX CPU also has AVX512-BF16, which
    /// the packing uses).
    pub fn choose(amx: bool, avx512bf16: bool) -> Option<Self> {
        match (amx, avx512bf16) {
            (_, false) => None,
            (true, true) => Some(Bf16Isa::Amx),
            (false, true) => Some(Bf16Isa::Avx512Bf16),
        }
    }

    /// Every one this CPU runs, fastest first.
    pub fn available() -> Vec<Self> {
        [Bf16Isa::Amx, Bf16Isa::Avx512Bf16]
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }
}

impl Precision {
    /// `fp32`, `bf16` (the fastest bf16 instruction set here), `bf16-amx` or
    /// `bf16-avx512bf16`. A bf16 choice the CPU cannot run is an error that says what
    /// it lacks.
    pub fn parse(name: &str) -> Result<Self, String> {
        let isa = match name {
            "fp32" | "f32" => return Ok(Precision::F32),
            "bf16" => {
                return Bf16Isa::detect().map(Precision::Bf16).ok_or_else(|| {
                    "--precision bf16 needs a CPU with AVX512-BF16 or AMX-BF16, and this one \
                     has neither; use --precision fp32"
                        .to_string()
                });
            }
            "bf16-amx" => Bf16Isa::Amx,
            "bf16-avx512bf16" => Bf16Isa::Avx512Bf16,
            other => {
                return Err(format!(
                    "unknown precision {other:?}: expected fp32, bf16, bf16-amx or bf16-avx512bf16"
                ));
            }
        };
        if isa.is_available() {
            Ok(Precision::Bf16(isa))
        } else {
            Err(format!(
                "--precision {name} needs {} and this CPU or kernel does not offer it",
                match isa {
                    Bf16Isa::Amx => "AMX-BF16 tiles (with AVX512-BF16)",
                    Bf16Isa::Avx512Bf16 => "AVX512-BF16",
                }
            ))
        }
    }

    /// The precision named by [`Precision::name`], whether or not this CPU runs it (a
    /// recipe written on another machine); `None` for other names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fp32" => Some(Precision::F32),
            "bf16-amx" => Some(Precision::Bf16(Bf16Isa::Amx)),
            "bf16-avx512bf16" => Some(Precision::Bf16(Bf16Isa::Avx512Bf16)),
            _ => None,
        }
    }

    /// Whether this CPU runs it.
    pub fn is_available(self) -> bool {
        match self {
            Precision::F32 => true,
            Precision::Bf16(isa) => isa.is_available(),
        }
    }

    /// `fp32`, `bf16-amx` or `bf16-avx512bf16`: what ran.
    pub fn name(self) -> String {
        match self {
            Precision::F32 => "fp32".into(),
            Precision::Bf16(isa) => format!("bf16-{}", isa.name()),
        }
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.name()
    }
}

impl TryFrom<String> for Precision {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        Precision::from_name(&name).ok_or_else(|| format!("unknown precision {name:?}"))
    }
}

fn has_avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AMX-BF16 tiles and Linux lets this process use them. Linux keeps
/// the 8 KB tile state off until a process asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
/// asked once per process, the answer holds for every thread.
fn amx_permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
            // Leaf 7 exists on every CPU with AVX-512, checked before this is called.
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with these arguments only changes this process's
            // permitted extended state; it reads and writes no memory of ours.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            rc == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}
