//! `vmie info`.

use std::path::Path;
use std::sync::Arc;

use diskfmt::{FileSource, Limits, Verdict};

use crate::{CliError, EXIT_FAILED, EXIT_REFUSED, human};

/// Prints what the inspection of `file` found; refused images exit with [`EXIT_REFUSED`].
pub fn run(file: &Path, json: bool, limits: &Limits) -> Result<(), CliError> {
    let src = Arc::new(FileSource::open(file)?);
    let insp = diskfmt::inspect(src, limits)?;
    if json {
        let v = serde_json::json!({
            "filename": file.display().to_string(),
            "format": insp.format,
            "subformat": insp.info.as_ref().and_then(|i| i.subformat.clone()),
            "virtual-size": insp.info.as_ref().map(|i| i.virtual_size),
            "actual-size": insp.file_size,
            "allocated-size": insp.allocated,
            "cluster-size": insp.info.as_ref().and_then(|i| i.cluster_size),
            "details": insp.info.as_ref().map(|i| i.details.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()),
            "safety": insp.verdict,
        });
        let text = serde_json::to_string_pretty(&v).map_err(|e| CliError {
            message: format!("cannot encode JSON: {e}"),
            exit: EXIT_FAILED,
        })?;
        println!("{text}");
    } else {
        println!("image: {}", file.display());
        match insp.format {
            Some(f) => println!("file format: {f}"),
            None => println!("file format: unknown"),
        }
        if let Some(info) = &insp.info {
            if let Some(s) = &info.subformat {
                println!("subformat: {s}");
            }
            println!(
                "virtual size: {} ({} bytes)",
                human::size(info.virtual_size),
                info.virtual_size
            );
        }
        println!(
            "file size: {} ({} bytes)",
            human::size(insp.file_size),
            insp.file_size
        );
        if let Some(a) = insp.allocated {
            println!("allocated: {} ({a} bytes)", human::size(a));
        }
        if let Some(info) = &insp.info {
            if let Some(c) = info.cluster_size {
                println!("cluster_size: {c}");
            }
            for (k, v) in &info.details {
                println!("{k}: {v}");
            }
        }
        match &insp.verdict {
            Verdict::Ok => println!("safety: ok"),
            Verdict::Refused {
                reason, message, ..
            } => {
                println!("safety: refused ({reason})");
                println!("reason: {message}");
            }
        }
    }
    match insp.verdict {
        Verdict::Ok => Ok(()),
        Verdict::Refused { reason, .. } => Err(CliError {
            message: format!("{}: image refused ({reason})", file.display()),
            exit: EXIT_REFUSED,
        }),
    }
}
