//! Groups of virtual routers that fail over together: freevrrpd's `vridsdep`, made symmetric
//! like keepalived's `vrrp_sync_group` (vrrp-reference.md §2.3, §3). A firewall with a front
//! and a back leg must hold both VIPs or neither, or traffic is black-holed.
//!
//! Pure bookkeeping over reported states: the caller reports each member's new state and
//! feeds the returned events to the machines ([`step_with_groups`] does both).
//!
//! Rules. A member is a *cause* while it is in Fault, or in Backup after leaving Master on
//! its own (a peer took it). While any member is a cause the group is held: every other
//! member gets [`Event::GroupFault`] once (a master advertises priority 0 and goes Backup, so
//! the peer takes every member after Skew_Time; all stay at effective priority 0). When the
//! last cause clears (the faulted member's link is back, or the demoted member is Master
//! again), the held members get [`Event::GroupRecovered`] and return together: a member whose
//! Master_Down_Timer fired meanwhile takes over at once, the others run their normal timers.
//! A member stopping (Initialize) is neutral: a reload removing one VRID must not pin the rest.

use std::collections::VecDeque;
use std::time::Instant;

use super::fsm::{Action, Event, Machine, State};

#[derive(Debug, Clone)]
struct Member {
    vrid: u8,
    /// Last reported state.
    state: State,
    /// This member holds the group down (see the module doc).
    cause: bool,
    /// We sent it GroupFault and not yet GroupRecovered.
    held: bool,
}

#[derive(Debug, Clone)]
pub struct Group {
    members: Vec<Member>,
}

impl Group {
    /// A group of these VRIDs (duplicates ignored). Use [`groups_from_depends`] to build
    /// groups from the configuration's `depends` lists.
    pub fn new(mut members: Vec<u8>) -> Self {
        members.sort_unstable();
        members.dedup();
        Group {
            members: members
                .into_iter()
                .map(|vrid| Member {
                    vrid,
                    state: State::Initialize,
                    cause: false,
                    held: false,
                })
                .collect(),
        }
    }

    pub fn members(&self) -> impl Iterator<Item = u8> + '_ {
        self.members.iter().map(|m| m.vrid)
    }

    pub fn contains(&self, vrid: u8) -> bool {
        self.members.iter().any(|m| m.vrid == vrid)
    }

    /// Some member is faulted or was taken by the peer: the others are held at priority 0.
    pub fn is_held(&self) -> bool {
        self.members.iter().any(|m| m.cause)
    }

    /// Reports member `vrid`'s state after a step; returns the events to feed to members
    /// (never to one outside the group). Unknown VRIDs and repeated reports are harmless.
    pub fn on_member_state(&mut self, vrid: u8, s: State) -> Vec<(u8, Event)> {
        let Some(m) = self.members.iter_mut().find(|m| m.vrid == vrid) else {
            return Vec::new();
        };
        let prev = m.state;
        m.state = s;
        m.cause = match s {
            State::Fault => true,
            // Recovered from its fault, or stopped: no longer holds the others.
            State::Master | State::Initialize => false,
            State::Backup if prev == State::Fault => false,
            // Left Master on its own (a peer took it). When the group demoted it (held),
            // it is following, not leading: no cause, or the group would never recover.
            State::Backup if prev == State::Master => !m.held,
            State::Backup => m.cause,
        };
        self.settle()
    }

    /// Makes "held" agree with "some member is a cause": pin everyone else, or release all.
    fn settle(&mut self) -> Vec<(u8, Event)> {
        let held = self.is_held();
        let mut out = Vec::new();
        for m in &mut self.members {
            if held && !m.cause && !m.held {
                m.held = true;
                out.push((m.vrid, Event::GroupFault));
            } else if !held && m.held {
                m.held = false;
                out.push((m.vrid, Event::GroupRecovered));
            }
        }
        out
    }
}

