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
    /// Run on a terminal (`-t`): output is the pty's, logged as stdout.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for an attached client (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
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
    /// Not final: the container exists (its namespaces do) but waits for
    /// netd to set up its network, then to write one byte on the shim's
    /// stdin: `g` to go on, anything else (or EOF) to abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<i32>,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Name of the file holding the exit record.
pub const EXIT_FILE: &str = "exit.json";
/// Name of the launch configuration file.
pub const LAUNCH_FILE: &str = "launch.json";
/// The shim's socket: a client that connects receives the container's input
/// descriptor (SCM_RIGHTS): the pty master (`-t`, every time) or the stdin
/// pipe's write end (`-i`, once, so that EOF reaches the container).
pub const ATTACH_SOCKET: &str = "attach.sock";

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
            // Forward report lines until the final one (or EOF).
            let mut reader = std::io::BufReader::new(std::fs::File::from(report_r));
            loop {
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut reader, &mut line);
                print!("{line}");
                let _ = std::io::stdout().flush();
                match serde_json::from_str::<Report>(line.trim()) {
                    Ok(r) if r.sandbox.is_some() => continue,
                    Ok(r) if r.pid.is_some() => return 0,
                    _ => return 1,
                }
            }
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            // netd's go-ahead after the network setup arrives on stdin.
            let handshake = (cfg.network == NetworkMode::Bridge)
                .then(|| std::io::stdin().as_fd().try_clone_to_owned().ok())
                .flatten();
            detach_stdio(dir);
            run(dir, &cfg, report_w, handshake)
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

/// Tells netd the container's pid and waits (bounded) for its go-ahead.
fn network_handshake(report_w: &OwnedFd, handshake: OwnedFd, pid: Pid) -> Result<(), String> {
    let line = format!(
        "{}\n",
        serde_json::to_string(&Report { sandbox: Some(pid.as_raw()), pid: None, error: None }).unwrap_or_default()
    );
    nix::unistd::write(report_w, line.as_bytes()).map_err(|e| format!("report: {e}"))?;
    let mut fds = [nix::poll::PollFd::new(handshake.as_fd(), nix::poll::PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16)) {
        Ok(1) => {}
        _ => return Err("netd did not set up the container's network within 60 s".into()),
    }
    let mut b = [0u8; 1];
    match nix::unistd::read(&handshake, &mut b) {
        Ok(1) if b[0] == b'g' => Ok(()),
        _ => Err("netd aborted the start: network setup failed".into()),
    }
}

fn run(dir: &Path, cfg: &LaunchConfig, report_w: OwnedFd, handshake: Option<OwnedFd>) -> i32 {
    let fail = |report_w: OwnedFd, msg: String| {
        eprintln!("shim {}: {msg}", cfg.id);
        report(report_w, &Report { sandbox: None, pid: None, error: Some(msg) });
        1
    };
    let pipes = (|| Ok::<_, nix::Error>((cloexec_pipe()?, cloexec_pipe()?, cloexec_pipe()?, cloexec_pipe()?)))();
    let ((out_r, out_w), (err_r, err_w), (go_r, go_w), (exec_r, exec_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(report_w, format!("pipe: {e}")),
    };
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWPID;
    if cfg.network != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let stdin_pipe = if cfg.open_stdin && !cfg.tty {
        match cloexec_pipe() {
            Ok(p) => Some(p),
            Err(e) => return fail(report_w, format!("pipe: {e}")),
        }
    } else {
        None
    };
    let pty_pair = if cfg.tty {
        match std::os::unix::net::UnixStream::pair() {
            Ok(p) => Some(p),
            Err(e) => return fail(report_w, format!("socketpair: {e}")),
        }
    } else {
        None
    };
    let mut stack = vec![0u8; 1 << 20];
    let child_fds = super::init::ChildFds {
        out_w: out_w.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        exec_w: exec_w.as_raw_fd(),
        stdin_r: stdin_pipe.as_ref().map(|(r, _)| r.as_raw_fd()),
        pty_sock: pty_pair.as_ref().map(|(_, c)| c.as_raw_fd()),
    };
    let mut parent_fds = vec![out_r.as_raw_fd(), err_r.as_raw_fd(), go_w.as_raw_fd(), exec_r.as_raw_fd()];
    parent_fds.extend(stdin_pipe.as_ref().map(|(_, w)| w.as_raw_fd()));
    parent_fds.extend(pty_pair.as_ref().map(|(p, _)| p.as_raw_fd()));
    // SAFETY: the shim is single-threaded; the child runs `child` on its own
    // stack with a copy of this process's memory and only returns an exit code.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| super::init::child(cfg, child_fds, &parent_fds)),
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
    let stdin_w = stdin_pipe.map(|(r, w)| {
        drop(r);
        w
    });
    let pty_parent = pty_pair.map(|(p, c)| {
        drop(c);
        p
    });
    for d in &cfg.cgroup_dirs {
        let f = d.join("cgroup.procs");
        if let Err(e) = std::fs::write(&f, pid.as_raw().to_string()) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return fail(report_w, format!("cannot join cgroup {}: {e}", f.display()));
        }
    }
    if let Some(h) = handshake
        && let Err(e) = network_handshake(&report_w, h, pid)
    {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return fail(report_w, e);
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
    // The container sent its pty master before exec (already queued).
    let master = match pty_parent {
        Some(sock) => match super::manager::receive_pty(&sock) {
            Ok(m) => Some(OwnedFd::from(m)),
            Err(e) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                return fail(report_w, e);
            }
        },
        None => None,
    };
    let listener = match crate::socket::ShortPath::new(&dir.join(ATTACH_SOCKET))
        .and_then(|s| std::os::unix::net::UnixListener::bind(s.path()))
    {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("shim {}: no attach socket: {e}", cfg.id);
            None
        }
    };
    let _ = write_atomic(&dir.join("pid"), pid.as_raw().to_string().as_bytes());
    report(report_w, &Report { sandbox: None, pid: Some(pid.as_raw()), error: None });
    let outputs = match &master {
        // A terminal merges the streams; the pipes saw EOF at exec.
        Some(m) => vec![(m.try_clone().ok(), 0)],
        None => vec![(Some(out_r), 0), (Some(err_r), 1)],
    };
    let input = master.or(stdin_w);
    pump(cfg, outputs, listener, input);
    let rec = wait_exit(pid);
    if let Err(e) = write_atomic(&dir.join(EXIT_FILE), &serde_json::to_vec(&rec).unwrap_or_default()) {
        eprintln!("shim {}: cannot record exit: {e}", cfg.id);
    }
    0
}

