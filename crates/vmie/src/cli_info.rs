//! `vmie info`.

use std::path::Path;
use std::sync::Arc;

use diskfmt::{FileSource, Limits, Verdict};

use crate::{CliError, EXIT_REFUSED, human, print_json};

/// Prints what the inspection of `file` found; refused images exit with [`EXIT_REFUSED`].
pub fn run(file: &Path, json: bool, limits: &Limits) -> Result<(), CliError> {
    let src: diskfmt::Source = Arc::new(FileSource::open(file)?);
    if matches!(diskfmt::detect(&*src), Ok(d) if d.format == diskfmt::Format::Ova) {
        return ova(file, src, json, limits);
    }
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
        print_json(&v)?;
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
                reason,
                name,
                message,
                ..
            } => {
                println!("safety: refused ({})", named(reason, name.as_deref()));
                println!("reason: {message}");
            }
        }
    }
    match insp.verdict {
        Verdict::Ok => Ok(()),
        Verdict::Refused { reason, name, .. } => Err(CliError {
            message: format!(
                "{}: image refused ({})",
                file.display(),
                named(&reason, name.as_deref())
            ),
            exit: EXIT_REFUSED,
        }),
    }
}

/// `reason: name` (`unsupported-format: parallels`, `invalid-format: l1-too-small`), or the
/// reason alone.
fn named(reason: &str, name: Option<&str>) -> String {
    name.map_or_else(|| reason.to_string(), |n| format!("{reason}: {n}"))
}

/// `vmie info` of an OVA: the appliance, then each disk's format and size.
fn ova(file: &Path, src: diskfmt::Source, json: bool, limits: &Limits) -> Result<(), CliError> {
    let refused = |e: &diskfmt::DiskError| CliError {
        message: format!(
            "{}: appliance refused ({}): {e}",
            file.display(),
            e.reason_code()
        ),
        exit: EXIT_REFUSED,
    };
    let a = match diskfmt::ova::Appliance::open(src, limits) {
        Ok(a) => a,
        Err(e @ diskfmt::DiskError::Io { .. }) => return Err(e.into()),
        Err(e) => {
            if json {
                let v = serde_json::json!({
                    "filename": file.display().to_string(),
                    "format": "ova",
                    "safety": {"verdict": "refused", "reason": e.reason_code(), "message": e.to_string()},
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!(
                    "image: {}\nfile format: ova\nsafety: refused ({})\nreason: {e}",
                    file.display(),
                    e.reason_code()
                );
            }
            return Err(refused(&e));
        }
    };
    let (disks, first_refusal) = ova_disks(&a, limits);
    if json {
        print_ova_json(file, &a, disks)?;
    } else {
        print_ova_text(file, &a, &disks);
    }
    match first_refusal {
        Some(e) => Err(refused(&e)),
        None => Ok(()),
    }
}

/// Each disk of appliance `a` as `vmie info --json` shows it, and the first refusal.
fn ova_disks(
    a: &diskfmt::ova::Appliance,
    limits: &Limits,
) -> (Vec<serde_json::Value>, Option<diskfmt::DiskError>) {
    let mut disks = Vec::new();
    let mut first_refusal = None;
    for (i, d) in a.disks.iter().enumerate() {
        let (info, verdict) = match a.open_disk(i, limits) {
            Ok(disk) => (Some(disk.info()), serde_json::json!({"verdict": "ok"})),
            Err(e) => {
                let v = serde_json::json!({"verdict": "refused", "reason": e.reason_code(), "name": e.name(), "message": e.to_string()});
                first_refusal.get_or_insert(e);
                (None, v)
            }
        };
        disks.push(serde_json::json!({
            "disk-id": d.disk_id,
            "file": d.file,
            "file-size": d.size,
            "capacity": d.capacity,
            "declared-format": d.format,
            "format": info.as_ref().map(|i| i.format),
            "subformat": info.as_ref().and_then(|i| i.subformat.clone()),
            "virtual-size": info.as_ref().map(|i| i.virtual_size),
            "safety": verdict,
        }));
    }
    (disks, first_refusal)
}

/// `vmie info --json` of an appliance.
fn print_ova_json(
    file: &Path,
    a: &diskfmt::ova::Appliance,
    disks: Vec<serde_json::Value>,
) -> Result<(), CliError> {
    let v = serde_json::json!({
        "filename": file.display().to_string(),
        "format": "ova",
        "descriptor": a.descriptor_name,
        "ovf-version": a.ovf.version,
        "name": a.ovf.name,
        "os-id": a.ovf.os_id,
        "os-type": a.ovf.os_type,
        "os-description": a.ovf.os_description,
        "cpus": a.ovf.cpus,
        "memory-mib": a.ovf.memory_mib,
        "controllers": a.ovf.controllers,
        "disks": disks,
        "manifest": a.manifest.as_ref().map(|m| m.iter().map(|e| format!("{}({})", e.algorithm, e.file)).collect::<Vec<_>>()),
        "warnings": a.warnings,
    });
    print_json(&v)
}

/// `vmie info` of an appliance, as text.
fn print_ova_text(file: &Path, a: &diskfmt::ova::Appliance, disks: &[serde_json::Value]) {
    println!("image: {}", file.display());
    println!("file format: ova (OVF {})", a.ovf.version);
    println!("descriptor: {}", a.descriptor_name);
    if let Some(n) = &a.ovf.name {
        println!("name: {n}");
    }
    let os = [
        a.ovf.os_type.clone(),
        a.ovf.os_description.clone(),
        a.ovf.os_id.map(|i| format!("CIM id {i}")),
    ];
    let os: Vec<String> = os.into_iter().flatten().collect();
    if !os.is_empty() {
        println!("operating system: {}", os.join(", "));
    }
    if let Some(c) = a.ovf.cpus {
        println!("cpus: {c}");
    }
    if let Some(m) = a.ovf.memory_mib {
        println!("memory: {m} MiB");
    }
    for c in &a.ovf.controllers {
        match &c.subtype {
            Some(s) => println!("controller: {} ({s})", c.kind),
            None => println!("controller: {}", c.kind),
        }
    }
    for (i, d) in disks.iter().enumerate() {
        println!(
            "disk {}: {} {} {}, capacity {} bytes, safety {}",
            i + 1,
            d["file"].as_str().unwrap_or(""),
            d["format"].as_str().unwrap_or("unknown"),
            d["subformat"].as_str().unwrap_or(""),
            d["capacity"],
            d["safety"]["verdict"].as_str().unwrap_or("")
        );
    }
    match &a.manifest {
        Some(m) => println!("manifest: {} digests (checked by vmie convert)", m.len()),
        None => println!("manifest: none"),
    }
    for w in &a.warnings {
        println!("warning: {w}");
    }
}
