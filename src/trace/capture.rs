//! Streaming pcap and pcapng reader: read(2) into one large buffer, records handed out as
//! slices of it. A record never needs more than one copy (the kernel's); only a record cut by
//! the buffer end is moved to the front.

use std::io::{self, Read};

use anyhow::{Context, Result, bail};

/// Read size: syscalls and moving a record cut by the buffer end cost nothing at this size
/// (128 KiB to 4 MiB measured the same; the kernel's copy into it is most of the time).
const BUF_SIZE: usize = 4 << 20;
/// Records larger than this are corruption, not packets (pcap snaplens stop at 256 KiB).
const MAX_RECORD: usize = 64 << 20;

const PCAP_MICRO: u32 = 0xa1b2_c3d4;
const PCAP_NANO: u32 = 0xa1b2_3c4d;
const NG_SHB: u32 = 0x0a0d_0d0a;
const NG_BOM: u32 = 0x1a2b_3c4d;
const NG_IDB: u32 = 1;
const NG_SPB: u32 = 3;
const NG_EPB: u32 = 6;

/// Anomalies of the capture file itself.
#[derive(Default, Debug, Clone)]
pub(crate) struct FileStats {
    /// The file ends inside a record (a capture still being written, or cut).
    pub truncated_tail: bool,
    /// Packets referring to an interface never described (pcapng).
    pub bad_interface: u64,
    pub bytes: u64,
}

/// One packet: capture time in ns since the epoch, link type, captured bytes.
pub(crate) type Sink<'a> = dyn FnMut(u64, u32, &[u8]) -> Result<()> + 'a;

struct Input<R> {
    src: R,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// File offset of `buf[0]`, for error messages.
    base: u64,
    eof: bool,
}

impl<R: Read> Input<R> {
    /// Make `n` bytes available at `lo`; false if the input ends first.
    #[inline]
    fn fill(&mut self, n: usize) -> Result<bool> {
        if self.hi - self.lo >= n {
            return Ok(true);
        }
        self.refill(n)
            .with_context(|| format!("read error after {} bytes", self.base + self.hi as u64))
    }

