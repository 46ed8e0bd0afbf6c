//! The netd lab: nodes as network namespaces on one machine, with one netd
//! each, for scenario tests, the demo and benchmarks.
//!
//! A lab is one "underlay" namespace holding a bridge, plus one namespace per
//! node joined to it by a veth, addressed in 198.18.0.0/24 (the benchmarking
//! range, RFC 2544). Nothing is ever created or changed in the root network
//! namespace: links are made inside lab namespaces only (`ip -n`). Every object
//! is named `ndlab<pid>x<seq>...`; [`Lab`]'s guard removes it all on drop (also
//! on panic), and [`sweep`] removes what a killed run left behind.

pub mod bins;
pub mod lab;
pub mod lbtopo;
pub mod netns;
pub mod node;
pub mod probe;
pub mod sweep;

pub use lab::{Lab, LabError};
pub use node::Node;

/// Whether a privileged test can run here. Without root it is skipped with a
/// message, except in CI (`CI` set), where that is a failure.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!("{test}: privileged lab test needs root, and CI is set: privileged tests must run in CI");
    }
    eprintln!("SKIPPED {test}: privileged lab test needs root (run as root, or via `cargo xtask test`)");
    false
}

/// Waits for `child`'s output for at most `limit`; past it the child is
/// killed and the test fails with what it printed, instead of hanging CI.
pub fn output_within(child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("collect child output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx.recv().expect("child reaped").expect("collect child output");
            panic!(
                "child still running after {limit:?}, killed; it printed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
