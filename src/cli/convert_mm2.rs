//! `kferry convert-mm2 mm2.properties`: prints the equivalent kferry config on standard
//! output and, on standard error, every MM2 property it could not carry over with the
//! reason. The mapping itself is `config::mm2`; this only reads, prints and checks.

use std::path::Path;

use super::Failure;
use crate::config::{mm2, Config};

pub(super) fn convert_mm2(path: &Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        Failure::Config
    })?;
    let conversion = mm2::convert(&text).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        Failure::Config
    })?;
    print!("{}", conversion.yaml);
    for skipped in &conversion.skipped {
        eprintln!("not converted: {}:{}: {}: {}", path.display(), skipped.line, skipped.key, skipped.reason);
    }
    // The output is checked like any config file, so a problem shows now rather than at
    // `kferry run`; references to unset environment variables are expected here.
    if let Err(e) = Config::parse(&conversion.yaml, "converted config") {
        eprintln!("note: the converted config does not pass validation as it is:\n{e}");
    }
    Ok(())
}
