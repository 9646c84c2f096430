//! Parsers for the /proc files host metrics read, pure (text in, structs out) so each is tested on
//! fixtures; [`read_to_string`] is the only I/O. Unknown or short lines are skipped, never fatal: a
//! kernel that adds a column or a device that vanishes between two reads must not stop sampling.

use std::io::Read as _;

/// Cumulative CPU times of one `cpu` line of /proc/stat, in clock ticks (USER_HZ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    /// Included in `user` by the kernel (and `guest_nice` in `nice`).
    pub guest: u64,
    pub guest_nice: u64,
}

impl CpuTimes {
    /// Every tick once: guest time is already inside user and nice.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// The `cpu` lines of /proc/stat: `("cpu-total", ..)` for the aggregate line, then `("cpu0", ..)`,
/// ... as Telegraf tags them.
pub fn parse_stat(text: &str) -> Vec<(String, CpuTimes)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(name) = it.next().filter(|n| n.starts_with("cpu")) else {
            continue;
        };
        let v: Vec<u64> = it.map_while(|x| x.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let name = if name == "cpu" {
            "cpu-total".to_owned()
        } else {
            name.to_owned()
        };
        out.push((
            name,
            CpuTimes {
                user: at(0),
                nice: at(1),
                system: at(2),
                idle: at(3),
                iowait: at(4),
                irq: at(5),
                softirq: at(6),
                steal: at(7),
                guest: at(8),
                guest_nice: at(9),
            },
        ));
    }
    out
}

/// The /proc/meminfo values host metrics use, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub sreclaimable: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut it = rest.split_ascii_whitespace();
        let Some(n) = it.next().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let bytes = if it.next() == Some("kB") { n * 1024 } else { n };
        let slot = match key {
            "MemTotal" => &mut m.total,
            "MemFree" => &mut m.free,
            "MemAvailable" => &mut m.available,
            "Buffers" => &mut m.buffers,
            "Cached" => &mut m.cached,
            "SReclaimable" => &mut m.sreclaimable,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            _ => continue,
        };
        *slot = bytes;
    }
    m
}

/// Pages swapped in and out since boot (/proc/vmstat `pswpin`, `pswpout`).
pub fn parse_vmstat_swap(text: &str) -> (u64, u64) {
    let (mut pin, mut pout) = (0, 0);
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse().ok())) {
            (Some("pswpin"), Some(v)) => pin = v,
            (Some("pswpout"), Some(v)) => pout = v,
            _ => {}
        }
    }
    (pin, pout)
}

/// /proc/loadavg's three load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_ascii_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Whole seconds since boot, from /proc/uptime.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub path: String,
    pub fstype: String,
    /// `ro` or `rw`, Telegraf's `mode` tag.
    pub mode: &'static str,
}

/// /proc/self/mounts, with the kernel's octal escapes (`\040` for a space) undone.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_ascii_whitespace();
            let (device, path, fstype, opts) = (it.next()?, it.next()?, it.next()?, it.next()?);
            let ro = opts.split(',').any(|o| o == "ro");
            Some(Mount {
                device: unescape_octal(device),
                path: unescape_octal(path),
                fstype: fstype.to_owned(),
                mode: if ro { "ro" } else { "rw" },
            })
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One device of /proc/diskstats (times in milliseconds, sectors of 512 bytes whatever the device).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskStat {
    pub name: String,
    pub reads: u64,
    pub merged_reads: u64,
    pub read_sectors: u64,
    pub read_time: u64,
    pub writes: u64,
    pub merged_writes: u64,
    pub write_sectors: u64,
    pub write_time: u64,
    pub iops_in_progress: u64,
    pub io_time: u64,
    pub weighted_io_time: u64,
}

pub fn parse_diskstats(text: &str) -> Vec<DiskStat> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_ascii_whitespace().skip(2);
            let name = it.next()?.to_owned();
            let v: Vec<u64> = it.map_while(|x| x.parse().ok()).collect();
            if v.len() < 11 {
                return None;
            }
            Some(DiskStat {
                name,
                reads: v[0],
                merged_reads: v[1],
                read_sectors: v[2],
                read_time: v[3],
                writes: v[4],
                merged_writes: v[5],
                write_sectors: v[6],
                write_time: v[7],
                iops_in_progress: v[8],
                io_time: v[9],
                weighted_io_time: v[10],
            })
        })
        .collect()
}

/// One interface of /proc/net/dev.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub bytes_recv: u64,
    pub packets_recv: u64,
    pub err_in: u64,
    pub drop_in: u64,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    pub err_out: u64,
    pub drop_out: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            // The two header lines have no colon before their columns.
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_ascii_whitespace()
                .map_while(|x| x.parse().ok())
                .collect();
            if v.len() < 16 {
                return None;
            }
            Some(NetDev {
                name: name.trim().to_owned(),
                bytes_recv: v[0],
                packets_recv: v[1],
                err_in: v[2],
                drop_in: v[3],
                bytes_sent: v[8],
                packets_sent: v[9],
                err_out: v[10],
                drop_out: v[11],
            })
        })
        .collect()
}

