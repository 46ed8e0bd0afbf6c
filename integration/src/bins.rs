//! Finds the binaries the lab runs: netd and netctl from this workspace's
//! target directory, and the docker client (PATH, or where `cargo xtask setup`
//! extracted it).

use std::path::{Path, PathBuf};

/// Where `cargo xtask setup` puts the docker client when none is on PATH.
pub const TOOLS_DIR: &str = "/usr/local/lib/netd-tools/bin";

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NETD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

fn workspace_bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the workspace first (`cargo build --workspace`; `cargo xtask test` does it), or set NETD_BIN_DIR",
        p.display()
    );
    p
}

/// The netd daemon binary.
pub fn netd() -> PathBuf {
    workspace_bin("netd")
}

/// The netctl client binary.
pub fn netctl() -> PathBuf {
    workspace_bin("netctl")
}

/// The docker client, if the machine has one (`NETD_DOCKER` overrides).
pub fn docker() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETD_DOCKER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(PathBuf::from(TOOLS_DIR)))
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}
