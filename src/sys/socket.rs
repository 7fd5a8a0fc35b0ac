//! Socket set-up in one place: listeners that may bind an address this host does not hold yet
//! (IP_FREEBIND on Linux, IP_BINDANY on FreeBSD), so a VRRP backup is ready the instant the VIP
//! arrives.

use std::io;
use std::net::SocketAddr;

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
    use std::os::fd::AsRawFd;
    let (level, name) = if addr.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_BINDANY)
    } else {
        (libc::IPPROTO_IP, libc::IP_BINDANY)
    };
    let one: libc::c_int = 1;
    // SAFETY: a valid fd, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
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
pub fn shutdown_write<S: std::os::fd::AsFd>(s: &S) -> io::Result<()> {
    SockRef::from(s).shutdown(std::net::Shutdown::Write)
}

/// getsockname(2) of a descriptor the caller knows to be an open socket.
pub fn local_addr(fd: std::os::fd::RawFd) -> Option<SocketAddr> {
    // SAFETY: the caller guarantees `fd` stays open for the duration of this call (see
    // balancer::ConnInfo::local); the borrow does not outlive it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    SockRef::from(&fd).local_addr().ok()?.as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
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
