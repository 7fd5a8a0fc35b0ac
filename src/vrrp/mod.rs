//! VRRP (RFC 3768 v2, RFC 5798 v3): the state machine and failover groups, without I/O.
//!
//! - `fsm`: one virtual router as a pure `step(event, now) -> actions` machine.
//! - `group`: `depends` (freevrrpd's vridsdep) as symmetric sync groups over machines.
//! - `track`: the priority the balancers' servers give an instance (`track`), pure.
//! - `speaker`: the thin I/O loop that performs the actions; the only part here with I/O.
//!
//! Packet parsing and validation live in `wire::vrrp`. `fsm`, `group` and `track` read no
//! clock.

pub mod fsm;
pub mod group;
#[cfg(target_os = "linux")]
pub mod speaker;
pub mod status;
pub mod track;

pub use fsm::{Action, Event, Machine, Params, State, Version};
pub use group::{Group, groups_from_depends, index_of, step_with_groups};

/// A simulated network for tests: routers running machines (and groups) exchange their
/// `SendAdvert` actions as `Advert` events under a fake clock. Timers fire exactly at
/// `next_deadline()`; messages arrive after `latency`, ties go to messages first.
#[cfg(test)]
pub(crate) mod sim {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use super::fsm::{Action, Event, Machine, Params, State};
    use super::group::{Group, index_of, step_with_groups};

    pub struct Router {
        pub params: Vec<Params>,
        pub machines: Vec<Machine>,
        pub groups: Vec<Group>,
        /// A crashed router neither sends, receives nor runs timers.
        pub alive: bool,
        /// VRIDs whose link is down here: their packets are lost both ways.
        pub link_down: Vec<u8>,
        /// VRIDs whose VIPs this router holds (from AddVips/RemoveVips).
        pub vips: Vec<u8>,
    }

    impl Router {
        fn machine(&self, vrid: u8) -> Option<&Machine> {
            self.machines.iter().find(|m| m.params().vrid == vrid)
        }
    }

    pub struct Net {
        pub t0: Instant,
        pub now: Instant,
        pub latency: Duration,
        pub routers: Vec<Router>,
        queue: VecDeque<(Instant, usize, u8, Event)>,
        /// Every non-Log action: (time, router, vrid, action).
        pub log: Vec<(Instant, usize, u8, Action)>,
        /// Protocol violations seen (double AddVips, RemoveVips without VIPs).
        pub violations: Vec<String>,
        /// Per VRID, change points of the number of live VIP holders: (vrid, count, since).
        hist: Vec<(u8, usize, Instant)>,
        vrids: Vec<u8>,
    }

    impl Net {
        /// Routers given as (instances, groups of VRIDs). Nothing is started.
        pub fn new(t0: Instant, routers: Vec<(Vec<Params>, Vec<Vec<u8>>)>) -> Self {
            let mut vrids: Vec<u8> = routers
                .iter()
                .flat_map(|(ps, _)| ps.iter().map(|p| p.vrid))
                .collect();
            vrids.sort_unstable();
            vrids.dedup();
            Net {
                t0,
                now: t0,
                latency: Duration::ZERO,
                routers: routers
                    .into_iter()
                    .map(|(params, groups)| Router {
                        machines: params.iter().cloned().map(Machine::new).collect(),
                        params,
                        groups: groups.into_iter().map(Group::new).collect(),
                        alive: true,
                        link_down: Vec::new(),
                        vips: Vec::new(),
                    })
                    .collect(),
                queue: VecDeque::new(),
                log: Vec::new(),
                violations: Vec::new(),
                hist: vrids.iter().map(|&v| (v, 0, t0)).collect(),
                vrids,
            }
        }

        pub fn start(&mut self, r: usize) {
            let vrids: Vec<u8> = self.routers[r].params.iter().map(|p| p.vrid).collect();
            for v in vrids {
                self.inject(r, v, Event::Startup { link_up: true });
            }
        }

        pub fn start_all(&mut self) {
            for r in 0..self.routers.len() {
                self.start(r);
            }
        }

