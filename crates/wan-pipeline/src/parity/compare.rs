//! Elementwise comparison of computed tensors with the reference outputs.

use candle_core::{DType, Tensor};

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

/// Every expected tensor (by name, sorted) beside the computed one of the same name and shape;
/// a missing output or a shape difference goes to `report` as a mismatch instead.
fn paired_tensors<'a>(fixture: &'a Fixture, actual: &'a Outputs, report: &mut Report) -> Vec<(&'a String, &'a Tensor, &'a Tensor)> {
    let mut names: Vec<&String> = fixture.expected.keys().collect();
    names.sort();
    let mut pairs = Vec::with_capacity(names.len());
    for name in names {
        let expected = &fixture.expected[name];
        match actual.get(name) {
            None => report.mismatches.push(Mismatch { tensor: name.clone(), detail: "not produced".into() }),
            Some(got) if got.dims() != expected.dims() => report.mismatches.push(Mismatch {
                tensor: name.clone(),
                detail: format!("shape {:?}, expected {:?}", got.dims(), expected.dims()),
            }),
            Some(got) => pairs.push((name, expected, got)),
        }
    }
    pairs
}

/// Compares every tensor of `outputs.safetensors` with the output of the same name.
/// A missing output or a shape difference is a mismatch; integer tensors must be equal.
pub fn compare(fixture: &Fixture, actual: &Outputs) -> Result<Report> {
    let mut report = Report { max_abs_err: 0.0, worst_tensor: String::new(), mismatches: Vec::new() };
    for (name, expected, got) in paired_tensors(fixture, actual, &mut report) {
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

/// How a half-precision (bf16/f16) run is held to the float32 fixtures. Elementwise tolerances
/// do not fit it: bf16 keeps 8 significant bits, so an element's error follows the scale of the
/// whole activation it came from (a residual stream of magnitude 15 is rounded in steps of 0.06),
/// and a few elements near zero always end far off in relative terms. Each float tensor is judged
/// by its error relative to its own scale instead:
/// - `rms(actual - expected) / rms(expected)` at most `rel_rms` (the typical error), and
/// - `max |actual - expected| / max |expected|` at most `rel_max` (no element far off the scale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HalfPrecisionTolerance {
    pub rel_rms: f64,
    pub rel_max: f64,
}

/// The bf16 criterion of the GPU check: 5% relative RMS and 10% of the tensor's largest value.
/// On the CPU (AMD EPYC, AVX2) every shared and project fixture runs in bf16 within 3.7% relative
/// RMS (worst: the prompt embeddings of the project's tiny UMT5, then the VAE decode at 3.2%) and
/// 6.7% of the scale at the worst element; a wrong layer is off by the order of the values.
pub const BF16_TOLERANCE: HalfPrecisionTolerance = HalfPrecisionTolerance { rel_rms: 5e-2, rel_max: 0.1 };

/// [`compare`] for a half-precision run: integer tensors exact, float tensors by
/// [`HalfPrecisionTolerance`].
pub fn compare_half_precision(fixture: &Fixture, actual: &Outputs, tol: HalfPrecisionTolerance) -> Result<Report> {
    let mut report = Report { max_abs_err: 0.0, worst_tensor: String::new(), mismatches: Vec::new() };
    for (name, expected, got) in paired_tensors(fixture, actual, &mut report) {
        let e: Vec<f64> = expected.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let a: Vec<f64> = got.flatten_all()?.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?.to_vec1()?;
        let n = e.len().max(1) as f64;
        let (mut err_sq, mut ref_sq, mut err_max, mut ref_max) = (0f64, 0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(e.iter()) {
            let err = if (x - y).is_nan() { f64::INFINITY } else { (x - y).abs() };
            err_sq += err * err;
            ref_sq += y * y;
            err_max = err_max.max(err);
            ref_max = ref_max.max(y.abs());
        }
        if err_max > report.max_abs_err || report.worst_tensor.is_empty() {
            report.max_abs_err = report.max_abs_err.max(err_max);
            report.worst_tensor = name.clone();
        }
        let (rel_rms, rel_max) = if is_integer(expected.dtype()) || ref_max == 0.0 {
            // Exact: any error at all fails.
            (if err_max > 0.0 { f64::INFINITY } else { 0.0 }, if err_max > 0.0 { f64::INFINITY } else { 0.0 })
        } else {
            ((err_sq / n).sqrt() / (ref_sq / n).sqrt(), err_max / ref_max)
        };
        if rel_rms > tol.rel_rms || rel_max > tol.rel_max {
            report.mismatches.push(Mismatch {
                tensor: name.clone(),
                detail: format!(
                    "relative RMS error {rel_rms:.3e} (at most {}), largest error {err_max:.3e} = {rel_max:.3e} of the largest value (at most {})",
                    tol.rel_rms, tol.rel_max
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use super::*;

    fn fixture(expected: Vec<(&str, Tensor)>) -> Fixture {
        Fixture {
            name: "t".into(),
            kind: "transformer".into(),
            dir: ".".into(),
            model_dir: ".".into(),
            call: serde_json::Value::Null,
            tolerance: super::super::Tolerance { atol: 0.0, rtol: 0.0 },
            tolerance_per_tensor: HashMap::new(),
            inputs: HashMap::new(),
            expected: expected.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    #[test]
    fn half_precision_is_judged_against_each_tensors_scale() {
        let dev = Device::Cpu;
        // A residual stream of scale ~15 with small elements among large ones.
        let values: Vec<f32> = (0..200).map(|i| if i % 10 == 0 { 15.0 } else { (i as f32 - 100.0) / 100.0 }).collect();
        let expected = Tensor::new(values.as_slice(), &dev).unwrap();
        let f = fixture(vec![("x", expected.clone()), ("ids", Tensor::new(&[1u32, 2, 3], &dev).unwrap())]);
        let ids = Tensor::new(&[1u32, 2, 3], &dev).unwrap();
        // bf16 rounding of the whole tensor, and a small element off by 0.1 (0.7% of the scale):
        // far outside an elementwise 5e-2 tolerance, well inside the half-precision one.
        let mut near = expected.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        near[1] += 0.1;
        let out = Outputs::from([("x".to_string(), Tensor::new(near.as_slice(), &dev).unwrap()), ("ids".to_string(), ids.clone())]);
        let report = compare_half_precision(&f, &out, BF16_TOLERANCE).unwrap();
        assert!(report.passed(), "{report:?}");
        // One element off by half the scale fails, and so does a wrong integer.
        let mut far = values.clone();
        far[3] += 7.5;
        let out = Outputs::from([("x".to_string(), Tensor::new(far.as_slice(), &dev).unwrap()), ("ids".to_string(), ids)]);
        let report = compare_half_precision(&f, &out, BF16_TOLERANCE).unwrap();
        assert_eq!(report.mismatches.len(), 1, "{report:?}");
        assert!(report.mismatches[0].detail.contains("largest error"), "{report:?}");
        let out = Outputs::from([
            ("x".to_string(), expected.clone()),
            ("ids".to_string(), Tensor::new(&[1u32, 2, 4], &dev).unwrap()),
        ]);
        let report = compare_half_precision(&f, &out, BF16_TOLERANCE).unwrap();
        assert_eq!(report.mismatches.len(), 1);
        assert_eq!(report.mismatches[0].tensor, "ids");
    }
}
