//! The container's first moments, in the cloned child (new mount, UTS, IPC,
//! PID and maybe network namespaces): wait until the shim has put it in its
//! cgroup, build the root filesystem from the mount plan, `pivot_root` into it,
//! drop to the configured user, wire stdio and exec the command. Any failure is
//! written to the exec pipe (close-on-exec, so silence means success).

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::mounts::{Flags, MountOp};
use super::shim::{LaunchConfig, close_raw, cstring};

/// Resolves `target` inside `root`, following symlinks as if `root` were `/`
/// (so an image's symlink can never send a mount outside its root). With
/// `follow_last = false` the final component is not followed.
pub fn secure_join(root: &Path, target: &str, follow_last: bool) -> Result<PathBuf, String> {
    let mut pending: VecDeque<String> = target.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
    let mut parts: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let is_last = pending.is_empty();
        let candidate = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)).join(&comp);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("{target}: too many levels of symbolic links"));
                }
                let link = std::fs::read_link(&candidate).map_err(|e| format!("{target}: {e}"))?;
                if link.is_absolute() {
                    parts.clear();
                }
                let mut new: VecDeque<String> = link
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                new.extend(pending.drain(..));
                pending = new;
            }
            _ => parts.push(comp),
        }
    }
    Ok(parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

fn ms(flags: Flags) -> MsFlags {
    let mut f = MsFlags::empty();
    if flags.read_only {
        f |= MsFlags::MS_RDONLY;
    }
    if flags.nosuid {
        f |= MsFlags::MS_NOSUID;
    }
    if flags.noexec {
        f |= MsFlags::MS_NOEXEC;
    }
    if flags.nodev {
        f |= MsFlags::MS_NODEV;
    }
    f
}

fn apply(root: &Path, op: &MountOp) -> Result<(), String> {
    let none: Option<&str> = None;
    match op {
        MountOp::Overlay { lower, upper, work } => {
            for p in [lower, upper, work] {
                let s = p.to_string_lossy();
                if s.contains(',') || s.contains(':') {
                    return Err(format!("overlay path {s:?} contains ',' or ':'"));
                }
            }
            for d in [upper, work, &root.to_path_buf()] {
                std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
            }
            let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
            mount(Some("overlay"), root, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
                .map_err(|e| format!("mount the overlay root: {e}"))
        }
        MountOp::Fs { fstype, target, options, flags } => {
            let path = secure_join(root, target, true)?;
            std::fs::create_dir_all(&path).map_err(|e| format!("create {target}: {e}"))?;
            let data = if options.is_empty() { None } else { Some(options.as_str()) };
            mount(Some(fstype.as_str()), &path, Some(fstype.as_str()), ms(*flags), data)
                .map_err(|e| format!("mount {fstype} on {target}: {e}"))
        }
        MountOp::Bind { source, target, read_only, file } => {
            let path = secure_join(root, target, true)?;
            if *file {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| format!("create {target}: {e}"))?;
                }
                if !path.exists() {
                    std::fs::write(&path, b"").map_err(|e| format!("create {target}: {e}"))?;
                }
            } else {
                std::fs::create_dir_all(&path).map_err(|e| format!("create {target}: {e}"))?;
            }
            mount(Some(source.as_path()), &path, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
                .map_err(|e| format!("bind {} on {target}: {e}", source.display()))?;
            if *read_only {
                let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(none, &path, none, f, none).map_err(|e| format!("make {target} read-only: {e}"))?;
            }
            Ok(())
        }
        MountOp::Symlink { link, to } => {
            let path = secure_join(root, link, false)?;
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(to, &path).map_err(|e| format!("link {link}: {e}"))
        }
    }
}

fn find_program(arg0: &str, env: &[String]) -> Result<CString, String> {
    let not_found = || format!("exec: \"{arg0}\": executable file not found in $PATH");
    if arg0.contains('/') {
        return cstring(arg0);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(arg0);
        if let Ok(m) = std::fs::metadata(&p)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return cstring(&p.to_string_lossy());
        }
    }
    Err(not_found())
}

/// [`find_program`] for `netd nsexec`.
pub(super) fn find_program_pub(arg0: &str, env: &[String]) -> Result<CString, String> {
    find_program(arg0, env)
}

/// Descriptors the cloned child inherits from the shim.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChildFds {
    pub out_w: i32,
    pub err_w: i32,
    pub go_r: i32,
    pub exec_w: i32,
    /// Read end of the stdin pipe (`-i` without a TTY).
    pub stdin_r: Option<i32>,
    /// Socket on which to send the pty master to the shim (`-t`).
    pub pty_sock: Option<i32>,
}

