use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = edge_ctl::cli::Cli::parse();
    if let Err(e) = edge_ctl::cli::run(cli) {
        // Policy diagnostics already read "file:line:col: error: ..."; print them as they are.
        match e.chain().find_map(|c| c.downcast_ref::<edge_ctl::policy::PolicyError>()) {
            Some(diagnostics) => eprintln!("{diagnostics}"),
            None => eprintln!("error: {e:#}"),
        }
        std::process::exit(1);
    }
}
