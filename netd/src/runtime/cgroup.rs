//! Container cgroups, v1 or v2 as the host has them. On cgroup v2 with the
//! memory, cpu and pids controllers enabled, a container gets
//! `<root>/<parent>/<id>`. On v1 and hybrid hosts (such as the project's
//! machines, whose v2 hierarchy has no controllers) it gets
//! `<mount>/<netd's own cgroup>/<parent>/<id>` in each of the memory, cpu and
//! pids hierarchies, so containers stay inside whatever netd itself is
//! accounted to. A requested limit whose controller is missing is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::spec::Limits;

/// CFS period netd uses for CPU quotas, in microseconds (Docker's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// A cgroup failure.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{limit} limit requested, but this host has no {controller} cgroup controller netd can use")]
    NoController { limit: &'static str, controller: &'static str },
    #[error("cgroup {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the host's cgroup layout: {0}")]
    Layout(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { op, path, source }
}

/// The host's cgroup layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Unified hierarchy at `root` with the controllers netd needs.
    V2 { root: PathBuf },
    /// Controller name -> directory where netd's own cgroup is in it.
    V1 { own: BTreeMap<String, PathBuf> },
}

/// Parses /proc/self/mountinfo and /proc/self/cgroup into a layout, given
/// the controllers the v2 root offers (`cgroup.controllers`).
pub fn parse_layout(mountinfo: &str, self_cgroup: &str, v2_controllers: &str) -> Result<Layout, CgroupError> {
    let mut v2_root = None;
    let mut v1_mounts: BTreeMap<String, PathBuf> = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mount_point = left.split_whitespace().nth(4).unwrap_or("");
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let super_opts = r.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" if v2_root.is_none() => v2_root = Some(PathBuf::from(mount_point)),
            "cgroup" => {
                for opt in super_opts.split(',') {
                    if matches!(opt, "memory" | "cpu" | "pids") {
                        v1_mounts.insert(opt.to_owned(), PathBuf::from(mount_point));
                    }
                }
            }
            _ => {}
        }
    }
    let wanted = ["memory", "cpu", "pids"];
    let v2_ok = wanted.iter().all(|c| v2_controllers.split_whitespace().any(|x| x == *c));
    if let Some(root) = &v2_root
        && v1_mounts.is_empty()
        && v2_ok
    {
        return Ok(Layout::V2 { root: root.clone() });
    }
    let mut own = BTreeMap::new();
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        for c in ctrls.split(',') {
            if let Some(mount) = v1_mounts.get(c) {
                own.insert(c.to_owned(), mount.join(path.trim_start_matches('/')));
            }
        }
    }
    if own.is_empty() {
        return Err(CgroupError::Layout("neither cgroup v2 with memory/cpu/pids nor v1 hierarchies found".into()));
    }
    // Hybrid hosts: containers join the v2 hierarchy too (no controllers
    // there), where the load balancer's socket programs attach.
    if let Some(root) = v2_root {
        let path = self_cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
        own.insert(UNIFIED.to_owned(), root.join(path.trim_start_matches('/')));
    }
    Ok(Layout::V1 { own })
}

/// The key of the v2 hierarchy in [`Cgroup::dirs`] (also on hybrid hosts).
pub const UNIFIED: &str = "unified";

impl Layout {
    /// The v2 directory of `parent` (where containers' cgroups go), if
    /// the host has a v2 hierarchy.
    pub fn unified_parent(&self, parent: &str) -> Option<PathBuf> {
        match self {
            Layout::V2 { root } => Some(root.join(parent)),
            Layout::V1 { own } => own.get(UNIFIED).map(|u| u.join(parent)),
        }
    }
}

/// Reads the running host's layout.
pub fn detect() -> Result<Layout, CgroupError> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| CgroupError::Layout(format!("{p}: {e}")));
    let mountinfo = read("/proc/self/mountinfo")?;
    let cg = read("/proc/self/cgroup")?;
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    parse_layout(&mountinfo, &cg, &v2)
}

/// One container's cgroup (one directory per hierarchy on v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Controller (or "unified") -> directory.
    pub dirs: BTreeMap<String, PathBuf>,
}

impl Layout {
    /// The cgroup of container `id` under `parent`, without creating it.
    pub fn cgroup(&self, parent: &str, id: &str) -> Cgroup {
        let dirs = match self {
            Layout::V2 { root } => [("unified".to_owned(), root.join(parent).join(id))].into(),
            Layout::V1 { own } => own.iter().map(|(c, p)| (c.clone(), p.join(parent).join(id))).collect(),
        };
        Cgroup { dirs }
    }

