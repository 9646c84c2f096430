//! A real InfluxDB 1.x (Debian's `influxd`) on free loopback ports, with its meta, data and WAL
//! dirs in a temp dir; killed by PID on drop. Restartable on the same port and data (an outage).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::free_port;
use super::process::{start_on_fresh_ports, Proc};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

pub struct Influx {
    // Declared before `dir` so the process dies before its data dir is removed.
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Influx {
    /// Starts influxd and waits until `/ping` answers 204.
    pub async fn start() -> anyhow::Result<Influx> {
        let bin = influxd_bin();
        anyhow::ensure!(
            bin.exists(),
            "{} not found: run scripts/install-deps.sh (apt package influxdb)",
            bin.display()
        );
        start_on_fresh_ports(START_ATTEMPTS, || async {
            let dir = tempfile::Builder::new().prefix("influxdb-").tempdir()?;
            let (port, rpc_port) = (free_port(), free_port());
            let d = dir.path().display();
            let conf = format!(
                r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
"#
            );
            let conf_path = dir.path().join("influxdb.conf");
            std::fs::write(&conf_path, conf)?;
            let args: Vec<OsString> = vec!["-config".into(), conf_path.into_os_string()];
            let proc = Proc::new(
                "influxd",
                &bin,
                args,
                dir.path(),
                &dir.path().join("influxd.log"),
            );
            let mut influx = Influx { proc, port, dir };
            influx.proc.spawn()?;
            match influx.wait_ready().await {
                Ok(()) => Ok(Ok(influx)),
                Err(e) if influx.proc.bind_failed() => Ok(Err(e)),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// `http://127.0.0.1:PORT`, the form `[influxdb] url` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    /// SIGKILL (only this influxd, by PID); the data stays for `restart`.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Starts again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.proc.spawn()?;
        self.wait_ready().await
    }

    pub async fn create_database(&self, db: &str) -> anyhow::Result<()> {
        let (code, body) = self
            .request(
                "POST",
                &format!("/query?q={}", encode(&format!("CREATE DATABASE \"{db}\""))),
                "",
            )
            .await?;
        anyhow::ensure!(code == 200, "CREATE DATABASE {db}: {code} {body}");
        Ok(())
    }

    /// Writes line protocol (ns precision) as a client other than the agent would.
    pub async fn write(&self, db: &str, lines: &str) -> anyhow::Result<()> {
        let (code, body) = self
            .request(
                "POST",
                &format!("/write?db={}&precision=ns", encode(db)),
                lines,
            )
            .await?;
        anyhow::ensure!(code == 204, "write to {db}: {code} {body}");
        Ok(())
    }

    /// Runs an InfluxQL query; the JSON answer's first statement result (`{"series": [...]}`).
    pub async fn query(&self, db: &str, q: &str) -> anyhow::Result<serde_json::Value> {
        let (code, body) = self
            .request(
                "GET",
                &format!("/query?db={}&epoch=ns&q={}", encode(db), encode(q)),
                "",
            )
            .await?;
        anyhow::ensure!(code == 200, "query {q:?}: {code} {body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("query {q:?}: not JSON ({e}): {body}"))?;
        let first = v["results"][0].clone();
        if let Some(err) = first.get("error") {
            anyhow::bail!("query {q:?}: {err}");
        }
        Ok(first)
    }

    /// The rows of a query as (column name → value) maps, over every series, with the series' tags.
    pub async fn rows(
        &self,
        db: &str,
        q: &str,
    ) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let r = self.query(db, q).await?;
        let mut out = Vec::new();
        for s in r["series"].as_array().into_iter().flatten() {
            let cols: Vec<String> = s["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            for v in s["values"].as_array().into_iter().flatten() {
                let mut row = serde_json::Map::new();
                if let Some(tags) = s["tags"].as_object() {
                    row.extend(tags.clone());
                }
                for (c, x) in cols.iter().zip(v.as_array().into_iter().flatten()) {
                    row.insert(c.clone(), x.clone());
                }
                out.push(row);
            }
        }
        Ok(out)
    }

    /// One HTTP/1.0 exchange (the server closes the connection, so the body is all that follows
    /// the head, never chunked): (status, body).
    async fn request(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        request(self.port, method, path, body).await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let (what, port) = (format!("influxd on {}", self.url()), self.port);
        self.proc
            .wait_ready(
                &what,
                READY_TIMEOUT,
                Duration::from_millis(100),
                || async move {
                    match request(port, "GET", "/ping", "").await? {
                        (204, _) => Ok(()),
                        (code, body) => Err(anyhow::anyhow!("{code} {body}")),
                    }
                },
            )
            .await
    }
}

/// One HTTP/1.0 request to influxd on `port`: (status, body).
async fn request(port: u16, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let io = async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no HTTP head in {text:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
        anyhow::Ok((code, body.to_owned()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, io)
        .await
        .map_err(|_| anyhow::anyhow!("influxd {method} {path} hung for {REQUEST_TIMEOUT:?}"))?
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn influxd_bin() -> PathBuf {
    std::env::var_os("INFLUXD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/influxd"))
}
