//! Behaviour beyond the fixtures: both samplers integrate an exactly linear flow exactly, at any
//! step count (1 included) and shift (1 included); begin index and lookup agree; strength and
//! add_noise pick the sigma diffusers picks; bad configs and shifts are refused.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use super::*;
use crate::Error;

fn unipc_json() -> serde_json::Value {
    json!({
        "_class_name": "UniPCMultistepScheduler",
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": true,
        "flow_shift": 3.0,
        "solver_order": 2,
        "solver_type": "bh2",
        "predict_x0": true,
        "lower_order_final": true,
        "final_sigmas_type": "zero"
    })
}

fn euler_json() -> serde_json::Value {
    json!({ "_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0 })
}

fn scheduler(config: serde_json::Value, shift: Option<f64>, steps: usize) -> Scheduler {
    let mut s = Scheduler::from_config(SchedulerConfig::from_json(config).unwrap(), shift).unwrap();
    s.set_timesteps(steps).unwrap();
    s
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Runs the whole schedule on the straight path x(sigma) = (1 - sigma) * x0 + sigma * eps, whose
/// velocity eps - x0 is the same everywhere, and checks every step lands on that path.
fn assert_integrates_linear_flow_exactly(mut s: Scheduler) {
    let dev = Device::Cpu;
    let x0 = Tensor::randn(0f32, 1.0, (1, 4, 2, 3, 5), &dev).unwrap();
    let eps = Tensor::randn(0f32, 1.0, (1, 4, 2, 3, 5), &dev).unwrap();
    let velocity = (&eps - &x0).unwrap();
    let on_path = |sigma: f64| ((&x0 * (1.0 - sigma)).unwrap() + (&eps * sigma).unwrap()).unwrap();
    let sigmas = s.sigmas().to_vec();
    let mut x = on_path(sigmas[0]);
    for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
        x = s.step(&velocity, t, &x).unwrap();
        let err = max_abs_diff(&x, &on_path(sigmas[i + 1]));
        assert!(err < 2e-5, "step {i}: off the path by {err}");
    }
    assert!(max_abs_diff(&x, &x0) < 2e-5);
}

#[test]
fn unipc_is_exact_on_a_linear_flow_for_any_steps_and_shift() {
    for (steps, shift) in [(1, None), (2, None), (5, Some(1.0)), (12, Some(5.0)), (30, Some(8.0))] {
        assert_integrates_linear_flow_exactly(scheduler(unipc_json(), shift, steps));
    }
    let mut third_order = unipc_json();
    third_order["solver_order"] = json!(3);
    assert_integrates_linear_flow_exactly(scheduler(third_order, None, 9));
}

#[test]
fn euler_is_exact_on_a_linear_flow_for_any_steps_and_shift() {
    for (steps, shift) in [(1, None), (3, Some(1.0)), (20, Some(5.0))] {
        assert_integrates_linear_flow_exactly(scheduler(euler_json(), shift, steps));
    }
}

#[test]
fn one_unipc_step_returns_the_data_prediction() {
    let mut s = scheduler(unipc_json(), None, 1);
    assert_eq!(s.timesteps().len(), 1);
    assert_eq!(s.sigmas().len(), 2);
    assert_eq!(*s.sigmas().last().unwrap(), 0.0);
    // the first sigma (exactly 1 after any shift) is nudged below 1, so its timestep is T - 1
    assert!(s.sigmas()[0] < 1.0);
    assert_eq!(s.timesteps()[0], 999.0);
    // to sigma 0 in one first-order step: x0 = x - sigma * v
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 3), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (2, 3), &dev).unwrap();
    let x0 = (&x - (&v * s.sigmas()[0]).unwrap()).unwrap();
    let t = s.timesteps()[0];
    assert!(max_abs_diff(&s.step(&v, t, &x).unwrap(), &x0) < 1e-6);
}

#[test]
fn unit_shift_leaves_linear_sigmas() {
    let s = scheduler(unipc_json(), Some(1.0), 8);
    let linear = tables::linspace(1.0, 1e-3, 9);
    for (i, (&got, &want)) in s.sigmas().iter().zip(&linear).take(8).enumerate().skip(1) {
        assert_eq!(got, tables::as_f32(want), "sigma {i}");
    }
}

