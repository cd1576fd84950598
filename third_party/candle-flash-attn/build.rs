// Build script to run nvcc and generate the C glue code for launching the flash-attention kernel.
//
// Vendored from candle-flash-attn 0.11.1 for wan-server, with three changes (see README.md):
// - CUTLASS comes from a local directory, `CUTLASS_INCLUDE_DIR` (the one holding `cutlass/` and
//   `cute/`, e.g. the `nvidia-cutlass` wheel's `cutlass_library/source/include`): upstream's
//   `cudaforge::with_cutlass` clones CUTLASS from GitHub, which the build machines cannot reach.
// - Only the head-dim-128, non-causal forward kernels are compiled (bf16/f16), with dropout,
//   alibi, softcap, local windows and uneven K compiled out: Wan uses none of them and each
//   kernel file takes minutes of nvcc per architecture.
// - The GPU architectures come from `CANDLE_FLASH_ATTN_CUDA_ARCHS` (default "80,90"): SASS for
//   each, plus PTX of the last for GPUs newer than all of them. There is no GPU to detect them on.
//
// The cuda build time is very long so one can set the CANDLE_FLASH_ATTN_BUILD_DIR environment
// variable in order to cache the compiled artifacts and avoid recompiling too often; the
// directory is created if missing.
use anyhow::{bail, Context, Result};
use cudaforge::KernelBuilder;
use std::{fs, path::PathBuf};

const KERNEL_FILES: [&str; 3] = [
    "kernels/flash_api.cu",
    "kernels/flash_fwd_hdim128_fp16_sm80.cu",
    "kernels/flash_fwd_hdim128_bf16_sm80.cu",
];

/// Features of FlashAttention-2 that Wan never uses, compiled out through upstream's own
/// `FLASHATTENTION_DISABLE_*` switches: each one halves the template instantiations of every
/// kernel file (128 variants per file become 4), which is most of the nvcc time. `src/lib.rs`
/// rejects a call that asks for any of them (alibi, softcap, a causal or local window) instead
/// of silently ignoring it. Uneven K is off because head dim 128 is always a multiple of the
/// kernel's 128-wide K block.
const DISABLED_FEATURES: [&str; 5] = [
    "-DFLASHATTENTION_DISABLE_DROPOUT",
    "-DFLASHATTENTION_DISABLE_ALIBI",
    "-DFLASHATTENTION_DISABLE_UNEVEN_K",
    "-DFLASHATTENTION_DISABLE_SOFTCAP",
    "-DFLASHATTENTION_DISABLE_LOCAL",
];

const HEADER_FILES: [&str; 18] = [
    "kernels/alibi.h",
    "kernels/block_info.h",
    "kernels/dropout.h",
    "kernels/error.h",
    "kernels/flash.h",
    "kernels/flash_fwd_kernel.h",
    "kernels/flash_fwd_launch_template.h",
    "kernels/hardware_info.h",
    "kernels/kernel_helpers.h",
    "kernels/kernel_traits.h",
    "kernels/kernel_traits_sm90.h",
    "kernels/kernels.h",
    "kernels/mask.h",
    "kernels/philox.cuh",
    "kernels/rotary.h",
    "kernels/softmax.h",
    "kernels/static_switch.h",
    "kernels/utils.h",
];

fn update_hash(hash: &mut u64, bytes: &[u8]) {
    const FNV_PRIME: u64 = 1099511628211;
    for &byte in bytes {
        *hash ^= u64::from(byte);
        *hash = hash.wrapping_mul(FNV_PRIME);
    }
}

fn header_hash() -> Result<u64> {
    let mut hash = 14695981039346656037;
    for file in HEADER_FILES {
        update_hash(&mut hash, file.as_bytes());
        update_hash(&mut hash, &fs::read(file)?);
    }
    Ok(hash)
}

/// The CUTLASS include directory, checked to hold both halves flash-attention includes.
fn cutlass_include_dir() -> Result<PathBuf> {
    let Ok(dir) = std::env::var("CUTLASS_INCLUDE_DIR") else {
        bail!(
            "CUTLASS_INCLUDE_DIR is not set: point it at a CUTLASS include dir (with cutlass/ and \
             cute/), e.g. the nvidia-cutlass wheel's cutlass_library/source/include \
             (scripts/build-flash-attn.sh sets it up)"
        )
    };
    let dir = PathBuf::from(dir);
    for probe in ["cutlass/cutlass.h", "cute/tensor.hpp"] {
        if !dir.join(probe).is_file() {
            bail!("CUTLASS_INCLUDE_DIR={} has no {probe}", dir.display());
        }
    }
    Ok(dir)
}

