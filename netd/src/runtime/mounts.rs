//! The container's filesystem as a plan: [`plan`] turns a container's mounts
//! into an ordered list of [`MountOp`]s (overlay root, /proc, /sys, a minimal
//! /dev, the /etc files netd writes, then the user's binds, volumes and
//! tmpfs), all relative to the new root. The child process executes the plan
//! after entering its mount namespace and before `pivot_root`; the plan itself
//! is pure and tested without privileges.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spec::{MountKind, NetworkMode};

/// One step of building the root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountOp {
    /// overlay(lower=image rootfs, upper, work) on the merged root.
    Overlay { lower: PathBuf, upper: PathBuf, work: PathBuf },
    /// A fresh filesystem of `fstype` at `target` (inside the root).
    Fs { fstype: String, target: String, options: String, flags: Flags },
    /// Bind `source` (host path) onto `target` (inside the root).
    Bind { source: PathBuf, target: String, read_only: bool, file: bool },
    /// A symlink inside the root.
    Symlink { link: String, to: String },
}

/// Mount flags the plan uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub read_only: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub nodev: bool,
}

const NOSUID_NOEXEC_NODEV: Flags = Flags { read_only: false, nosuid: true, noexec: true, nodev: true };

/// A mount whose host side netd has resolved (volume names to directories).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedMount {
    pub kind: MountKind,
    /// Host path (bind, volume); unused for tmpfs.
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_size: u64,
    /// Whether the source is a file (bind target must be a file too).
    pub file: bool,
}

/// Paths of one container's state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub image_rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` written by netd.
    pub hostname_file: PathBuf,
    pub hosts_file: PathBuf,
    pub resolv_file: PathBuf,
}

/// Host devices a container gets in its /dev (bind-mounted, as rootless
/// runtimes do; mknod would need CAP_MKNOD in the container's user ns).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the plan for a container.
pub fn plan(layout: &Layout, network: NetworkMode, mounts: &[ResolvedMount]) -> Vec<MountOp> {
    let mut ops = vec![MountOp::Overlay {
        lower: layout.image_rootfs.clone(),
        upper: layout.upper.clone(),
        work: layout.work.clone(),
    }];
    ops.push(MountOp::Fs {
        fstype: "proc".into(),
        target: "/proc".into(),
        options: String::new(),
        flags: NOSUID_NOEXEC_NODEV,
    });
    match network {
        // A new network namespace may mount its own sysfs.
        NetworkMode::None | NetworkMode::Bridge => ops.push(MountOp::Fs {
            fstype: "sysfs".into(),
            target: "/sys".into(),
            options: String::new(),
            flags: Flags { read_only: true, ..NOSUID_NOEXEC_NODEV },
        }),
        NetworkMode::Host => {
            ops.push(MountOp::Bind { source: "/sys".into(), target: "/sys".into(), read_only: true, file: false })
        }
    }
    ops.push(MountOp::Fs {
        fstype: "tmpfs".into(),
        target: "/dev".into(),
        options: "mode=755,size=65536k".into(),
        flags: Flags { nosuid: true, ..Default::default() },
    });
    for d in DEVICES {
        ops.push(MountOp::Bind {
            source: format!("/dev/{d}").into(),
            target: format!("/dev/{d}"),
            read_only: false,
            file: true,
        });
    }
    ops.push(MountOp::Fs {
        fstype: "devpts".into(),
        target: "/dev/pts".into(),
        options: "newinstance,ptmxmode=0666,mode=0620".into(),
        flags: Flags { nosuid: true, noexec: true, ..Default::default() },
    });
    ops.push(MountOp::Fs {
        fstype: "tmpfs".into(),
        target: "/dev/shm".into(),
        options: "mode=1777,size=65536k".into(),
        flags: NOSUID_NOEXEC_NODEV,
    });
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink { link: link.into(), to: to.into() });
    }
    for (src, target) in [
        (&layout.hostname_file, "/etc/hostname"),
        (&layout.hosts_file, "/etc/hosts"),
        (&layout.resolv_file, "/etc/resolv.conf"),
    ] {
        ops.push(MountOp::Bind { source: src.clone(), target: target.into(), read_only: false, file: true });
    }
    // Shallow targets first, so a mount at /a/b is not hidden by one at /a.
    let mut user: Vec<&ResolvedMount> = mounts.iter().collect();
    user.sort_by_key(|m| m.target.matches('/').count());
    for m in user {
        ops.push(match m.kind {
            MountKind::Tmpfs => MountOp::Fs {
                fstype: "tmpfs".into(),
                target: m.target.clone(),
                options: if m.tmpfs_size > 0 { format!("size={}", m.tmpfs_size) } else { String::new() },
                flags: Flags { read_only: m.read_only, nosuid: true, nodev: true, noexec: false },
            },
            MountKind::Bind | MountKind::Volume => MountOp::Bind {
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                file: m.file,
            },
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            image_rootfs: "/img/rootfs".into(),
            upper: "/c/upper".into(),
            work: "/c/work".into(),
            hostname_file: "/c/hostname".into(),
            hosts_file: "/c/hosts".into(),
            resolv_file: "/c/resolv.conf".into(),
        }
    }

    fn targets(ops: &[MountOp]) -> Vec<String> {
        ops.iter()
            .filter_map(|o| match o {
                MountOp::Fs { target, .. } | MountOp::Bind { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn root_then_system_then_user_mounts() {
        let user = vec![
            ResolvedMount {
                kind: MountKind::Bind,
                source: "/srv/a/b".into(),
                target: "/data/sub".into(),
                read_only: true,
                tmpfs_size: 0,
                file: false,
            },
            ResolvedMount {
                kind: MountKind::Volume,
                source: "/vol/_data".into(),
                target: "/data".into(),
                read_only: false,
                tmpfs_size: 0,
                file: false,
            },
            ResolvedMount {
                kind: MountKind::Tmpfs,
                source: PathBuf::new(),
                target: "/run/t".into(),
                read_only: false,
                tmpfs_size: 4096,
                file: false,
            },
        ];
        let ops = plan(&layout(), NetworkMode::None, &user);
        assert!(matches!(&ops[0], MountOp::Overlay { lower, .. } if lower == &PathBuf::from("/img/rootfs")));
        let t = targets(&ops);
        assert_eq!(&t[..3], ["/proc", "/sys", "/dev"]);
        assert!(t.contains(&"/dev/null".to_owned()) && t.contains(&"/dev/pts".to_owned()));
        let data = t.iter().position(|x| x == "/data").unwrap();
        let sub = t.iter().position(|x| x == "/data/sub").unwrap();
        assert!(data < sub, "parents before children: {t:?}");
        assert!(t.iter().position(|x| x == "/etc/resolv.conf").unwrap() < data);
        assert!(ops.contains(&MountOp::Fs {
            fstype: "tmpfs".into(),
            target: "/run/t".into(),
            options: "size=4096".into(),
            flags: Flags { read_only: false, nosuid: true, nodev: true, noexec: false }
        }));
    }

    #[test]
    fn host_network_binds_sysfs_instead_of_mounting_it() {
        let ops = plan(&layout(), NetworkMode::Host, &[]);
        assert!(ops.contains(&MountOp::Bind {
            source: "/sys".into(),
            target: "/sys".into(),
            read_only: true,
            file: false
        }));
        assert!(!ops.iter().any(|o| matches!(o, MountOp::Fs { fstype, .. } if fstype == "sysfs")));
    }
}
