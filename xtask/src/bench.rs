//! `cargo xtask bench`: filled in below.
use anyhow::Result;

pub fn run(_rounds: usize, _seconds: f64) -> Result<()> {
    anyhow::bail!("not yet")
}
