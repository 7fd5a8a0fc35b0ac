//! `fwlb vrrpd -f freevrrpd.conf`: freevrrpd's configuration file, read the way its parser
//! (vrrp_conf.c) reads it, becomes one fwlb [[vrrp]] per `[VRID]` section. Keys that fwlb has
//! no use for become notes. Errors are raised for whatever makes freevrrpd stop and for
//! whatever fwlb cannot honour (unknown keys included, which freevrrpd only logged). Every
//! message reads `FILE:LINE:COL: message`. No I/O except reading the file.
//!
//! freevrrpd's rules, kept here (vrrp-reference.md 2.1): `#` starts a comment only in column 1.
//! A key is the run of letters at the start of a line, and anything after it up to `=` is
//! skipped. Only spaces after `=` are skipped, so the value keeps its trailing spaces. Lists
//! split on `,`, and characters other than letters, digits, `.` and `/` after a comma are
//! skipped. A last line without a newline is never read.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use super::reader::line_col;
use super::{Config, ConfigErrors, Daemon, Vrrp};

/// A freevrrpd.conf turned into fwlb's model.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Daemon defaults with no control port, no balancers, one [[vrrp]] per `[VRID]`.
    pub config: Config,
    /// `FILE:LINE:COL: why`, one for each key or spelling that was read but has no effect
    /// in fwlb, in file order.
    pub notes: Vec<String>,
}

/// fgets(line, 1024) plus the newline: a longer line is cut in two and freevrrpd stops on it.
const MAX_LINE: usize = 1022;
/// IFNAMSIZ - 1, the same on FreeBSD and Linux.
const MAX_IFNAME: usize = 15;
/// VRRPv2 carries 8 bytes of authentication data (RFC 2338 5.3.10).
const MAX_PASSWORD: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ServerId,
    Interface,
    Priority,
    Addr,
    Password,
    MasterScript,
    BackupScript,
    VridsDep,
    MonitoredCircuits,
    McClearErrorsCount,
    CarrierTimeout,
    SpanningTreeLatency,
    AhEncryption,
    UseIke,
    PreShared,
    UseVmac,
    SendGratuitousArp,
    StateScript,
    BridgeIface,
}

/// Every key freevrrpd reads (case-sensitive, as freevrrpd compares them), the two that its
/// manual documents but its parser never reads, and the two of the motoprogger fork.
const KEYS: &[(&str, Key)] = &[
    ("serverid", Key::ServerId),
    ("interface", Key::Interface),
    ("priority", Key::Priority),
    ("addr", Key::Addr),
    ("password", Key::Password),
    ("masterscript", Key::MasterScript),
    ("backupscript", Key::BackupScript),
    ("vridsdep", Key::VridsDep),
    ("monitoredcircuits", Key::MonitoredCircuits),
    ("MCClearErrorsCount", Key::McClearErrorsCount),
    ("carriertimeout", Key::CarrierTimeout),
    ("spanningtreelatency", Key::SpanningTreeLatency),
    ("AHencryption", Key::AhEncryption),
    ("useIKE", Key::UseIke),
    ("presharedkey", Key::PreShared),
    ("useVMAC", Key::UseVmac),
    ("sendgratuitousarp", Key::SendGratuitousArp),
    ("statescript", Key::StateScript),
    ("bridgeiface", Key::BridgeIface),
];

/// A problem or a note at a byte offset of the source.
struct Diag {
    offset: usize,
    message: String,
}

/// A virtual address of an `addr` line.
struct Vip {
    ip: Ipv4Addr,
    prefix: u8,
    /// The `ifname:` prefix and where it stands.
    device: Option<(String, usize)>,
}

/// One `[VRID]` section as read so far; `None` fields were absent or invalid.
struct Section {
    header: usize,
    vrid: Option<(u8, usize)>,
    interface: Option<String>,
    priority: u8,
    addresses: Vec<Vip>,
    password: Option<String>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    depends: Vec<(u8, usize)>,
    /// The line of the last occurrence of each key, for "set again" notes and missing keys.
    seen: Vec<(Key, usize)>,
}

