//! Byte relay between a client and a server: both directions at once, half-close propagated
//! with shutdown(SHUT_WR), backpressure (a direction stops reading while its peer cannot take
//! more), and nothing lost when a side closes right after sending.
//!
//! Memory: an idle connection holds no buffer. Reads go into one per-thread scratch buffer and
//! are written straight on; only bytes the peer cannot take at once are kept, per connection,
//! until they drain. A direction whose reads fill the whole scratch buffer is carrying bulk
//! data and switches to splice(2) on Linux, so the bytes never enter user space.
//!
//! CPU: the relay is one hand-written poll function over both directions rather than two
//! joined async loops, so a wake-up costs one pass over a small state machine. Reads use
//! tokio's `poll_read`, which after a short read knows the socket is drained and waits for the
//! next edge instead of spending a read(2) on EAGAIN.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::sys;
use crate::wire::http::{self, HttpError, RequestRewriter};

const SCRATCH: usize = 64 * 1024;

/// Passes over both directions in one wake-up before yielding to other connections.
const ROUNDS: usize = 16;

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

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// A malformed or oversized HTTP request head; the client was answered 400.
    BadRequest(HttpError),
    /// Both sides closed their sending half.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A socket error (reset, broken pipe ...).
    Error(io::Error),
}

/// One direction's state.
#[derive(Default)]
struct Dir {
    /// Bytes read but not yet taken by the peer (backpressure: no reading meanwhile).
    pending: Vec<u8>,
    off: usize,
    /// End of stream seen and passed on with a FIN.
    done: bool,
    /// Answer the client `400 Bad Request` when this (server -> client) direction ends: a
    /// malformed request head stopped the client -> server direction.
    bad_request: bool,
    #[cfg(target_os = "linux")]
    pipe: Option<sys::splice::Pipe>,
}

enum Step {
    Progress,
    Blocked,
    /// The request rewriter refused the client's bytes.
    BadRequest(HttpError),
}

/// What one read did.
enum Read {
    Nothing,
    Eof,
    Data { bulk: bool },
    Refused(HttpError),
}

