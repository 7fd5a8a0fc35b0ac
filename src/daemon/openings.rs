//! The back side's firewall openings for servers given by name: after every address or SRV
//! target change, each balancer's resolved servers go to the privileged parent
//! (`Request::ServerAddrs`), which checks them and puts them in the servers' set or table
//! (src/privsep/openings.rs). A task on the control-plane runtime; the call is a future.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::balancer::Balancer;
use crate::privsep::{Client, Request, client::GONE};

type Sent = Vec<(String, Vec<IpAddr>)>;

/// Tell the parent each balancer's resolved servers now, then after every message on
/// `changed`, until `stop`. A balancer that never had a server by name nor `servers_srv` is
/// left out (a reload may give it some).
pub async fn follow(
    lbs: Vec<Arc<Balancer>>,
    parent: Arc<Client>,
    mut changed: mpsc::UnboundedReceiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let by_name = |lb: &Balancer| lb.lock().srv_name.is_some() || !lb.server_names().is_empty();
    let mut sent: HashMap<String, Sent> = HashMap::new();
    let mut refused: HashMap<String, String> = HashMap::new();
    loop {
        for lb in &lbs {
            let now = lb.resolved_servers();
            let name = &lb.cfg.name;
            if sent.get(name) == Some(&now) || (!sent.contains_key(name) && !by_name(lb)) {
                continue;
            }
            let req = Request::ServerAddrs {
                balancer: name.clone(),
                servers: now.clone(),
            };
            match parent.call_ok(req).await {
                Ok(()) => {
                    if refused.remove(name).is_some() {
                        info!(target: "fw", balancer = %name, "the parent takes every server address again");
                    }
                }
                Err(e) if e == GONE => return,
                // Once per episode: the same refusal again says nothing new.
                Err(e) => {
                    if refused.get(name) != Some(&e) {
                        warn!(target: "fw", balancer = %name, "server addresses for the firewall: {e}");
                        refused.insert(name.clone(), e);
                    }
                }
            }
            sent.insert(name.clone(), now);
        }
        tokio::select! {
            m = changed.recv() => if m.is_none() { return },
            _ = stop.changed() => return,
        }
        // One round for a burst of changes.
        while changed.try_recv().is_ok() {}
    }
}