impl Section {
    fn new(header: usize) -> Self {
        Section {
            header,
            vrid: None,
            interface: None,
            // freevrrpd's default (vrrp_main_pre_init), also RFC 3768's.
            priority: 100,
            addresses: Vec::new(),
            password: None,
            notify_master: None,
            notify_backup: None,
            depends: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// The keys a section needs, and addresses that name another interface.
    fn check(&self, errs: &mut Vec<(usize, String)>, notes: &mut Vec<(usize, String)>) {
        for (k, what) in [
            (Key::ServerId, "`serverid` (the VRID, 1..255)"),
            (Key::Interface, "`interface`"),
            (Key::Addr, "`addr` (the virtual addresses, a.b.c.d/len)"),
        ] {
            if !self.has(k) {
                errs.push((self.header, format!("this [VRID] has no {what}")));
            }
        }
        let Some(iface) = &self.interface else {
            return;
        };
        for v in &self.addresses {
            let Some((dev, at)) = &v.device else { continue };
            if dev == iface {
                notes.push((
                    *at,
                    format!("`{dev}:` names the VRID's own interface, where fwlb adds its addresses anyway"),
                ));
            } else {
                errs.push((
                    *at,
                    format!(
                        "`{dev}:` puts {}/{} on {dev}, but fwlb adds every address of a VRID to its `interface` ({iface}): move the address to a [VRID] on {dev}, or drop `{dev}:` if {iface} is right",
                        v.ip, v.prefix
                    ),
                ));
            }
        }
    }

    fn has(&self, k: Key) -> bool {
        self.seen.iter().any(|(s, _)| *s == k)
    }
}

struct Parser<'a> {
    src: &'a str,
    errors: Vec<Diag>,
    notes: Vec<Diag>,
    sections: Vec<Section>,
}

/// Read and import a freevrrpd.conf.
pub fn load(path: &Path) -> Result<Imported, ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    // Comments may be in any 8-bit charset (freevrrpd never looks at them), but values become
    // fwlb strings and must be UTF-8.
    let mut errors = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.first() == Some(&b'#') {
            continue;
        }
        if let Err(e) = std::str::from_utf8(line) {
            let valid = String::from_utf8_lossy(&line[..e.valid_up_to()]);
            errors.push(format!(
                "{}:{}:{}: this line is not UTF-8 text (only comments may use another character set)",
                path.display(),
                i + 1,
                valid.chars().count() + 1
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    parse_str(&String::from_utf8_lossy(&bytes), path)
}

/// Import freevrrpd.conf text; `path` labels the messages. When there are errors the notes
/// are dropped: the errors come first.
pub fn parse_str(src: &str, path: &Path) -> Result<Imported, ConfigErrors> {
    let mut p = Parser {
        src,
        errors: Vec::new(),
        notes: Vec::new(),
        sections: Vec::new(),
    };
    p.lines();
    p.finish();
    let label = path.display().to_string();
    let format = |diags: &mut Vec<Diag>| -> Vec<String> {
        diags.sort_by_key(|d| d.offset);
        diags
            .iter()
            .map(|d| {
                let (l, c) = line_col(src, d.offset);
                format!("{label}:{l}:{c}: {}", d.message)
            })
            .collect()
    };
    if !p.errors.is_empty() {
        return Err(ConfigErrors(format(&mut p.errors)));
    }
    let mut vrrp = Vec::new();
    for s in &p.sections {
        // finish() reported any section without these, so they are all here.
        let (Some((vrid, _)), Some(interface)) = (s.vrid, s.interface.clone()) else {
            continue;
        };
        vrrp.push(Vrrp {
            vrid,
            interface,
            priority: s.priority,
            addresses: s
                .addresses
                .iter()
                .map(|v| format!("{}/{}", v.ip, v.prefix))
                .collect(),
            // freevrrpd speaks VRRPv2 only, with a fixed 1 s interval and preemption always on.
            version: 2,
            advert_interval: Duration::from_secs(1),
            password: s.password.clone(),
            preempt: true,
            preempt_delay: Duration::ZERO,
            depends: s.depends.iter().map(|(d, _)| *d).collect(),
            // freevrrpd only multicasts.
            peers: Vec::new(),
            notify_master: s.notify_master.clone(),
            notify_backup: s.notify_backup.clone(),
            garp_count: 3,
            garp_interval: Duration::from_millis(200),
            track: Vec::new(),
        });
    }
    Ok(Imported {
        config: Config {
            path: path.to_path_buf(),
            daemon: Daemon {
                control: None,
                ..Daemon::default()
            },
            balancers: Vec::new(),
            resolver: Default::default(),
            vrrp,
            firewall: None,
        },
        notes: format(&mut p.notes),
    })
}

impl Parser<'_> {
    fn err(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push(Diag {
            offset,
            message: message.into(),
        });
    }

    fn note(&mut self, offset: usize, message: impl Into<String>) {
        self.notes.push(Diag {
            offset,
            message: message.into(),
        });
    }

    fn line_of(&self, offset: usize) -> usize {
        line_col(self.src, offset).0
    }

    /// Walk the lines as vrrp_conf_lecture_fichier does.
    fn lines(&mut self) {
        let src = self.src;
        let mut offset = 0;
        let mut cr_reported = false;
        let mut start_reported = false;
        for piece in src.split_inclusive('\n') {
            let start = offset;
            offset += piece.len();
            let has_newline = piece.ends_with('\n');
            let mut text = piece.strip_suffix('\n').unwrap_or(piece);
            if let Some(t) = text.strip_suffix('\r') {
                // freevrrpd keeps the CR in every value (an interface "em0\r" does not exist).
                // Reported once: a DOS file has one on every line.
                if !cr_reported {
                    self.err(
                        start + t.len(),
                        "this line ends with a carriage return (DOS line endings), which freevrrpd keeps in the value: convert the file to Unix line endings",
                    );
                    cr_reported = true;
                }
                text = t;
            }
            if text.len() > MAX_LINE {
                self.err(
                    start,
                    format!(
                        "this line is {} bytes long: freevrrpd reads at most {MAX_LINE} bytes per line",
                        text.len()
                    ),
                );
                continue;
            }
            if let Some(i) = text.find('\0') {
                self.err(start + i, "NUL byte: freevrrpd's C strings end here");
                continue;
            }
            // fgets sets EOF on a last line without a newline and the section loop stops
            // before parsing it; the loop that looks for the first [VRID] has no such check.
            if !has_newline && !self.sections.is_empty() && !text.is_empty() {
                if !text.starts_with('#') {
                    self.note(
                        start,
                        "this last line has no newline at its end: freevrrpd never reads such a line, so fwlb ignores it too (end the file with a newline to use it)",
                    );
                }
                continue;
            }
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if let Some(rest) = text.strip_prefix("[VRID]") {
                let junk = rest.trim_start();
                if !junk.is_empty() {
                    self.note(
                        start + text.len() - junk.len(),
                        "text after `[VRID]` is ignored (as by freevrrpd)",
                    );
                }
                self.sections.push(Section::new(start));
                continue;
            }
            let caps_hint = text
                .get(..6)
                .is_some_and(|h| h.eq_ignore_ascii_case("[VRID]"));
            if caps_hint {
                // freevrrpd stops here; starting the section anyway keeps later messages sane.
                self.err(start, "section headers are written `[VRID]`, in capitals");
                self.sections.push(Section::new(start));
                continue;
            }
            if self.sections.is_empty() {
                if !start_reported {
                    self.err(
                        start,
                        "freevrrpd.conf must start with a `[VRID]` line (only comments and empty lines may come before it; freevrrpd stops with \"cannot see [VRID] section\")",
                    );
                    start_reported = true;
                }
                continue;
            }
            self.key_line(start, text);
        }
        if self.sections.is_empty() && !start_reported {
            self.err(
                src.len(),
                "no `[VRID]` section: freevrrpd.conf needs one `[VRID]` line per virtual router",
            );
        }
    }

    /// A line inside a section: `key = value` (vrrp_conf_ident_option_arg).
    fn key_line(&mut self, start: usize, text: &str) {
        let klen = text.bytes().take_while(u8::is_ascii_alphabetic).count();
        if klen == 0 {
            self.err(start, bad_line(text));
            return;
        }
        let key = &text[..klen];
        let word_len = text
            .find(|c: char| c == '=' || c.is_ascii_whitespace())
            .unwrap_or(text.len());
        let word = &text[..word_len];
        let Some(&(_, k)) = KEYS.iter().find(|(name, _)| *name == key) else {
            self.err(
                start,
                format!(
                    "unknown key `{word}` in [VRID]{}; freevrrpd logged and ignored it, fwlb refuses it",
                    hint(word)
                ),
            );
            return;
        };
        let Some(eq) = text.find('=') else {
            self.err(start, format!("`{key}` has no `=`: write `{key} = VALUE`"));
            return;
        };
        if !text[klen..eq].trim().is_empty() {
            self.note(
                start + klen,
                format!(
                    "freevrrpd reads `{}` as the key `{key}` (a key ends at the first character that is not a letter); so does fwlb",
                    text[..eq].trim_end()
                ),
            );
        }
        // Only spaces are skipped after `=`; everything else up to the newline is the value.
        let vstart = eq + 1 + text[eq + 1..].bytes().take_while(|b| *b == b' ').count();
        let value = &text[vstart..];
        let at = start + vstart;
        let prev = self
            .sections
            .last()
            .and_then(|s| s.seen.iter().find(|(s, _)| *s == k).map(|(_, o)| *o));
        if let Some(prev) = prev {
            let line = self.line_of(prev);
            let msg = if k == Key::Addr {
                format!(
                    "`addr` is set again: freevrrpd uses only the last `addr` line, so fwlb ignores the addresses of line {line} too (list every address on one line)"
                )
            } else {
                format!(
                    "`{key}` is set again: the value of line {line} is ignored (freevrrpd keeps the last one too)"
                )
            };
            self.note(start, msg);
        }
        self.value(k, key, value, start, at);
        if let Some(s) = self.sections.last_mut() {
            s.seen.retain(|(s, _)| *s != k);
            s.seen.push((k, start));
        }
    }

    fn section(&mut self) -> Option<&mut Section> {
        self.sections.last_mut()
    }

    /// Map one value to the section, or to a note or an error.
    /// `line` is where the line (the key) starts, `at` where the value starts.
    fn value(&mut self, k: Key, key: &str, value: &str, line: usize, at: usize) {
        match k {
            Key::ServerId => {
                // atoi() of the whole value.
                if let Some(n) = self.number(key, value.trim(), at, 1, 255) {
                    let vrid = (n as u8, at);
                    if let Some(s) = self.section() {
                        s.vrid = Some(vrid);
                    }
                }
            }
            Key::Priority => self.priority(key, value, at),
            Key::Interface => self.interface(key, value, at),
            Key::Addr => self.addr(value, at),
            Key::Password => self.password(value, at),
            Key::MasterScript | Key::BackupScript => {
                // Run by system(), so surrounding blanks mean nothing.
                let script = Some(value.trim().to_string()).filter(|s| !s.is_empty());
                if let Some(s) = self.section() {
                    if k == Key::MasterScript {
                        s.notify_master = script;
                    } else {
                        s.notify_backup = script;
                    }
                }
            }
            Key::VridsDep => {
                let mut deps = Vec::new();
                for (off, s) in split_args(value, b',') {
                    if let Some(n) = self.number(key, s.trim(), at + off, 1, 255) {
                        deps.push((n as u8, at + off));
                    }
                }
                if let Some(s) = self.section() {
                    s.depends = deps;
                }
            }
            Key::AhEncryption | Key::UseIke => self.ipsec_ah(key, value, at),
            Key::PreShared => self.err(
                line,
                "`presharedkey` (the IPsec AH key) is not supported: freevrrpd documents it as not implemented and fwlb has no AH; remove it, or use `password`",
            ),
            Key::StateScript | Key::BridgeIface => self.err(
                line,
                format!("`{key}` belongs to the motoprogger/FreeVRRPd fork, which fwlb does not import (freevrrpd itself ignores it): use `masterscript` and `backupscript`"),
            ),
            // Read and dropped, with a note saying why nothing changes.
            Key::MonitoredCircuits => self.monitored_circuits(key, value, at),
            Key::McClearErrorsCount => self.note(
                at,
                "`MCClearErrorsCount` has no effect: fwlb never locks an interface out after repeated link faults (freevrrpd did after 5)",
            ),
            Key::CarrierTimeout => self.carrier_timeout(at),
            Key::SpanningTreeLatency => self.spanning_tree_latency(value, at),
            Key::UseVmac | Key::SendGratuitousArp => self.note(
                at,
                format!("`{key}` has no effect: freevrrpd(8) documents it but freevrrpd never reads it (it logs \"option unknown\"), and fwlb ignores it too"),
            ),
        }
    }

    fn priority(&mut self, key: &str, value: &str, at: usize) {
        let Some((off, s)) = self.first_of_list(key, value, at, "number of `priority`") else {
            return;
        };
        if s.trim() == "0" {
            self.err(
                at + off,
                "`priority` 0 is reserved for a master that is stopping (RFC 3768 5.3.4): use 1..254 for a backup, 255 for the address owner",
            );
            return;
        }
        if let Some(n) = self.number(key, s.trim(), at + off, 1, 255)
            && let Some(sec) = self.section()
        {
            sec.priority = n as u8;
        }
    }

    fn interface(&mut self, key: &str, value: &str, at: usize) {
        let Some((off, s)) = self.first_of_list(key, value, at, "interface of the list") else {
            return;
        };
        let name = s.trim();
        if let Err(e) = check_ifname(name) {
            self.err(at + off, format!("`interface`: {e}"));
        } else if let Some(sec) = self.section() {
            sec.interface = Some(name.to_string());
        }
    }

    /// `AHencryption` / `useIKE`: `no` is the default, `yes` cannot be honoured.
    fn ipsec_ah(&mut self, key: &str, value: &str, at: usize) {
        let Some(on) = self.yes_no(key, value, at) else {
            return;
        };
        if on {
            self.err(
                at,
                format!("`{key} = yes` (IPsec AH) is not supported: freevrrpd documents it as not implemented and fwlb has no AH; use `password` or no authentication"),
            );
        } else {
            self.note(
                at,
                format!("`{key} = no` is the default: IPsec AH is not used"),
            );
        }
    }

    fn monitored_circuits(&mut self, key: &str, value: &str, at: usize) {
        if let Some(on) = self.yes_no(key, value, at) {
            self.note(
                at,
                if on {
                    "`monitoredcircuits`: fwlb always follows the link state of each VRRP interface"
                } else {
                    "`monitoredcircuits = no` has no effect: fwlb always follows the link state of each VRRP interface and applies `vridsdep` (freevrrpd with `no` on its last [VRID] ran no link monitor at all)"
                },
            );
        }
    }

    fn carrier_timeout(&mut self, at: usize) {
        let before_interface = self.sections.last().is_some_and(|s| !s.has(Key::Interface));
        let why = if before_interface {
            " (freevrrpd ignored this one anyway: it must follow `interface`)"
        } else {
            ""
        };
        self.note(
            at,
            format!("`carriertimeout` has no effect: fwlb does not change the NIC's MAC address on a transition, so there is no carrier loss to wait for{why}"),
        );
    }

    fn spanning_tree_latency(&mut self, value: &str, at: usize) {
        let msg = if value.trim() == "0" {
            "`spanningtreelatency = 0` is freevrrpd's default: no wait after a transition, as in fwlb".to_string()
        } else {
            format!(
                "`spanningtreelatency` has no effect: fwlb does not wait after a transition (freevrrpd slept {} s before its timers and scripts)",
                atoi(value)
            )
        };
        self.note(at, msg);
    }

    /// The first element of a comma list, as freevrrpd takes it; a note when more followed
    /// (`what` names the element).
    fn first_of_list<'v>(
        &mut self,
        key: &str,
        value: &'v str,
        at: usize,
        what: &str,
    ) -> Option<(usize, &'v str)> {
        let parts = split_args(value, b',');
        match parts.first() {
            Some(&first) if !first.1.trim().is_empty() => {
                if parts.len() > 1 {
                    self.note(
                        at,
                        format!("only the first {what} is used (as by freevrrpd)"),
                    );
                }
                Some(first)
            }
            // freevrrpd dereferences a missing first element (a crash) or uses "".
            _ => {
                self.err(at, format!("`{key}` has no value"));
                None
            }
        }
    }

    /// A decimal number within lo..=hi. freevrrpd's atoi() reads "100x" as 100 and "x" as 0:
    /// such values are refused, saying what freevrrpd made of them.
    fn number(&mut self, key: &str, s: &str, at: usize, lo: u64, hi: u64) -> Option<u64> {
        if s.is_empty() {
            self.err(at, format!("`{key}` has no value"));
            return None;
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            let comment = if s.contains('#') {
                "; `#` starts a comment only in column 1"
            } else {
                ""
            };
            self.err(
                at,
                format!(
                    "`{key}` must be a number from {lo} to {hi}, not {s:?} (freevrrpd read it as {}){comment}",
                    atoi(s)
                ),
            );
            return None;
        }
        let n = s.bytes().fold(0u64, |n, b| {
            n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        if !(lo..=hi).contains(&n) {
            self.err(
                at,
                format!("`{key}` must be between {lo} and {hi}, not {s}"),
            );
            return None;
        }
        Some(n)
    }

    /// freevrrpd compares with strcmp() and exits on anything but `yes` or `no`.
    fn yes_no(&mut self, key: &str, value: &str, at: usize) -> Option<bool> {
        match value.trim_end() {
            "yes" => Some(true),
            "no" => Some(false),
            v => {
                self.err(
                    at,
                    format!("`{key}` must be `yes` or `no`, not {v:?} (freevrrpd exits on any other value)"),
                );
                None
            }
        }
    }

    /// `addr = [ifname:]a.b.c.d/len, ...`; a later `addr` line replaces the earlier one.
    fn addr(&mut self, value: &str, at: usize) {
        let mut vips: Vec<Vip> = Vec::new();
        let elems = split_args(value, b',');
        if elems.iter().all(|(_, e)| e.trim().is_empty()) {
            self.err(at, "`addr` has no address (write a.b.c.d/len)");
        }
        for (off, el) in elems {
            let el_at = at + off;
            let Some(vip) = self.vip(el, el_at) else {
                continue;
            };
            if vips.iter().any(|v| v.ip == vip.ip) {
                self.err(el_at, format!("address {} is listed twice", vip.ip));
                continue;
            }
            vips.push(vip);
        }
        if let Some(s) = self.section() {
            s.addresses = vips;
        }
    }

    /// One `[ifname:]a.b.c.d/len` element.
    fn vip(&mut self, el: &str, at: usize) -> Option<Vip> {
        let trimmed = el.trim();
        if trimmed.is_empty() {
            return None;
        }
        let host = trimmed.split('/').next().unwrap_or(trimmed);
        if host.parse::<Ipv6Addr>().is_ok() {
            self.err(
                at,
                format!("{trimmed:?}: freevrrpd.conf addresses are IPv4 only (configure IPv6 VRRP in an fwlb config, [[vrrp]] with version = 3)"),
            );
            return None;
        }
        let parts = split_args(el, b':');
        let (device, (aoff, astr)) = match parts.as_slice() {
            [a] => (None, *a),
            [(_, d), a] => {
                let d = d.trim();
                if d.is_empty() {
                    self.err(at, format!("{trimmed:?}: no device name before `:`"));
                    return None;
                }
                (Some((d.to_string(), at)), *a)
            }
            _ => {
                self.err(
                    at,
                    format!("{trimmed:?} must be a.b.c.d/len or ifname:a.b.c.d/len"),
                );
                return None;
            }
        };
        let a_at = at + aoff;
        let pieces = split_args(astr, b'/');
        let [(_, ip_s), (poff, len_s)] = pieces.as_slice() else {
            let a = astr.trim();
            let msg = if pieces.len() < 2 {
                format!(
                    "{a:?} needs a prefix length, e.g. \"{a}/32\" (freevrrpd exits without one)"
                )
            } else {
                format!("{a:?} must be a.b.c.d/len")
            };
            self.err(a_at, msg);
            return None;
        };
        let ip_s = ip_s.trim();
        let ip = match ip_s.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let msg = match inet_aton(ip_s) {
                    Some(read) => format!(
                        "{ip_s:?} is not a plain dotted-quad address: freevrrpd (inet_addr) read it as {read}; write that"
                    ),
                    None => format!("{ip_s:?} is not an IPv4 address"),
                };
                self.err(a_at, msg);
                None
            }
        };
        let len_s = len_s.trim();
        let len_at = a_at + poff;
        let prefix = if !len_s.is_empty() && len_s.bytes().all(|b| b.is_ascii_digit()) {
            match len_s.parse::<u8>() {
                Ok(p) if p <= 32 => Some(p),
                _ => None,
            }
        } else {
            None
        };
        if prefix.is_none() {
            self.err(
                len_at,
                format!("prefix length {len_s:?} must be a number from 0 to 32"),
            );
        }
        Some(Vip {
            ip: ip?,
            prefix: prefix?,
            device,
        })
    }

    /// freevrrpd keeps the first element of a comma list, cut to 8 bytes, as typed (trailing
    /// spaces included): the same bytes must go on the wire to match a freevrrpd peer.
    fn password(&mut self, value: &str, at: usize) {
        let parts = split_args(value, b',');
        let first = parts.first().map_or("", |(_, s)| *s);
        if first.is_empty() {
            self.err(
                at,
                "`password` is empty (freevrrpd crashes or sends an empty password): remove the line for no authentication",
            );
            return;
        }
        if parts.len() > 1 {
            self.note(
                at,
                "the password ends at the first `,` (freevrrpd reads the value as a list and keeps its first element); so does fwlb",
            );
        }
        let pw = if first.len() > MAX_PASSWORD {
            let Some(cut) = first.get(..MAX_PASSWORD) else {
                self.err(
                    at,
                    "`password`: freevrrpd uses its first 8 bytes, and the 8th falls inside a multi-byte character",
                );
                return;
            };
            self.note(
                at,
                format!(
                    "`password` is {} bytes long: VRRPv2 carries 8, so freevrrpd used only the first 8 and so does fwlb",
                    first.len()
                ),
            );
            cut
        } else {
            first
        };
        if pw.ends_with([' ', '\t']) {
            self.note(
                at,
                "the password ends with blanks, which freevrrpd keeps as part of it; so does fwlb",
            );
        }
        let pw = pw.to_string();
        if let Some(s) = self.section() {
            s.password = Some(pw);
        }
    }

    /// Checks that need a whole section or the whole file: every error first, then the notes.
    fn finish(&mut self) {
        let mut errs: Vec<(usize, String)> = Vec::new();
        let mut notes: Vec<(usize, String)> = Vec::new();
        for s in &self.sections {
            s.check(&mut errs, &mut notes);
        }
        let seen = self.vrids_once(&mut errs);
        // vridsdep names VRIDs by number; freevrrpd silently skipped unknown ones.
        for s in &self.sections {
            for &(d, at) in &s.depends {
                if !seen.iter().any(|(v, _, _)| *v == d) {
                    let who = s
                        .vrid
                        .map_or("this VRID".to_string(), |(v, _)| format!("VRID {v}"));
                    errs.push((
                        at,
                        format!("`vridsdep`: {who} lists VRID {d}, which is not configured"),
                    ));
                }
            }
        }
        for s in &self.sections {
            notes.extend(self.one_way_depends(s));
        }
        for (o, m) in errs {
            self.err(o, m);
        }
        for (o, m) in notes {
            self.note(o, m);
        }
    }

    /// No VRID twice on one interface; the VRIDs with their interface and place.
    fn vrids_once(&self, errs: &mut Vec<(usize, String)>) -> Vec<(u8, &str, usize)> {
        let mut seen: Vec<(u8, &str, usize)> = Vec::new();
        for s in &self.sections {
            let (Some((vrid, at)), Some(iface)) = (s.vrid, s.interface.as_deref()) else {
                continue;
            };
            if let Some((_, _, first)) = seen.iter().find(|(v, i, _)| *v == vrid && *i == iface) {
                errs.push((
                    at,
                    format!(
                        "VRID {vrid} is configured twice on {iface} (first at line {})",
                        self.line_of(*first)
                    ),
                ));
            }
            seen.push((vrid, iface, at));
        }
        seen
    }

    /// fwlb's `depends` makes symmetric, transitive groups (vrrp/group.rs); freevrrpd only
    /// took the listed VRIDs down when this VRID's interface failed. Same result when both
    /// sides list each other, so only one-way links get a note.
    fn one_way_depends(&self, s: &Section) -> Option<(usize, String)> {
        let (v, _) = s.vrid?;
        let one_way: Vec<(u8, usize)> = s
            .depends
            .iter()
            .copied()
            .filter(|(d, _)| {
                let targets = self
                    .sections
                    .iter()
                    .filter(|t| t.vrid.is_some_and(|(x, _)| x == *d));
                let mut targets = targets.peekable();
                targets.peek().is_some() && targets.all(|t| !t.depends.iter().any(|(b, _)| *b == v))
            })
            .collect();
        let &(_, at) = one_way.first()?;
        let list = one_way
            .iter()
            .map(|(d, _)| d.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let them = if one_way.len() == 1 {
            format!("VRID {list}")
        } else {
            format!("VRIDs {list}")
        };
        Some((
            at,
            format!(
                "`vridsdep` is one-way in freevrrpd ({them} went down when VRID {v}'s interface failed, not the reverse); in fwlb they form one group that goes to backup together whichever member fails"
            ),
        ))
    }
}

/// Why a line that does not start with a letter stops freevrrpd ("a bad line was found").
fn bad_line(text: &str) -> &'static str {
    let t = text.trim_start();
    if t.is_empty() {
        "this line holds only blanks, which stops freevrrpd: leave it empty"
    } else if t.starts_with('#') {
        "a comment must start with `#` in column 1 (freevrrpd stops at this line)"
    } else if t.len() != text.len() {
        "a key must start in column 1 (freevrrpd stops at an indented line)"
    } else if t.starts_with('[') {
        "freevrrpd.conf has no sections but `[VRID]`"
    } else {
        "expected `key = value`, `[VRID]` or a `#` comment (freevrrpd stops at this line)"
    }
}

fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no interface name".into());
    }
    if name.len() > MAX_IFNAME {
        return Err(format!(
            "{name:?} is longer than {MAX_IFNAME} bytes, too long for an interface name"
        ));
    }
    if name.contains(|c: char| c.is_whitespace() || c == '/' || c.is_control()) {
        return Err(format!("{name:?} is not an interface name"));
    }
    Ok(())
}

