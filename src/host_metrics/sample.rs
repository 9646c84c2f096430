//! One reading of the host ([`Sample`], I/O in [`read`]) and the points two readings make ([`points`],
//! pure): counters as they are, rates (CPU usage) from the difference to the previous sample, so
//! the first sample of an entry emits counters only.

use std::path::Path;

use super::line_protocol::Point;
use super::procfs::{self, CpuTimes, DiskStat, MemInfo, Mount, NetDev};
use crate::config::host_metrics::{Collector, HostMetricsEntry};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub mount: Mount,
    pub total: u64,
    pub free: u64,
    pub used: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Wall-clock time of the reading, ns since the epoch: every point of the sample carries it.
    pub at_ns: i64,
    pub cpus: Vec<(String, CpuTimes)>,
    /// Clock ticks per second of /proc/stat's times.
    pub clock_ticks: u64,
    pub mem: Option<MemInfo>,
    /// Pages swapped in and out since boot.
    pub swap_io: (u64, u64),
    pub page_size: u64,
    pub load: Option<[f64; 3]>,
    pub uptime_s: Option<u64>,
    pub disks: Vec<DiskUsage>,
    pub diskio: Vec<DiskStat>,
    pub net: Vec<NetDev>,
}

/// The tags every point carries.
#[derive(Clone, Debug)]
pub struct HostTags {
    pub host: String,
    pub ip: String,
}

/// File systems without storage of their own (Telegraf's `ignore_fs` defaults and the kernel's
/// virtual ones): their sizes say nothing about the host's disks.
const VIRTUAL_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "devfs",
    "iso9660",
    "overlay",
    "aufs",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "ramfs",
    "selinuxfs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "nfsd",
];

fn matches_any(globs: &[glob::Pattern], text: &str) -> bool {
    globs.iter().any(|g| g.matches(text))
}

/// Compiled once per entry: the entry's include globs.
#[derive(Debug, Default)]
pub struct Filters {
    mountpoints: Vec<glob::Pattern>,
    interfaces: Vec<glob::Pattern>,
}

impl Filters {
    pub fn new(entry: &HostMetricsEntry) -> Filters {
        let compile = |v: &[String]| {
            v.iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .collect()
        };
        Filters {
            mountpoints: compile(&entry.mountpoints),
            interfaces: compile(&entry.interfaces),
        }
    }

    pub fn mount(&self, m: &Mount) -> bool {
        if self.mountpoints.is_empty() {
            !VIRTUAL_FS.contains(&m.fstype.as_str())
        } else {
            matches_any(&self.mountpoints, &m.path)
        }
    }

    pub fn interface(&self, name: &str) -> bool {
        if self.interfaces.is_empty() {
            name != "lo"
        } else {
            matches_any(&self.interfaces, name)
        }
    }
}

/// Reads what the entry's collectors need. Blocking (statvfs on a hung network mount blocks):
/// callers run it off the async workers. A file that cannot be read leaves its part empty.
pub fn read(entry: &HostMetricsEntry, filters: &Filters, buf: &mut String) -> Sample {
    let mut s = Sample {
        at_ns: now_ns(),
        // SAFETY: sysconf only reads a configuration value.
        clock_ticks: u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(100),
        // SAFETY: as above.
        page_size: u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(4096),
        ..Sample::default()
    };
    let mut with = |path: &str, f: &mut dyn FnMut(&str)| {
        if procfs::read_to_string(path, buf).is_ok() {
            f(buf);
        }
    };
    // The CPU count of `system` comes from /proc/stat too.
    if entry.wants(Collector::Cpu) || entry.wants(Collector::System) {
        with("/proc/stat", &mut |t| s.cpus = procfs::parse_stat(t));
    }
    if entry.wants(Collector::Mem) || entry.wants(Collector::Swap) {
        with("/proc/meminfo", &mut |t| {
            s.mem = Some(procfs::parse_meminfo(t))
        });
    }
    if entry.wants(Collector::Swap) {
        with("/proc/vmstat", &mut |t| {
            s.swap_io = procfs::parse_vmstat_swap(t)
        });
    }
    if entry.wants(Collector::System) {
        with("/proc/loadavg", &mut |t| s.load = procfs::parse_loadavg(t));
        with("/proc/uptime", &mut |t| {
            s.uptime_s = procfs::parse_uptime(t)
        });
    }
    if entry.wants(Collector::Disk) {
        let mut mounts = Vec::new();
        with("/proc/self/mounts", &mut |t| {
            mounts = procfs::parse_mounts(t)
        });
        let mut seen = std::collections::HashSet::new();
        for m in mounts {
            // A path mounted over keeps only its last mount visible; bind mounts repeat paths.
            if !filters.mount(&m) || !seen.insert(m.path.clone()) {
                continue;
            }
            if let Some(u) = statvfs(m) {
                s.disks.push(u);
            }
        }
    }
    if entry.wants(Collector::Diskio) {
        with("/proc/diskstats", &mut |t| {
            // Devices never used (unattached loop and ram devices) would only add empty series.
            s.diskio = procfs::parse_diskstats(t)
                .into_iter()
                .filter(|d| d.reads + d.writes > 0)
                .collect();
        });
    }
    if entry.wants(Collector::Net) {
        with("/proc/net/dev", &mut |t| {
            s.net = procfs::parse_net_dev(t)
                .into_iter()
                .filter(|n| filters.interface(&n.name))
                .collect();
        });
    }
    s
}

