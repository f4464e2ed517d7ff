//! Raw writer: the virtual disk byte for byte, sparse (see [`crate::convert`]).

use std::sync::atomic::AtomicU64;

use super::{Output, WriteOptions, WriteStats, Writer, no_compression};
use crate::convert::{ConvertOptions, convert_to_raw};
use crate::disk::Disk;
use crate::error::Result;
use crate::format::Format;

/// The raw writer.
#[derive(Debug, Clone, Copy)]
pub struct RawWriter;

impl Writer for RawWriter {
    fn description(&self) -> &'static str {
        "Raw disk, sparse (holes stay holes)"
    }

    fn check_compression(&self, compression: &str) -> Result<()> {
        Err(no_compression(
            Format::Raw,
            compression,
            "raw has no compression",
        ))
    }

    fn write(
        &self,
        disk: &dyn Disk,
        out: &dyn Output,
        opts: &WriteOptions,
        progress: &AtomicU64,
    ) -> Result<WriteStats> {
        let c = ConvertOptions {
            threads: opts.threads,
            ..ConvertOptions::default()
        };
        let s = convert_to_raw(disk, out, &c, progress)?;
        Ok(WriteStats {
            virtual_size: s.virtual_size,
            file_size: s.virtual_size,
        })
    }
}