/// vrrp_conf_split_args: elements between delimiters, each with its byte offset in `s`; after
/// a delimiter, characters other than ASCII letters, digits, `.` and `/` are skipped (so
/// "2, 3" gives "2" and "3", and empty elements vanish).
fn split_args(s: &str, delim: u8) -> Vec<(usize, &str)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != delim {
            i += 1;
        }
        // `i` stops on an ASCII delimiter or at the end: both are char boundaries.
        out.push((start, &s[start..i]));
        if i < b.len() {
            i += 1;
        }
        while i < b.len() && !(b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'/') {
            i += 1;
        }
    }
    out
}

/// C atoi(): leading blanks, a sign, then digits up to the first other character; 0 if none.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = t.bytes().take_while(u8::is_ascii_digit).fold(0i64, |n, b| {
        n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    if neg { -n } else { n }
}

/// BSD inet_aton(), which freevrrpd's inet_addr() uses: 1 to 4 parts, each decimal, octal
/// (leading 0) or hex (0x); the last part fills the remaining bytes; trailing blanks allowed.
/// Only used to tell the user what freevrrpd made of an address Rust does not accept.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u64> = Vec::new();
    let mut i = 0;
    loop {
        let (mut base, mut digits) = (10u64, 0);
        if b.get(i) == Some(&b'0') {
            base = 8;
            i += 1;
            digits = 1;
            if matches!(b.get(i), Some(b'x' | b'X')) {
                base = 16;
                i += 1;
                digits = 0;
            }
        }
        let mut val: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = match c {
                b'0'..=b'9' if base != 8 || c < b'8' => u64::from(c - b'0'),
                b'a'..=b'f' if base == 16 => u64::from(c - b'a' + 10),
                b'A'..=b'F' if base == 16 => u64::from(c - b'A' + 10),
                _ => break,
            };
            val = val.checked_mul(base)?.checked_add(d)?;
            digits += 1;
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            if parts.len() >= 3 || val > 0xff {
                return None;
            }
            parts.push(val);
            i += 1;
        } else {
            parts.push(val);
            break;
        }
    }
    if !b[i..].iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let last = *parts.last()?;
    let head = &parts[..parts.len() - 1];
    let room = 32 - 8 * head.len() as u32;
    if last >> room != 0 {
        return None;
    }
    let mut v: u64 = 0;
    for (k, p) in head.iter().enumerate() {
        v |= p << (24 - 8 * k as u32);
    }
    u32::try_from(v | last).ok().map(Ipv4Addr::from)
}

