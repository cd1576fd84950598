//! Fixture kind `transformer`: not implemented yet.
use super::{Computation, Fixture, RunOptions};
use crate::Result;

pub fn prepare(_fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    Ok(None)
}
