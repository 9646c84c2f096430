//! nginx access-log lines (combined format): 100–300 bytes, about 150 on average, or a fixed size.

use std::io::Write;

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD",
];
const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/users",
    "/api/v1/orders",
    "/api/v2/search",
    "/static/js/app.js",
    "/static/css/main.css",
    "/images/logo.png",
    "/healthz",
    "/login",
    "/cart/checkout",
    "/products/category/shoes",
];
const STATUSES: &[u16] = &[200, 200, 200, 200, 200, 200, 301, 304, 404, 500, 502];
const REFERERS: &[&str] = &[
    "-",
    "-",
    "-",
    "https://example.com/",
    "https://www.google.com/",
    "https://shop.example.com/cart",
];
const AGENTS: &[&str] = &[
    "curl/8.5.0",
    "Go-http-client/1.1",
    "kube-probe/1.29",
    "python-requests/2.31.0",
    "Prometheus/2.48.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
];
const MIN: usize = 100;
const MAX: usize = 300;

/// Writes lines into a buffer; deterministic for a seed.
pub struct LineGen {
    rng: fastrand::Rng,
    fixed: Option<usize>,
    /// Seconds since the start of the log, for the timestamp.
    clock: u64,
    n: u64,
}

impl LineGen {
    pub fn new(seed: u64, fixed: Option<usize>) -> LineGen {
        LineGen {
            rng: fastrand::Rng::with_seed(seed),
            fixed: fixed.map(|b| b.max(2)),
            clock: 0,
            n: 0,
        }
    }

    /// Appends one line with its `\n`; returns its length including the newline.
    pub fn line(&mut self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        let r = &mut self.rng;
        self.n += 1;
        if self.n % 64 == 0 {
            self.clock += 1;
        }
        let (h, m, s) = (
            (self.clock / 3600) % 24,
            (self.clock / 60) % 60,
            self.clock % 60,
        );
        let _ = write!(
            out,
            "10.{}.{}.{} - - [21/Nov/2025:{h:02}:{m:02}:{s:02} +0000] \"{} {}?p={} HTTP/1.1\" {} {} \"{}\" \"{}\"",
            r.u8(..),
            r.u8(..),
            r.u8(1..255),
            METHODS[r.usize(..METHODS.len())],
            PATHS[r.usize(..PATHS.len())],
            r.u16(1..1000),
            STATUSES[r.usize(..STATUSES.len())],
            r.u32(0..200_000),
            REFERERS[r.usize(..REFERERS.len())],
            AGENTS[r.usize(..AGENTS.len())],
        );
        let want = match self.fixed {
            Some(b) => b - 1,
            None => (out.len() - start).clamp(MIN - 1, MAX - 1),
        };
        let have = out.len() - start;
        if have > want {
            out.truncate(start + want);
        } else {
            // Filler after the last field, where extra log_format fields would be.
            out.resize(start + want, b'x');
        }
        out.push(b'\n');
        want + 1
    }
}

/// Writes `lines` lines to `path` (appending); returns the bytes written.
pub fn write_file(path: &std::path::Path, gen: &mut LineGen, lines: u64) -> std::io::Result<u64> {
    write_lines(path, gen, lines, &[Vec::new()])
}

/// Like [`write_file`], each line led by Chinese text in GBK (two bytes a character), the way
/// applications on Chinese fleets log.
pub fn write_gbk_file(
    path: &std::path::Path,
    gen: &mut LineGen,
    lines: u64,
) -> std::io::Result<u64> {
    const PREFIXES: &[&str] = &[
        "请求完成 用户=张三 ",
        "连接超时 重试中 ",
        "订单已创建 ",
        "缓存未命中 ",
    ];
    let prefixes: Vec<Vec<u8>> = PREFIXES
        .iter()
        .map(|p| encoding_rs::GBK.encode(p).0.into_owned())
        .collect();
    write_lines(path, gen, lines, &prefixes)
}

/// Appends `lines` generated lines, line `i` led by `prefixes[i % len]`, in writes of about 1 MiB.
fn write_lines(
    path: &std::path::Path,
    gen: &mut LineGen,
    lines: u64,
    prefixes: &[Vec<u8>],
) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut total = 0u64;
    for i in 0..lines {
        let p = &prefixes[(i % prefixes.len() as u64) as usize];
        buf.extend_from_slice(p);
        total += (p.len() + gen.line(&mut buf)) as u64;
        if buf.len() >= (1 << 20) - 1024 || i + 1 == lines {
            f.write_all(&buf)?;
            buf.clear();
        }
    }
    Ok(total)
}