/// " (did you mean `x`?)" for a misspelt key; case is ignored when comparing because the
/// keys mix cases (`MCClearErrorsCount`, `useIKE`).
fn hint(word: &str) -> String {
    super::reader::did_you_mean(word, KEYS.iter().map(|(name, _)| *name), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Imported, Vec<String>> {
        parse_str(src, Path::new("f.conf")).map_err(|e| e.0)
    }

    #[test]
    fn split_like_freevrrpd() {
        assert_eq!(split_args("2, 3", b','), vec![(0, "2"), (3, "3")]);
        assert_eq!(split_args("a,,b", b','), vec![(0, "a"), (3, "b")]);
        assert_eq!(split_args("a, ", b','), vec![(0, "a")]);
        assert_eq!(split_args("", b','), vec![]);
        assert_eq!(
            split_args("10.0.0.1/32 , x", b','),
            vec![(0, "10.0.0.1/32 "), (14, "x")]
        );
        assert_eq!(
            split_args("vlan100: 1.2.3.4/30", b':'),
            vec![(0, "vlan100"), (9, "1.2.3.4/30")]
        );
        assert_eq!(split_args("é,ü,x", b','), vec![(0, "é"), (6, "x")]);
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi("100x"), 100);
        assert_eq!(atoi(" -3"), -3);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi("1 # one"), 1);
    }

    #[test]
    fn inet_aton_like_bsd() {
        let a = |s: &str| inet_aton(s).map(|a| a.to_string());
        assert_eq!(a("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("010.0.0.1").as_deref(), Some("8.0.0.1"));
        assert_eq!(a("10.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1.2").as_deref(), Some("10.1.0.2"));
        assert_eq!(a("0x0a.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("167772161").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.0.0.1 ").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("256.0.0.1"), None);
        assert_eq!(a("10.0.0.256"), None);
        assert_eq!(a("1.2.3.4.5"), None);
        assert_eq!(a("08.1.1.1"), None);
        assert_eq!(a("x"), None);
        assert_eq!(a("1..2"), None);
    }

    #[test]
    fn hints() {
        assert_eq!(hint("prority"), " (did you mean `priority`?)");
        assert_eq!(hint("Priority"), " (did you mean `priority`?)");
        assert_eq!(
            hint("mcclearerrorscount"),
            " (did you mean `MCClearErrorsCount`?)"
        );
        assert_eq!(hint("virtual_router_id"), "");
    }

    #[test]
    fn minimal_section() {
        let i = parse("[VRID]\nserverid = 7\ninterface = em0\naddr = 192.0.2.1/24\n").unwrap();
        let v = &i.config.vrrp[0];
        assert_eq!(
            (v.vrid, v.interface.as_str(), v.priority, v.version),
            (7, "em0", 100, 2)
        );
        assert_eq!(v.addresses, vec!["192.0.2.1/24"]);
        assert_eq!(v.advert_interval, Duration::from_secs(1));
        assert!(v.preempt && v.password.is_none() && v.depends.is_empty());
        assert!(i.config.daemon.control.is_none());
        assert!(i.config.balancers.is_empty() && i.notes.is_empty());
    }

    #[test]
    fn key_is_the_leading_letters() {
        let i = parse("[VRID]\nserverid\t=7\ninterface = em0\npriority2 = 50\naddr=192.0.2.1/24\n")
            .unwrap();
        assert_eq!(i.config.vrrp[0].priority, 50);
        assert_eq!(i.notes.len(), 1, "{:?}", i.notes);
        assert!(
            i.notes[0].starts_with("f.conf:4:9: freevrrpd reads `priority2` as the key `priority`"),
            "{}",
            i.notes[0]
        );
    }

    #[test]
    fn password_bytes_as_freevrrpd_sends_them() {
        let src =
            "[VRID]\nserverid = 1\ninterface = em0\naddr = 192.0.2.1/24\npassword = abcdefghij\n";
        let i = parse(src).unwrap();
        assert_eq!(i.config.vrrp[0].password.as_deref(), Some("abcdefgh"));
        assert!(i.notes[0].contains("10 bytes long"), "{:?}", i.notes);
        let i = parse(&src.replace("abcdefghij", "ab cd,ef")).unwrap();
        assert_eq!(i.config.vrrp[0].password.as_deref(), Some("ab cd"));
        let i = parse(&src.replace("abcdefghij", "pw  ")).unwrap();
        assert_eq!(i.config.vrrp[0].password.as_deref(), Some("pw  "));
        assert!(i.notes[0].contains("blanks"), "{:?}", i.notes);
        let e = parse(&src.replace("abcdefghij", "abcdefgé")).unwrap_err();
        assert!(e[0].starts_with("f.conf:5:12: `password`: freevrrpd uses its first 8 bytes"));
    }

    #[test]
    fn unparsed_last_line_is_ignored() {
        let i = parse("[VRID]\nserverid = 1\ninterface = em0\naddr = 192.0.2.1/24\npriority = 50")
            .unwrap();
        assert_eq!(i.config.vrrp[0].priority, 100);
        assert!(i.notes[0].starts_with("f.conf:5:1: this last line has no newline"));
    }

    #[test]
    fn nothing_to_import() {
        assert_eq!(
            parse("").unwrap_err(),
            vec![
                "f.conf:1:1: no `[VRID]` section: freevrrpd.conf needs one `[VRID]` line per virtual router"
            ]
        );
        assert_eq!(
            parse("# only\n\n").unwrap_err()[0],
            "f.conf:3:1: no `[VRID]` section: freevrrpd.conf needs one `[VRID]` line per virtual router"
        );
    }
}
