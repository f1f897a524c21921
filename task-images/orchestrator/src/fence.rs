//! The fence between attempts of one connection: an exclusive lock on a
//! file, taken before an attempt starts anything and held by the attempt's
//! supervisor and every connector it starts (the descriptor is inherited
//! across exec). The kernel frees the lock only when the last process that
//! holds it has exited, so a new attempt cannot start its connectors while
//! any process of an earlier one (a killed supervisor's destination still
//! draining its input, say) may still be writing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A taken fence. Dropping it releases this process's hold; processes that
/// inherited the descriptor keep holding it until they exit.
#[derive(Debug)]
pub struct Fence {
    file: File,
    pub path: PathBuf,
}

/// Takes the fence at `path` if nothing holds it.
pub fn try_take(path: &Path) -> io::Result<Option<Fence>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Fence { file, path: path.to_owned() })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Takes the fence, waiting up to `patience` for earlier holders to exit;
/// `waiting` is called once if it must wait (to say so in the log).
pub fn take(path: &Path, patience: Duration, waiting: impl FnOnce()) -> Result<Fence, String> {
    let failed = |e: io::Error| format!("cannot take the lock {}: {e}", path.display());
    if let Some(fence) = try_take(path).map_err(failed)? {
        return Ok(fence);
    }
    waiting();
    let since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(fence) = try_take(path).map_err(failed)? {
            return Ok(fence);
        }
        if since.elapsed() > patience {
            return Err(still_held(path, patience));
        }
    }
}

/// What to say when earlier holders outlast the wait.
fn still_held(path: &Path, patience: Duration) -> String {
    format!(
        "processes of an earlier attempt still hold {} after {} s; they are still stopping (or stuck): find them with `fuser {}`, and try again once they are gone",
        path.display(),
        patience.as_secs(),
        path.display()
    )
}

impl Fence {
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Lets every process this one starts from now on inherit the hold.
    /// Only for a process that starts nothing but the attempt's own
    /// processes (`sluice sync`, the orchestrator); a server that starts
    /// other work passes the descriptor with [`inherit_in_child`] instead.
    pub fn inherit_in_children(&self) -> io::Result<()> {
        clear_cloexec(self.raw_fd())
    }
}

/// For a `pre_exec` hook: the child keeps `fd` across its exec.
pub fn inherit_in_child(fd: RawFd) -> io::Result<()> {
    clear_cloexec(fd)
}

fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold; async-signal-safe.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_fence_is_held_until_every_process_that_inherited_it_has_exited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conn.lock");
        let fence = try_take(&path).unwrap().expect("free at first");
        assert!(try_take(&path).unwrap().is_none(), "a second open file of this process is refused too");
        fence.inherit_in_children().unwrap();
        let mut child = Command::new("sleep").arg("0.5").spawn().unwrap();
        drop(fence);
        assert!(try_take(&path).unwrap().is_none(), "the child still holds it");
        child.wait().unwrap();
        assert!(try_take(&path).unwrap().is_some(), "free once the child exited");
    }

    #[test]
    fn take_waits_then_names_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conn.lock");
        let _held = try_take(&path).unwrap().unwrap();
        let mut said = false;
        let error = take(&path, Duration::from_millis(300), || said = true).unwrap_err();
        assert!(said);
        assert!(error.contains("conn.lock") && error.contains("earlier attempt"), "{error}");
    }
}
