//! A small NBD server: how QEMU reads the disk from vmie.
//!
//! The subset of the NBD protocol (<https://github.com/NetworkBlockDevice/nbd>,
//! `doc/proto.md`) QEMU's client needs: the fixed-newstyle handshake with `NBD_OPT_GO`,
//! `NBD_OPT_INFO`, `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST` and `NBD_OPT_ABORT` (structured
//! replies, metadata contexts, extended headers and TLS are declined, which clients accept),
//! then simple replies to `READ`, `WRITE`, `WRITE_ZEROES`, `TRIM`, `FLUSH` and `DISC`. Reads
//! and writes go to the [`Overlay`]: writes never reach the disk's source.
//!
//! Everything the client sends is bounded: option payloads at [`MAX_OPTION`], requests at
//! [`MAX_REQUEST`] (announced as the maximum block size), and a malformed message ends the
//! connection.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::overlay::{Overlay, OverlayError};

/// `NBDMAGIC`.
const INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the server's handshake magic and every option's magic.
const OPT_MAGIC: u64 = 0x4948_4156_454f_5054;
/// Magic of option replies.
const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags: fixed newstyle, no zero padding.
const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Options.
const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

/// Option replies.
const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information types.
const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags: has flags, flush, FUA, trim, write zeroes.
const TRANSMISSION_FLAGS: u16 = 1 | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6);

/// Commands.
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;

/// Errors.
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;

/// Largest option payload read (an export name and a few information requests fit).
pub const MAX_OPTION: u32 = 4096;
/// Largest read or write (QEMU sends at most 32 MiB).
pub const MAX_REQUEST: u32 = 32 << 20;
/// The only export's name (an empty name means it too).
pub const EXPORT: &str = "disk";
/// Options a client may send before it picks the export.
const MAX_OPTIONS: usize = 64;

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The socket failed.
    #[error("NBD connection: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol.
    #[error("NBD client broke the protocol: {0}")]
    Protocol(String),
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn option_reply(w: &mut impl Write, opt: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&REP_MAGIC.to_be_bytes())?;
    w.write_all(&opt.to_be_bytes())?;
    w.write_all(&kind.to_be_bytes())?;
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    w.write_all(&len.to_be_bytes())?;
    w.write_all(data)?;
    w.flush()
}

fn export_info(size: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
    d
}

fn block_size_info() -> Vec<u8> {
    let mut d = Vec::with_capacity(14);
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&4096u32.to_be_bytes());
    d.extend_from_slice(&MAX_REQUEST.to_be_bytes());
    d
}

