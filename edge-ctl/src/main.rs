use clap::Parser;

use edge_ctl::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // The daemon logs what it does; the one-shot commands print it and log only problems.
    let level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if let Err(e) = edge_ctl::cli::run(cli) {
        // Policy and serve-configuration diagnostics already read "file:line:col: error: ...";
        // print them as they are.
        // (LoadError::Invalid is transparent, so its PolicyError is not a `source` of it.)
        let located = e.chain().find(|c| {
            c.is::<edge_ctl::policy::PolicyError>()
                || matches!(
                    c.downcast_ref::<edge_ctl::policy::LoadError>(),
                    Some(edge_ctl::policy::LoadError::Invalid(_))
                )
                || matches!(
                    c.downcast_ref::<edge_ctl::serve::config::ConfigError>(),
                    Some(edge_ctl::serve::config::ConfigError::Invalid(_))
                )
        });
        match located {
            Some(diagnostics) => eprintln!("{diagnostics}"),
            None => eprintln!("error: {e:#}"),
        }
        std::process::exit(1);
    }
}
