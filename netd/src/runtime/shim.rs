//! `netd shim DIR`: one small process per running container, so containers
//! outlive netd (live restore). netd writes `DIR/launch.json` and runs the
//! shim; the shim forks into its own session, creates the container with
//! `clone` (fresh namespaces; the shim is single-threaded, so this is safe),
//! puts it in its cgroup, lets it run, reports `{"pid": N}` (or
//! `{"error": "..."}`) on its stdout and keeps going after its first process
//! exits: it writes the container's output to the json-file log and, when the
//! container ends, its exit status to `DIR/exit.json`. Everything it knows is
//! in files, so a restarted netd re-adopts containers from them.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::logfile;
use super::mounts::MountOp;
use super::spec::NetworkMode;

/// What the shim needs to start a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchConfig {
    pub id: String,
    /// Mount point of the container's root (created by netd).
    pub rootfs: PathBuf,
    pub ops: Vec<MountOp>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub network: NetworkMode,
    /// Directories whose `cgroup.procs` receive the container.
    pub cgroup_dirs: Vec<PathBuf>,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
}

/// How a container ended, as the shim records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code (128 + signal when killed by a signal, as Docker reports).
    pub code: i32,
    pub signal: Option<i32>,
    /// RFC 3339 time the shim saw the exit.
    pub finished_at: String,
}

/// What the shim reports on its stdout once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Name of the file holding the exit record.
pub const EXIT_FILE: &str = "exit.json";
/// Name of the launch configuration file.
pub const LAUNCH_FILE: &str = "launch.json";

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Entry point of `netd shim DIR`; returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    let cfg: LaunchConfig = match std::fs::read(dir.join(LAUNCH_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            println!("{}", serde_json::json!({ "error": format!("shim: bad {}: {e}", LAUNCH_FILE) }));
            return 1;
        }
    };
    // Close-on-exec: the container must not inherit the report pipe (the
    // first process reads it until the shim closes it).
    let (report_r, report_w) = match cloexec_pipe() {
        Ok(p) => p,
        Err(e) => {
            println!("{}", serde_json::json!({ "error": format!("shim: pipe: {e}") }));
            return 1;
        }
    };
    // SAFETY: the shim is single-threaded here (no runtime, no threads yet).
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            println!("{}", serde_json::json!({ "error": format!("shim: fork: {e}") }));
            1
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(report_w);
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::from(report_r)), &mut line);
            print!("{line}");
            let _ = std::io::stdout().flush();
            if line.contains("\"pid\"") { 0 } else { 1 }
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            detach_stdio(dir);
            run(dir, &cfg, report_w)
        }
    }
}

fn detach_stdio(dir: &Path) {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
    }
    if let Ok(log) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("shim.log")) {
        let _ = nix::unistd::dup2_stdout(log.as_fd());
        let _ = nix::unistd::dup2_stderr(log.as_fd());
    }
}

fn report(w: OwnedFd, r: &Report) {
    let mut f = std::fs::File::from(w);
    let _ = writeln!(f, "{}", serde_json::to_string(r).unwrap_or_default());
}

fn cloexec_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