#[test]
fn shift_override_rebuilds_from_config() {
    let mut a = scheduler(unipc_json(), Some(5.0), 4);
    let mut with_config_shift = unipc_json();
    with_config_shift["flow_shift"] = json!(5.0);
    let b = scheduler(with_config_shift, None, 4);
    assert_eq!(a.timesteps(), b.timesteps());
    assert_eq!(a.sigmas(), b.sigmas());
    assert_eq!(a.shift(), 5.0);
    a.set_timesteps(4).unwrap();
    assert_ne!(a.timesteps(), scheduler(unipc_json(), None, 4).timesteps());
}

#[test]
fn begin_index_and_timestep_lookup_agree_when_timesteps_are_unique() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 4), &dev).unwrap();
    let outputs: Vec<Tensor> = (0..6).map(|_| Tensor::randn(0f32, 1.0, (2, 3, 4), &dev).unwrap()).collect();
    let mut with_begin = scheduler(unipc_json(), None, 6);
    with_begin.set_begin_index(0);
    let mut by_lookup = scheduler(unipc_json(), None, 6);
    let (mut a, mut b) = (x.clone(), x);
    for (t, v) in with_begin.timesteps().to_vec().into_iter().zip(&outputs) {
        a = with_begin.step(v, t, &a).unwrap();
        b = by_lookup.step(v, t, &b).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }
}

#[test]
fn strength_start_and_add_noise_use_the_same_sigma() {
    for config in [unipc_json(), euler_json()] {
        let s = scheduler(config, None, 10);
        let (kept, t_start) = s.timesteps_for_strength(0.6);
        assert_eq!((kept.len(), t_start), (6, 4));
        assert_eq!(kept[0], s.timesteps()[4]);
        let dev = Device::Cpu;
        let clean = Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap();
        let noise = Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap();
        let sigma = s.sigmas()[4];
        let want = ((&clean * (1.0 - sigma)).unwrap() + (&noise * sigma).unwrap()).unwrap();
        let got = s.add_noise(&clean, &noise, kept[0]).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
    }
}

#[test]
fn dtypes_follow_diffusers() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap().to_dtype(DType::BF16).unwrap();
    let v = Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap();
    let mut unipc = scheduler(unipc_json(), None, 3);
    let t = unipc.timesteps()[0];
    assert_eq!(unipc.step(&v, t, &x).unwrap().dtype(), DType::BF16);
    let mut euler = scheduler(euler_json(), None, 3);
    let t = euler.timesteps()[0];
    assert_eq!(euler.step(&v, t, &x).unwrap().dtype(), DType::F32);
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
    let mut fresh = Scheduler::from_config(SchedulerConfig::from_json(unipc_json()).unwrap(), None).unwrap();
    assert!(matches!(fresh.step(&x, 999.0, &x), Err(Error::InvalidInput(_))));
    assert!(matches!(fresh.set_timesteps(0), Err(Error::InvalidInput(_))));
    let mut euler = scheduler(euler_json(), None, 2);
    assert!(matches!(euler.step(&x, 123.0, &x), Err(Error::InvalidInput(_))));
    let mut one = scheduler(unipc_json(), None, 1);
    let t = one.timesteps()[0];
    one.step(&x, t, &x).unwrap();
    assert!(matches!(one.step(&x, t, &x), Err(Error::InvalidInput(_))));
    let wrong_shape = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    assert!(matches!(scheduler(unipc_json(), None, 2).step(&wrong_shape, 999.0, &x), Err(Error::InvalidInput(_))));
}

#[test]
fn unsupported_configs_and_shifts_are_refused() {
    let mut eps = unipc_json();
    eps["prediction_type"] = json!("epsilon");
    let parsed = SchedulerConfig::from_json(eps).unwrap();
    assert!(matches!(Scheduler::from_config(parsed, None), Err(Error::UnsupportedConfig(_))));
    let unknown = json!({ "_class_name": "DDIMScheduler" });
    assert!(matches!(SchedulerConfig::from_json(unknown), Err(Error::UnsupportedConfig(_))));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let parsed = SchedulerConfig::from_json(unipc_json()).unwrap();
        assert!(matches!(Scheduler::from_config(parsed, Some(bad)), Err(Error::InvalidInput(_))));
    }
}

