//! `netd nsexec JSON`: runs a process inside a running container (`docker
//! exec`). A fresh single-threaded process is needed because joining a mount
//! namespace (`setns`) is refused to multi-threaded ones. It joins the
//! container's cgroup, then its IPC, UTS, network, PID and mount namespaces,
//! forks (so the child is inside the PID namespace), drops to the user and
//! execs; it exits with the child's code (127 if the command is not found).
//! stdout and stderr are the ones netd gave it.

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

/// What to run, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecConfig {
    /// Host pid of the container's first process.
    pub pid: i32,
    pub cgroup_dirs: Vec<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Run on a terminal: the helper opens a pty in the container's devpts,
    /// sends the master to netd over fd 3 (SCM_RIGHTS) and gives the process
    /// the slave as its controlling terminal.
    #[serde(default)]
    pub tty: bool,
}

fn fail(msg: String) -> i32 {
    eprintln!("netd exec: {msg}");
    126
}

/// Entry point of `netd nsexec JSON`; returns the exit code.
pub fn main(json: &str) -> i32 {
    let cfg: ExecConfig = match serde_json::from_str(json) {
        Ok(c) => c,
        Err(e) => return fail(format!("bad configuration: {e}")),
    };
    for d in &cfg.cgroup_dirs {
        if let Err(e) = std::fs::write(d.join("cgroup.procs"), std::process::id().to_string()) {
            return fail(format!("join cgroup {}: {e}", d.display()));
        }
    }
    // Open every namespace first: after joining the mount namespace the
    // container's /proc is no longer the host's.
    let mut fds = Vec::new();
    for (ns, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        match std::fs::File::open(format!("/proc/{}/ns/{ns}", cfg.pid)) {
            Ok(f) => fds.push((ns, flag, f)),
            Err(e) => return fail(format!("the container is not running ({ns}: {e})")),
        }
    }
    for (ns, flag, f) in &fds {
        if let Err(e) = nix::sched::setns(f.as_fd(), *flag) {
            return fail(format!("setns {ns}: {e}"));
        }
    }
    drop(fds);
    let slave = if cfg.tty {
        match open_pty_and_send_master() {
            Ok(s) => Some(s),
            Err(e) => return fail(format!("cannot open a terminal in the container: {e}")),
        }
    } else {
        None
    };
    // SAFETY: single-threaded process; the child only makes syscalls and execs.
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            if let Some(slave) = &slave {
                for target in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this child.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(slave), target) };
                }
            }
            drop(slave);
            let code = child(&cfg);
            std::process::exit(code);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return c,
                Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return fail(format!("wait: {e}")),
            }
        },
    }
}

/// Opens a pty in the (already joined) container mount namespace, sends the
/// master to netd over fd 3 and returns the slave.
fn open_pty_and_send_master() -> Result<std::fs::File, String> {
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
    sendmsg::<()>(3, &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(|e| format!("send the terminal to netd: {e}"))?;
    Ok(slave)
}

fn child(cfg: &ExecConfig) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if cfg.tty {
        let _ = nix::unistd::setsid();
        // SAFETY: TIOCSCTTY on stdin (the pty slave netd passed) takes no pointer.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return fail(format!("cannot take the terminal: {}", std::io::Error::last_os_error()));
        }
    }
    let cwd = if cfg.cwd.is_empty() { "/" } else { cfg.cwd.as_str() };
    if let Err(e) = nix::unistd::chdir(cwd) {
        return fail(format!("chdir to {cwd}: {e}"));
    }
    let gid = nix::unistd::Gid::from_raw(cfg.gid);
    if let Err(e) = nix::unistd::setgroups(&[gid]).and_then(|_| nix::unistd::setgid(gid)) {
        return fail(format!("setgid {}: {e}", cfg.gid));
    }
    if let Err(e) = nix::unistd::setuid(nix::unistd::Uid::from_raw(cfg.uid)) {
        return fail(format!("setuid {}: {e}", cfg.uid));
    }
    let Some(arg0) = cfg.args.first() else { return fail("no command given".into()) };
    let prog = match super::init::find_program_pub(arg0, &cfg.env) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 127;
        }
    };
    let to_c = |v: &[String]| v.iter().map(|s| std::ffi::CString::new(s.as_str())).collect::<Result<Vec<_>, _>>();
    let (Ok(args), Ok(env)) = (to_c(&cfg.args), to_c(&cfg.env)) else {
        return fail("an argument contains a NUL byte".into());
    };
    let e = nix::unistd::execve(&prog, &args, &env).err().map(|e| e.to_string()).unwrap_or_default();
    eprintln!("exec: \"{arg0}\": {e}");
    126
}
