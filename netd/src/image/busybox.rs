//! Builds the `busybox` image from the host's static busybox (Debian's
//! `busybox-static`): one binary plus a symlink per applet, and the few files a
//! container expects (/etc/passwd, /etc/group, empty mount points).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use super::ImageError;

/// Where Debian's busybox-static installs the binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Whether an ELF file is statically linked (has no PT_INTERP program header).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // only 64-bit little-endian ELF is supported
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        match bytes.get(o..o + 4) {
            Some(t) => u32::from_le_bytes(t.try_into().unwrap_or_default()) != PT_INTERP,
            None => false,
        }
    })
}

fn io(op: &str, p: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = format!("{op} {}", p.display());
    move |e| ImageError::Io(format!("{what}: {e}"))
}

/// Builds a busybox rootfs in `dest` from the static binary at `busybox`.
pub fn build_rootfs(busybox: &Path, dest: &Path) -> Result<(), ImageError> {
    let bytes = std::fs::read(busybox).map_err(io("read", busybox))?;
    if !is_static_elf(&bytes) {
        return Err(ImageError::Io(format!(
            "{} is not a static 64-bit ELF binary: install Debian's busybox-static",
            busybox.display()
        )));
    }
    for d in
        ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "var/tmp", "run"]
    {
        std::fs::create_dir_all(dest.join(d)).map_err(io("create", &dest.join(d)))?;
    }
    std::fs::set_permissions(dest.join("tmp"), std::fs::Permissions::from_mode(0o1777)).map_err(io("chmod", dest))?;
    std::fs::set_permissions(dest.join("root"), std::fs::Permissions::from_mode(0o700)).map_err(io("chmod", dest))?;
    let bin = dest.join("bin/busybox");
    std::fs::write(&bin, &bytes).map_err(io("write", &bin))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &bin))?;
    let out = Command::new(busybox).arg("--list-full").output().map_err(io("run", busybox))?;
    let list = String::from_utf8_lossy(&out.stdout);
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.contains("..")) {
        let link = dest.join(applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        symlink(&target, &link).map_err(io("link", &link))?;
    }
    let files = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hostname", ""),
        ("etc/hosts", ""),
        ("etc/resolv.conf", ""),
    ];
    for (f, content) in files {
        std::fs::write(dest.join(f), content).map_err(io("write", &dest.join(f)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&[0x7f, b'E', b'L', b'F']));
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh), "/bin/sh is dynamically linked on Debian");
        if let Ok(bb) = std::fs::read(HOST_BUSYBOX) {
            assert!(is_static_elf(&bb), "busybox-static must be static");
        }
    }

    #[test]
    fn rootfs_has_applets_and_users() {
        if !Path::new(HOST_BUSYBOX).exists() {
            assert!(std::env::var_os("CI").is_none(), "CI machines get busybox-static from `cargo xtask setup`");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        build_rootfs(Path::new(HOST_BUSYBOX), d.path()).unwrap();
        let bin = d.path().join("bin/busybox").canonicalize().unwrap();
        for applet in ["bin/sh", "usr/bin/env", "sbin/ifconfig"] {
            let link = d.path().join(applet);
            assert!(std::fs::read_link(&link).unwrap().is_relative(), "{applet}: links stay inside the rootfs");
            assert_eq!(link.canonicalize().unwrap(), bin, "{applet}");
        }
        assert!(std::fs::read_to_string(d.path().join("etc/passwd")).unwrap().starts_with("root:x:0:0"));
    }
}