/// Groups from each instance's `(vrid, depends)`: the symmetric, transitive closure (if 1
/// depends on 2 they are one group, whoever declared it). Only groups of two or more
/// configured VRIDs are returned; a dependency on an unconfigured VRID is ignored (config
/// validation reports it).
pub fn groups_from_depends(instances: &[(u8, Vec<u8>)]) -> Vec<Group> {
    // Union-find over the 256 possible VRIDs.
    let mut parent: Vec<usize> = (0..256).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let configured = |v: u8| instances.iter().any(|(i, _)| *i == v);
    for (vrid, deps) in instances {
        for &d in deps.iter().filter(|&&d| configured(d)) {
            let (a, b) = (
                root(&mut parent, usize::from(*vrid)),
                root(&mut parent, usize::from(d)),
            );
            parent[a] = b;
        }
    }
    let mut by_root: Vec<(usize, Vec<u8>)> = Vec::new();
    for (vrid, _) in instances {
        let r = root(&mut parent, usize::from(*vrid));
        match by_root.iter_mut().find(|(k, _)| *k == r) {
            Some((_, v)) => v.push(*vrid),
            None => by_root.push((r, vec![*vrid])),
        }
    }
    by_root
        .into_iter()
        .map(|(_, v)| Group::new(v))
        .filter(|g| g.members.len() >= 2)
        .collect()
}

/// Feeds `ev` to machine `machines[k]`, reports every resulting state change to its group and
/// feeds the group's events back, until nothing changes. Returns every action with the index
/// of its machine, in order. The one place the group cascade is decided: the speaker and the
/// simulation both carry out what this returns.
///
/// Machines are addressed by index because one VRID may run on several interfaces; groups
/// name VRIDs, so a group's event goes to the first machine with that VRID (as `depends`
/// names it). Out-of-range indexes are ignored.
pub fn step_with_groups(
    groups: &mut [Group],
    machines: &mut [Machine],
    k: usize,
    ev: Event,
    now: Instant,
) -> Vec<(usize, Action)> {
    let mut queue = VecDeque::from([(k, ev)]);
    let mut out = Vec::new();
    // Each member is held and released at most once per cause change, so this budget is
    // never reached; it makes termination evident even with a buggy report sequence.
    let mut budget = 16 + 4 * machines.len() * machines.len();
    while let Some((k, e)) = queue.pop_front() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let Some(m) = machines.get_mut(k) else {
            continue;
        };
        let (vrid, before) = (m.params().vrid, m.state());
        out.extend(m.step(e, now).into_iter().map(|a| (k, a)));
        let after = m.state();
        if after == before {
            continue;
        }
        let Some(g) = groups.iter_mut().find(|g| g.contains(vrid)) else {
            continue;
        };
        for (member, ev) in g.on_member_state(vrid, after) {
            if let Some(j) = index_of(machines, member) {
                queue.push_back((j, ev));
            }
        }
    }
    out
}

/// The index of the first machine running `vrid`.
pub fn index_of(machines: &[Machine], vrid: u8) -> Option<usize> {
    machines.iter().position(|m| m.params().vrid == vrid)
}