        /// Feeds one event to router `r`'s machine `vrid` now, with group propagation.
        pub fn inject(&mut self, r: usize, vrid: u8, ev: Event) {
            if !self.routers[r].alive {
                return;
            }
            let now = self.now;
            let rt = &mut self.routers[r];
            let Some(k) = index_of(&rt.machines, vrid) else {
                return;
            };
            let acts = step_with_groups(&mut rt.groups, &mut rt.machines, k, ev, now);
            let acts: Vec<(u8, Action)> = acts
                .into_iter()
                .map(|(j, a)| (rt.machines[j].params().vrid, a))
                .collect();
            for (v, a) in acts {
                self.perform(r, v, a);
            }
            self.sample();
        }

        fn perform(&mut self, r: usize, vrid: u8, a: Action) {
            let now = self.now;
            match &a {
                Action::Log(_) => return,
                Action::SendAdvert { priority } => {
                    let rt = &self.routers[r];
                    if let Some(m) = rt.machine(vrid)
                        && !rt.link_down.contains(&vrid)
                    {
                        let ev = Event::Advert {
                            src: m.params().primary,
                            priority: *priority,
                            interval: m.params().advert_interval,
                        };
                        for (o, ort) in self.routers.iter().enumerate() {
                            if o != r
                                && ort.alive
                                && !ort.link_down.contains(&vrid)
                                && ort.machine(vrid).is_some()
                            {
                                self.queue.push_back((now + self.latency, o, vrid, ev));
                            }
                        }
                    }
                }
                Action::AddVips => {
                    let vips = &mut self.routers[r].vips;
                    if vips.contains(&vrid) {
                        self.violations
                            .push(format!("router {r} vrid {vrid}: AddVips twice"));
                    } else {
                        vips.push(vrid);
                    }
                }
                Action::RemoveVips => {
                    let vips = &mut self.routers[r].vips;
                    match vips.iter().position(|&v| v == vrid) {
                        Some(i) => {
                            vips.remove(i);
                        }
                        None => self
                            .violations
                            .push(format!("router {r} vrid {vrid}: RemoveVips without VIPs")),
                    }
                }
                _ => {}
            }
            self.log.push((now, r, vrid, a));
        }