/// Reads a /proc file whole. /proc files report size 0, so `fs::read_to_string`'s size hint is
/// useless; a reused buffer keeps the sample from allocating anew each time.
pub fn read_to_string(path: &str, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n\
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
cpu1 1335 2 3 4\n\
intr 199292359 0 0\nctxt 12345\nbtime 1700000000\n";

    #[test]
    fn stat_cpu_lines_become_cpu_total_and_per_core() {
        let cpus = parse_stat(STAT);
        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[0].0, "cpu-total");
        assert_eq!(cpus[0].1.user, 10132153);
        assert_eq!(cpus[0].1.guest, 175628);
        assert_eq!(cpus[1].0, "cpu0");
        assert_eq!(cpus[1].1.softirq, 17875);
        // An old kernel's four columns: the rest are zero, not a skipped core.
        assert_eq!(
            cpus[2].1,
            CpuTimes {
                user: 1335,
                nice: 2,
                system: 3,
                idle: 4,
                ..CpuTimes::default()
            }
        );
        assert_eq!(cpus[2].1.total(), 1344);
    }

    #[test]
    fn meminfo_in_bytes() {
        let m = parse_meminfo(
            "MemTotal:       16305100 kB\nMemFree:         1084300 kB\nMemAvailable:    9000000 kB\n\
Buffers:          500000 kB\nCached:          6000000 kB\nSwapCached: 0 kB\nSReclaimable:     400000 kB\n\
SwapTotal:       2097148 kB\nSwapFree:        2000000 kB\nHugePages_Total:       0\n",
        );
        assert_eq!(m.total, 16305100 * 1024);
        assert_eq!(m.available, 9000000 * 1024);
        assert_eq!(m.sreclaimable, 400000 * 1024);
        assert_eq!(m.swap_free, 2000000 * 1024);
    }

    #[test]
    fn vmstat_loadavg_uptime() {
        assert_eq!(
            parse_vmstat_swap("pgpgin 5\npswpin 12\npswpout 34\n"),
            (12, 34)
        );
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1191 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52\n"), None);
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Some(350735));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn mounts_unescape_spaces_and_read_the_mode() {
        let m = parse_mounts(
            "/dev/sda1 / ext4 rw,relatime 0 0\n/dev/sdb1 /mnt/my\\040disk vfat ro,noatime 0 0\nbroken\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mode, "rw");
        assert_eq!(m[1].path, "/mnt/my disk");
        assert_eq!(m[1].fstype, "vfat");
        assert_eq!(m[1].mode, "ro");
        assert_eq!(unescape_octal("a\\134b\\0"), "a\\b\\0");
    }

    #[test]
    fn diskstats_columns() {
        let d = parse_diskstats(
            "   8       0 sda 1000 20 30000 400 500 60 70000 800 1 900 1200 0 0 0 0\n   7 0 loop0 1 2 3\n",
        );
        assert_eq!(d.len(), 1, "short lines are skipped");
        let s = &d[0];
        assert_eq!(s.name, "sda");
        assert_eq!(
            (s.reads, s.merged_reads, s.read_sectors, s.read_time),
            (1000, 20, 30000, 400)
        );
        assert_eq!(
            (
                s.writes,
                s.write_sectors,
                s.iops_in_progress,
                s.io_time,
                s.weighted_io_time
            ),
            (500, 70000, 1, 900, 1200)
        );
    }

    #[test]
    fn net_dev_skips_headers() {
        let n = parse_net_dev(
            "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 987654321 1234 1 2 0 0 0 5 123456 789 3 4 0 0 0 0\n",
        );
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].name, "eth0");
        assert_eq!(
            (
                n[1].bytes_recv,
                n[1].packets_recv,
                n[1].err_in,
                n[1].drop_in
            ),
            (987654321, 1234, 1, 2)
        );
        assert_eq!(
            (
                n[1].bytes_sent,
                n[1].packets_sent,
                n[1].err_out,
                n[1].drop_out
            ),
            (123456, 789, 3, 4)
        );
    }

    #[test]
    fn parsers_read_this_machines_proc() {
        let mut buf = String::new();
        read_to_string("/proc/stat", &mut buf).unwrap();
        let cpus = parse_stat(&buf);
        assert_eq!(cpus[0].0, "cpu-total");
        assert!(cpus.len() >= 2, "a total and at least one core");
        read_to_string("/proc/meminfo", &mut buf).unwrap();
        let m = parse_meminfo(&buf);
        assert!(m.total > 0 && m.available <= m.total, "{m:?}");
        read_to_string("/proc/loadavg", &mut buf).unwrap();
        assert!(parse_loadavg(&buf).is_some());
        read_to_string("/proc/self/mounts", &mut buf).unwrap();
        assert!(parse_mounts(&buf).iter().any(|m| m.path == "/"));
        read_to_string("/proc/net/dev", &mut buf).unwrap();
        assert!(parse_net_dev(&buf).iter().any(|n| n.name == "lo"));
    }
}