#[cfg(test)]
mod tests {
    use super::super::fsm::{Params, Version};
    use super::super::sim::Net;
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    const EPS: Duration = Duration::from_millis(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn p(vrid: u8, version: Version, priority: u8, interval_ms: u64, last: u8) -> Params {
        Params {
            advert_interval: Duration::from_millis(interval_ms),
            ..Params::new(vrid, version, priority, ip(last))
        }
    }

    fn evs(v: &[(u8, Event)]) -> Vec<(u8, Event)> {
        v.to_vec()
    }

    /// [`step_with_groups`] addressed by VRID, its actions named by VRID.
    fn step(
        groups: &mut [Group],
        ms: &mut [Machine],
        vrid: u8,
        ev: Event,
        now: Instant,
    ) -> Vec<(u8, Action)> {
        let k = index_of(ms, vrid).expect("a configured VRID");
        let out = step_with_groups(groups, ms, k, ev, now);
        out.into_iter()
            .map(|(j, a)| (ms[j].params().vrid, a))
            .collect()
    }

    // ===== bookkeeping =====

    #[test]
    fn fault_holds_the_others_until_recovery() {
        let mut g = Group::new(vec![3, 1, 2, 2]);
        assert_eq!(g.members().collect::<Vec<_>>(), vec![1, 2, 3]);
        for v in [1, 2, 3] {
            assert!(g.on_member_state(v, State::Master).is_empty());
        }
        assert_eq!(
            g.on_member_state(2, State::Fault),
            evs(&[(1, Event::GroupFault), (3, Event::GroupFault)])
        );
        assert!(g.is_held());
        // The held ones follow to Backup: that is not a new cause.
        assert!(g.on_member_state(1, State::Backup).is_empty());
        assert!(g.on_member_state(3, State::Backup).is_empty());
        assert!(
            g.on_member_state(2, State::Fault).is_empty(),
            "repeated report"
        );
        // A second fault while held: nothing new; both must clear before release.
        assert!(g.on_member_state(1, State::Fault).is_empty());
        // Member 2 recovers while 1 is down: now 2 is held too.
        assert_eq!(
            g.on_member_state(2, State::Backup),
            evs(&[(2, Event::GroupFault)])
        );
        assert!(g.is_held());
        assert_eq!(
            g.on_member_state(1, State::Backup),
            evs(&[
                (1, Event::GroupRecovered),
                (2, Event::GroupRecovered),
                (3, Event::GroupRecovered)
            ])
        );
        assert!(!g.is_held());
    }

    #[test]
    fn leaving_master_holds_the_others_until_it_is_master_again() {
        let mut g = Group::new(vec![1, 2]);
        g.on_member_state(1, State::Master);
        g.on_member_state(2, State::Master);
        // A peer took VRID 1: VRID 2 must follow (priority 0) so the peer takes both.
        assert_eq!(
            g.on_member_state(1, State::Backup),
            evs(&[(2, Event::GroupFault)])
        );
        assert!(g.on_member_state(2, State::Backup).is_empty());
        assert!(g.on_member_state(1, State::Backup).is_empty(), "still held");
        assert_eq!(
            g.on_member_state(1, State::Master),
            evs(&[(2, Event::GroupRecovered)])
        );
    }

    #[test]
    fn startup_and_stop_are_neutral() {
        let mut g = Group::new(vec![1, 2]);
        // Initialize -> Backup is not leaving Master.
        assert!(g.on_member_state(1, State::Backup).is_empty());
        assert!(g.on_member_state(2, State::Backup).is_empty());
        g.on_member_state(1, State::Master);
        g.on_member_state(2, State::Master);
        // A master stopped (Shutdown already sent priority 0): the other stays.
        assert!(g.on_member_state(1, State::Initialize).is_empty());
        // A faulted member removed by a reload releases the others.
        assert_eq!(
            g.on_member_state(2, State::Fault),
            evs(&[(1, Event::GroupFault)])
        );
        assert_eq!(
            g.on_member_state(2, State::Initialize),
            evs(&[(1, Event::GroupRecovered)])
        );
        assert!(
            g.on_member_state(9, State::Fault).is_empty(),
            "not a member"
        );
        assert!(!g.contains(9));
    }

    #[test]
    fn depends_build_symmetric_transitive_groups() {
        let gs = groups_from_depends(&[
            (1, vec![2]),
            (2, vec![]),
            (3, vec![4]),
            (4, vec![5, 99]), // 99 is not configured: ignored
            (5, vec![]),
            (6, vec![]),
            (7, vec![7]),
        ]);
        let sets: Vec<Vec<u8>> = gs.iter().map(|g| g.members().collect()).collect();
        assert_eq!(sets, vec![vec![1, 2], vec![3, 4, 5]]);
        // Declared on either side, the result is the same.
        let a = groups_from_depends(&[(1, vec![]), (2, vec![1])]);
        assert_eq!(a[0].members().collect::<Vec<_>>(), vec![1, 2]);
    }

    // ===== with machines =====

    /// One router, VRIDs 1 and 2 at priority 200, both master, grouped.
    fn both_masters() -> (Vec<Group>, Vec<Machine>, Instant) {
        let t0 = Instant::now();
        let mut groups = vec![Group::new(vec![1, 2])];
        let mut ms = vec![
            Machine::new(p(1, Version::V2, 200, 1000, 1)),
            Machine::new(p(2, Version::V2, 200, 1000, 1)),
        ];
        for v in [1, 2] {
            step(
                &mut groups,
                &mut ms,
                v,
                Event::Startup { link_up: true },
                t0,
            );
        }
        let t = ms[0].next_deadline().unwrap();
        for v in [1, 2] {
            step(&mut groups, &mut ms, v, Event::Timer, t);
        }
        assert!(ms.iter().all(|m| m.state() == State::Master));
        (groups, ms, t)
    }

    fn no_logs(v: Vec<(u8, Action)>) -> Vec<(u8, Action)> {
        v.into_iter()
            .filter(|(_, a)| !matches!(a, Action::Log(_)))
            .collect()
    }

    #[test]
    fn one_faults_the_other_advertises_zero_at_once_and_both_return() {
        let (mut groups, mut ms, t) = both_masters();
        let down = t + Duration::from_millis(10);
        let out = no_logs(step(&mut groups, &mut ms, 1, Event::LinkDown, down));
        assert_eq!(
            out,
            vec![
                (1, Action::SendAdvert { priority: 0 }),
                (1, Action::RemoveVips),
                (1, Action::EnteredFault),
                (2, Action::SendAdvert { priority: 0 }),
                (2, Action::RemoveVips),
                (2, Action::BecameBackup),
            ]
        );
        assert_eq!(ms[1].effective_priority(), 0);
        // Nobody else around: 2's timer runs out, but it stays backup while 1 is faulted.
        let d = ms[1].next_deadline().unwrap();
        let out = no_logs(step(&mut groups, &mut ms, 2, Event::Timer, d));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(ms[1].state(), State::Backup);
        // 1's link returns: 1 starts as backup, 2 is released and, with no master around,
        // takes over at once; 1 follows when its own timer runs out (no peer to ask).
        let up = d + Duration::from_secs(10);
        let out = no_logs(step(&mut groups, &mut ms, 1, Event::LinkUp, up));
        assert_eq!(out[0], (1, Action::BecameBackup));
        assert!(out.contains(&(2, Action::BecameMaster)));
        assert_eq!(ms[1].effective_priority(), 200);
        let d1 = ms[0].next_deadline().unwrap();
        step(&mut groups, &mut ms, 1, Event::Timer, d1);
        assert!(ms.iter().all(|m| m.state() == State::Master));
        assert!(!groups[0].is_held());
    }

    #[test]
    fn a_member_taken_by_a_peer_takes_the_group_along() {
        let (mut groups, mut ms, t) = both_masters();
        let adv = Event::Advert {
            src: ip(9),
            priority: 250,
            interval: Duration::from_secs(1),
        };
        let out = no_logs(step(&mut groups, &mut ms, 1, adv, t + EPS));
        assert_eq!(
            out,
            vec![
                (1, Action::RemoveVips),
                (1, Action::BecameBackup),
                (2, Action::SendAdvert { priority: 0 }),
                (2, Action::RemoveVips),
                (2, Action::BecameBackup),
            ]
        );
        // The peer dies: 2's timer (held) and then 1's run out; 1 takes over and brings 2.
        let d2 = ms[1].next_deadline().unwrap();
        step(&mut groups, &mut ms, 2, Event::Timer, d2);
        assert_eq!(ms[1].state(), State::Backup);
        let d1 = ms[0].next_deadline().unwrap();
        let out = no_logs(step(&mut groups, &mut ms, 1, Event::Timer, d1));
        assert!(
            out.contains(&(1, Action::BecameMaster)) && out.contains(&(2, Action::BecameMaster))
        );
    }

    // ===== two routers, a group pair =====

    /// A (10.0.0.1, priority 200) and B (10.0.0.2, priority 100), VRIDs 1 and 2 grouped.
    fn pair(version: Version, interval_ms: u64) -> Net {
        let mk = |prio, last| {
            (
                vec![
                    p(1, version, prio, interval_ms, last),
                    p(2, version, prio, interval_ms, last),
                ],
                vec![vec![1, 2]],
            )
        };
        let mut net = Net::new(Instant::now(), vec![mk(200, 1), mk(100, 2)]);
        net.start_all();
        net.run_for(10.0);
        assert_eq!((net.holders(1), net.holders(2)), (vec![0], vec![0]));
        net
    }

    fn mdi(net: &Net, r: usize) -> Duration {
        Machine::new(net.routers[r].params[0].clone()).master_down_interval()
    }

    fn skew(net: &Net, r: usize) -> Duration {
        Machine::new(net.routers[r].params[0].clone()).skew_time()
    }

    #[test]
    fn net_group_pair_fails_over_together_and_returns_together() {
        for (ver, iv) in [(Version::V2, 1000), (Version::V3, 100)] {
            for lose in [false, true] {
                let mut net = pair(ver, iv);
                let conv = net.now;
                net.run_for(1.5);
                // A's VRID 1 link fails. Tracked-interface case (lose = false): both
                // priority-0 adverts get out and B takes both after Skew_Time. VRRP-link case:
                // VRID 1's goes nowhere, so B takes 2 after Skew_Time and 1 after at most
                // Master_Down_Interval.
                let down = net.now;
                net.link_down(0, 1, lose);
                assert_eq!(
                    net.state(0, 2),
                    Some(State::Backup),
                    "A's VRID 2 follows at once"
                );
                net.run_for(10.0);
                assert_eq!((net.holders(1), net.holders(2)), (vec![1], vec![1]));
                let t1 = net.first(1, 1, &Action::BecameMaster, down).unwrap() - down;
                let t2 = net.first(1, 2, &Action::BecameMaster, down).unwrap() - down;
                assert_eq!(t2, skew(&net, 1), "{ver:?} lose={lose}");
                let bound1 = if lose { mdi(&net, 1) } else { skew(&net, 1) };
                assert!(t1 <= bound1 + EPS, "{ver:?} lose={lose}: {t1:?}");
                // A's VRID 2 stays backup although it outranks B, while VRID 1 is faulted.
                net.run_for(60.0);
                assert_eq!(net.holders(2), vec![1]);
                assert_eq!(net.routers[0].machines[1].effective_priority(), 0);
                // Recovery: both return to A together (preempt), within A's MDI.
                let up = net.now;
                net.link_up(0, 1);
                net.run_for(20.0);
                assert_eq!(
                    (net.holders(1), net.holders(2)),
                    (vec![0], vec![0]),
                    "{ver:?} lose={lose}"
                );
                let r1 = net.first(0, 1, &Action::BecameMaster, up).unwrap();
                let r2 = net.first(0, 2, &Action::BecameMaster, up).unwrap();
                let interval = Duration::from_millis(iv);
                assert!(
                    r1.max(r2) - up <= mdi(&net, 0) + EPS,
                    "{:?}",
                    r1.max(r2) - up
                );
                assert!(
                    r1.max(r2) - r1.min(r2) <= interval + EPS,
                    "apart by {:?}",
                    r1.max(r2) - r1.min(r2)
                );
                let gap = mdi(&net, 1) + EPS;
                net.check_vrid(1, conv, gap);
                net.check_vrid(2, conv, gap);
            }
        }
    }

    #[test]
    fn net_group_of_three_follows_one_link_and_returns_together() {
        // A (200) and B (100), VRIDs 1, 2 and 3 in one group, 1 s adverts.
        let mk = |prio, last| {
            let ps = (1..=3)
                .map(|v| p(v, Version::V2, prio, 1000, last))
                .collect();
            (ps, vec![vec![1, 2, 3]])
        };
        let mut net = Net::new(Instant::now(), vec![mk(200, 1), mk(100, 2)]);
        net.start_all();
        net.run_for(10.0);
        let conv = net.now;
        for v in 1..=3 {
            assert_eq!(net.holders(v), vec![0], "vrid {v}");
        }
        // A tracked interface of VRID 2 fails: the cascade demotes 1 and 3 in the same step,
        // and B takes all three after its Skew_Time.
        let down = net.now;
        net.link_down(0, 2, false);
        for v in [1, 3] {
            assert_eq!(
                net.state(0, v),
                Some(State::Backup),
                "vrid {v} follows at once"
            );
        }
        net.run_for(30.0);
        for v in 1..=3 {
            assert_eq!(net.holders(v), vec![1], "vrid {v}");
            let took = net.first(1, v, &Action::BecameMaster, down).unwrap() - down;
            assert_eq!(took, skew(&net, 1), "vrid {v}");
        }
        // Back up: all three return to A (preempt) within A's Master_Down_Interval.
        let up = net.now;
        net.link_up(0, 2);
        net.run_for(20.0);
        for v in 1..=3 {
            assert_eq!(net.holders(v), vec![0], "vrid {v}");
            let back = net.first(0, v, &Action::BecameMaster, up).unwrap() - up;
            assert!(back <= mdi(&net, 0) + EPS, "vrid {v}: {back:?}");
        }
        for v in 1..=3 {
            net.check_vrid(v, conv, mdi(&net, 1) + EPS);
        }
    }

    #[test]
    fn machines_are_addressed_by_index_so_one_vrid_may_run_on_two_interfaces() {
        // VRID 1 on two interfaces (two machines), no group: an event reaches only its own.
        let t0 = Instant::now();
        let mut ms = vec![
            Machine::new(p(1, Version::V2, 100, 1000, 1)),
            Machine::new(p(1, Version::V2, 100, 1000, 2)),
        ];
        let out = step_with_groups(&mut [], &mut ms, 1, Event::Startup { link_up: true }, t0);
        assert!(out.iter().all(|(k, _)| *k == 1), "{out:?}");
        assert_eq!(
            (ms[0].state(), ms[1].state()),
            (State::Initialize, State::Backup)
        );
        assert!(step_with_groups(&mut [], &mut ms, 2, Event::Timer, t0).is_empty());
    }

    #[test]
    fn net_group_pair_crash_and_restart() {
        let mut net = pair(Version::V3, 100);
        let conv = net.now;
        for k in 0..4u32 {
            net.run_for(1.0 + 0.013 * f64::from(k));
            let crash = net.now;
            net.crash(0);
            net.run_for(5.0);
            assert_eq!((net.holders(1), net.holders(2)), (vec![1], vec![1]));
            for v in [1, 2] {
                let took = net.first(1, v, &Action::BecameMaster, crash).unwrap() - crash;
                assert!(took <= mdi(&net, 1) + EPS, "vrid {v}: {took:?}");
            }
            net.restart(0);
            net.run_for(5.0);
            assert_eq!((net.holders(1), net.holders(2)), (vec![0], vec![0]));
            // B is backup for both; its group is held by the member A took first, so a
            // second crash must still release it.
            assert!(net.routers[1].groups[0].is_held());
        }
        net.check_vrid(1, conv, mdi(&net, 1) + EPS);
        net.check_vrid(2, conv, mdi(&net, 1) + EPS);
    }

    #[test]
    fn net_group_graceful_shutdown_moves_both_in_skew_time() {
        let mut net = pair(Version::V2, 1000);
        let stop = net.now;
        for v in [1, 2] {
            net.inject(0, v, Event::Shutdown);
        }
        net.run_for(5.0);
        for v in [1, 2] {
            assert_eq!(
                net.first(1, v, &Action::BecameMaster, stop).unwrap() - stop,
                skew(&net, 1)
            );
        }
    }
}

#[cfg(test)]
mod props {
    use super::super::fsm::{Params, Version};
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn arb_state() -> impl Strategy<Value = State> {
        prop_oneof![
            Just(State::Initialize),
            Just(State::Backup),
            Just(State::Master),
            Just(State::Fault)
        ]
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Startup { link_up: true }),
            Just(Event::Shutdown),
            (prop_oneof![Just(0u8), Just(100u8), Just(250u8)], 1u8..=3).prop_map(
                |(priority, l)| {
                    Event::Advert {
                        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, l)),
                        priority,
                        interval: Duration::from_secs(1),
                    }
                }
            ),
            Just(Event::Timer),
            Just(Event::Timer),
            Just(Event::LinkDown),
            Just(Event::LinkUp),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary (even impossible) report sequences: events only to members, GroupFault
        /// and GroupRecovered alternate per member, and held <=> someone is faulted or was
        /// taken, with every reported master held meanwhile.
        #[test]
        fn reports_keep_the_bookkeeping_consistent(
            reports in prop::collection::vec((1u8..=4, arb_state()), 0..100)
        ) {
            let mut g = Group::new(vec![1, 2, 3]);
            let mut held = [false; 256];
            let mut last = [State::Initialize; 256];
            for (v, s) in reports {
                for (m, e) in g.on_member_state(v, s) {
                    prop_assert!(g.contains(m));
                    let i = usize::from(m);
                    match e {
                        Event::GroupFault => { prop_assert!(!held[i]); held[i] = true; }
                        Event::GroupRecovered => { prop_assert!(held[i]); held[i] = false; }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                if g.contains(v) { last[usize::from(v)] = s; }
                if !g.is_held() { prop_assert!(held.iter().all(|h| !h)); }
                if (1..=3).any(|m| last[m] == State::Fault) { prop_assert!(g.is_held()); }
                if g.is_held() {
                    for m in 1..=3 {
                        if last[m] == State::Master { prop_assert!(held[m], "master {} not held", m); }
                    }
                }
            }
        }

        /// Real machines under random events: the group never has a master while any member
        /// is faulted, and never while it is held.
        #[test]
        fn machines_fail_together(
            prios in prop::collection::vec(prop_oneof![Just(100u8), Just(200u8), Just(255u8)], 3),
            ops in prop::collection::vec((1u8..=3, arb_event(), 0u64..2000), 0..150)
        ) {
            let mut groups = vec![Group::new(vec![1, 2, 3])];
            let mut ms: Vec<Machine> = prios.iter().enumerate().map(|(i, &pr)| {
                Machine::new(Params::new(i as u8 + 1, Version::V2, pr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))))
            }).collect();
            let mut now = Instant::now();
            for (v, ev, wait) in ops {
                now += Duration::from_millis(wait);
                let i = usize::from(v - 1);
                let ev = if ev == Event::Timer {
                    if let Some(d) = ms[i].next_deadline() { now = now.max(d); }
                    Event::Timer
                } else { ev };
                step_with_groups(&mut groups, &mut ms, i, ev, now);
                let fault = ms.iter().any(|m| m.state() == State::Fault);
                let master = ms.iter().any(|m| m.state() == State::Master);
                prop_assert!(!(fault && master), "{:?}", ms.iter().map(Machine::state).collect::<Vec<_>>());
                prop_assert!(!(groups[0].is_held() && master));
            }
        }
    }
}
