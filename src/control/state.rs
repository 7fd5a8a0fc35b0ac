//! The state file: runtime changes (blacklists with their expiry, weights, limits, drains,
//! address changes, pen's mode settings, maint and check disable) and each server's health
//! state kept across restarts, like HAProxy's server-state file, so a supervisor restart in the
//! middle of an upgrade does not put a blacklisted or down server back. Written atomically
//! (temporary file + rename).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::balancer::pool::ServerState;
use crate::balancer::{Balancer, State};
use crate::config::{self, Algorithm, Check};
use crate::health::{Phase, Tracker};

#[derive(Serialize, Deserialize, Debug)]
struct Saved {
    version: u32,
    balancers: Vec<SavedBalancer>,
}

#[derive(Serialize, Deserialize, Debug)]
struct SavedBalancer {
    name: String,
    sticky: bool,
    algorithm: String,
    stubborn: bool,
    blacklist_ms: u64,
    connect_timeout_ms: u64,
    idle_timeout_ms: u64,
    tracking_ms: u64,
    servers: Vec<SavedServer>,
    /// The emergency server's last address, when it is given by name.
    #[serde(default)]
    emergency_addr: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
struct SavedServer {
    index: usize,
    /// The address the config gave this index (None for slots added at run time), so a
    /// changed config is noticed instead of applying state to the wrong server.
    config_addr: Option<String>,
    addr: String,
    max: u32,
    hard: u32,
    weight: u32,
    prio: i32,
    draining: bool,
    blacklisted_until_unix_ms: Option<u64>,
    // Fields added later default to a fresh server's, so older files still load.
    /// `server N maint`.
    #[serde(default)]
    maint: bool,
    /// `server N check disable`.
    #[serde(default)]
    check_disabled: bool,
    /// The checks' verdict; None before the first result (`unchecked`).
    #[serde(default)]
    health: Option<SavedHealth>,
    /// A server made from an SRV answer: where from.
    #[serde(default)]
    srv: Option<SavedSrv>,
}

/// An SRV-made server's origin: restored only while the balancer's `servers_srv` is `name`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct SavedSrv {
    name: String,
    target: String,
    port: u16,
    priority: u16,
    /// The record's weight.
    weight: u16,
    obsolete: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct SavedHealth {
    /// "up" or "down".
    phase: String,
    /// Failures in a row while up (falling), successes in a row while down (rising).
    count: u32,
    /// When the server entered its phase, wall-clock.
    since_unix_ms: u64,
}

impl SavedHealth {
    fn of(t: &Tracker, now: Instant, wall: SystemTime) -> Option<SavedHealth> {
        if !t.checked {
            return None;
        }
        let (phase, count) = match t.phase {
            Phase::Up { fails } => ("up", fails),
            Phase::Down { oks } => ("down", oks),
        };
        let since = wall
            .checked_sub(now.saturating_duration_since(t.since))
            .unwrap_or(UNIX_EPOCH);
        Some(SavedHealth {
            phase: phase.into(),
            count,
            since_unix_ms: unix_ms(since),
        })
    }

