//! Socket set-up in one place: listeners that may bind an address this host does not hold yet
//! (IP_FREEBIND on Linux, IP_BINDANY on FreeBSD), so a VRRP backup is ready the instant the VIP
//! arrives.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Bind and listen on `addr`, non-blocking, allowed to bind a non-local address.
pub fn listener(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // One socket per family: "[::]:80" must not also take 0.0.0.0:80 from another listener.
        sock.set_only_v6(true)?;
    }
    bind_any(&sock, addr)?;
    // Accepted sockets inherit it on Linux: no per-connection setsockopt(2).
    sock.set_tcp_nodelay(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}

#[cfg(target_os = "linux")]
fn bind_any(sock: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() {
        sock.set_freebind_v6(true)
    } else {
        sock.set_freebind_v4(true)
    }
}

#[cfg(target_os = "freebsd")]
fn bind_any(sock: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        return Ok(nix::sys::socket::setsockopt(
            sock,
            nix::sys::socket::sockopt::BindAny,
            &true,
        )?);
    }
    let one: libc::c_int = 1;
    // SAFETY: a valid fd, a pointer to a live c_int and its exact size. Neither socket2 nor
    // nix sets IPV6_BINDANY (nix's BindAny is IP_BINDANY only).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_BINDANY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn bind_any(_sock: &Socket, _addr: SocketAddr) -> io::Result<()> {
    Ok(())
}

/// Half-close: tell the peer no more data comes (FIN) while still reading its data.
pub fn shutdown_write(fd: impl AsFd) -> io::Result<()> {
    SockRef::from(&fd).shutdown(Shutdown::Write)
}

/// getsockname(2).
pub fn local_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    SockRef::from(&fd).local_addr().ok()?.as_socket()
}

/// getsockname(2) of a descriptor kept by number: balancer::ConnInfo holds its upstream
/// socket's so `show conns` can ask on another thread, and guarantees it open for the call.
pub fn local_addr_raw(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: the caller keeps `fd` open for the duration of this call (ConnInfo::local runs
    // under the state lock, while its connection is registered); the borrow ends with it. No
    // crate can vouch for a descriptor held by number across threads.
    local_addr(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// shutdown(2) both ways of a descriptor kept by number (`on_down = "shutdown"` cuts the
/// connections of a server marked down from the control-plane thread; the data-path thread
/// that owns the socket sees the end and closes it).
pub fn shutdown_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: as in `local_addr_raw`: the caller holds the state lock while the connection
    // is registered, so `fd` stays open for this call; the borrow ends with it.
    SockRef::from(&unsafe { BorrowedFd::borrow_raw(fd) }).shutdown(Shutdown::Both)
}

/// accept4(2): the next client, non-blocking and close-on-exec in the one call.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, SocketAddr)> {
    let (sock, addr) =
        SockRef::from(&listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let addr = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "accepted a non-IP socket"))?;
    Ok((sock.into(), addr))
}

/// A non-blocking TCP socket with TCP_NODELAY, connecting to `addr`: Ok(true) connected
/// already, Ok(false) in progress (wait until writable, then `take_error`).
pub fn connect(addr: SocketAddr) -> io::Result<(OwnedFd, bool)> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    let done = match sock.connect(&addr.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    Ok((sock.into(), done))
}

/// SO_ERROR of a socket: how its connect ended.
pub fn take_error(fd: impl AsFd) -> io::Result<Option<io::Error>> {
    SockRef::from(&fd).take_error()
}

/// recv(2) into `buf`.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // The raw syscall on Linux: glibc's wrapper is a thread-cancellation point, which in a
    // multi-threaded process wraps every call in two more (about 1 % of the data path's CPU),
    // and nothing here cancels threads. nix and socket2 call that wrapper.
    #[cfg(target_os = "linux")]
    // SAFETY: `buf` is valid for writes of its length for the call; no address is asked for.
    let n = unsafe {
        // Every argument as a full register (syscall(2) reads longs).
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(fd.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len(),
            0 as libc::c_long,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    #[cfg(target_os = "linux")]
    return super::byte_count(n);
    #[cfg(not(target_os = "linux"))]
    return Ok(nix::sys::socket::recv(
        fd.as_raw_fd(),
        buf,
        nix::sys::socket::MsgFlags::empty(),
    )?);
}

/// send(2) of `buf`; a peer that went away is an EPIPE error, never a SIGPIPE.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // The raw syscall on Linux, as in `recv`.
    #[cfg(target_os = "linux")]
    // SAFETY: `buf` is valid for reads of its length for the call; no address is given.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(fd.as_raw_fd()),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(libc::MSG_NOSIGNAL),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::c_long,
        )
    };
    #[cfg(target_os = "linux")]
    return super::byte_count(n);
    #[cfg(not(target_os = "linux"))]
    return Ok(nix::sys::socket::send(
        fd.as_raw_fd(),
        buf,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )?);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let l = listener("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        l.set_nonblocking(false).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(
            a.nodelay().unwrap(),
            "the relay depends on this to avoid Nagle stalls"
        );
    }
}
