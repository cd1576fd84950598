//! The arithmetic both samplers share, written to round exactly as numpy / torch do.
//!
//! UniPC's integer timesteps are `trunc(sigma * 1000)` of float64 sigmas, so a sigma one ulp off
//! can move a timestep by one and change what the transformer sees: the sigma tables are computed
//! in f64 with numpy's operation order (Rust never fuses a multiply and an add on its own).

/// `numpy.linspace(start, stop, num)` (endpoint included) to the last bit: `i * step + start`,
/// with the last element set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let div = num - 1;
    let delta = stop - start;
    let mut y: Vec<f64> = if div == 0 {
        // numpy: "sequences with 1 item with endpoint=True have an undefined step"
        vec![0.0 * delta + start]
    } else {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num).map(|i| i as f64 / div as f64 * delta + start).collect()
        } else {
            (0..num).map(|i| i as f64 * step + start).collect()
        }
    };
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// The resolution-independent flow shift `shift * s / (1 + (shift - 1) * s)`, in numpy's order.
pub fn shift_sigma(shift: f64, sigma: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// The same shift as torch evaluates it on a float32 tensor with a Python-float `shift`: the
/// scalars `shift` and `shift - 1` (computed in float64) are rounded to float32 and every
/// operation rounds to float32.
pub fn shift_sigma_f32(shift: f64, sigma: f32) -> f32 {
    let (shift_f32, shift_minus_one) = (shift as f32, (shift - 1.0) as f32);
    shift_f32 * sigma / (1.0 + shift_minus_one * sigma)
}

/// Stretches a shifted schedule so that it ends exactly at `shift_terminal` (LTX-Video's rule,
/// as diffusers' `stretch_shift_to_terminal`).
pub fn stretch_to_terminal(sigmas: &mut [f64], shift_terminal: f64) {
    let Some(&last) = sigmas.last() else { return };
    let scale_factor = (1.0 - last) / (1.0 - shift_terminal);
    for s in sigmas.iter_mut() {
        *s = 1.0 - (1.0 - *s) / scale_factor;
    }
}

/// Rounds an f64 to the nearest f32 and back: the value a float32 tensor holds.
pub fn as_f32(x: f64) -> f64 {
    x as f32 as f64
}

/// diffusers' `index_for_timestep`: the position of `timestep` in the schedule; when it occurs
/// more than once, the second occurrence, so that a run started part-way (img2img, v2v) does not
/// skip a sigma. `None` when the timestep is not in the schedule.
pub fn index_for_timestep(schedule: &[f64], timestep: f64) -> Option<usize> {
    let mut hits = schedule.iter().enumerate().filter(|(_, &t)| t == timestep).map(|(i, _)| i);
    let first = hits.next()?;
    Some(hits.next().unwrap_or(first))
}

/// The timesteps a partial (SDEdit) run keeps for `strength`: diffusers' `get_timesteps` of the
/// img2img / video2video pipelines, with the scheduler order 1 of both samplers.
/// `strength` is clamped to [0, 1]; 1 keeps every step, 0 none.
pub fn timesteps_for_strength(timesteps: &[f64], strength: f64) -> (Vec<f64>, usize) {
    let n = timesteps.len();
    let strength = if strength.is_nan() { 0.0 } else { strength.clamp(0.0, 1.0) };
    // Python: min(int(num_inference_steps * strength), num_inference_steps)
    let init_timestep = ((n as f64 * strength) as usize).min(n);
    let t_start = n - init_timestep;
    (timesteps[t_start..].to_vec(), t_start)
}

/// Solves the small dense system `a x = b` by Gaussian elimination with partial pivoting
/// (the `torch.linalg.solve` of UniPC's order >= 3 coefficients). `None` if singular.
pub fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col] == 0.0 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (pivot_row, pivot_b) = (a[col].clone(), b[col]);
        for (row, rhs) in a.iter_mut().zip(b.iter_mut()).skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * p;
            }
            *rhs -= f * pivot_b;
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_hits_both_ends_and_is_evenly_spaced() {
        let y = linspace(1.0, 0.001, 5);
        assert_eq!(y.len(), 5);
        assert_eq!(y[0], 1.0);
        assert_eq!(y[4], 0.001);
        let step = (0.001 - 1.0) / 4.0;
        assert_eq!(y[2], 2.0 * step + 1.0);
        assert_eq!(linspace(3.0, 7.0, 1), vec![3.0]);
        assert!(linspace(0.0, 1.0, 0).is_empty());
    }

    #[test]
    fn second_occurrence_wins_in_index_for_timestep() {
        let schedule = [999.0, 990.0, 990.0, 500.0];
        assert_eq!(index_for_timestep(&schedule, 990.0), Some(2));
        assert_eq!(index_for_timestep(&schedule, 500.0), Some(3));
        assert_eq!(index_for_timestep(&schedule, 1.0), None);
    }

    #[test]
    fn strength_keeps_the_tail_of_the_schedule() {
        let t: Vec<f64> = (0..10).map(|i| 1000.0 - 100.0 * i as f64).collect();
        let (kept, start) = timesteps_for_strength(&t, 0.75);
        // int(10 * 0.75) = 7 steps kept
        assert_eq!(start, 3);
        assert_eq!(kept, t[3..].to_vec());
        assert_eq!(timesteps_for_strength(&t, 1.0), (t.clone(), 0));
        assert_eq!(timesteps_for_strength(&t, 0.0).0.len(), 0);
        assert_eq!(timesteps_for_strength(&t, 2.0).1, 0);
    }

    #[test]
    fn solve_satisfies_the_system_and_rejects_singular_ones() {
        let a = vec![vec![0.5, 2.0, -1.0], vec![3.0, 0.25, 1.0], vec![-2.0, 1.0, 4.0]];
        let b = vec![1.0, -2.0, 0.5];
        let x = solve(a.clone(), b.clone()).unwrap();
        for (row, rhs) in a.iter().zip(&b) {
            let lhs: f64 = row.iter().zip(&x).map(|(p, q)| p * q).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{lhs} != {rhs}");
        }
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn unit_shift_is_the_identity() {
        for s in [0.001, 0.25, 0.5, 1.0] {
            assert_eq!(shift_sigma(1.0, s), s);
        }
        assert_eq!(shift_sigma(3.0, 1.0), 1.0);
    }
}
