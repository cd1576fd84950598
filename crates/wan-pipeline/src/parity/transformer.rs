//! Fixture kind `transformer`: one forward of `WanTransformer3DModel` with its debug intermediates.

use candle_core::Tensor;

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::transformer::{ForwardTrace, WanTransformer3DModel};
use crate::{Error, Result};

pub fn prepare(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let model = WanTransformer3DModel::load(&fixture.model_dir.join("transformer"), opts.dtype, &opts.device)?;
    let to_device = |name: &str| -> Result<Tensor> { Ok(fixture.input(name)?.to_device(&opts.device)?) };
    let hidden_states = to_device("hidden_states")?;
    let timestep = to_device("timestep")?;
    let text = to_device("encoder_hidden_states")?;
    let image = match fixture.inputs.get("encoder_hidden_states_image") {
        Some(t) => Some(t.to_device(&opts.device)?),
        None => None,
    };
    Ok(Some(Box::new(move || {
        let mut trace = ForwardTrace::default();
        let output = model.forward_traced(&hidden_states, &timestep, &text, image.as_ref(), &mut trace)?;
        let mut out = Outputs::new();
        out.insert("output".into(), output);
        let mut put = |name: &str, t: Option<Tensor>| {
            if let Some(t) = t {
                out.insert(name.into(), t);
            }
        };
        put("rope_cos", trace.rope_cos);
        put("rope_sin", trace.rope_sin);
        put("patch_tokens", trace.patch_tokens);
        put("temb", trace.temb);
        put("timestep_proj", trace.timestep_proj);
        put("text_context", trace.text_context);
        put("image_context", trace.image_context);
        if trace.block_outputs.is_empty() {
            return Err(Error::Fixture("the model has no blocks".into()));
        }
        // num_layers x (B, L, dim) -> (num_layers, B, L, dim)
        out.insert("block_outputs".into(), Tensor::stack(&trace.block_outputs, 0)?);
        Ok(out)
    })))
}
