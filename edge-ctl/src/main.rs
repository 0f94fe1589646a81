use std::process::ExitCode;

use clap::Parser;

use edge_ctl::cli::{Cli, Command};

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`edge-ctl ... | head`) would panic.
    // The one-shot commands end quietly there, as other Unix tools do; the daemon keeps
    // ignoring it (its peers are sockets, and a closed one is an error to handle, not an end).
    // SAFETY: setting a signal's disposition to the default, before any thread is started.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        // SAFETY: as above.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    // The daemon logs what it does; the one-shot commands print it and log only problems.
    let level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match edge_ctl::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(e),
    }
}

/// Prints a command's error and gives the exit code for it.
fn fail(e: anyhow::Error) -> ExitCode {
    // Policy and serve-configuration diagnostics already read "file:line:col: error: ...";
    // print them as they are.
    let located = e.chain().find(|c| {
        c.is::<edge_ctl::policy::PolicyError>()
            || matches!(
                c.downcast_ref::<edge_ctl::serve::config::ConfigError>(),
                Some(edge_ctl::serve::config::ConfigError::Invalid(_))
            )
    });
    match located {
        Some(diagnostics) => eprintln!("{diagnostics}"),
        None => eprintln!("error: {e:#}"),
    }
    ExitCode::from(edge_ctl::cli::exit::ERROR)
}
