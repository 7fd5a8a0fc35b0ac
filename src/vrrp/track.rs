//! `track`: how the balancers' servers move a VRRP instance's priority, as keepalived's
//! `track_script` weights do. Pure: (configured priority, track list, what the balancers
//! report) -> the tracked priority and why. No I/O, no clock; the speaker feeds the result to
//! the machine as `Event::Priority`.
//!
//! A track *fails* while its balancer has no server that can take a new client (the
//! balancer's count, see `balancer::Availability`). A negative weight is added while the
//! track fails, a positive one while it does not. The sum is clamped to 1..=254, and the
//! address owner (255) keeps 255 (keepalived's `vrrp_set_effective_priority`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::fsm::PRIORITY_OWNER;
use crate::config::Track;

/// What one balancer reports: its servers that can take a new client now, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pool {
    pub up: usize,
    pub servers: usize,
}

/// Every balancer's report, by name.
pub type Pools = BTreeMap<String, Pool>;

/// One track as `show vrrp` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackStatus {
    pub balancer: String,
    pub weight: i16,
    /// Servers that can take a new client, and configured (None: no report, the track holds).
    pub up: Option<usize>,
    pub servers: Option<usize>,
    /// No server of the balancer can take a new client.
    pub failed: bool,
    /// The weight counted in the priority now (0 when it does not apply).
    pub applied: i16,
}

/// The tracked priority of one instance, and its tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub priority: u8,
    pub tracks: Vec<TrackStatus>,
}

/// The priority `base` moved by `tracks` as `pools` say.
pub fn tracked(base: u8, tracks: &[Track], pools: &Pools) -> Tracked {
    let tracks: Vec<TrackStatus> = tracks
        .iter()
        .map(|t| {
            let pool = pools.get(&t.balancer);
            // No report (a balancer not running): nothing is known to have failed.
            let failed = pool.is_some_and(|p| p.up == 0);
            let applies = if t.weight < 0 { failed } else { !failed };
            TrackStatus {
                balancer: t.balancer.clone(),
                weight: t.weight,
                up: pool.map(|p| p.up),
                servers: pool.map(|p| p.servers),
                failed,
                applied: if applies { t.weight } else { 0 },
            }
        })
        .collect();
    let priority = if base == PRIORITY_OWNER {
        base
    } else {
        let sum: i32 = tracks.iter().map(|t| i32::from(t.applied)).sum();
        (i32::from(base) + sum).clamp(1, i32::from(PRIORITY_OWNER) - 1) as u8
    };
    Tracked { priority, tracks }
}

/// Why the priority is what it is, for `show vrrp`: the tracks that apply, e.g.
/// `www: no healthy server -60`; empty when none does.
pub fn reasons(tracks: &[TrackStatus]) -> Vec<String> {
    tracks
        .iter()
        .filter(|t| t.applied != 0)
        .map(|t| {
            if t.failed {
                format!("{}: no healthy server {:+}", t.balancer, t.applied)
            } else {
                format!(
                    "{}: {} of {} servers healthy {:+}",
                    t.balancer,
                    t.up.unwrap_or(0),
                    t.servers.unwrap_or(0),
                    t.applied
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(balancer: &str, weight: i16) -> Track {
        Track {
            balancer: balancer.into(),
            weight,
        }
    }

    fn pools(v: &[(&str, usize, usize)]) -> Pools {
        v.iter()
            .map(|(n, up, servers)| {
                (
                    n.to_string(),
                    Pool {
                        up: *up,
                        servers: *servers,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_negative_weight_applies_while_no_server_is_up() {
        let t = [track("www", -60)];
        assert_eq!(tracked(150, &t, &pools(&[("www", 3, 3)])).priority, 150);
        assert_eq!(tracked(150, &t, &pools(&[("www", 1, 3)])).priority, 150);
        let down = tracked(150, &t, &pools(&[("www", 0, 3)]));
        assert_eq!(down.priority, 90);
        assert_eq!(reasons(&down.tracks), ["www: no healthy server -60"]);
        assert!(down.tracks[0].failed);
        // A balancer without servers has none up.
        assert_eq!(tracked(150, &t, &pools(&[("www", 0, 0)])).priority, 90);
    }

    #[test]
    fn a_positive_weight_applies_while_a_server_is_up() {
        let t = [track("www", 20)];
        let up = tracked(100, &t, &pools(&[("www", 2, 3)]));
        assert_eq!(up.priority, 120);
        assert_eq!(reasons(&up.tracks), ["www: 2 of 3 servers healthy +20"]);
        assert_eq!(tracked(100, &t, &pools(&[("www", 0, 3)])).priority, 100);
    }

    #[test]
    fn weights_add_up_and_clamp_to_1_through_254() {
        let t = [track("www", -60), track("app", -60)];
        let both = pools(&[("www", 0, 3), ("app", 0, 2)]);
        let r = tracked(100, &t, &both);
        assert_eq!(r.priority, 1, "100 - 120, clamped");
        assert_eq!(
            reasons(&r.tracks),
            ["www: no healthy server -60", "app: no healthy server -60"]
        );
        assert_eq!(
            tracked(250, &[track("www", 254)], &pools(&[("www", 1, 1)])).priority,
            254
        );
        // The owner keeps 255 (config refuses a track on it; this holds anyway).
        assert_eq!(tracked(255, &t, &both).priority, 255);
    }

    #[test]
    fn a_balancer_without_a_report_fails_nothing() {
        let r = tracked(150, &[track("www", -60), track("app", 10)], &Pools::new());
        assert_eq!(r.priority, 160);
        assert_eq!((r.tracks[0].up, r.tracks[0].failed), (None, false));
        assert!(reasons(&[]).is_empty());
    }
}
