//! Fixture kinds `vae_encode` and `vae_decode`: not implemented yet.
use super::{Computation, Fixture, RunOptions};
use crate::Result;

pub fn prepare_encode(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}

pub fn prepare_decode(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}