    #[cold]
    fn refill(&mut self, n: usize) -> io::Result<bool> {
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.base += self.lo as u64;
            self.hi -= self.lo;
            self.lo = 0;
        }
        if n > self.buf.len() {
            self.buf.resize(n.next_power_of_two(), 0);
        }
        while self.hi < n && !self.eof {
            match self.src.read(&mut self.buf[self.hi..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.hi += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.hi >= n)
    }

    fn at(&self) -> &[u8] {
        &self.buf[self.lo..self.hi]
    }

    fn offset(&self) -> u64 {
        self.base + self.lo as u64
    }
}

fn u32_at(b: &[u8], at: usize, swap: bool) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    if swap {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

fn u16_at(b: &[u8], at: usize, swap: bool) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    if swap {
        u16::from_be_bytes(w)
    } else {
        u16::from_le_bytes(w)
    }
}

/// Read a whole capture, calling `sink` for every packet in file order.
pub(crate) fn read(src: impl Read, sink: &mut Sink<'_>) -> Result<FileStats> {
    let mut inp = Input {
        src,
        buf: vec![0; BUF_SIZE],
        lo: 0,
        hi: 0,
        base: 0,
        eof: false,
    };
    let mut stats = FileStats::default();
    if !inp.fill(4)? {
        bail!("empty or too short to be a capture ({} bytes)", inp.hi);
    }
    let magic = u32_at(inp.at(), 0, false);
    match magic {
        PCAP_MICRO | PCAP_NANO => pcap(&mut inp, false, magic == PCAP_NANO, sink, &mut stats)?,
        _ if magic.swap_bytes() == PCAP_MICRO || magic.swap_bytes() == PCAP_NANO => {
            let nano = magic.swap_bytes() == PCAP_NANO;
            pcap(&mut inp, true, nano, sink, &mut stats)?
        }
        NG_SHB => pcapng(&mut inp, sink, &mut stats)?,
        _ => bail!(
            "not a pcap or pcapng capture (starts with {:#010x})",
            magic.swap_bytes()
        ),
    }
    stats.bytes = inp.offset();
    Ok(stats)
}

fn pcap<R: Read>(
    inp: &mut Input<R>,
    swap: bool,
    nano: bool,
    sink: &mut Sink<'_>,
    stats: &mut FileStats,
) -> Result<()> {
    if !inp.fill(24)? {
        bail!("pcap file header cut short");
    }
    // The upper bits of the link type field carry FCS information.
    let link = u32_at(inp.at(), 20, swap) & 0xffff;
    let frac_ns: u64 = if nano { 1 } else { 1000 };
    inp.lo += 24;
    loop {
        if !inp.fill(16)? {
            stats.truncated_tail = inp.hi > inp.lo;
            return Ok(());
        }
        let h = inp.at();
        let sec = u64::from(u32_at(h, 0, swap));
        let frac = u64::from(u32_at(h, 4, swap));
        let caplen = u32_at(h, 8, swap) as usize;
        if caplen > MAX_RECORD {
            bail!(
                "corrupt pcap record at offset {}: captured length {caplen}",
                inp.offset()
            );
        }
        if !inp.fill(16 + caplen)? {
            stats.truncated_tail = true;
            return Ok(());
        }
        let ts = sec * 1_000_000_000 + frac * frac_ns;
        sink(ts, link, &inp.at()[16..16 + caplen])?;
        inp.lo += 16 + caplen;
    }
}

/// pcapng timestamp units of one interface.
#[derive(Clone, Copy)]
struct Iface {
    link: u32,
    snaplen: u32,
    /// Units: 10^-n s if `binary` is false, else 2^-n s.
    res: u8,
    binary: bool,
    /// if_tsoffset, seconds.
    offset_s: i64,
}

impl Iface {
    fn ns(&self, t: u64) -> u64 {
        let n = u32::from(self.res);
        let ns = if self.binary {
            ((u128::from(t) * 1_000_000_000) >> n.min(127)) as u64
        } else if n <= 9 {
            t.saturating_mul(10u64.pow(9 - n))
        } else {
            t / 10u64.saturating_pow(n - 9)
        };
        ns.saturating_add_signed(self.offset_s.saturating_mul(1_000_000_000))
    }
}

fn pcapng<R: Read>(inp: &mut Input<R>, sink: &mut Sink<'_>, stats: &mut FileStats) -> Result<()> {
    let mut swap = false;
    let mut ifaces: Vec<Iface> = Vec::new();
    // Simple packet blocks carry no time: they get the previous packet's.
    let mut last_ts = 0u64;
    loop {
        if !inp.fill(12)? {
            stats.truncated_tail = inp.hi > inp.lo;
            return Ok(());
        }
        let h = inp.at();
        let btype = u32_at(h, 0, swap);
        if btype == NG_SHB {
            // A new section: its own byte order and interfaces.
            swap = match u32_at(h, 8, false) {
                NG_BOM => false,
                b if b.swap_bytes() == NG_BOM => true,
                b => bail!(
                    "corrupt pcapng section header at offset {}: byte-order magic {b:#010x}",
                    inp.offset()
                ),
            };
            ifaces.clear();
        }
        let blen = u32_at(h, 4, swap) as usize;
        if blen < 12 || !blen.is_multiple_of(4) || blen > MAX_RECORD {
            bail!(
                "corrupt pcapng block at offset {}: type {btype:#x}, length {blen}",
                inp.offset()
            );
        }
        if !inp.fill(blen)? {
            stats.truncated_tail = true;
            return Ok(());
        }
        let b = &inp.at()[..blen];
        let body = &b[8..blen - 4];
        match btype {
            NG_IDB => {
                if body.len() < 8 {
                    bail!("corrupt pcapng interface block at offset {}", inp.offset());
                }
                let mut ifc = Iface {
                    link: u32::from(u16_at(body, 0, swap)),
                    snaplen: u32_at(body, 4, swap),
                    res: 6,
                    binary: false,
                    offset_s: 0,
                };
                idb_options(&body[8..], swap, &mut ifc);
                ifaces.push(ifc);
            }
            NG_EPB => {
                let (Some(ifc), true) =
                    (ifaces.get(u32_at(body, 0, swap) as usize), body.len() >= 20)
                else {
                    stats.bad_interface += 1;
                    inp.lo += blen;
                    continue;
                };
                let t = u64::from(u32_at(body, 4, swap)) << 32 | u64::from(u32_at(body, 8, swap));
                let caplen = (u32_at(body, 12, swap) as usize).min(body.len() - 20);
                last_ts = ifc.ns(t);
                sink(last_ts, ifc.link, &body[20..20 + caplen])?;
            }
            NG_SPB => {
                let Some(ifc) = ifaces.first().filter(|_| body.len() >= 4) else {
                    stats.bad_interface += 1;
                    inp.lo += blen;
                    continue;
                };
                let mut caplen = (u32_at(body, 0, swap) as usize).min(body.len() - 4);
                if ifc.snaplen != 0 {
                    caplen = caplen.min(ifc.snaplen as usize);
                }
                sink(last_ts, ifc.link, &body[4..4 + caplen])?;
            }
            // Section headers were handled above; statistics, name resolution, custom and
            // obsolete blocks say nothing about TCP payloads.
            _ => {}
        }
        inp.lo += blen;
    }
}

/// if_tsresol (9) and if_tsoffset (14) from an interface block's options.
fn idb_options(mut o: &[u8], swap: bool, ifc: &mut Iface) {
    while o.len() >= 4 {
        let code = u16_at(o, 0, swap);
        let len = usize::from(u16_at(o, 2, swap));
        let Some(v) = o.get(4..4 + len) else {
            return;
        };
        match (code, v) {
            (0, _) => return,
            (9, [r]) => {
                ifc.binary = r & 0x80 != 0;
                ifc.res = r & 0x7f;
            }
            (14, v) if v.len() == 8 => {
                let mut w = [0u8; 8];
                w.copy_from_slice(v);
                ifc.offset_s = if swap {
                    i64::from_be_bytes(w)
                } else {
                    i64::from_le_bytes(w)
                };
            }
            _ => {}
        }
        o = o.get(4 + len.next_multiple_of(4)..).unwrap_or(&[]);
    }
}

/// The input: a file, or standard input for `-`.
pub(crate) fn open(path: &std::path::Path) -> Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(f))
}
