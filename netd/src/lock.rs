//! The data-root lock: one netd per data root. The lock is an exclusive
//! `flock` on `<data-root>/netd.lock`, released by the kernel when the process
//! dies, so a crashed daemon never leaves a stale lock behind. The file holds
//! the owner's pid, used only to word the error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data root {root} is already in use by another netd{owner}: stop it or pass another --data-root")]
    Held { root: PathBuf, owner: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataRootLock {
    _file: Flock<File>,
}

impl DataRootLock {
    /// Takes the lock on `data_root` (which must exist) without waiting.
    pub fn acquire(data_root: &Path) -> Result<DataRootLock, LockError> {
        let path = data_root.join("netd.lock");
        let io = |source| LockError::Io { path: path.clone(), source };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                locked.set_len(0).map_err(io)?;
                locked.rewind().map_err(io)?;
                writeln!(locked, "{}", std::process::id()).map_err(io)?;
                Ok(DataRootLock { _file: locked })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let owner = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
                Err(LockError::Held { root: data_root.to_owned(), owner })
            }
            Err((_, errno)) => Err(io(std::io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataRootLock::acquire(dir.path()).unwrap();
        let err = DataRootLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already in use by another netd"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        DataRootLock::acquire(dir.path()).unwrap();
    }
}
