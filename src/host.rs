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
    let discovered = if configured.is_some() {
        None
    } else {
        outbound_ip()
    };
    choose_ip(configured, discovered)
}

/// Pure: which IP names this host, from the configured one and the discovered one.
pub fn choose_ip(configured: Option<IpAddr>, discovered: Option<IpAddr>) -> (IpAddr, &'static str) {
    match configured {
        Some(ip) => (ip, "from agent.ip"),
        None => match discovered {
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
    fn no_route_is_never_guessed_as_loopback() {
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(choose_ip(None, Some(ten)).0, ten);
        for discovered in [None, Some("127.0.0.1".parse().unwrap()), Some("::1".parse().unwrap())] {
            let (ip, why) = choose_ip(None, discovered);
            assert!(!ip.is_loopback(), "{discovered:?} gave {ip} ({why}): every such host would share one etcd key");
        }
    }
}
