//! The thin I/O shells around [`Responder`] and [`Browser`]: interface
//! lists from `getifaddrs`, UDP sockets (socket2, then tokio), and the
//! loops that feed packets and time in and send what comes out.
//!
//! Multicast only ever leaves through the interfaces handed in: every send
//! to the group sets `IP_MULTICAST_IF` to one of them first, the responder
//! joins the group on those interfaces only, and with `IP_MULTICAST_ALL`
//! off it hears no group traffic from elsewhere.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

use crate::browser::{Browser, Resolved};
use crate::responder::{
    Destination, Interface, MDNS_GROUP, MDNS_PORT, Responder, ResponderConfig, ResponderEvent,
    Transmit,
};
use crate::service::{SERVICE_TYPE, ServiceInfo};
use crate::wire::{MAX_MESSAGE, NameError};

/// Setting up mDNS failed.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error("cannot list network interfaces")]
    Interfaces(#[source] std::io::Error),
    #[error("no interface to advertise on")]
    NoInterface,
    #[error("cannot open the mDNS socket (UDP port 5353)")]
    Socket(#[source] std::io::Error),
    #[error("cannot join 224.0.0.251 on {iface} ({addr})")]
    Join {
        iface: String,
        addr: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("`{name}` is not a usable mDNS name")]
    Name {
        name: String,
        #[source]
        source: NameError,
    },
}

/// Up, multicast-capable, non-loopback interfaces with an IPv4 address.
pub fn multicast_interfaces() -> Result<Vec<Interface>, MdnsError> {
    use nix::net::if_::InterfaceFlags as F;
    let list = nix::ifaddrs::getifaddrs().map_err(|e| MdnsError::Interfaces(e.into()))?;
    let mut out: Vec<Interface> = Vec::new();
    for ifa in list {
        if !ifa.flags.contains(F::IFF_UP | F::IFF_MULTICAST) || ifa.flags.contains(F::IFF_LOOPBACK)
        {
            continue;
        }
        let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        let netmask = ifa
            .netmask
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|m| m.ip())
            .unwrap_or(Ipv4Addr::BROADCAST);
        let index = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0);
        let i = Interface {
            name: ifa.interface_name.clone(),
            index,
            addr: addr.ip(),
            netmask,
        };
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

/// The interfaces a server listening on `ip` can be reached through: all
/// of them for `0.0.0.0` / `::`, the one holding the address otherwise,
/// none for loopback or a specific IPv6 address (only A records are
/// advertised).
pub fn interfaces_for_listen(ip: IpAddr) -> Result<Vec<Interface>, MdnsError> {
    if ip.is_loopback() {
        return Ok(Vec::new());
    }
    Ok(select_for_listen(ip, multicast_interfaces()?))
}

/// The choice [`interfaces_for_listen`] makes, out of `all`.
pub fn select_for_listen(ip: IpAddr, all: Vec<Interface>) -> Vec<Interface> {
    match ip {
        _ if ip.is_loopback() => Vec::new(),
        IpAddr::V4(a) if a.is_unspecified() => all,
        IpAddr::V6(a) if a.is_unspecified() => all,
        IpAddr::V4(a) => all.into_iter().filter(|i| i.addr == a).collect(),
        IpAddr::V6(_) => Vec::new(),
    }
}

/// Human form of an interface list: `eth0 (10.0.0.2), wlan0 (...)`.
pub fn describe(interfaces: &[Interface]) -> String {
    let v: Vec<String> = interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.addr))
        .collect();
    v.join(", ")
}

/// What to advertise.
#[derive(Debug, Clone)]
pub struct AdvertiseConfig {
    /// Instance name; also the host label after cleaning (`diemcau-ops`).
    pub instance: String,
    pub port: u16,
    pub info: ServiceInfo,
    pub interfaces: Vec<Interface>,
}

/// Lower-case letters, digits and `-`: a host label made from a name.
pub fn host_label(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    if s.is_empty() {
        "diemcau-ops".to_owned()
    } else {
        s.chars().take(50).collect()
    }
}

/// The names in use (they change after a conflict).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub instance: String,
    pub host: String,
    /// Probing is over and queries are answered.
    pub advertising: bool,
}

/// A running advertisement: answers on its interfaces until stopped (or
/// dropped), then says goodbye.
#[derive(Debug)]
pub struct Advertiser {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    names: Arc<Mutex<Names>>,
}

