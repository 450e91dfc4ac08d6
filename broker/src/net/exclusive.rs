//! One broker per listener address.
//!
//! Every shard binds its own SO_REUSEPORT listener, and the kernel lets any socket of the same
//! effective UID join a reuseport group: a second `spool broker` on the same address used to start
//! and the kernel split connections between the two processes. Kafka binds without SO_REUSEPORT
//! and the second broker fails with EADDRINUSE; this module gives Spool that outcome.
//!
//! Before the shards bind, `ensure_unused` looks for a listening socket on an overlapping address
//! in `/proc/net/tcp` and `/proc/net/tcp6` (they list the sockets of our network namespace, the
//! namespace ports live in). None of our own sockets exist yet, so any listener found is another
//! process's. A probe `bind()` without SO_REUSEPORT would answer the same question through the
//! kernel, but it also collides with the TIME_WAIT sockets a previous run left on the port
//! (glommio's listeners lack SO_REUSEADDR), so a quick restart would be refused.
//!
//! A listener that no process holds (a SIGKILLed broker's, closed by io_uring's deferred
//! teardown only after the process is reaped) is waited out, up to `ORPHAN_LISTENER_WAIT_MS`,
//! so a supervisor restarting a crashed broker at once is not refused.
//!
//! The check runs at start-up, to fail before any partition is recovered, and again under
//! `PortMutex` right before the shards listen. The mutex (an abstract unix socket named after the
//! port, held until every shard listens) makes check-then-listen atomic among Spool processes:
//! of two brokers starting together, the second to take it sees the first's listeners. A foreign
//! program joining the port with SO_REUSEPORT, as the same user, inside those few milliseconds
//! is not excluded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a start-up waits for another Spool process to finish opening its listeners. Holders
/// keep the mutex for milliseconds; a dead holder releases it with its last file descriptor.
pub const PORT_MUTEX_WAIT_MS: u64 = 5_000;

/// How long a start-up waits for listening sockets that no process holds to close (see
/// `ensure_unused`), and how often it looks again.
pub const ORPHAN_LISTENER_WAIT_MS: u64 = 5_000;
const ORPHAN_LISTENER_POLL_MS: u64 = 50;

/// `st` of a listening socket in `/proc/net/tcp` (`TCP_LISTEN`).
const TCP_LISTEN: &str = "0A";

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot resolve listener {host}:{port}: {reason}")]
    Resolve {
        host: String,
        port: u16,
        reason: String,
    },
    #[error(
        "listener address {addr} is already in use by another process{}; is another broker \
         running?",
        listening_elsewhere(.addr, .other)
    )]
    InUse { addr: SocketAddr, other: SocketAddr },
    #[error("cannot check whether {addr} is in use: {reason}")]
    Check { addr: SocketAddr, reason: String },
    #[error(
        "another spool process kept port {port} locked for {PORT_MUTEX_WAIT_MS} ms while opening \
         its listeners"
    )]
    MutexTimeout { port: u16 },
}

fn listening_elsewhere(addr: &SocketAddr, other: &SocketAddr) -> String {
    if addr == other {
        String::new()
    } else {
        format!(" (it listens on {other})")
    }
}

/// The socket address the shards bind, resolved as glommio's `TcpListener::bind` does (first
/// address of the host).
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, ListenError> {
    let error = |reason: String| ListenError::Resolve {
        host: host.to_string(),
        port,
        reason,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("no address".into()))
}

/// Fails if a socket of any process listens on an address that overlaps `addr`.
///
/// A listener no process holds is waited out, up to [`ORPHAN_LISTENER_WAIT_MS`]: a broker
/// killed with SIGKILL leaves its listening sockets to io_uring's deferred teardown, which
/// closes them shortly *after* the process is reaped, so a supervisor restarting it at once was
/// refused "already in use" by a dead process's sockets.
pub fn ensure_unused(addr: SocketAddr) -> Result<(), ListenError> {
    let deadline = Instant::now() + Duration::from_millis(ORPHAN_LISTENER_WAIT_MS);
    let mut waited = false;
    loop {
        let conflicts = conflicting_listeners(addr)?;
        let Some(&(other, _)) = conflicts.first() else {
            return Ok(());
        };
        let inodes: Vec<u64> = conflicts.iter().map(|&(_, inode)| inode).collect();
        let orphaned = matches!(socket_holders(Path::new("/proc"), &inodes), Ok(0));
        if !orphaned || Instant::now() >= deadline {
            return Err(ListenError::InUse {
                addr,
                other: SocketAddr::new(other, addr.port()),
            });
        }
        if !waited {
            waited = true;
            tracing::info!(
                "{addr}: a listener no process holds (a killed process's, closing) is still \
                 open; waiting up to {ORPHAN_LISTENER_WAIT_MS} ms"
            );
        }
        std::thread::sleep(Duration::from_millis(ORPHAN_LISTENER_POLL_MS));
    }
}

