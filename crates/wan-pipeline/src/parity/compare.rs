//! Elementwise comparison of computed tensors with the reference outputs.

use candle_core::DType;

use super::{Fixture, Outputs};
use crate::Result;

/// The worst element of a tensor that is out of tolerance (or a missing / misshapen tensor).
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub tensor: String,
    pub detail: String,
}

/// The result of comparing one fixture's outputs.
#[derive(Debug, Clone)]
pub struct Report {
    /// The largest |actual - expected| over every compared element of every tensor.
    pub max_abs_err: f64,
    /// The tensor holding that largest error.
    pub worst_tensor: String,
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

fn is_integer(dtype: DType) -> bool {
    matches!(dtype, DType::U8 | DType::U32 | DType::I64)
}

/// Compares every tensor of `outputs.safetensors` with the output of the same name.
/// A missing output or a shape difference is a mismatch; integer tensors must be equal.
pub fn compare(fixture: &Fixture, actual: &Outputs) -> Result<Report> {
    let mut names: Vec<&String> = fixture.expected.keys().collect();
    names.sort();
    let mut report = Report { max_abs_err: 0.0, worst_tensor: String::new(), mismatches: Vec::new() };
    for name in names {
        let expected = &fixture.expected[name];
        let Some(got) = actual.get(name) else {
            report.mismatches.push(Mismatch { tensor: name.clone(), detail: "not produced".into() });
            continue;
        };
        if got.dims() != expected.dims() {
            report.mismatches.push(Mismatch {
                tensor: name.clone(),
                detail: format!("shape {:?}, expected {:?}", got.dims(), expected.dims()),
            });
            continue;
        }
        let tol = if is_integer(expected.dtype()) {
            super::Tolerance { atol: 0.0, rtol: 0.0 }
        } else {
            fixture.tolerance_for(name)
        };
        let e: Vec<f64> = expected.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let a: Vec<f64> = got.flatten_all()?.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?.to_vec1()?;
        let mut worst: Option<(usize, f64)> = None; // (index, excess over the allowed error)
        let mut tensor_max = 0.0f64;
        for (i, (&x, &y)) in a.iter().zip(e.iter()).enumerate() {
            let err = (x - y).abs();
            let err = if err.is_nan() { f64::INFINITY } else { err };
            tensor_max = tensor_max.max(err);
            let excess = err - (tol.atol + tol.rtol * y.abs());
            if excess > 0.0 && worst.is_none_or(|(_, w)| excess > w) {
                worst = Some((i, excess));
            }
        }
        if tensor_max > report.max_abs_err || report.worst_tensor.is_empty() {
            report.max_abs_err = report.max_abs_err.max(tensor_max);
            report.worst_tensor = name.clone();
        }
        if let Some((i, _)) = worst {
            let bad = a.iter().zip(e.iter()).filter(|(x, y)| (*x - *y).abs().is_nan() || (*x - *y).abs() > tol.atol + tol.rtol * y.abs()).count();
            report.mismatches.push(Mismatch {
                tensor: name.clone(),
                detail: format!(
                    "{bad}/{} elements out of tolerance (atol={}, rtol={}); worst at flat index {i} {:?}: got {}, expected {}, |err|={:.3e}",
                    e.len(),
                    tol.atol,
                    tol.rtol,
                    unravel(i, expected.dims()),
                    a[i],
                    e[i],
                    (a[i] - e[i]).abs()
                ),
            });
        }
    }
    Ok(report)
}

fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}
