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