    /// Put the saved verdict back: a server that was down stays down until `rise` checks pass.
    fn apply(&self, t: &mut Tracker, now: Instant, wall_ms: u64) {
        t.phase = match self.phase.as_str() {
            "up" => Phase::Up { fails: self.count },
            "down" => Phase::Down { oks: self.count },
            _ => return,
        };
        t.checked = true;
        let ago = Duration::from_millis(wall_ms.saturating_sub(self.since_unix_ms));
        t.since = now.checked_sub(ago).unwrap_or(now);
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state file's text for the balancers as they are now.
pub fn snapshot(balancers: &[Arc<Balancer>]) -> String {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut saved = Saved {
        version: 1,
        balancers: Vec::new(),
    };
    for lb in balancers {
        let st = lb.lock();
        let s = &st.settings;
        let servers = st
            .servers
            .iter()
            .enumerate()
            .map(|(i, sv)| SavedServer {
                index: i,
                config_addr: match sv.srv {
                    Some(_) => None,
                    None => lb.cfg.servers.get(i).map(config::Server::label),
                },
                // An unresolved server by name has no address to start from.
                addr: if sv.unresolved {
                    SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), sv.cfg.addr.port())
                } else {
                    sv.cfg.addr
                }
                .to_string(),
                max: sv.cfg.max,
                hard: sv.cfg.hard,
                weight: sv.cfg.weight,
                prio: sv.cfg.prio,
                draining: sv.draining,
                blacklisted_until_unix_ms: sv.blacklist_left(now).map(|d| unix_ms(wall + d)),
                maint: sv.health.maint,
                check_disabled: sv.health.disabled,
                health: SavedHealth::of(&sv.health, now, wall),
                srv: sv
                    .srv
                    .as_ref()
                    .zip(st.srv_name.as_ref())
                    .map(|(o, name)| SavedSrv {
                        name: name.clone(),
                        target: o.target.clone(),
                        port: o.port,
                        priority: o.priority,
                        weight: o.weight,
                        obsolete: o.obsolete,
                    }),
            })
            .collect();
        let emergency_addr = st
            .emergency
            .as_ref()
            .filter(|e| e.cfg.name.is_some() && !e.unresolved)
            .map(|e| e.cfg.addr.to_string());
        saved.balancers.push(SavedBalancer {
            name: lb.cfg.name.clone(),
            sticky: s.sticky,
            algorithm: s.base.name().to_string(),
            stubborn: s.stubborn,
            blacklist_ms: s.blacklist.as_millis() as u64,
            connect_timeout_ms: s.connect_timeout.as_millis() as u64,
            idle_timeout_ms: s.idle_timeout.as_millis() as u64,
            tracking_ms: st.clients.tracking().as_millis() as u64,
            servers,
            emergency_addr,
        });
    }
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_string_pretty(&saved).unwrap_or_default()
}

/// Write the state file atomically (a temporary file, synced, then renamed). Blocking.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Apply a saved state to freshly built balancers. A missing file is a first start; a broken
/// one is reported and ignored (the config alone is a safe state).
pub fn restore(path: &Path, balancers: &[Arc<Balancer>]) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(target: "ctl", "cannot read state file {}: {e}", path.display());
            return;
        }
    };
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            warn!(target: "ctl", "state file {} is not valid ({e}); starting from the config", path.display());
            return;
        }
    };
    let now = Instant::now();
    let wall_ms = unix_ms(SystemTime::now());
    for sb in saved.balancers {
        let Some(lb) = balancers.iter().find(|b| b.cfg.name == sb.name) else {
            info!(target: "ctl", "state for balancer {:?} ignored: not in the config", sb.name);
            continue;
        };
        let mut st = lb.lock();
        st.settings.sticky = sb.sticky;
        if let Some((_, a)) = Algorithm::ALL.iter().find(|(n, _)| *n == sb.algorithm) {
            st.settings.base = *a;
        }
        st.settings.stubborn = sb.stubborn;
        st.settings.blacklist = Duration::from_millis(sb.blacklist_ms);
        if sb.connect_timeout_ms > 0 {
            st.settings.connect_timeout = Duration::from_millis(sb.connect_timeout_ms);
        }
        st.settings.idle_timeout = Duration::from_millis(sb.idle_timeout_ms);
        st.clients
            .set_tracking(Duration::from_millis(sb.tracking_ms));
        let mut restored = 0;
        for ss in sb.servers {
            restored += usize::from(restore_server(lb, &mut st, ss, now, wall_ms));
        }
        restore_emergency(&mut st, sb.emergency_addr.as_deref());
        st.reselect();
        lb.publish_availability(&st, now);
        info!(target: "ctl", balancer = %lb.cfg.name, "restored runtime state of {restored} server(s) from {}", path.display());
    }
}

/// A named emergency server starts from its last address (as a server by name does).
fn restore_emergency(st: &mut State, saved: Option<&str>) {
    let (Some(e), Some(addr)) = (
        st.emergency.as_mut(),
        saved.and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        return;
    };
    if e.cfg.name.is_some() && e.cfg.addr.port() == addr.port() && !addr.ip().is_unspecified() {
        e.cfg.addr = addr;
        e.unresolved = false;
    }
}

