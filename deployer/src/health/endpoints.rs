//! Where probes go: checked targets (loopback unless allowed), the colours' overrides,
//! and the address map that translates the emulator's instance addresses to the
//! loopback stand-ins their servers listen on.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::ProbeError;
use crate::state::Color;

/// A checked probe target: `http://IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

impl Target {
    /// Parses `http://IP:PORT` (or `IP:PORT`) and applies the loopback rule. Host
    /// names are refused: what they resolve to is not ours to check.
    pub fn parse(s: &str, allow_public: bool) -> Result<Target, ProbeError> {
        let bad = |why: &str| ProbeError::BadTarget {
            target: s.to_string(),
            why: why.to_string(),
        };
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if rest.contains("://") {
            return Err(bad("only http:// is supported"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("no path allowed"));
        }
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| bad("not an IP address and port"))?;
        Target::new(addr, allow_public).map_err(|_| ProbeError::NotLoopback {
            target: s.to_string(),
        })
    }

    pub fn new(addr: SocketAddr, allow_public: bool) -> Result<Target, ProbeError> {
        if !allow_public && !is_loopback(addr.ip()) {
            return Err(ProbeError::NotLoopback {
                target: addr.to_string(),
            });
        }
        Ok(Target { addr })
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.octets()[0] == 127)
        }
    }
}

/// Test and local-demo configuration: where the servers of the emulator's instances
/// really listen. A JSON object `{"<instance address>": "<loopback stand-in>"}`, read
/// afresh at every lookup (the local cloud rewrites it as instances come and go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressMap {
    path: PathBuf,
}

impl AddressMap {
    pub fn new(path: impl Into<PathBuf>) -> AddressMap {
        AddressMap { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stand-in for `ip`, `None` when the map names none (yet).
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<IpAddr>, ProbeError> {
        let bad = |why: String| ProbeError::AddressMap {
            path: self.path.clone(),
            why,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| bad(e.to_string()))?;
        let map: BTreeMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a JSON object of addresses: {e}")))?;
        let Some(to) = map.get(&ip.to_string()) else {
            return Ok(None);
        };
        let to: IpAddr = to
            .parse()
            .map_err(|_| bad(format!("{ip} maps to {to:?}, not an IP address")))?;
        Ok(Some(to))
    }

    /// `addr` with its IP translated; the map must name it.
    fn translate(&self, addr: SocketAddr) -> Result<SocketAddr, ProbeError> {
        match self.lookup(addr.ip())? {
            Some(ip) => Ok(SocketAddr::new(ip, addr.port())),
            None => Err(ProbeError::NotMapped {
                ip: addr.ip(),
                path: self.path.clone(),
            }),
        }
    }
}

/// Where each colour's server and the fixed address are reached.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub colors: BTreeMap<Color, Target>,
    /// The service through the Elastic IP (the loopback forwarder locally).
    pub fixed: Option<Target>,
    /// Real addresses may be probed (production only).
    pub allow_public: bool,
    /// Instance addresses go through this map first (tests, local demo).
    pub address_map: Option<AddressMap>,
}

impl Endpoints {
    /// Parses `COLOR=URL` overrides.
    pub fn parse(
        overrides: &[String],
        fixed: Option<&str>,
        allow_public: bool,
    ) -> Result<Endpoints, ProbeError> {
        let mut colors = BTreeMap::new();
        for o in overrides {
            let Some((c, url)) = o.split_once('=') else {
                return Err(ProbeError::BadTarget {
                    target: o.clone(),
                    why: "expected COLOR=http://IP:PORT".into(),
                });
            };
            let color = match c.trim() {
                "blue" => Color::Blue,
                "green" => Color::Green,
                other => {
                    return Err(ProbeError::BadTarget {
                        target: o.clone(),
                        why: format!("unknown colour {other:?} (blue or green)"),
                    });
                }
            };
            colors.insert(color, Target::parse(url.trim(), allow_public)?);
        }
        let fixed = fixed.map(|f| Target::parse(f, allow_public)).transpose()?;
        Ok(Endpoints {
            colors,
            fixed,
            allow_public,
            address_map: None,
        })
    }

    /// With instance addresses translated through `map` first.
    pub fn with_address_map(self, map: Option<AddressMap>) -> Endpoints {
        Endpoints {
            address_map: map,
            ..self
        }
    }

    /// Whether a colour can be probed without its override: its own address is
    /// usable (production) or translated (address map).
    pub fn reaches_instances(&self) -> bool {
        self.allow_public || self.address_map.is_some()
    }

    /// Where the Elastic IP's own address `addr` is probed: as it is when it is
    /// loopback (the emulator's stand-ins carry traffic themselves), else through the
    /// address map when there is one; then under the loopback rule.
    pub fn elastic_ip(&self, addr: SocketAddr) -> Result<Target, ProbeError> {
        match &self.address_map {
            Some(map) if !is_loopback(addr.ip()) => {
                Target::new(map.translate(addr)?, self.allow_public)
            }
            _ => Target::new(addr, self.allow_public),
        }
    }

