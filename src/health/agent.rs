//! HAProxy's agent check, sans-IO: the one ASCII line a server's agent answers, parsed
//! (`parse`), and the agent's own say over the server (`Agent`), kept apart from the
//! operator's switches and from the health checks: a server is usable only if none says no.

use std::time::Instant;

/// The longest agent line read; a longer one is garbage.
pub const MAX_LINE: usize = 512;

/// The agent's administrative word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// No new clients (remembered ones may go on).
    Drain,
    /// No traffic at all.
    Maint,
}

/// What one agent line says; None: the line did not mention it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `up` (true), `down`/`stopped`/`fail` (false).
    pub up: Option<bool>,
    /// `drain`/`maint` (Some), `ready` (None).
    pub admin: Option<Option<Admin>>,
    /// `NN%`: the share of the configured weight.
    pub weight_pct: Option<u32>,
    /// The text after `#`, if any.
    pub text: Option<String>,
}

/// Parse one agent line (without its newline): words separated by spaces, tabs or commas,
/// case-insensitive; the text after `#` is a description. An unknown word, an empty or an
/// overlong line is garbage: the reason.
pub fn parse(line: &[u8]) -> Result<Report, String> {
    if line.len() > MAX_LINE {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    let line = std::str::from_utf8(line).map_err(|_| "not ASCII".to_string())?;
    if !line.is_ascii() {
        return Err("not ASCII".into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (words, text) = match line.split_once('#') {
        Some((w, t)) => (w, Some(t.trim()).filter(|t| !t.is_empty())),
        None => (line, None),
    };
    let mut r = Report {
        text: text.map(str::to_string),
        ..Report::default()
    };
    let mut any = false;
    for w in words.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        any = true;
        let w = w.to_ascii_lowercase();
        match w.as_str() {
            "up" => r.up = Some(true),
            "down" | "stopped" | "fail" => r.up = Some(false),
            "drain" => r.admin = Some(Some(Admin::Drain)),
            "maint" => r.admin = Some(Some(Admin::Maint)),
            "ready" => r.admin = Some(None),
            _ => r.weight_pct = Some(percent(&w).ok_or_else(|| format!("unknown word {w:?}"))?),
        }
    }
    if !any {
        return Err("empty line".into());
    }
    Ok(r)
}

/// `NN%`, 0..=1000.
fn percent(w: &str) -> Option<u32> {
    let n = w.strip_suffix('%')?;
    if n.is_empty() || n.len() > 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|p| *p <= 1000)
}

/// The agent's say over one server, and what its last answer was.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Marked down by the agent (`down`, `stopped`, `fail`), with the reason.
    pub down: Option<String>,
    pub admin: Option<Admin>,
    /// The share of the configured weight; None: all of it.
    pub weight_pct: Option<u32>,
    /// The last answer: `ok`, garbage or a connect failure, for `show servers`.
    pub last: Option<String>,
    pub next_due: Instant,
    pub in_flight: bool,
    pub answers: u64,
    /// Lines ignored as garbage.
    pub garbage: u64,
    /// Connects or reads that failed or timed out (they change nothing).
    pub failures: u64,
}

impl Agent {
    pub fn new(now: Instant) -> Self {
        Agent {
            down: None,
            admin: None,
            weight_pct: None,
            last: None,
            next_due: now,
            in_flight: false,
            answers: 0,
            garbage: 0,
            failures: 0,
        }
    }

    /// Whether the agent lets the server take new clients (remembered ones: `sticky`).
    pub fn usable(&self, sticky: bool) -> bool {
        let drained = self.admin == Some(Admin::Drain) || self.weight_pct == Some(0);
        self.down.is_none() && self.admin != Some(Admin::Maint) && (sticky || !drained)
    }

    /// `weight` as the agent has it: its share, at least 1 unless the share is 0.
    pub fn weight(&self, weight: u32) -> u32 {
        match self.weight_pct {
            None => weight,
            Some(0) => 0,
            Some(p) => {
                let w = u64::from(weight) * u64::from(p) / 100;
                (w.min(u64::from(u32::MAX)) as u32).max(u32::from(weight > 0))
            }
        }
    }

    /// Apply one answer: the line, or why there was none. True when the agent's say changed.
    pub fn apply(
        &mut self,
        answer: Result<&[u8], String>,
        now: Instant,
        interval: std::time::Duration,
    ) -> bool {
        self.in_flight = false;
        self.next_due = (self.next_due + interval).max(now);
        let before = (self.down.clone(), self.admin, self.weight_pct);
        match answer.map(parse) {
            Err(why) => {
                self.failures += 1;
                self.last = Some(why);
            }
            Ok(Err(why)) => {
                self.garbage += 1;
                self.last = Some(format!("garbage: {why}"));
            }
            Ok(Ok(r)) => {
                self.answers += 1;
                self.last = Some("ok".into());
                match r.up {
                    Some(true) => self.down = None,
                    Some(false) => {
                        let text = r.text.map_or(String::new(), |t| format!(" ({t})"));
                        self.down = Some(format!("agent: down{text}"));
                    }
                    None => {}
                }
                if let Some(a) = r.admin {
                    self.admin = a;
                }
                if let Some(p) = r.weight_pct {
                    self.weight_pct = Some(p);
                }
            }
        }
        before != (self.down.clone(), self.admin, self.weight_pct)
    }

