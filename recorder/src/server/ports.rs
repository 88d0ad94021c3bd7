//! RTP ports: even ports from the configured range (RFC 3550 §11: RTP on even ports, RTCP on the next
//! odd one, which the recorder leaves free), handed out round-robin so a port just released is not reused
//! at once (late packets of the last call must not land in the next one), each bound before it is offered.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};

#[derive(Debug)]
pub struct PortPool {
    first: u16,
    last: u16,
    next: u16,
    in_use: BTreeSet<u16>,
}

impl PortPool {
    /// Even ports in `first..=last` (an odd `first` starts at the next even port).
    pub fn new(first: u16, last: u16) -> Self {
        let first = first.saturating_add(first % 2);
        Self { first, last, next: first, in_use: BTreeSet::new() }
    }

    /// Ports the range holds.
    pub fn capacity(&self) -> usize {
        if self.last < self.first {
            0
        } else {
            usize::from((self.last - self.first) / 2) + 1
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Binds a socket on `ip` to the next free even port; ports another program holds are skipped.
    pub fn bind(&mut self, ip: IpAddr) -> std::io::Result<UdpSocket> {
        for _ in 0..self.capacity() {
            let port = self.next;
            self.next = if port >= self.last.saturating_sub(1) || port.checked_add(2).is_none() {
                self.first
            } else {
                port + 2
            };
            if self.in_use.contains(&port) || port > self.last {
                continue;
            }
            match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(socket) => {
                    socket.set_nonblocking(true)?;
                    self.in_use.insert(port);
                    return Ok(socket);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no free RTP port in the configured range"))
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ports_are_even_taken_in_turn_and_skipped_while_in_use() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // Find a free block first: another test may hold some ports.
        let base = {
            let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("probe");
            let port = probe.local_addr().expect("addr").port();
            port - port % 2
        };
        let mut pool = PortPool::new(base + 1, base + 8);
        assert_eq!(pool.capacity(), 4);
        let a = pool.bind(ip).expect("a").local_addr().expect("addr").port();
        let b = pool.bind(ip).expect("b");
        let b_port = b.local_addr().expect("addr").port();
        assert!(a.is_multiple_of(2) && b_port.is_multiple_of(2) && a >= base + 2, "{a} {b_port}");
        assert_eq!(b_port, a + 2);
        pool.release(a);
        let c = pool.bind(ip).expect("c").local_addr().expect("addr").port();
        assert_ne!(c, a, "a released port is not reused at once");
        assert_eq!(pool.in_use(), 2);
    }
}