/// Relay until both directions end, one fails, or the connection is idle for `idle` (0 = never).
/// With `rewriter`, client bytes go through it (X-Forwarded-For on every request).
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    idle: Duration,
    ctr: &Counters,
    mut rewriter: Option<&mut RequestRewriter>,
) -> End {
    let mut up = Dir::default();
    let mut down = Dir::default();
    let mut refused: Option<HttpError> = None;
    let moved = AtomicBool::new(false);
    let mut both = std::future::poll_fn(|cx| {
        for _ in 0..ROUNDS {
            let filter = rewriter.as_deref_mut();
            let a = match step(&mut up, down.done, client, server, &ctr.up, cx, filter) {
                Ok(Step::BadRequest(e)) => {
                    refused = Some(e);
                    if rewriter.as_deref().is_none_or(|r| r.requests() == 0) {
                        // Nothing went to the server: answer 400 now and close both sides.
                        let _ = client.try_write(http::BAD_REQUEST);
                        return Poll::Ready(Ok(()));
                    }
                    // Stop reading the client, let the server finish what it was sent (it
                    // answers earlier pipelined requests), then answer 400.
                    down.bad_request = true;
                    if let Err(e) = finish(&mut up, down.done, server) {
                        return Poll::Ready(Err(e));
                    }
                    Step::Progress
                }
                Ok(s) => s,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let b = match step(&mut down, up.done, server, client, &ctr.down, cx, None) {
                Ok(s) => s,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if up.done && down.done {
                return Poll::Ready(Ok(()));
            }
            match (a, b) {
                (Step::Blocked, Step::Blocked) => return Poll::Pending,
                _ => moved.store(true, Ordering::Relaxed),
            }
        }
        // Still busy: let other connections run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    });
    let r = if idle.is_zero() {
        (&mut both).await
    } else {
        // Look for activity four times per period rather than stamping every read: the
        // connection closes between `idle` and 1.25 x `idle` after the last byte moved.
        let tick = (idle / 4).max(Duration::from_millis(10));
        let mut quiet = Duration::ZERO;
        loop {
            tokio::select! {
                r = &mut both => break r,
                _ = tokio::time::sleep(tick) => {
                    if moved.swap(false, Ordering::Relaxed) {
                        quiet = Duration::ZERO;
                    } else {
                        quiet += tick;
                        if quiet >= idle {
                            return End::Idle;
                        }
                    }
                }
            }
        }
    };
    match (r, refused) {
        (Ok(()), Some(e)) => End::BadRequest(e),
        (Ok(()), None) => End::Closed,
        (Err(e), _) => End::Error(e),
    }
}

/// Advance one direction as far as it goes without blocking.
fn step(
    d: &mut Dir,
    other_done: bool,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    ctr: &AtomicU64,
    cx: &mut Context<'_>,
    filter: Option<&mut RequestRewriter>,
) -> io::Result<Step> {
    if d.done {
        return Ok(Step::Blocked);
    }
    if d.off < d.pending.len() {
        return match Pin::new(&mut *dst).poll_write(cx, &d.pending[d.off..]) {
            Poll::Pending => Ok(Step::Blocked),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(0)) => Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                d.off += n;
                if d.off == d.pending.len() {
                    // Free it: an idle connection keeps no buffer.
                    d.pending = Vec::new();
                    d.off = 0;
                }
                Ok(Step::Progress)
            }
        };
    }
    #[cfg(target_os = "linux")]
    if d.pipe.is_some() {
        return splice_step(d, other_done, src, dst, ctr, cx);
    }
    let read = BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let mut rb = ReadBuf::new(&mut buf[..]);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Pending => Ok(Read::Nothing),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n > 0 {
                    ctr.fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(f) = filter {
                        // Rewritten bytes go through `pending`, written below like any
                        // backlog; a refused head ends this direction.
                        if let Err(e) = f.feed(&buf[..n], &mut d.pending) {
                            d.pending.clear();
                            return Ok(Read::Refused(e));
                        }
                        match dst.try_write(&d.pending) {
                            Ok(w) => d.off = w,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                        if d.off == d.pending.len() {
                            d.pending = Vec::new();
                            d.off = 0;
                        }
                        // No splice: every byte must pass the rewriter.
                        return Ok(Read::Data { bulk: false });
                    }
                    match dst.try_write(&buf[..n]) {
                        Ok(w) if w == n => {}
                        Ok(w) => d.pending.extend_from_slice(&buf[w..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            d.pending.extend_from_slice(&buf[..n])
                        }
                        Err(e) => return Err(e),
                    }
                }
                if n == 0 {
                    Ok(Read::Eof)
                } else {
                    Ok(Read::Data {
                        bulk: n == buf.len(),
                    })
                }
            }
        }
    })?;
    match read {
        Read::Nothing => Ok(Step::Blocked),
        Read::Refused(e) => Ok(Step::BadRequest(e)),
        Read::Eof => {
            finish(d, other_done, dst)?;
            Ok(Step::Progress)
        }
        Read::Data { bulk } => {
            #[cfg(target_os = "linux")]
            if bulk {
                // Bulk data: from now on socket -> pipe -> socket inside the kernel. What is
                // pending is written first, so the byte order holds. Without a pipe (out of
                // descriptors) the copy path simply goes on.
                d.pipe = sys::splice::Pipe::new().ok();
            }
            #[cfg(not(target_os = "linux"))]
            let _ = bulk;
            Ok(Step::Progress)
        }
    }
}

/// End of stream from src: pass the FIN on; the other direction may go on. When the other
/// direction has ended too, both sockets are about to be closed, and close(2) sends the FIN:
/// the shutdown(2) would be a wasted call on every connection.
fn finish(d: &mut Dir, other_done: bool, dst: &TcpStream) -> io::Result<()> {
    d.done = true;
    if d.bad_request {
        // Best effort: 70 bytes into a socket that has taken nothing for a while.
        let _ = dst.try_write(http::BAD_REQUEST);
    }
    if other_done {
        return Ok(());
    }
    match sys::socket::shutdown_write(dst) {
        Ok(()) => Ok(()),
        // The peer already went away entirely: nothing left to tell it.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The bulk path: socket -> pipe -> socket inside the kernel, until src's end of stream.
#[cfg(target_os = "linux")]
fn splice_step(
    d: &mut Dir,
    other_done: bool,
    src: &TcpStream,
    dst: &TcpStream,
    ctr: &AtomicU64,
    cx: &mut Context<'_>,
) -> io::Result<Step> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    let Some(pipe) = d.pipe.as_mut() else {
        return Ok(Step::Blocked);
    };
    if pipe.len > 0 {
        if dst.poll_write_ready(cx).is_pending() {
            return Ok(Step::Blocked);
        }
        return match dst.try_io(Interest::WRITABLE, || pipe.drain(dst.as_raw_fd())) {
            Ok(_) => Ok(Step::Progress),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Progress),
            Err(e) => Err(e),
        };
    }
    if src.poll_read_ready(cx).is_pending() {
        return Ok(Step::Blocked);
    }
    match src.try_io(Interest::READABLE, || pipe.fill(src.as_raw_fd())) {
        Ok(0) => {
            d.pipe = None;
            finish(d, other_done, dst)?;
            Ok(Step::Progress)
        }
        Ok(n) => {
            ctr.fetch_add(n as u64, Ordering::Relaxed);
            Ok(Step::Progress)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Progress),
        Err(e) => Err(e),
    }
}
