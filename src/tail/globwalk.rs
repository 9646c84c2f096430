//! Expanding a collect entry's glob, as `glob::glob` does (same matches), through a small trait over
//! the directory calls so tests can count them.
//!
//! Semantics kept from `glob::glob` (what discovery used before): the pattern is cut at `/`; a
//! component without wildcards is looked up (no directory read); `*`, `?` and `[...]` match within
//! one name, hidden names included; `**` matches zero or more directories (symlinks followed), and
//! as the last component it matches the directories themselves; a pattern ending in `/` matches
//! directories only; names that are not UTF-8 are skipped; unreadable directories are skipped.
//!
//! What differs is the cost of a rescan: the walk remembers each directory's listing with the
//! directory's stamp (identity, nanosecond mtime and ctime). A directory's mtime moves whenever a
//! name in it is created, removed or renamed, so a rescan stats every directory it walks and lists
//! only those whose stamp moved: an unchanged tree of 100 directories costs 100 stats, not 100
//! listings of every name. Timestamps tick coarsely (a kernel tick; a second on some filesystems,
//! two on FAT), so a change right after a listing may leave the stamp as it was: a listing made
//! within [`MTIME_SLACK_NS`] of the directory's last change is not trusted, and the directory is
//! listed again at the next scan. Directories only are walked that the rest of the pattern can
//! match in, and never those an `exclude` ending in `/**` covers whole.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::collect::{is_glob, GLOB_OPTIONS};

/// How long after a directory's last change its listing becomes trustworthy: above the coarsest
/// timestamp granularity the agent expects (FAT's 2 s) and a kernel tick's lag of the file clock.
pub const MTIME_SLACK_NS: i128 = 2_000_000_000;

/// Whether a listing of a directory then stamped `then`, made at `listed_at_ns` (a clock read before
/// the stat), still says what the directory stamped `now` holds: nothing moved, and the listing was
/// made long enough after the last change that a later change would have moved the mtime. (The
/// ctime is compared only: it catches an mtime set back, as `tar` and `rsync -t` do, and any later
/// name change moves the mtime as well.)
pub fn listing_holds(then: DirStamp, listed_at_ns: i128, now: DirStamp) -> bool {
    then == now && listed_at_ns - then.mtime_ns >= MTIME_SLACK_NS
}

/// A directory as one stat shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirStamp {
    pub dev: u64,
    pub ino: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl DirStamp {
    pub fn of(m: &std::fs::Metadata) -> DirStamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        DirStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What a directory listing says of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// Followed at every walk: where it leads may change without the directory changing.
    Symlink,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
}

/// The directory calls a walk makes.
pub trait DirFs {
    /// The directory at `path`, symlinks followed; `None` when it is not one or cannot be stat'ed.
    fn dir_stamp(&self, path: &Path) -> Option<DirStamp>;
    /// The names in `dir` (UTF-8 ones; others are skipped, as `glob` does).
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<Entry>>;
    /// Whether anything (a dangling symlink included) is at `path`.
    fn exists(&self, path: &Path) -> bool;
}

/// The real filesystem.
pub struct RealFs;

impl DirFs for RealFs {
    fn dir_stamp(&self, path: &Path) -> Option<DirStamp> {
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| DirStamp::of(&m))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => Kind::Dir,
                Ok(t) if t.is_symlink() => Kind::Symlink,
                Ok(_) => Kind::Other,
                // Unknown: judged at every walk, like a symlink.
                Err(_) => Kind::Symlink,
            };
            out.push(Entry { name, kind });
        }
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
}

/// One component of the pattern below its root.
#[derive(Debug)]
enum Component {
    /// No wildcard: looked up, never listed.
    Literal(String),
    Glob(glob::Pattern),
    /// `**`.
    Recursive,
}

/// A directory's names as last listed.
struct Listing {
    stamp: DirStamp,
    listed_at_ns: i128,
    entries: Arc<[Entry]>,
    /// The scan that last walked the directory: listings not walked by the last scan are dropped.
    scan: u64,
}

/// An entry's glob, compiled for walking, and the listings of the directories it walked.
pub struct GlobWalk {
    root: PathBuf,
    components: Vec<Component>,
    /// The pattern ends with `/`: directories only.
    require_dir: bool,
    /// Directories an exclude covers whole (`<these>/**`): never walked.
    prune: Vec<glob::Pattern>,
    memory: HashMap<PathBuf, Listing>,
    scans: u64,
    /// The last walk looked at something no remembered listing stands for (see [`Walk::volatile`]):
    /// the next must walk again.
    volatile: bool,
}

