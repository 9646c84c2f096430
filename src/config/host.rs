//! Who this host is: its outbound IP (the `{ip}` of the etcd key) and its hostname.

use std::net::{IpAddr, UdpSocket};

/// This host's IP cannot be told: starting would mean guessing, and a guessed loopback address is
/// shared by every such host (they would read and overwrite one another's etcd keys).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("cannot tell this host's IP for its etcd keys: no route to the outside and no non-loopback interface address{}; set agent.ip (or LOGAGENT_AGENT__IP) to the address the fleet knows this host by", found.map(|ip| format!(" (only {ip})")).unwrap_or_default())]
    NoAddress { found: Option<IpAddr> },
}

/// The IP of the interface that routes to the outside, as the Go agent found it: a UDP "connect" sets
/// the socket's route and local address without sending a packet. Falls back to the first non-loopback
/// address of the host when there is no default route.
pub fn outbound_ip() -> Option<IpAddr> {
    let routed = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("8.8.8.8:80").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback());
    routed.or_else(|| local_ip_address::local_ip().ok())
}

/// The configured IP when there is one, else the discovered one (with the reason).
pub fn agent_ip(configured: Option<IpAddr>) -> Result<(IpAddr, &'static str), HostError> {
    let discovered = if configured.is_some() {
        None
    } else {
        outbound_ip()
    };
    choose_ip(configured, discovered)
}

/// Pure: which IP names this host, from the configured one and the discovered one. Never loopback
/// or unspecified unless configured so.
pub fn choose_ip(
    configured: Option<IpAddr>,
    discovered: Option<IpAddr>,
) -> Result<(IpAddr, &'static str), HostError> {
    match (configured, discovered) {
        (Some(ip), _) => Ok((ip, "from agent.ip")),
        (None, Some(ip)) if !ip.is_loopback() && !ip.is_unspecified() => {
            Ok((ip, "discovered outbound address"))
        }
        (None, found) => Err(HostError::NoAddress { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_ip_wins() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(agent_ip(Some(ip)), Ok((ip, "from agent.ip")));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            choose_ip(Some(lo), None),
            Ok((lo, "from agent.ip")),
            "an explicit choice"
        );
    }

    #[test]
    fn no_route_is_never_guessed_as_loopback() {
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            choose_ip(None, Some(ten)),
            Ok((ten, "discovered outbound address"))
        );
        for discovered in [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("::1".parse().unwrap()),
            Some("0.0.0.0".parse().unwrap()),
        ] {
            let got = choose_ip(None, discovered);
            let Err(e) = got else {
                panic!("{discovered:?} gave {got:?}: every such host would share one etcd key");
            };
            assert!(e.to_string().contains("set agent.ip"), "{e}");
        }
    }
}
