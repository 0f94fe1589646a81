//! The documentation says what the code does: docs/commands.md is every command's `--help`, as
//! clap renders it, and docs/operations.md names every drop and pass reason the kernel counts and
//! every metric the daemon serves.
//!
//! After changing a command's help, regenerate the file with
//! `UPDATE_EXPECT=1 cargo test -p edge-ctl --test docs`.

use std::path::Path;

use clap::CommandFactory;
use edge_common::{DropReason, PassReason};
use edge_ctl::cli::Cli;

/// Every command's long help, depth first, each under a heading with its full name.
fn commands_markdown() -> String {
    let mut root = Cli::command();
    root.build();
    let mut out = String::from(
        "# Commands\n\n\
         Generated from edge-ctl's own `--help` (`edge-ctl help COMMAND` prints the same); a test\n\
         fails when the two differ. Regenerate with `UPDATE_EXPECT=1 cargo test -p edge-ctl --test docs`.\n",
    );
    render(&mut root, "edge-ctl", &mut out);
    out
}

fn render(cmd: &mut clap::Command, path: &str, out: &mut String) {
    // A fixed width, so the file does not depend on the terminal (or $COLUMNS) of whoever runs it.
    let help = cmd.clone().term_width(100).render_long_help().to_string();
    out.push_str(&format!("\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end()));
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).filter(|n| n != "help").collect();
    for name in names {
        let sub = cmd.find_subcommand_mut(&name).expect("listed subcommand");
        render(sub, &format!("{path} {name}"), out);
    }
}

#[test]
fn commands_md_is_the_help() {
    expect_test::expect_file!["../../docs/commands.md"].assert_eq(&commands_markdown());
}

#[test]
fn operations_md_names_every_reason() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let text = std::fs::read_to_string(&path).expect("docs/operations.md");
    let missing: Vec<&str> = DropReason::ALL
        .iter()
        .map(|r| r.name())
        .chain(PassReason::ALL.iter().map(|r| r.name()))
        .filter(|name| !text.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "docs/operations.md does not explain these reasons: {missing:?}");
}

#[test]
fn operations_md_lists_every_metric() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let text = std::fs::read_to_string(&path).expect("docs/operations.md");
    let missing: Vec<&str> = edge_ctl::serve::metrics::METRICS
        .iter()
        .map(|(name, _, _)| *name)
        .filter(|name| !text.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "docs/operations.md's metrics reference lacks {missing:?}");
}