/// A path the pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub path: PathBuf,
    /// A regular file (per its directory entry) in a directory whose listing held since the last
    /// scan: the name still names the file it named then (a rename, deletion or creation in the
    /// directory would have moved its stamp). A symlink is never settled: where it leads may change.
    pub settled: bool,
}

/// What the last scan did, for tests and debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Directories walked (one stat each).
    pub walked: usize,
    /// Of those, directories listed (a read of every name).
    pub listed: usize,
}

impl GlobWalk {
    /// `None` when `pattern` is not an absolute, valid glob.
    pub fn new(pattern: &str) -> Option<GlobWalk> {
        glob::Pattern::new(pattern).ok()?;
        let rest = pattern.strip_prefix('/')?;
        let mut components = Vec::new();
        for c in rest.split_terminator('/') {
            components.push(if c == "**" {
                // Consecutive `**` are one.
                if matches!(components.last(), Some(Component::Recursive)) {
                    continue;
                }
                Component::Recursive
            } else if is_glob(c) {
                Component::Glob(glob::Pattern::new(c).ok()?)
            } else {
                Component::Literal(c.to_owned())
            });
        }
        if components.is_empty() {
            return None;
        }
        Some(GlobWalk {
            root: PathBuf::from("/"),
            components,
            require_dir: pattern.ends_with('/'),
            prune: Vec::new(),
            memory: HashMap::new(),
            scans: 0,
            volatile: true,
        })
    }

    /// Leaves out the directories that `excludes` (globs over full paths) cover whole: those an
    /// exclude ending in `/**` matches, everything under them being excluded. Other excludes are
    /// the caller's to apply to the matches.
    pub fn pruning(mut self, excludes: &[String]) -> GlobWalk {
        self.prune = excludes
            .iter()
            .filter_map(|e| e.strip_suffix("/**"))
            .filter(|prefix| !prefix.is_empty())
            .filter_map(|prefix| glob::Pattern::new(prefix).ok())
            .collect();
        self
    }

    /// Every path the pattern matches now, sorted by bytes.
    pub fn scan(&mut self, fs: &dyn DirFs) -> Vec<PathBuf> {
        self.scan_stats(fs).0.into_iter().map(|m| m.path).collect()
    }

    /// The directories the last scan listed or found unchanged: where a name the pattern matches
    /// can appear or go.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.memory.keys().map(PathBuf::as_path)
    }

    /// Whether the last scan's matches are still the matches, every one settled: the last walk
    /// depended on nothing but the listings it remembers, and each of those directories still holds
    /// its listing. A stat per directory and nothing per name, where a scan goes through every name
    /// (10,000 in idle10000, every second); `None` when a scan is needed. Counts as a scan.
    pub fn unchanged(&mut self, fs: &dyn DirFs) -> Option<ScanStats> {
        if self.volatile {
            return None;
        }
        for (dir, l) in &self.memory {
            if !listing_holds(l.stamp, l.listed_at_ns, fs.dir_stamp(dir)?) {
                return None;
            }
        }
        self.scans += 1;
        for l in self.memory.values_mut() {
            l.scan = self.scans;
        }
        Some(ScanStats {
            walked: self.memory.len(),
            listed: 0,
        })
    }

    /// [`GlobWalk::scan`] with what is known of each match, and what the scan cost.
    pub fn scan_stats(&mut self, fs: &dyn DirFs) -> (Vec<Match>, ScanStats) {
        self.scans += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut walk = Walk {
            fs,
            components: &self.components,
            require_dir: self.require_dir,
            prune: &self.prune,
            memory: &mut self.memory,
            scan: self.scans,
            now,
            stats: ScanStats::default(),
            found: Vec::new(),
            ancestors: Vec::new(),
            volatile: false,
        };
        walk.visit(&self.root, 0);
        let (mut found, stats) = (walk.found, walk.stats);
        self.volatile = walk.volatile;
        let scan = self.scans;
        self.memory.retain(|_, l| l.scan == scan);
        // By bytes: `Path`'s order compares component by component, much slower on thousands.
        found.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
        // The same path reached twice (`a/**/**/b`): settled only if both say so.
        found.dedup_by(|a, b| {
            a.path == b.path && {
                b.settled &= a.settled;
                true
            }
        });
        (found, stats)
    }
}

