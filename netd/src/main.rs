//! `netd`: parse flags and the config file, install logging, run the daemon
//! (or, as `netd shim DIR`, be one container's shim).

use std::process::ExitCode;

use clap::Parser;
use netd::config::{Config, Flags, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `netd shim DIR`: the per-container process. Dispatched before anything
    // else, while this process is still single-threaded (it clones namespaces).
    let mut args = std::env::args_os();
    let first = args.nth(1);
    if first.as_deref().is_some_and(|a| a == "nsexec") {
        return match args.next().and_then(|a| a.into_string().ok()) {
            Some(json) => ExitCode::from(netd::runtime::nsexec::main(&json).clamp(0, 255) as u8),
            None => {
                eprintln!("netd: usage: netd nsexec JSON");
                ExitCode::from(2)
            }
        };
    }
    if first.is_some_and(|a| a == "shim") {
        return match args.next() {
            Some(dir) => ExitCode::from(netd::runtime::shim::main(std::path::Path::new(&dir)) as u8),
            None => {
                eprintln!("netd: usage: netd shim DIR");
                ExitCode::from(2)
            }
        };
    }
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::new(format!(
        "{},h2=warn,hyper=warn,hickory_server=warn,hickory_net=warn,hickory_proto=warn",
        config.log_level.as_str()
    ));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("netd").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(netd::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "netd failed");
            eprintln!("netd: {e}");
            ExitCode::FAILURE
        }
    }
}
