//! The state file: runtime changes (blacklists with their expiry, weights, limits, drains,
//! address changes, pen's mode settings) kept across restarts, like HAProxy's server-state
//! file, so a supervisor restart in the middle of an upgrade does not put a blacklisted server
//! back. Written atomically (temporary file + rename).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::balancer::Balancer;
use crate::balancer::pool::ServerState;
use crate::config::{self, Algorithm};

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
                config_addr: lb.cfg.servers.get(i).map(config::Server::label),
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
            })
            .collect();
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
            let configured = lb.cfg.servers.get(ss.index).map(config::Server::label);
            if configured != ss.config_addr {
                info!(target: "ctl", balancer = %lb.cfg.name,
                    "state of server {} ignored: the config changed ({:?} -> {:?})", ss.index, ss.config_addr, configured);
                continue;
            }
            let Ok(addr) = ss.addr.parse::<SocketAddr>() else {
                continue;
            };
            while st.servers.len() <= ss.index {
                st.servers.push(ServerState::empty());
            }
            let sv = &mut st.servers[ss.index];
            // A server by name starts from its last address (its resolver asks at once, and
            // keeps it for hold_nx if the nameservers fail): a restart during a DNS outage
            // keeps serving.
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
            };
            sv.draining = ss.draining;
            sv.blacklisted_until = ss
                .blacklisted_until_unix_ms
                .filter(|&t| t > wall_ms)
                .map(|t| now + Duration::from_millis(t - wall_ms));
            restored += 1;
        }
        st.reselect();
        info!(target: "ctl", balancer = %lb.cfg.name, "restored runtime state of {restored} server(s) from {}", path.display());
    }
}