impl Advertiser {
    /// Binds UDP 5353 (shared with any other responder on the machine),
    /// joins the group on each interface and starts probing. Needs a tokio
    /// runtime.
    pub fn start(cfg: AdvertiseConfig) -> Result<Advertiser, MdnsError> {
        if cfg.interfaces.is_empty() {
            return Err(MdnsError::NoInterface);
        }
        let host = host_label(&cfg.instance);
        let rcfg = ResponderConfig {
            instance: cfg.instance.clone(),
            host: host.clone(),
            port: cfg.port,
            info: cfg.info,
            interfaces: cfg.interfaces.clone(),
        };
        let responder = Responder::new(rcfg, Instant::now(), rand::random()).map_err(|source| {
            MdnsError::Name {
                name: cfg.instance.clone(),
                source,
            }
        })?;
        let socket = responder_socket(&cfg.interfaces)?;
        let names = Arc::new(Mutex::new(Names {
            instance: responder.instance().to_string(),
            host: responder.host().to_string(),
            advertising: false,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tracing::info!(
            instance = %responder.instance(),
            host = %responder.host(),
            port = cfg.port,
            interfaces = %describe(&cfg.interfaces),
            "mDNS: probing"
        );
        let task = tokio::spawn(run_responder(responder, socket, rx, names.clone()));
        Ok(Advertiser {
            stop: Some(tx),
            task: Some(task),
            names,
        })
    }

    /// The names in use now.
    pub fn names(&self) -> Names {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends goodbyes and stops (waits at most a second).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        // Dropping the sender ends the task, which says goodbye.
        self.stop.take();
    }
}

fn responder_socket(interfaces: &[Interface]) -> Result<UdpSocket, MdnsError> {
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(MdnsError::Socket)?;
    let setup = || -> std::io::Result<()> {
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT).into())?;
        // Only group traffic of the interfaces joined below.
        s.set_multicast_all_v4(false)?;
        s.set_multicast_ttl_v4(255)?;
        s.set_ttl_v4(255)?;
        s.set_multicast_loop_v4(true)?;
        s.set_nonblocking(true)
    };
    setup().map_err(MdnsError::Socket)?;
    for i in interfaces {
        s.join_multicast_v4(&MDNS_GROUP, &i.addr)
            .map_err(|source| MdnsError::Join {
                iface: i.name.clone(),
                addr: i.addr,
                source,
            })?;
    }
    UdpSocket::from_std(s.into()).map_err(MdnsError::Socket)
}

async fn send(socket: &UdpSocket, t: &Transmit) {
    let res = match t.to {
        Destination::Multicast { via } => match SockRef::from(socket).set_multicast_if_v4(&via) {
            Ok(()) => socket
                .send_to(&t.payload, SocketAddrV4::new(MDNS_GROUP, MDNS_PORT))
                .await
                .map(drop),
            Err(e) => Err(e),
        },
        Destination::Unicast(to) => socket.send_to(&t.payload, to).await.map(drop),
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, to = ?t.to, "mDNS: send failed");
    }
}

async fn run_responder(
    mut r: Responder,
    socket: UdpSocket,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    names: Arc<Mutex<Names>>,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        while let Some(t) = r.poll_transmit(Instant::now()) {
            send(&socket, &t).await;
        }
        while let Some(ev) = r.poll_event() {
            match ev {
                ResponderEvent::Announced { instance, host } => {
                    tracing::info!(%instance, %host, "mDNS: advertising {SERVICE_TYPE}")
                }
                ResponderEvent::Renamed { instance, host } => {
                    tracing::warn!(%instance, %host, "mDNS: name taken on the network; renamed")
                }
            }
            *names.lock().unwrap_or_else(|p| p.into_inner()) = Names {
                instance: r.instance().to_string(),
                host: r.host().to_string(),
                advertising: r.is_advertising(),
            };
        }
        let wake = r
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = &mut stop => break,
            res = socket.recv_from(&mut buf) => match res {
                Ok((n, SocketAddr::V4(src))) => {
                    let outcome = r.handle_input(Instant::now(), &buf[..n], src);
                    tracing::trace!(%src, ?outcome, "mDNS packet");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "mDNS: receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tokio::time::sleep_until(wake) => r.handle_timeout(Instant::now()),
        }
    }
    r.goodbye(Instant::now());
    while let Some(t) = r.poll_transmit(Instant::now()) {
        send(&socket, &t).await;
    }
    tracing::info!("mDNS: stopped (goodbye sent)");
}

/// How to browse.
#[derive(Debug, Clone)]
pub struct BrowseOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// The API version this device speaks; other servers are skipped.
    pub api_version: u32,
    /// Interfaces to ask on (`None`: every multicast interface).
    pub interfaces: Option<Vec<Interface>>,
}

/// A server found by browsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The base URL to use (`http://10.0.0.5:8080`).
    pub url: String,
    pub instance: String,
    pub host: String,
    /// How long browsing took.
    pub took: Duration,
}

/// Browsing found no usable server.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error("no up, multicast-capable IPv4 interface to ask on")]
    NoInterface,
    #[error(transparent)]
    Setup(MdnsError),
    #[error("no usable answer to {SERVICE_TYPE} on {interfaces} within {} ms{}", .waited.as_millis(), notes(.skipped, .send_errors))]
    NotFound {
        waited: Duration,
        interfaces: String,
        /// Servers that answered but cannot be used, with why.
        skipped: Vec<String>,
        send_errors: Vec<String>,
    },
}

fn notes(skipped: &[String], send_errors: &[String]) -> String {
    let mut s = String::new();
    if !skipped.is_empty() {
        s.push_str(&format!("; skipped: {}", skipped.join("; ")));
    }
    if !send_errors.is_empty() {
        s.push_str(&format!("; could not send: {}", send_errors.join("; ")));
    }
    s
}

