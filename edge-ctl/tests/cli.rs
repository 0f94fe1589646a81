//! The command line as a script sees it, without touching the kernel: exit codes, and output into
//! a closed pipe.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

fn edge_ctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-ctl"))
}

/// Runs edge-ctl with its standard output on a pipe whose reading end is already closed, as in
/// `edge-ctl ... | head -0`.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    edge_ctl().args(args).stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    for args in [
        &["policy", "template", "lync2013-edge-hlb", "--nodes", "2"][..],
        &["policy", "plan", "--nodes", "4"],
        &["--help"],
        &["help", "attach"],
    ] {
        let out = into_closed_pipe(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "edge-ctl {args:?} into a closed pipe printed: {stderr}");
        // Ended by SIGPIPE, as `yes | true` is, or (clap's own help) by finishing; never a panic.
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
            "edge-ctl {args:?}: {:?}",
            out.status
        );
    }
}

#[test]
fn exit_codes() {
    let ok = edge_ctl().args(["policy", "plan", "--nodes", "2"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let usage = edge_ctl().args(["attach"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "usage error");
    let failed = edge_ctl().args(["policy", "check", "/nonexistent/edge-ctl/policy.toml"]).output().unwrap();
    assert_eq!(failed.status.code(), Some(1), "command error");
    assert!(String::from_utf8_lossy(&failed.stderr).starts_with("error: cannot read policy file"));
}
