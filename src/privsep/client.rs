//! The child's side of the channel to the privileged parent, on the runtime's reactor: a
//! request is a future that resolves when its reply (matched by id) arrives, so no task and
//! no thread ever waits on the parent synchronously. One driver task owns the socket: it
//! sends what the calls queue (in the order they were made), reads replies and pushes, and
//! when the parent is gone fails every pending call and says so once ([`Event::ParentGone`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::frame::{self, Kind, Reassembler};
use super::{Push, Reply, Request, decode, encode};
use crate::sys::privsep::Channel;

/// A reply and the descriptors that came with it (a `Bind` reply's listener).
#[derive(Debug)]
pub struct Answer {
    pub reply: Reply,
    pub fds: Vec<OwnedFd>,
}

/// What the parent says without being asked.
#[derive(Debug)]
pub enum Event {
    Push(Push),
    /// The channel closed (or broke): the parent is gone. Sent once, last.
    ParentGone,
}

type Pending = oneshot::Sender<Answer>;

/// A handle for making requests; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    calls: mpsc::UnboundedSender<(Request, Pending)>,
}

/// The error of a call whose reply never came.
pub const GONE: &str = "the privileged parent is gone";

impl Client {
    /// Start the driver on the current runtime. Returns the handle and the parent's pushes.
    pub fn start(chan: Channel) -> std::io::Result<(Client, mpsc::UnboundedReceiver<Event>)> {
        chan.set_nonblocking(true)?;
        let fd = crate::sys::async_fd(chan)?;
        let (calls, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(Driver::new(fd, rx, events_tx).run());
        Ok((Client { calls }, events))
    }

    /// Send `req` now (calls go out in the order they are made, even if their futures are
    /// awaited in another order or not at all) and get a future for the reply.
    pub fn call(&self, req: Request) -> impl Future<Output = Result<Answer, String>> + use<> {
        let (tx, rx) = oneshot::channel();
        let queued = self.calls.send((req, tx)).is_ok();
        async move {
            if !queued {
                return Err(GONE.to_string());
            }
            rx.await.map_err(|_| GONE.to_string())
        }
    }

    /// A request whose only answer is done or not.
    pub fn call_ok(&self, req: Request) -> impl Future<Output = Result<(), String>> + use<> {
        let answer = self.call(req);
        async move {
            match answer.await?.reply {
                Reply::Ok => Ok(()),
                Reply::Error(e) => Err(e),
                other => Err(format!("unexpected reply {other:?}")),
            }
        }
    }
}

/// The task that owns the socket.
struct Driver {
    fd: AsyncFd<Channel>,
    calls: mpsc::UnboundedReceiver<(Request, Pending)>,
    events: mpsc::UnboundedSender<Event>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Datagrams waiting for room in the socket buffer, in order.
    out: VecDeque<Vec<u8>>,
    reassembler: Reassembler,
    /// Descriptors that arrived with fragments of the message being put together.
    fds: Vec<OwnedFd>,
}

impl Driver {
    fn new(
        fd: AsyncFd<Channel>,
        calls: mpsc::UnboundedReceiver<(Request, Pending)>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Driver {
        Driver {
            fd,
            calls,
            events,
            pending: HashMap::new(),
            next_id: 1,
            out: VecDeque::new(),
            reassembler: Reassembler::default(),
            fds: Vec::new(),
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; frame::MAX_DATAGRAM];
        let mut calls_open = true;
        loop {
            tokio::select! {
                r = self.fd.readable() => {
                    let Ok(mut guard) = r else { break };
                    // Everything that is there, then back to the loop.
                    let mut got = Vec::new();
                    let open = loop {
                        match guard.try_io(|c| c.get_ref().recv(&mut buf)) {
                            Ok(Ok((0, _))) | Ok(Err(_)) => break false,
                            Ok(Ok((n, fds))) => got.push((buf[..n].to_vec(), fds)),
                            Err(_would_block) => break true,
                        }
                    };
                    drop(guard);
                    for (d, fds) in got {
                        self.received(&d, fds);
                    }
                    if !open {
                        break;
                    }
                }
                w = self.fd.writable(), if !self.out.is_empty() => {
                    let Ok(mut guard) = w else { break };
                    if flush(&mut guard, &mut self.out).is_err() {
                        break;
                    }
                }
                c = self.calls.recv(), if calls_open => match c {
                    Some((req, tx)) => self.queue(req, tx),
                    // Every handle is gone: nothing more will be asked, replies still come.
                    None => calls_open = false,
                },
            }
        }
        // Pending calls fail as their senders drop; the daemon learns once.
        self.pending.clear();
        let _ = self.events.send(Event::ParentGone);
    }

    fn queue(&mut self, req: Request, tx: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, tx);
        self.out
            .extend(frame::split(Kind::Request, id, &encode(&req)));
    }

