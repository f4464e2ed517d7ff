//! `vmie inspect`: what an import would find inside a disk image.

use std::path::Path;
use std::sync::Arc;

use diskfmt::{FileSource, Limits};

use crate::{CliError, EXIT_FAILED, human};

/// Inspects the guest on `file` (any supported format, an OVA's first disk included) and
/// prints the report.
pub fn run(file: &Path, json: bool, disk_no: usize, limits: &Limits) -> Result<(), CliError> {
    let src: diskfmt::Source = Arc::new(FileSource::open(file)?);
    let disk: Box<dyn diskfmt::Disk> = if diskfmt::detect(&*src)?.format == diskfmt::Format::Ova {
        let a = diskfmt::ova::Appliance::open(src, limits)?;
        a.open_disk(disk_no.saturating_sub(1), limits)?
    } else {
        diskfmt::open(src, limits)?
    };
    let r = guest::inspect(Arc::from(disk)).map_err(|e| CliError {
        message: format!("{}: {e}", file.display()),
        exit: EXIT_FAILED,
    })?;
    if json {
        return crate::print_json(&r);
    }
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    println!("image: {}", file.display());
    println!("platform: {}", or(&r.platform));
    println!("distribution: {}", or(&r.distribution));
    if let Some(n) = &r.name {
        println!("name: {n}");
    }
    println!("version: {}", or(&r.version));
    println!("architecture: {}", or(&r.architecture));
    println!("boot mode: {}", or(&r.boot_mode));
    if !r.kernels.is_empty() {
        println!("kernels: {}", r.kernels.join(", "));
    }
    match r.partition_scheme {
        Some(s) => println!("partition table: {}", format!("{s:?}").to_lowercase()),
        None => println!("partition table: none"),
    }
    for v in &r.volumes {
        let fs = v.filesystem.as_ref().map_or_else(
            || "no filesystem recognised".to_string(),
            |f| {
                let kind = serde_json::to_value(f.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_string))
                    .unwrap_or_default();
                match &f.label {
                    Some(l) => format!("{kind} \"{l}\""),
                    None => kind,
                }
            },
        );
        let root = if r.root == Some(v.number) {
            " (root)"
        } else {
            ""
        };
        println!(
            "  {} {:>10} {}{}{}",
            if v.number == 0 {
                "disk".to_string()
            } else {
                format!("part{}", v.number)
            },
            human::size(v.size),
            v.type_name.map_or(String::new(), |t| format!("{t}: ")),
            fs,
            root
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
