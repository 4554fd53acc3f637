//! What both ends of a cluster connection share: where its frames begin
//! ([`FrameCursor`]), the marker a node writes on a connection it drops to make room
//! ([`BUSY_MARKER`]), and the split stream ractor_cluster takes ([`Split`]). The
//! accepting side's checks before authentication are in [`super::screen`], the dialing
//! side's reading of the marker in [`super::probe`]; the tests here run both ends.

use std::net::SocketAddr;

/// What a node writes on a connection it drops to make room, before anything else:
/// eight bytes that neither a ractor_cluster frame (a big-endian length far beyond any
/// frame limit) nor a TLS record can start with.
pub const BUSY_MARKER: [u8; 8] = *b"\xffBUSY\xff\r\n";

/// Where ractor_cluster frames (an 8-byte big-endian length, then that many bytes)
/// begin in a byte stream, followed as the bytes go by, in any split.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameCursor {
    header: [u8; 8],
    have: usize,
    payload_left: u64,
    frames: u64,
}

impl FrameCursor {
    /// Takes in the next bytes. `on_start` sees the first byte of every frame as it
    /// arrives, `on_header` every frame's announced length; either may stop the walk
    /// with an error.
    pub(crate) fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_start: impl FnMut(u8) -> Result<(), E>,
        mut on_header: impl FnMut(u64) -> Result<(), E>,
    ) -> Result<(), E> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= take;
                bytes = &bytes[take as usize..];
                continue;
            }
            if self.have == 0 {
                on_start(bytes[0])?;
            }
            let take = (8 - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 8 {
                self.have = 0;
                self.frames += 1;
                let len = u64::from_be_bytes(self.header);
                on_header(len)?;
                self.payload_left = len;
            }
        }
        Ok(())
    }

    /// Whether the stream so far ends exactly at the end of a frame.
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Frames whose header has gone by.
    pub(crate) fn frames(&self) -> u64 {
        self.frames
    }
}

/// A connected stream, split, in the form ractor_cluster takes from outside
/// (`ConnectionOpenedExternal`), labelled with the peer's socket address so sessions
/// report it as usual.
pub(crate) struct Split {
    /// The read half.
    pub(crate) reader: ractor_cluster::BoxRead,
    /// The write half.
    pub(crate) writer: ractor_cluster::BoxWrite,
    /// The peer's socket address.
    pub(crate) peer: SocketAddr,
    /// Our end's socket address.
    pub(crate) local: SocketAddr,
}

