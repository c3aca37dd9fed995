//! Shipping a journal to replicas over TCP.
//!
//! - [`wire`]: the messages, their framing and the key proof;
//! - [`server`]: serves a volume's journal to any number of replicas (the
//!   master does, and so does a replica that others follow);
//! - [`follower`]: a replica's side: receives records, journals them, applies
//!   them, acknowledges, and reconnects;
//! - [`bootstrap`]: rebuilds a replica from an image another replica serves.
//!
//! The filesystem never waits for the network: the side that commits only
//! publishes its new [`Head`], and each connection reads what it ships from
//! the journal files at its own pace. docs/PROTOCOL.md describes the
//! conversation.

pub mod bootstrap;
pub mod follower;
pub mod server;
pub mod wire;

use crate::position::Position;
use crate::record::Timestamp;
use crate::Volume;

/// Default TCP port for replication.
pub const DEFAULT_PORT: u16 = 7420;

/// What a server may ship: everything up to `position` is journaled and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: Position,
    /// Uncompressed journal bytes up to `position`.
    pub bytes: u64,
    /// When the head got there.
    pub time: Timestamp,
}

impl Head {
    /// The head of a volume whose tree is at its journal's head.
    pub fn of(vol: &Volume) -> Head {
        Head {
            position: vol.applied(),
            bytes: vol.journal().raw_bytes(),
            time: Timestamp::now(),
        }
    }
}

/// Publishes heads to the server: cheap, never blocks, never fails.
pub type HeadSender = tokio::sync::watch::Sender<Head>;

/// Makes `addr` a socket address, adding the default port when it has none:
/// `10.0.0.5`, `[::1]`, `host` and `host:7000` all work. Digits after the
/// last colon are a port even when out of range (`host:99999`), so that
/// resolving it says the port is invalid.
pub fn with_default_port(addr: &str) -> String {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_owned();
    }
    match addr.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, DEFAULT_PORT).to_string(),
        Err(_) => match addr.rsplit_once(':') {
            Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                addr.to_owned()
            }
            _ => format!("{addr}:{DEFAULT_PORT}"),
        },
    }
}

/// The volume's replication key: the contents of VOL/secret, without the newline.
pub fn read_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut key = std::fs::read(path)?;
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < 16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} holds {} bytes; a key needs at least 16",
                path.display(),
                key.len()
            ),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_default_port_only_when_they_have_none() {
        for (given, want) in [
            ("10.0.0.5", "10.0.0.5:7420"),
            ("10.0.0.5:7000", "10.0.0.5:7000"),
            ("[::1]", "[::1]:7420"),
            ("::1", "[::1]:7420"),
            ("[::1]:7000", "[::1]:7000"),
            ("master.example", "master.example:7420"),
            ("master.example:7000", "master.example:7000"),
            ("127.0.0.1:99999", "127.0.0.1:99999"),
            ("master.example:0", "master.example:0"),
        ] {
            assert_eq!(with_default_port(given), want, "{given}");
        }
        use std::net::ToSocketAddrs;
        let err = with_default_port("127.0.0.1:99999")
            .to_socket_addrs()
            .unwrap_err();
        assert!(err.to_string().contains("invalid port"), "{err}");
    }
}