    fn received(&mut self, datagram: &[u8], fds: Vec<OwnedFd>) {
        self.fds.extend(fds);
        let msg = match self.reassembler.push(datagram) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                warn!(target: "priv", "dropped a message from the parent: {e}");
                self.fds.clear();
                return;
            }
        };
        let fds = std::mem::take(&mut self.fds);
        match msg.kind {
            Kind::Reply => match (self.pending.remove(&msg.id), decode::<Reply>(&msg.body)) {
                (Some(tx), Ok(reply)) => {
                    // The caller may have stopped waiting: its answer is dropped.
                    let _ = tx.send(Answer { reply, fds });
                }
                (Some(tx), Err(e)) => {
                    let _ = tx.send(Answer {
                        reply: Reply::Error(e),
                        fds,
                    });
                }
                (None, _) => warn!(target: "priv", id = msg.id, "a reply to no request"),
            },
            Kind::Push => {
                let push = decode(&msg.body).unwrap_or(Push::Unknown);
                let _ = self.events.send(Event::Push(push));
            }
            Kind::Request => warn!(target: "priv", "the parent sent a request: ignored"),
        }
    }
}

/// Send queued datagrams until the socket is full (Ok) or broken (Err).
fn flush(
    guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, Channel>,
    out: &mut VecDeque<Vec<u8>>,
) -> Result<(), ()> {
    while let Some(d) = out.front() {
        match guard.try_io(|c| c.get_ref().send(d, &[])) {
            Ok(Ok(())) => {
                out.pop_front();
            }
            Ok(Err(e)) => {
                warn!(target: "priv", "cannot send to the privileged parent: {e}");
                return Err(());
            }
            Err(_would_block) => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use super::*;

    /// The parent's end, blocking, speaking the framing by hand: what the real parent does,
    /// minus the privileges.
    struct FakeParent {
        chan: Channel,
        inbox: Reassembler,
    }

    impl FakeParent {
        fn next(&mut self) -> (u64, Request) {
            let mut buf = vec![0u8; frame::MAX_DATAGRAM];
            loop {
                let (n, _) = self.chan.recv(&mut buf).expect("recv");
                assert!(n > 0, "the child closed the channel");
                if let Some(m) = self.inbox.push(&buf[..n]).expect("well framed") {
                    return (m.id, decode(&m.body).expect("a request"));
                }
            }
        }

        fn reply(&self, id: u64, r: &Reply, fds: &[std::os::fd::BorrowedFd<'_>]) {
            for (k, d) in frame::split(Kind::Reply, id, &encode(r)).iter().enumerate() {
                let attach = if k == 0 { fds } else { &[] };
                self.chan.send(d, attach).expect("send");
            }
        }
    }

    fn pair() -> (Channel, FakeParent) {
        let (child, parent) = crate::sys::privsep::pair().expect("socketpair");
        let parent = FakeParent {
            chan: parent,
            inbox: Reassembler::default(),
        };
        (child, parent)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn unban(last: u8) -> Request {
        Request::Unban {
            ips: vec![IpAddr::from([203, 0, 113, last])],
        }
    }

    /// Each reply names the request it answers: the parent answers in reverse order.
    #[test]
    fn replies_out_of_order_reach_their_own_callers() {
        let (chan, mut parent) = pair();
        let server = std::thread::spawn(move || {
            let got: Vec<(u64, Request)> = (0..3).map(|_| parent.next()).collect();
            for (id, req) in got.iter().rev() {
                let Request::Unban { ips } = req else {
                    panic!("{req:?}")
                };
                parent.reply(*id, &Reply::Error(ips[0].to_string()), &[]);
            }
            parent
        });
        rt().block_on(async {
            let (client, _events) = Client::start(chan).expect("client");
            let calls: Vec<_> = (1..=3).map(|k| client.call(unban(k))).collect();
            for (k, call) in (1..=3).zip(calls) {
                let a = call.await.expect("answered");
                assert_eq!(a.reply, Reply::Error(format!("203.0.113.{k}")));
            }
        });
        drop(server.join());
    }

    /// While the parent takes its time, the thread keeps running other tasks on time.
    #[test]
    fn a_slow_parent_does_not_hold_the_thread() {
        let (chan, mut parent) = pair();
        let server = std::thread::spawn(move || {
            let (id, _) = parent.next();
            std::thread::sleep(Duration::from_millis(500));
            parent.reply(id, &Reply::Ok, &[]);
            parent
        });
        rt().block_on(async {
            let (client, _events) = Client::start(chan).expect("client");
            let call = client.call_ok(unban(1));
            let ticker = tokio::spawn(async {
                let mut worst = Duration::ZERO;
                for _ in 0..40 {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    worst = worst.max(t.elapsed());
                }
                worst
            });
            assert_eq!(call.await, Ok(()));
            let worst = ticker.await.expect("ticker");
            assert!(
                worst < Duration::from_millis(200),
                "a 10 ms timer waited {worst:?} while the parent was slow"
            );
        });
        drop(server.join());
    }

    /// A reply far over one datagram, with a descriptor on its first fragment.
    #[test]
    fn a_large_reply_and_a_descriptor_arrive_whole() {
        let (chan, mut parent) = pair();
        let bans: Vec<(IpAddr, Option<u64>)> = (0..20_000u32)
            .map(|i| {
                (
                    IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                    Some(u64::from(i)),
                )
            })
            .collect();
        let expect = bans.clone();
        let server = std::thread::spawn(move || {
            let (id, req) = parent.next();
            assert_eq!(req, Request::ListBans);
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
            parent.reply(id, &Reply::Bans(bans), &[l.as_fd()]);
            parent
        });
        rt().block_on(async {
            let (client, _events) = Client::start(chan).expect("client");
            let a = client.call(Request::ListBans).await.expect("answered");
            assert_eq!(a.reply, Reply::Bans(expect));
            assert_eq!(a.fds.len(), 1, "the descriptor came with the reply");
        });
        drop(server.join());
    }

    /// The parent dies with a call pending: the call fails, and the daemon is told once.
    #[test]
    fn a_dead_parent_fails_pending_calls_and_says_so() {
        let (chan, mut parent) = pair();
        let server = std::thread::spawn(move || {
            let _ = parent.next();
            drop(parent);
        });
        rt().block_on(async {
            let (client, mut events) = Client::start(chan).expect("client");
            let r = tokio::time::timeout(Duration::from_secs(5), client.call_ok(unban(1)))
                .await
                .expect("no hang");
            assert_eq!(r, Err(GONE.to_string()));
            let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
            assert!(matches!(e, Ok(Some(Event::ParentGone))), "{e:?}");
            let later = client.call_ok(unban(2)).await;
            assert_eq!(
                later,
                Err(GONE.to_string()),
                "calls after the end fail at once"
            );
        });
        drop(server.join());
    }
}
