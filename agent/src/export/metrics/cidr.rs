//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`): the allow-list of remote addresses
//! that may appear as a `remote` label value.

use std::{fmt, net::IpAddr, str::FromStr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error(
        "{0:?} is not an IP network: expected an address and a prefix length, e.g. \
         10.0.0.0/8, 192.168.1.7/32 or fd00::/8"
    )]
    Syntax(String),
    #[error(
        "{text:?}: prefix length {len} is longer than the address ({max} bits for this family). \
         Fix: use a length from 0 to {max}"
    )]
    PrefixTooLong { text: String, len: u8, max: u8 },
}

/// An IPv4 or IPv6 network. An address without `/len` is a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    addr: IpAddr,
    len: u8,
}

impl IpCidr {
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = max_len(addr);
        if len > max {
            return Err(CidrError::PrefixTooLong {
                text: format!("{addr}/{len}"),
                len,
                max,
            });
        }
        Ok(Self { addr, len })
    }

    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.len,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.len)
            }
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Whether the first `len` of the `bits` low bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, bits: u32, len: u8) -> bool {
    let shift = bits - u32::from(len);
    if shift >= 128 {
        return true;
    }
    (a >> shift) == (b >> shift)
}

impl FromStr for IpCidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(text.to_string());
        let (addr, len) = match text.trim().split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
                let len: u8 = len.parse().map_err(|_| syntax())?;
                (addr, len)
            }
            None => {
                let addr: IpAddr = text.trim().parse().map_err(|_| syntax())?;
                (addr, max_len(addr))
            }
        };
        IpCidr::new(addr, len).map_err(|e| match e {
            CidrError::PrefixTooLong { len, max, .. } => CidrError::PrefixTooLong {
                text: text.to_string(),
                len,
                max,
            },
            other => other,
        })
    }
}

impl TryFrom<String> for IpCidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<IpCidr> for String {
    fn from(net: IpCidr) -> String {
        net.to_string()
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpCidr {
        s.parse().expect("valid network")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid address")
    }

    #[test]
    fn parses_and_matches() {
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!net("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        // IPv4-mapped IPv6 (dual-stack sockets) match IPv4 networks.
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert_eq!(net("10.1.0.0/16").to_string(), "10.1.0.0/16");
    }

    #[test]
    fn rejects_bad_input_with_a_fix() {
        assert!(matches!(
            "10.0.0.0/33".parse::<IpCidr>(),
            Err(CidrError::PrefixTooLong {
                len: 33,
                max: 32,
                ..
            })
        ));
        assert!(matches!(
            "example.com/8".parse::<IpCidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<IpCidr>(),
            Err(CidrError::Syntax(_))
        ));
        let msg = "fd00::/200".parse::<IpCidr>().unwrap_err().to_string();
        assert!(msg.contains("0 to 128"), "{msg}");
    }
}
