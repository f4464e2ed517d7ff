//! A small QMP client: QEMU's JSON monitor, over a socket QEMU inherited.
//!
//! One reader thread splits the stream into lines (each at most [`MAX_LINE`] bytes): events
//! go to the boot's event channel, command answers to [`Qmp::call`]. Commands are sent one
//! at a time, so answers come back in order.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use serde_json::{Value, json};

use crate::signals::Event;

/// Longest QMP message accepted.
pub const MAX_LINE: u64 = 1 << 20;

/// A QMP connection after capability negotiation.
#[derive(Debug)]
pub struct Qmp {
    w: UnixStream,
    answers: Receiver<Value>,
    /// QEMU's version, from the greeting.
    pub version: String,
}

/// Why a QMP call failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket failed or QEMU went away.
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("QMP: no answer to {0} in time")]
    Timeout(String),
    /// The connection ended.
    #[error("QMP: QEMU closed the monitor")]
    Closed,
    /// QEMU answered with an error.
    #[error("QMP: {cmd} failed: {message}")]
    Command {
        /// The command.
        cmd: String,
        /// QEMU's `desc`.
        message: String,
    },
}

fn reader(stream: UnixStream, answers: Sender<Value>, events: Sender<Event>) {
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            // Longer than the limit, or cut off: stop listening.
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            let data = v.get("data").cloned().unwrap_or(Value::Null);
            let _ = events.send(Event::Qmp(name.to_string(), data));
        } else if answers.send(v).is_err() {
            return;
        }
    }
}

impl Qmp {
    /// Reads the greeting and negotiates capabilities; events go to `events`.
    pub fn connect(
        stream: UnixStream,
        events: Sender<Event>,
        timeout: Duration,
    ) -> Result<Qmp, QmpError> {
        let (tx, answers) = channel();
        let r = stream.try_clone()?;
        std::thread::spawn(move || reader(r, tx, events));
        let greeting = match answers.recv_timeout(timeout) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => return Err(QmpError::Timeout("the greeting".into())),
            Err(RecvTimeoutError::Disconnected) => return Err(QmpError::Closed),
        };
        let v = &greeting["QMP"]["version"]["qemu"];
        let version = format!(
            "{}.{}.{}",
            v["major"].as_u64().unwrap_or(0),
            v["minor"].as_u64().unwrap_or(0),
            v["micro"].as_u64().unwrap_or(0)
        );
        let mut q = Qmp {
            w: stream,
            answers,
            version,
        };
        q.call("qmp_capabilities", None, timeout)?;
        Ok(q)
    }

    /// Runs `cmd` with `args`; its `return` value.
    pub fn call(
        &mut self,
        cmd: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.w.write_all(text.as_bytes())?;
        let v = match self.answers.recv_timeout(timeout) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => return Err(QmpError::Timeout(cmd.into())),
            Err(RecvTimeoutError::Disconnected) => return Err(QmpError::Closed),
        };
        if let Some(e) = v.get("error") {
            return Err(QmpError::Command {
                cmd: cmd.into(),
                message: e["desc"].as_str().unwrap_or("unknown error").to_string(),
            });
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }
}
