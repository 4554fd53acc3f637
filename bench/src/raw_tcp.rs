//! The machine's reference figure: how many length-prefixed bincode frames one tokio
//! TCP connection carries per second on loopback, written through a `BufWriter` and
//! read (and decoded) through a `BufReader`. No actors, no cluster: the ceiling a
//! one-message-per-frame protocol could reach on this machine, measured in the same run
//! as the cluster's figures.

use std::time::Duration;

use shared::codec::{decode, encode};
use shared::host::Change;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use node::CommandError;

fn io(what: &'static str) -> impl Fn(std::io::Error) -> CommandError {
    move |e| CommandError::Local(format!("raw TCP reference: {what}: {e}"))
}

/// Sends `frames` frames (each one encoded [`Change`], as small as a counter message)
/// and returns frames per second, from the first write to the last frame decoded.
///
/// On a runtime of its own with tokio's default workers (one per CPU), in a thread of
/// its own: the writer and the reader then run in parallel, as this reference always
/// has, whatever runtime the benchmark itself runs on.
pub(crate) async fn frames_per_sec(frames: u64) -> Result<f64, CommandError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = tokio::runtime::Runtime::new()
            .map_err(io("runtime"))
            .and_then(|runtime| runtime.block_on(measure(frames)));
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| CommandError::Local("raw TCP reference: its thread failed".into()))?
}

async fn measure(frames: u64) -> Result<f64, CommandError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io("bind"))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let reader = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.map_err(io("accept"))?;
        let mut input = BufReader::with_capacity(64 * 1024, socket);
        let mut payload = Vec::new();
        let mut sum: i128 = 0;
        for _ in 0..frames {
            let len = input.read_u32_le().await.map_err(io("read"))? as usize;
            payload.resize(len, 0);
            input.read_exact(&mut payload).await.map_err(io("read"))?;
            let change: Change = decode(&payload)
                .map_err(|e| CommandError::Local(format!("raw TCP reference: {e}")))?;
            sum += change.delta;
        }
        Ok::<_, CommandError>((Instant::now(), sum))
    });

    let socket = TcpStream::connect(addr).await.map_err(io("connect"))?;
    socket.set_nodelay(true).map_err(io("nodelay"))?;
    let mut output = BufWriter::with_capacity(64 * 1024, socket);
    let started = Instant::now();
    for i in 0..frames {
        let frame = encode(&Change {
            counter: (i % 100) as u32,
            delta: 1,
            operations: 1,
        })
        .map_err(|e| CommandError::Local(format!("raw TCP reference: {e}")))?;
        output
            .write_u32_le(frame.len() as u32)
            .await
            .map_err(io("write"))?;
        output.write_all(&frame).await.map_err(io("write"))?;
    }
    output.flush().await.map_err(io("flush"))?;
    let (finished, sum) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .map_err(|_| CommandError::Local("raw TCP reference: reader stalled".into()))?
        .map_err(|e| CommandError::Local(format!("raw TCP reference: {e}")))??;
    if sum != i128::from(frames) {
        return Err(CommandError::Local(format!(
            "raw TCP reference: decoded a sum of {sum}, sent {frames}"
        )));
    }
    Ok(frames as f64 / finished.duration_since(started).as_secs_f64())
}
