//! Who this host is: its outbound IP (the `{ip}` of the etcd key) and its hostname.

use std::net::{IpAddr, UdpSocket};

/// The IP of the interface that routes to the outside, as the Go agent found it: a UDP "connect" sets
/// the socket's route and local address without sending a packet. Falls back to the first non-loopback
/// address of the host when there is no default route.
pub fn outbound_ip() -> Option<IpAddr> {
    let routed = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("8.8.8.8:80").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    routed.or_else(|| local_ip_address::local_ip().ok())
}

/// The configured IP when there is one, else the discovered one, else loopback (with the reason).
pub fn agent_ip(configured: Option<IpAddr>) -> (IpAddr, &'static str) {
    match configured {
        Some(ip) => (ip, "from agent.ip"),
        None => match outbound_ip() {
            Some(ip) => (ip, "discovered outbound address"),
            None => (
                IpAddr::from([127, 0, 0, 1]),
                "no route and no interface address: using loopback",
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_ip_wins() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(agent_ip(Some(ip)), (ip, "from agent.ip"));
    }

    #[test]
    fn discovered_ip_is_never_unspecified() {
        let (ip, _) = agent_ip(None);
        assert!(!ip.is_unspecified());
    }
}
