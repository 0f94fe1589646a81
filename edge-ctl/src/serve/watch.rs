//! Noticing that a policy file changed, and deciding when it has settled.
//!
//! Polling (a stat every tick, the content hashed only when the stat changes) rather than
//! inotify: it sees edits made in place, by rename, through symlinks and on any filesystem
//! alike, and a few stats a second cost nothing. An editor writes a file in several steps, so
//! a change is acted on only once the file has stayed the same for a quiet period.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often policy files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a changed file must stay unchanged before it is applied.
pub const QUIET_PERIOD: Duration = Duration::from_millis(500);

/// What a look at the file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// SHA-256 of the content, hex (the same value as `Policy::hash` of the text), and what else
    /// decides whether it can be applied.
    Content(String, Standing),
    /// The file could not be read (the error, e.g. "No such file or directory").
    Unreadable(String),
}

/// Besides the content, what the fixes an error asks for change: the file's ctime (`chmod`,
/// `chown`, `touch` on the file) and whether it is trusted (also `chmod` on a directory above
/// it). A policy refused for either is tried again once one of them changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    pub ctime: (i64, i64),
    /// Why the file is not trusted ([`crate::trust`]), when it is not.
    pub untrusted: Option<String>,
}

/// The stat fields that change when a file is written or replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(path: &Path) -> std::io::Result<Stat> {
        // metadata() follows symlinks: a symlink swapped to another file is seen by its target.
        let m = std::fs::metadata(path)?;
        Ok(Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// One watched file.
pub struct FileWatch {
    path: PathBuf,
    stat: Option<Stat>,
    /// The content's hash (or why it was unreadable) at `stat`.
    last: Option<Result<String, String>>,
}

impl FileWatch {
    pub fn new(path: &Path) -> FileWatch {
        FileWatch { path: path.to_path_buf(), stat: None, last: None }
    }

    /// Looks at the file: reads and hashes it only when its stat changed; checks its trust
    /// (a few stats up to `/`) every time, since a directory's mode is not in the file's stat.
    pub fn poll(&mut self) -> Observation {
        let stat = Stat::of(&self.path);
        let cached = match (&stat, &self.stat, &self.last) {
            (Ok(now), Some(before), Some(last)) if now == before => Some(last.clone()),
            _ => None,
        };
        let content = cached.unwrap_or_else(|| {
            let c = std::fs::read(&self.path).map(|b| crate::sha256_hex(&b)).map_err(|e| e.to_string());
            self.stat = stat.as_ref().ok().cloned();
            self.last = Some(c.clone());
            c
        });
        match (content, stat) {
            (Ok(sha256), Ok(stat)) => {
                let untrusted = crate::trust::check(&self.path, "policy file").err().map(|e| e.to_string());
                Observation::Content(sha256, Standing { ctime: stat.ctime, untrusted })
            }
            (Err(why), _) => Observation::Unreadable(why),
            (_, Err(e)) => Observation::Unreadable(e.to_string()),
        }
    }
}

/// What decides an interface's filter besides its policy file: whether the interface exists
/// (and which device it is), and its addresses, which the policy is compiled for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The interface index; None while no interface has the name.
    pub index: Option<u32>,
    pub addresses: Vec<IpAddr>,
}

impl Link {
    pub fn of(name: &str) -> Link {
        let index = crate::dataplane::system::if_index(name).ok();
        let addresses = match index {
            Some(_) => crate::dataplane::system::interface_addresses(name),
            None => Vec::new(),
        };
        Link { index, addresses }
    }
}

/// Decides when a change (of a file, of an interface) is ready to apply: it must differ from
/// what was applied last and have stayed the same for the quiet period. Pure: the caller passes
/// the time.
#[derive(Debug)]
pub struct Debouncer<T = Observation> {
    quiet: Duration,
    /// What was applied (or tried) last; seeing it again is no change.
    settled: Option<T>,
    /// A different observation and since when it has been seen unchanged.
    pending: Option<(T, Instant)>,
}

impl<T: Clone + PartialEq> Debouncer<T> {
    pub fn new(quiet: Duration, settled: Option<T>) -> Debouncer<T> {
        Debouncer { quiet, settled, pending: None }
    }

    /// Feeds one observation; true when it is new and has been stable for the quiet period.
    pub fn observe(&mut self, seen: &T, now: Instant) -> bool {
        if self.settled.as_ref() == Some(seen) {
            self.pending = None;
            return false;
        }
        match &self.pending {
            Some((pending, since)) if pending == seen => now.duration_since(*since) >= self.quiet,
            _ => {
                self.pending = Some((seen.clone(), now));
                false
            }
        }
    }

    /// Records that `seen` was applied (successfully or not): it is not tried again until the
    /// file changes.
    pub fn settle(&mut self, seen: T) {
        self.settled = Some(seen);
        self.pending = None;
    }

    /// What was applied (or tried) last.
    pub fn settled(&self) -> Option<&T> {
        self.settled.as_ref()
    }