/// Asks the local network for `_diemcau-ops._tcp.local.` and returns the
/// first server that speaks `api_version`, within `timeout`.
pub async fn browse(opts: &BrowseOptions) -> Result<Found, BrowseError> {
    let t0 = Instant::now();
    let interfaces = match &opts.interfaces {
        Some(v) => v.clone(),
        None => multicast_interfaces().map_err(BrowseError::Setup)?,
    };
    if interfaces.is_empty() {
        return Err(BrowseError::NoInterface);
    }
    let socket = browse_socket().map_err(|e| BrowseError::Setup(MdnsError::Socket(e)))?;
    let deadline = t0 + opts.timeout;
    let mut b = Browser::new(t0, interfaces.clone(), rand::random());
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut send_errors: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    loop {
        let now = Instant::now();
        while let Some(q) = b.poll_query(now) {
            for i in &interfaces {
                let r = match SockRef::from(&socket).set_multicast_if_v4(&i.addr) {
                    Ok(()) => socket
                        .send_to(&q, SocketAddrV4::new(MDNS_GROUP, MDNS_PORT))
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    let msg = format!("{}: {e}", i.name);
                    if !send_errors.contains(&msg) {
                        send_errors.push(msg);
                    }
                }
            }
        }
        for r in b.resolved() {
            match usable(&r, opts.api_version) {
                Ok(url) => {
                    return Ok(Found {
                        url,
                        instance: r.instance,
                        host: r.host,
                        took: t0.elapsed(),
                    });
                }
                Err(why) => {
                    let msg = format!("`{}` at {}: {why}", r.instance, r.from);
                    if !skipped.contains(&msg) {
                        skipped.push(msg);
                    }
                }
            }
        }
        if now >= deadline {
            return Err(BrowseError::NotFound {
                waited: opts.timeout,
                interfaces: describe(&interfaces),
                skipped,
                send_errors,
            });
        }
        let wake = tokio::time::Instant::from_std(b.poll_timeout().min(deadline));
        tokio::select! {
            res = socket.recv_from(&mut buf) => {
                if let Ok((n, SocketAddr::V4(src))) = res {
                    b.handle_packet(&buf[..n], src);
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

fn usable(r: &Resolved, api_version: u32) -> Result<String, String> {
    let info = r.info.as_ref().map_err(|e| e.to_string())?;
    if info.api_version != api_version {
        return Err(format!(
            "speaks API version {} (this device speaks {api_version})",
            info.api_version
        ));
    }
    r.url()
        .ok_or_else(|| format!("API path `{}` is not /…/api/v{api_version}", info.api_path))
}

fn browse_socket() -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())?;
    s.set_multicast_ttl_v4(255)?;
    s.set_multicast_all_v4(false)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels() {
        assert_eq!(host_label("diemcau-ops"), "diemcau-ops");
        assert_eq!(host_label("Hop Huyện A"), "hop-huy-n-a");
        assert_eq!(host_label("--"), "diemcau-ops");
        assert_eq!(host_label(&"x".repeat(80)).len(), 50);
    }

    #[test]
    fn advertises_only_where_it_listens() {
        let i = |name: &str, a: [u8; 4]| Interface {
            name: name.into(),
            index: 1,
            addr: Ipv4Addr::from(a),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        };
        let all = vec![i("eth0", [10, 0, 0, 5]), i("wlan0", [192, 168, 8, 1])];
        let pick = |ip: &str| -> Vec<String> {
            select_for_listen(ip.parse().unwrap(), all.clone())
                .into_iter()
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(pick("10.0.0.5"), vec!["eth0"]);
        assert_eq!(pick("192.168.8.1"), vec!["wlan0"]);
        assert_eq!(pick("0.0.0.0"), vec!["eth0", "wlan0"]);
        assert_eq!(pick("::"), vec!["eth0", "wlan0"]);
        assert!(pick("127.0.0.1").is_empty());
        assert!(pick("10.0.0.6").is_empty());
        assert!(pick("fd00::5").is_empty());
    }

    #[test]
    fn loopback_and_v6_listen_addresses_advertise_nowhere() {
        // No sockets, no packets: only the interface list is read.
        assert!(
            interfaces_for_listen("127.0.0.1".parse().unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(
            interfaces_for_listen("::1".parse().unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(
            interfaces_for_listen("fe80::1".parse().unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(
            interfaces_for_listen("192.0.2.77".parse().unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn errors_say_what_was_tried() {
        let e = BrowseError::NotFound {
            waited: Duration::from_millis(3000),
            interfaces: "veth1 (10.200.0.2)".into(),
            skipped: vec!["`x` at 10.200.0.1: speaks API version 2 (this device speaks 1)".into()],
            send_errors: vec![],
        };
        assert_eq!(
            e.to_string(),
            "no usable answer to _diemcau-ops._tcp.local. on veth1 (10.200.0.2) within 3000 ms; skipped: `x` at 10.200.0.1: speaks API version 2 (this device speaks 1)"
        );
    }
}
