//! Privileged tests of the container shim on its own (below the API): a real
//! busybox container in fresh namespaces, its output in the json-file log, its
//! exit code on disk, limits in its cgroup, and failures reported without
//! leftovers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::{Lab, bins, require_root};
use netd::runtime::cgroup;
use netd::runtime::logfile;
use netd::runtime::mounts::{self, Layout};
use netd::runtime::shim::{self, ExitRecord, LaunchConfig, Report};
use netd::runtime::spec::{Limits, NetworkMode};

struct Ctr {
    dir: PathBuf,
    cfg: LaunchConfig,
}

fn container(base: &Path, name: &str, args: &[&str], limits: &Limits) -> Ctr {
    let image = base.join("busybox-rootfs");
    if !image.exists() {
        netd::image::build_rootfs(Path::new(netd::image::HOST_BUSYBOX), &image).unwrap();
    }
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(dir.join(f), if f == "hostname" { format!("{name}\n") } else { String::new() }).unwrap();
    }
    let layout = Layout {
        image_rootfs: image,
        upper: dir.join("upper"),
        work: dir.join("work"),
        hostname_file: dir.join("hostname"),
        hosts_file: dir.join("hosts"),
        resolv_file: dir.join("resolv.conf"),
    };
    let cg_layout = cgroup::detect().unwrap();
    let parent = base.file_name().unwrap().to_string_lossy().into_owned();
    let cg = cg_layout.create(&parent, name, limits).unwrap();
    let cfg = LaunchConfig {
        id: name.into(),
        rootfs: dir.join("rootfs"),
        ops: mounts::plan(&layout, NetworkMode::None, &[]),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin:/sbin:/usr/bin".into(), "GREETING=hi".into()],
        cwd: "/tmp".into(),
        uid: 0,
        gid: 0,
        hostname: name.into(),
        network: NetworkMode::None,
        cgroup_dirs: cg.dirs.values().cloned().collect(),
        log_path: dir.join("container.log"),
        log_max_bytes: logfile::DEFAULT_MAX_BYTES,
        log_max_files: 2,
        tty: false,
        open_stdin: false,
    };
    std::fs::write(dir.join(shim::LAUNCH_FILE), serde_json::to_vec(&cfg).unwrap()).unwrap();
    Ctr { dir, cfg }
}

fn launch(lab: &Lab, c: &Ctr) -> Report {
    let out = lab.node(0).command(bins::netd()).arg("shim").arg(&c.dir).output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("shim said {:?} ({e})", String::from_utf8_lossy(&out.stdout)))
}

fn wait_exit(c: &Ctr) -> ExitRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(b) = std::fs::read(c.dir.join(shim::EXIT_FILE)) {
            return serde_json::from_slice(&b).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "container did not exit; shim log: {:?}",
            std::fs::read_to_string(c.dir.join("shim.log"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cleanup(base: &Path, names: &[&str]) {
    let layout = cgroup::detect().unwrap();
    let parent = base.file_name().unwrap().to_string_lossy().into_owned();
    for n in names {
        assert!(layout.cgroup(&parent, n).remove(), "cgroup of {n} removed");
    }
    for d in layout.cgroup(&parent, "x").dirs.values() {
        let _ = std::fs::remove_dir(d.parent().unwrap());
    }
}

#[test]
fn busybox_container_runs_in_its_own_namespaces() {
    if !require_root("busybox_container_runs_in_its_own_namespaces") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let base = lab.dir.join("ctrs");
    let script = "echo out $GREETING; echo err >&2; hostname; pwd; echo pid $$; set -- /proc/[0-9]*; echo $#; \
                  ls /sys/class/net; cat /etc/hostname; ls /dev; echo w > /written; cat /proc/self/cgroup | grep -c . ; exit 3";
    let c = container(&base, "ctr1", &["sh", "-c", script], &Limits::default());
    let r = launch(&lab, &c);
    assert!(r.pid.is_some(), "{r:?}");
    let exit = wait_exit(&c);
    assert_eq!((exit.code, exit.signal), (3, None));
    let log = logfile::read_all(&c.cfg.log_path, 2);
    let out: String = log.iter().filter(|e| e.stream == "stdout").map(|e| e.log.as_str()).collect();
    let err: String = log.iter().filter(|e| e.stream == "stderr").map(|e| e.log.as_str()).collect();
    assert_eq!(err, "err\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "out hi", "env reaches the process: {out}");
    assert_eq!(lines[1], "ctr1", "own UTS namespace: {out}");
    assert_eq!(lines[2], "/tmp", "working directory: {out}");
    assert_eq!(lines[3], "pid 1", "own PID namespace: {out}");
    // Counted with a glob (no fork): just sh, none of the host's processes.
    assert_eq!(lines[4], "1", "only its own processes in /proc: {out}");
    assert_eq!(lines[5], "lo", "own network namespace with only lo: {out}");
    assert_eq!(lines[6], "ctr1", "/etc/hostname prepared: {out}");
    for dev in ["null", "pts", "shm", "urandom", "zero"] {
        assert!(out.contains(&format!("{dev}\n")), "/dev/{dev}: {out}");
    }
    assert!(c.dir.join("upper/written").exists(), "writes land in the container's layer");
    assert!(!base.join("busybox-rootfs/written").exists(), "the image stays untouched");
    cleanup(&base, &["ctr1"]);
}

#[test]
fn exec_failures_are_reported_and_limits_apply() {
    if !require_root("exec_failures_are_reported_and_limits_apply") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let base = lab.dir.join("ctrs");
    let c = container(&base, "bad", &["no-such-binary"], &Limits::default());
    let r = launch(&lab, &c);
    assert_eq!(r.pid, None);
    assert_eq!(r.error.as_deref(), Some("exec: \"no-such-binary\": executable file not found in $PATH"));

    // pids.max = 5: the fork loop fails ("can't fork") and never finishes.
    let limits = Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(5) };
    let c =
        container(&base, "lim", &["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; echo all-forked"], &limits);
    let r = launch(&lab, &c);
    assert!(r.pid.is_some(), "{r:?}");
    let exit = wait_exit(&c);
    let log = logfile::read_all(&c.cfg.log_path, 2);
    let all: String = log.iter().map(|e| e.log.clone()).collect();
    assert_ne!(exit.code, 0, "{all}");
    assert!(all.contains("can't fork") && !all.contains("all-forked"), "pids limit holds: {all}");
    cleanup(&base, &["bad", "lim"]);
}
