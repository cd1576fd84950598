//! The CLIP image encoder of image-to-video: `image_processor/` preprocessing and the
//! `image_encoder/` vision transformer, used as diffusers' `WanImageToVideoPipeline.encode_image`
//! uses them (the penultimate hidden state, without `post_layernorm`).

pub mod clip;
pub mod preprocess;
pub mod resample;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use clip::{ClipVisionConfig, ClipVisionModel, HiddenAct};
pub use preprocess::{ImageProcessor, ImageProcessorConfig};

use crate::loader::{read_json, var_builder};
use crate::{Error, Result};

/// CLIP preprocessing plus vision transformer, loaded from a pipeline directory.
pub struct ClipImageEncoder {
    processor: ImageProcessor,
    model: ClipVisionModel,
    device: Device,
}

impl ClipImageEncoder {
    /// model_dir = pipeline directory (reads image_encoder/ and image_processor/).
    ///
    /// Only the layers that the penultimate hidden state needs are loaded: the last encoder layer
    /// of the checkpoint is skipped (for ViT-H/14 that is ~80 MB of f32 weights never used).
    pub fn load(model_dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_layers(model_dir, dtype, device, LayerSet::UpToPenultimate)
    }

    /// Like [`load`](Self::load) but also loads the last layer, so that
    /// [`last_hidden_state`](Self::last_hidden_state) can run (parity checks, debugging).
    pub fn load_all_layers(model_dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_layers(model_dir, dtype, device, LayerSet::All)
    }

    fn load_layers(model_dir: &Path, dtype: DType, device: &Device, set: LayerSet) -> Result<Self> {
        let processor = ImageProcessor::load(&model_dir.join("image_processor"))?;
        let encoder_dir = model_dir.join("image_encoder");
        let config_path = encoder_dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::MissingModelFile { path: encoder_dir, what: "config.json".into() });
        }
        let raw: serde_json::Value = read_json(&config_path)?;
        let config =
            ClipVisionConfig::from_json(raw).map_err(|source| Error::Json { path: config_path.clone(), source })?;
        let crop = &processor.config().crop_size;
        if processor.config().do_center_crop && (crop.height != config.image_size || crop.width != config.image_size) {
            return Err(Error::InvalidInput(format!(
                "image_processor crops to {}x{} but the image encoder expects {s}x{s}",
                crop.height,
                crop.width,
                s = config.image_size
            )));
        }
        let num_layers = match set {
            LayerSet::UpToPenultimate => config.num_hidden_layers.saturating_sub(1),
            LayerSet::All => config.num_hidden_layers,
        };
        let vb = var_builder(&encoder_dir, dtype, device)?;
        let model = ClipVisionModel::new(&config, num_layers, vb)?;
        Ok(Self { processor, model, device: device.clone() })
    }

    /// RGB uint8 image -> pixel_values (1, 3, S, S) f32 on the encoder's device.
    pub fn preprocess(&self, image: &image::RgbImage) -> Result<Tensor> {
        self.processor.preprocess(image, &self.device)
    }

    /// pixel_values (B,3,S,S) -> image_embeds (B, tokens, hidden) = penultimate hidden state.
    pub fn encode(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let penultimate = self.model.config().num_hidden_layers - 1;
        let hidden = self.model.embed(&pixel_values.to_device(&self.device)?)?;
        self.model.run_layers(&hidden, 0..penultimate)
    }

    /// `last_hidden_state` from the output of [`encode`](Self::encode): runs the final layer.
    /// Needs the encoder to have been loaded with [`load_all_layers`](Self::load_all_layers).
    pub fn last_hidden_state(&self, image_embeds: &Tensor) -> Result<Tensor> {
        let n = self.model.config().num_hidden_layers;
        if self.model.loaded_layers() < n {
            return Err(Error::InvalidInput(
                "the last CLIP layer is not loaded: use ClipImageEncoder::load_all_layers".into(),
            ));
        }
        self.model.run_layers(image_embeds, n - 1..n)
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    pub fn model(&self) -> &ClipVisionModel {
        &self.model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Which encoder layers to load.
#[derive(Debug, Clone, Copy)]
enum LayerSet {
    UpToPenultimate,
    All,
}
