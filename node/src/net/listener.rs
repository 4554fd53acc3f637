//! Listening sockets with room for a burst of connections.
//!
//! `tokio::net::TcpListener::bind` asks the kernel for a backlog of 128 connections
//! waiting to be accepted (the standard library's value). A node under a flood takes
//! its accepts at the pace it screens them (see [`transport`](super::transport)), so
//! 200 hostile connections from one address could fill that queue; the kernel then
//! drops the next SYN, and the client it came from waits a second for its
//! retransmission. The node asks for [`BACKLOG`] instead (Linux caps it at
//! `net.core.somaxconn`: 4096 by default since Linux 5.4, 128 before).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may hold for a listener before they are accepted.
pub(crate) const BACKLOG: u32 = 1024;

/// Binds `addr` (with `SO_REUSEADDR` except on Windows, as `TcpListener::bind` does, so
/// a restarted node gets its port back at once) and listens with a backlog of
/// [`BACKLOG`].
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Not on Windows, where it would let another socket take the port over.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More connections than the standard backlog of 128 wait, unaccepted, and all of
    /// them complete their handshake (none waits for a SYN to be sent again).
    #[tokio::test]
    async fn a_burst_beyond_the_standard_backlog_is_held() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..300 {
            let connect = tokio::net::TcpStream::connect(addr);
            let stream = tokio::time::timeout(std::time::Duration::from_millis(500), connect)
                .await
                .expect(
                    "a connection waited for its SYN to be sent again (net.core.somaxconn < 300?)",
                )
                .unwrap();
            held.push(stream);
        }
        assert_eq!(held.len(), 300);
    }
}