    /// Where an instance's address `addr` is probed: through the address map when
    /// there is one (an address it lacks is never connected to, unless loopback), then
    /// under the loopback rule.
    pub fn real(&self, addr: SocketAddr) -> Result<Target, ProbeError> {
        let addr = match &self.address_map {
            Some(map) => match map.lookup(addr.ip())? {
                Some(ip) => SocketAddr::new(ip, addr.port()),
                // The emulator's Elastic IPs are loopback stand-ins of their own.
                None if is_loopback(addr.ip()) => addr,
                None => map.translate(addr)?,
            },
            None => addr,
        };
        Target::new(addr, self.allow_public)
    }

    /// Where to probe `color`'s instance `instance`: its override, else its public
    /// address on `port` (through the address map, if any). `public_ip` is what EC2
    /// reports for it.
    pub fn for_color(
        &self,
        color: Color,
        instance: &str,
        public_ip: Option<IpAddr>,
        port: u16,
    ) -> Result<Target, ProbeError> {
        if let Some(t) = self.colors.get(&color) {
            return Ok(*t);
        }
        // An instance's own address is used in production, or through the address
        // map: the emulator's addresses (even its 127.x Elastic IPs) name no server.
        if !self.reaches_instances() {
            return Err(ProbeError::NotLoopback {
                target: format!(
                    "the {color} instance's own address{}",
                    public_ip.map(|i| format!(" {i}")).unwrap_or_default()
                ),
            });
        }
        match public_ip {
            Some(ip) => self.real(SocketAddr::new(ip, port)),
            None => Err(ProbeError::NoPublicAddress {
                color,
                instance: instance.to_string(),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_allowed() {
        assert!(Target::parse("http://127.0.0.1:8080", false).is_ok());
        assert!(Target::parse("127.3.4.5:80", false).is_ok());
        assert!(Target::parse("http://[::1]:80", false).is_ok());
        // Built at run time: the repository names no address but loopback.
        let public = std::net::Ipv4Addr::new(54, 1, 2, 3);
        let private = std::net::Ipv4Addr::new(10, 0, 0, 5);
        for bad in [
            format!("http://{public}:8080"),
            format!("http://{private}:8080"),
            "0.0.0.0:80".to_string(),
        ] {
            let bad = bad.as_str();
            assert!(
                matches!(
                    Target::parse(bad, false),
                    Err(ProbeError::NotLoopback { .. })
                ),
                "{bad} accepted"
            );
            assert!(Target::parse(bad, true).is_ok());
        }
        // Names are never resolved.
        assert!(Target::parse("http://localhost:80", true).is_err());
        assert!(Target::parse("https://127.0.0.1:80", false).is_err());
        let e = Endpoints::parse(&["blue=http://127.0.0.1:1".into()], None, false).unwrap();
        assert!(
            e.for_color(Color::Blue, "i-1", Some(IpAddr::V4(public)), 80)
                .is_ok()
        );
        assert!(matches!(
            e.for_color(Color::Green, "i-2", Some(IpAddr::V4(public)), 80),
            Err(ProbeError::NotLoopback { .. })
        ));
    }

    #[test]
    fn the_address_map_translates_to_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.json");
        let public = std::net::Ipv4Addr::new(54, 1, 2, 3);
        let private = std::net::Ipv4Addr::new(10, 0, 0, 5);
        let elsewhere = std::net::Ipv4Addr::new(54, 9, 9, 9);
        std::fs::write(
            &path,
            serde_json::json!({
                public.to_string(): "127.77.0.2",
                private.to_string(): elsewhere.to_string(),
            })
            .to_string(),
        )
        .unwrap();
        let e = Endpoints::default().with_address_map(Some(AddressMap::new(&path)));
        let t = e
            .for_color(Color::Blue, "i-1", Some(IpAddr::V4(public)), 8080)
            .unwrap();
        assert_eq!(t.to_string(), "http://127.77.0.2:8080");
        // A map entry that leads off loopback is refused like any public address.
        assert!(matches!(
            e.for_color(Color::Blue, "i-1", Some(IpAddr::V4(private)), 8080),
            Err(ProbeError::NotLoopback { .. })
        ));
        // Not in the map: never connected to.
        assert!(matches!(
            e.for_color(Color::Blue, "i-1", Some(IpAddr::V4(elsewhere)), 8080),
            Err(ProbeError::NotMapped { .. })
        ));
        // No public address: says so, whatever the map holds.
        let err = e.for_color(Color::Green, "i-9", None, 8080).unwrap_err();
        assert!(matches!(err, ProbeError::NoPublicAddress { .. }), "{err:?}");
        assert!(
            err.to_string().contains("i-9 has no public address"),
            "{err}"
        );
        // An Elastic IP that is itself loopback (the emulator's) is probed as it is.
        let eip: SocketAddr = "127.5.6.7:8080".parse().unwrap();
        assert_eq!(e.elastic_ip(eip).unwrap().addr, eip);
        // A broken map names itself.
        std::fs::write(&path, "[").unwrap();
        let err = e
            .for_color(Color::Blue, "i-1", Some(IpAddr::V4(public)), 8080)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("address map {}", path.display())),
            "{err}"
        );
    }
}