/// The listening sockets (address, inode) that overlap `addr`.
fn conflicting_listeners(addr: SocketAddr) -> Result<Vec<(IpAddr, u64)>, ListenError> {
    let check = |reason: String| ListenError::Check { addr, reason };
    let mut found = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // No IPv6 in this kernel or namespace: no IPv6 listener either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && v6 => continue,
            Err(e) => return Err(check(format!("{table}: {e}"))),
        };
        let listening = listening_on(&text, v6, addr.port()).map_err(check)?;
        found.extend(
            listening
                .into_iter()
                .filter(|(ip, _)| overlaps(*ip, addr.ip())),
        );
    }
    Ok(found)
}

/// How many open descriptors of the processes under `proc_root` refer to one of the sockets
/// `inodes`. An error (a process whose descriptors this user may not list) means "unknown":
/// the caller must not take the sockets for orphans.
fn socket_holders(proc_root: &Path, inodes: &[u64]) -> std::io::Result<usize> {
    let names: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut holders = 0;
    for entry in std::fs::read_dir(proc_root)? {
        let entry = entry?;
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            // The process ended while we looked: it holds nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if names.iter().any(|n| target.as_os_str() == n.as_str()) {
                    holders += 1;
                }
            }
        }
    }
    Ok(holders)
}

/// Host-wide (network-namespace-wide) mutual exclusion of Spool processes opening listeners on
/// one port. Released on drop or when the process dies.
#[derive(Debug)]
pub struct PortMutex {
    _socket: UnixDatagram,
}

impl PortMutex {
    pub fn acquire(port: u16) -> Result<PortMutex, ListenError> {
        let name = format!("spool-listeners-port-{port}");
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| mutex_error(port, e))?;
        let deadline = Instant::now() + Duration::from_millis(PORT_MUTEX_WAIT_MS);
        loop {
            match UnixDatagram::bind_addr(&addr) {
                Ok(socket) => return Ok(PortMutex { _socket: socket }),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if Instant::now() >= deadline {
                        return Err(ListenError::MutexTimeout { port });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(mutex_error(port, e)),
            }
        }
    }
}

fn mutex_error(port: u16, e: std::io::Error) -> ListenError {
    ListenError::Check {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        reason: format!("port mutex: {e}"),
    }
}

/// The local addresses and socket inodes of the listening sockets on `port` in a
/// `/proc/net/tcp{,6}` table.
fn listening_on(table: &str, v6: bool, port: u16) -> Result<Vec<(IpAddr, u64)>, String> {
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().take(10).collect();
        let [_, local, _, state, _, _, _, _, _, inode] = fields[..] else {
            return Err(format!("unexpected line `{line}`"));
        };
        if state != TCP_LISTEN {
            continue;
        }
        let (ip, port_hex) = local
            .split_once(':')
            .ok_or_else(|| format!("unexpected address `{local}`"))?;
        if u16::from_str_radix(port_hex, 16) != Ok(port) {
            continue;
        }
        let ip = parse_ip(ip, v6).ok_or_else(|| format!("unexpected address `{local}`"))?;
        let inode = inode
            .parse()
            .map_err(|_| format!("unexpected inode `{inode}`"))?;
        found.push((ip, inode));
    }
    Ok(found)
}

