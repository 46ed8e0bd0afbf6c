//! `cargo xtask setup|demo|test|bench|lab`: the project's developer tasks.
//! `setup` installs what a fresh Debian 12 machine lacks (idempotent, quiet);
//! `demo` and `test` run it first, so the README's two commands work as root
//! on a new machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Debian packages the build, the lab and the tests use.
const APT_PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "iproute2",
    "iputils-ping",
    "procps",
    "util-linux",
    "git",
    "busybox-static",
    "nftables",
    "containernetworking-plugins",
    "serf",
    "dnsutils",
    "dnsperf",
    "clang",
    "libbpf-dev",
    "bpftool",
];
/// Where the docker client goes when the machine has none on PATH (the lab's
/// `bins::docker` looks there too).
const TOOLS_DIR: &str = "/usr/local/lib/netd-tools/bin";

#[derive(Parser)]
#[command(about = "netd developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (apt packages, docker client)
    Setup,
    /// Run the demo cluster (a lab of netd nodes in network namespaces)
    Demo {
        /// Arguments for netd-demo (e.g. --nodes 5 --duration 60)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// fmt check, clippy -D warnings, unit tests and privileged lab tests
    Test {
        /// Arguments passed to `cargo test` after `--` (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark (release build): api, runtime, attach, bridge, gossip, dns, lb
    Bench {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Lab maintenance: `sweep` removes leftovers of killed lab runs
    Lab { action: String },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn quiet(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn on_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(bin).is_file())
}

fn apt() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn setup() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let need_docker = !on_path("docker") && !Path::new(TOOLS_DIR).join("docker").is_file();
    let need_components =
        Command::new("cargo").args(["clippy", "--version"]).output().map(|o| !o.status.success()).unwrap_or(true)
            || Command::new("cargo").args(["fmt", "--version"]).output().map(|o| !o.status.success()).unwrap_or(true);
    if missing.is_empty() && !need_docker && !need_components {
        return Ok(());
    }
    if need_components {
        eprintln!("setup: adding rustfmt and clippy");
        quiet(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    }
    if missing.is_empty() && !need_docker {
        return Ok(());
    }
    if !is_root() {
        bail!("setup needs root to install {missing:?}{}", if need_docker { " and the docker client" } else { "" });
    }
    eprintln!("setup: apt-get update");
    quiet(apt().args(["-qq", "update"]))?;
    if !missing.is_empty() {
        eprintln!("setup: installing {}", missing.join(" "));
        quiet(apt().args(["-qq", "install", "-y", "--no-install-recommends"]).args(&missing))?;
    }
    if need_docker {
        install_docker_client()?;
    }
    Ok(())
}

/// Debian 12 ships the docker client only inside `docker.io`, whose install
/// would also install and start dockerd (which rewrites the host firewall).
/// So: download the package and extract just the client binary.
fn install_docker_client() -> Result<()> {
    eprintln!("setup: extracting the docker client from Debian's docker.io package into {TOOLS_DIR}");
    let tmp = std::env::temp_dir().join(format!("netd-setup-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = (|| {
        quiet(apt().current_dir(&tmp).args(["-qq", "download", "docker.io"]))?;
        let deb = std::fs::read_dir(&tmp)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download docker.io produced no .deb")?;
        let x = tmp.join("x");
        quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
        std::fs::create_dir_all(TOOLS_DIR)?;
        std::fs::copy(x.join("usr/bin/docker"), Path::new(TOOLS_DIR).join("docker")).context("copy docker client")?;
        anyhow::Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn build_bins(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--quiet", "--workspace", "--bins"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root().join("target").join(if release { "release" } else { "debug" }))
}

/// Runs `cargo test`, echoing its output, then prints one closing line with
/// the totals of every test binary (`summary: N passed, N failed, N ignored`).
fn cargo_test(args: &[String]) -> Result<()> {
    use std::io::BufRead;
    let mut child = cargo()
        .args(["test", "--workspace", "--", "--test-threads=2"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (w.next(), w.next()) else { continue };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Demo { args } => {
            setup()?;
            let bin = build_bins(false)?;
            run(Command::new(bin.join("netd-demo")).args(args))
        }
        Task::Test { args } => {
            setup()?;
            eprintln!("== cargo fmt --check");
            run(cargo().args(["fmt", "--all", "--check"]))?;
            eprintln!("== cargo clippy --all-targets -D warnings");
            run(cargo().args(["clippy", "--quiet", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
            eprintln!("== cargo build (binaries the lab runs)");
            build_bins(false)?;
            eprintln!("== cargo test (unit, fake-backed and privileged lab tests)");
            cargo_test(&args)
        }
        Task::Bench { name, args } => {
            setup()?;
            let known = ["api", "runtime", "attach", "bridge", "gossip", "dns", "lb"];
            if !known.contains(&name.as_str()) {
                bail!("unknown benchmark {name:?}; known: {}", known.join(", "));
            }
            if name == "runtime" {
                // The peers this benchmark compares against (Debian's runc and crun).
                let missing: Vec<&str> = ["runc", "crun"].into_iter().filter(|p| !installed(p)).collect();
                if !missing.is_empty() {
                    eprintln!("setup: installing {} for the runtime benchmark", missing.join(" "));
                    quiet(apt().args(["-qq", "install", "-y", "--no-install-recommends"]).args(&missing))?;
                }
            }
            if name == "dns" && !installed("unbound") {
                // The peer of the DNS benchmark. policy-rc.d keeps the
                // package from starting a system unbound on the host.
                eprintln!("setup: installing unbound for the dns benchmark");
                let policy = Path::new("/usr/sbin/policy-rc.d");
                let ours = !policy.exists();
                if ours {
                    std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
                    std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
                }
                let r = quiet(apt().args(["-qq", "install", "-y", "--no-install-recommends", "unbound"]));
                if ours {
                    let _ = std::fs::remove_file(policy);
                }
                r?;
            }
            let bin = build_bins(true)?;
            if name == "gossip" {
                // The simulator first (virtual time, in one process), then the lab.
                run(&mut Command::new(bin.join("gossip-sim")))?;
            }
            run(Command::new(bin.join("netd-bench")).arg(&name).args(args))
        }
        Task::Lab { action } => match action.as_str() {
            "sweep" => {
                let bin = build_bins(false)?;
                run(Command::new(bin.join("netd-demo")).arg("--sweep"))
            }
            other => bail!("unknown lab action {other:?}; known: sweep"),
        },
    }
}