fn statvfs(mount: Mount) -> Option<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(Path::new(&mount.path).as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path and a zeroed out-parameter of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    Some(DiskUsage {
        total,
        // What an unprivileged user can still write, as `df` and Telegraf report it.
        free: st.f_bavail as u64 * frsize,
        used: (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * frsize,
        inodes_total: st.f_files as u64,
        inodes_free: st.f_ffree as u64,
        mount,
    })
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// The points of `cur`, with rates against `prev` (the entry's previous sample) when there is one.
/// Measurement, tag and field names are Telegraf's.
pub fn points(
    entry: &HostMetricsEntry,
    prev: Option<&Sample>,
    cur: &Sample,
    tags: &HostTags,
) -> Vec<Point> {
    let t = cur.at_ns;
    let base = |m: &'static str| {
        Point::new(m, t)
            .tag("host", tags.host.clone())
            .tag("ip", tags.ip.clone())
    };
    let mut out = Vec::new();
    if entry.wants(Collector::Cpu) {
        for (name, now) in &cur.cpus {
            let mut p = base("cpu").tag("cpu", name.clone());
            let before = prev.and_then(|s| s.cpus.iter().find(|(n, _)| n == name).map(|c| c.1));
            match before {
                // Ticks went backwards (a core was offlined and back): no rate this time.
                Some(b) if now.total() > b.total() => {
                    let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
                    let total = d(now.total(), b.total());
                    let guest = d(now.guest, b.guest);
                    let guest_nice = d(now.guest_nice, b.guest_nice);
                    p.float("usage_user", percent(d(now.user, b.user) - guest, total));
                    p.float("usage_system", percent(d(now.system, b.system), total));
                    p.float("usage_idle", percent(d(now.idle, b.idle), total));
                    p.float(
                        "usage_nice",
                        percent(d(now.nice, b.nice) - guest_nice, total),
                    );
                    p.float("usage_iowait", percent(d(now.iowait, b.iowait), total));
                    p.float("usage_irq", percent(d(now.irq, b.irq), total));
                    p.float("usage_softirq", percent(d(now.softirq, b.softirq), total));
                    p.float("usage_steal", percent(d(now.steal, b.steal), total));
                    p.float("usage_guest", percent(guest, total));
                    p.float("usage_guest_nice", percent(guest_nice, total));
                }
                // The first sample: the cumulative times (Telegraf's `collect_cpu_time` names).
                _ => {
                    let secs = |ticks: u64| ticks as f64 / cur.clock_ticks as f64;
                    p.float("time_user", secs(now.user));
                    p.float("time_system", secs(now.system));
                    p.float("time_idle", secs(now.idle));
                    p.float("time_nice", secs(now.nice));
                    p.float("time_iowait", secs(now.iowait));
                    p.float("time_irq", secs(now.irq));
                    p.float("time_softirq", secs(now.softirq));
                    p.float("time_steal", secs(now.steal));
                    p.float("time_guest", secs(now.guest));
                    p.float("time_guest_nice", secs(now.guest_nice));
                }
            }
            out.push(p);
        }
    }
    if let (true, Some(m)) = (entry.wants(Collector::Mem), cur.mem) {
        let mut p = base("mem");
        let cached = m.cached + m.sreclaimable;
        // gopsutil's (hence Telegraf's) definition: what is neither free nor reclaimable cache.
        let used = m.total.saturating_sub(m.free + m.buffers + cached);
        p.int("total", m.total);
        p.int("available", m.available);
        p.int("used", used);
        p.int("free", m.free);
        p.int("buffered", m.buffers);
        p.int("cached", cached);
        p.float("used_percent", percent(used as f64, m.total as f64));
        p.float(
            "available_percent",
            percent(m.available as f64, m.total as f64),
        );
        out.push(p);
    }
    if let (true, Some(m)) = (entry.wants(Collector::Swap), cur.mem) {
        let mut p = base("swap");
        let used = m.swap_total.saturating_sub(m.swap_free);
        p.int("total", m.swap_total);
        p.int("used", used);
        p.int("free", m.swap_free);
        p.float("used_percent", percent(used as f64, m.swap_total as f64));
        p.int("in", cur.swap_io.0 * cur.page_size);
        p.int("out", cur.swap_io.1 * cur.page_size);
        out.push(p);
    }
    if entry.wants(Collector::Disk) {
        for d in &cur.disks {
            let mut p = base("disk")
                .tag("path", d.mount.path.clone())
                .tag(
                    "device",
                    d.mount.device.trim_start_matches("/dev/").to_owned(),
                )
                .tag("fstype", d.mount.fstype.clone())
                .tag("mode", d.mount.mode);
            p.int("total", d.total);
            p.int("free", d.free);
            p.int("used", d.used);
            // Of what users can reach (used + available), as `df` computes Use%.
            p.float(
                "used_percent",
                percent(d.used as f64, (d.used + d.free) as f64),
            );
            p.int("inodes_total", d.inodes_total);
            p.int("inodes_free", d.inodes_free);
            p.int("inodes_used", d.inodes_total.saturating_sub(d.inodes_free));
            out.push(p);
        }
    }
    if entry.wants(Collector::Diskio) {
        for d in &cur.diskio {
            let mut p = base("diskio").tag("name", d.name.clone());
            p.int("reads", d.reads);
            p.int("writes", d.writes);
            p.int("read_bytes", d.read_sectors * 512);
            p.int("write_bytes", d.write_sectors * 512);
            p.int("read_time", d.read_time);
            p.int("write_time", d.write_time);
            p.int("io_time", d.io_time);
            p.int("weighted_io_time", d.weighted_io_time);
            p.int("iops_in_progress", d.iops_in_progress);
            p.int("merged_reads", d.merged_reads);
            p.int("merged_writes", d.merged_writes);
            out.push(p);
        }
    }
    if entry.wants(Collector::Net) {
        for n in &cur.net {
            let mut p = base("net").tag("interface", n.name.clone());
            p.int("bytes_sent", n.bytes_sent);
            p.int("bytes_recv", n.bytes_recv);
            p.int("packets_sent", n.packets_sent);
            p.int("packets_recv", n.packets_recv);
            p.int("err_in", n.err_in);
            p.int("err_out", n.err_out);
            p.int("drop_in", n.drop_in);
            p.int("drop_out", n.drop_out);
            out.push(p);
        }
    }
    if entry.wants(Collector::System) {
        let mut p = base("system");
        if let Some([l1, l5, l15]) = cur.load {
            p.float("load1", l1);
            p.float("load5", l5);
            p.float("load15", l15);
        }
        let cores = cur.cpus.iter().filter(|(n, _)| n != "cpu-total").count();
        if cores > 0 {
            p.int("n_cpus", cores as u64);
        }
        if let Some(up) = cur.uptime_s {
            p.int("uptime", up);
        }
        if !p.fields.is_empty() {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::host_metrics::Output;
    use crate::host_metrics::line_protocol::FieldValue;

    fn entry(collectors: &[Collector]) -> HostMetricsEntry {
        HostMetricsEntry {
            output: Output::Topic("t".into()),
            interval_ms: 10_000,
            collectors: collectors.iter().copied().collect(),
            mountpoints: vec![],
            interfaces: vec![],
        }
    }

    fn tags() -> HostTags {
        HostTags {
            host: "web-1".into(),
            ip: "10.0.0.5".into(),
        }
    }

    fn field(p: &Point, name: &str) -> Option<FieldValue> {
        p.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|f| f.1.clone())
    }

    fn cpu_sample(at_ns: i64, user: u64, system: u64, idle: u64, guest: u64) -> Sample {
        Sample {
            at_ns,
            clock_ticks: 100,
            cpus: vec![(
                "cpu-total".into(),
                CpuTimes {
                    user,
                    system,
                    idle,
                    guest,
                    ..CpuTimes::default()
                },
            )],
            ..Sample::default()
        }
    }

    #[test]
    fn the_first_sample_has_cpu_counters_the_next_ones_usage_rates() {
        let e = entry(&[Collector::Cpu]);
        let first = cpu_sample(1_000, 1000, 500, 8500, 0);
        let p = points(&e, None, &first, &tags());
        assert_eq!(p.len(), 1);
        assert_eq!(field(&p[0], "time_user"), Some(FieldValue::Float(10.0)));
        assert_eq!(
            field(&p[0], "usage_user"),
            None,
            "no rate without a previous sample"
        );
        // 100 ticks later: 30 user (10 of them guest), 20 system, 50 idle.
        let second = cpu_sample(2_000, 1030, 520, 8550, 10);
        let p = points(&e, Some(&first), &second, &tags());
        assert_eq!(
            p[0].timestamp_ns, 2_000,
            "the sample's time, not the send time"
        );
        assert_eq!(field(&p[0], "usage_user"), Some(FieldValue::Float(20.0)));
        assert_eq!(field(&p[0], "usage_guest"), Some(FieldValue::Float(10.0)));
        assert_eq!(field(&p[0], "usage_system"), Some(FieldValue::Float(20.0)));
        assert_eq!(field(&p[0], "usage_idle"), Some(FieldValue::Float(50.0)));
        assert_eq!(field(&p[0], "time_user"), None);
        assert_eq!(
            p[0].encode().unwrap().split(' ').next().unwrap(),
            "cpu,cpu=cpu-total,host=web-1,ip=10.0.0.5"
        );
        // Counters that went backwards give no rate (and no negative percentage).
        let p = points(&e, Some(&second), &first, &tags());
        assert_eq!(field(&p[0], "usage_user"), None);
    }

    #[test]
    fn mem_and_swap_as_telegraf_computes_them() {
        let e = entry(&[Collector::Mem, Collector::Swap]);
        let s = Sample {
            at_ns: 7,
            page_size: 4096,
            swap_io: (2, 3),
            mem: Some(MemInfo {
                total: 1000,
                free: 100,
                available: 600,
                buffers: 50,
                cached: 200,
                sreclaimable: 50,
                swap_total: 400,
                swap_free: 300,
            }),
            ..Sample::default()
        };
        let p = points(&e, None, &s, &tags());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].measurement, "mem");
        assert_eq!(field(&p[0], "used"), Some(FieldValue::Int(600)));
        assert_eq!(field(&p[0], "used_percent"), Some(FieldValue::Float(60.0)));
        assert_eq!(field(&p[0], "available"), Some(FieldValue::Int(600)));
        assert_eq!(p[1].measurement, "swap");
        assert_eq!(field(&p[1], "used_percent"), Some(FieldValue::Float(25.0)));
        assert_eq!(field(&p[1], "in"), Some(FieldValue::Int(8192)));
    }

    #[test]
    fn only_the_chosen_collectors_emit() {
        let mut s = cpu_sample(1, 1, 1, 1, 0);
        s.load = Some([0.5, 0.25, 0.125]);
        s.uptime_s = Some(99);
        s.net = vec![NetDev {
            name: "eth0".into(),
            bytes_sent: 5,
            ..NetDev::default()
        }];
        let p = points(&entry(&[Collector::System]), None, &s, &tags());
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].encode().unwrap(),
            "system,host=web-1,ip=10.0.0.5 load1=0.5,load5=0.25,load15=0.125,uptime=99i 1"
        );
        let p = points(&entry(&[Collector::Net]), None, &s, &tags());
        assert_eq!(p.len(), 1);
        assert!(p[0]
            .encode()
            .unwrap()
            .starts_with("net,host=web-1,interface=eth0,ip=10.0.0.5 bytes_sent=5i,"));
    }

    #[test]
    fn filters_default_to_real_file_systems_and_non_loopback_interfaces() {
        let m = |path: &str, fstype: &str| Mount {
            device: "/dev/x".into(),
            path: path.into(),
            fstype: fstype.into(),
            mode: "rw",
        };
        let all = Filters::new(&entry(&[]));
        assert!(all.mount(&m("/", "ext4")));
        assert!(!all.mount(&m("/run", "tmpfs")));
        assert!(all.interface("eth0") && !all.interface("lo"));
        let mut e = entry(&[]);
        e.mountpoints = vec!["/data*".into()];
        e.interfaces = vec!["lo".into()];
        let some = Filters::new(&e);
        assert!(some.mount(&m("/data1", "xfs")) && !some.mount(&m("/", "ext4")));
        assert!(some.interface("lo") && !some.interface("eth0"));
    }

    #[test]
    fn reading_this_host_gives_every_measurement() {
        let e = entry(&Collector::ALL);
        let f = Filters::new(&e);
        let mut buf = String::new();
        let a = read(&e, &f, &mut buf);
        let b = read(&e, &f, &mut buf);
        assert!(b.at_ns >= a.at_ns && a.at_ns > 1_600_000_000_000_000_000);
        let p = points(&e, Some(&a), &b, &tags());
        for m in ["cpu", "mem", "swap", "system"] {
            assert!(p.iter().any(|x| x.measurement == m), "no {m} point");
        }
        assert!(p.iter().all(|x| x.encode().is_some()));
    }
}
