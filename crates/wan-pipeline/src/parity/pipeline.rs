//! Fixture kinds `pipeline_t2v`, `pipeline_i2v` and `pipeline_v2v`: not implemented yet.
use super::{Computation, Fixture, RunOptions};
use crate::Result;

pub fn prepare_t2v(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}

pub fn prepare_i2v(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}

pub fn prepare_v2v(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}
