//! The metadata log ([MS-VHDX] 2.3): a circular buffer of entries, each a header, descriptors
//! and 4 KiB data sectors. When the current header's LogGuid is non-zero, the active sequence
//! of entries is replayed — here in memory only, as an [`Overlay`] over the file that returns
//! the logged pages instead of the file's bytes. Nothing is ever written back.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::header::{Guid, Header, crc_with_zeroed, guid_at};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, Source, le, read_checked, read_exact_at};
use crate::limits::{Limits, MIB, add, check_in_file, to_usize};

const F: Format = Format::Vhdx;

/// Log sector size ([MS-VHDX] 2.3: the log is made of 4 KiB sectors).
pub const SECTOR: u64 = 4096;
/// Size of a log entry header ([MS-VHDX] 2.3.1.1).
const ENTRY_HEADER: usize = 64;
/// Size of a zero or data descriptor ([MS-VHDX] 2.3.1.2, 2.3.1.3).
const DESCRIPTOR: usize = 32;
/// Most candidate heads tried when looking for the active sequence (our bound; a sound log
/// needs one).
const MAX_HEAD_TRIES: usize = 64;
/// Bytes checksummed while scanning, as a multiple of the log length (our bound against
/// hostile logs full of overlapping entry headers).
const SCAN_WORK_FACTOR: u64 = 4;

/// One replayed write.
#[derive(Debug)]
enum Op {
    /// `len` zero bytes at `off`.
    Zero { off: u64, len: u64 },
    /// A 4 KiB page at `off`.
    Data { off: u64, page: Box<[u8]> },
}

/// A parsed, valid log entry.
#[derive(Debug)]
struct Entry {
    pos: u64,
    len: u64,
    seq: u64,
    tail: u64,
    flushed: u64,
    last: u64,
    ops: Vec<Op>,
}

/// What is seen in place of a range of the file after replay.
#[derive(Debug, Clone)]
enum Piece {
    Zero,
    Data(Box<[u8]>),
}

impl Piece {
    /// The part `[from, to)` of this piece (offsets relative to its start).
    fn sub(&self, from: u64, to: u64) -> Piece {
        match self {
            Piece::Zero => Piece::Zero,
            Piece::Data(d) => {
                let from = usize::try_from(from).unwrap_or(usize::MAX).min(d.len());
                let to = usize::try_from(to)
                    .unwrap_or(usize::MAX)
                    .clamp(from, d.len());
                Piece::Data(d[from..to].into())
            }
        }
    }
}

/// The file as it reads after the log is replayed: logged pages and zeroed ranges over the
/// original bytes, extended with zeros to the logged last file offset.
pub struct Overlay {
    src: Source,
    size: u64,
    /// Non-overlapping ranges keyed by start: `(end, piece)`.
    map: BTreeMap<u64, (u64, Piece)>,
}

impl Overlay {
    fn insert(&mut self, a: u64, b: u64, piece: Piece) {
        if b <= a {
            return;
        }
        let hit: Vec<u64> = self
            .map
            .range(..b)
            .rev()
            .take_while(|(_, (e, _))| *e > a)
            .map(|(s, _)| *s)
            .collect();
        for s in hit {
            if let Some((e, p)) = self.map.remove(&s) {
                if s < a {
                    self.map.insert(s, (a, p.sub(0, a - s)));
                }
                if e > b {
                    self.map.insert(b, (e, p.sub(b - s, e - s)));
                }
            }
        }
        self.map.insert(a, (b, piece));
    }

    /// Fills `buf` from the original file at `off`, zeros past its end.
    fn fill_src(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let src_size = self.src.size();
        let in_src = usize::try_from(src_size.saturating_sub(off))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        read_exact_at(&*self.src, &mut buf[..in_src], off)?;
        buf[in_src..].fill(0);
        Ok(())
    }

    /// Number of replayed ranges.
    #[must_use]
    pub fn ranges(&self) -> usize {
        self.map.len()
    }
}

