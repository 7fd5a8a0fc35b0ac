//! The VRRP state machine of RFC 3768 (VRRPv2) and RFC 5798 (VRRPv3) as a pure function:
//! [`Machine::step`] takes an event and the current time and returns the actions to perform.
//! No I/O and no clock: `now` is a parameter and every duration comes from [`Params`]. The
//! speaker sends the adverts, adds and removes the VIPs, and calls `step(Event::Timer, now)`
//! at or after [`Machine::next_deadline`].
//!
//! Beyond the RFCs, as keepalived does: a Fault state while the interface is down, a
//! priority-0 advert when a master enters Fault or is demoted by its group (so the peer takes
//! over after Skew_Time instead of Master_Down_Interval), `preempt_delay`, a group hold
//! (see group.rs) that pins the effective priority to 0, and a tracked priority (`track`,
//! keepalived's `track_script` weights, computed in track.rs) that moves the priority while
//! the machine runs.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Priority of the address owner, which becomes master at once. RFC 3768 §5.3.4, RFC 5798 §5.2.4.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a master sends when it stops, so backups wait only Skew_Time.
/// RFC 3768 §5.3.4, RFC 5798 §5.2.4.
pub const PRIORITY_STOP: u8 = 0;
/// Master_Down_Interval counts this many advertisement intervals. RFC 3768 §6.1, RFC 5798 §6.1.
const DOWN_ADVERTS: u32 = 3;
/// Smallest interval: one centisecond, the v3 unit. RFC 5798 §5.2.7.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Largest v2 interval: an 8-bit count of seconds. RFC 3768 §5.3.7.
const V2_MAX_INTERVAL: Duration = Duration::from_secs(255);
/// Largest v3 interval: a 12-bit count of centiseconds. RFC 5798 §5.2.7.
pub const V3_MAX_INTERVAL: Duration = Duration::from_millis(40_950);

/// Protocol version of one virtual router; v2 and v3 never mix on one VRID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RFC 3768: whole-second intervals, Skew_Time independent of the interval.
    V2,
    /// RFC 5798: centisecond intervals, backups learn the master's interval.
    V3,
}

/// Configuration of one virtual router, as far as the state machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub vrid: u8,
    pub version: Version,
    /// 1..=255; 255 = address owner. 0 is reserved for "stopping" and is read as 1.
    pub priority: u8,
    /// Advertisement_Interval, clamped to 10 ms..=255 s (v2) or 10 ms..=40.95 s (v3).
    pub advert_interval: Duration,
    /// Preempt_Mode (RFC 3768 §6.1, RFC 5798 §6.1): take over from a lower-priority master.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: how long a lower-priority master is tolerated first.
    pub preempt_delay: Duration,
    /// Our primary address on the interface (IPv4) or link-local address (IPv6): the
    /// tie-break between equal priorities (RFC 3768 §6.4.3, RFC 5798 §6.4.3).
    pub primary: IpAddr,
    /// Accept_Mode (RFC 5798 §6.1): not used by the transitions, kept for the speaker.
    pub accept_mode: bool,
}

impl Params {
    /// The RFC defaults: 1 s interval, preempt on, no delay, accept mode off.
    pub fn new(vrid: u8, version: Version, priority: u8, primary: IpAddr) -> Self {
        Params {
            vrid,
            version,
            priority,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary,
            accept_mode: false,
        }
    }
}

/// Serialized lowercase ("initialize", "backup", "master", "fault"): the names `show vrrp`
/// has always printed, which scripts and the lab read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or stopped by Shutdown.
    #[default]
    Initialize,
    Backup,
    Master,
    /// The interface is down: neither master nor a candidate.
    Fault,
}

