//! The `persist` restart strategy's state file: one decimal number, the upper bound of the
//! wall part of every stamp issued, followed by a newline.
//!
//! Written durably: the bound goes to `<file>.tmp` (created new, mode 0600, never through a
//! symlink; a stale one left by a crash is removed first), which is fsync'd, renamed over the
//! file, and the directory is fsync'd, so after a crash the file holds either the old bound
//! or the new one, never less. One process at a time: it holds an exclusive `flock` on
//! `<file>.lock` for as long as it uses the file. Read at start: a missing or empty file (a first start, or a crash on
//! a file system that lost the write) leaves the caller to wait `hlc.max_offset` as the `wait`
//! strategy does; a bound absurdly far ahead of the wall clock is refused.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A bound further than this (plus `hlc.max_offset`) ahead of the wall clock at start is
/// refused: the clock would stamp a day or more into the future. Only a host clock that went
/// back by that much, or a file written by something else, leaves such a bound.
pub const MAX_BOUND_AHEAD_NS: u64 = 24 * 3600 * 1_000_000_000;

/// What the state file held at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistStart {
    /// A bound: the clock starts above it, no wait is needed.
    Resumed { bound: u64 },
    /// No file: a first start, or the file was lost. The caller waits `hlc.max_offset`.
    Missing,
    /// An empty (or blank) file: a crash before its content reached the disk. The caller
    /// waits `hlc.max_offset` and warns.
    Empty,
}

impl PersistStart {
    /// Whether the caller must wait `hlc.max_offset` before ingesting (as with `wait`).
    pub fn needs_wait(self) -> bool {
        !matches!(self, PersistStart::Resumed { .. })
    }
}

/// Reads the state file at start. `now` is the wall clock, `max_offset_ns` the clock's max
/// offset (a legitimate bound is at most about `max_offset + PERSIST_WINDOW_NS` ahead).
pub fn read_start(path: &Path, now: u64, max_offset_ns: u64) -> io::Result<PersistStart> {
    let s = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PersistStart::Missing),
        Err(e) => return Err(e),
    };
    let s = s.trim();
    if s.is_empty() {
        return Ok(PersistStart::Empty);
    }
    let bound = s.parse::<u64>().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("hlc.state_file {} does not hold a bound: {e}", path.display()),
        )
    })?;
    let limit = now.saturating_add(max_offset_ns).saturating_add(MAX_BOUND_AHEAD_NS);
    if bound > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "hlc.state_file {} holds the bound {bound}, {} s ahead of the wall clock ({now}): more than 24 h \
                 ahead, stamps would be far in the future; check the host clock, or remove the file (the \
                 collector then waits hlc.max_offset at start, as restart_strategy wait does)",
                path.display(),
                (bound - now) / 1_000_000_000,
            ),
        ));
    }
    Ok(PersistStart::Resumed { bound })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// The temporary file a bound is written to before it is renamed over `path`.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

/// Takes the exclusive lock of the state file `path` (an `flock` on `<path>.lock`, held as
/// long as the returned file is open): two processes writing one state file would each
/// believe their own bound.
pub fn lock(path: &Path) -> io::Result<File> {
    let lock_path = with_suffix(path, ".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "it is in use by another process (which holds {}); two collectors cannot share one state file",
                    lock_path.display()
                ),
            )
        } else {
            e
        });
    }
    Ok(f)
}

fn create_tmp(tmp: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(tmp)
}

#[cfg(test)]
thread_local! {
    /// The steps of the writes made on this thread, for tests.
    pub(super) static STEPS: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn step(_name: &'static str) {
    #[cfg(test)]
    STEPS.with(|s| s.borrow_mut().push(_name));
}

/// Writes `bound` durably: temp file, fsync, rename, fsync of the directory. On failure the
/// temp file is removed (best effort) and the previous file is untouched.
pub fn write_bound(path: &Path, bound: u64) -> io::Result<()> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = match create_tmp(&tmp) {
            // Left by a crash during a write (or planted): removing it unlinks a symlink, never
            // its target.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create_tmp(&tmp)?
            }
            r => r?,
        };
        f.write_all(format!("{bound}\n").as_bytes())?;
        step("write");
        f.sync_all()?;
        step("fsync file");
        fs::rename(&tmp, path)?;
        step("rename");
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    step("fsync dir");
    Ok(())
}