impl ReadAt for Overlay {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = usize::try_from(self.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let end = offset + n as u64;
        let start_key = self
            .map
            .range(..=offset)
            .next_back()
            .filter(|(_, (e, _))| *e > offset)
            .map_or(offset, |(s, _)| *s);
        let mut at = offset;
        for (&s, (e, piece)) in self.map.range(start_key..end) {
            let rel = |x: u64| usize::try_from(x - offset).unwrap_or(n);
            if s > at {
                self.fill_src(&mut buf[rel(at)..rel(s)], at)?;
                at = s;
            }
            let to = (*e).min(end);
            let dst = &mut buf[rel(at)..rel(to)];
            match piece {
                Piece::Zero => dst.fill(0),
                Piece::Data(d) => {
                    let from = usize::try_from(at - s).unwrap_or(usize::MAX);
                    match d.get(from..from + dst.len()) {
                        Some(p) => dst.copy_from_slice(p),
                        None => dst.fill(0),
                    }
                }
            }
            at = to;
        }
        if at < end {
            self.fill_src(&mut buf[usize::try_from(at - offset).unwrap_or(n)..n], at)?;
        }
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// Copies `len` bytes of the circular log starting at `pos`.
fn circular(log: &[u8], pos: usize, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let first = len.min(log.len() - pos);
    v.extend_from_slice(&log[pos..pos + first]);
    v.extend_from_slice(&log[..len - first]);
    v
}

/// Parses the entry at `pos` of the log; `None` when there is no valid entry there.
/// `work` counts checksummed bytes against `work_limit`.
fn entry_at(
    log: &[u8],
    pos: u64,
    log_guid: &Guid,
    work: &mut u64,
    work_limit: u64,
    limits: &Limits,
) -> Result<Option<Entry>> {
    let log_len = log.len() as u64;
    let p = to_usize(F, "log position", pos)?;
    let Some(h) = log.get(p..p + ENTRY_HEADER) else {
        return Ok(None);
    };
    // 0 "loge"; 4 checksum; 8 entry length u32; 12 tail u32; 16 sequence u64;
    // 24 descriptor count u32; 28 reserved; 32 LogGuid; 48 FlushedFileOffset;
    // 56 LastFileOffset.
    if &h[0..4] != b"loge" || &guid_at(h, 32) != log_guid {
        return Ok(None);
    }
    let len = u64::from(le::u32(h, 8));
    let tail = u64::from(le::u32(h, 12));
    let seq = le::u64(h, 16);
    let count = u64::from(le::u32(h, 24));
    let flushed = le::u64(h, 48);
    let last = le::u64(h, 56);
    if len == 0
        || !len.is_multiple_of(SECTOR)
        || len > log_len
        || !tail.is_multiple_of(SECTOR)
        || tail >= log_len
        || seq == 0
    {
        return Ok(None);
    }
    let desc_bytes = ENTRY_HEADER as u64 + count * DESCRIPTOR as u64;
    let desc_sectors = desc_bytes.div_ceil(SECTOR);
    if desc_sectors * SECTOR > len {
        return Ok(None);
    }
    *work += len;
    limits.check(F, "log bytes checked during replay", *work, work_limit)?;
    let e = circular(log, p, to_usize(F, "log entry length", len)?);
    if le::u32(&e, 4) != crc_with_zeroed(&e, 4) {
        return Ok(None);
    }
    let mut ops = Vec::new();
    let mut data_at = to_usize(F, "log descriptor size", desc_sectors * SECTOR)?;
    let count = to_usize(F, "log descriptor count", count)?;
    for k in 0..count {
        let d = &e[ENTRY_HEADER + k * DESCRIPTOR..ENTRY_HEADER + (k + 1) * DESCRIPTOR];
        let off = le::u64(d, 16);
        if le::u64(d, 24) != seq || !off.is_multiple_of(SECTOR) {
            return Ok(None);
        }
        match &d[0..4] {
            // "zero": 8 ZeroLength u64, 16 FileOffset, 24 SequenceNumber.
            b"zero" => {
                let zl = le::u64(d, 8);
                if !zl.is_multiple_of(SECTOR) || off.checked_add(zl).is_none() {
                    return Ok(None);
                }
                ops.push(Op::Zero { off, len: zl });
            }
            // "desc": 4 TrailingBytes u32, 8 LeadingBytes u64, 16 FileOffset, 24 sequence.
            b"desc" => {
                let Some(s) = e.get(data_at..data_at + 4096) else {
                    return Ok(None);
                };
                // Data sector: "data", 4 SequenceHigh, 8..4092 data, 4092 SequenceLow.
                let sseq = (u64::from(le::u32(s, 4)) << 32) | u64::from(le::u32(s, 4092));
                if &s[0..4] != b"data" || sseq != seq || off.checked_add(SECTOR).is_none() {
                    return Ok(None);
                }
                let mut page = vec![0u8; 4096].into_boxed_slice();
                page[0..8].copy_from_slice(&d[8..16]);
                page[8..4092].copy_from_slice(&s[8..4092]);
                page[4092..4096].copy_from_slice(&d[4..8]);
                ops.push(Op::Data { off, page });
                data_at += 4096;
            }
            _ => return Ok(None),
        }
    }
    if data_at as u64 != len {
        return Ok(None);
    }
    Ok(Some(Entry {
        pos,
        len,
        seq,
        tail,
        flushed,
        last,
        ops,
    }))
}

/// Replays the log of `header` in memory. Returns `None` when there is nothing to replay
/// (LogGuid zero, or no valid sequence in the log).
pub fn replay(src: &Source, header: &Header, limits: &Limits) -> Result<Option<Overlay>> {
    if !header.log_active() {
        return Ok(None);
    }
    let log = read_log(src, header, limits)?;
    let mut entries = scan_entries(&log, header, limits)?;
    let Some(chain) = active_sequence(&entries, header.log_length) else {
        return Ok(None);
    };
    overlay(src, &mut entries, &chain).map(Some)
}

/// The whole log, bounded by the log size limit.
fn read_log(src: &Source, header: &Header, limits: &Limits) -> Result<Vec<u8>> {
    let log_len = header.log_length;
    if log_len == 0 || header.log_offset < MIB {
        return Err(DiskError::corrupt(
            F,
            "the header asks for log replay but the log is empty or inside the header section",
        ));
    }
    let len = limits.check(F, "log size", log_len, limits.max_log_size)?;
    check_in_file(F, "log", header.log_offset, log_len, src.size())?;
    read_checked(&**src, F, "log", header.log_offset, len)
}

/// Every valid entry of the log, found by scanning it sector by sector and skipping over
/// each entry found. The checksumming work is bounded: a hostile log full of overlapping
/// entry headers cannot make the scan quadratic.
fn scan_entries(log: &[u8], header: &Header, limits: &Limits) -> Result<Vec<Entry>> {
    let log_len = header.log_length;
    let work_limit = log_len.saturating_mul(SCAN_WORK_FACTOR);
    let mut work = 0u64;
    let mut entries: Vec<Entry> = Vec::new();
    let mut pos = 0u64;
    while pos < log_len {
        match entry_at(log, pos, &header.log_guid, &mut work, work_limit, limits)? {
            Some(e) => {
                let next = pos + e.len;
                entries.push(e);
                pos = next;
            }
            None => pos += SECTOR,
        }
    }
    Ok(entries)
}

/// The active sequence ([MS-VHDX] 2.3.2): the valid sequence with the highest head sequence
/// number whose entries, from the head's tail to the head, follow each other (wrapping
/// around the log's end) with consecutive numbers. At most [`MAX_HEAD_TRIES`] heads are tried.
fn active_sequence(entries: &[Entry], log_len: u64) -> Option<Vec<usize>> {
    let by_pos: HashMap<u64, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.pos, i))
        .collect();
    let mut heads: Vec<usize> = (0..entries.len()).collect();
    heads.sort_by_key(|&i| std::cmp::Reverse(entries[i].seq));
    heads.into_iter().take(MAX_HEAD_TRIES).find_map(|h| {
        let mut cur = *by_pos.get(&entries[h].tail)?;
        let mut chain = vec![cur];
        while cur != h {
            let c = &entries[cur];
            let next = *by_pos.get(&((c.pos + c.len) % log_len))?;
            if entries[next].seq != c.seq.wrapping_add(1) || chain.len() > entries.len() {
                return None;
            }
            chain.push(next);
            cur = next;
        }
        Some(chain)
    })
}

