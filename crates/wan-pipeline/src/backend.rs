//! The kernel backend: the one place that decides whether a tensor's op runs on this crate's
//! native CPU kernels ([`crate::kernels`]) or on candle's device ops, the code CUDA runs.
//!
//! Why one place: the model files (the DiT, the encoders, the VAE) are written once, in candle
//! ops, as candle-transformers' models are. Where a native kernel exists, a model calls one
//! function of [`crate::kernels`] that returns `None` unless [`native_on`] says yes for the
//! tensor's device; the model then runs its candle-ops formulation. So forcing the generic path
//! (`--kernels generic`, `WAN_KERNELS=generic`) runs on the CPU exactly the code a GPU runs, and
//! the parity test checks both paths.
//!
//! The choice is process-wide and read when a model loads (a packed weight is laid out at load
//! time for the backend of that moment); set it once at startup, before loading.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::Device;

use crate::{Error, Result};

/// What a user asked for: `--kernels auto|native|generic` (or `WAN_KERNELS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// Native kernels on the CPU, candle's ops on every other device.
    #[default]
    Auto,
    /// The native kernels; only meaningful on the CPU (a GPU device with it is refused).
    Native,
    /// candle's ops everywhere: on the CPU, the code path CUDA takes.
    Generic,
}

impl FromStr for KernelChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(KernelChoice::Auto),
            "native" => Ok(KernelChoice::Native),
            "generic" => Ok(KernelChoice::Generic),
            other => Err(Error::InvalidInput(format!("kernels must be auto, native or generic, got {other:?}"))),
        }
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelChoice::Auto => "auto",
            KernelChoice::Native => "native",
            KernelChoice::Generic => "generic",
        })
    }
}

/// Which code runs an op on a given device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// This crate's CPU kernels (multi-threaded row kernels, packed gemm, fused attention) where
    /// they cover the op's dtype and this CPU's instruction set; candle's ops for the rest.
    Native,
    /// candle's ops only.
    Generic,
}

/// 0: not set yet (read `WAN_KERNELS` on first use), else `KernelChoice as u8 + 1`.
static CHOICE: AtomicU8 = AtomicU8::new(0);

fn encode(choice: KernelChoice) -> u8 {
    match choice {
        KernelChoice::Auto => 1,
        KernelChoice::Native => 2,
        KernelChoice::Generic => 3,
    }
}

/// Sets the process-wide choice (the `--kernels` flag). Call it before loading a model.
pub fn set_kernel_choice(choice: KernelChoice) {
    CHOICE.store(encode(choice), Ordering::Relaxed);
}

/// The process-wide choice: what [`set_kernel_choice`] set, else `WAN_KERNELS`, else `auto`. An
/// unreadable `WAN_KERNELS` is reported by [`kernel_choice_from_env`]; here it counts as `auto`.
pub fn kernel_choice() -> KernelChoice {
    match CHOICE.load(Ordering::Relaxed) {
        2 => KernelChoice::Native,
        3 => KernelChoice::Generic,
        1 => KernelChoice::Auto,
        _ => {
            let choice = kernel_choice_from_env().unwrap_or_default();
            CHOICE.store(encode(choice), Ordering::Relaxed);
            choice
        }
    }
}

/// `WAN_KERNELS` parsed (`auto` when unset), so a binary can refuse a misspelt value at startup.
pub fn kernel_choice_from_env() -> Result<KernelChoice> {
    match std::env::var("WAN_KERNELS") {
        Ok(value) if !value.trim().is_empty() => value.parse().map_err(|_| {
            Error::InvalidInput(format!("WAN_KERNELS must be auto, native or generic, got {value:?}"))
        }),
        _ => Ok(KernelChoice::Auto),
    }
}

/// The backend that runs ops on `device` under the current choice.
pub fn backend_for(device: &Device) -> Backend {
    match (kernel_choice(), device.is_cpu()) {
        (KernelChoice::Generic, _) | (_, false) => Backend::Generic,
        (KernelChoice::Auto | KernelChoice::Native, true) => Backend::Native,
    }
}

/// Whether the native kernels may run on `device`: what every entry point of
/// [`crate::kernels`] asks before it does anything.
pub fn native_on(device: &Device) -> bool {
    backend_for(device) == Backend::Native
}

/// Refuses a choice the device cannot honour: `native` on a GPU (the native kernels are CPU
/// kernels). A startup error, so the user learns it before any job.
pub fn check_choice(choice: KernelChoice, device: &Device) -> Result<()> {
    if choice == KernelChoice::Native && !device.is_cpu() {
        return Err(Error::InvalidInput(format!(
            "--kernels native: the native kernels are CPU kernels, and the model runs on {}; use auto or generic",
            crate::device::describe(device)
        )));
    }
    Ok(())
}

/// One line for the logs: the backend on `device` and, for the native one, which of this CPU's
/// instruction sets its kernels use.
pub fn describe(device: &Device) -> String {
    match backend_for(device) {
        Backend::Generic => format!("generic (candle's ops; --kernels {})", kernel_choice()),
        Backend::Native => format!("native ({})", crate::kernels::instruction_sets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for choice in [KernelChoice::Auto, KernelChoice::Native, KernelChoice::Generic] {
            assert_eq!(choice.to_string().parse::<KernelChoice>().unwrap(), choice);
        }
        let err = "fast".parse::<KernelChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, native or generic") && err.contains("fast"), "{err}");
    }

    #[test]
    fn native_is_a_cpu_backend_only() {
        // No GPU device can be built here; the rule for non-CPU devices is the match arm above.
        assert!(check_choice(KernelChoice::Native, &Device::Cpu).is_ok());
        assert!(check_choice(KernelChoice::Generic, &Device::Cpu).is_ok());
    }
}