    /// Starts the quiet period again (after a transient failure: try once more later).
    pub fn retry_later(&mut self, now: Instant) {
        if let Some((_, since)) = &mut self.pending {
            *since = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(s: &str) -> Observation {
        Observation::Content(crate::sha256_hex(s.as_bytes()), Standing::default())
    }

    /// The content's hash of an observation of a file.
    fn sha(o: &Observation) -> &str {
        match o {
            Observation::Content(sha, _) => sha,
            Observation::Unreadable(why) => panic!("unreadable: {why}"),
        }
    }

    #[test]
    fn a_change_is_applied_once_after_the_quiet_period() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_millis(500), Some(content("a")));
        assert!(!d.observe(&content("a"), ms(0)));
        assert!(!d.observe(&content("b"), ms(250)));
        assert!(!d.observe(&content("b"), ms(500)));
        assert!(d.observe(&content("b"), ms(750)));
        d.settle(content("b"));
        assert!(!d.observe(&content("b"), ms(1000)));
        assert!(!d.observe(&content("b"), ms(5000)));
    }

    #[test]
    fn each_further_change_restarts_the_quiet_period() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_millis(500), Some(content("a")));
        assert!(!d.observe(&content(""), ms(0)));
        assert!(!d.observe(&content("b"), ms(400)));
        assert!(!d.observe(&content("bc"), ms(800)));
        assert!(!d.observe(&content("bc"), ms(1200)));
        assert!(d.observe(&content("bc"), ms(1300)));
    }

    #[test]
    fn a_change_undone_within_the_quiet_period_is_no_change() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_millis(500), Some(content("a")));
        assert!(!d.observe(&content("b"), ms(0)));
        assert!(!d.observe(&content("a"), ms(250)));
        assert!(!d.observe(&content("a"), ms(2000)));
    }

    #[test]
    fn a_missing_file_counts_as_a_change_and_its_return_as_another() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let gone = Observation::Unreadable("No such file or directory".into());
        let mut d = Debouncer::new(Duration::from_millis(500), Some(content("a")));
        assert!(!d.observe(&gone, ms(0)));
        assert!(d.observe(&gone, ms(600)));
        d.settle(gone.clone());
        assert!(!d.observe(&gone, ms(5000)));
        assert!(!d.observe(&content("a"), ms(5100)));
        assert!(d.observe(&content("a"), ms(5600)));
    }

    #[test]
    fn retry_later_waits_another_quiet_period() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_millis(500), None);
        assert!(!d.observe(&content("a"), ms(0)));
        assert!(d.observe(&content("a"), ms(500)));
        d.retry_later(ms(500));
        assert!(!d.observe(&content("a"), ms(750)));
        assert!(d.observe(&content("a"), ms(1000)));
    }

    #[test]
    fn file_watch_sees_rewrites_and_removal() {
        let dir = std::env::temp_dir().join(format!("edge-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, "one").unwrap();
        let mut w = FileWatch::new(&path);
        let one = crate::sha256_hex(b"one");
        assert_eq!(sha(&w.poll()), one);
        assert_eq!(w.poll(), w.poll(), "nothing changed");
        // Same size, replaced by rename: a new inode.
        std::fs::write(dir.join("tmp"), "two").unwrap();
        std::fs::rename(dir.join("tmp"), &path).unwrap();
        assert_eq!(sha(&w.poll()), crate::sha256_hex(b"two"));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(w.poll(), Observation::Unreadable(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The fixes the trust error asks for (`chmod` on the file or on a directory above it) are
    /// changes: a refused policy is tried again after them, with the same content.
    #[test]
    fn file_watch_sees_the_fixes_of_a_trust_error() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        let dir = std::env::temp_dir().join(format!("edge-watch-trust-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        mode(&dir, 0o755);
        mode(&sub, 0o755);
        let path = sub.join("p.toml");
        std::fs::write(&path, "one").unwrap();
        mode(&path, 0o666);
        let mut w = FileWatch::new(&path);
        let refused = w.poll();
        let Observation::Content(_, standing) = &refused else { panic!("{refused:?}") };
        assert!(standing.untrusted.as_deref().is_some_and(|u| u.contains("writable")), "{refused:?}");
        let mut d = Debouncer::new(Duration::from_millis(0), Some(refused.clone()));
        // With no quiet period, a change is due at its second sighting.
        let changed = |d: &mut Debouncer, o: &Observation| {
            let now = Instant::now();
            !d.observe(o, now) && d.observe(o, now)
        };
        mode(&path, 0o644);
        let fixed = w.poll();
        assert_eq!(sha(&fixed), sha(&refused));
        assert!(changed(&mut d, &fixed), "chmod on the file is a change");
        d.settle(fixed.clone());
        mode(&sub, 0o777);
        let refused = w.poll();
        assert!(changed(&mut d, &refused), "an unsafe directory is a change");
        d.settle(refused);
        mode(&sub, 0o755);
        assert!(changed(&mut d, &w.poll()), "chmod on the directory is a change");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