impl ractor_cluster::ClusterBidiStream for Split {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        (self.reader, self.writer)
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::*;
    use crate::metrics::ConnectionRefusal;
    use crate::net::probe::{DialProbe, Dialed};
    use crate::net::screen::{
        FrameGate, FramePolicy, Pending, Watched, PREAUTH_MAX_BYTES, PREAUTH_MAX_FRAME,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(len: u64) -> Vec<u8> {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.resize(8 + len as usize, 7);
        bytes
    }

    #[test]
    fn handshake_sized_frames_pass_in_any_split() {
        let stream: Vec<u8> = [frame(120), frame(0), frame(300)].concat();
        for chunk in [1, 3, 8, 9, 100, stream.len()] {
            let mut policy = FramePolicy::default();
            for piece in stream.chunks(chunk) {
                policy.feed(piece).unwrap();
            }
        }
    }

    #[test]
    fn the_cursor_finds_every_frame_start_and_boundary() {
        let stream: Vec<u8> = [frame(3), frame(0), frame(9)].concat();
        for chunk in [1, 2, 7, 8, 11, stream.len()] {
            let mut cursor = FrameCursor::default();
            let (mut starts, mut lens) = (0, Vec::new());
            for piece in stream.chunks(chunk) {
                cursor
                    .feed::<()>(
                        piece,
                        |_| {
                            starts += 1;
                            Ok(())
                        },
                        |len| {
                            lens.push(len);
                            Ok(())
                        },
                    )
                    .unwrap();
            }
            assert_eq!((starts, lens, cursor.frames()), (3, vec![3, 0, 9], 3));
            assert!(cursor.at_boundary());
        }
        let mut cursor = FrameCursor::default();
        cursor
            .feed::<()>(&frame(3)[..9], |_| Ok(()), |_| Ok(()))
            .unwrap();
        assert!(!cursor.at_boundary());
    }

    #[test]
    fn a_huge_length_prefix_is_refused_on_its_own() {
        let mut policy = FramePolicy::default();
        policy.feed(&frame(10)).unwrap();
        let err = policy.feed(&(16u64 << 20).to_be_bytes()[..8]).unwrap_err();
        assert!(err.contains("16777216"), "{err}");
        let mut policy = FramePolicy::default();
        assert!(policy.feed(&u64::MAX.to_be_bytes()).is_err());
        let mut policy = FramePolicy::default();
        assert!(policy.feed(&frame(PREAUTH_MAX_FRAME)).is_ok());
        let mut policy = FramePolicy::default();
        assert!(policy.feed(&(PREAUTH_MAX_FRAME + 1).to_be_bytes()).is_err());
    }

    #[test]
    fn many_small_frames_run_out_of_budget() {
        let mut policy = FramePolicy::default();
        let small = frame(1000);
        let mut sent = 0;
        let refused = loop {
            if let Err(e) = policy.feed(&small) {
                break e;
            }
            sent += small.len() as u64;
        };
        assert!(sent <= PREAUTH_MAX_BYTES && sent + small.len() as u64 > PREAUTH_MAX_BYTES);
        assert!(refused.contains("without authenticating"), "{refused}");
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// An evicted connection gets the marker where the node's next frame would begin,
    /// and the dialing side recognises it there: before anything was said, or after a
    /// frame of the handshake.
    #[tokio::test]
    async fn eviction_writes_the_marker_and_the_dialer_reads_busy() {
        for answered in [false, true] {
            let (client, server) = pair().await;
            let conn = Arc::new(Pending::new(1, server.peer_addr().unwrap(), Instant::now()));
            let mut watched = Watched::new(server, Arc::clone(&conn), true);
            let probe = Arc::new(DialProbe::default());
            let mut dialed = Dialed::new(client, Arc::clone(&probe), true);
            if answered {
                watched.write_all(&frame(5)).await.unwrap();
                let mut got = vec![0u8; 13];
                dialed.read_exact(&mut got).await.unwrap();
                assert_eq!(got, frame(5), "a frame passes through whole");
            }
            let reading = tokio::spawn(async move {
                let mut buf = [0u8; 16];
                watched.read(&mut buf).await
            });
            tokio::task::yield_now().await;
            conn.evict();
            let err = reading.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
            let mut buf = [0u8; 16];
            let err = dialed.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            assert!(probe.refused_busy());
            // And it stays refused.
            assert!(dialed.read(&mut buf).await.is_err());
        }
    }

    /// In the middle of a frame the node cannot write the marker without corrupting
    /// it: the connection just closes.
    #[tokio::test]
    async fn no_marker_in_the_middle_of_a_frame() {
        let (client, server) = pair().await;
        let conn = Arc::new(Pending::new(1, server.peer_addr().unwrap(), Instant::now()));
        let mut watched = Watched::new(server, Arc::clone(&conn), true);
        let probe = Arc::new(DialProbe::default());
        let mut dialed = Dialed::new(client, Arc::clone(&probe), true);
        let half = &frame(20)[..10];
        watched.write_all(half).await.unwrap();
        conn.evict();
        let mut buf = [0u8; 16];
        assert!(watched.read(&mut buf).await.is_err());
        drop(watched);
        let mut got = Vec::new();
        dialed.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, half);
        assert!(!probe.refused_busy());
    }

    /// Ordinary frames, in any split, pass through the dialer whole.
    #[tokio::test]
    async fn ordinary_frames_pass_through_the_dialer_whole() {
        let (client, mut server) = pair().await;
        let probe = Arc::new(DialProbe::default());
        let mut dialed = Dialed::new(client, Arc::clone(&probe), true);
        let sent: Vec<u8> = (0..40u64).flat_map(|n| frame(n % 7)).collect();
        let writer = tokio::spawn({
            let sent = sent.clone();
            async move {
                for piece in sent.chunks(3) {
                    server.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                server.shutdown().await.unwrap();
            }
        });
        let mut got = Vec::new();
        dialed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, sent);
        assert!(!probe.refused_busy());
    }

    #[tokio::test]
    async fn the_gate_refuses_a_big_frame_before_authentication_only() {
        for authenticated in [false, true] {
            let (mut client, server) = pair().await;
            let conn = Arc::new(Pending::new(1, server.peer_addr().unwrap(), Instant::now()));
            if authenticated {
                conn.authenticate();
            }
            let mut gate = FrameGate::new(
                Watched::new(server, Arc::clone(&conn), true),
                Arc::clone(&conn),
                (),
                FramePolicy::default(),
                Vec::new(),
            );
            client
                .write_all(&frame(PREAUTH_MAX_FRAME + 1))
                .await
                .unwrap();
            let mut buf = vec![0u8; 64];
            let read = gate.read(&mut buf).await;
            if authenticated {
                assert!(read.unwrap() > 0);
                assert!(conn.refusal().is_none());
            } else {
                assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
                let (kind, why) = conn.refusal().unwrap();
                assert_eq!(kind, ConnectionRefusal::PreauthLimit);
                assert!(why.contains("before authenticating"), "{why}");
            }
        }
    }
}