struct Walk<'a> {
    fs: &'a dyn DirFs,
    components: &'a [Component],
    require_dir: bool,
    prune: &'a [glob::Pattern],
    memory: &'a mut HashMap<PathBuf, Listing>,
    scan: u64,
    /// The clock when the scan started (before any stat of it).
    now: i128,
    stats: ScanStats,
    found: Vec<Match>,
    /// The directories being walked, by identity: a symlink back up the tree is not followed.
    ancestors: Vec<(u64, u64)>,
    /// The walk looked at something whose change no remembered directory's stamp would show: a
    /// name looked up outside a listing (a literal component missing, or last), a path that is not
    /// a directory, a directory it could not read, a symlink (where it leads may change).
    volatile: bool,
}

impl Walk<'_> {
    fn last(&self, idx: usize) -> bool {
        idx + 1 == self.components.len()
    }

    fn found(&mut self, path: PathBuf, settled: bool, is_dir: impl FnOnce() -> bool) {
        if !self.require_dir || is_dir() {
            self.found.push(Match { path, settled });
        }
    }

    /// `dir` is to be matched against `components[idx..]`.
    fn visit(&mut self, dir: &Path, idx: usize) {
        if let Component::Literal(name) = &self.components[idx] {
            let path = dir.join(name);
            if !self.last(idx) {
                // Found, the lookup is still true while the directory it leads to keeps its stamp (a
                // stat of that directory goes through it); missing, nothing remembered stands for it.
                if !self.fs.exists(&path) {
                    self.volatile = true;
                    return;
                }
                self.visit(&path, idx + 1);
                return;
            }
            // Last (`/var/log/*/access.log`): looked up in the directory's listing, so the directory
            // is remembered — a rescan of it costs a stat, and it is watched for events — as one a
            // wildcard lists. By name only where the directory cannot be listed (execute-only).
            if self.list_and_walk(dir, idx) {
                return;
            }
            self.volatile = true;
            if self.fs.exists(&path) {
                let fs = self.fs;
                self.found(path.clone(), false, || fs.dir_stamp(&path).is_some());
            }
            return;
        }
        self.list_and_walk(dir, idx);
    }

    /// Walks the names of `dir` (listed, or remembered while its stamp holds) at `components[idx]`;
    /// false when it could not be listed.
    fn list_and_walk(&mut self, dir: &Path, idx: usize) -> bool {
        if self
            .prune
            .iter()
            .any(|p| p.matches_path_with(dir, GLOB_OPTIONS))
        {
            return true;
        }
        let Some(stamp) = self.fs.dir_stamp(dir) else {
            self.volatile = true;
            return false;
        };
        self.stats.walked += 1;
        if self.ancestors.contains(&(stamp.dev, stamp.ino)) {
            self.volatile = true;
            return true;
        }
        let Some((entries, held)) = self.list(dir, stamp) else {
            return false;
        };
        self.ancestors.push((stamp.dev, stamp.ino));
        for e in entries.iter() {
            let is_dir = match e.kind {
                Kind::Dir => true,
                Kind::Other => false,
                Kind::Symlink => {
                    self.volatile = true;
                    self.fs.dir_stamp(&dir.join(&e.name)).is_some()
                }
            };
            let settled = held && e.kind == Kind::Other;
            self.entry(dir, &e.name, is_dir, settled, idx);
        }
        self.ancestors.pop();
        true
    }

    /// A name listed in `dir`, walked at `components[idx]`. Its path is built only once the name
    /// matches or is to be descended into: most names of a big directory do neither.
    fn entry(&mut self, dir: &Path, name: &str, is_dir: bool, settled: bool, idx: usize) {
        match &self.components[idx] {
            Component::Recursive => {
                if is_dir {
                    self.visit(&dir.join(name), idx);
                }
                if self.last(idx) {
                    // `dir/**`: the directories below.
                    if is_dir {
                        self.found(dir.join(name), false, || true);
                    }
                } else {
                    // Zero directories more: the name is matched against what follows `**`.
                    self.entry(dir, name, is_dir, settled, idx + 1);
                }
            }
            Component::Glob(p) => {
                if p.matches_with(name, GLOB_OPTIONS) {
                    self.descend_or_find(&dir.join(name), is_dir, settled, idx);
                }
            }
            Component::Literal(l) => {
                if l == name {
                    self.descend_or_find(&dir.join(name), is_dir, settled, idx);
                }
            }
        }
    }

    fn descend_or_find(&mut self, path: &Path, is_dir: bool, settled: bool, idx: usize) {
        if self.last(idx) {
            self.found(path.to_path_buf(), settled, || is_dir);
        } else if is_dir {
            self.visit(path, idx + 1);
        }
    }

    /// `dir`'s names, and whether they are the remembered ones (its stamp says nothing changed),
    /// else listed (and remembered).
    fn list(&mut self, dir: &Path, stamp: DirStamp) -> Option<(Arc<[Entry]>, bool)> {
        if let Some(l) = self.memory.get_mut(dir) {
            if listing_holds(l.stamp, l.listed_at_ns, stamp) {
                l.scan = self.scan;
                return Some((l.entries.clone(), true));
            }
        }
        self.stats.listed += 1;
        let Ok(entries) = self.fs.read_dir(dir) else {
            self.volatile = true;
            self.memory.remove(dir);
            return None;
        };
        let entries: Arc<[Entry]> = Arc::from(entries);
        self.memory.insert(
            dir.to_path_buf(),
            Listing {
                stamp,
                listed_at_ns: self.now,
                entries: entries.clone(),
                scan: self.scan,
            },
        );
        Some((entries, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn touch(p: &Path) {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, b"x\n").unwrap();
    }

    /// The walk matches exactly what `glob::glob` matched (discovery's expansion before it).
    #[test]
    fn matches_what_glob_glob_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for f in [
            "a.log",
            ".hidden.log",
            "b.txt",
            "x/a.log",
            "x/y/b.log",
            "x/y/z/c.log",
            "x/y/z/c.txt",
            "x/.h/d.log",
            "q/b/e.log",
            "q/b/f.txt",
            "q/c/b/g.log",
            "ab1/x1.log",
            "ab2/x22.log",
            "c3/x3.log",
        ] {
            touch(&r.join(f));
        }
        std::fs::create_dir_all(r.join("dir.log/sub")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        symlink(r.join("x/y"), r.join("link")).unwrap();
        symlink(r.join("nowhere"), r.join("dangling.log")).unwrap();
        // A loop: glob::glob would follow it until the path is too long; the walk stops at once.
        let d = r.display();
        let patterns = [
            format!("{d}/*.log"),
            format!("{d}/**/*.log"),
            format!("{d}/*/*.log"),
            format!("{d}/q/**/b/*.log"),
            format!("{d}/**"),
            format!("{d}/**/*"),
            format!("{d}/[ab]*/x?.log"),
            format!("{d}/x/*.log"),
            format!("{d}/**/**/*.log"),
            format!("{d}/*/"),
            format!("{d}/x/y/**/c.*"),
            format!("{d}/link/*.log"),
            format!("{d}/nothing/**/*.log"),
            format!("{d}/*/y/z/c.log"),
        ];
        for p in patterns {
            let mut want: Vec<PathBuf> = glob::glob(&p).unwrap().filter_map(Result::ok).collect();
            want.sort();
            want.dedup();
            let mut got = GlobWalk::new(&p).unwrap().scan(&RealFs);
            got.sort();
            assert_eq!(got, want, "pattern {p}");
        }
    }

    #[test]
    fn a_symlink_loop_is_walked_once() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        touch(&r.join("a/b.log"));
        symlink(r.join("a"), r.join("a/again")).unwrap();
        let got = GlobWalk::new(&format!("{}/**/*.log", r.display()))
            .unwrap()
            .scan(&RealFs);
        assert_eq!(got, vec![r.join("a/b.log")]);
    }

    /// Counts directory reads; with `frozen`, every directory keeps the timestamps it had at its
    /// first stat, as on a filesystem whose clock ticks too coarsely to show a change.
    struct Counting {
        reads: std::cell::Cell<usize>,
        frozen: bool,
        stamps: std::cell::RefCell<HashMap<PathBuf, DirStamp>>,
    }

    impl Counting {
        fn new(frozen: bool) -> Counting {
            Counting {
                reads: Default::default(),
                frozen,
                stamps: Default::default(),
            }
        }

        fn take(&self) -> usize {
            self.reads.replace(0)
        }
    }

    impl DirFs for Counting {
        fn dir_stamp(&self, path: &Path) -> Option<DirStamp> {
            let now = RealFs.dir_stamp(path)?;
            if !self.frozen {
                return Some(now);
            }
            Some(*self.stamps.borrow_mut().entry(path.into()).or_insert(now))
        }
        fn read_dir(&self, dir: &Path) -> io::Result<Vec<Entry>> {
            self.reads.set(self.reads.get() + 1);
            RealFs.read_dir(dir)
        }
        fn exists(&self, path: &Path) -> bool {
            RealFs.exists(path)
        }
    }

    fn age(dir: &Path, by: std::time::Duration) {
        let f = std::fs::File::open(dir).unwrap();
        f.set_modified(std::time::SystemTime::now() - by).unwrap();
    }

    /// 110 directories under the root (10 × 10 deep), each with 5 `.log` and 5 `.txt` files.
    fn tree(r: &Path) -> Vec<PathBuf> {
        let mut dirs = vec![r.to_path_buf()];
        for a in 0..10 {
            for b in 0..10 {
                let d = r.join(format!("d{a}/e{b}"));
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..5 {
                    std::fs::write(d.join(format!("f{i}.log")), b"x\n").unwrap();
                    std::fs::write(d.join(format!("g{i}.txt")), b"x\n").unwrap();
                }
                dirs.push(d);
            }
            dirs.push(r.join(format!("d{a}")));
        }
        dirs
    }

    /// [`tree`] under `r`, every directory last changed a while ago (so its listing can be
    /// trusted), with a counting file system and a walk of `r/**/*.log`.
    fn aged_tree(r: &Path) -> (Counting, GlobWalk) {
        for d in &tree(r) {
            age(d, std::time::Duration::from_secs(10));
        }
        let walk = GlobWalk::new(&format!("{}/**/*.log", r.display())).unwrap();
        (Counting::new(false), walk)
    }

    /// A literal last component (`/var/log/*/access.log`) is looked up in its directory's listing:
    /// the directories are remembered like the ones a wildcard lists, so they are watched for events
    /// and an unchanged tree is known from a stat per directory. (Looked up by name, they were in
    /// no listing: not watched, and every rescan walked again.)
    #[test]
    fn a_literal_last_component_is_found_in_a_remembered_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for a in 0..10 {
            touch(&r.join(format!("app{a}/access.log")));
            touch(&r.join(format!("app{a}/error.log")));
        }
        for a in 0..10 {
            age(
                &r.join(format!("app{a}")),
                std::time::Duration::from_secs(10),
            );
        }
        age(r, std::time::Duration::from_secs(10));
        let fs = Counting::new(false);
        let mut walk = GlobWalk::new(&format!("{}/*/access.log", r.display())).unwrap();
        let found = walk.scan(&fs);
        assert_eq!(found.len(), 10);
        assert!(found.contains(&r.join("app3/access.log")));
        assert_eq!(
            walk.dirs().count(),
            11,
            "the root and the ten directories holding access.log are remembered"
        );
        let held = walk.unchanged(&fs);
        assert!(held.is_some(), "an unchanged tree needs no scan");
        std::fs::remove_file(r.join("app3/access.log")).unwrap();
        assert_eq!(walk.unchanged(&fs), None, "a match removed");
        assert_eq!(walk.scan(&fs).len(), 9);
    }

    /// A rescan reads only the directories that changed: an unchanged tree costs a stat per
    /// directory and no listing; a file created deep down is found by reading its directory alone.
    #[test]
    fn a_rescan_reads_only_directories_that_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let (fs, mut walk) = aged_tree(r);
        assert_eq!(walk.scan(&fs).len(), 500);
        assert_eq!(fs.take(), 111, "first scan lists every directory");
        assert_eq!(walk.scan(&fs).len(), 500);
        assert_eq!(
            fs.take(),
            0,
            "second scan of an unchanged tree lists no directory"
        );

        let deep = r.join("d7/e3");
        std::fs::write(deep.join("new.log"), b"x\n").unwrap();
        std::fs::write(deep.join("new.txt"), b"x\n").unwrap();
        let found = walk.scan(&fs);
        assert_eq!(found.len(), 501);
        assert!(found.contains(&deep.join("new.log")));
        assert_eq!(fs.take(), 1, "only the changed directory is listed");

        // A new directory is listed, and so is its parent (its mtime changed).
        std::fs::create_dir(r.join("d2/e5/sub")).unwrap();
        std::fs::write(r.join("d2/e5/sub/s.log"), b"x\n").unwrap();
        let found = walk.scan(&fs);
        assert!(found.contains(&r.join("d2/e5/sub/s.log")));
        assert_eq!(
            fs.take(),
            2 + 1,
            "d2/e5, its new sub, and d7/e3 (changed < 2 s ago)"
        );

        // A removed file is gone at the next scan.
        std::fs::remove_file(deep.join("f0.log")).unwrap();
        assert!(!walk.scan(&fs).contains(&deep.join("f0.log")));
    }

    /// An unchanged tree's matches are known to be the last scan's from a stat per directory, no
    /// name gone through; a change anywhere, a symlink, or a directory the pattern names missing,
    /// and a scan is needed.
    #[test]
    fn the_last_matches_stand_while_every_directory_holds_its_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let (fs, mut walk) = aged_tree(r);
        assert_eq!(walk.unchanged(&fs), None, "no scan yet");
        assert_eq!(walk.scan(&fs).len(), 500);
        fs.take();
        let held = ScanStats {
            walked: 111,
            listed: 0,
        };
        assert_eq!(walk.unchanged(&fs), Some(held));
        assert_eq!(walk.unchanged(&fs), Some(held));
        assert_eq!(fs.take(), 0);
        assert_eq!(walk.dirs().count(), 111, "the listings are kept");

        let deep = r.join("d7/e3");
        std::fs::write(deep.join("new.log"), b"x\n").unwrap();
        assert_eq!(walk.unchanged(&fs), None, "a new file deep down");
        assert!(walk.scan(&fs).contains(&deep.join("new.log")));
        assert_eq!(walk.unchanged(&fs), None, "listed within the slack");
        age(&deep, std::time::Duration::from_secs(10));
        assert_eq!(walk.scan(&fs).len(), 501);
        assert_eq!(walk.unchanged(&fs), Some(held));
        std::fs::remove_dir_all(r.join("d2/e2")).unwrap();
        age(&r.join("d2"), std::time::Duration::from_secs(10));
        assert_eq!(walk.unchanged(&fs), None, "a directory removed");
        assert_eq!(walk.scan(&fs).len(), 496);

        symlink(r.join("d0/e0/f0.log"), r.join("d0/e1/link.log")).unwrap();
        age(&r.join("d0/e1"), std::time::Duration::from_secs(10));
        assert_eq!(walk.scan(&fs).len(), 497);
        assert_eq!(
            walk.unchanged(&fs),
            None,
            "where a symlink leads may change"
        );

        // A directory the pattern names, missing: nothing remembered would show it appear.
        let mut walk = GlobWalk::new(&format!("{}/later/*.log", r.display())).unwrap();
        assert!(walk.scan(&fs).is_empty());
        assert_eq!(walk.unchanged(&fs), None);
        touch(&r.join("later/a.log"));
        assert_eq!(walk.scan(&fs), vec![r.join("later/a.log")]);
        age(&r.join("later"), std::time::Duration::from_secs(10));
        walk.scan(&fs);
        assert_eq!(walk.unchanged(&fs).map(|s| s.walked), Some(1));
        // The named directory replaced by another: its stamp (identity) moved.
        std::fs::rename(r.join("later"), r.join("earlier")).unwrap();
        touch(&r.join("later/b.log"));
        assert_eq!(walk.unchanged(&fs), None);
        assert_eq!(walk.scan(&fs), vec![r.join("later/b.log")]);
    }

    /// A directory listed within the timestamps' granularity of its last change may change again
    /// without its mtime moving: it is listed again at the next scan, so a file created right after
    /// the listing is found.
    #[test]
    fn a_file_created_in_the_same_mtime_tick_as_the_listing_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let dirs = tree(r);
        for d in &dirs {
            age(d, std::time::Duration::from_secs(10));
        }
        let deep = r.join("d4/e4");
        // Changed just now: the listing below is made in the same tick.
        std::fs::write(deep.join("first.log"), b"x\n").unwrap();
        let fs = Counting::new(true);
        let mut walk = GlobWalk::new(&format!("{}/**/*.log", r.display())).unwrap();
        assert!(walk.scan(&fs).contains(&deep.join("first.log")));
        // The filesystem shows no change in `deep`'s stamp (frozen), as within one coarse tick.
        std::fs::write(deep.join("second.log"), b"x\n").unwrap();
        assert!(
            walk.scan(&fs).contains(&deep.join("second.log")),
            "a file created in the listing's mtime tick was missed"
        );
    }

    #[test]
    fn a_listing_holds_only_if_nothing_moved_and_it_was_made_after_the_slack() {
        let s = 1_000_000_000i128;
        let then = DirStamp {
            dev: 1,
            ino: 2,
            mtime_ns: 100 * s,
            ctime_ns: 100 * s,
        };
        assert!(listing_holds(then, 103 * s, then));
        assert!(listing_holds(then, 102 * s, then), "exactly the slack");
        assert!(
            !listing_holds(then, 101 * s, then),
            "listed in the last change's tick"
        );
        assert!(
            !listing_holds(then, 99 * s, then),
            "a change dated after the listing"
        );
        let moved = |f: fn(&mut DirStamp)| {
            let mut now = then;
            f(&mut now);
            listing_holds(then, 103 * s, now)
        };
        assert!(!moved(|n| n.mtime_ns += 1), "mtime moved by a nanosecond");
        assert!(!moved(|n| n.ctime_ns += 1), "mtime set back: ctime moved");
        assert!(!moved(|n| n.ino += 1), "replaced by another directory");
        assert!(!moved(|n| n.dev += 1), "another filesystem mounted there");
    }

    /// An exclude ending in `/**` keeps the walk out of the directories it covers; the matches are
    /// those of the walk without it, minus the excluded paths.
    #[test]
    fn directories_an_exclude_covers_whole_are_not_walked() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        tree(r);
        let pattern = format!("{}/**/*.log", r.display());
        let excludes = vec![
            format!("{}/d3/**", r.display()),
            format!("{}/d[56]/e1/**", r.display()),
            format!("{}/**/f2.log", r.display()),
        ];
        let mut e = crate::config::collect::CollectEntry::new(pattern.clone(), "t");
        e.exclude = excludes.clone();
        let matcher = crate::config::collect::PathMatcher::new(&e);
        let want: Vec<PathBuf> = GlobWalk::new(&pattern)
            .unwrap()
            .scan(&RealFs)
            .into_iter()
            .filter(|p| !matcher.is_excluded(p))
            .collect();
        let fs = Counting::new(false);
        let mut walk = GlobWalk::new(&pattern).unwrap().pruning(&excludes);
        let got: Vec<PathBuf> = walk
            .scan(&fs)
            .into_iter()
            .filter(|p| !matcher.is_excluded(p))
            .collect();
        assert_eq!(got, want);
        assert_eq!(want.len(), (100 - 10 - 2) * 4);
        assert_eq!(
            fs.take(),
            111 - 11 - 2,
            "d3 and its 10, d5/e1 and d6/e1 not listed"
        );
    }

    /// Regular files of directories unchanged since the last scan are settled (their names still
    /// name the same files); those of a changed directory, and symlinks, are not.
    #[test]
    fn files_of_unchanged_directories_are_settled() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for d in tree(r) {
            age(&d, std::time::Duration::from_secs(10));
        }
        symlink(r.join("d0/e0/f0.log"), r.join("d0/e1/link.log")).unwrap();
        age(&r.join("d0/e1"), std::time::Duration::from_secs(10));
        let mut walk = GlobWalk::new(&format!("{}/**/*.log", r.display())).unwrap();
        let settled = |walk: &mut GlobWalk| -> Vec<PathBuf> {
            let (found, _) = walk.scan_stats(&RealFs);
            found
                .into_iter()
                .filter(|m| m.settled)
                .map(|m| m.path)
                .collect()
        };
        assert!(
            settled(&mut walk).is_empty(),
            "nothing is settled at the first scan"
        );
        let all = settled(&mut walk);
        assert_eq!(all.len(), 500, "every regular file, not the symlink");
        assert!(!all.contains(&r.join("d0/e1/link.log")));

        std::fs::rename(r.join("d3/e3/f1.log"), r.join("d3/e3/f1.log.1")).unwrap();
        std::fs::write(r.join("d3/e3/f1.log"), b"new\n").unwrap();
        let now = settled(&mut walk);
        assert_eq!(
            now.len(),
            495,
            "the changed directory's files are not settled"
        );
        assert!(!now.iter().any(|p| p.starts_with(r.join("d3/e3"))));
    }
}
