//! One lab node: its namespace, its directories, its netd, and helpers to run
//! netctl, docker or any command inside it.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::bins;
use crate::lab::LabError;
use crate::netns::Netns;

/// A node of a lab.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    /// Host name (inside netd's UTS namespace), e.g. `node1`.
    pub name: String,
    pub netns: Netns,
    /// Underlay address.
    pub addr: Ipv4Addr,
    /// Scratch directory holding this node's roots, socket and log.
    pub dir: PathBuf,
    netd: Mutex<Option<Child>>,
}

impl Node {
    pub(crate) fn new(index: usize, name: String, netns: Netns, addr: Ipv4Addr, dir: PathBuf) -> Node {
        Node { index, name, netns, addr, dir, netd: Mutex::new(None) }
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }
    pub fn bpf_root(&self) -> PathBuf {
        self.dir.join("bpf")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("netd.sock")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("netd.log")
    }
    /// `unix://...` address of this node's API.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The flags every lab netd gets: its own roots and socket.
    pub fn netd_args(&self) -> Vec<String> {
        vec![
            "--data-root".into(),
            self.data_root().display().to_string(),
            "--exec-root".into(),
            self.exec_root().display().to_string(),
            "--bpf-root".into(),
            self.bpf_root().display().to_string(),
            "-H".into(),
            self.host(),
            "--cgroup-parent".into(),
            self.cgroup_parent(),
        ]
    }

    /// The cgroup parent this node's containers live under (removed with the lab).
    pub fn cgroup_parent(&self) -> String {
        self.netns.name.clone()
    }

    /// Kills and removes every container cgroup of this node (containers
    /// outlive netd by design, so the lab must end them itself).
    pub(crate) fn remove_cgroups(&self) {
        let Ok(layout) = netd::runtime::cgroup::detect() else { return };
        let parent = self.cgroup_parent();
        for dir in layout.cgroup(&parent, "x").dirs.values() {
            let Some(parent_dir) = dir.parent() else { continue };
            if let Ok(entries) = std::fs::read_dir(parent_dir) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    layout.cgroup(&parent, &name).remove();
                }
            }
            let _ = std::fs::remove_dir(parent_dir);
        }
    }

    /// A netd command in this node (own netns, UTS and mount namespaces),
    /// logging to the node's log file, with `args` after the standard flags.
    pub fn netd_command(&self, args: &[&str]) -> Result<Command, LabError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| LabError::Io { op: "open netd log".into(), source: e })?;
        let log2 = log.try_clone().map_err(|e| LabError::Io { op: "dup netd log".into(), source: e })?;
        let mut cmd = self.netns.command_with(bins::netd(), Some(&self.name));
        cmd.args(self.netd_args()).args(args).stdin(Stdio::null()).stdout(log).stderr(log2);
        Ok(cmd)
    }

    /// Starts netd and waits until it answers `/_ping` (10 s at most).
    pub fn start_netd(&self, args: &[&str]) -> Result<(), LabError> {
        let mut guard = self.netd.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_some() {
            return Err(LabError::Netd(format!("netd already running on {}", self.name)));
        }
        let mut child =
            self.netd_command(args)?.spawn().map_err(|e| LabError::Io { op: "spawn netd".into(), source: e })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| LabError::Io { op: "wait netd".into(), source: e })? {
                return Err(LabError::Netd(format!(
                    "netd on {} exited during start ({status}); log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                )));
            }
            if self.ping() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout {
                    what: format!("netd on {} answering /_ping", self.name),
                    secs: 10,
                    detail: format!("; log tail:\n{}", self.log_tail(20)),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *guard = Some(child);
        Ok(())
    }

    /// The pid of this node's netd, if running.
    pub fn netd_pid(&self) -> Option<u32> {
        self.netd.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Child::id)
    }

    /// Sends `sig` to netd and waits (10 s at most) for it to exit.
    pub fn signal_netd(&self, sig: Signal) -> Result<ExitStatus, LabError> {
        let mut guard = self.netd.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = guard.take().ok_or_else(|| LabError::Netd(format!("netd is not running on {}", self.name)))?;
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().map_err(|e| LabError::Io { op: "wait netd".into(), source: e })? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout {
                    what: format!("netd on {} exiting after {sig}", self.name),
                    secs: 10,
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop (SIGTERM).
    pub fn stop_netd(&self) -> Result<ExitStatus, LabError> {
        self.signal_netd(Signal::SIGTERM)
    }

    /// Crash (SIGKILL).
    pub fn kill_netd(&self) -> Result<ExitStatus, LabError> {
        self.signal_netd(Signal::SIGKILL)
    }

    pub(crate) fn stop_netd_quietly(&self) {
        if self.netd_pid().is_some() {
            let _ = self.stop_netd();
        }
    }

    /// Whether the API answers `GET /_ping` with 200 right now.
    pub fn ping(&self) -> bool {
        self.http("GET", "/_ping", None).is_ok_and(|(status, _)| status == 200)
    }

    /// One raw HTTP/1.0 request on the socket: (status, body).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// A command running inside this node's network namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.netns.command(program)
    }

    /// Runs netctl against this node's netd.
    pub fn netctl(&self, args: &[&str]) -> Output {
        self.command(bins::netctl()).arg("-H").arg(self.host()).args(args).output().expect("run netctl")
    }

    /// Runs the docker client against this node's netd, if there is one.
    pub fn docker(&self, args: &[&str]) -> Option<Output> {
        let docker = bins::docker()?;
        let cfg = self.dir.join("docker-config");
        let out = self
            .command(docker)
            .env("DOCKER_CONFIG", cfg)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("run docker");
        Some(out)
    }

    /// Runs `sh -c SCRIPT` inside the node's network namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.command("sh").arg("-c").arg(script).output().expect("run sh")
    }

    /// The node's netd log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the netd log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub(crate) fn dump_log_tail(&self, n: usize) {
        eprintln!("--- netd log of {} ({}) ---\n{}\n---", self.name, self.netns.name, self.log_tail(n));
    }
}