/// Parses the payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: the export name.
fn info_request_name(data: &[u8]) -> Option<String> {
    let len = usize::try_from(u32::from_be_bytes(data.get(0..4)?.try_into().ok()?)).ok()?;
    let name = data.get(4..4usize.checked_add(len)?)?;
    let rest = data.get(4 + len..)?;
    let n = usize::from(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?));
    if rest.len() != 2 + 2 * n {
        return None;
    }
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Runs the handshake; `Ok(true)` when the client chose the export (transmission follows),
/// `Ok(false)` when it left.
fn handshake(r: &mut impl Read, w: &mut impl Write, size: u64) -> Result<bool, NbdError> {
    w.write_all(&INIT_MAGIC.to_be_bytes())?;
    w.write_all(&OPT_MAGIC.to_be_bytes())?;
    w.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
    w.flush()?;
    let client = read_u32(r)?;
    if client & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Protocol(
            "the client does not speak fixed newstyle".into(),
        ));
    }
    if client & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(NbdError::Protocol(format!(
            "unknown client flags {client:#x}"
        )));
    }
    let no_zeroes = client & FLAG_C_NO_ZEROES != 0;
    for _ in 0..MAX_OPTIONS {
        if read_u64(r)? != OPT_MAGIC {
            return Err(NbdError::Protocol("bad option magic".into()));
        }
        let opt = read_u32(r)?;
        let len = read_u32(r)?;
        if len > MAX_OPTION {
            // The payload cannot be skipped safely at any size: say so and hang up.
            let _ = option_reply(w, opt, REP_ERR_TOO_BIG, b"option too large");
            return Err(NbdError::Protocol(format!("option {opt} of {len} bytes")));
        }
        let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
        r.read_exact(&mut data)?;
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                if !name.is_empty() && name != EXPORT {
                    // This option has no error reply: the server hangs up.
                    return Err(NbdError::Protocol("unknown export requested".into()));
                }
                w.write_all(&size.to_be_bytes())?;
                w.write_all(&TRANSMISSION_FLAGS.to_be_bytes())?;
                if !no_zeroes {
                    w.write_all(&[0u8; 124])?;
                }
                w.flush()?;
                return Ok(true);
            }
            OPT_ABORT => {
                let _ = option_reply(w, opt, REP_ACK, &[]);
                return Ok(false);
            }
            OPT_LIST => {
                if data.is_empty() {
                    let mut d = (u32::try_from(EXPORT.len()).unwrap_or(0))
                        .to_be_bytes()
                        .to_vec();
                    d.extend_from_slice(EXPORT.as_bytes());
                    option_reply(w, opt, REP_SERVER, &d)?;
                    option_reply(w, opt, REP_ACK, &[])?;
                } else {
                    option_reply(w, opt, REP_ERR_INVALID, b"LIST takes no data")?;
                }
            }
            OPT_INFO | OPT_GO => match info_request_name(&data) {
                None => option_reply(w, opt, REP_ERR_INVALID, b"malformed request")?,
                Some(n) if !n.is_empty() && n != EXPORT => {
                    option_reply(w, opt, REP_ERR_UNKNOWN, b"no such export")?;
                }
                Some(_) => {
                    option_reply(w, opt, REP_INFO, &export_info(size))?;
                    option_reply(w, opt, REP_INFO, &block_size_info())?;
                    option_reply(w, opt, REP_ACK, &[])?;
                    if opt == OPT_GO {
                        return Ok(true);
                    }
                }
            },
            _ => option_reply(w, opt, REP_ERR_UNSUP, b"not supported")?,
        }
    }
    Err(NbdError::Protocol("too many options".into()))
}

fn simple_reply(w: &mut impl Write, error: u32, cookie: u64, data: &[u8]) -> io::Result<()> {
    w.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&error.to_be_bytes())?;
    w.write_all(&cookie.to_be_bytes())?;
    if error == 0 {
        w.write_all(data)?;
    }
    w.flush()
}

fn errno(e: &OverlayError) -> u32 {
    match e {
        OverlayError::OutOfRange { .. } => EINVAL,
        OverlayError::Full(_) => ENOSPC,
        OverlayError::Io(_) => EIO,
    }
}

