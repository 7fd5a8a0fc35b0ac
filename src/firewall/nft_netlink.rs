//! The ban sets (and the server sets) of fwlb's nftables table, changed and listed in-process through netlink
//! (nf_tables NEWSETELEM / DELSETELEM / GETSETELEM, as keepalived does with libnftnl): no
//! process per ban, and everything that arrived together goes in one transaction. `nft -f`
//! is still what loads the ruleset ([`super::nft::render`]); only the set elements change here.
//!
//! Messages come from `netlink-packet-netfilter` (rust-netlink, MIT): the building and the
//! parsing are pure functions, tested on bytes; [`SetSocket`] is the thin I/O around them,
//! for the privileged parent (it needs CAP_NET_ADMIN at every send).

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlaBuffer, NlasIterator,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::backend::BanChange;
use super::model::Ban;
use super::nft::TABLE;

/// Addresses per transaction: the three messages of a batch stay far below the socket's
/// send limit (net.core.wmem_max, 212,992 bytes by default: 1,024 IPv6 elements take ~90 KB).
const CHUNK: usize = 1024;
/// `NFNL_SUBSYS_NFTABLES` (linux/netfilter/nfnetlink.h): the batch's resource id.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWSETELEM` in the nftables subsystem: the message type of a dump's elements.
const NEW_SET_ELEMENT: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 12;
// Attribute types of linux/netfilter/nf_tables.h for a dump's elements.
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
/// How long the kernel may take to answer before the change is reported as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The ban sets (IPv4, IPv6).
pub const BAN_SETS: [&str; 2] = ["banned4", "banned6"];

/// The set of `sets` (IPv4, IPv6) for `ip`'s family.
fn set_name(sets: [&'static str; 2], ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { sets[0] } else { sets[1] }
}

fn key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// What a list of changes comes to, address by address (the last change of an address wins):
/// every address touched is added (a no-op if present) and deleted, then the banned ones are
/// added again with their timeout — as `nft` does, since adding an element that exists keeps
/// its old timeout. All in one transaction, so a banned address is never briefly unbanned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub touch: Vec<IpAddr>,
    pub ban: Vec<(IpAddr, Option<Duration>)>,
}

pub fn plan(changes: &[BanChange]) -> Plan {
    let mut last: BTreeMap<IpAddr, Option<Option<Duration>>> = BTreeMap::new();
    for c in changes {
        match *c {
            BanChange::Ban(ip, t) => last.insert(ip, Some(t.filter(|d| !d.is_zero()))),
            BanChange::Unban(ip) => last.insert(ip, None),
        };
    }
    Plan {
        touch: last.keys().copied().collect(),
        ban: last
            .into_iter()
            .filter_map(|(ip, s)| s.map(|t| (ip, t)))
            .collect(),
    }
}

fn message(
    inner: NetfilterMessageInner,
    family: NetfilterProtoFamily,
    res_id: u16,
) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, res_id), inner)
}

fn element(ip: IpAddr, timeout: Option<Duration>) -> ListAttribute<SetElementAttribute> {
    let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key(ip)))];
    if let Some(t) = timeout {
        // Milliseconds (the kernel's unit); a sub-millisecond rest rounds up, never to 0,
        // which would mean "no timeout".
        let ms = u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        attrs.push(SetElementAttribute::Timeout(ms.max(1)));
    }
    ListAttribute::Element(attrs)
}

fn elements(set: &str, elems: Vec<ListAttribute<SetElementAttribute>>) -> SetElementMessage {
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.to_string()),
            SetElementList::Set(set.to_string()),
            SetElementList::Elements(elems),
        ],
    }
}

/// Serialize messages back to back, numbered from `seq`.
fn serialize(msgs: Vec<(NetfilterMessage, u16)>, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, (m, flags)) in msgs.into_iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq.wrapping_add(k as u32);
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(m));
        nl.finalize();
        let start = out.len();
        out.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut out[start..]);
    }
    out
}

