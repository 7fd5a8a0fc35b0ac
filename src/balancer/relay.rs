//! Byte relay between a client and a server: both directions at once, half-close propagated
//! with shutdown(SHUT_WR), backpressure (a direction stops reading while its peer cannot take
//! more), and nothing lost when a side closes right after sending.
//!
//! Memory: an idle connection holds no buffer. Reads go into one per-thread scratch buffer and
//! are written straight on; only bytes the peer cannot take at once are kept, per connection,
//! until they drain. A direction whose reads fill the whole scratch buffer is carrying bulk
//! data and switches to splice(2) on Linux, so the bytes never enter user space.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::sys;

const SCRATCH: usize = 64 * 1024;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// Bytes moved so far, readable while the relay runs.
#[derive(Default, Debug)]
pub struct Counters {
    /// Client -> server.
    pub up: AtomicU64,
    /// Server -> client.
    pub down: AtomicU64,
}

/// Last activity, in milliseconds since `base`, for the idle timeout.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their sending half.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A socket error (reset, broken pipe ...).
    Error(io::Error),
}

/// Relay until both directions end, one fails, or the connection is idle for `idle` (0 = never).
pub async fn relay(client: &TcpStream, server: &TcpStream, idle: Duration, ctr: &Counters) -> End {
    let act = (!idle.is_zero()).then(|| Activity {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let both = async {
        tokio::try_join!(
            pump(client, server, &ctr.up, act.as_ref()),
            pump(server, client, &ctr.down, act.as_ref())
        )
    };
    let r = match &act {
        None => both.await,
        Some(a) => {
            tokio::select! {
                r = both => r,
                _ = idle_watch(a, idle) => return End::Idle,
            }
        }
    };
    match r {
        Ok(_) => End::Closed,
        Err(e) => End::Error(e),
    }
}

async fn idle_watch(a: &Activity, idle: Duration) {
    loop {
        let deadline = a.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

enum Step {
    Again,
    Eof,
    Moved { bulk: bool },
}

/// One direction: src -> dst until src's end of stream, then FIN to dst.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    ctr: &AtomicU64,
    act: Option<&Activity>,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // Backpressure: while the peer has not taken the last read, do not read more.
        let mut off = 0;
        while off < pending.len() {
            dst.writable().await?;
            match dst.try_write(&pending[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // Free it: an idle connection keeps no buffer.
        pending = Vec::new();
        src.readable().await?;
        let step = BUF.with(|b| {
            let mut buf = b.borrow_mut();
            match src.try_read(&mut buf[..]) {
                Ok(0) => Ok(Step::Eof),
                Ok(n) => {
                    ctr.fetch_add(n as u64, Ordering::Relaxed);
                    match dst.try_write(&buf[..n]) {
                        Ok(w) if w == n => {}
                        Ok(w) => pending.extend_from_slice(&buf[w..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            pending.extend_from_slice(&buf[..n])
                        }
                        Err(e) => return Err(e),
                    }
                    Ok(Step::Moved {
                        bulk: n == buf.len(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Again),
                Err(e) => Err(e),
            }
        })?;
        match step {
            Step::Again => continue,
            Step::Eof => break,
            Step::Moved { bulk } => {
                if let Some(a) = act {
                    a.touch();
                }
                #[cfg(target_os = "linux")]
                if bulk && let Ok(pipe) = sys::splice::Pipe::new() {
                    // Flush what is buffered first so the byte order holds.
                    let mut off = 0;
                    while off < pending.len() {
                        dst.writable().await?;
                        match dst.try_write(&pending[off..]) {
                            Ok(n) => off += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                    splice_pump(src, dst, ctr, act, pipe).await?;
                    break;
                }
                #[cfg(not(target_os = "linux"))]
                let _ = bulk;
            }
        }
    }
    // Half-close: the peer learns no more data comes, and may still answer.
    match sys::socket::shutdown_write(dst) {
        Ok(()) => Ok(()),
        // The peer already went away entirely: nothing left to tell it.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The bulk path: socket -> pipe -> socket inside the kernel, until src's end of stream.
#[cfg(target_os = "linux")]
async fn splice_pump(
    src: &TcpStream,
    dst: &TcpStream,
    ctr: &AtomicU64,
    act: Option<&Activity>,
    mut pipe: sys::splice::Pipe,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    let cap = pipe.capacity();
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || pipe.fill(sfd, cap)) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                ctr.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(a) = act {
                    a.touch();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        while pipe.len > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || pipe.drain(dfd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}
