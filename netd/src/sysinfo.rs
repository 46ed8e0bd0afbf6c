//! Facts about the host netd runs on, for `/info` and `/version`. Read once at
//! start from uname, /proc and /etc/os-release.

/// Host facts.
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub kernel_version: String,
    /// Architecture as Go names it (`amd64`, `arm64`), as the Docker API does.
    pub arch: String,
    pub operating_system: String,
    pub os_version: String,
    pub ncpu: usize,
    pub mem_total: u64,
    /// "1" on cgroup v1 or hybrid hosts, "2" on unified hosts.
    pub cgroup_version: String,
}

impl HostFacts {
    /// Reads the facts of the running host.
    pub fn read() -> HostFacts {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref().map(|u| f(u).to_string_lossy().into_owned()).unwrap_or_default()
        };
        let machine = field(|u| u.machine());
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        HostFacts {
            hostname: field(|u| u.nodename()),
            kernel_version: field(|u| u.release()),
            arch: go_arch(&machine).to_owned(),
            operating_system: os_release_field(&os_release, "PRETTY_NAME").unwrap_or_else(|| "Linux".into()),
            os_version: os_release_field(&os_release, "VERSION_ID").unwrap_or_default(),
            ncpu: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total: std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m)).unwrap_or(0),
            cgroup_version: if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" }
                .to_owned(),
        }
    }
}

/// Maps `uname -m` to Go's GOARCH names.
pub fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" | "i386" => "386",
        "armv7l" => "arm",
        other => other,
    }
}

/// A `KEY=value` field of os-release, unquoted.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(|v| v.trim().trim_matches('"').to_owned())
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_files() {
        assert_eq!(mem_total("MemTotal:       24596936 kB\nMemFree: 1 kB\n"), Some(24596936 * 1024));
        assert_eq!(mem_total("garbage"), None);
        let osr = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n";
        assert_eq!(os_release_field(osr, "PRETTY_NAME").as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_release_field(osr, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(go_arch("x86_64"), "amd64");
    }

    #[test]
    fn reads_this_host() {
        let h = HostFacts::read();
        assert!(!h.kernel_version.is_empty());
        assert!(h.ncpu >= 1);
        assert!(h.mem_total > 0);
    }
}
