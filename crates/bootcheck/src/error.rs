//! Errors of a boot check. A guest that does not boot is not an error: it is a
//! [`Report`](crate::Report) whose `passed` is false.

/// Why a boot check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// QEMU or the firmware the guest needs is not installed (the message names the Debian
    /// package), or the guest's architecture cannot be booted here.
    #[error("{0}")]
    Unavailable(String),
    /// The caller asked to stop (the task was cancelled or lost its lease); QEMU was killed.
    #[error("the boot check was stopped")]
    Stopped,
    /// QEMU failed before the guest ran (vmie's side, not the guest's).
    #[error("QEMU failed to start the guest: {0}")]
    Qemu(String),
    /// A system call vmie needed failed.
    #[error("{what}: {source}")]
    Io {
        /// What vmie was doing.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl BootError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
        let what = what.into();
        move |source| BootError::Io { what, source }
    }
}
