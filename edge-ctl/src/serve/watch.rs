//! Noticing that a policy file changed, and deciding when it has settled.
//!
//! Polling (a stat every tick, the content hashed only when the stat changes) rather than
//! inotify: it sees edits made in place, by rename, through symlinks and on any filesystem
//! alike, and a few stats a second cost nothing. An editor writes a file in several steps, so
//! a change is acted on only once the file has stayed the same for a quiet period.

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
    /// SHA-256 of the content, hex: the same value as `Policy::hash` of the text.
    Content(String),
    /// The file could not be read (the error, e.g. "No such file or directory").
    Unreadable(String),
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
    last: Option<Observation>,
}

impl FileWatch {
    pub fn new(path: &Path) -> FileWatch {
        FileWatch { path: path.to_path_buf(), stat: None, last: None }
    }

    /// Looks at the file: reads and hashes it only when its stat changed.
    pub fn poll(&mut self) -> Observation {
        let stat = Stat::of(&self.path);
        if let (Ok(now), Some(before), Some(last)) = (&stat, &self.stat, &self.last)
            && now == before
        {
            return last.clone();
        }
        let observation = match std::fs::read(&self.path) {
            Ok(bytes) => Observation::Content(crate::sha256_hex(&bytes)),
            Err(e) => Observation::Unreadable(e.to_string()),
        };
        self.stat = stat.ok();
        self.last = Some(observation.clone());
        observation
    }
}

/// Decides when a changed file is ready to apply: it must differ from what was applied last
/// and have stayed the same for the quiet period. Pure: the caller passes the time.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    /// What was applied (or tried) last; seeing it again is no change.
    settled: Option<Observation>,
    /// A different observation and since when it has been seen unchanged.
    pending: Option<(Observation, Instant)>,
}

impl Debouncer {
    pub fn new(quiet: Duration, settled: Option<Observation>) -> Debouncer {
        Debouncer { quiet, settled, pending: None }
    }

    /// Feeds one observation; true when it is new and has been stable for the quiet period.
    pub fn observe(&mut self, seen: &Observation, now: Instant) -> bool {
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
    pub fn settle(&mut self, seen: Observation) {
        self.settled = Some(seen);
        self.pending = None;
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
        Observation::Content(crate::sha256_hex(s.as_bytes()))
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
        assert_eq!(w.poll(), content("one"));
        assert_eq!(w.poll(), content("one"));
        // Same size, replaced by rename: a new inode.
        std::fs::write(dir.join("tmp"), "two").unwrap();
        std::fs::rename(dir.join("tmp"), &path).unwrap();
        assert_eq!(w.poll(), content("two"));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(w.poll(), Observation::Unreadable(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
