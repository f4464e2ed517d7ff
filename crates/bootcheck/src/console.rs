//! Capturing text the guest, its firmware and QEMU print: bounded, cut into lines, each
//! line offered to [`signals::classify`](crate::signals::classify).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::signals::{Event, Stream, classify, classify_qemu};

/// Longest line looked at (the rest of a longer one is kept, not classified).
const MAX_LINE: usize = 4096;

/// Bytes kept of a text stream: its first `head` bytes and its last `tail` bytes.
#[derive(Debug)]
pub struct Capture {
    head_max: usize,
    tail_max: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    line: Vec<u8>,
}

impl Capture {
    /// Keeps at most `head` + `tail` bytes.
    #[must_use]
    pub fn new(head: usize, tail: usize) -> Self {
        Capture {
            head_max: head,
            tail_max: tail,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            line: Vec::new(),
        }
    }

    /// Adds `data`; returns the lines it completed, cleaned (see [`clean`]).
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.total += data.len() as u64;
        let room = self.head_max.saturating_sub(self.head.len());
        let (h, t) = data.split_at(room.min(data.len()));
        self.head.extend_from_slice(h);
        self.tail.extend(t);
        while self.tail.len() > self.tail_max {
            self.tail.pop_front();
        }
        let mut lines = Vec::new();
        for &b in data {
            if b == b'\n' || b == b'\r' {
                if !self.line.is_empty() {
                    lines.push(clean(&self.line));
                    self.line.clear();
                }
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        lines
    }

    /// Bytes seen in all.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The text kept, with a note where the middle was left out.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        let kept = (self.head.len() + self.tail.len()) as u64;
        if self.total > kept {
            out.push_str(&format!("\n[vmie: {} bytes left out]\n", self.total - kept));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

/// A line without terminal escape sequences and control characters.
#[must_use]
pub fn clean(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Reads `r` until it ends, into `cap`, sending [`Event::Console`] for each line that
/// [`classify`] recognises and [`Event::Closed`] at the end.
pub fn spawn_reader(
    mut r: impl Read + Send + 'static,
    stream: Stream,
    cap: Arc<Mutex<Capture>>,
    tx: Sender<Event>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let lines = match cap.lock() {
                Ok(mut c) => c.push(&buf[..n]),
                Err(_) => break,
            };
            for l in lines {
                let seen = if stream == Stream::Qemu {
                    classify_qemu(&l)
                } else {
                    classify(&l)
                };
                if let Some(seen) = seen {
                    let _ = tx.send(Event::Console(stream, seen));
                }
            }
        }
        let _ = tx.send(Event::Closed(stream));
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn test_capture_keeps_head_and_tail_and_cuts_lines() {
        let mut c = Capture::new(10, 10);
        let l = c.push(b"first line\r\n\x1b[1;31msecond\x1b[0m");
        assert_eq!(l, vec!["first line".to_string()]);
        let l = c.push(b" part\nthird");
        assert_eq!(l, vec!["second part".to_string()]);
        c.push(&[b'x'; 100]);
        let t = c.text();
        assert!(t.starts_with("first line"));
        assert!(t.contains("bytes left out"));
        assert!(t.ends_with("xxxxxxxxxx"));
        assert_eq!(c.total(), 140);
    }
}
