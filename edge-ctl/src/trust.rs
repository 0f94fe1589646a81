//! Whether a file an admin points edge-ctl at can be trusted: whoever can change the policy
//! (or `serve`'s configuration, which names the policies) can change the firewall.
//!
//! The rule is the one sshd's StrictModes applies to `authorized_keys`: the file and every
//! directory above it, up to `/`, must be owned by root or by the user running edge-ctl, and
//! writable by nobody else. One relaxation, stated in docs/decisions.md: a directory with the
//! sticky bit (`/tmp`) may be writable by others, since they cannot rename or remove what they do
//! not own in it. Symbolic links are followed, and both the path as given and where it leads are
//! checked, so a link in a safe directory cannot point into an unsafe one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a file is not trusted: the path at fault, what is wrong, and the command that fixes it.
#[derive(Debug, thiserror::Error)]
#[error("{what} {file} is not safe: {problem}, so another user could change the firewall; fix it with `{fix}`")]
pub struct Untrusted {
    /// "policy file", "serve configuration".
    pub what: String,
    pub file: String,
    pub problem: String,
    pub fix: String,
}

/// Checks `path` (a file that must exist) and every directory above it.
pub fn check(path: &Path, what: &str) -> Result<(), Untrusted> {
    let uid = nix::unistd::geteuid().as_raw();
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let untrusted = |problem: String, fix: String| Untrusted {
        what: what.to_string(),
        file: path.display().to_string(),
        problem,
        fix,
    };
    let mut chains = vec![absolute.clone()];
    if let Ok(real) = std::fs::canonicalize(&absolute)
        && real != absolute
    {
        chains.push(real);
    }
    for chain in chains {
        for (i, p) in ancestors_with_self(&chain).into_iter().enumerate() {
            // The file itself is judged by what it resolves to; the directories likewise.
            let Ok(meta) = std::fs::metadata(&p) else { continue };
            let is_file = i == 0;
            if let Some((problem, fix)) = judge(&p, &meta, is_file, uid) {
                return Err(untrusted(problem, fix));
            }
        }
    }
    Ok(())
}

/// The path, then each of its parents up to `/`.
fn ancestors_with_self(path: &Path) -> Vec<PathBuf> {
    path.ancestors().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf).collect()
}

/// What is wrong with one path, and the fix, if anything.
fn judge(p: &Path, meta: &std::fs::Metadata, is_file: bool, uid: u32) -> Option<(String, String)> {
    let kind = if is_file { "it" } else { "directory" };
    let shown = p.display();
    let owner = meta.uid();
    if owner != 0 && owner != uid {
        let name = user_name(owner);
        let problem = if is_file {
            format!("it is owned by {name}, not by root or you")
        } else {
            format!("directory {shown} is owned by {name}, not by root or you")
        };
        return Some((problem, format!("chown root {shown}")));
    }
    let mode = meta.mode() & 0o7777;
    let sticky_dir = !is_file && mode & 0o1000 != 0;
    let group_w = mode & 0o020 != 0;
    let other_w = mode & 0o002 != 0;
    if (group_w || other_w) && !sticky_dir {
        let who = match (group_w, other_w) {
            (true, true) => "its group and all users",
            (true, false) => "its group",
            _ => "all users",
        };
        let flags = match (group_w, other_w) {
            (true, true) => "go-w",
            (true, false) => "g-w",
            _ => "o-w",
        };
        let problem = if is_file {
            format!("{kind} is writable by {who} (mode {mode:04o})")
        } else {
            format!("directory {shown} is writable by {who} (mode {mode:04o})")
        };
        return Some((problem, format!("chmod {flags} {shown}")));
    }
    None
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fresh directory under the system's temporary directory (sticky, so it passes), removed
    /// when dropped.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("edge-trust-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            Dir(d)
        }
        fn file(&self, name: &str, mode: u32) -> PathBuf {
            let f = self.0.join(name);
            std::fs::write(&f, "version = 1\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            f
        }
        /// A directory inside with this mode, and a 0644 file `p.toml` in it.
        fn subdir_with_file(&self, name: &str, mode: u32) -> (PathBuf, PathBuf) {
            let sub = self.0.join(name);
            std::fs::create_dir(&sub).unwrap();
            std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(mode)).unwrap();
            let f = sub.join("p.toml");
            std::fs::write(&f, "").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            (sub, f)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn err(path: &Path) -> String {
        check(path, "policy file").expect_err("must be refused").to_string()
    }

    #[test]
    fn owner_only_file_in_safe_directories_passes() {
        let d = Dir::new("ok");
        check(&d.file("p.toml", 0o644), "policy file").unwrap();
        check(&d.file("q.toml", 0o600), "policy file").unwrap();
    }

    #[test]
    fn group_or_world_writable_file_is_refused() {
        let d = Dir::new("mode");
        let f = d.file("p.toml", 0o664);
        let e = err(&f);
        assert!(
            e.contains("writable by its group (mode 0664)") && e.contains(&format!("chmod g-w {}", f.display())),
            "{e}"
        );
        let f = d.file("q.toml", 0o646);
        assert!(err(&f).contains("writable by all users"), "{}", err(&f));
    }

    #[test]
    fn writable_directory_is_refused_and_named() {
        let d = Dir::new("dir");
        let (sub, f) = d.subdir_with_file("sub", 0o777);
        let e = err(&f);
        assert!(e.contains(&format!("directory {} is writable by its group and all users", sub.display())), "{e}");
        assert!(e.contains(&format!("chmod go-w {}", sub.display())), "{e}");
        // Sticky (like /tmp): others cannot replace what they do not own there.
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check(&f, "policy file").unwrap();
    }

    #[test]
    fn a_link_into_an_unsafe_directory_is_refused() {
        let d = Dir::new("link");
        let (_, target) = d.subdir_with_file("open", 0o777);
        let link = d.0.join("policy.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(err(&link).contains("is writable by"), "{}", err(&link));
    }

    #[test]
    fn file_or_directory_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            // Only root can give a file away; CI runs the tests as root.
            eprintln!("skipped: needs root to chown");
            return;
        }
        let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
        let d = Dir::new("own");
        let f = d.file("p.toml", 0o644);
        nix::unistd::chown(&f, Some(nobody.uid), None).unwrap();
        let e = err(&f);
        assert!(e.contains("it is owned by user nobody") && e.contains(&format!("chown root {}", f.display())), "{e}");
        nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        nix::unistd::chown(&d.0, Some(nobody.uid), None).unwrap();
        let e = err(&f);
        assert!(e.contains(&format!("directory {} is owned by user nobody", d.0.display())), "{e}");
    }
}