fn run(dir: &Path, cfg: &LaunchConfig, report_w: OwnedFd) -> i32 {
    let fail = |report_w: OwnedFd, msg: String| {
        eprintln!("shim {}: {msg}", cfg.id);
        report(report_w, &Report { pid: None, error: Some(msg) });
        1
    };
    let pipes = (|| Ok::<_, nix::Error>((cloexec_pipe()?, cloexec_pipe()?, cloexec_pipe()?, cloexec_pipe()?)))();
    let ((out_r, out_w), (err_r, err_w), (go_r, go_w), (exec_r, exec_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(report_w, format!("pipe: {e}")),
    };
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWPID;
    if cfg.network == NetworkMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let mut stack = vec![0u8; 1 << 20];
    let child_fds = [out_w.as_raw_fd(), err_w.as_raw_fd(), go_r.as_raw_fd(), exec_w.as_raw_fd()];
    let parent_fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), go_w.as_raw_fd(), exec_r.as_raw_fd()];
    // SAFETY: the shim is single-threaded; the child runs `child` on its own
    // stack with a copy of this process's memory and only returns an exit code.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| super::init::child(cfg, child_fds, parent_fds)),
            &mut stack,
            flags,
            Some(nix::sys::signal::Signal::SIGCHLD as i32),
        )
    };
    let pid = match pid {
        Ok(p) => p,
        Err(e) => return fail(report_w, format!("cannot create the container's namespaces: {e}")),
    };
    drop((out_w, err_w, go_r, exec_w));
    for d in &cfg.cgroup_dirs {
        let f = d.join("cgroup.procs");
        if let Err(e) = std::fs::write(&f, pid.as_raw().to_string()) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return fail(report_w, format!("cannot join cgroup {}: {e}", f.display()));
        }
    }
    let mut go = std::fs::File::from(go_w);
    let _ = go.write_all(b"g");
    drop(go);
    let mut exec_err = String::new();
    let _ = std::fs::File::from(exec_r).read_to_string(&mut exec_err);
    if !exec_err.is_empty() {
        let _ = nix::sys::wait::waitpid(pid, None);
        return fail(report_w, exec_err);
    }
    let _ = write_atomic(&dir.join("pid"), pid.as_raw().to_string().as_bytes());
    report(report_w, &Report { pid: Some(pid.as_raw()), error: None });
    pump(cfg, out_r, err_r);
    let rec = wait_exit(pid);
    if let Err(e) = write_atomic(&dir.join(EXIT_FILE), &serde_json::to_vec(&rec).unwrap_or_default()) {
        eprintln!("shim {}: cannot record exit: {e}", cfg.id);
    }
    0
}

fn pump(cfg: &LaunchConfig, out_r: OwnedFd, err_r: OwnedFd) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut log = logfile::Writer::open(&cfg.log_path, cfg.log_max_bytes, cfg.log_max_files).ok();
    let mut open = [Some(out_r), Some(err_r)];
    let mut buf = vec![0u8; 32 * 1024];
    while open.iter().any(Option::is_some) {
        let ready: Vec<usize> = {
            let idx: Vec<usize> = (0..2).filter(|i| open[*i].is_some()).collect();
            let mut fds: Vec<PollFd> = idx
                .iter()
                .filter_map(|i| open[*i].as_ref().map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)))
                .collect();
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            idx.iter()
                .zip(&fds)
                .filter(|(_, p)| !p.revents().unwrap_or(PollFlags::empty()).is_empty())
                .map(|(i, _)| *i)
                .collect()
        };
        for i in ready {
            let n = match &open[i] {
                Some(fd) => nix::unistd::read(fd, &mut buf).unwrap_or(0),
                None => 0,
            };
            if n == 0 {
                open[i] = None;
            } else if let Some(l) = log.as_mut() {
                let _ = l.write(i, &buf[..n]);
            }
        }
    }
    if let Some(l) = log.as_mut() {
        let _ = l.flush_partial();
    }
}

fn wait_exit(pid: Pid) -> ExitRecord {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        let (code, signal) = match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => (c, None),
            Ok(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => (255, None),
        };
        return ExitRecord { code, signal, finished_at: jiff::Timestamp::now().to_string() };
    }
}

/// Spawns `netd shim DIR` from the netd binary and returns what it reported.
pub fn spawn(netd_exe: &Path, dir: &Path) -> Result<Report, String> {
    let out = std::process::Command::new(netd_exe)
        .arg("shim")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run the shim: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str::<Report>(text.trim()).map_err(|e| format!("shim answered {text:?}: {e}"))
}

/// Converts a string to a C string, refusing interior NULs.
pub(super) fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// Closes a raw fd the child inherited but must not keep.
pub(super) fn close_raw(fd: i32) {
    // SAFETY: the fd was inherited by the cloned child and is not used after.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