        /// Runs timers and deliveries up to and including `until`, then sets the clock there.
        pub fn run_until(&mut self, until: Instant) {
            loop {
                let msg = self.queue.front().map(|q| q.0);
                let timer = self
                    .routers
                    .iter()
                    .enumerate()
                    .filter(|(_, rt)| rt.alive)
                    .flat_map(|(r, rt)| {
                        rt.machines
                            .iter()
                            .filter_map(move |m| m.next_deadline().map(|d| (d, r, m.params().vrid)))
                    })
                    .min();
                let msg_first = match (msg, timer) {
                    (Some(m), Some((t, _, _))) => m <= t,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                if msg_first {
                    let Some((t, r, v, ev)) = self.queue.front().copied() else {
                        break;
                    };
                    if t > until {
                        break;
                    }
                    self.queue.pop_front();
                    self.now = t;
                    let deliverable =
                        self.routers[r].alive && !self.routers[r].link_down.contains(&v);
                    if deliverable {
                        self.inject(r, v, ev);
                    }
                } else if let Some((t, r, v)) = timer {
                    if t > until {
                        break;
                    }
                    self.now = t;
                    self.inject(r, v, Event::Timer);
                }
            }
            self.now = until;
        }

        pub fn run_for(&mut self, secs: f64) {
            let until = self.now + Duration::from_secs_f64(secs);
            self.run_until(until);
        }

        /// Hard crash: no priority 0, the VIPs stay configured on the dead box.
        pub fn crash(&mut self, r: usize) {
            self.routers[r].alive = false;
            self.queue.retain(|q| q.1 != r);
            self.sample();
        }

        /// Comes back with fresh machines (a restart clears stale VIPs), then starts them.
        pub fn restart(&mut self, r: usize) {
            let rt = &mut self.routers[r];
            rt.machines = rt.params.iter().cloned().map(Machine::new).collect();
            rt.groups = rt
                .groups
                .iter()
                .map(|g| Group::new(g.members().collect()))
                .collect();
            rt.vips.clear();
            rt.link_down.clear();
            rt.alive = true;
            self.start(r);
        }

        /// Link of `vrid` on router `r` goes down. `lose_packets`: the priority-0 advert sent
        /// on the way down is lost too (the VRRP interface itself died) or still gets out (a
        /// tracked interface died).
        pub fn link_down(&mut self, r: usize, vrid: u8, lose_packets: bool) {
            if lose_packets {
                self.routers[r].link_down.push(vrid);
            }
            self.inject(r, vrid, Event::LinkDown);
            if !lose_packets {
                self.routers[r].link_down.push(vrid);
            }
        }

        pub fn link_up(&mut self, r: usize, vrid: u8) {
            self.routers[r].link_down.retain(|&v| v != vrid);
            self.inject(r, vrid, Event::LinkUp);
        }

        pub fn state(&self, r: usize, vrid: u8) -> Option<State> {
            self.routers[r].machine(vrid).map(Machine::state)
        }

        /// Live routers holding the VIPs of `vrid`.
        pub fn holders(&self, vrid: u8) -> Vec<usize> {
            (0..self.routers.len())
                .filter(|&r| self.routers[r].alive && self.routers[r].vips.contains(&vrid))
                .collect()
        }

        fn sample(&mut self) {
            for i in 0..self.vrids.len() {
                let v = self.vrids[i];
                let n = self.holders(v).len();
                let Some(pos) = self.hist.iter().rposition(|h| h.0 == v) else {
                    continue;
                };
                let (_, last, since) = self.hist[pos];
                if n == last {
                    continue;
                }
                if since == self.now {
                    // Several changes within one instant: only the last one lasts.
                    self.hist.remove(pos);
                    let prev = self.hist.iter().rposition(|h| h.0 == v);
                    if prev.is_some_and(|p| self.hist[p].1 == n) {
                        continue;
                    }
                }
                self.hist.push((v, n, self.now));
            }
        }

        /// (holder count, from, to) periods of `vrid` overlapping [from, to], in order.
        pub fn periods(
            &self,
            vrid: u8,
            from: Instant,
            to: Instant,
        ) -> Vec<(usize, Instant, Instant)> {
            let pts: Vec<(usize, Instant)> = self
                .hist
                .iter()
                .filter(|h| h.0 == vrid)
                .map(|h| (h.1, h.2))
                .collect();
            let mut out = Vec::new();
            for (i, &(n, s)) in pts.iter().enumerate() {
                let e = pts.get(i + 1).map_or(to, |p| p.1).min(to);
                let s = s.max(from);
                if s < e {
                    out.push((n, s, e));
                }
            }
            out
        }

        /// From `from` to now: never two live masters of `vrid` for longer than the latency,
        /// and no master-less gap longer than `max_gap`. Returns the longest gap.
        pub fn check_vrid(&self, vrid: u8, from: Instant, max_gap: Duration) -> Duration {
            let mut longest = Duration::ZERO;
            for (n, s, e) in self.periods(vrid, from, self.now) {
                match n {
                    0 => {
                        longest = longest.max(e - s);
                        assert!(
                            e - s <= max_gap,
                            "vrid {vrid}: no master for {:?} from {:?}",
                            e - s,
                            s - self.t0
                        );
                    }
                    1 => {}
                    _ => assert!(
                        e - s <= self.latency,
                        "vrid {vrid}: {n} masters for {:?} from {:?}",
                        e - s,
                        s - self.t0
                    ),
                }
            }
            assert!(self.violations.is_empty(), "{:?}", self.violations);
            longest
        }

        /// Time of the first `action` by router `r` for `vrid` at or after `after`.
        pub fn first(
            &self,
            r: usize,
            vrid: u8,
            action: &Action,
            after: Instant,
        ) -> Option<Instant> {
            self.log
                .iter()
                .find(|(t, rr, v, a)| *t >= after && *rr == r && *v == vrid && a == action)
                .map(|e| e.0)
        }
    }
}