/// Opens a pty in the current mount namespace's devpts (`/dev/ptmx`), sends
/// the master over `sock_fd` (SCM_RIGHTS) and returns the slave. Used by the
/// container's first process (`run -t`) and by `netd nsexec` (`exec -t`).
pub fn open_pty_and_send_master(sock_fd: i32) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;

    use nix::fcntl::OFlag;
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).map_err(|e| format!("open /dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(|e| format!("open {name}: {e}"))?;
    let fds = [std::os::fd::AsRawFd::as_raw_fd(&master)];
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(sock_fd, &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(|e| format!("send the terminal: {e}"))?;
    Ok(slave)
}

/// Makes `slave` the controlling terminal and the standard streams.
pub fn take_terminal(slave: &std::fs::File) -> Result<(), String> {
    let _ = nix::unistd::setsid();
    let fd = std::os::fd::AsRawFd::as_raw_fd(slave);
    // SAFETY: TIOCSCTTY on an open terminal descriptor takes no pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } != 0 {
        return Err(format!("cannot take the terminal: {}", std::io::Error::last_os_error()));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(format!("dup2 terminal: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn setup(cfg: &LaunchConfig, fds: ChildFds) -> Result<(), String> {
    let ChildFds { out_w, err_w, go_r, .. } = fds;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    let mut b = [0u8; 1];
    // SAFETY: go_r is this child's inherited read end of the go pipe.
    let go = unsafe { BorrowedFd::borrow_raw(go_r) };
    if nix::unistd::read(go, &mut b).unwrap_or(0) != 1 {
        return Err("the shim went away before the start".into());
    }
    if !cfg.hostname.is_empty() {
        nix::unistd::sethostname(&cfg.hostname).map_err(|e| format!("sethostname: {e}"))?;
    }
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(|e| format!("make / private: {e}"))?;
    for op in &cfg.ops {
        apply(&cfg.rootfs, op)?;
    }
    nix::unistd::chdir(&cfg.rootfs).map_err(|e| format!("chdir to the root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    if !cfg.cwd.is_empty() {
        std::fs::create_dir_all(&cfg.cwd).map_err(|e| format!("create working dir {}: {e}", cfg.cwd))?;
        nix::unistd::chdir(cfg.cwd.as_str()).map_err(|e| format!("chdir to {}: {e}", cfg.cwd))?;
    }
    // Standard streams: a terminal from the container's own devpts, or the
    // shim's pipes (and stdin from the client or /dev/null).
    if let Some(sock) = fds.pty_sock {
        let slave = open_pty_and_send_master(sock)?;
        take_terminal(&slave)?;
    } else {
        match fds.stdin_r {
            Some(r) => {
                // SAFETY: stdin_r is this child's inherited pipe read end.
                let r = unsafe { BorrowedFd::borrow_raw(r) };
                nix::unistd::dup2_stdin(r).map_err(|e| format!("stdin: {e}"))?;
            }
            None => {
                let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
                nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
            }
        }
        // SAFETY: out_w and err_w are this child's inherited pipe write ends.
        let (out, err) = unsafe { (BorrowedFd::borrow_raw(out_w), BorrowedFd::borrow_raw(err_w)) };
        nix::unistd::dup2_stdout(out).map_err(|e| format!("stdout: {e}"))?;
        nix::unistd::dup2_stderr(err).map_err(|e| format!("stderr: {e}"))?;
    }
    let gid = nix::unistd::Gid::from_raw(cfg.gid);
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid {}: {e}", cfg.gid))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(cfg.uid)).map_err(|e| format!("setuid {}: {e}", cfg.uid))?;
    let arg0 = cfg.args.first().ok_or("no command given: the image has no Cmd or Entrypoint")?;
    let prog = find_program(arg0, &cfg.env)?;
    let args = cfg.args.iter().map(|a| cstring(a)).collect::<Result<Vec<_>, _>>()?;
    let env = cfg.env.iter().map(|e| cstring(e)).collect::<Result<Vec<_>, _>>()?;
    let e = nix::unistd::execve(&prog, &args, &env).err().map(|e| e.to_string()).unwrap_or_default();
    Err(format!("exec: \"{arg0}\": {e}"))
}

/// Body of the cloned child: returns only on failure (the exit code).
pub(super) fn child(cfg: &LaunchConfig, fds: ChildFds, parent_fds: &[i32]) -> isize {
    for fd in parent_fds {
        close_raw(*fd);
    }
    let exec_w = fds.exec_w;
    match setup(cfg, fds) {
        Ok(()) => 0,
        Err(msg) => {
            // SAFETY: exec_w is this child's inherited write end of the exec pipe.
            let w = unsafe { BorrowedFd::borrow_raw(exec_w) };
            let _ = nix::unistd::write(w, msg.as_bytes());
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("real/up")).unwrap();
        std::os::unix::fs::symlink("real/dir", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(secure_join(root, "/evil/passwd", true).unwrap(), root.join("etc/passwd"));
        assert_eq!(secure_join(root, "/real/up/x", true).unwrap(), root.join("outside/x"));
        assert_eq!(secure_join(root, "/rel/f", true).unwrap(), root.join("real/dir/f"));
        assert_eq!(secure_join(root, "/../../x", true).unwrap(), root.join("x"));
        assert_eq!(secure_join(root, "/evil", false).unwrap(), root.join("evil"));
        assert!(secure_join(root, "/loop", true).unwrap_err().contains("too many levels"));
    }

    #[test]
    fn programs_are_found_on_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_owned()];
        assert_eq!(find_program("sh", &env).unwrap().to_str().unwrap(), "/bin/sh");
        assert_eq!(find_program("/x/y", &env).unwrap().to_str().unwrap(), "/x/y");
        let e = find_program("no-such-prog", &env).unwrap_err();
        assert_eq!(e, "exec: \"no-such-prog\": executable file not found in $PATH");
    }
}
