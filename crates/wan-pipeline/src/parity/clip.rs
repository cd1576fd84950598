//! Fixture kind `clip_image_encoder`: not implemented yet.
use super::{Computation, Fixture, RunOptions};
use crate::Result;

pub fn prepare(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}