impl State {
    /// The name `show vrrp` prints (the same as the JSON one).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Start the instance; `link_up` is the interface's carrier at that moment.
    Startup {
        link_up: bool,
    },
    /// Stop the instance: a master sends priority 0 and removes its VIPs.
    Shutdown,
    /// An already-validated advertisement from a peer for this VRID. `interval` is the
    /// advertised one (v3 learns it; v2 ignores it, the receive checks made it equal ours).
    Advert {
        src: IpAddr,
        priority: u8,
        interval: Duration,
    },
    /// The speaker calls step at or after `next_deadline()`; earlier calls do nothing.
    Timer,
    LinkDown,
    LinkUp,
    /// A group member faulted or left Master: give up mastership with priority 0 and hold
    /// the effective priority at 0 until GroupRecovered.
    GroupFault,
    GroupRecovered,
    /// An operator hands mastership over on purpose (`vrrp standby`): effective priority 0
    /// until Resume. A master advertises priority 0 at once but keeps its VIPs until a peer's
    /// advert shows the peer took over (make before break), then goes Backup; a backup does
    /// not preempt. Not in the RFCs.
    Standby,
    Resume,
    /// The tracked priority changed (`track`: a balancer lost or regained every server): the
    /// configured priority with the weights of the tracks that apply, 1..=254 (clamped). A
    /// master advertises it at once; a backup moves its running Master_Down_Timer by the
    /// change of Skew_Time (keepalived's `vrrp_set_effective_priority`). The address owner
    /// keeps 255 (keepalived: trackers never lower the owner). Not in the RFCs.
    Priority(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    AddVips,
    RemoveVips,
    /// Gratuitous ARP (IPv4) / unsolicited NA (IPv6) burst for every VIP.
    SendGratuitous,
    BecameMaster,
    BecameBackup,
    EnteredFault,
    Log(String),
}

/// One virtual router's state, timers and learned values.
#[derive(Debug, Clone)]
pub struct Machine {
    p: Params,
    state: State,
    /// The configured priority moved by `track` weights (Event::Priority); what we advertise
    /// and compare with unless held, and what Skew_Time is computed from.
    priority: u8,
    /// Set by GroupFault: effective priority 0, never becomes master.
    group_held: bool,
    /// Set by Standby: effective priority 0 until Resume.
    standby: bool,
    /// RFC 5798 §6.1 Master_Adver_Interval; always the local interval in v2.
    master_adver_interval: Duration,
    /// Backup only. None while `down_expired`.
    master_down_at: Option<Instant>,
    /// Master_Down_Timer fired while the group held us: take over as soon as released.
    down_expired: bool,
    /// Master only.
    adver_at: Option<Instant>,
    /// When we first could have preempted the current lower-priority master (preempt_delay).
    preempt_from: Option<Instant>,
}

/// `d * num / den`, exact to the nanosecond, saturating instead of overflowing.
fn scale(d: Duration, num: u32, den: u32) -> Duration {
    let ns = d.as_nanos() * u128::from(num) / u128::from(den.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

impl Machine {
    pub fn new(mut p: Params) -> Self {
        // Priority 0 on the wire means "master stopping" (RFC 3768 §5.3.4); as a local
        // setting it is invalid (config rejects it), so read it as the lowest backup.
        p.priority = p.priority.max(1);
        // A zero interval would make the speaker spin; the wire cannot carry more than max.
        let max = match p.version {
            Version::V2 => V2_MAX_INTERVAL,
            Version::V3 => V3_MAX_INTERVAL,
        };
        p.advert_interval = p.advert_interval.clamp(MIN_INTERVAL, max);
        Machine {
            master_adver_interval: p.advert_interval,
            priority: p.priority,
            p,
            state: State::Initialize,
            group_held: false,
            standby: false,
            master_down_at: None,
            down_expired: false,
            adver_at: None,
            preempt_from: None,
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority we advertise and compare with: 0 while the group holds us or an
    /// operator put us on standby, else the tracked priority.
    pub fn effective_priority(&self) -> u8 {
        if self.group_held || self.standby {
            0
        } else {
            self.priority
        }
    }

    /// The configured priority moved by `track` (Event::Priority), whatever holds us.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The group holds us at priority 0 (a member faulted or was taken by the peer).
    pub fn group_held(&self) -> bool {
        self.group_held
    }

    /// On standby (`vrrp standby`) until Resume.
    pub fn standby(&self) -> bool {
        self.standby
    }

    /// RFC 5798 §6.1 Master_Adver_Interval (v3: learned from the master's adverts).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time from the local priority (RFC 3768 §6.1: `(256 - Priority) / 256` seconds;
    /// RFC 5798 §6.1: `((256 - Priority) * Master_Adver_Interval) / 256`): the tracked one, as
    /// keepalived's `VRRP_TIMER_SKEW` uses its effective priority, so of two backups the one
    /// whose servers are up takes over first. A group hold or standby changes only what we
    /// advertise, not how we time the master.
    pub fn skew_time(&self) -> Duration {
        let num = 256 - u32::from(self.priority);
        match self.p.version {
            Version::V2 => scale(Duration::from_secs(1), num, 256),
            Version::V3 => scale(self.master_adver_interval, num, 256),
        }
    }

    /// `3 * Advertisement_Interval + Skew_Time` (RFC 3768 §6.1), v3 with
    /// Master_Adver_Interval (RFC 5798 §6.1).
    pub fn master_down_interval(&self) -> Duration {
        let base = match self.p.version {
            Version::V2 => self.p.advert_interval,
            Version::V3 => self.master_adver_interval,
        };
        base.saturating_mul(DOWN_ADVERTS)
            .saturating_add(self.skew_time())
    }

    /// When the speaker must call `step(Event::Timer, ..)` next; None = no timer running.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backup => self.master_down_at,
            State::Master => self.adver_at,
            State::Initialize | State::Fault => None,
        }
    }

    pub fn step(&mut self, ev: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Startup { link_up } => self.on_startup(link_up, now, &mut out),
            Event::Shutdown => self.on_shutdown(&mut out),
            Event::Advert {
                src,
                priority,
                interval,
            } => self.on_advert(src, priority, interval, now, &mut out),
            Event::Timer => self.on_timer(now, &mut out),
            Event::LinkDown => self.on_link_down(&mut out),
            Event::LinkUp => self.on_link_up(now, &mut out),
            Event::GroupFault => self.on_group_fault(now, &mut out),
            Event::GroupRecovered => self.on_group_recovered(now, &mut out),
            Event::Standby => self.on_standby(now, &mut out),
            Event::Resume => self.on_resume(now, &mut out),
            Event::Priority(p) => self.on_priority(p, now, &mut out),
        }
        out
    }

    // ===== event handlers =====

    fn on_startup(&mut self, link_up: bool, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            // Already running: a second Startup is a speaker bug, not a reason to flap.
            return;
        }
        if link_up {
            self.start(now, "startup", out);
        } else {
            // Not in the RFCs: an instance without carrier waits in Fault for LinkUp.
            self.enter_fault("startup with the link down", out);
        }
    }

    fn on_shutdown(&mut self, out: &mut Vec<Action>) {
        match self.state {
            // RFC 3768 §6.4.3, RFC 5798 §6.4.3 "If a Shutdown event is received": cancel
            // Adver_Timer, send an ADVERTISEMENT with priority 0, go to Initialize.
            State::Master => {
                self.log(State::Initialize, "shutdown (RFC 3768 §6.4.3)", out);
                out.push(Action::SendAdvert {
                    priority: PRIORITY_STOP,
                });
                out.push(Action::RemoveVips);
            }
            // RFC 3768 §6.4.2, RFC 5798 §6.4.2: cancel Master_Down_Timer, go to Initialize.
            State::Backup => self.log(State::Initialize, "shutdown (RFC 3768 §6.4.2)", out),
            State::Fault => self.log(State::Initialize, "shutdown", out),
            State::Initialize => return,
        }
        self.clear_timers();
        self.state = State::Initialize;
    }

    fn on_advert(
        &mut self,
        src: IpAddr,
        priority: u8,
        interval: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // RFC 3768 §7.1, RFC 5798 §7.1: the address owner MUST drop adverts for its VRID
        // (the receive checks may already have done so; dropping twice is harmless).
        if self.p.priority == PRIORITY_OWNER {
            return;
        }
        match self.state {
            State::Backup => self.backup_rx(priority, interval, now),
            State::Master => self.master_rx(src, priority, interval, now, out),
            // Initialize does not listen; Fault has no working interface.
            State::Initialize | State::Fault => {}
        }
    }

    /// RFC 3768 §6.4.2, RFC 5798 §6.4.2 "If an ADVERTISEMENT is received" in Backup.
    fn backup_rx(&mut self, priority: u8, interval: Duration, now: Instant) {
        if priority == PRIORITY_STOP {
            // The master is stopping: Master_Down_Timer = Skew_Time.
            self.preempt_from = None;
            self.arm_master_down(now, self.skew_time());
            return;
        }
        let local = self.effective_priority();
        let accept = !self.p.preempt || priority >= local || self.preempt_waiting(now);
        if accept {
            // Preempt_Mode False, or priority >= local: (v3: adopt the master's interval,
            // recompute Skew_Time and Master_Down_Interval) reset Master_Down_Timer.
            if priority >= local {
                self.preempt_from = None;
            }
            self.learn_interval(interval);
            self.arm_master_down(now, self.master_down_interval());
        }
        // Else preempt on and a lower priority: discard, so Master_Down_Timer fires and we
        // take over.
    }

    /// keepalived's `preempt_delay`: a lower-priority master is accepted like a higher one
    /// until the delay has passed since we first could have preempted it.
    fn preempt_waiting(&mut self, now: Instant) -> bool {
        if self.p.preempt_delay.is_zero() {
            return false;
        }
        let from = *self.preempt_from.get_or_insert(now);
        match from.checked_add(self.p.preempt_delay) {
            Some(until) => now < until,
            None => true, // a delay beyond the clock's range never expires
        }
    }

    /// RFC 3768 §6.4.3, RFC 5798 §6.4.3 "If an ADVERTISEMENT is received" in Master.
    fn master_rx(
        &mut self,
        src: IpAddr,
        priority: u8,
        interval: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let local = self.effective_priority();
        if priority == PRIORITY_STOP {
            // A stopping master elsewhere (misconfig or a split brain healing): send an
            // ADVERTISEMENT at once and reset Adver_Timer so backups see us.
            out.push(Action::SendAdvert { priority: local });
            self.adver_at = now.checked_add(self.p.advert_interval);
        } else if priority > local || (priority == local && src > self.p.primary) {
            // Higher priority, or equal priority and a greater primary address (numeric
            // compare; IpAddr orders within a family by value): cancel Adver_Timer,
            // (v3: learn Master_Adver_Interval) set Master_Down_Timer, go to Backup.
            self.learn_interval(interval);
            let why = if self.standby {
                "standby: a peer took over"
            } else if priority > local {
                "higher priority advert (RFC 3768 §6.4.3)"
            } else {
                "equal priority, greater primary address (RFC 3768 §6.4.3)"
            };
            self.become_backup(now, why, false, out);
        }
        // Else lower priority, or equal with a smaller address: discard.
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Backup => {
                let Some(at) = self.master_down_at else {
                    return;
                };
                if now < at {
                    return;
                }
                if self.group_held {
                    // The master is gone but our group holds us: remember it and take over
                    // the moment the group recovers (group.rs).
                    self.master_down_at = None;
                    self.down_expired = true;
                    out.push(self.note("master down while held by the group"));
                } else {
                    // RFC 3768 §6.4.2, RFC 5798 §6.4.2 "If the Master_Down_Timer fires".
                    self.become_master(now, "master down timer (RFC 3768 §6.4.2)", out);
                }
            }
            State::Master => {
                let Some(at) = self.adver_at else { return };
                if now < at {
                    return;
                }
                // RFC 3768 §6.4.3, RFC 5798 §6.4.3 "If the Adver_Timer fires": send an
                // ADVERTISEMENT, reset the timer. Re-armed from the deadline, so timer
                // latency does not stretch every interval (at 20 ms that ate the backup's
                // margin); a speaker more than an interval late starts afresh instead of
                // bursting.
                out.push(Action::SendAdvert {
                    priority: self.effective_priority(),
                });
                let next = at.checked_add(self.p.advert_interval);
                self.adver_at = match next {
                    Some(n) if n > now => Some(n),
                    _ => now.checked_add(self.p.advert_interval),
                };
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn on_link_down(&mut self, out: &mut Vec<Action>) {
        match self.state {
            // Not in the RFCs (keepalived, architecture.md): a dead interface gives up at
            // once; a master says priority 0 so the peer takes over after Skew_Time.
            State::Master | State::Backup => self.enter_fault("link down", out),
            // Not started (Startup carries the carrier state), or already in Fault.
            State::Initialize | State::Fault => {}
        }
    }

    fn on_link_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Fault {
            // Back as a fresh start: RFC 3768 §6.4.1 / RFC 5798 §6.4.1 Startup.
            self.start(now, "link up", out);
        }
    }

    fn on_group_fault(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.group_held {
            return;
        }
        self.group_held = true;
        if self.state == State::Master {
            // keepalived sync group: priority 0 so the peer takes every member after
            // Skew_Time (RFC 3768 §5.3.4), then Backup with the timer running to track it.
            self.become_backup(now, "group member failed", true, out);
        } else {
            out.push(self.note("held by the group (effective priority 0)"));
        }
    }

    fn on_group_recovered(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.group_held {
            return;
        }
        self.group_held = false;
        if self.state != State::Backup {
            out.push(self.note("released by the group"));
            return;
        }
        if self.p.priority == PRIORITY_OWNER {
            // The owner would have started as master (RFC 3768 §6.4.1): do so now.
            self.become_master(now, "group recovered, address owner (RFC 3768 §6.4.1)", out);
        } else if self.down_expired {
            // Master_Down_Timer fired during the hold (RFC 3768 §6.4.2): nobody is master.
            self.become_master(now, "group recovered, master down (RFC 3768 §6.4.2)", out);
        } else {
            out.push(self.note("released by the group"));
        }
    }

    fn on_standby(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.standby {
            return;
        }
        self.standby = true;
        self.preempt_from = None;
        if self.state == State::Master {
            // Priority 0 now, so a backup takes over after its Skew_Time (RFC 3768 §6.4.2);
            // every advert until then says 0 too. The VIPs stay until the new master is
            // heard (master_rx: any priority above 0 is higher than ours): clients are
            // answered by one host or the other throughout.
            out.push(self.note("standby: advertising priority 0 until a peer takes over"));
            out.push(Action::SendAdvert {
                priority: PRIORITY_STOP,
            });
            self.adver_at = now.checked_add(self.p.advert_interval);
        } else {
            out.push(self.note("standby: effective priority 0, no preemption"));
        }
    }

    fn on_resume(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.standby {
            return;
        }
        self.standby = false;
        out.push(self.note("resumed: configured priority again"));
        if self.state == State::Master {
            // Say the real priority at once (a backup may have armed its Skew_Time).
            out.push(Action::SendAdvert {
                priority: self.effective_priority(),
            });
            self.adver_at = now.checked_add(self.p.advert_interval);
        }
        // A backup preempts through its normal timers: the next lower-priority advert is
        // discarded and Master_Down_Timer fires.
    }

    fn on_priority(&mut self, p: u8, now: Instant, out: &mut Vec<Action>) {
        if self.p.priority == PRIORITY_OWNER {
            return;
        }
        // 0 means "stopping" on the wire and 255 is the owner's: a backup stays within 1..=254.
        let p = p.clamp(1, PRIORITY_OWNER - 1);
        if p == self.priority {
            return;
        }
        // The speaker logs the change with its reasons.
        let old_down = self.master_down_interval();
        self.priority = p;
        match self.state {
            State::Master if self.effective_priority() != PRIORITY_STOP => {
                // RFC 3768 §6.4.3 sends the priority on Adver_Timer; sending it now instead
                // of up to an interval later lets a backup that outranks us start its
                // takeover (it discards our adverts from here on, RFC 3768 §6.4.2) at once.
                out.push(Action::SendAdvert {
                    priority: self.effective_priority(),
                });
                self.adver_at = now.checked_add(self.p.advert_interval);
            }
            State::Backup => {
                // The running Master_Down_Timer follows the new Skew_Time.
                let new_down = self.master_down_interval();
                self.master_down_at = self.master_down_at.map(|at| {
                    let moved = if new_down >= old_down {
                        at.checked_add(new_down - old_down)
                    } else {
                        at.checked_sub(old_down - new_down)
                    };
                    moved.unwrap_or(at)
                });
            }
            // A standby master keeps saying 0; Initialize and Fault send nothing.
            State::Master | State::Initialize | State::Fault => {}
        }
    }

    // ===== transitions =====

    /// RFC 3768 §6.4.1, RFC 5798 §6.4.1 "If a Startup event is received".
    fn start(&mut self, now: Instant, why: &str, out: &mut Vec<Action>) {
        self.master_adver_interval = self.p.advert_interval;
        if self.effective_priority() == PRIORITY_OWNER {
            // Priority 255: send an ADVERTISEMENT, GARP/NA, Adver_Timer -> Master.
            self.become_master(now, &format!("{why}, address owner (RFC 3768 §6.4.1)"), out);
        } else {
            // Else (v3: Master_Adver_Interval = Advertisement_Interval) Master_Down_Timer =
            // Master_Down_Interval -> Backup.
            self.become_backup(now, &format!("{why} (RFC 3768 §6.4.1)"), false, out);
        }
    }

    fn become_master(&mut self, now: Instant, why: &str, out: &mut Vec<Action>) {
        self.log(State::Master, why, out);
        out.push(Action::SendAdvert {
            priority: self.effective_priority(),
        });
        out.push(Action::AddVips);
        out.push(Action::SendGratuitous);
        out.push(Action::BecameMaster);
        self.clear_timers();
        self.adver_at = now.checked_add(self.p.advert_interval);
        self.state = State::Master;
    }

    /// `stop_advert`: a master first says priority 0 so the peer need not time us out.
    fn become_backup(&mut self, now: Instant, why: &str, stop_advert: bool, out: &mut Vec<Action>) {
        self.log(State::Backup, why, out);
        if self.state == State::Master {
            if stop_advert {
                out.push(Action::SendAdvert {
                    priority: PRIORITY_STOP,
                });
            }
            // A backup MUST NOT answer for the VIPs (RFC 3768 §6.4.2, RFC 5798 §6.4.2).
            out.push(Action::RemoveVips);
        }
        out.push(Action::BecameBackup);
        self.clear_timers();
        self.arm_master_down(now, self.master_down_interval());
        self.state = State::Backup;
    }

    fn enter_fault(&mut self, why: &str, out: &mut Vec<Action>) {
        self.log(State::Fault, why, out);
        if self.state == State::Master {
            out.push(Action::SendAdvert {
                priority: PRIORITY_STOP,
            });
            out.push(Action::RemoveVips);
        }
        out.push(Action::EnteredFault);
        self.clear_timers();
        self.state = State::Fault;
    }

    // ===== helpers =====

    fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.down_expired = false;
        self.adver_at = None;
        self.preempt_from = None;
    }

    fn arm_master_down(&mut self, now: Instant, after: Duration) {
        self.master_down_at = now.checked_add(after);
        self.down_expired = false;
    }

    /// RFC 5798 §6.4.2/§6.4.3: a v3 backup adopts the master's interval. v2 ignores it
    /// (RFC 3768 §7.1 drops a mismatch before we see it). Zero is not a valid interval and
    /// is ignored; more than 12 bits of centiseconds is clamped.
    fn learn_interval(&mut self, interval: Duration) {
        if self.p.version == Version::V3 && !interval.is_zero() {
            self.master_adver_interval = interval.clamp(MIN_INTERVAL, V3_MAX_INTERVAL);
        }
    }

    fn note(&self, what: &str) -> Action {
        Action::Log(format!("vrid {} ({:?}): {what}", self.p.vrid, self.state))
    }

    fn log(&self, to: State, why: &str, out: &mut Vec<Action>) {
        out.push(Action::Log(format!(
            "vrid {}: {:?} -> {to:?}: {why}",
            self.p.vrid, self.state
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::Net;
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const MS: Duration = Duration::from_millis(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn params(version: Version, priority: u8, interval_ms: u64) -> Params {
        Params {
            advert_interval: Duration::from_millis(interval_ms),
            ..Params::new(1, version, priority, ip(2))
        }
    }

    fn v2(priority: u8) -> Params {
        params(Version::V2, priority, 1000)
    }

    /// The actions without the log lines.
    fn acts(v: Vec<Action>) -> Vec<Action> {
        v.into_iter()
            .filter(|a| !matches!(a, Action::Log(_)))
            .collect()
    }

    fn advert(src: u8, priority: u8, interval_ms: u64) -> Event {
        Event::Advert {
            src: ip(src),
            priority,
            interval: Duration::from_millis(interval_ms),
        }
    }

    #[test]
    fn state_names_are_the_ones_show_vrrp_always_printed() {
        for s in [
            State::Initialize,
            State::Backup,
            State::Master,
            State::Fault,
        ] {
            // `show vrrp` used to print `format!("{:?}", state).to_lowercase()`.
            let old = format!("{s:?}").to_lowercase();
            assert_eq!(s.as_str(), old);
            assert_eq!(s.to_string(), old);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{old}\""));
        }
    }

    fn to_master(p: u8) -> Vec<Action> {
        vec![
            Action::SendAdvert { priority: p },
            Action::AddVips,
            Action::SendGratuitous,
            Action::BecameMaster,
        ]
    }

    /// A started backup at t0.
    fn backup(p: Params, t0: Instant) -> Machine {
        let mut m = Machine::new(p);
        assert_eq!(
            acts(m.step(Event::Startup { link_up: true }, t0)),
            vec![Action::BecameBackup]
        );
        m
    }

    /// A machine that became master through its master-down timer; returns it and the time.
    fn master(p: Params, t0: Instant) -> (Machine, Instant) {
        let mut m = backup(p, t0);
        let t = m.next_deadline().unwrap();
        assert_eq!(
            acts(m.step(Event::Timer, t)),
            to_master(m.effective_priority())
        );
        (m, t)
    }

    // ===== timers (RFC 3768 §6.1, RFC 5798 §6.1) =====

    #[test]
    fn v2_timers_prio_100_at_1s() {
        let m = Machine::new(v2(100));
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        let m = Machine::new(v2(150));
        assert_eq!(m.skew_time(), Duration::from_nanos(414_062_500));
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(3_414_062_500)
        );
    }

    #[test]
    fn v2_skew_does_not_scale_with_the_interval() {
        // RFC 3768 §6.1: Skew_Time is (256 - Priority)/256 seconds whatever the interval.
        let m = Machine::new(params(Version::V2, 100, 3000));
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(9_609_375));
    }

    #[test]
    fn v3_timers_at_100ms_and_1s() {
        let m = Machine::new(params(Version::V3, 100, 100));
        assert_eq!(m.skew_time(), Duration::from_nanos(60_937_500));
        assert_eq!(m.master_down_interval(), Duration::from_nanos(360_937_500));
        let m = Machine::new(params(Version::V3, 100, 1000));
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
    }

    #[test]
    fn out_of_range_params_are_clamped() {
        let m = Machine::new(params(Version::V3, 0, 0));
        assert_eq!(m.params().priority, 1);
        assert_eq!(m.params().advert_interval, MIN_INTERVAL);
        let m = Machine::new(params(Version::V3, 100, 100_000));
        assert_eq!(m.params().advert_interval, V3_MAX_INTERVAL);
        let m = Machine::new(params(Version::V2, 100, 1_000_000));
        assert_eq!(m.params().advert_interval, V2_MAX_INTERVAL);
    }

    // ===== Initialize (RFC 3768 §6.4.1, RFC 5798 §6.4.1) =====

    #[test]
    fn owner_starts_as_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(v2(255));
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(
            acts(m.step(Event::Startup { link_up: true }, t0)),
            to_master(255)
        );
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn non_owner_starts_as_backup_with_master_down_timer() {
        let t0 = Instant::now();
        let m = backup(v2(100), t0);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
    }

    #[test]
    fn startup_twice_is_ignored() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        assert!(m.step(Event::Startup { link_up: true }, t0 + MS).is_empty());
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
    }

    #[test]
    fn initialize_ignores_adverts_timers_and_links() {
        let t0 = Instant::now();
        let mut m = Machine::new(v2(100));
        for ev in [
            advert(1, 200, 1000),
            Event::Timer,
            Event::LinkDown,
            Event::LinkUp,
            Event::Shutdown,
        ] {
            assert!(m.step(ev, t0).is_empty(), "{ev:?}");
            assert_eq!(m.state(), State::Initialize);
        }
    }

    // ===== Backup (RFC 3768 §6.4.2, RFC 5798 §6.4.2) =====

    #[test]
    fn backup_becomes_master_when_master_down_timer_fires() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        let d = m.next_deadline().unwrap();
        assert!(m.step(Event::Timer, d - MS).is_empty(), "early timer");
        assert_eq!(m.state(), State::Backup);
        assert_eq!(acts(m.step(Event::Timer, d)), to_master(100));
        assert_eq!(m.next_deadline(), Some(d + Duration::from_secs(1)));
    }