/// The architectures to compile for, e.g. "80,90" -> [80, 90]; each must be sm_80 or newer, the
/// kernels' minimum (bf16 tensor-core MMAs, cp.async).
fn cuda_archs() -> Result<Vec<usize>> {
    let spec = std::env::var("CANDLE_FLASH_ATTN_CUDA_ARCHS").unwrap_or_else(|_| "80,90".into());
    let mut archs = Vec::new();
    for part in spec.split([',', ';', ' ']).filter(|p| !p.is_empty()) {
        let arch: usize = part
            .parse()
            .with_context(|| format!("CANDLE_FLASH_ATTN_CUDA_ARCHS: {part:?} is not a number"))?;
        if arch < 80 {
            bail!("CANDLE_FLASH_ATTN_CUDA_ARCHS: flash-attention needs sm_80 or newer (got {arch})");
        }
        archs.push(arch);
    }
    if archs.is_empty() {
        bail!("CANDLE_FLASH_ATTN_CUDA_ARCHS is empty");
    }
    Ok(archs)
}

fn main() -> Result<()> {
    println!("cargo::rerun-if-changed=build.rs");
    for kernel_file in KERNEL_FILES.iter() {
        println!("cargo::rerun-if-changed={kernel_file}");
    }
    for header_file in HEADER_FILES.iter() {
        println!("cargo::rerun-if-changed={header_file}");
    }
    println!("cargo::rerun-if-env-changed=CUTLASS_INCLUDE_DIR");
    println!("cargo::rerun-if-env-changed=CANDLE_FLASH_ATTN_CUDA_ARCHS");
    println!("cargo::rerun-if-env-changed=CANDLE_FLASH_ATTN_BUILD_DIR");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR not set")?);
    let build_dir = match std::env::var("CANDLE_FLASH_ATTN_BUILD_DIR") {
        Err(_) => out_dir.clone(),
        Ok(build_dir) => {
            let path = PathBuf::from(build_dir);
            fs::create_dir_all(&path)
                .with_context(|| format!("creating CANDLE_FLASH_ATTN_BUILD_DIR {}", path.display()))?;
            path.canonicalize()?
        }
    };
    let cutlass = cutlass_include_dir()?;
    let archs = cuda_archs()?;

    let kernels: Vec<_> = KERNEL_FILES.iter().collect();
    let header_hash_arg = format!("-DCANDLE_FLASH_ATTN_HEADER_HASH=0x{:016x}", header_hash()?);
    // cudaforge writes the first architecture's -gencode itself; the others are extra args (which
    // it also hashes, so changing the list recompiles). Plain sm_90, not cudaforge's default
    // sm_90a: these are Ampere-style kernels, which need none of Hopper's arch-specific features.
    let mut builder = KernelBuilder::new()
        .compute_cap_arch(&archs[0].to_string())
        .source_files(kernels)
        .out_dir(&build_dir)
        .include_path(&cutlass)
        .arg("-std=c++17")
        .arg("-O3")
        .arg("-U__CUDA_NO_HALF_OPERATORS__")
        .arg("-U__CUDA_NO_HALF_CONVERSIONS__")
        .arg("-U__CUDA_NO_HALF2_OPERATORS__")
        .arg("-U__CUDA_NO_BFLOAT16_CONVERSIONS__")
        .arg("--expt-relaxed-constexpr")
        .arg("--expt-extended-lambda")
        .arg("--use_fast_math")
        .arg(&header_hash_arg)
        .thread_percentage(1.0);
    for flag in DISABLED_FEATURES {
        builder = builder.arg(flag);
    }
    for arch in &archs[1..] {
        builder = builder.arg(&format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
    }
    let last = archs[archs.len() - 1];
    builder = builder.arg(&format!("-gencode=arch=compute_{last},code=compute_{last}"));
    if archs.len() > 1 {
        // nvcc compiles one file's architectures in parallel with --threads.
        builder = builder.arg(&format!("--threads={}", archs.len().min(2)));
    }

    let mut is_target_msvc = false;
    if let Ok(target) = std::env::var("TARGET") {
        if target.contains("msvc") {
            is_target_msvc = true;
            builder = builder.arg("-D_USE_MATH_DEFINES");
        }
    }

    if !is_target_msvc {
        builder = builder.arg("-Xcompiler").arg("-fPIC");
    }

    let out_file = build_dir.join("libflashattention.a");
    builder.build_lib(out_file)?;

    println!("cargo::rustc-link-search={}", build_dir.display());
    println!("cargo::rustc-link-lib=flashattention");
    println!("cargo::rustc-link-lib=dylib=cudart");
    if !is_target_msvc {
        println!("cargo::rustc-link-lib=dylib=stdc++");
    }
    Ok(())
}
