//! The one way the agent reaches etcd (config watch, status lease, `logagent status`): endpoint
//! choice, auth and TLS from the `[etcd]` settings.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, TlsOptions};

use crate::config::settings::EtcdSettings;

#[derive(thiserror::Error, Debug)]
pub enum EtcdError {
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("cannot read TLS file {path}: {source}")]
    Tls {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A client on an endpoint that answers. etcd-client spreads requests over all of its endpoints and
/// fails those it routes to a member that is down (etcdv3/etcd-client#39), so with several endpoints
/// the agent picks a live one itself, trying the one that answered last first.
pub async fn connect(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    static PREFERRED: AtomicUsize = AtomicUsize::new(0);
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_timeout(settings.request_timeout)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &settings.auth {
        opts = opts.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = tls_options(settings)? {
        opts = opts.with_tls(tls);
    }
    let endpoints = &settings.endpoints;
    if endpoints.len() < 2 {
        return Ok(Client::connect(endpoints.clone(), Some(opts)).await?);
    }
    let first = PREFERRED.load(Ordering::Relaxed);
    let mut last_err: Option<etcd_client::Error> = None;
    for i in (0..endpoints.len()).map(|k| (first + k) % endpoints.len()) {
        let attempt = async {
            let mut client = Client::connect([endpoints[i].as_str()], Some(opts.clone())).await?;
            // Connecting is lazy without credentials: make the endpoint prove it answers.
            client.status().await?;
            Ok(client)
        };
        match attempt.await {
            Ok(client) => {
                PREFERRED.store(i, Ordering::Relaxed);
                return Ok(client);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("two endpoints or more were tried").into())
}

fn tls_options(settings: &EtcdSettings) -> Result<Option<TlsOptions>, EtcdError> {
    let Some(tls) = &settings.tls else {
        return Ok(None);
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| EtcdError::Tls {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        o = o.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        o = o.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(d) = &tls.domain {
        o = o.domain_name(d.clone());
    }
    Ok(Some(o))
}