/// Put a saved SRV-made server back, at its index when that slot is free; where it went
/// (None: skipped, the balancer's `servers_srv` changed).
fn restore_srv_server(
    st: &mut State,
    ss: &SavedServer,
    saved: &SavedSrv,
    addr: SocketAddr,
) -> Option<usize> {
    if st.srv_name.as_deref() != Some(saved.name.as_str()) {
        return None;
    }
    let mut sv = ServerState::new(config::Server {
        addr,
        name: Some(saved.target.clone()),
        max: ss.max,
        hard: ss.hard,
        weight: ss.weight,
        prio: ss.prio,
        health: None,
    });
    sv.unresolved = addr.ip().is_unspecified();
    sv.srv = Some(crate::balancer::pool::SrvOrigin {
        target: saved.target.clone(),
        port: saved.port,
        priority: saved.priority,
        weight: saved.weight,
        obsolete: saved.obsolete,
    });
    while st.servers.len() < ss.index {
        st.servers.push(ServerState::empty());
    }
    let free = st
        .servers
        .get(ss.index)
        .is_some_and(|s| s.cfg.addr.port() == 0);
    if free {
        st.servers[ss.index] = sv;
        Some(ss.index)
    } else {
        st.servers.push(sv);
        Some(st.servers.len() - 1)
    }
}

/// Apply one server's saved state (false: skipped, its config changed).
fn restore_server(
    lb: &Balancer,
    st: &mut State,
    ss: SavedServer,
    now: Instant,
    wall_ms: u64,
) -> bool {
    let Ok(addr) = ss.addr.parse::<SocketAddr>() else {
        return false;
    };
    if let Some(saved) = &ss.srv {
        let Some(i) = restore_srv_server(st, &ss, saved, addr) else {
            info!(target: "ctl", balancer = %lb.cfg.name,
                "state of server {} ignored: servers_srv is no longer {:?}", saved.target, saved.name);
            return false;
        };
        // An SRV target has the balancer's checks.
        let checks_on = st.settings.health.check != Check::None;
        restore_runtime(&mut st.servers[i], &ss, checks_on, now, wall_ms);
        return true;
    }
    let configured = lb.cfg.servers.get(ss.index).map(config::Server::label);
    if configured != ss.config_addr {
        info!(target: "ctl", balancer = %lb.cfg.name,
            "state of server {} ignored: the config changed ({:?} -> {:?})", ss.index, ss.config_addr, configured);
        return false;
    }
    while st.servers.len() <= ss.index {
        st.servers.push(ServerState::empty());
    }
    let own = lb
        .cfg
        .servers
        .get(ss.index)
        .and_then(|c| c.health.as_deref());
    let checks_on = own.unwrap_or(&st.settings.health).check != Check::None;
    let sv = &mut st.servers[ss.index];
    // A server by name starts from its last address (its resolver asks at once, and keeps it
    // for hold_nx if the nameservers fail): a restart during a DNS outage keeps serving.
    let name = lb.cfg.servers.get(ss.index).and_then(|c| c.name.clone());
    if name.is_some() && !addr.ip().is_unspecified() {
        sv.unresolved = false;
    }
    sv.cfg = config::Server {
        addr,
        name,
        max: ss.max,
        hard: ss.hard,
        weight: ss.weight,
        prio: ss.prio,
        // The server's own checks are the configuration's, not the file's.
        health: sv.cfg.health.clone(),
    };
    restore_runtime(sv, &ss, checks_on, now, wall_ms);
    true
}