/// One transaction for `plan` (at most [`CHUNK`] addresses) on `sets` (IPv4, IPv6): batch
/// begin, per family an add and a delete of every address touched and an add of the banned
/// ones, batch end. Returns the bytes and how many acknowledged messages they hold (numbered
/// from `seq + 1`). For the server sets a "ban" without timeout is an address to hold, an
/// "unban" one to let go.
pub fn batch(plan: &Plan, sets: [&'static str; 2], seq: u32) -> (Vec<u8>, usize) {
    let control = |c| {
        (
            message(
                NetfilterMessageInner::None(c),
                NetfilterProtoFamily::Unspec,
                NFNL_SUBSYS_NFTABLES,
            ),
            NLM_F_REQUEST,
        )
    };
    let nft = |m: NfTablesMessage, flags: u16| {
        (
            message(
                NetfilterMessageInner::NfTables(m),
                NetfilterProtoFamily::Inet,
                0,
            ),
            NLM_F_REQUEST | NLM_F_ACK | flags,
        )
    };
    let mut msgs = vec![control(ControlMessage::BatchBegin)];
    for v4 in [true, false] {
        let touch: Vec<IpAddr> = plan
            .touch
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == v4)
            .collect();
        let Some(first) = touch.first() else { continue };
        let set = set_name(sets, *first);
        let all = || {
            touch
                .iter()
                .map(|ip| element(*ip, None))
                .collect::<Vec<_>>()
        };
        msgs.push(nft(
            NfTablesMessage::NewSetElement(elements(set, all())),
            NLM_F_CREATE,
        ));
        msgs.push(nft(
            NfTablesMessage::DeleteSetElement(elements(set, all())),
            0,
        ));
        let banned: Vec<_> = plan
            .ban
            .iter()
            .filter(|(a, _)| a.is_ipv4() == v4)
            .map(|(ip, t)| element(*ip, *t))
            .collect();
        if !banned.is_empty() {
            msgs.push(nft(
                NfTablesMessage::NewSetElement(elements(set, banned)),
                NLM_F_CREATE,
            ));
        }
    }
    msgs.push(control(ControlMessage::BatchEnd));
    let acked = msgs.len() - 2;
    (serialize(msgs, seq), acked)
}

/// A dump request for one ban set's elements.
pub fn dump_request(set: &str, seq: u32) -> Vec<u8> {
    let req = SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.to_string()),
            SetElementList::Set(set.to_string()),
        ],
    };
    let m = message(
        NetfilterMessageInner::NfTables(NfTablesMessage::GetSetElement(req)),
        NetfilterProtoFamily::Inet,
        0,
    );
    serialize(vec![(m, NLM_F_REQUEST | NLM_F_DUMP)], seq)
}

/// What one netlink message from the kernel says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// An acknowledgement (code 0) or an error (a negative errno) for message `seq`.
    Ack {
        seq: u32,
        code: i32,
    },
    /// Set elements of a dump.
    Bans(Vec<Ban>),
    Done,
    Other,
}

/// Walk the netlink messages in one datagram; a message that does not parse ends the walk
/// with an error (the kernel does not send those, so it is reported, never a panic).
pub fn answers(mut buf: &[u8]) -> Result<Vec<Answer>, String> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(format!(
                "a netlink message of {len} bytes in a datagram of {}",
                buf.len()
            ));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == NEW_SET_ELEMENT {
            out.push(Answer::Bans(dumped_elements(&buf[16..len])?));
        } else {
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..len])
                .map_err(|e| format!("unreadable netlink message: {e}"))?;
            out.push(answer(msg));
        }
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

fn answer(msg: NetlinkMessage<NetfilterMessage>) -> Answer {
    let seq = msg.header.sequence_number;
    match msg.payload {
        NetlinkPayload::Error(e) => Answer::Ack {
            seq,
            code: e.raw_code(),
        },
        NetlinkPayload::Done(_) => Answer::Done,
        _ => Answer::Other,
    }
}

/// A dump's set elements, walked with netlink-packet-core's attribute iterator rather than
/// parsed by netlink-packet-netfilter: its 0.4 list parser formats the whole buffer for every
/// element it reads (quadratic: 10,000 bans took seconds of CPU to list).
fn dumped_elements(payload: &[u8]) -> Result<Vec<Ban>, String> {
    // nfgenmsg (family, version, resource id) comes before the attributes.
    let attrs = payload
        .get(4..)
        .ok_or("a set-element message without its header")?;
    let mut out = Vec::new();
    for list in nlas(attrs)? {
        if list.kind() != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in nlas(list.value())? {
            if elem.kind() == NFTA_LIST_ELEM
                && let Some(ban) = dumped_element(elem.value())?
            {
                out.push(ban);
            }
        }
    }
    Ok(out)
}

fn nlas(buf: &[u8]) -> Result<Vec<NlaBuffer<&[u8]>>, String> {
    NlasIterator::new(buf)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("unreadable set element attribute: {e}"))
}

