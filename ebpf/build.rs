//! Compiles the C datapath (`bpf/*.bpf.c`) into BPF objects with clang
//! (Debian's clang and libbpf-dev headers; `cargo xtask setup` installs
//! them).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    // One program so far; more (north-south, socket LB) join this list.
    let programs: &[&str] = &["lb"];
    for prog in programs {
        let src = format!("bpf/{prog}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{prog}.bpf.o"));
        let status = Command::new("clang")
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-Ibpf", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run clang for {src} ({e}): `cargo xtask setup` installs clang and libbpf-dev")
            });
        assert!(status.success(), "clang failed on {src}");
    }
    println!("cargo:rerun-if-changed=bpf/lb.h");
}