/// The kernel prints each 32-bit word of the address (network byte order in memory) as a native
/// integer in hex, so the word's native bytes are the address bytes.
fn parse_ip(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| {
            let word = hex.get(i * 8..i * 8 + 8)?;
            u32::from_str_radix(word, 16).ok().map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match (v6, bytes.len(), hex.len()) {
        (false, 4, 8) => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        (true, 16, 32) => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Whether a connection to `ours` could reach a socket bound to `theirs`: the same address, or
/// either one a wildcard of its family. An IPv6 wildcard takes IPv4 too (dual-stack, Linux's
/// default; a V6ONLY one cannot be told apart in /proc and is counted as a conflict).
fn overlaps(theirs: IpAddr, ours: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (theirs, ours) = (canonical(theirs), canonical(ours));
    match (theirs, ours) {
        _ if theirs == ours => true,
        (IpAddr::V4(a), IpAddr::V4(b)) => a.is_unspecified() || b.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.is_unspecified() || b.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(v6)) | (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_hex(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    fn v6_hex(ip: Ipv6Addr) -> String {
        ip.octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
                          retrnsmt   uid  timeout inode\n";

    #[test]
    fn reads_listeners_from_proc_net_tcp() {
        let lo = v4_hex(Ipv4Addr::LOCALHOST);
        let any = v4_hex(Ipv4Addr::UNSPECIFIED);
        let table = format!(
            "{HEADER}   0: {lo}:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 11 1\n\
             \x20  1: {any}:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 12 1\n\
             \x20  2: {lo}:2384 {lo}:D431 01 00000000:00000000 00:00000000 00000000  1000 0 13 1\n\
             \x20  3: {lo}:2384 {lo}:D432 06 00000000:00000000 00:00000000 00000000  1000 0 0 1\n\
             \x20  4: {lo}:2385 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 14 1\n"
        );
        assert_eq!(
            listening_on(&table, false, 0x2384),
            Ok(vec![
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 11),
                (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 12)
            ])
        );
        assert_eq!(listening_on(&table, false, 9), Ok(vec![]));

        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped();
        let table6 = format!(
            "{HEADER}   0: {}:2384 {}:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1\n",
            v6_hex(mapped),
            v6_hex(Ipv6Addr::UNSPECIFIED)
        );
        assert_eq!(
            listening_on(&table6, true, 0x2384),
            Ok(vec![(IpAddr::V6(mapped), 77)])
        );
        assert!(listening_on(&format!("{HEADER}garbage\n"), false, 1).is_err());
        let short = format!("{HEADER}   0: 7F:2384 0:0 0A\n");
        assert!(listening_on(&short, false, 0x2384).is_err());
    }

    #[test]
    fn a_listener_this_process_holds_is_not_an_orphan() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let found = conflicting_listeners(addr).expect("read /proc/net/tcp");
        assert_eq!(found.len(), 1, "{found:?}");
        // One holder (this process), so `ensure_unused` refuses at once, without waiting
        // (`finds_a_real_listener_and_not_a_closed_one`).
        let inodes = [found[0].1];
        assert_eq!(socket_holders(Path::new("/proc"), &inodes).ok(), Some(1));
        drop(listener);
    }

    #[test]
    fn socket_holders_counts_descriptors_of_every_process() {
        let root = tempfile::tempdir().expect("tempdir");
        let fd_dir = |pid: &str| {
            let dir = root.path().join(pid).join("fd");
            std::fs::create_dir_all(&dir).expect("mkdir");
            dir
        };
        std::os::unix::fs::symlink("socket:[41]", fd_dir("100").join("3")).expect("link");
        std::os::unix::fs::symlink("socket:[42]", fd_dir("100").join("4")).expect("link");
        std::os::unix::fs::symlink("/dev/null", fd_dir("200").join("0")).expect("link");
        std::os::unix::fs::symlink("socket:[42]", fd_dir("300").join("7")).expect("link");
        // Not a process.
        std::fs::create_dir_all(root.path().join("net")).expect("mkdir");
        assert_eq!(socket_holders(root.path(), &[42]).ok(), Some(2));
        assert_eq!(socket_holders(root.path(), &[41, 42]).ok(), Some(3));
        assert_eq!(socket_holders(root.path(), &[43]).ok(), Some(0));
    }

    #[test]
    fn overlapping_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let cases = [
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0", "127.0.0.1", true),
            ("127.0.0.1", "0.0.0.0", true),
            ("::", "127.0.0.1", true),
            ("::ffff:127.0.0.1", "127.0.0.1", true),
            ("::ffff:127.0.0.2", "127.0.0.1", false),
            ("::1", "127.0.0.1", false),
            ("0.0.0.0", "::1", false),
            ("::", "::1", true),
            ("::1", "::", true),
            ("fe80::1", "::1", false),
        ];
        for (theirs, ours, want) in cases {
            assert_eq!(overlaps(ip(theirs), ip(ours)), want, "{theirs} vs {ours}");
        }
    }

    #[test]
    fn finds_a_real_listener_and_not_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        match ensure_unused(addr) {
            Err(ListenError::InUse { other, .. }) => assert_eq!(other, addr),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(listener);
        ensure_unused(addr).expect("free after close");
    }

    #[test]
    fn the_port_mutex_is_exclusive_until_dropped() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let held = PortMutex::acquire(port).expect("first");
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!(
            "spool-listeners-port-{port}"
        ))
        .expect("name");
        assert!(UnixDatagram::bind_addr(&addr).is_err(), "held");
        drop(held);
        PortMutex::acquire(port).expect("free again");
    }
}
