//! Decompression of grains and clusters: raw deflate (qcow2), zlib (VMDK) and zstd (qcow2).
//!
//! Each call decompresses one independent unit into a caller's buffer whose length is the
//! exact expected output size, so output can never grow past what the format allows.

use std::cell::RefCell;

use crate::error::{DiskError, Result};
use crate::format::Format;

thread_local! {
    static INFLATER: RefCell<libdeflater::Decompressor> =
        RefCell::new(libdeflater::Decompressor::new());
}

/// Inflates a raw deflate stream (RFC 1951) into `out`; trailing input bytes (sector padding)
/// are ignored. Returns the number of bytes produced; `out` past that is zero-filled.
pub fn inflate_raw(format: Format, input: &[u8], out: &mut [u8]) -> Result<usize> {
    INFLATER.with(|d| {
        let n = d
            .borrow_mut()
            .deflate_decompress(input, out)
            .map_err(|e| DiskError::corrupt(format, format!("compressed data is invalid ({e})")))?;
        out[n..].fill(0);
        Ok(n)
    })
}

/// Inflates a zlib stream (RFC 1950) into `out`. Returns the number of bytes produced; `out`
/// past that is zero-filled.
pub fn inflate_zlib(format: Format, input: &[u8], out: &mut [u8]) -> Result<usize> {
    INFLATER.with(|d| {
        let n = d
            .borrow_mut()
            .zlib_decompress(input, out)
            .map_err(|e| DiskError::corrupt(format, format!("compressed data is invalid ({e})")))?;
        out[n..].fill(0);
        Ok(n)
    })
}

/// Decompresses one zstd frame into `out`, stopping at the end of the frame (trailing padding
/// is ignored) or when `out` is full. Returns the number of bytes produced; the rest of `out`
/// is zero-filled.
pub fn unzstd(format: Format, input: &[u8], out: &mut [u8]) -> Result<usize> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let bad = |e: std::io::Error| DiskError::corrupt(format, format!("zstd data is invalid ({e})"));
    let mut dec = Decoder::new().map_err(bad)?;
    let mut inb = InBuffer::around(input);
    let mut produced = 0usize;
    loop {
        let mut outb = OutBuffer::around(&mut out[produced..]);
        let hint = dec.run(&mut inb, &mut outb).map_err(bad)?;
        let n = outb.pos();
        produced += n;
        if hint == 0 || produced == out.len() {
            break;
        }
        if n == 0 && inb.pos() == input.len() {
            return Err(DiskError::corrupt(format, "zstd frame is truncated"));
        }
    }
    out[produced..].fill(0);
    Ok(produced)
}
