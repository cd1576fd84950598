//! Where the models run: the `--device auto|cpu|cuda[:N]` choice, opened once, and what the
//! chosen device can say about its memory.
//!
//! The choice is explicit so that a user who asks for a GPU and does not get one is told why at
//! startup, instead of finding out from a job that runs a hundred times slower on the CPU.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// The device a user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when this build has CUDA and one answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA device N (`cuda` alone is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(Error::InvalidInput(format!("device must be auto, cpu, cuda or cuda:N, got {other:?}"))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `Cuda(n)` that cannot be met is an error saying why (a build without
    /// CUDA, no such device, a driver error); `Auto` falls back to the CPU and logs what it picked.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => open_cuda(n),
            DeviceChoice::Auto => match open_cuda(0) {
                Ok(device) => {
                    tracing::info!(device = %describe(&device), "--device auto picked the GPU");
                    Ok(device)
                }
                Err(why) => {
                    tracing::info!(reason = %why, "--device auto picked the CPU");
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| Error::DeviceUnavailable(format!("CUDA device {ordinal} cannot be opened: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(Error::DeviceUnavailable(format!(
        "CUDA device {ordinal} was asked for, but this binary was built without the `cuda` feature (see scripts/build-cuda.sh)"
    )))
}

/// `cpu` or `cuda:N`, as logs and `/api/v1/model/info` name the device.
pub fn describe(device: &Device) -> String {
    match cuda_ordinal(device) {
        Some(n) => format!("cuda:{n}"),
        None if device.is_cpu() => "cpu".into(),
        None => format!("{:?}", device.location()),
    }
}

/// The CUDA ordinal of a CUDA device, `None` for any other.
pub fn cuda_ordinal(device: &Device) -> Option<usize> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id),
        _ => None,
    }
}

/// Free and total memory of a device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    pub free: u64,
    pub total: u64,
}

/// What the device has free now: the driver's figures on CUDA, `MemAvailable`/`MemTotal` of
/// `/proc/meminfo` on the CPU (Linux). `None` when the figures cannot be read.
pub fn memory_info(device: &Device) -> Option<MemoryInfo> {
    if device.is_cpu() {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        return parse_meminfo(&text);
    }
    cuda_memory_info(device)
}

#[cfg(feature = "cuda")]
fn cuda_memory_info(device: &Device) -> Option<MemoryInfo> {
    match device {
        Device::Cuda(cuda) => {
            let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
            Some(MemoryInfo { free: free as u64, total: total as u64 })
        }
        _ => None,
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_memory_info(_device: &Device) -> Option<MemoryInfo> {
    None
}

/// `MemAvailable` and `MemTotal` (kB) of a `/proc/meminfo` text, in bytes.
fn parse_meminfo(text: &str) -> Option<MemoryInfo> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        kb.checked_mul(1024)
    };
    Some(MemoryInfo { free: field("MemAvailable:")?, total: field("MemTotal:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_back() {
        for s in ["auto", "cpu", "cuda:0", "cuda:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("auto, cpu, cuda") && err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn cpu_opens_and_auto_falls_back_without_cuda() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
            let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("without the `cuda` feature"), "{err}");
        }
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(MemoryInfo { free: 20_000_000 * 1024, total: 24_000_000 * 1024 }));
        assert_eq!(parse_meminfo("MemTotal: x kB\n"), None);
        let here = memory_info(&Device::Cpu).expect("/proc/meminfo is readable on Linux");
        assert!(here.free > 0 && here.free <= here.total, "{here:?}");
    }
}
