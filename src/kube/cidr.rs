//! IP ranges in CIDR notation (`10.0.0.0/24`): parsing, overlap, and the
//! addresses Kubernetes derives from the service range.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address with no host bits set and a prefix
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` between address and prefix length.
    #[error("`{0}` is not in CIDR notation (ADDRESS/PREFIX, e.g. 10.0.0.0/24)")]
    NoPrefix(String),
    /// The part before `/` is not an IP address.
    #[error("`{0}` does not start with an IP address")]
    Address(String),
    /// The prefix length is not a number within the address's bits.
    #[error("`{text}`: the prefix length must be 0 to {bits}")]
    Prefix {
        /// The CIDR as written.
        text: String,
        /// 32 or 128.
        bits: u8,
    },
    /// Bits set after the prefix (`10.0.0.5/24`).
    #[error("`{text}` has host bits set: the network is {network}")]
    HostBits {
        /// The CIDR as written.
        text: String,
        /// What was probably meant.
        network: String,
    },
}

impl Cidr {
    /// The network `address/prefix`.
    ///
    /// # Errors
    /// When the prefix is too long for the family or host bits are set.
    pub fn new(address: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let text = format!("{address}/{prefix}");
        let bits = bits_of(address);
        if prefix > bits {
            return Err(CidrError::Prefix { text, bits });
        }
        let network = mask(address, prefix);
        if network != address {
            return Err(CidrError::HostBits {
                text,
                network: format!("{network}/{prefix}"),
            });
        }
        Ok(Self { network, prefix })
    }

    /// The network address.
    #[must_use]
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `address` lies inside this network.
    #[must_use]
    pub fn contains(&self, address: IpAddr) -> bool {
        bits_of(address) == bits_of(self.network) && mask(address, self.prefix) == self.network
    }

    /// Whether the two networks share any address.
    #[must_use]
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if self.prefix <= other.prefix {
            other
        } else {
            self
        };
        shorter.contains(longer.network)
    }

    /// The address `n` places after the network address, if it is inside
    /// the network.
    #[must_use]
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        let address = match self.network {
            IpAddr::V4(v4) => {
                let value = u128::from(u32::from(v4)).checked_add(n)?;
                IpAddr::V4(Ipv4Addr::from(u32::try_from(value).ok()?))
            }
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).checked_add(n)?)),
        };
        self.contains(address).then_some(address)
    }

    /// The first usable address (network + 1): the one Kubernetes gives the
    /// `kubernetes` service, which the apiserver certificate must name.
    /// `None` for a network too small to have one (/32, /128).
    #[must_use]
    pub fn first_service_ip(&self) -> Option<IpAddr> {
        self.nth(1)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| CidrError::NoPrefix(text.to_owned()))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let bits = bits_of(address);
        let prefix: u8 =
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| CidrError::Prefix {
                    text: text.to_owned(),
                    bits,
                })?;
        Self::new(address, prefix).map_err(|error| match error {
            CidrError::HostBits { network, .. } => CidrError::HostBits {
                text: text.to_owned(),
                network,
            },
            other => other,
        })
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// 32 for IPv4, 128 for IPv6.
fn bits_of(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `address` with every bit after `prefix` cleared.
fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(cidr("10.0.0.0/24").to_string(), "10.0.0.0/24");
        assert_eq!(cidr("fd00::/64").to_string(), "fd00::/64");
        assert_eq!(cidr("0.0.0.0/0").prefix(), 0);
        assert_eq!(cidr("10.1.2.3/32").network().to_string(), "10.1.2.3");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::NoPrefix(_))
        ));
        assert!(matches!(
            "ten/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { bits: 32, .. })
        ));
        assert!(matches!(
            "fd00::/129".parse::<Cidr>(),
            Err(CidrError::Prefix { bits: 128, .. })
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Prefix { .. })
        ));
        let error = "10.0.0.5/24".parse::<Cidr>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`10.0.0.5/24` has host bits set: the network is 10.0.0.0/24"
        );
    }

    #[test]
    fn overlap_in_both_directions() {
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.0.0/16")));
        assert!(cidr("10.1.0.0/16").overlaps(&cidr("10.0.0.0/8")));
        assert!(cidr("10.0.0.0/24").overlaps(&cidr("10.0.0.0/24")));
        assert!(!cidr("10.0.0.0/24").overlaps(&cidr("10.0.1.0/24")));
        assert!(!cidr("10.0.0.0/24").overlaps(&cidr("10.1.0.0/16")));
        assert!(cidr("0.0.0.0/0").overlaps(&cidr("192.0.2.0/24")));
        // Different families never overlap.
        assert!(!cidr("::/0").overlaps(&cidr("10.0.0.0/8")));
        assert!(cidr("fd00::/8").overlaps(&cidr("fd12::/16")));
    }

    #[test]
    fn contains_checks_family_and_range() {
        let net = cidr("10.0.0.0/24");
        assert!(net.contains("10.0.0.255".parse().unwrap()));
        assert!(!net.contains("10.0.1.0".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
    }

    #[test]
    fn first_service_ip_is_network_plus_one() {
        assert_eq!(
            cidr("10.0.0.0/24").first_service_ip().unwrap().to_string(),
            "10.0.0.1"
        );
        assert_eq!(
            cidr("10.96.0.0/12").first_service_ip().unwrap().to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            cidr("fd00:10::/108")
                .first_service_ip()
                .unwrap()
                .to_string(),
            "fd00:10::1"
        );
        assert_eq!(cidr("10.0.0.7/32").first_service_ip(), None);
        assert_eq!(
            cidr("10.0.0.0/24").nth(254).unwrap().to_string(),
            "10.0.0.254"
        );
        assert_eq!(cidr("10.0.0.0/24").nth(256), None);
        assert_eq!(cidr("255.255.255.255/32").nth(1), None);
    }
}
