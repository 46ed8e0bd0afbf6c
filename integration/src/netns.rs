//! Named network namespaces (`/run/netns/NAME`, made with iproute2) and
//! commands that run inside them.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use nix::sched::CloneFlags;

use crate::lab::LabError;

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    run(Command::new("ip").args(args))
}

/// Runs a prepared command, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<(), LabError> {
    let out = cmd.output().map_err(|e| LabError::Io { op: format!("run {cmd:?}"), source: e })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            cmd: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A named network namespace that this process created.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    fd: Arc<File>,
}

impl Netns {
    /// Creates `/run/netns/NAME` and brings its loopback up.
    pub fn create(name: &str) -> Result<Netns, LabError> {
        ip(&["netns", "add", name])?;
        let fd = File::open(format!("/run/netns/{name}"))
            .map_err(|e| LabError::Io { op: format!("open netns {name}"), source: e })?;
        let ns = Netns { name: name.to_owned(), fd: Arc::new(fd) };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs inside this namespace (network only), dying with
    /// the thread that spawns it, with a clean signal mask.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.command_with(program, None)
    }

    /// As [`Netns::command`]; with `hostname`, the command also gets its own
    /// UTS namespace with that host name and a private mount namespace.
    pub fn command_with(&self, program: impl AsRef<std::ffi::OsStr>, hostname: Option<&str>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.clone();
        let hostname = hostname.map(str::to_owned);
        // SAFETY: the closure runs in the forked child before exec and makes only
        // raw syscalls (setns, unshare, mount, sethostname, prctl, sigprocmask);
        // the paths and names it uses were allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // SAFETY: the Arc keeps the namespace file open for the closure's life.
                let borrowed = BorrowedFd::borrow_raw(fd.as_raw_fd());
                nix::sched::setns(borrowed, CloneFlags::CLONE_NEWNET)?;
                if let Some(h) = &hostname {
                    nix::sched::unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)?;
                    nix::mount::mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )?;
                    nix::unistd::sethostname(h)?;
                }
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&nix::sys::signal::SigSet::empty()),
                    None,
                )?;
                Ok(())
            });
        }
        cmd
    }

    /// Kills every process still inside the namespace.
    pub fn kill_all(&self) {
        kill_pids_in(&self.name);
    }
}

/// Kills every process inside the named namespace.
pub fn kill_pids_in(name: &str) {
    let out = Command::new("ip").args(["netns", "pids", name]).output();
    if let Ok(out) = out {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Deletes a named namespace after killing what runs inside it.
pub fn delete(name: &str) {
    kill_pids_in(name);
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}
