//! A single-member etcd 3.4 on loopback ports, with its data dir in a temp dir.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, ConnectOptions, Permission};

use super::free_port;
use super::process::{start_on_fresh_ports, Proc};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;

pub struct Etcd {
    // Declared before `dir` so the process dies before its data dir is removed.
    proc: Proc,
    client_port: u16,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until a `Get` succeeds.
    pub async fn start() -> anyhow::Result<Etcd> {
        let bin = etcd_bin();
        start_on_fresh_ports(START_ATTEMPTS, || async {
            let dir = tempfile::Builder::new().prefix("etcd-").tempdir()?;
            let (client_port, peer_port) = (free_port(), free_port());
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let args: Vec<OsString> = [
                "--name",
                "default",
                "--data-dir",
                &dir.path().join("data").to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("default={peer}"),
                // A lone member still waits one election timeout before it leads; keep restarts fast.
                "--heartbeat-interval",
                "20",
                "--election-timeout",
                "200",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            let proc = Proc::new("etcd", &bin, args, dir.path(), &dir.path().join("etcd.log"));
            let mut etcd = Etcd {
                proc,
                client_port,
                credentials: None,
                dir,
            };
            etcd.proc.spawn()?;
            match etcd.wait_ready().await {
                Ok(()) => Ok(Ok(etcd)),
                Err(e) if etcd.proc.bind_failed() => Ok(Err(e)),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// `127.0.0.1:PORT`, the form the agent's `etcd.endpoints` takes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// A connected client, authenticated once `enable_auth` has run.
    pub async fn client(&self) -> anyhow::Result<Client> {
        connect(&self.endpoint(), self.credentials.as_ref()).await
    }

    /// Puts and returns the revision of the write.
    pub async fn put(&self, key: &str, value: &str) -> anyhow::Result<i64> {
        let resp = self
            .client()
            .await?
            .put(key, value, None)
            .await
            .map_err(|e| anyhow::anyhow!("etcd put {key}: {e}"))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Deletes and returns how many keys went away.
    pub async fn delete(&self, key: &str) -> anyhow::Result<i64> {
        let resp = self
            .client()
            .await?
            .delete(key, None)
            .await
            .map_err(|e| anyhow::anyhow!("etcd delete {key}: {e}"))?;
        Ok(resp.deleted())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .client()
            .await?
            .get(key, None)
            .await
            .map_err(|e| anyhow::anyhow!("etcd get {key}: {e}"))?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(kv.value_str()?.to_string())),
            None => Ok(None),
        }
    }

    /// SIGKILL; the data dir stays for `restart`.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts again on the same ports with the same data, killing the running one first.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.proc.spawn()?;
        self.wait_ready().await
    }

    /// Compacts every revision before the current one and waits for the physical removal, so a
    /// watch from an older revision is refused with "compacted".
    pub async fn compact_to_latest(&self) -> anyhow::Result<i64> {
        let mut client = self.client().await?;
        let revision = client
            .get("\0", None)
            .await
            .map_err(|e| anyhow::anyhow!("etcd get for the current revision: {e}"))?
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| anyhow::anyhow!("etcd get returned no header"))?;
        match client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => Ok(revision),
            // Nothing was written since the last compaction: it is already compacted to here.
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(revision)
            }
            Err(e) => Err(anyhow::anyhow!("etcd compact to {revision}: {e}")),
        }
    }

    /// Turns on authentication. etcd 3.4 refuses `auth enable` unless a `root` user holding the
    /// `root` role exists, so that one is created with the same password; `user` (if not root)
    /// gets a role with read-write on every key. Later helper calls log in as `user`.
    pub async fn enable_auth(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        let mut c = self.client().await?;
        let ctx = |what: &'static str| move |e: etcd_client::Error| anyhow::anyhow!("{what}: {e}");
        c.user_add("root", password, None)
            .await
            .map_err(ctx("etcd user add root"))?;
        // etcd grants the built-in root role without a `role add root`.
        c.user_grant_role("root", "root")
            .await
            .map_err(ctx("etcd user grant-role root root"))?;
        if user != "root" {
            let role = format!("{user}-rw");
            c.user_add(user, password, None)
                .await
                .map_err(ctx("etcd user add"))?;
            c.role_add(role.as_str())
                .await
                .map_err(ctx("etcd role add"))?;
            c.role_grant_permission(role.as_str(), Permission::read_write("").with_all_keys())
                .await
                .map_err(ctx("etcd role grant-permission"))?;
            c.user_grant_role(user, role.as_str())
                .await
                .map_err(ctx("etcd user grant-role"))?;
        }
        c.auth_enable().await.map_err(ctx("etcd auth enable"))?;
        self.credentials = Some((user.to_string(), password.to_string()));
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let what = format!("etcd on {}", self.endpoint());
        let (endpoint, credentials) = (self.endpoint(), self.credentials.clone());
        self.proc
            .wait_ready(&what, READY_TIMEOUT, Duration::from_millis(50), || {
                probe(endpoint.clone(), credentials.clone())
            })
            .await
    }
}

async fn connect(endpoint: &str, credentials: Option<&(String, String)>) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT);
    if let Some((user, password)) = credentials {
        opts = opts.with_user(user.clone(), password.clone());
    }
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect([endpoint], Some(opts)))
        .await
        .map_err(|_| anyhow::anyhow!("etcd connect to {endpoint} hung"))?
        .map_err(|e| anyhow::anyhow!("etcd connect to {endpoint}: {e}"))
}

/// Ready: a `Get` answers.
async fn probe(endpoint: String, credentials: Option<(String, String)>) -> anyhow::Result<()> {
    let mut client = connect(&endpoint, credentials.as_ref()).await?;
    tokio::time::timeout(Duration::from_secs(2), client.get("harness-probe", None))
        .await
        .map_err(|_| anyhow::anyhow!("get hung"))??;
    Ok(())
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}
