//! TCP_NODELAY for the PostgreSQL connections.
//!
//! sqlx 0.9.0 stopped disabling Nagle's algorithm on its sockets (launchbadge/sqlx#4335; the fix,
//! #4336, is merged but not released). Any statement larger than one TCP segment — every bulk
//! insert, and on a real network every write carrying a resource — then waits up to 40 ms for a
//! delayed ACK before its last segment leaves. Until a release carries the fix, each new
//! connection's socket is found through `/proc/self` (the process's TCP sockets whose peer is
//! the database server) and given TCP_NODELAY. Remove this module when sqlx sets it again.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// Set TCP_NODELAY on every socket of this process connected to one of `peers`. Idempotent.
/// Best effort: on a system without `/proc` it does nothing, and the connection works as sqlx
/// made it.
pub fn set_on_sockets_to(peers: &[SocketAddr]) {
    let inodes = socket_inodes_to(peers);
    if inodes.is_empty() {
        return;
    }
    let Ok(descriptors) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in descriptors.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let Some(inode) = target.to_str().and_then(|t| t.strip_prefix("socket:[")).and_then(|t| t.strip_suffix(']')) else {
            continue;
        };
        if !inodes.contains(inode) {
            continue;
        }
        if let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) {
            set_nodelay(fd);
        }
    }
}

#[allow(unsafe_code)]
fn set_nodelay(fd: i32) {
    let enabled: libc::c_int = 1;
    // SAFETY: `fd` was just listed in /proc/self/fd as a TCP socket of this process; setsockopt
    // reads `enabled` for the length given and does not keep the pointer. A descriptor closed in
    // the meantime makes the call fail with EBADF, which is ignored.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&enabled as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Inodes of this process's TCP sockets whose remote end is one of `peers`.
fn socket_inodes_to(peers: &[SocketAddr]) -> HashSet<String> {
    let mut inodes = HashSet::new();
    for (table, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                continue;
            }
            if let Some(remote) = parse_proc_address(fields[2], v6)
                && peers.iter().any(|peer| same_endpoint(*peer, remote))
            {
                inodes.insert(fields[9].to_owned());
            }
        }
    }
    inodes
}

fn same_endpoint(peer: SocketAddr, remote: SocketAddr) -> bool {
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    peer.port() == remote.port() && unmapped(peer.ip()) == unmapped(remote.ip())
}

/// `0100007F:1538` (IPv4, little-endian words as the kernel prints them) into an address.
fn parse_proc_address(text: &str, v6: bool) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = address
        .as_bytes()
        .chunks(8)
        .map(|chunk| std::str::from_utf8(chunk).ok().and_then(|hex| u32::from_str_radix(hex, 16).ok()))
        .collect::<Option<_>>()?;
    let ip = match (v6, words.as_slice()) {
        (false, [word]) => IpAddr::from(word.to_le_bytes()),
        (true, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (slot, word) in bytes.chunks_mut(4).zip([a, b, c, d]) {
                slot.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_addresses() {
        assert_eq!(parse_proc_address("0100007F:1538", false), Some("127.0.0.1:5432".parse().unwrap()));
        assert_eq!(parse_proc_address("00000000000000000000000001000000:1538", true), Some("[::1]:5432".parse().unwrap()));
        assert!(same_endpoint("127.0.0.1:5432".parse().unwrap(), "[::ffff:127.0.0.1]:5432".parse().unwrap()));
    }

    #[test]
    fn sets_nodelay_on_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(peer).unwrap();
        assert!(!stream.nodelay().unwrap());
        set_on_sockets_to(&[peer]);
        assert!(stream.nodelay().unwrap());
    }
}
