//! `netd nsexec JSON`: runs a process inside a running container (`docker
//! exec`). A fresh single-threaded process is needed because joining a mount
//! namespace (`setns`) is refused to multi-threaded ones. It joins the
//! container's cgroup, then its IPC, UTS, network, PID and mount namespaces,
//! forks (so the child is inside the PID namespace), drops to the user and
//! execs; it exits with the child's code (127 if the command is not found).
//! stdout and stderr are the ones netd gave it.

use std::os::fd::AsFd;
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
        // Opened after joining the container's mount namespace: its devpts.
        match super::init::open_pty_and_send_master(3) {
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
            if let Some(slave) = &slave
                && let Err(e) = super::init::take_terminal(slave)
            {
                std::process::exit(fail(e));
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

fn child(cfg: &ExecConfig) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
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