/// The file as the `chain` of entries leaves it: their writes, in order, over the file.
fn overlay(src: &Source, entries: &mut [Entry], chain: &[usize]) -> Result<Overlay> {
    let Some(&head_i) = chain.last() else {
        return Err(DiskError::corrupt(F, "an empty log sequence"));
    };
    let (head_flushed, head_last) = (entries[head_i].flushed, entries[head_i].last);
    if head_flushed > src.size() {
        return Err(DiskError::corrupt(
            F,
            format!(
                "the log says the file was flushed up to {} bytes but it has only {}",
                head_flushed,
                src.size()
            ),
        ));
    }
    let mut ov = Overlay {
        src: src.clone(),
        size: src.size().max(head_last),
        map: BTreeMap::new(),
    };
    for &i in chain {
        for op in std::mem::take(&mut entries[i].ops) {
            match op {
                Op::Zero { off, len } => {
                    let end = add(F, "log zero range end", off, len)?;
                    ov.size = ov.size.max(end);
                    ov.insert(off, end, Piece::Zero);
                }
                Op::Data { off, page } => {
                    let end = add(F, "log data page end", off, SECTOR)?;
                    ov.size = ov.size.max(end);
                    ov.insert(off, end, Piece::Data(page));
                }
            }
        }
    }
    Ok(ov)
}
