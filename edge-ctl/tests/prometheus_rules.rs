//! The Prometheus rules in contrib/prometheus pass `promtool check rules` and their unit tests
//! (`promtool test rules`): the recording rules sum a rule over the pool, and each alert fires
//! when it should and not before. promtool comes with Debian's `prometheus` package, which
//! `cargo xtask setup` installs.

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    let out =
        Command::new("promtool").args(args).current_dir(&dir).output().unwrap_or_else(|e| {
            panic!("promtool: {e}; install Debian's prometheus package (`cargo xtask setup` does)")
        });
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_are_valid() {
    promtool(&["check", "rules", "edge-ctl.rules.yml"]);
}

#[test]
fn rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "edge-ctl.rules.test.yml"]);
}
