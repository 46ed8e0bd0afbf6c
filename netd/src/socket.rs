//! The API's unix socket: bound with mode 0660, replacing a stale socket left
//! by a killed daemon, refusing to steal one a live daemon still serves.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path} is served by another running daemon: stop it or pass another -H")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket: refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_owned();
    move |source| SocketError::Io { op, path, source }
}

/// Binds `path`, first removing a stale socket file if nobody listens on it.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match ShortPath::new(path).and_then(|s| std::os::unix::net::UnixStream::connect(s.path())) {
                Ok(_) => return Err(SocketError::InUse { path: path.to_owned() }),
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                    tracing::info!(socket = %path.display(), "replacing stale socket");
                    std::fs::remove_file(path).map_err(io("remove stale socket", path))?;
                }
                Err(e) => return Err(io("probe", path)(e)),
            }
        }
        Ok(_) => return Err(SocketError::NotASocket { path: path.to_owned() }),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("stat", path)(e)),
    }
    let short = ShortPath::new(path).map_err(io("bind", path))?;
    let listener = tokio::net::UnixListener::bind(short.path()).map_err(io("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io("chmod", path))?;
    Ok(listener)
}

/// The longest path a `sockaddr_un` holds (108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// A path to a unix socket that fits in `sockaddr_un`. Deep data roots (the
/// lab's, or any long `--exec-root`) give socket paths past the kernel's 108
/// bytes; those are reached through `/proc/self/fd/N/<name>` with `N` an
/// `O_PATH` descriptor of the parent directory, held as long as this value.
pub struct ShortPath {
    path: PathBuf,
    _dir: Option<std::fs::File>,
}

impl ShortPath {
    /// Makes `path` usable for `bind`/`connect` whatever its length.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        if path.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
            return Ok(Self { path: path.to_owned(), _dir: None });
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(std::io::Error::new(ErrorKind::InvalidInput, "socket path has no directory"));
        };
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(parent)?;
        let short = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir))).join(name);
        if short.as_os_str().as_bytes().len() > SUN_PATH_MAX {
            return Err(std::io::Error::new(ErrorKind::InvalidInput, "socket name too long"));
        }
        Ok(Self { path: short, _dir: Some(dir) })
    }

    /// The path to hand to `bind` or `connect`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/netd.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        drop(first); // the file stays behind, as after kill -9
        assert!(path.exists());
        let _second = bind(&path).unwrap();
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netd.sock");
        std::fs::write(&path, "precious").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt.block_on(async { bind(&path).unwrap_err() });
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[test]
    fn sockets_past_the_sun_path_limit_bind_and_connect() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("attach.sock");
        assert!(std::os::unix::net::UnixListener::bind(&path).is_err(), "the kernel limit this works around");
        let short = ShortPath::new(&path).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(short.path()).unwrap();
        assert!(path.exists(), "bound at the real path");
        let other = ShortPath::new(&path).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(other.path()).unwrap();
        listener.accept().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let api = deep.join("netd.sock");
        rt.block_on(async { bind(&api).unwrap() });
        assert!(api.exists());
    }
}