#[test]
fn model_directories_pick_their_class() {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models");
    let t2v = Scheduler::from_model_dir(&models.join("wan-tiny-t2v"), None).unwrap();
    assert!(matches!(t2v, Scheduler::UniPc(_)));
    assert_eq!(t2v.shift(), 3.0);
    let euler = Scheduler::from_model_dir(&models.join("scheduler-flow-match-euler"), Some(7.0)).unwrap();
    assert!(matches!(euler, Scheduler::FlowMatchEuler(_)));
    assert_eq!(euler.shift(), 7.0);
    assert!(matches!(Scheduler::from_model_dir(&models, None), Err(Error::MissingModelFile { .. })));
}

/// (2, 3) original and noise of the per-sample noising tests (the values of the diffusers run
/// that produced the expected numbers below).
fn noising_pair() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let original = Tensor::new(&[[0.5f32, 1.0, 1.5], [2.0, 2.5, 3.0]], &dev).unwrap();
    let noise = Tensor::new(&[[-1.0f32, 0.5, 2.0], [0.25, -3.0, 1.0]], &dev).unwrap();
    (original, noise)
}

fn assert_values(got: &Tensor, want: &[f32]) {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "element {i}: {g} vs diffusers {w}");
    }
}

#[test]
fn unipc_add_noise_takes_one_timestep_per_sample() {
    // diffusers 0.42.1: UniPCMultistepScheduler(flow_shift=3, ...).set_timesteps(5) gives
    // timesteps [999, 923, 818, 667, 429]; add_noise(original, noise, tensor([923, 667])) and
    // add_noise(original, noise, tensor([818])) returned these.
    let s = scheduler(unipc_json(), None, 5);
    assert_eq!(s.timesteps(), &[999.0, 923.0, 818.0, 667.0, 429.0]);
    let (original, noise) = noising_pair();
    let got = s.add_noise_per_sample(&original, &noise, &[923.0, 667.0]).unwrap();
    assert_values(&got, &[-0.8847485, 0.53841716, 1.9615829, 0.83236176, -1.1697202, 1.6655563]);
    let one = [-0.72764444, 0.59078515, 1.9092149, 0.56774813, -2.001363, 1.3631407];
    assert_values(&s.add_noise_per_sample(&original, &noise, &[818.0]).unwrap(), &one);
    // The scalar entry point is the one-timestep case.
    assert_values(&s.add_noise(&original, &noise, 818.0).unwrap(), &one);
}

#[test]
fn euler_scale_noise_takes_one_timestep_per_sample() {
    // diffusers 0.42.1: FlowMatchEulerDiscreteScheduler(shift=3).set_timesteps(5) gives
    // timesteps [1000, 900.35907, 751.1211, 502.98505, 8.928572]; scale_noise(original,
    // tensor([1000, 8.928572]), noise) returned the first row; after set_begin_index(2) every
    // sample takes sigmas[2] whatever its timestep.
    let mut s = scheduler(euler_json(), None, 5);
    let t = s.timesteps().to_vec();
    assert_eq!((t[0], t[4] as f32), (1000.0, 8.928572));
    let (original, noise) = noising_pair();
    let got = s.add_noise_per_sample(&original, &noise, &[t[0], t[4]]).unwrap();
    assert_values(&got, &[-1.0, 0.5, 2.0, 1.984375, 2.4508929, 2.9821427]);
    s.set_begin_index(2);
    let got = s.add_noise_per_sample(&original, &noise, &[t[0], t[4]]).unwrap();
    assert_values(&got, &[-0.6266817, 0.62443948, 1.8755605, 0.68553805, -1.6311661, 1.4977578]);
}

#[test]
fn per_sample_noising_refuses_a_mismatched_batch() {
    let s = scheduler(unipc_json(), None, 5);
    let (original, noise) = noising_pair();
    for timesteps in [&[][..], &[999.0, 923.0, 818.0][..]] {
        let err = s.add_noise_per_sample(&original, &noise, timesteps).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
    let short = noise.narrow(1, 0, 2).unwrap();
    assert!(s.add_noise_per_sample(&original, &short, &[999.0]).is_err());
}