    /// The writes that enforce `limits`: (controller, file, value).
    pub fn limit_writes(&self, limits: &Limits) -> Result<Vec<(&'static str, &'static str, String)>, CgroupError> {
        let has = |c: &str| match self {
            Layout::V2 { .. } => true,
            Layout::V1 { own } => own.contains_key(c),
        };
        let v2 = matches!(self, Layout::V2 { .. });
        let mut w = Vec::new();
        if let Some(m) = limits.memory_bytes {
            if !has("memory") {
                return Err(CgroupError::NoController { limit: "memory", controller: "memory" });
            }
            w.push(if v2 {
                ("memory", "memory.max", m.to_string())
            } else {
                ("memory", "memory.limit_in_bytes", m.to_string())
            });
        }
        if let Some(n) = limits.nano_cpus {
            if !has("cpu") {
                return Err(CgroupError::NoController { limit: "cpu", controller: "cpu" });
            }
            let quota = (n * CPU_PERIOD_US / 1_000_000_000).max(1000);
            if v2 {
                w.push(("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            } else {
                w.push(("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                w.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
            }
        }
        if let Some(p) = limits.pids {
            if !has("pids") {
                return Err(CgroupError::NoController { limit: "pids", controller: "pids" });
            }
            w.push(("pids", "pids.max", p.to_string()));
        }
        Ok(w)
    }

    /// Creates the cgroup of `id` and applies `limits`. On any failure,
    /// removes what it created: no stray cgroup is left.
    pub fn create(&self, parent: &str, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let writes = self.limit_writes(limits)?;
        let cg = self.cgroup(parent, id);
        let result = (|| {
            if let Layout::V2 { root } = self {
                let p = root.join(parent);
                std::fs::create_dir_all(&p).map_err(io("create", &p))?;
                let ctl = p.join("cgroup.subtree_control");
                std::fs::write(&ctl, "+memory +cpu +pids").map_err(io("enable controllers", &ctl))?;
            }
            for dir in cg.dirs.values() {
                std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            }
            for (ctrl, file, value) in &writes {
                let dir = cg
                    .dirs
                    .get(*ctrl)
                    .or_else(|| cg.dirs.get("unified"))
                    .ok_or(CgroupError::NoController { limit: ctrl, controller: ctrl })?;
                let f = dir.join(file);
                std::fs::write(&f, value).map_err(io("write limit", &f))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }
}

impl Cgroup {
    /// Moves `pid` into every hierarchy of this cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in self.dirs.values() {
            let f = dir.join("cgroup.procs");
            std::fs::write(&f, pid.to_string()).map_err(io("add process", &f))?;
        }
        Ok(())
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .dirs
            .values()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills what is left inside and removes the directories (best effort;
    /// returns whether everything is gone).
    pub fn remove(&self) -> bool {
        for _ in 0..50 {
            let pids = self.pids();
            for p in &pids {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGKILL);
            }
            if pids.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut ok = true;
        for dir in self.dirs.values() {
            if dir.exists() && std::fs::remove_dir(dir).is_err() {
                ok = false;
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
40 35 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
41 35 0:36 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpu
42 35 0:37 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
";
    const HYBRID_SELF: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_hosts_use_v1_under_own_cgroup() {
        let l = parse_layout(HYBRID_MOUNTINFO, HYBRID_SELF, "").unwrap();
        let cg = l.cgroup("netd", "c1");
        assert_eq!(cg.dirs["memory"], PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/netd/c1"));
        assert_eq!(cg.dirs["pids"], PathBuf::from("/sys/fs/cgroup/pids/netd/c1"));
        // The v2 hierarchy too (socket-level load balancing attaches there).
        assert_eq!(cg.dirs["unified"], PathBuf::from("/sys/fs/cgroup/unified/netd/c1"));
        assert_eq!(l.unified_parent("netd"), Some(PathBuf::from("/sys/fs/cgroup/unified/netd")));
        let w = l
            .limit_writes(&Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(10) })
            .unwrap();
        assert!(w.contains(&("memory", "memory.limit_in_bytes", (64u64 << 20).to_string())));
        assert!(w.contains(&("cpu", "cpu.cfs_quota_us", "50000".to_string())));
        assert!(w.contains(&("pids", "pids.max", "10".to_string())));
    }

    #[test]
    fn unified_hosts_use_v2() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n";
        let l = parse_layout(mi, "0::/user.slice\n", "cpuset cpu io memory pids").unwrap();
        assert_eq!(l, Layout::V2 { root: "/sys/fs/cgroup".into() });
        let w = l
            .limit_writes(&Limits { memory_bytes: Some(1 << 30), nano_cpus: Some(1_500_000_000), pids: None })
            .unwrap();
        assert_eq!(
            w,
            [("memory", "memory.max", (1u64 << 30).to_string()), ("cpu", "cpu.max", "150000 100000".to_string())]
        );
    }

    #[test]
    fn missing_controller_is_an_error_not_a_silent_skip() {
        let mi = "40 35 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let l = parse_layout(mi, "4:memory:/\n", "").unwrap();
        let err = l.limit_writes(&Limits { pids: Some(5), ..Default::default() }).unwrap_err().to_string();
        assert_eq!(err, "pids limit requested, but this host has no pids cgroup controller netd can use");
        assert!(l.limit_writes(&Limits::default()).unwrap().is_empty());
        assert!(parse_layout("", "", "").is_err());
    }

    /// Privileged: creates a real cgroup with limits, puts a process in it,
    /// and removes it again (processes killed, directories gone).
    #[test]
    fn real_cgroup_lifecycle() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "privileged test in CI without root");
            return;
        }
        let layout = detect().unwrap();
        let parent = format!("netd-unittest-{}", std::process::id());
        let limits = Limits { memory_bytes: Some(32 << 20), nano_cpus: Some(250_000_000), pids: Some(8) };
        let cg = layout.create(&parent, "c1", &limits).unwrap();
        for (ctrl, file, value) in layout.limit_writes(&limits).unwrap() {
            let dir = cg.dirs.get(ctrl).or_else(|| cg.dirs.get("unified")).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap().trim(), value, "{file}");
        }
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        cg.add(child.id()).unwrap();
        assert_eq!(cg.pids(), [child.id()]);
        assert!(cg.remove(), "cgroup removed");
        assert!(!child.wait().unwrap().success(), "the process inside was killed");
        for dir in cg.dirs.values() {
            assert!(!dir.exists());
            let _ = std::fs::remove_dir(dir.parent().unwrap());
        }
    }
}
