//! Expanding a collect entry's glob, as `glob::glob` does (same matches), through a small trait over
//! the directory calls so tests can count them.
//!
//! Semantics kept from `glob::glob` (what discovery used before): the pattern is cut at `/`; a
//! component without wildcards is looked up (no directory read); `*`, `?` and `[...]` match within
//! one name, hidden names included; `**` matches zero or more directories (symlinks followed), and
//! as the last component it matches the directories themselves; a pattern ending in `/` matches
//! directories only; names that are not UTF-8 are skipped; unreadable directories are skipped.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::collect::{is_glob, GLOB_OPTIONS};

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

/// An entry's glob, compiled for walking.
pub struct GlobWalk {
    root: PathBuf,
    components: Vec<Component>,
    /// The pattern ends with `/`: directories only.
    require_dir: bool,
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
        })
    }

    /// Every path the pattern matches now, sorted.
    pub fn scan(&mut self, fs: &dyn DirFs) -> Vec<PathBuf> {
        let mut walk = Walk {
            fs,
            components: &self.components,
            require_dir: self.require_dir,
            found: Vec::new(),
            ancestors: Vec::new(),
        };
        let root = self.root.clone();
        walk.visit(&root, 0);
        let mut found = walk.found;
        found.sort();
        found.dedup();
        found
    }
}

struct Walk<'a> {
    fs: &'a dyn DirFs,
    components: &'a [Component],
    require_dir: bool,
    found: Vec<PathBuf>,
    /// The directories being walked, by identity: a symlink back up the tree is not followed.
    ancestors: Vec<(u64, u64)>,
}

impl Walk<'_> {
    fn last(&self, idx: usize) -> bool {
        idx + 1 == self.components.len()
    }

    fn found(&mut self, path: PathBuf, is_dir: impl FnOnce() -> bool) {
        if !self.require_dir || is_dir() {
            self.found.push(path);
        }
    }

    /// `dir` is to be matched against `components[idx..]`.
    fn visit(&mut self, dir: &Path, idx: usize) {
        if let Component::Literal(name) = &self.components[idx] {
            let path = dir.join(name);
            if !self.fs.exists(&path) {
                return;
            }
            if self.last(idx) {
                let fs = self.fs;
                self.found(path.clone(), || fs.dir_stamp(&path).is_some());
            } else {
                self.visit(&path, idx + 1);
            }
            return;
        }
        let Some(stamp) = self.fs.dir_stamp(dir) else {
            return;
        };
        if self.ancestors.contains(&(stamp.dev, stamp.ino)) {
            return;
        }
        let Some(entries) = self.list(dir, stamp) else {
            return;
        };
        self.ancestors.push((stamp.dev, stamp.ino));
        for e in entries.iter() {
            let path = dir.join(&e.name);
            let is_dir = match e.kind {
                Kind::Dir => true,
                Kind::Other => false,
                Kind::Symlink => self.fs.dir_stamp(&path).is_some(),
            };
            self.entry(&path, &e.name, is_dir, idx);
        }
        self.ancestors.pop();
    }

    /// A name listed in a directory walked at `components[idx]`.
    fn entry(&mut self, path: &Path, name: &str, is_dir: bool, idx: usize) {
        match &self.components[idx] {
            Component::Recursive => {
                if is_dir {
                    self.visit(path, idx);
                }
                if self.last(idx) {
                    // `dir/**`: the directories below.
                    if is_dir {
                        self.found(path.to_path_buf(), || true);
                    }
                } else {
                    // Zero directories more: the name is matched against what follows `**`.
                    self.entry(path, name, is_dir, idx + 1);
                }
            }
            Component::Glob(p) => {
                if p.matches_with(name, GLOB_OPTIONS) {
                    self.descend_or_find(path, is_dir, idx);
                }
            }
            Component::Literal(l) => {
                if l == name {
                    self.descend_or_find(path, is_dir, idx);
                }
            }
        }
    }

    fn descend_or_find(&mut self, path: &Path, is_dir: bool, idx: usize) {
        if self.last(idx) {
            self.found(path.to_path_buf(), || is_dir);
        } else if is_dir {
            self.visit(path, idx + 1);
        }
    }

    fn list(&mut self, dir: &Path, _stamp: DirStamp) -> Option<Arc<[Entry]>> {
        self.fs.read_dir(dir).ok().map(Arc::from)
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
            let got = GlobWalk::new(&p).unwrap().scan(&RealFs);
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
}
