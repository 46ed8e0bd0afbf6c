//! `netd`: parse flags and the config file, install logging, run the daemon.

use std::process::ExitCode;

use clap::Parser;
use netd::config::{Config, Flags, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::new(format!("{},h2=warn,hyper=warn", config.log_level.as_str()));
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
