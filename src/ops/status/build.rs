//! The status value from the agent's current state: a function of what the registry, the config
//! source and the metrics report, and of [`Owners`], the one thing it keeps between builds (which
//! entry each open file counts under).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};

use crate::config::collect::{CollectEntry, PathMatcher};
use crate::config::source::{Desired, SourceStatus};
use crate::state::identity::FileKey;
pub use crate::state::registry::OpenFile;
use crate::telemetry::FileProblem;

use super::schema::{EntryStatus, FileStatus, HostStatus};

/// Files listed per entry (the largest lag first); `files_matched` still counts them all.
pub const MAX_FILES_PER_ENTRY: usize = 50;

/// What does not change while the agent runs.
#[derive(Clone, Debug)]
pub struct Identity {
    pub version: String,
    pub hostname: String,
    pub ip: String,
    pub started_unix_ms: u64,
    pub config_key: String,
}

struct EntryMatcher<'a> {
    entry: &'a CollectEntry,
    paths: PathMatcher,
}

impl EntryMatcher<'_> {
    fn new(entry: &CollectEntry) -> EntryMatcher<'_> {
        EntryMatcher {
            entry,
            paths: PathMatcher::new(entry),
        }
    }

    fn owns(&self, path: &Path) -> bool {
        self.paths.owns(path)
    }
}

/// A file counted under an entry; only those listed become a [`FileStatus`].
struct Listed<'a> {
    path: &'a Path,
    acked: u64,
    lag: u64,
    problem: Option<&'a FileProblem>,
}

impl Listed<'_> {
    /// The largest lag first, then by path as written (bytes), then by offset.
    fn order(a: &Listed<'_>, b: &Listed<'_>) -> std::cmp::Ordering {
        use std::os::unix::ffi::OsStrExt;
        b.lag
            .cmp(&a.lag)
            .then_with(|| {
                a.path
                    .as_os_str()
                    .as_bytes()
                    .cmp(b.path.as_os_str().as_bytes())
            })
            .then_with(|| a.acked.cmp(&b.acked))
    }

    fn status(self) -> FileStatus {
        FileStatus {
            path: self.path.display().to_string(),
            acked_offset: self.acked,
            bytes_behind: self.lag,
            error: self.problem.map(|p| p.error.clone()),
        }
    }
}

/// What a status is built from, read at one moment.
pub struct Inputs<'a> {
    pub source: &'a SourceStatus,
    pub desired: Option<&'a Desired>,
    pub open: &'a [OpenFile<'a>],
    pub problems: &'a HashMap<PathBuf, FileProblem>,
    pub kafka_reachable: bool,
    pub now_unix_ms: u64,
}

/// Which entry each open file counts under, kept from one status write to the next: matching
/// every open path against the entries' patterns at each write was half the status build with
/// 10,000 files (perf, idle10000). A file is matched again only when the entries change or the
/// registry knows it under another path or topic; a file no longer open is forgotten.
#[derive(Default)]
pub struct Owners {
    /// The entries the answers hold for.
    entries: Vec<CollectEntry>,
    files: HashMap<FileKey, Owner>,
    /// Hashes a file's path and topic: an answer holds only for the name it was found for.
    names: RandomState,
    builds: u32,
    /// Files matched against the entries' patterns so far (what the tests watch).
    #[cfg(test)]
    matched: u64,
}

/// 16 bytes: with the key, 10,000 files take about half a MiB.
struct Owner {
    /// The hash of the path and topic the answer was found for.
    name: u64,
    /// The entry's index, or [`Owner::NONE`].
    entry: u32,
    /// The build that last saw the file open (its low bits: builds only need telling apart).
    seen: u32,
}

impl Owner {
    const NONE: u32 = u32::MAX;
}

impl Owners {
    /// Starts a build for `entries`: answers found for other entries no longer hold.
    fn start(&mut self, entries: &[CollectEntry]) {
        if self.entries != entries {
            self.entries = entries.to_vec();
            self.files.clear();
        }
        self.builds = self.builds.wrapping_add(1);
    }