    /// `down`, `maint`, `drain`, `up` (with `NN%` when the weight is not whole), or
    /// `unchecked` before the first answer.
    pub fn label(&self) -> String {
        let state = if self.down.is_some() {
            "down"
        } else if self.admin == Some(Admin::Maint) {
            "maint"
        } else if self.admin == Some(Admin::Drain) || self.weight_pct == Some(0) {
            "drain"
        } else if self.answers == 0 {
            "unchecked"
        } else {
            "up"
        };
        match self.weight_pct {
            Some(p) if p != 100 && p != 0 => format!("{state} {p}%"),
            _ => state.into(),
        }
    }

    /// Why the agent keeps the server from clients, for `show servers` (`agent: drain`).
    pub fn reason(&self) -> Option<String> {
        if let Some(d) = &self.down {
            return Some(d.clone());
        }
        match self.label().split(' ').next() {
            Some(s @ ("maint" | "drain")) => Some(format!("agent: {s}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ok(line: &str) -> Report {
        parse(line.as_bytes()).expect(line)
    }

    #[test]
    fn words_and_combinations() {
        assert_eq!(ok("up").up, Some(true));
        assert_eq!(ok("DOWN").up, Some(false));
        assert_eq!(ok("stopped").up, Some(false));
        assert_eq!(ok("fail\r\n").up, Some(false));
        assert_eq!(ok("drain").admin, Some(Some(Admin::Drain)));
        assert_eq!(ok("Maint").admin, Some(Some(Admin::Maint)));
        assert_eq!(ok("ready").admin, Some(None));
        let r = ok("up 75%");
        assert_eq!((r.up, r.weight_pct), (Some(true), Some(75)));
        let r = ok("drain,50%");
        assert_eq!(
            (r.admin, r.weight_pct),
            (Some(Some(Admin::Drain)), Some(50))
        );
        let r = ok("down # disk full ");
        assert_eq!((r.up, r.text.as_deref()), (Some(false), Some("disk full")));
        assert_eq!(ok(" ready , up\t0% ").weight_pct, Some(0));
    }

    #[test]
    fn garbage_empty_and_overlong_lines() {
        for bad in [
            "",
            "   ",
            ",",
            "# only a comment",
            "hello",
            "up sideways",
            "50",
            "%",
            "-5%",
            "1001%",
            "12345%",
            "5.5%",
            "up\u{e9}",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse(&[0xff, b'u', b'p']).is_err());
        assert!(parse("up ".repeat(200).as_bytes()).is_err());
        assert!(parse("up ".repeat(100).as_bytes()).is_ok());
    }

    #[test]
    fn the_agents_say_over_a_server() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(2);
        let mut a = Agent::new(t0);
        assert!(a.usable(false));
        assert_eq!(a.label(), "unchecked");
        assert!(a.apply(Ok(b"drain"), t0, iv));
        assert!(!a.usable(false) && a.usable(true));
        assert_eq!(a.reason().as_deref(), Some("agent: drain"));
        assert!(!a.apply(Ok(b"nonsense"), t0, iv), "garbage changes nothing");
        assert_eq!((a.garbage, a.label().as_str()), (1, "drain"));
        assert!(!a.apply(Err("connect refused".into()), t0, iv));
        assert_eq!(
            (a.failures, a.last.as_deref()),
            (1, Some("connect refused"))
        );
        assert!(a.apply(Ok(b"ready"), t0, iv));
        assert!(a.usable(false));
        assert!(a.apply(Ok(b"down#upgrading"), t0, iv));
        assert!(!a.usable(true));
        assert_eq!(a.reason().as_deref(), Some("agent: down (upgrading)"));
        assert!(a.apply(Ok(b"up 50%"), t0, iv));
        assert_eq!(
            (a.label().as_str(), a.weight(10), a.weight(1)),
            ("up 50%", 5, 1)
        );
        assert!(a.apply(Ok(b"0%"), t0, iv));
        assert!(!a.usable(false));
        assert_eq!((a.weight(10), a.label().as_str()), (0, "drain"));
        assert!(a.apply(Ok(b"maint,100%"), t0, iv));
        assert!(!a.usable(true));
        assert_eq!(a.weight(10), 10);
        assert_eq!(a.next_due, t0 + iv * 8);
    }
}