/// Copies the container's output into the log until every output closes,
/// serving the attach socket meanwhile.
fn pump(
    cfg: &LaunchConfig,
    outputs: Vec<(Option<OwnedFd>, usize)>,
    listener: Option<std::os::unix::net::UnixListener>,
    mut input: Option<OwnedFd>,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut log = logfile::Writer::open(&cfg.log_path, cfg.log_max_bytes, cfg.log_max_files).ok();
    let mut open: Vec<(Option<OwnedFd>, usize)> = outputs;
    let mut buf = vec![0u8; 32 * 1024];
    while open.iter().any(|(f, _)| f.is_some()) {
        let (ready, accept): (Vec<usize>, bool) = {
            let idx: Vec<usize> = (0..open.len()).filter(|i| open[*i].0.is_some()).collect();
            let mut fds: Vec<PollFd> = idx
                .iter()
                .filter_map(|i| open[*i].0.as_ref().map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)))
                .collect();
            if let Some(l) = &listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            let hit = |p: &PollFd| !p.revents().unwrap_or(PollFlags::empty()).is_empty();
            let ready = idx.iter().zip(&fds).filter(|(_, p)| hit(p)).map(|(i, _)| *i).collect();
            let accept = listener.is_some() && fds.last().is_some_and(hit);
            (ready, accept)
        };
        if accept
            && let Some(l) = &listener
            && let Ok((conn, _)) = l.accept()
        {
            hand_over_input(&conn, &mut input, cfg.tty);
        }
        for i in ready {
            let n = match &open[i].0 {
                Some(fd) => nix::unistd::read(fd, &mut buf).unwrap_or(0),
                None => 0,
            };
            if n == 0 {
                open[i].0 = None;
            } else if let Some(l) = log.as_mut() {
                let _ = l.write(open[i].1, &buf[..n]);
            }
        }
    }
    if let Some(l) = log.as_mut() {
        let _ = l.flush_partial();
    }
}

/// Sends the input descriptor to an attaching client: the pty master every
/// time; a stdin pipe once (the shim then closes its copy, so the client's
/// EOF becomes the container's).
fn hand_over_input(conn: &std::os::unix::net::UnixStream, input: &mut Option<OwnedFd>, tty: bool) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let Some(fd) = input.as_ref() else { return };
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"i")];
    let sent = sendmsg::<()>(conn.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None);
    if sent.is_ok() && !tty {
        *input = None;
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
pub fn spawn(
    netd_exe: &Path,
    dir: &Path,
    mut network: impl FnMut(i32) -> Result<(), String>,
) -> Result<Report, String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(netd_exe)
        .arg("shim")
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run the shim: {e}"))?;
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().ok_or("shim has no stdout")?;
    let mut setup_error = None;
    let mut last = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        last = line;
        match serde_json::from_str::<Report>(last.trim()) {
            Ok(Report { sandbox: Some(pid), .. }) => {
                let answer: &[u8] = match network(pid) {
                    Ok(()) => b"g",
                    Err(e) => {
                        setup_error = Some(e);
                        b"x"
                    }
                };
                if let Some(s) = stdin.as_mut() {
                    let _ = s.write_all(answer);
                }
                drop(stdin.take());
            }
            _ => break,
        }
    }
    drop(stdin);
    let _ = child.wait();
    if let Some(e) = setup_error {
        return Ok(Report { sandbox: None, pid: None, error: Some(e) });
    }
    serde_json::from_str::<Report>(last.trim()).map_err(|e| format!("shim answered {last:?}: {e}"))
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