    /// The index of the entry `f` counts under: the first whose topic is the file's and whose
    /// paths own it.
    fn entry_of(&mut self, matchers: &[EntryMatcher<'_>], f: &OpenFile<'_>) -> Option<usize> {
        let name = self.names.hash_one((f.path.as_ref(), f.topic.as_ref()));
        let builds = self.builds;
        if let Some(o) = self.files.get_mut(&f.key) {
            if o.name == name {
                o.seen = builds;
                return (o.entry != Owner::NONE).then_some(o.entry as usize);
            }
        }
        #[cfg(test)]
        {
            self.matched += 1;
        }
        let entry = matchers
            .iter()
            .position(|m| m.entry.topic == f.topic && m.owns(&f.path));
        let owner = Owner {
            name,
            entry: entry.map_or(Owner::NONE, |i| i as u32),
            seen: builds,
        };
        self.files.insert(f.key, owner);
        entry
    }

    /// Ends a build: files it did not see open are forgotten.
    fn finish(&mut self) {
        let builds = self.builds;
        self.files.retain(|_, o| o.seen == builds);
    }
}

/// The status value from the agent's current state. Each file is counted under the first entry that
/// matches it (the registry lets only one entry read a file).
pub fn build<'a>(id: &Identity, inputs: &Inputs<'a>, owners: &mut Owners) -> HostStatus {
    let Inputs {
        source,
        desired,
        open,
        problems,
        kafka_reachable,
        now_unix_ms,
    } = *inputs;
    let entries = desired.map_or(&[][..], |d| &d.entries[..]);
    let matchers: Vec<EntryMatcher<'_>> = entries.iter().map(EntryMatcher::new).collect();
    let mut files: Vec<Vec<Listed<'_>>> = (0..entries.len()).map(|_| Vec::new()).collect();
    owners.start(entries);
    for f in open {
        if let Some(i) = owners.entry_of(&matchers, f) {
            files[i].push(Listed {
                path: f.path.as_ref(),
                acked: f.acked,
                lag: f.lag,
                problem: problems.get(f.path.as_ref()),
            });
        }
    }
    owners.finish();
    // A set, not a scan of `open` per problem: with thousands of files waiting for a slot under
    // `max_open_files` (each a problem) beside thousands open, the scan was most of the agent's CPU.
    // Only when there are problems: hashing 10,000 open paths for none was a fifth of a status write.
    let open_paths: HashSet<&Path> = if problems.is_empty() {
        HashSet::new()
    } else {
        open.iter().map(|f| f.path.as_ref()).collect()
    };
    for (path, problem) in problems {
        if open_paths.contains(path.as_path()) {
            continue;
        }
        if let Some(i) = matchers.iter().position(|m| m.owns(path)) {
            files[i].push(Listed {
                path,
                acked: 0,
                lag: 0,
                problem: Some(problem),
            });
        }
    }
    let entries = entries
        .iter()
        .zip(files)
        .map(|(entry, mut files)| {
            let last_error = files
                .iter()
                .filter_map(|f| f.problem)
                .max_by_key(|p| p.at_ms)
                .map(|p| p.error.clone());
            let files_matched = files.len();
            let bytes_behind = files.iter().map(|f| f.lag).sum();
            // Only the listed files are sorted and written out: with 10,000 files, sorting them all
            // by path and making a string of each at every status write was most of its cost.
            if files.len() > MAX_FILES_PER_ENTRY {
                // The largest lags come first: when enough files lag, the caught-up ones (most of
                // 10,000 idle files) cannot be listed, and are not compared path by path to find out.
                if files.iter().filter(|f| f.lag > 0).count() >= MAX_FILES_PER_ENTRY {
                    files.retain(|f| f.lag > 0);
                }
                files.select_nth_unstable_by(MAX_FILES_PER_ENTRY - 1, Listed::order);
                files.truncate(MAX_FILES_PER_ENTRY);
            }
            files.sort_by(Listed::order);
            EntryStatus {
                path: entry.path.clone(),
                topic: entry.topic.clone(),
                files_matched,
                bytes_behind,
                last_error,
                files: files.into_iter().map(Listed::status).collect(),
            }
        })
        .collect();
    HostStatus {
        version: id.version.clone(),
        hostname: id.hostname.clone(),
        ip: id.ip.clone(),
        started_unix_ms: id.started_unix_ms,
        updated_unix_ms: now_unix_ms,
        config_key: id.config_key.clone(),
        applied_revision: source.applied_revision,
        config_error: source.last_error.clone(),
        from_saved: source.from_saved,
        kafka_reachable,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::collect::parse_entries;
    use std::borrow::Cow;

    fn identity() -> Identity {
        Identity {
            version: "1.2.3".into(),
            hostname: "web-1".into(),
            ip: "10.0.0.7".into(),
            started_unix_ms: 1_000,
            config_key: "collect_log_conf/10.0.0.7".into(),
        }
    }

    fn desired(json: &str) -> Desired {
        Desired {
            revision: 42,
            entries: parse_entries("k", 42, json.as_bytes(), &Default::default()).unwrap(),
            host_metrics: Vec::new(),
        }
    }

    /// The status of `files` open under `d`, with no problems and Kafka reachable.
    fn status_of(d: &Desired, files: &[OpenFile]) -> HostStatus {
        build_once(Inputs {
            source: &SourceStatus::default(),
            desired: Some(d),
            open: files,
            problems: &HashMap::new(),
            kafka_reachable: true,
            now_unix_ms: 0,
        })
    }

    /// A status built with no answers kept from an earlier build.
    fn build_once(inputs: Inputs<'_>) -> HostStatus {
        build(&identity(), &inputs, &mut Owners::default())
    }

    fn open(path: &str, topic: &str, acked: u64, lag: u64) -> OpenFile<'static> {
        OpenFile {
            // A key per path, as the registry's would be.
            key: FileKey {
                dev: 1,
                ino: std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default()
                    .hash_one(path),
            },
            path: Cow::Owned(path.into()),
            topic: Cow::Owned(topic.into()),
            acked,
            lag,
        }
    }

    fn problem(error: &str, at_ms: u64) -> FileProblem {
        FileProblem {
            error: error.into(),
            at_ms,
            waiting: false,
        }
    }

    #[test]
    fn files_are_grouped_under_their_entry_with_lag_and_errors() {
        let d = desired(
            r#"[{"path":"/var/log/app/*.log","topic":"app","exclude":["*/debug.log"]},
                {"path":"/var/log/nginx/access.log","topic":"web"}]"#,
        );
        let source = SourceStatus {
            applied_revision: Some(42),
            last_error: Some("revision 43 rejected".into()),
            connected: true,
            from_saved: false,
        };
        let files = [
            open("/var/log/app/a.log", "app", 100, 5),
            open("/var/log/app/b.log", "app", 10, 20),
            open("/var/log/nginx/access.log", "web", 7, 0),
            // Still draining after its entry was removed: belongs to no entry.
            open("/var/log/old/x.log", "old", 0, 99),
        ];
        let problems = HashMap::from([
            (
                "/var/log/app/c.log".into(),
                problem("cannot open: permission denied", 5),
            ),
            (
                "/var/log/app/a.log".into(),
                problem("Kafka rejected a record: too large", 3),
            ),
        ]);
        let s = build_once(Inputs {
            source: &source,
            desired: Some(&d),
            open: &files,
            problems: &problems,
            kafka_reachable: true,
            now_unix_ms: 9_000,
        });
        assert_eq!(
            (s.applied_revision, s.config_error.as_deref()),
            (Some(42), Some("revision 43 rejected"))
        );
        assert_eq!((s.version.as_str(), s.updated_unix_ms), ("1.2.3", 9_000));
        let app = &s.entries[0];
        assert_eq!((app.files_matched, app.bytes_behind), (3, 25));
        assert_eq!(
            app.last_error.as_deref(),
            Some("cannot open: permission denied"),
            "the most recent problem wins"
        );
        let order: Vec<&str> = app.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            order,
            [
                "/var/log/app/b.log",
                "/var/log/app/a.log",
                "/var/log/app/c.log"
            ],
            "largest lag first"
        );
        assert_eq!(
            app.files[1].error.as_deref(),
            Some("Kafka rejected a record: too large")
        );
        let web = &s.entries[1];
        assert_eq!(
            (
                web.files_matched,
                web.bytes_behind,
                web.last_error.as_deref()
            ),
            (1, 0, None)
        );
        assert_eq!((s.files(), s.bytes_behind()), (4, 25));
    }

    #[test]
    fn excluded_files_and_other_topics_are_not_counted() {
        let d = desired(r#"[{"path":"/l/*.log","topic":"t","exclude":["/l/skip.log"]}]"#);
        let files = [
            open("/l/skip.log", "t", 0, 1),
            open("/l/a.log", "other", 0, 1),
            open("/l/b.log", "t", 0, 1),
        ];
        let s = status_of(&d, &files);
        assert_eq!(s.entries[0].files_matched, 1);
        assert_eq!(s.entries[0].files[0].path, "/l/b.log");
    }

    #[test]
    fn file_list_is_capped_but_counted_in_full() {
        let d = desired(r#"[{"path":"/l/*.log","topic":"t"}]"#);
        let files: Vec<OpenFile> = (0..MAX_FILES_PER_ENTRY as u64 + 10)
            .map(|i| open(&format!("/l/{i}.log"), "t", 0, i))
            .collect();
        let s = status_of(&d, &files);
        let e = &s.entries[0];
        assert_eq!(e.files_matched, MAX_FILES_PER_ENTRY + 10);
        assert_eq!(e.files.len(), MAX_FILES_PER_ENTRY);
        assert_eq!(e.files[0].bytes_behind, MAX_FILES_PER_ENTRY as u64 + 9);
    }

    /// The listed files are the largest lags, ties by path, as a sort of every file gives (only
    /// the listed ones are sorted now): with many files lagging, and with fewer lagging than are
    /// listed (the rest then by path among the caught-up ones).
    #[test]
    fn the_listed_files_are_the_largest_lags_then_by_path() {
        for lagging_one_in in [1, 50] {
            listed_as_a_full_sort_lists(lagging_one_in);
        }
    }

    fn listed_as_a_full_sort_lists(lagging_one_in: u64) {
        let d = desired(r#"[{"path":"/l/*.log","topic":"t"}]"#);
        // Many equal lags, so the cut falls inside a run of ties broken by path.
        let files: Vec<OpenFile> = (0..500u64)
            .map(|i| {
                let lag = if i % lagging_one_in == 0 {
                    (i * 31) % 7
                } else {
                    0
                };
                open(&format!("/l/{}.log", (i * 7919) % 1000), "t", i, lag)
            })
            .collect();
        let s = status_of(&d, &files);
        let mut want: Vec<(u64, String)> = files
            .iter()
            .map(|f| (f.lag, f.path.display().to_string()))
            .collect();
        want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        want.truncate(MAX_FILES_PER_ENTRY);
        let got: Vec<(u64, String)> = s.entries[0]
            .files
            .iter()
            .map(|f| (f.bytes_behind, f.path.clone()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.entries[0].files_matched, 500);
        assert_eq!(
            s.entries[0].bytes_behind,
            files.iter().map(|f| f.lag).sum::<u64>()
        );
    }

    fn keyed(ino: u64, path: &str, topic: &str) -> OpenFile<'static> {
        OpenFile {
            key: FileKey { dev: 1, ino },
            ..open(path, topic, 0, 0)
        }
    }

    fn inputs<'a>(d: &'a Desired, files: &'a [OpenFile<'a>]) -> Inputs<'a> {
        Inputs {
            source: &SOURCE,
            desired: Some(d),
            open: files,
            problems: &NO_PROBLEMS,
            kafka_reachable: true,
            now_unix_ms: 0,
        }
    }

    static SOURCE: SourceStatus = SourceStatus {
        applied_revision: None,
        last_error: None,
        connected: true,
        from_saved: false,
    };
    static NO_PROBLEMS: std::sync::LazyLock<HashMap<PathBuf, FileProblem>> =
        std::sync::LazyLock::new(HashMap::new);

    /// Status writes with the same entries and the same open files match each file against the
    /// patterns once, and count the same.
    #[test]
    fn a_file_is_matched_once_while_the_entries_and_its_name_stay() {
        let d = desired(
            r#"[{"path":"/l/*.log","topic":"t","exclude":["/l/skip.log"]},
                {"path":"/m/*.log","topic":"u"}]"#,
        );
        let files = [
            keyed(1, "/l/a.log", "t"),
            keyed(2, "/l/skip.log", "t"),
            keyed(3, "/m/b.log", "u"),
            keyed(4, "/m/c.log", "t"),
        ];
        let mut owners = Owners::default();
        let first = build(&identity(), &inputs(&d, &files), &mut owners);
        assert_eq!(owners.matched, 4);
        let again = build(&identity(), &inputs(&d, &files), &mut owners);
        assert_eq!(owners.matched, 4, "matched again with nothing changed");
        assert!(first.same_as(&again));
        let counted: Vec<usize> = again.entries.iter().map(|e| e.files_matched).collect();
        assert_eq!(
            counted,
            [1, 1],
            "the excluded file and the other topic's are not counted"
        );
    }

    /// A kept answer holds only for the entries and the name it was found for, and only while the
    /// file stays open.
    #[test]
    fn a_file_is_matched_again_when_the_entries_or_its_name_change() {
        let logs = desired(r#"[{"path":"/l/*.log","topic":"t"}]"#);
        let texts = desired(r#"[{"path":"/l/*.txt","topic":"t"}]"#);
        let mut owners = Owners::default();
        let count = |d: &Desired, files: &[OpenFile<'_>], owners: &mut Owners| {
            build(&identity(), &inputs(d, files), owners).entries[0].files_matched
        };
        assert_eq!(count(&logs, &[keyed(1, "/l/a.log", "t")], &mut owners), 1);
        assert_eq!(
            count(&texts, &[keyed(1, "/l/a.log", "t")], &mut owners),
            0,
            "an answer found for other entries was kept"
        );
        assert_eq!(
            count(&texts, &[keyed(1, "/l/a.txt", "t")], &mut owners),
            1,
            "an answer found under another name was kept"
        );
        assert_eq!(
            count(&texts, &[keyed(1, "/l/a.txt", "x")], &mut owners),
            0,
            "an answer found under another topic was kept"
        );
        assert_eq!(owners.files.len(), 1);
        count(&texts, &[], &mut owners);
        assert!(
            owners.files.is_empty(),
            "a file no longer open is forgotten"
        );
    }

    #[test]
    fn no_configuration_yet_gives_no_entries() {
        let s = build_once(Inputs {
            source: &SourceStatus::default(),
            desired: None,
            open: &[open("/a", "t", 0, 1)],
            problems: &HashMap::new(),
            kafka_reachable: false,
            now_unix_ms: 0,
        });
        assert!(s.entries.is_empty());
        assert_eq!((s.applied_revision, s.kafka_reachable), (None, false));
    }

    #[test]
    fn only_the_write_time_is_ignored_when_comparing() {
        let a = build_once(Inputs {
            source: &SourceStatus::default(),
            desired: None,
            open: &[],
            problems: &HashMap::new(),
            kafka_reachable: true,
            now_unix_ms: 1,
        });
        let b = HostStatus {
            updated_unix_ms: 2,
            ..a.clone()
        };
        assert!(a.same_as(&b));
        let c = HostStatus {
            kafka_reachable: false,
            ..a.clone()
        };
        assert!(!a.same_as(&c));
    }

    #[test]
    fn json_round_trips_and_tolerates_missing_and_unknown_fields() {
        let d = desired(r#"[{"path":"/l/a.log","topic":"t"}]"#);
        let s = build_once(Inputs {
            source: &SourceStatus::default(),
            desired: Some(&d),
            open: &[open("/l/a.log", "t", 3, 4)],
            problems: &HashMap::new(),
            kafka_reachable: true,
            now_unix_ms: 5,
        });
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<HostStatus>(&text).unwrap(), s);
        let partial: HostStatus =
            serde_json::from_str(r#"{"hostname":"h","future_field":1}"#).unwrap();
        assert_eq!((partial.hostname.as_str(), partial.entries.len()), ("h", 0));
    }
}
