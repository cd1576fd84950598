//! UniPC multistep sampling (Zhao et al. 2023) as diffusers' `UniPCMultistepScheduler` runs it
//! for Wan: flow sigmas shifted by `flow_shift`, data prediction (`predict_x0`), the B(h)
//! predictor UniP and corrector UniC, warm-up and `lower_order_final` order reduction.
//!
//! Sigma tables are computed in f64 and rounded to f32 where diffusers stores float32, and every
//! per-step coefficient (log-SNRs, phi functions, the small rho systems) is computed in f64 from
//! those f32 sigmas; the tensors themselves are combined in f32 on whatever device they live on.

use std::collections::VecDeque;

use candle_core::{DType, Tensor};

use super::config::{FinalSigmasType, SolverType, UniPcConfig};
use super::schedule::Schedule;
use super::tables::{self, as_f32, linspace, shift_sigma, stretch_to_terminal};
use super::noising::per_sample;
use super::weighted_sum;
use crate::{Error, Result};

/// diffusers nudges a first sigma of exactly 1 down by this, so that `log(alpha = 1 - sigma)`
/// stays finite in the first updates.
const FIRST_SIGMA_EPS: f64 = 1e-6;

/// The coefficients of one UniP or UniC update (see [`UniPcMultistep::update_terms`]).
struct UpdateTerms {
    sigma_t: f64,
    sigma_s0: f64,
    /// `1 - sigma_t`.
    alpha_t: f64,
    /// `(lambda_i - lambda_s0) / h` for each earlier prediction, then 1.
    rks: Vec<f64>,
    /// `h * phi_1(-h)`.
    h_phi_1: f64,
    /// `B(h)`.
    b_h: f64,
    /// The right-hand side of the order conditions.
    b: Vec<f64>,
}

/// The UniPC sampler and its multistep state.
#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    config: UniPcConfig,
    /// Integral timesteps as the model receives them (diffusers: int64 `trunc(sigma * T)`); one
    /// more sigma than timesteps, each exactly a float32 value, the last the final sigma.
    schedule: Schedule,
    num_inference_steps: Option<usize>,
    /// The last `solver_order` data predictions (x0), oldest first.
    model_outputs: VecDeque<Tensor>,
    /// How many steps have run, capped at `solver_order` (drives the warm-up order).
    lower_order_nums: usize,
    /// The sample the last predictor started from, for the next step's corrector.
    last_sample: Option<Tensor>,
    /// The order of the last predictor, reused by the next corrector.
    this_order: usize,
}

impl UniPcMultistep {
    /// A sampler for `config` (as `UniPCMultistepScheduler.from_config`); the schedule is empty
    /// until [`Self::set_timesteps`].
    pub fn new(config: UniPcConfig) -> Result<Self> {
        config.check_supported()?;
        Ok(Self {
            config,
            schedule: Schedule::default(),
            num_inference_steps: None,
            model_outputs: VecDeque::new(),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 0,
        })
    }

    pub fn config(&self) -> &UniPcConfig {
        &self.config
    }

