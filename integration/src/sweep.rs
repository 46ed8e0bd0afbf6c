//! Removes what killed lab runs left behind: namespaces and scratch
//! directories named `ndlab<pid>x...` whose process no longer exists.

use std::sync::Once;

use crate::lab::PREFIX;
use crate::netns;

static SWEEP: Once = Once::new();

/// The pid a lab object name embeds, if it is a lab name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

fn stale(name: &str) -> bool {
    match owner_pid(name) {
        Some(pid) => pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// Sweeps leftovers once per process; returns how many objects it removed.
pub fn sweep_once() {
    SWEEP.call_once(|| {
        let n = sweep();
        if n > 0 {
            eprintln!("lab: swept {n} leftover objects of dead lab runs");
        }
    });
}

/// Removes every stale lab namespace and directory now.
pub fn sweep() -> usize {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names.into_iter().filter(|n| stale(n)) {
            netns::delete(&name);
            removed += 1;
        }
    }
    removed += sweep_cgroups();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if stale(&name) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Kills and removes the container cgroups of dead lab nodes (each node's
/// netd puts its containers under a cgroup parent named after the node's
/// namespace); returns how many parents it removed.
fn sweep_cgroups() -> usize {
    let Ok(layout) = netd::runtime::cgroup::detect() else { return 0 };
    let mut parents = std::collections::BTreeSet::new();
    for dir in layout.cgroup("probe", "x").dirs.values() {
        let Some(own) = dir.parent().and_then(|p| p.parent()) else { continue };
        if let Ok(entries) = std::fs::read_dir(own) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if stale(&name) {
                    parents.insert(name);
                }
            }
        }
    }
    for parent in &parents {
        for dir in layout.cgroup(parent, "x").dirs.values() {
            let Some(parent_dir) = dir.parent() else { continue };
            if let Ok(entries) = std::fs::read_dir(parent_dir) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    layout.cgroup(parent, &e.file_name().to_string_lossy()).remove();
                }
            }
            let _ = std::fs::remove_dir(parent_dir);
        }
    }
    parents.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_embed_their_owner() {
        assert_eq!(owner_pid("ndlab123x0-n1"), Some(123));
        assert_eq!(owner_pid("ndlab123x4"), Some(123));
        assert_eq!(owner_pid("other"), None);
        assert_eq!(owner_pid("ndlabx1"), None);
        assert!(!stale(&format!("ndlab{}x0-u", std::process::id())));
        assert!(stale("ndlab4194304999x0-u"), "no such pid");
    }
}
