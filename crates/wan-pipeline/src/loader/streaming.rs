//! Where every component's weights come from: safetensors files read tensor by tensor with
//! positioned reads instead of a memory map.
//!
//! Why not mmap: the pages of a mapped file that a load touches count in the process's resident
//! set as long as the mapping lives, on top of the converted copy every layer keeps. Loading the
//! 5.3 GB (f32) 1.3B transformer through `VarBuilder::from_mmaped_safetensors` therefore peaked at
//! ~2x the weights, and the UMT5-XXL text encoder (10.6 GiB in bf16, 22.7 GB as stored in f32)
//! was resident about twice over for the same reason. Reading each tensor into a temporary buffer and converting it straight to the
//! target dtype keeps the peak at the weights plus one tensor, and a bf16 model never holds an f32
//! copy of itself.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::plain::{zeroed_vec, Plain};
use crate::{Error, Result};

/// Where one tensor lives: which file, its stored dtype and shape, and its byte range.
#[derive(Debug, Clone)]
struct TensorEntry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

/// The tensors of one or more safetensors files, read on demand.
#[derive(Debug)]
pub struct StreamingSafetensors {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, TensorEntry>,
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn safetensors_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        // ComfyUI-style fp8 checkpoints; widened exactly to the dtype a layer asks for.
        "F8_E4M3" => DType::F8E4M3,
        _ => return None,
    })
}

impl StreamingSafetensors {
    /// Reads the headers of `paths` (the shards of one component).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let bad = |what: String| Error::MissingModelFile { path: path.clone(), what };
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            let mut len_bytes = [0u8; 8];
            file.read_exact_at(&mut len_bytes, 0).map_err(|e| Error::io(path, e))?;
            let header_len = u64::from_le_bytes(len_bytes);
            if header_len > 100 << 20 || 8 + header_len > file_len {
                return Err(bad(format!("a valid safetensors header (declared length {header_len})")));
            }
            let mut header = vec![0u8; header_len as usize];
            file.read_exact_at(&mut header, 8).map_err(|e| Error::io(path, e))?;
            let header: HashMap<String, serde_json::Value> =
                serde_json::from_slice(&header).map_err(|source| Error::Json { path: path.clone(), source })?;
            let data_start = 8 + header_len;
            for (name, value) in header {
                if name == "__metadata__" {
                    continue;
                }
                let entry: HeaderEntry =
                    serde_json::from_value(value).map_err(|source| Error::Json { path: path.clone(), source })?;
                let dtype = safetensors_dtype(&entry.dtype)
                    .ok_or_else(|| bad(format!("tensor {name} has unsupported dtype {}", entry.dtype)))?;
                let [begin, end] = entry.data_offsets;
                let expected = entry.shape.iter().product::<usize>() * dtype.size_in_bytes();
                if end < begin || (end - begin) as usize != expected || data_start + end > file_len {
                    return Err(bad(format!("tensor {name} has inconsistent offsets {begin}..{end}")));
                }
                entries.insert(
                    name,
                    TensorEntry { file: index, dtype, shape: entry.shape, start: data_start + begin, len: expected },
                );
            }
            files.push((path.clone(), file));
        }
        Ok(Self { files, entries })
    }

    /// How many elements the files hold in all (what the weights weigh at any one dtype's size),
    /// known from the headers alone.
    pub fn element_count(&self) -> u64 {
        self.entries.values().map(|e| e.shape.iter().product::<usize>() as u64).sum()
    }

    /// [`Self::element_count`] of the tensors whose names pass `keep`.
    pub fn element_count_where(&self, keep: impl Fn(&str) -> bool) -> u64 {
        self.entries.iter().filter(|(name, _)| keep(name)).map(|(_, e)| e.shape.iter().product::<usize>() as u64).sum()
    }

    /// Reads one tensor and converts it to `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        let (path, file) = &self.files[entry.file];
        let read = |bytes: &mut [u8]| {
            file.read_exact_at(bytes, entry.start)
                .map_err(|e| candle_core::Error::Msg(format!("reading {name} from {}: {e}", path.display())))
        };
        // The float dtypes are read straight into the tensor's own buffer (one copy out of the
        // page cache, no second one); the rest through a byte buffer.
        let stored = match entry.dtype {
            DType::F32 => read_typed::<f32>(entry, read)?,
            DType::BF16 => read_typed::<half::bf16>(entry, read)?,
            DType::F16 => read_typed::<half::f16>(entry, read)?,
            _ => {
                let mut bytes = vec![0u8; entry.len];
                read(&mut bytes)?;
                Tensor::from_raw_buffer(&bytes, entry.dtype, &entry.shape, &Device::Cpu)?
            }
        };
        stored.to_dtype(dtype)?.to_device(device)
    }
}


/// A tensor of `T`s read by `read` straight into the vector candle then keeps: allocated zeroed
/// (for a large tensor, fresh pages that the read itself fills: nothing is cleared, filled or
/// copied twice).
fn read_typed<T: candle_core::WithDType + Plain>(
    entry: &TensorEntry,
    read: impl Fn(&mut [u8]) -> candle_core::Result<()>,
) -> candle_core::Result<Tensor> {
    let n = entry.len / std::mem::size_of::<T>();
    let mut values = zeroed_vec::<T>(n);
    // SAFETY: `values` holds n initialised T, exactly entry.len bytes; every bit pattern is a
    // valid T (`Plain`), so whatever bytes are read make valid values.
    let bytes = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), n * std::mem::size_of::<T>()) };
    read(bytes)?;
    // The stored bytes are little-endian, as this machine's.
    Tensor::from_vec(values, entry.shape.as_slice(), &Device::Cpu)
}

impl SimpleBackend for StreamingSafetensors {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_candle_wrote_and_converts() {
        let dir = std::env::temp_dir().join(format!("wan-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let a = Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
        let b = Tensor::new(&[7i64, 8], &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("a".to_string(), a.clone()), ("b".to_string(), b)]), &path).unwrap();
        let st = StreamingSafetensors::open(std::slice::from_ref(&path)).unwrap();
        let got = st.get((2, 3).into(), "a", candle_nn::Init::Const(0.), DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(got.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        assert!(st.get((3, 2).into(), "a", candle_nn::Init::Const(0.), DType::F32, &Device::Cpu).is_err());
        assert!(st.contains_tensor("b") && !st.contains_tensor("c"));
        // A truncated file is an error, not a panic.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(StreamingSafetensors::open(std::slice::from_ref(&path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