    /// Builds the flow-sigma schedule of `num_inference_steps` steps and resets the multistep
    /// state, the step index and the begin index (as diffusers does).
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(Error::InvalidInput("num_inference_steps must be at least 1".into()));
        }
        let train_steps = self.config.num_train_timesteps as f64;
        // np.linspace(1, 1 / T, n + 1)[:-1], then the flow shift, all float64
        let mut sigmas: Vec<f64> = linspace(1.0, 1.0 / train_steps, num_inference_steps + 1)
            .into_iter()
            .take(num_inference_steps)
            .map(|s| shift_sigma(self.config.flow_shift, s))
            .collect();
        if let Some(terminal) = self.config.shift_terminal.filter(|&t| t != 0.0) {
            stretch_to_terminal(&mut sigmas, terminal);
        }
        if (sigmas[0] - 1.0).abs() < FIRST_SIGMA_EPS {
            sigmas[0] -= FIRST_SIGMA_EPS;
        }
        // float64 sigmas * T cast to int64: truncation toward zero
        let timesteps = sigmas.iter().map(|s| (s * train_steps).trunc()).collect();
        let sigma_last = match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => sigmas[num_inference_steps - 1],
        };
        sigmas.push(sigma_last);
        self.schedule = Schedule::new(timesteps, sigmas.into_iter().map(as_f32).collect());
        self.num_inference_steps = Some(num_inference_steps);
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.last_sample = None;
        Ok(())
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn schedule_mut(&mut self) -> &mut Schedule {
        &mut self.schedule
    }

    /// diffusers' `index_for_timestep`, falling back to the last position for an unknown timestep.
    fn index_for(&self, timestep: f64) -> Result<usize> {
        Ok(self.schedule.find(timestep).unwrap_or(self.schedule.timesteps().len().saturating_sub(1)))
    }

    /// One UniPC step: corrects the incoming `sample` with the new model output (UniC, from the
    /// second step on), then predicts the next sample (UniP). Returns it in `sample`'s dtype.
    pub fn step(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        let n = self
            .num_inference_steps
            .ok_or_else(|| Error::InvalidInput("UniPC: set_timesteps must be called before step".into()))?;
        if model_output.dims() != sample.dims() {
            return Err(Error::InvalidInput(format!(
                "UniPC step: model output shape {:?} differs from sample shape {:?}",
                model_output.dims(),
                sample.dims()
            )));
        }
        let k = self.schedule.step_position(|| self.index_for(timestep))?;
        if k >= n {
            return Err(Error::InvalidInput(format!("UniPC: step {k} is past the {n}-step schedule")));
        }
        self.schedule.set_step_index(k);
        let out_dtype = sample.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let model_output = model_output.to_dtype(DType::F32)?;

        // flow prediction -> data prediction: x0 = x - sigma * v
        let x0 = (&sample - (&model_output * self.schedule.sigmas()[k])?)?;

        let use_corrector = k > 0 && !self.config.disable_corrector.contains(&(k - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector_update(&x0, last, k)?,
            _ => sample,
        };

        if self.model_outputs.len() == self.config.solver_order {
            self.model_outputs.pop_front();
        }
        self.model_outputs.push_back(x0);

        let order = if self.config.lower_order_final {
            self.config.solver_order.min(n - k)
        } else {
            self.config.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);

        let prev_sample = self.predictor_update(&sample, k)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < self.config.solver_order {
            self.lower_order_nums += 1;
        }
        self.schedule.set_step_index(k + 1);
        Ok(prev_sample.to_dtype(out_dtype)?)
    }

    /// The stored data prediction `back` steps ago (0 = the newest).
    fn past_output(&self, back: usize) -> Result<&Tensor> {
        let len = self.model_outputs.len();
        len.checked_sub(back + 1)
            .and_then(|i| self.model_outputs.get(i))
            .ok_or_else(|| Error::InvalidInput(format!("UniPC: no model output {back} steps back")))
    }

    /// log-SNR of a flow sigma: log(alpha) - log(sigma) with alpha = 1 - sigma.
    fn lambda(sigma: f64) -> f64 {
        (1.0 - sigma).ln() - sigma.ln()
    }

    /// `hh = -h` (data prediction), `h * phi_1(hh)`, `B(h)` and the right-hand side `b` of the
    /// UniPC order conditions, as in diffusers' `multistep_uni_{p,c}_bh_update`.
    fn bh_terms(&self, h: f64, order: usize) -> (f64, f64, Vec<f64>) {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.config.solver_type {
            SolverType::Bh1 => hh,
            SolverType::Bh2 => hh.exp_m1(),
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        (h_phi_1, b_h, b)
    }

    /// The coefficients of an update from `sigmas[s0]` to `sigmas[t]` over the newest `order`
    /// predictions (the i-th earlier one made at `sigmas[s0 - i]`), shared by UniP and UniC.
    fn update_terms(&self, t: usize, s0: usize, order: usize) -> UpdateTerms {
        let sigmas = self.schedule.sigmas();
        let (sigma_t, sigma_s0) = (sigmas[t], sigmas[s0]);
        let lambda_s0 = Self::lambda(sigma_s0);
        let h = Self::lambda(sigma_t) - lambda_s0;
        let mut rks: Vec<f64> = (1..order).map(|i| (Self::lambda(sigmas[s0 - i]) - lambda_s0) / h).collect();
        rks.push(1.0);
        let (h_phi_1, b_h, b) = self.bh_terms(h, order);
        UpdateTerms { sigma_t, sigma_s0, alpha_t: 1.0 - sigma_t, rks, h_phi_1, b_h, b }
    }

    /// The Vandermonde-like matrix `R[i][j] = rks[j]^i` of the order conditions.
    fn order_matrix(rks: &[f64], size: usize) -> Vec<Vec<f64>> {
        (0..size).map(|i| rks[..size].iter().map(|r| r.powi(i as i32)).collect()).collect()
    }

    /// UniP: from `x` at `sigmas[k]` to `sigmas[k + 1]` with the newest `this_order` predictions.
    fn predictor_update(&self, x: &Tensor, k: usize) -> Result<Tensor> {
        let order = self.this_order;
        let UpdateTerms { sigma_t, sigma_s0, alpha_t, rks, h_phi_1, b_h, b } = self.update_terms(k + 1, k, order);
        let m0 = self.past_output(0)?;
        let rhos: Vec<f64> = match order {
            1 => Vec::new(),
            2 => vec![0.5],
            _ => tables::solve(Self::order_matrix(&rks, order - 1), b[..order - 1].to_vec())
                .ok_or_else(|| Error::InvalidInput("UniPC predictor: singular order system".into()))?,
        };

        // x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
        //       - alpha_t * B_h * sum_i rho_i * (m_i - m0) / r_i
        let mut m0_coef = -alpha_t * h_phi_1;
        let mut terms = vec![(sigma_t / sigma_s0, x.clone())];
        for (i, rho) in rhos.iter().enumerate() {
            let c = alpha_t * b_h * rho / rks[i];
            terms.push((-c, self.past_output(i + 1)?.clone()));
            m0_coef += c;
        }
        terms.push((m0_coef, m0.clone()));
        weighted_sum(&terms)
    }

    /// UniC: corrects `this_sample`'s predecessor step, from `last_sample` at `sigmas[k - 1]` to
    /// `sigmas[k]`, using the new data prediction `model_t` (made at `sigmas[k]`).
    fn corrector_update(&self, model_t: &Tensor, last_sample: &Tensor, k: usize) -> Result<Tensor> {
        let order = self.this_order;
        let UpdateTerms { sigma_t, sigma_s0, alpha_t, rks, h_phi_1, b_h, b } = self.update_terms(k, k - 1, order);
        let m0 = self.past_output(0)?;
        let rhos: Vec<f64> = if order == 1 {
            vec![0.5]
        } else {
            tables::solve(Self::order_matrix(&rks, order), b)
                .ok_or_else(|| Error::InvalidInput("UniPC corrector: singular order system".into()))?
        };

        // x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
        //       - alpha_t * B_h * (sum_i rho_i * (m_i - m0) / r_i + rho_last * (model_t - m0))
        let scale = alpha_t * b_h;
        let rho_last = rhos[order - 1];
        let mut m0_coef = -alpha_t * h_phi_1 + scale * rho_last;
        let mut terms = vec![(sigma_t / sigma_s0, last_sample.clone())];
        for (i, rho) in rhos[..order - 1].iter().enumerate() {
            let c = scale * rho / rks[i];
            terms.push((-c, self.past_output(i + 1)?.clone()));
            m0_coef += c;
        }
        terms.push((m0_coef, m0.clone()));
        terms.push((-scale * rho_last, model_t.clone()));
        weighted_sum(&terms)
    }

    /// Noises `original` to `timestep`: `(1 - sigma) * original + sigma * noise`, with the sigma
    /// chosen as diffusers' `add_noise` does (looked up when no begin index is set; otherwise the
    /// current step, or the begin index before the first step). Returns `original`'s dtype.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.add_noise_per_sample(original, noise, &[timestep])
    }

    /// [`Self::add_noise`] with one timestep per sample of dimension 0 (or one for all), each
    /// sample at the sigma diffusers picks for its timestep.
    pub fn add_noise_per_sample(&self, original: &Tensor, noise: &Tensor, timesteps: &[f64]) -> Result<Tensor> {
        if self.num_inference_steps.is_none() {
            return Err(Error::InvalidInput("UniPC: set_timesteps must be called before add_noise".into()));
        }
        let sigmas = timesteps
            .iter()
            .map(|&t| {
                let index = self.schedule.noise_position(|| self.index_for(t))?;
                self.schedule
                    .sigmas()
                    .get(index)
                    .copied()
                    .ok_or_else(|| Error::InvalidInput(format!("UniPC add_noise: index {index} outside the schedule")))
            })
            .collect::<Result<Vec<_>>>()?;
        let dtype = original.dtype();
        let original = original.to_dtype(DType::F32)?;
        let noise = noise.to_dtype(DType::F32)?;
        let mixed = per_sample(&original, &noise, &sigmas, |sigma, original, noise| {
            weighted_sum(&[(1.0 - sigma, original.clone()), (sigma, noise.clone())])
        })?;
        Ok(mixed.to_dtype(dtype)?)
    }
}