    #[test]
    fn backup_priority_zero_advert_sets_skew_time() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        let t = t0 + Duration::from_secs(2);
        assert!(acts(m.step(advert(1, 0, 1000), t)).is_empty());
        assert_eq!(m.next_deadline(), Some(t + Duration::from_micros(609_375)));
        let d = m.next_deadline().unwrap();
        assert_eq!(acts(m.step(Event::Timer, d)), to_master(100));
    }

    #[test]
    fn backup_higher_or_equal_priority_resets_the_timer() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        for (k, prio) in [(1u64, 200u8), (2, 100), (3, 255)] {
            let t = t0 + Duration::from_secs(k);
            assert!(acts(m.step(advert(1, prio, 1000), t)).is_empty());
            assert_eq!(m.next_deadline(), Some(t + m.master_down_interval()));
        }
    }

    #[test]
    fn backup_lower_priority_with_preempt_is_discarded() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        let d = m.next_deadline().unwrap();
        for k in 1..=3 {
            m.step(advert(1, 50, 1000), t0 + Duration::from_secs(k));
            assert_eq!(m.next_deadline(), Some(d), "timer must not move");
        }
        assert_eq!(acts(m.step(Event::Timer, d)), to_master(100));
    }

    #[test]
    fn backup_lower_priority_without_preempt_resets_the_timer() {
        let t0 = Instant::now();
        let mut m = backup(
            Params {
                preempt: false,
                ..v2(100)
            },
            t0,
        );
        let t = t0 + Duration::from_secs(3);
        m.step(advert(1, 50, 1000), t);
        assert_eq!(m.next_deadline(), Some(t + m.master_down_interval()));
    }

    #[test]
    fn preempt_delay_tolerates_a_lower_master_for_the_delay() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(10);
        let mut m = backup(
            Params {
                preempt_delay: delay,
                ..v2(200)
            },
            t0,
        );
        let first = t0 + Duration::from_secs(1);
        let mut t = first;
        let became = loop {
            // The lower-priority master advertises every second.
            if let Some(d) = m.next_deadline().filter(|&d| d <= t)
                && acts(m.step(Event::Timer, d)).contains(&Action::BecameMaster)
            {
                break d;
            }
            m.step(advert(1, 100, 1000), t);
            t += Duration::from_secs(1);
            assert!(t < first + Duration::from_secs(60), "never preempted");
        };
        assert!(
            became >= first + delay,
            "preempted after {:?}",
            became - first
        );
        assert!(
            became <= first + delay + Duration::from_secs(1) + m.master_down_interval(),
            "preempted late: {:?}",
            became - first
        );
    }

    #[test]
    fn preempt_delay_restarts_after_a_higher_master() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(5);
        let mut m = backup(
            Params {
                preempt_delay: delay,
                ..v2(200)
            },
            t0,
        );
        m.step(advert(1, 100, 1000), t0); // first chance at t0
        m.step(advert(1, 250, 1000), t0 + Duration::from_secs(4)); // a better master: forget it
        let t = t0 + Duration::from_secs(6);
        m.step(advert(1, 100, 1000), t); // a new first chance: tolerated again
        assert_eq!(m.next_deadline(), Some(t + m.master_down_interval()));
    }

    #[test]
    fn v3_backup_learns_the_master_interval() {
        let t0 = Instant::now();
        let mut m = backup(params(Version::V3, 100, 1000), t0);
        let t = t0 + Duration::from_secs(1);
        m.step(advert(1, 200, 100), t);
        assert_eq!(m.master_adver_interval(), Duration::from_millis(100));
        assert_eq!(m.skew_time(), Duration::from_nanos(60_937_500));
        assert_eq!(
            m.next_deadline(),
            Some(t + Duration::from_nanos(360_937_500))
        );
        // A zero interval is invalid and ignored; more than 12 bits of cs is clamped.
        m.step(advert(1, 200, 0), t);
        assert_eq!(m.master_adver_interval(), Duration::from_millis(100));
        m.step(advert(1, 200, 100_000), t);
        assert_eq!(m.master_adver_interval(), V3_MAX_INTERVAL);
        // A fresh start goes back to the local interval (RFC 5798 §6.4.1).
        m.step(Event::Shutdown, t);
        m.step(Event::Startup { link_up: true }, t);
        assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
    }

    #[test]
    fn v3_lower_priority_preempted_advert_teaches_nothing() {
        let t0 = Instant::now();
        let mut m = backup(params(Version::V3, 100, 1000), t0);
        m.step(advert(1, 50, 100), t0 + MS);
        assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
    }

    #[test]
    fn v2_ignores_the_advertised_interval() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        m.step(advert(1, 200, 100), t0);
        assert_eq!(m.master_adver_interval(), Duration::from_secs(1));
        assert_eq!(
            m.next_deadline(),
            Some(t0 + Duration::from_micros(3_609_375))
        );
    }

    // ===== Master (RFC 3768 §6.4.3, RFC 5798 §6.4.3) =====

    #[test]
    fn master_advertises_on_its_timer() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        let d = t + Duration::from_secs(1);
        assert!(m.step(Event::Timer, d - MS).is_empty());
        assert_eq!(
            acts(m.step(Event::Timer, d)),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(m.next_deadline(), Some(d + Duration::from_secs(1)));
        // A call late by less than an interval keeps the cadence (timer latency must not
        // stretch every interval) ...
        let late = d + Duration::from_millis(1500);
        m.step(Event::Timer, late);
        assert_eq!(m.next_deadline(), Some(d + Duration::from_secs(2)));
        // ... one more than an interval late starts afresh from now instead of bursting.
        let very_late = d + Duration::from_millis(3500);
        assert_eq!(acts(m.step(Event::Timer, very_late)).len(), 1);
        assert_eq!(m.next_deadline(), Some(very_late + Duration::from_secs(1)));
    }

    #[test]
    fn master_answers_priority_zero_at_once() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        let t = t + Duration::from_millis(300);
        assert_eq!(
            acts(m.step(advert(1, 0, 1000), t)),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(m.next_deadline(), Some(t + Duration::from_secs(1)));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn master_yields_to_higher_priority() {
        let t0 = Instant::now();
        let (mut m, t) = master(params(Version::V3, 100, 1000), t0);
        let t = t + MS;
        assert_eq!(
            acts(m.step(advert(1, 101, 200), t)),
            vec![Action::RemoveVips, Action::BecameBackup]
        );
        assert_eq!(m.state(), State::Backup);
        // v3: Master_Adver_Interval learned from the advert.
        assert_eq!(m.master_adver_interval(), Duration::from_millis(200));
        assert_eq!(m.next_deadline(), Some(t + m.master_down_interval()));
    }

    #[test]
    fn master_discards_lower_priority() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        assert!(acts(m.step(advert(9, 99, 1000), t + MS)).is_empty());
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.next_deadline(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn tie_break_on_equal_priority_by_primary_address() {
        let t0 = Instant::now();
        // Ours is 10.0.0.2. A greater sender address wins...
        let (mut m, t) = master(v2(100), t0);
        assert_eq!(
            acts(m.step(advert(3, 100, 1000), t + MS)),
            vec![Action::RemoveVips, Action::BecameBackup]
        );
        // ... a smaller one loses.
        let (mut m, t) = master(v2(100), t0);
        assert!(acts(m.step(advert(1, 100, 1000), t + MS)).is_empty());
        assert_eq!(m.state(), State::Master);
        // Numeric, not lexical: 10.0.0.10 > 10.0.0.9.
        let (mut m, t) = master(
            Params {
                primary: ip(9),
                ..v2(100)
            },
            t0,
        );
        assert!(acts(m.step(advert(10, 100, 1000), t + MS)).contains(&Action::BecameBackup));
    }

    #[test]
    fn tie_break_ipv6() {
        let t0 = Instant::now();
        let ll = |x: u16| IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, x));
        let p = Params {
            primary: ll(0x100),
            ..params(Version::V3, 100, 100)
        };
        let (mut m, t) = master(p.clone(), t0);
        let adv = |x| Event::Advert {
            src: ll(x),
            priority: 100,
            interval: Duration::from_millis(100),
        };
        assert!(acts(m.step(adv(0xff), t + MS)).is_empty());
        assert!(acts(m.step(adv(0x101), t + MS)).contains(&Action::BecameBackup));
    }

    #[test]
    fn owner_drops_adverts() {
        // RFC 3768 §7.1: the owner MUST drop; it stays master even against another 255.
        let t0 = Instant::now();
        let mut m = Machine::new(v2(255));
        m.step(Event::Startup { link_up: true }, t0);
        for prio in [0, 254, 255] {
            assert!(m.step(advert(200, prio, 1000), t0 + MS).is_empty());
            assert_eq!(m.state(), State::Master);
        }
    }

    // ===== Shutdown =====

    #[test]
    fn master_shutdown_sends_priority_zero_and_removes_vips() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        assert_eq!(
            acts(m.step(Event::Shutdown, t + MS)),
            vec![Action::SendAdvert { priority: 0 }, Action::RemoveVips]
        );
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.next_deadline(), None);
        // It can be started again.
        m.step(Event::Startup { link_up: true }, t + 2 * MS);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn backup_shutdown_is_silent() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        assert!(acts(m.step(Event::Shutdown, t0 + MS)).is_empty());
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.next_deadline(), None);
    }

    // ===== Fault (link) =====

    #[test]
    fn master_link_down_gives_up_with_priority_zero() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        assert_eq!(
            acts(m.step(Event::LinkDown, t + MS)),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::EnteredFault
            ]
        );
        assert_eq!(m.state(), State::Fault);
        assert_eq!(m.next_deadline(), None);
        // Fault neither listens nor advertises.
        for ev in [
            advert(1, 0, 1000),
            advert(1, 50, 1000),
            Event::Timer,
            Event::LinkDown,
        ] {
            assert!(
                acts(m.step(ev, t + Duration::from_secs(10))).is_empty(),
                "{ev:?}"
            );
        }
        // Link up: as Initialize does.
        let up = t + Duration::from_secs(20);
        assert_eq!(acts(m.step(Event::LinkUp, up)), vec![Action::BecameBackup]);
        assert_eq!(m.next_deadline(), Some(up + m.master_down_interval()));
    }

    #[test]
    fn backup_link_down_is_silent() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        assert_eq!(
            acts(m.step(Event::LinkDown, t0 + MS)),
            vec![Action::EnteredFault]
        );
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn start_with_link_down_waits_in_fault() {
        let t0 = Instant::now();
        let mut m = Machine::new(v2(255));
        assert_eq!(
            acts(m.step(Event::Startup { link_up: false }, t0)),
            vec![Action::EnteredFault]
        );
        assert!(acts(m.step(Event::LinkUp, t0 + MS)).ends_with(&to_master(255)));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn fault_shutdown_goes_to_initialize() {
        let t0 = Instant::now();
        let mut m = Machine::new(v2(100));
        m.step(Event::Startup { link_up: false }, t0);
        assert!(acts(m.step(Event::Shutdown, t0)).is_empty());
        assert_eq!(m.state(), State::Initialize);
        assert!(
            m.step(Event::LinkUp, t0).is_empty(),
            "a stopped instance stays stopped"
        );
    }

    // ===== group hold =====

    #[test]
    fn group_fault_demotes_a_master_with_priority_zero() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        assert_eq!(
            acts(m.step(Event::GroupFault, t + MS)),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::BecameBackup
            ]
        );
        assert_eq!(m.effective_priority(), 0);
        // Held: a lower-priority master is accepted, and the timer firing does not promote.
        let t = t + Duration::from_secs(1);
        m.step(advert(1, 1, 1000), t);
        assert_eq!(m.next_deadline(), Some(t + m.master_down_interval()));
        let d = m.next_deadline().unwrap();
        assert!(acts(m.step(Event::Timer, d)).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.next_deadline(), None);
        // Released after the master went away: take over at once.
        let r = d + Duration::from_secs(5);
        assert_eq!(acts(m.step(Event::GroupRecovered, r)), to_master(100));
        assert_eq!(m.effective_priority(), 100);
    }

    #[test]
    fn group_recovered_with_a_live_master_keeps_the_timer() {
        let t0 = Instant::now();
        let mut m = backup(v2(100), t0);
        assert!(acts(m.step(Event::GroupFault, t0)).is_empty());
        m.step(advert(1, 50, 1000), t0 + Duration::from_secs(1));
        let d = m.next_deadline();
        assert!(acts(m.step(Event::GroupRecovered, t0 + Duration::from_secs(2))).is_empty());
        assert_eq!(m.next_deadline(), d);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn held_owner_starts_as_backup_and_takes_over_on_release() {
        let t0 = Instant::now();
        let mut m = Machine::new(v2(255));
        m.step(Event::GroupFault, t0);
        assert_eq!(
            acts(m.step(Event::Startup { link_up: true }, t0)),
            vec![Action::BecameBackup]
        );
        assert_eq!(acts(m.step(Event::GroupRecovered, t0 + MS)), to_master(255));
    }

    #[test]
    fn group_events_are_idempotent() {
        let t0 = Instant::now();
        let (mut m, t) = master(v2(100), t0);
        m.step(Event::GroupFault, t);
        assert!(m.step(Event::GroupFault, t).is_empty());
        m.step(Event::GroupRecovered, t);
        assert!(m.step(Event::GroupRecovered, t).is_empty());
    }

    // ===== simulated two-router network =====

    /// A (10.0.0.1) and B (10.0.0.2), one VRID.
    fn pair(version: Version, interval_ms: u64, prio_a: u8, prio_b: u8, preempt: bool) -> Net {
        let mk = |prio, last| Params {
            preempt,
            primary: ip(last),
            ..params(version, prio, interval_ms)
        };
        Net::new(
            Instant::now(),
            vec![(vec![mk(prio_a, 1)], vec![]), (vec![mk(prio_b, 2)], vec![])],
        )
    }

    /// Converged: A master, B backup; returns when it happened.
    fn converge(net: &mut Net) -> Instant {
        net.start_all();
        net.run_for(10.0);
        assert_eq!(net.holders(1), vec![0]);
        assert_eq!(net.state(1, 1), Some(State::Backup));
        net.first(0, 1, &Action::BecameMaster, net.t0).unwrap()
    }

    const EPS: Duration = Duration::from_millis(1);

    fn failover_cases() -> Vec<(Version, u64)> {
        vec![(Version::V2, 1000), (Version::V3, 1000), (Version::V3, 100)]
    }

    #[test]
    fn net_converges_to_one_master_and_stays() {
        for (ver, iv) in failover_cases() {
            let mut net = pair(ver, iv, 150, 100, true);
            let conv = converge(&mut net);
            // The higher priority wins first: its Master_Down_Interval is shorter.
            let mdi_a = Machine::new(net.routers[0].params[0].clone()).master_down_interval();
            assert_eq!(conv, net.t0 + mdi_a);
            net.run_for(600.0);
            net.check_vrid(1, conv, Duration::ZERO);
            assert_eq!(net.holders(1), vec![0]);
        }
    }

    #[test]
    fn net_crash_failover_within_master_down_interval() {
        for (ver, iv) in failover_cases() {
            let mut net = pair(ver, iv, 150, 100, true);
            let conv = converge(&mut net);
            let interval = Duration::from_millis(iv);
            // Crash at several phases of A's advert cycle.
            for k in 0..5u32 {
                net.run_for(5.0 * iv as f64 / 1000.0 + 0.001 * f64::from(k * 37 % 100));
                let crash = net.now;
                net.crash(0);
                net.run_for(60.0);
                let took = net.first(1, 1, &Action::BecameMaster, crash).unwrap() - crash;
                let skew = Machine::new(net.routers[1].params[0].clone()).skew_time();
                assert!(took <= 3 * interval + skew + EPS, "{ver:?}@{iv}: {took:?}");
                assert!(
                    took + interval >= 3 * interval + skew,
                    "{ver:?}@{iv}: too early {took:?}"
                );
                let gap = net.check_vrid(1, conv, 3 * interval + skew + EPS);
                assert!(gap <= 3 * interval + skew + EPS);
                // A comes back and preempts B (higher priority) within its own MDI.
                let back = net.now;
                net.restart(0);
                net.run_for(60.0);
                assert_eq!(net.holders(1), vec![0]);
                let took = net.first(0, 1, &Action::BecameMaster, back).unwrap() - back;
                assert!(
                    took <= Machine::new(net.routers[0].params[0].clone()).master_down_interval()
                        + EPS
                );
                net.check_vrid(1, conv, 3 * interval + skew + EPS);
            }
        }
    }

    #[test]
    fn net_graceful_shutdown_fails_over_within_skew_time() {
        for (ver, iv) in failover_cases() {
            let mut net = pair(ver, iv, 150, 100, true);
            converge(&mut net);
            net.run_for(2.345);
            let stop = net.now;
            net.inject(0, 1, Event::Shutdown);
            net.run_for(30.0);
            let took = net.first(1, 1, &Action::BecameMaster, stop).unwrap() - stop;
            let skew = Machine::new(net.routers[1].params[0].clone()).skew_time();
            assert_eq!(took, skew, "{ver:?}@{iv}: priority 0 -> Skew_Time exactly");
            assert_eq!(net.holders(1), vec![1]);
        }
    }

    #[test]
    fn net_link_down_fails_over_and_link_up_preempts_back() {
        for lose in [false, true] {
            let mut net = pair(Version::V3, 100, 150, 100, true);
            let conv = converge(&mut net);
            net.run_for(1.0);
            let down = net.now;
            net.link_down(0, 1, lose);
            net.run_for(5.0);
            let took = net.first(1, 1, &Action::BecameMaster, down).unwrap() - down;
            let b = Machine::new(net.routers[1].params[0].clone());
            let bound = if lose {
                b.master_down_interval()
            } else {
                b.skew_time()
            };
            assert!(took <= bound + EPS, "lose={lose}: {took:?}");
            assert_eq!(net.holders(1), vec![1]);
            let up = net.now;
            net.link_up(0, 1);
            net.run_for(5.0);
            assert_eq!(net.holders(1), vec![0], "A preempts back");
            assert!(
                net.first(0, 1, &Action::BecameMaster, up).unwrap() - up <= Duration::from_secs(1)
            );
            net.check_vrid(1, conv, bound + EPS);
        }
    }

    #[test]
    fn net_without_preempt_the_backup_keeps_mastership() {
        let mut net = pair(Version::V2, 1000, 150, 100, false);
        converge(&mut net);
        net.crash(0);
        net.run_for(10.0);
        assert_eq!(net.holders(1), vec![1]);
        let back = net.now;
        net.restart(0);
        net.run_for(120.0);
        assert_eq!(net.holders(1), vec![1], "no preemption");
        net.check_vrid(1, back, Duration::ZERO);
    }

    #[test]
    fn net_equal_priorities_elect_the_greater_address() {
        for (ver, iv) in failover_cases() {
            let mut net = pair(ver, iv, 100, 100, true);
            // Both time out at the same instant and become master before either hears the
            // other; B (10.0.0.2) wins the tie-break and A yields.
            net.latency = Duration::from_millis(1);
            net.start_all();
            net.run_for(20.0);
            assert_eq!(net.holders(1), vec![1], "{ver:?}@{iv}");
            assert_eq!(net.state(0, 1), Some(State::Backup));
            let both = net.first(0, 1, &Action::BecameMaster, net.t0);
            assert_eq!(
                both,
                net.first(1, 1, &Action::BecameMaster, net.t0),
                "a real tie"
            );
            net.check_vrid(1, net.t0 + Duration::from_secs(5), Duration::ZERO);
        }
    }

    #[test]
    fn net_with_latency_never_two_masters_longer_than_the_latency() {
        let mut net = pair(Version::V3, 100, 150, 100, true);
        net.latency = Duration::from_millis(3);
        let conv = converge(&mut net);
        for _ in 0..5 {
            net.crash(0);
            net.run_for(2.0);
            net.restart(0);
            net.run_for(2.0);
        }
        assert_eq!(net.holders(1), vec![0]);
        net.check_vrid(1, conv, Duration::from_millis(400));
    }

    #[test]
    fn net_owner_takes_over_at_start() {
        let mut net = pair(Version::V2, 1000, 255, 100, true);
        net.start(1);
        net.run_for(10.0);
        assert_eq!(net.holders(1), vec![1]);
        let start = net.now;
        net.start(0);
        net.run_for(0.0);
        assert_eq!(
            net.holders(1),
            vec![0],
            "owner at once; B yields to 255 immediately"
        );
        net.run_for(60.0);
        net.check_vrid(1, start, Duration::ZERO);
    }

    // ===== standby (operator handover, not in the RFCs) =====

    #[test]
    fn standby_master_keeps_its_vips_until_a_peer_takes_over() {
        let t0 = Instant::now();
        let (mut m, t) = master(params(Version::V3, 150, 100), t0);
        let a = acts(m.step(Event::Standby, t));
        assert_eq!(
            a,
            vec![Action::SendAdvert { priority: 0 }],
            "no RemoveVips yet"
        );
        assert_eq!(
            (m.state(), m.effective_priority(), m.standby()),
            (State::Master, 0, true)
        );
        assert!(m.step(Event::Standby, t).is_empty(), "twice is once");
        // Every advert until then says 0.
        let at = m.next_deadline().unwrap();
        assert_eq!(
            acts(m.step(Event::Timer, at)),
            vec![Action::SendAdvert { priority: 0 }]
        );
        // The peer's first advert as master: now the VIPs go.
        let a = acts(m.step(advert(3, 100, 100), at + 10 * MS));
        assert_eq!(a, vec![Action::RemoveVips, Action::BecameBackup]);
        assert_eq!(m.state(), State::Backup);
        // A standby backup does not preempt a lower priority master...
        let t2 = at + 50 * MS;
        m.step(advert(3, 100, 100), t2);
        assert_eq!(m.next_deadline(), Some(t2 + m.master_down_interval()));
        // ...until Resume: then the next lower advert is discarded and it takes over.
        m.step(Event::Resume, t2);
        assert!(!m.standby());
        assert_eq!(m.effective_priority(), 150);
        let t3 = t2 + 100 * MS;
        m.step(advert(3, 100, 100), t3);
        assert_eq!(
            m.next_deadline(),
            Some(t2 + m.master_down_interval()),
            "discarded"
        );
        let at = m.next_deadline().unwrap();
        assert_eq!(acts(m.step(Event::Timer, at)), to_master(150));
    }

    #[test]
    fn resume_on_a_standby_master_advertises_the_real_priority_at_once() {
        let t0 = Instant::now();
        let (mut m, t) = master(params(Version::V3, 150, 100), t0);
        m.step(Event::Standby, t);
        let a = acts(m.step(Event::Resume, t + 5 * MS));
        assert_eq!(a, vec![Action::SendAdvert { priority: 150 }]);
        assert_eq!((m.state(), m.standby()), (State::Master, false));
        assert!(m.step(Event::Resume, t + 6 * MS).is_empty());
    }

    /// Two routers, `vrids` each, grouped when more than one; 1 ms between them.
    fn grouped_pair(vrids: &[u8]) -> Net {
        let mk = |prio, last, vrid| Params {
            primary: ip(last),
            ..Params {
                advert_interval: Duration::from_millis(100),
                ..Params::new(vrid, Version::V3, prio, ip(last))
            }
        };
        let groups = if vrids.len() > 1 {
            vec![vrids.to_vec()]
        } else {
            vec![]
        };
        let mut net = Net::new(
            Instant::now(),
            vec![
                (
                    vrids.iter().map(|&v| mk(150, 1, v)).collect(),
                    groups.clone(),
                ),
                (vrids.iter().map(|&v| mk(100, 2, v)).collect(), groups),
            ],
        );
        net.latency = MS;
        net
    }

    #[test]
    fn net_standby_hands_over_and_back_without_a_gap() {
        for vrids in [vec![1u8], vec![1, 2]] {
            let mut net = grouped_pair(&vrids);
            net.start_all();
            net.run_for(5.0);
            let from = net.now;
            for &v in &vrids {
                assert_eq!(net.holders(v), vec![0]);
            }
            // Hand over: A on standby. B holds every VRID within its Skew_Time, and at every
            // moment someone holds each VRID (make before break).
            let t = net.now;
            for &v in &vrids {
                net.inject(0, v, Event::Standby);
            }
            net.run_for(2.0);
            let skew_b = Machine::new(net.routers[1].params[0].clone()).skew_time();
            for &v in &vrids {
                assert_eq!(net.holders(v), vec![1], "{vrids:?}");
                let took = net.first(1, v, &Action::BecameMaster, t).unwrap() - t;
                assert!(took <= skew_b + 2 * MS, "{vrids:?}: {took:?}");
                net.check_vrid(v, from, Duration::ZERO);
            }
            // Hand back: resume A, stand B by, resume B.
            let t = net.now;
            for &v in &vrids {
                net.inject(0, v, Event::Resume);
                net.inject(1, v, Event::Standby);
            }
            net.run_for(1.0);
            for &v in &vrids {
                net.inject(1, v, Event::Resume);
            }
            net.run_for(5.0);
            let skew_a = Machine::new(net.routers[0].params[0].clone()).skew_time();
            for &v in &vrids {
                assert_eq!(net.holders(v), vec![0], "{vrids:?}");
                let took = net.first(0, v, &Action::BecameMaster, t).unwrap() - t;
                assert!(took <= skew_a + 2 * MS, "{vrids:?}: back in {took:?}");
                net.check_vrid(v, from, Duration::ZERO);
            }
        }
    }

    #[test]
    fn net_a_standby_backup_still_takes_over_from_a_dead_master() {
        let mut net = grouped_pair(&[1]);
        net.start_all();
        net.run_for(5.0);
        net.inject(0, 1, Event::Standby);
        net.run_for(2.0);
        assert_eq!(net.holders(1), vec![1]);
        // B dies: A on standby still serves rather than leave nobody (and says priority 0,
        // so anyone able to take over does).
        let crash = net.now;
        net.crash(1);
        net.run_for(2.0);
        assert_eq!(net.holders(1), vec![0]);
        let took = net.first(0, 1, &Action::BecameMaster, crash).unwrap() - crash;
        let mdi = Machine::new(net.routers[0].params[0].clone()).master_down_interval();
        assert!(took <= mdi + MS, "{took:?}");
        assert_eq!(net.routers[0].machines[0].effective_priority(), 0);
    }

    // ===== the tracked priority (`track`, Event::Priority) =====

    #[test]
    fn a_master_advertises_a_new_priority_at_once() {
        let (mut m, t) = master(params(Version::V3, 150, 100), Instant::now());
        let now = t + 30 * MS;
        assert_eq!(
            acts(m.step(Event::Priority(90), now)),
            vec![Action::SendAdvert { priority: 90 }]
        );
        assert_eq!((m.priority(), m.effective_priority()), (90, 90));
        assert_eq!(m.state(), State::Master, "no election of its own");
        // Adver_Timer restarts from the change and goes on with the new priority.
        assert_eq!(m.next_deadline(), Some(now + 100 * MS));
        assert_eq!(
            acts(m.step(Event::Timer, now + 100 * MS)),
            vec![Action::SendAdvert { priority: 90 }]
        );
        assert!(acts(m.step(Event::Priority(90), now + 150 * MS)).is_empty());
        assert_eq!(
            m.next_deadline(),
            Some(now + 200 * MS),
            "unchanged: no advert"
        );
    }

    #[test]
    fn a_backup_moves_its_master_down_timer_by_the_new_skew() {
        let t0 = Instant::now();
        let mut m = backup(params(Version::V3, 100, 100), t0);
        let (before, skew_100) = (m.next_deadline().unwrap(), m.skew_time());
        assert_eq!(before, t0 + m.master_down_interval());
        assert!(acts(m.step(Event::Priority(200), t0 + 50 * MS)).is_empty());
        let skew_200 = m.skew_time();
        assert_eq!(skew_200, scale(100 * MS, 56, 256));
        assert_eq!(m.next_deadline(), Some(before - (skew_100 - skew_200)));
        assert_eq!(m.state(), State::Backup);
        // Down again: later by as much.
        m.step(Event::Priority(100), t0 + 60 * MS);
        assert_eq!(m.next_deadline(), Some(before));
    }

    #[test]
    fn the_owner_keeps_255_and_a_backup_stays_within_1_to_254() {
        let t0 = Instant::now();
        let mut owner = Machine::new(v2(255));
        owner.step(Event::Startup { link_up: true }, t0);
        assert!(acts(owner.step(Event::Priority(100), t0)).is_empty());
        assert_eq!(owner.effective_priority(), 255);
        let mut m = backup(v2(100), t0);
        m.step(Event::Priority(0), t0);
        assert_eq!(m.priority(), 1, "0 is the stop signal, not a priority");
        m.step(Event::Priority(255), t0);
        assert_eq!(m.priority(), 254, "only the owner has 255");
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn a_standby_master_keeps_saying_zero_until_resumed() {
        let (mut m, t) = master(v2(150), Instant::now());
        m.step(Event::Standby, t);
        assert!(acts(m.step(Event::Priority(90), t + MS)).is_empty());
        assert_eq!((m.priority(), m.effective_priority()), (90, 0));
        assert_eq!(
            acts(m.step(Event::Resume, t + 2 * MS)),
            vec![Action::SendAdvert { priority: 90 }]
        );
    }

    #[test]
    fn net_a_master_whose_priority_drops_below_the_backup_is_preempted_and_comes_back() {
        for (ver, iv) in failover_cases() {
            let mut net = pair(ver, iv, 150, 100, true);
            let conv = converge(&mut net);
            let interval = Duration::from_millis(iv);
            net.run_for(1.234 * iv as f64 / 1000.0);
            let drop = net.now;
            net.inject(0, 1, Event::Priority(90));
            net.run_for(30.0);
            assert_eq!(net.holders(1), vec![1], "{ver:?}@{iv}");
            // B discards the lower adverts from the drop on (RFC 3768 §6.4.2): its timer,
            // armed by the last advert it accepted, runs out within Master_Down_Interval.
            let took = net.first(1, 1, &Action::BecameMaster, drop).unwrap() - drop;
            let mdi_b = Machine::new(net.routers[1].params[0].clone()).master_down_interval();
            assert!(took <= mdi_b + EPS, "{ver:?}@{iv}: {took:?}");
            assert!(took + interval >= mdi_b, "{ver:?}@{iv}: too early {took:?}");
            // A held the VIPs until B was master: no gap.
            net.check_vrid(1, conv, Duration::ZERO);
            // Its servers are back: A outranks B again and preempts within its own MDI.
            let back = net.now;
            net.inject(0, 1, Event::Priority(150));
            net.run_for(30.0);
            assert_eq!(net.holders(1), vec![0], "{ver:?}@{iv}");
            let took = net.first(0, 1, &Action::BecameMaster, back).unwrap() - back;
            let mdi_a = Machine::new(net.routers[0].params[0].clone()).master_down_interval();
            assert!(took <= mdi_a + EPS, "{ver:?}@{iv}: back in {took:?}");
            net.check_vrid(1, conv, Duration::ZERO);
        }
    }

    #[test]
    fn net_without_preempt_a_lower_priority_does_not_move_the_pair() {
        let mut net = pair(Version::V3, 100, 150, 100, false);
        converge(&mut net);
        net.inject(0, 1, Event::Priority(90));
        net.run_for(30.0);
        assert_eq!(net.holders(1), vec![0], "the backup accepts any advert");
    }

    #[test]
    fn net_a_tracked_member_takes_its_group_along() {
        let mut net = grouped_pair(&[1, 2]);
        net.start_all();
        net.run_for(5.0);
        let from = net.now;
        // Only VRID 1 tracks the servers; VRID 2 follows through the group (`depends`).
        net.inject(0, 1, Event::Priority(90));
        net.run_for(5.0);
        let b = Machine::new(net.routers[1].params[0].clone());
        let (mdi_b, skew_b) = (b.master_down_interval(), b.skew_time());
        for v in [1, 2] {
            assert_eq!(net.holders(v), vec![1], "vrid {v}");
            let took = net.first(1, v, &Action::BecameMaster, from).unwrap() - from;
            assert!(took <= mdi_b + skew_b + 3 * MS, "vrid {v}: {took:?}");
        }
        net.check_vrid(1, from, Duration::ZERO);
        // VRID 2 was given up with priority 0: B waited its Skew_Time.
        net.check_vrid(2, from, skew_b + 2 * MS);
        // Back: VRID 1 preempts, then the released VRID 2.
        let back = net.now;
        net.inject(0, 1, Event::Priority(150));
        net.run_for(5.0);
        let mdi_a = Machine::new(net.routers[0].params[0].clone()).master_down_interval();
        for v in [1, 2] {
            assert_eq!(net.holders(v), vec![0], "vrid {v}");
            let took = net.first(0, v, &Action::BecameMaster, back).unwrap() - back;
            assert!(took <= 2 * mdi_a + 3 * MS, "vrid {v}: back in {took:?}");
        }
        net.check_vrid(1, from, skew_b + 2 * MS);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[derive(Debug, Clone)]
    enum Op {
        Ev(Event),
        Wait(u64),
        /// Jump to the next deadline and fire the timer.
        Fire,
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let src = (1u8..=3).prop_map(|l| IpAddr::V4(Ipv4Addr::new(10, 0, 0, l)));
        let prio = prop_oneof![Just(0u8), Just(100u8), Just(255u8), any::<u8>()];
        prop_oneof![
            any::<bool>().prop_map(|link_up| Event::Startup { link_up }),
            Just(Event::Shutdown),
            (src, prio, 0u64..50_000).prop_map(|(src, priority, ms)| Event::Advert {
                src,
                priority,
                interval: Duration::from_millis(ms),
            }),
            Just(Event::Timer),
            Just(Event::LinkDown),
            Just(Event::LinkUp),
            Just(Event::GroupFault),
            Just(Event::GroupRecovered),
            any::<u8>().prop_map(Event::Priority),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => arb_event().prop_map(Op::Ev),
            2 => (0u64..5000).prop_map(Op::Wait),
            3 => Just(Op::Fire),
        ]
    }

    fn arb_params() -> impl Strategy<Value = Params> {
        (
            any::<bool>(),
            any::<u8>(),
            0u64..3000,
            any::<bool>(),
            0u64..5000,
        )
            .prop_map(|(v3, priority, iv, preempt, delay)| Params {
                advert_interval: Duration::from_millis(iv),
                preempt,
                preempt_delay: Duration::from_millis(delay),
                ..Params::new(
                    7,
                    if v3 { Version::V3 } else { Version::V2 },
                    priority,
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_events_keep_the_invariants(p in arb_params(), ops in prop::collection::vec(arb_op(), 0..200)) {
            let mut m = Machine::new(p);
            let owner = m.params().priority == PRIORITY_OWNER;
            let mut now = Instant::now();
            let mut vips = false;
            for op in ops {
                let ev = match op {
                    Op::Ev(e) => e,
                    Op::Wait(ms) => { now += Duration::from_millis(ms); continue; }
                    Op::Fire => {
                        if let Some(d) = m.next_deadline() { now = now.max(d); }
                        Event::Timer
                    }
                };
                let before = m.state();
                let held_before = m.effective_priority() == 0;
                let out = m.step(ev, now);
                let after = m.state();
                // What a master says: its tracked priority, which only the owner keeps at 255.
                let prio = m.priority();
                prop_assert!((1..=254).contains(&prio) || (owner && prio == PRIORITY_OWNER));
                let sends: Vec<u8> = out.iter().filter_map(|a| match a {
                    Action::SendAdvert { priority } => Some(*priority),
                    _ => None,
                }).collect();
                for a in &out {
                    match a {
                        Action::AddVips => { prop_assert!(!vips, "AddVips twice"); vips = true; }
                        Action::RemoveVips => { prop_assert!(vips, "RemoveVips without VIPs"); vips = false; }
                        _ => {}
                    }
                }
                prop_assert_eq!(vips, after == State::Master, "VIPs iff Master");
                // Who may advertise: a master (its priority), or a master leaving (once, 0).
                match (before, after) {
                    (State::Master, State::Master) => {
                        prop_assert!(sends.len() <= 1);
                        prop_assert!(sends.iter().all(|&s| s == prio));
                    }
                    (State::Master, _) => {
                        let zero = ev == Event::Shutdown || ev == Event::LinkDown || ev == Event::GroupFault;
                        prop_assert_eq!(sends, if zero { vec![0] } else { vec![] });
                    }
                    (_, State::Master) => prop_assert_eq!(sends, vec![prio]),
                    _ => prop_assert!(sends.is_empty(), "{:?} -> {:?} sent {:?}", before, after, sends),
                }
                // One notification per state change, matching the new state.
                let count = |x: &Action| out.iter().filter(|a| *a == x).count();
                prop_assert_eq!(count(&Action::BecameMaster), usize::from(before != after && after == State::Master));
                prop_assert_eq!(count(&Action::BecameBackup), usize::from(before != after && after == State::Backup));
                prop_assert_eq!(count(&Action::EnteredFault), usize::from(before != after && after == State::Fault));
                prop_assert_eq!(count(&Action::SendGratuitous), count(&Action::BecameMaster));
                // Never master while the group holds it.
                if after == State::Master { prop_assert!(m.effective_priority() != 0); }
                if held_before && before != State::Master && ev != Event::GroupRecovered {
                    prop_assert!(after != State::Master);
                }
                // Timers: exactly the ones the state runs; a deadline may lie in the past
                // (a late speaker), but not after the timer was served or freshly armed.
                let fresh = ev == Event::Timer || before != after;
                let ok = |d: Option<Instant>| d.is_some_and(|d| !fresh || d > now);
                match after {
                    State::Initialize | State::Fault => prop_assert_eq!(m.next_deadline(), None),
                    State::Master => prop_assert!(ok(m.next_deadline())),
                    State::Backup => prop_assert!(
                        ok(m.next_deadline())
                            || (m.effective_priority() == 0 && m.next_deadline().is_none())
                    ),
                }
            }
        }
    }
}