/// The runtime part of a saved server: drain, blacklist, maint, check switch, health.
fn restore_runtime(
    sv: &mut ServerState,
    ss: &SavedServer,
    checks_on: bool,
    now: Instant,
    wall_ms: u64,
) {
    sv.draining = ss.draining;
    sv.blacklisted_until = ss
        .blacklisted_until_unix_ms
        .filter(|&t| t > wall_ms)
        .map(|t| now + Duration::from_millis(t - wall_ms));
    sv.health.maint = ss.maint;
    sv.health.disabled = ss.check_disabled;
    // With checks off a saved verdict would never be undone.
    if let Some(h) = ss.health.as_ref().filter(|_| checks_on) {
        h.apply(&mut sv.health, now, wall_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Outcome;

    fn balancer(health: &str) -> Arc<Balancer> {
        let src = format!(
            "[[balancer]]\nname = \"t\"\nlisten = \"127.0.0.1:8080\"\n\
             servers = [\"127.0.0.1:9001\", \"127.0.0.1:9002\", \"127.0.0.1:9003\"]\n{health}\n"
        );
        let cfg = config::parse_str(&src, Path::new("t.toml")).expect("config");
        Balancer::new(cfg.balancers[0].clone())
    }

    /// A check's result at `at`: passed, or refused.
    fn check(ok: bool, at: Instant) -> Outcome {
        let reason = String::from(if ok { "ok" } else { "connect refused" });
        let took = Duration::ZERO;
        Outcome {
            ok,
            reason,
            took,
            at,
        }
    }

    /// Save `lb` to a file and restore it into a fresh balancer built with `health`.
    fn saved_and_restored(lb: &Arc<Balancer>, health: &str) -> Arc<Balancer> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        write(&path, &snapshot(std::slice::from_ref(lb))).expect("write");
        let fresh = balancer(health);
        restore(&path, std::slice::from_ref(&fresh));
        fresh
    }

    fn labels(lb: &Balancer) -> Vec<String> {
        let st = lb.lock();
        let h = &st.settings.health;
        st.servers.iter().map(|s| s.health.label(h)).collect()
    }

    const TCP: &str = "health = { check = \"tcp\", rise = 3 }";

    #[test]
    fn health_maint_and_check_disable_survive_a_restart() {
        let lb = balancer(TCP);
        let now = Instant::now();
        let ten_s_ago = now.checked_sub(Duration::from_secs(10)).unwrap_or(now);
        {
            let mut st = lb.lock();
            let h = st.settings.health.clone();
            let t = &mut st.servers[0].health;
            t.record(&h, check(false, now), now);
            t.since = ten_s_ago;
            st.servers[1].health.phase = Phase::Up { fails: 2 };
            st.servers[1].health.checked = true;
            st.servers[2].health.maint = true;
            st.servers[2].health.disabled = true;
        }
        assert_eq!(labels(&lb), ["down", "falling 2/3", "maint"]);
        let back = saved_and_restored(&lb, TCP);
        assert_eq!(labels(&back), ["down", "falling 2/3", "maint"]);
        let st = back.lock();
        let (s0, s2) = (&st.servers[0].health, &st.servers[2].health);
        assert!(!s0.usable() && !s2.usable());
        assert!(s2.disabled);
        let age = Instant::now().saturating_duration_since(s0.since);
        assert!(
            age >= Duration::from_secs(9) && age < Duration::from_secs(12),
            "{age:?}"
        );
        drop(st);
        // Nobody is sent to the down or maint server.
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        for _ in 0..6 {
            assert_eq!(back.plan(ip, 1, Instant::now()).0, Some(1));
        }
    }

    #[test]
    fn a_restored_down_server_needs_rise_checks() {
        let lb = balancer(TCP);
        let now = Instant::now();
        let addr = lb.lock().servers[0].cfg.addr;
        lb.health_result(0, addr, check(false, now));
        let back = saved_and_restored(&lb, TCP);
        let h = back.lock().settings.health.clone();
        let mut st = back.lock();
        let t = &mut st.servers[0].health;
        assert_eq!(t.record(&h, check(true, now), now), None);
        assert_eq!(t.record(&h, check(true, now), now), None);
        assert!(t.down(), "still down after 2 of 3");
        assert!(t.record(&h, check(true, now), now).is_some());
        assert!(t.usable());
    }

    #[test]
    fn without_checks_a_saved_verdict_is_not_applied() {
        let lb = balancer(TCP);
        let now = Instant::now();
        let addr = lb.lock().servers[0].cfg.addr;
        lb.health_result(0, addr, check(false, now));
        lb.lock().servers[1].health.maint = true;
        let back = saved_and_restored(&lb, "health = { check = \"none\" }");
        assert_eq!(labels(&back), ["unchecked", "maint", "unchecked"]);
    }

    #[test]
    fn an_old_file_without_health_still_loads() {
        let old = r#"{"version":1,"balancers":[{"name":"t","sticky":false,"algorithm":"roundrobin",
            "stubborn":false,"blacklist_ms":30000,"connect_timeout_ms":1000,"idle_timeout_ms":0,
            "tracking_ms":0,"servers":[{"index":1,"config_addr":"127.0.0.1:9002",
            "addr":"127.0.0.1:9002","max":0,"hard":0,"weight":7,"prio":0,"draining":true,
            "blacklisted_until_unix_ms":null}]}]}"#;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        std::fs::write(&path, old).expect("write");
        let lb = balancer(TCP);
        restore(&path, std::slice::from_ref(&lb));
        let st = lb.lock();
        assert_eq!(
            (st.servers[1].cfg.weight, st.servers[1].draining),
            (7, true)
        );
        drop(st);
        assert_eq!(labels(&lb), ["unchecked", "unchecked", "unchecked"]);
    }

    #[test]
    fn a_broken_file_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        std::fs::write(&path, "{\"version\":1,\"balancers\":[{\"name\":").expect("write");
        let lb = balancer(TCP);
        restore(&path, std::slice::from_ref(&lb));
        assert_eq!(labels(&lb), ["unchecked", "unchecked", "unchecked"]);
        assert_eq!(lb.lock().servers[1].cfg.weight, 1);
    }

    fn srv_balancer(srv: &str) -> Arc<Balancer> {
        let src = format!(
            "[[balancer]]\nname = \"t\"\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9001\"]\n\
             servers_srv = \"{srv}\"\nemergency = \"sorry.test:9099\"\n"
        );
        let cfg = config::parse_str(&src, Path::new("t.toml")).expect("config");
        Balancer::new(cfg.balancers[0].clone())
    }

    #[test]
    fn srv_servers_and_a_named_emergency_survive_a_restart() {
        use crate::resolver::srv::Target;
        let lb = srv_balancer("_a._tcp.test");
        let t = |name: &str, w: u16, obsolete: bool| Target {
            name: name.into(),
            port: 8080,
            priority: 10,
            record_weight: w,
            weight: u32::from(w),
            missing_since: obsolete.then(Instant::now),
        };
        lb.set_srv_targets(
            "_a._tcp.test",
            &[t("a.test", 3, false), t("b.test", 1, true)],
        );
        lb.set_resolved("a.test", Some("10.0.0.21".parse().unwrap()));
        lb.set_resolved("sorry.test", Some("10.0.0.99".parse().unwrap()));
        lb.lock().servers[1].draining = true;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        write(&path, &snapshot(std::slice::from_ref(&lb))).expect("write");

        let back = srv_balancer("_a._tcp.test");
        restore(&path, std::slice::from_ref(&back));
        let st = back.lock();
        assert_eq!(st.servers.len(), 3);
        let a = &st.servers[1];
        assert_eq!(a.cfg.addr.to_string(), "10.0.0.21:8080");
        assert_eq!(a.cfg.name.as_deref(), Some("a.test"));
        assert!(!a.unresolved && a.draining);
        assert_eq!(
            a.srv.as_ref().map(|o| (o.weight, o.priority)),
            Some((3, 10))
        );
        let b = &st.servers[2];
        assert!(
            b.unresolved && b.obsolete(),
            "b had no address and had left the answer"
        );
        let e = st.emergency.as_ref().expect("emergency");
        assert_eq!(
            (e.cfg.addr.to_string(), e.unresolved),
            ("10.0.0.99:9099".into(), false)
        );
        drop(st);

        // Another SRV name now: its old servers are not brought back.
        let other = srv_balancer("_b._tcp.test");
        restore(&path, std::slice::from_ref(&other));
        assert_eq!(other.lock().servers.len(), 1);
    }
}
