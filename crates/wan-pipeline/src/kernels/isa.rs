//! Which vector instruction set this CPU gives the native kernels, detected once.
//!
//! The row kernels (norms, residuals, GELU, q/k norm + RoPE) are plain Rust loops compiled
//! three times: for AVX-512F (16 lanes), for AVX2 + FMA (8 lanes) and for the baseline target;
//! the packed gemm and the attention kernel have AVX-512 and AVX2 + FMA micro-kernels. The CI and
//! development machines are sometimes AVX2-only, so both wide variants matter.

use std::sync::OnceLock;

/// The widest instruction set the native kernels use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (with or without the BF16 extension, which only the bf16 gemm needs).
    Avx512,
    /// AVX2 and FMA.
    Avx2Fma,
    /// Neither: the compiler's baseline (SSE2 on x86-64, or another architecture).
    Baseline,
}

/// This CPU's [`Isa`], detected on first use.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

/// What the CPU has, capped by `WAN_CPU_ISA` (`avx2` or `baseline`): so that an AVX-512 machine
/// can run, test and time the kernels an AVX2-only CPU runs. A value that names no instruction
/// set, or a wider one than the CPU has, changes nothing.
fn detect() -> Isa {
    let cap = std::env::var("WAN_CPU_ISA").ok();
    cap_to(detect_cpu(), cap.as_deref())
}

fn cap_to(found: Isa, cap: Option<&str>) -> Isa {
    let cap = match cap.map(str::trim) {
        Some("avx2") => Isa::Avx2Fma,
        Some("baseline") => Isa::Baseline,
        _ => return found,
    };
    let width = |i: Isa| match i {
        Isa::Avx512 => 2,
        Isa::Avx2Fma => 1,
        Isa::Baseline => 0,
    };
    if width(cap) < width(found) {
        cap
    } else {
        found
    }
}

fn detect_cpu() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
    }
    Isa::Baseline
}

/// Whether the CPU has AVX-512 BF16 (`vdpbf16ps`), which the packed bf16 gemm needs.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa() == Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// For the logs: which kernels run here, e.g. "AVX2+FMA: f32 gemm, attention, row kernels".
pub fn instruction_sets() -> String {
    match isa() {
        Isa::Avx512 if has_avx512_bf16() => "AVX-512F + AVX-512 BF16: f32 and bf16 gemm, attention, row kernels".into(),
        Isa::Avx512 => "AVX-512F: f32 gemm, attention, row kernels; bf16 products widened to f32".into(),
        Isa::Avx2Fma => "AVX2 + FMA: f32 gemm, attention, row kernels; bf16 products widened to f32".into(),
        Isa::Baseline => "no AVX2: row kernels only; products through candle".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_only_narrows() {
        assert_eq!(cap_to(Isa::Avx512, Some("avx2")), Isa::Avx2Fma);
        assert_eq!(cap_to(Isa::Avx512, Some("baseline")), Isa::Baseline);
        assert_eq!(cap_to(Isa::Avx2Fma, Some("avx2")), Isa::Avx2Fma);
        assert_eq!(cap_to(Isa::Baseline, Some("avx2")), Isa::Baseline);
        assert_eq!(cap_to(Isa::Avx512, Some("avx512")), Isa::Avx512);
        assert_eq!(cap_to(Isa::Avx512, None), Isa::Avx512);
        assert_eq!(cap_to(Isa::Avx2Fma, Some("sse9")), Isa::Avx2Fma);
    }
}