/// Serves the overlay on `stream` until the client disconnects. Errors of single requests
/// are answered with an NBD error; a broken protocol or socket ends the connection.
pub fn serve(stream: UnixStream, overlay: &Arc<Overlay>) -> Result<(), NbdError> {
    let mut r = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
    let mut w = BufWriter::with_capacity(256 * 1024, stream);
    let size = overlay.size();
    if !handshake(&mut r, &mut w, size)? {
        return Ok(());
    }
    let mut buf = Vec::new();
    loop {
        let magic = match read_u32(&mut r) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if magic != REQUEST_MAGIC {
            return Err(NbdError::Protocol(format!("bad request magic {magic:#x}")));
        }
        let _flags = read_u16(&mut r)?;
        let kind = read_u16(&mut r)?;
        let cookie = read_u64(&mut r)?;
        let offset = read_u64(&mut r)?;
        let len = read_u32(&mut r)?;
        match kind {
            CMD_READ => {
                if len > MAX_REQUEST {
                    simple_reply(&mut w, EINVAL, cookie, &[])?;
                    continue;
                }
                buf.resize(usize::try_from(len).unwrap_or(0), 0);
                match overlay.read_at(&mut buf, offset) {
                    Ok(()) => simple_reply(&mut w, 0, cookie, &buf)?,
                    Err(e) => {
                        tracing::warn!(offset, len, error = %e, "boot check: NBD read failed");
                        simple_reply(&mut w, errno(&e), cookie, &[])?;
                    }
                }
            }
            CMD_WRITE => {
                if len > MAX_REQUEST {
                    return Err(NbdError::Protocol(format!("write of {len} bytes")));
                }
                buf.resize(usize::try_from(len).unwrap_or(0), 0);
                r.read_exact(&mut buf)?;
                let e = overlay.write_at(&buf, offset).err();
                simple_reply(&mut w, e.as_ref().map_or(0, errno), cookie, &[])?;
            }
            CMD_WRITE_ZEROES => {
                let e = overlay.write_zeroes(offset, u64::from(len)).err();
                simple_reply(&mut w, e.as_ref().map_or(0, errno), cookie, &[])?;
            }
            // Trimmed blocks may read back as anything: keeping the old bytes is allowed.
            CMD_TRIM | CMD_FLUSH => simple_reply(&mut w, 0, cookie, &[])?,
            CMD_DISC => return Ok(()),
            _ => simple_reply(&mut w, EINVAL, cookie, &[])?,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;
    use crate::source::DiskSource;

    struct Mem(Vec<u8>);
    impl DiskSource for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
    }

    fn option(w: &mut impl Write, opt: u32, data: &[u8]) {
        w.write_all(&OPT_MAGIC.to_be_bytes()).unwrap();
        w.write_all(&opt.to_be_bytes()).unwrap();
        w.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
        w.write_all(data).unwrap();
    }

    fn reply(r: &mut impl Read) -> (u32, u32, Vec<u8>) {
        assert_eq!(read_u64(r).unwrap(), REP_MAGIC);
        let opt = read_u32(r).unwrap();
        let kind = read_u32(r).unwrap();
        let len = read_u32(r).unwrap();
        let mut d = vec![0u8; len as usize];
        r.read_exact(&mut d).unwrap();
        (opt, kind, d)
    }

    fn request(w: &mut impl Write, kind: u16, cookie: u64, offset: u64, len: u32) {
        w.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
        w.write_all(&0u16.to_be_bytes()).unwrap();
        w.write_all(&kind.to_be_bytes()).unwrap();
        w.write_all(&cookie.to_be_bytes()).unwrap();
        w.write_all(&offset.to_be_bytes()).unwrap();
        w.write_all(&len.to_be_bytes()).unwrap();
    }

    fn simple(r: &mut impl Read, cookie: u64) -> u32 {
        assert_eq!(read_u32(r).unwrap(), SIMPLE_REPLY_MAGIC);
        let e = read_u32(r).unwrap();
        assert_eq!(read_u64(r).unwrap(), cookie);
        e
    }

    #[test]
    fn test_nbd_handshake_go_read_write_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
        let src = Arc::new(Mem(base.clone()));
        let ov = Arc::new(Overlay::create(dir.path(), "nbd", src.clone(), 1 << 20, &[]).unwrap());
        let (a, mut c) = UnixStream::pair().unwrap();
        let ov2 = ov.clone();
        let server = std::thread::spawn(move || serve(a, &ov2));
        assert_eq!(read_u64(&mut c).unwrap(), INIT_MAGIC);
        assert_eq!(read_u64(&mut c).unwrap(), OPT_MAGIC);
        assert_eq!(
            read_u16(&mut c).unwrap(),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        c.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        // Structured replies are declined.
        option(&mut c, 8, &[]);
        assert_eq!(reply(&mut c).1, REP_ERR_UNSUP);
        // A list names the export.
        option(&mut c, OPT_LIST, &[]);
        let (_, k, d) = reply(&mut c);
        assert_eq!(k, REP_SERVER);
        assert_eq!(&d[4..], EXPORT.as_bytes());
        assert_eq!(reply(&mut c).1, REP_ACK);
        // An unknown export is refused; a malformed GO is invalid.
        let mut go = Vec::new();
        go.extend_from_slice(&5u32.to_be_bytes());
        go.extend_from_slice(b"other");
        go.extend_from_slice(&0u16.to_be_bytes());
        option(&mut c, OPT_GO, &go);
        assert_eq!(reply(&mut c).1, REP_ERR_UNKNOWN);
        option(&mut c, OPT_GO, &[0, 0, 0, 9]);
        assert_eq!(reply(&mut c).1, REP_ERR_INVALID);
        let mut go = Vec::new();
        go.extend_from_slice(&4u32.to_be_bytes());
        go.extend_from_slice(b"disk");
        go.extend_from_slice(&1u16.to_be_bytes());
        go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        option(&mut c, OPT_GO, &go);
        let (opt, k, d) = reply(&mut c);
        assert_eq!((opt, k), (OPT_GO, REP_INFO));
        assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), 1 << 20);
        assert_eq!(reply(&mut c).1, REP_INFO);
        assert_eq!(reply(&mut c).1, REP_ACK);
        // Write, read back, and the base is untouched.
        request(&mut c, CMD_WRITE, 7, 1000, 5);
        c.write_all(b"hello").unwrap();
        assert_eq!(simple(&mut c, 7), 0);
        request(&mut c, CMD_READ, 8, 998, 9);
        assert_eq!(simple(&mut c, 8), 0);
        let mut got = [0u8; 9];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got[2..7], b"hello");
        assert_eq!(got[0], base[998]);
        assert_eq!(src.0, base);
        // Past the end: EINVAL; too large a read: EINVAL; unknown command: EINVAL.
        request(&mut c, CMD_READ, 9, (1 << 20) - 2, 4);
        assert_eq!(simple(&mut c, 9), EINVAL);
        request(&mut c, CMD_READ, 10, 0, MAX_REQUEST + 1);
        assert_eq!(simple(&mut c, 10), EINVAL);
        request(&mut c, 99, 11, 0, 0);
        assert_eq!(simple(&mut c, 11), EINVAL);
        request(&mut c, CMD_WRITE_ZEROES, 12, 1000, 5);
        assert_eq!(simple(&mut c, 12), 0);
        request(&mut c, CMD_FLUSH, 13, 0, 0);
        assert_eq!(simple(&mut c, 13), 0);
        request(&mut c, CMD_DISC, 14, 0, 0);
        server.join().unwrap().unwrap();
        let mut z = [1u8; 5];
        ov.read_at(&mut z, 1000).unwrap();
        assert_eq!(z, [0u8; 5]);
    }

    #[test]
    fn test_nbd_hostile_clients_end_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let src = Arc::new(Mem(vec![0u8; 4096]));
        let ov = Arc::new(Overlay::create(dir.path(), "nbd2", src, 1 << 20, &[]).unwrap());
        // Old-style client, a huge option, a bad magic, a huge write: each ends it.
        for case in 0..4 {
            let (a, mut c) = UnixStream::pair().unwrap();
            let ov2 = ov.clone();
            let server = std::thread::spawn(move || serve(a, &ov2));
            let mut hello = [0u8; 18];
            c.read_exact(&mut hello).unwrap();
            match case {
                0 => c.write_all(&0u32.to_be_bytes()).unwrap(),
                1 => {
                    c.write_all(&1u32.to_be_bytes()).unwrap();
                    c.write_all(&OPT_MAGIC.to_be_bytes()).unwrap();
                    c.write_all(&OPT_GO.to_be_bytes()).unwrap();
                    c.write_all(&u32::MAX.to_be_bytes()).unwrap();
                }
                2 => {
                    c.write_all(&1u32.to_be_bytes()).unwrap();
                    c.write_all(&[0xAA; 16]).unwrap();
                }
                _ => {
                    c.write_all(&1u32.to_be_bytes()).unwrap();
                    option(&mut c, OPT_EXPORT_NAME, b"disk");
                    let mut info = [0u8; 10 + 124];
                    c.read_exact(&mut info).unwrap();
                    request(&mut c, CMD_WRITE, 1, 0, u32::MAX);
                }
            }
            assert!(matches!(server.join().unwrap(), Err(NbdError::Protocol(_))));
        }
    }
}