/// One element: its key (the address), and the time left if it has a timeout.
fn dumped_element(buf: &[u8]) -> Result<Option<Ban>, String> {
    let (mut ip, mut timeout, mut expiration) = (None, None, None);
    let be64 = |v: &[u8]| <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes);
    for a in nlas(buf)? {
        match a.kind() {
            NFTA_SET_ELEM_KEY => {
                for d in nlas(a.value())? {
                    if d.kind() == NFTA_DATA_VALUE {
                        ip = ip_of(d.value());
                    }
                }
            }
            NFTA_SET_ELEM_TIMEOUT => timeout = be64(a.value()),
            NFTA_SET_ELEM_EXPIRATION => expiration = be64(a.value()),
            _ => {}
        }
    }
    let left = timeout.filter(|t| *t > 0).map(|t| expiration.unwrap_or(t));
    Ok(ip.map(|ip| Ban {
        ip,
        timeout: left.map(Duration::from_millis),
    }))
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from([v[0], v[1], v[2], v[3]])),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(v);
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// A netfilter netlink socket for the ban sets.
pub struct SetSocket {
    sock: netlink_sys::Socket,
    seq: u32,
}

impl SetSocket {
    pub fn open() -> io::Result<SetSocket> {
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // A kernel that does not answer must not hold the parent's firewall thread forever.
        socket2::SockRef::from(&sock).set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(SetSocket { sock, seq: 1 })
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n as u32 + 2);
        s
    }

    /// Apply `changes` to the ban sets, [`CHUNK`] addresses per transaction.
    pub fn change(&mut self, changes: &[BanChange]) -> Result<(), String> {
        self.change_sets(BAN_SETS, changes)
    }

    /// Put `add` in the server sets and take `remove` out (a no-op for what is already so).
    pub fn change_servers(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), String> {
        let changes: Vec<BanChange> = remove
            .iter()
            .map(|ip| BanChange::Unban(*ip))
            .chain(add.iter().map(|ip| BanChange::Ban(*ip, None)))
            .collect();
        self.change_sets(super::nft::SERVER_SETS, &changes)
    }

    fn change_sets(
        &mut self,
        sets: [&'static str; 2],
        changes: &[BanChange],
    ) -> Result<(), String> {
        let p = plan(changes);
        for touch in p.touch.chunks(CHUNK) {
            let part = Plan {
                touch: touch.to_vec(),
                ban: p
                    .ban
                    .iter()
                    .filter(|(ip, _)| touch.contains(ip))
                    .copied()
                    .collect(),
            };
            let seq = self.next_seq(4);
            let (bytes, acked) = batch(&part, sets, seq);
            self.sock
                .send(&bytes, 0)
                .map_err(|e| format!("netlink send: {e}"))?;
            self.acks(acked)?;
        }
        Ok(())
    }

    /// Read `n` acknowledgements; the first error is the result.
    fn acks(&mut self, mut n: usize) -> Result<(), String> {
        let mut first_error = None;
        while n > 0 {
            for a in answers(&self.recv()?)? {
                if let Answer::Ack { code, .. } = a {
                    n = n.saturating_sub(1);
                    if code != 0 && first_error.is_none() {
                        first_error = Some(io::Error::from_raw_os_error(-code));
                    }
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(format!(
                "the sets are missing (is the firewall installed?): {e}"
            )),
            Some(e) => Err(format!("nftables refused the change: {e}")),
        }
    }

    fn recv(&mut self) -> Result<Vec<u8>, String> {
        let mut buf = Vec::with_capacity(256 * 1024);
        self.sock
            .recv(&mut buf, 0)
            .map_err(|e| format!("netlink receive: {e}"))?;
        Ok(buf)
    }

    /// Every ban in both sets.
    pub fn list(&mut self) -> Result<Vec<Ban>, String> {
        let mut out = Vec::new();
        for set in BAN_SETS {
            let seq = self.next_seq(1);
            self.sock
                .send(&dump_request(set, seq), 0)
                .map_err(|e| format!("netlink send: {e}"))?;
            'dump: loop {
                for a in answers(&self.recv()?)? {
                    match a {
                        Answer::Bans(b) => out.extend(b),
                        Answer::Done => break 'dump,
                        Answer::Ack { code, .. } if code != 0 => {
                            let e = io::Error::from_raw_os_error(-code);
                            return Err(format!("listing {set}: {e}"));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::firewall::test_ip as ip;

    #[test]
    fn the_last_change_of_an_address_wins() {
        let h = Duration::from_secs(3600);
        let p = plan(&[
            BanChange::Ban(ip("192.0.2.1"), Some(h)),
            BanChange::Ban(ip("192.0.2.2"), None),
            BanChange::Unban(ip("192.0.2.1")),
            BanChange::Ban(ip("2001:db8::1"), Some(Duration::ZERO)),
            BanChange::Ban(ip("192.0.2.2"), Some(h)),
        ]);
        assert_eq!(
            p.touch,
            [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")]
        );
        assert_eq!(
            p.ban,
            [(ip("192.0.2.2"), Some(h)), (ip("2001:db8::1"), None)],
            "an unbanned address is only touched; a zero timeout is permanent"
        );
    }

    /// Parse what `batch` built back into messages.
    fn parsed(bytes: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
        let mut out = Vec::new();
        let mut b = bytes;
        while !b.is_empty() {
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            out.push(NetlinkMessage::deserialize(&b[..len]).unwrap());
            b = &b[len..];
        }
        out
    }

    #[test]
    fn a_batch_adds_deletes_and_adds_again_in_one_transaction() {
        let p = plan(&[
            BanChange::Ban(ip("203.0.113.9"), Some(Duration::from_millis(1500))),
            BanChange::Unban(ip("2001:db8::7")),
        ]);
        let (bytes, acked) = batch(&p, BAN_SETS, 100);
        let msgs = parsed(&bytes);
        // begin, v4: add, delete, add with timeout; v6: add, delete; end.
        assert_eq!(msgs.len(), 7);
        assert_eq!(acked, 5);
        let seqs: Vec<u32> = msgs.iter().map(|m| m.header.sequence_number).collect();
        assert_eq!(seqs, (100..107).collect::<Vec<_>>());
        // nfnetlink's batch messages: type 0x10 / 0x11, resource id the nftables subsystem.
        assert_eq!(msgs[0].header.message_type, 0x10);
        assert_eq!(msgs[6].header.message_type, 0x11);
        assert_eq!(&bytes[16..20], &[0, 0, 0, 10]);
        // NEWSETELEM = (10 << 8) | 12, DELSETELEM = (10 << 8) | 14.
        let types: Vec<u16> = msgs[1..6].iter().map(|m| m.header.message_type).collect();
        assert_eq!(types, [0x0a0c, 0x0a0e, 0x0a0c, 0x0a0c, 0x0a0e]);
        assert!(msgs[1..6].iter().all(|m| m.header.flags & NLM_F_ACK != 0));
        let NetlinkPayload::InnerMessage(m) = &msgs[3].payload else {
            panic!()
        };
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(el)) = &m.inner else {
            panic!("{m:?}")
        };
        assert_eq!(el.attributes[1], SetElementList::Set("banned4".into()));
        let SetElementList::Elements(e) = &el.attributes[2] else {
            panic!()
        };
        assert_eq!(
            e[0],
            ListAttribute::Element(vec![
                SetElementAttribute::Key(DataAttribute::Value(vec![203, 0, 113, 9])),
                SetElementAttribute::Timeout(1500),
            ])
        );
    }

    #[test]
    fn a_dump_answer_gives_addresses_and_time_left() {
        // What the kernel sends for `banned4` holding 192.0.2.1 (1 h, 3,599,000 ms left)
        // and 192.0.2.2 (permanent), then the end of the dump.
        let el = |v: Vec<u8>, t: Option<(u64, u64)>| {
            let mut a = vec![SetElementAttribute::Key(DataAttribute::Value(v))];
            if let Some((timeout, left)) = t {
                a.push(SetElementAttribute::Timeout(timeout));
                a.push(SetElementAttribute::Expiration(left));
            }
            ListAttribute::Element(a)
        };
        let reply = elements(
            "banned4",
            vec![
                el(vec![192, 0, 2, 1], Some((3_600_000, 3_599_000))),
                el(vec![192, 0, 2, 2], None),
            ],
        );
        let m = message(
            NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(reply)),
            NetfilterProtoFamily::Inet,
            0,
        );
        let mut bytes = serialize(vec![(m, 0)], 5);
        let mut done = NetlinkMessage::<NetfilterMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(Default::default()),
        );
        done.finalize();
        let start = bytes.len();
        bytes.resize(start + done.buffer_len(), 0);
        done.serialize(&mut bytes[start..]);
        let got = answers(&bytes).unwrap();
        assert_eq!(
            got,
            [
                Answer::Bans(vec![
                    Ban {
                        ip: ip("192.0.2.1"),
                        timeout: Some(Duration::from_millis(3_599_000))
                    },
                    Ban {
                        ip: ip("192.0.2.2"),
                        timeout: None
                    },
                ]),
                Answer::Done
            ]
        );
        // Every truncation is an error or a shorter walk, never a panic.
        for cut in 0..bytes.len() {
            let _ = answers(&bytes[..cut]);
        }
    }
}
