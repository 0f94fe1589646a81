//! `edge-assets DIR`: the files a package installs beside the binary that are generated from its
//! command line: man pages (edge-ctl(8) and edge-ctl-SUBCOMMAND(8), with clap_mangen) under
//! DIR/man8, and shell completions (clap_complete) for bash, zsh and fish under DIR/completions.
//! `cargo xtask deb` runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use edge_ctl::cli::Cli;

fn man(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).section("8").manual("edge-ctl manual").render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.8")), out)
}

fn run(dir: &Path) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let man8 = dir.join("man8");
    std::fs::create_dir_all(&man8)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("edge-ctl-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).display_name(name);
        man(page, &man8)?;
    }
    man(cmd.clone(), &man8)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "edge-ctl", &completions)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: edge-assets DIR");
        return ExitCode::from(2);
    };
    match run(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-assets: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
