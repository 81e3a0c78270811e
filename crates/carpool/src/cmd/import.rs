//! `carpool import-squid`: a squid.conf translated into a carpool.toml.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::squid::{import_squid, Role};

/// Translates `squid_conf`, writes the carpool.toml to `output` (stdout
/// when none) and lists on stderr what was not carried over.
pub fn run(squid_conf: &Path, output: Option<&Path>) -> Result<ExitCode> {
    let bytes = std::fs::read(squid_conf)
        .with_context(|| format!("cannot read {}", squid_conf.display()))?;
    let import = import_squid(squid_conf, &bytes)?;
    match output {
        Some(path) => std::fs::write(path, &import.toml)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", import.toml),
    }
    for n in &import.notes {
        eprintln!("carpool: not carried over: {n}");
    }
    let what = match import.role {
        Role::Frontend => format!(
            "a CARP frontend with {} parents",
            import.config.parents.len()
        ),
        Role::Cache => "a cache".to_string(),
    };
    eprintln!(
        "carpool: {} translated as {what}{}; {} directive(s) not carried over",
        squid_conf.display(),
        output.map_or(String::new(), |o| format!(" into {}", o.display())),
        import.notes.len()
    );
    Ok(ExitCode::SUCCESS)
}
