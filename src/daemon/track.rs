//! What VRRP `track` reads: every balancer's count of servers that can take a new client, in
//! one map by name. One task per balancer on the control-plane runtime follows the balancer's
//! watch (balancer/avail.rs, sent by whoever changed a server) and recounts when a blacklist
//! runs out; nothing polls, and the data-path threads only ever send.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::{Availability, Balancer};
use crate::vrrp::track::{Pool, Pools};

fn pool(a: &Availability) -> Pool {
    Pool {
        up: a.up,
        servers: a.servers,
    }
}

/// The map, kept current until `stop`, and its tasks.
pub(super) fn follow(
    lbs: &[Arc<Balancer>],
    stop: &watch::Receiver<bool>,
) -> (watch::Receiver<Pools>, Vec<JoinHandle<()>>) {
    let first: Pools = lbs
        .iter()
        .map(|lb| (lb.cfg.name.clone(), pool(&lb.availability().borrow())))
        .collect();
    let (tx, rx) = watch::channel(first);
    let tx = Arc::new(tx);
    let tasks = lbs
        .iter()
        .map(|lb| tokio::spawn(one(lb.clone(), tx.clone(), stop.clone())))
        .collect();
    (rx, tasks)
}

/// Copy one balancer's count into the map whenever it changes.
async fn one(lb: Arc<Balancer>, tx: Arc<watch::Sender<Pools>>, mut stop: watch::Receiver<bool>) {
    let mut rx = lb.availability();
    loop {
        let a = *rx.borrow_and_update();
        let now = pool(&a);
        tx.send_if_modified(|m| m.insert(lb.cfg.name.clone(), now) != Some(now));
        // A blacklist ends without an event: count again then.
        let expiry = async {
            match a.until {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = expiry => lb.refresh_availability(),
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config;

    #[tokio::test(flavor = "current_thread")]
    async fn the_map_follows_each_balancer_and_a_blacklist_running_out() {
        let src = "[[balancer]]\nname = \"www\"\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9001\"]\n\
                   [[balancer]]\nname = \"app\"\nlisten = \"127.0.0.1:8081\"\nservers = [\"127.0.0.1:9002\", \"127.0.0.1:9003\"]\n";
        let cfg = config::parse_str(src, std::path::Path::new("t.toml")).expect("config");
        let lbs: Vec<Arc<Balancer>> = cfg.balancers.iter().cloned().map(Balancer::new).collect();
        let (stop_tx, stop) = watch::channel(false);
        let (mut rx, tasks) = follow(&lbs, &stop);
        let up =
            |rx: &watch::Receiver<Pools>, n: &str| rx.borrow().get(n).map(|p| (p.up, p.servers));
        assert_eq!(up(&rx, "www"), Some((1, 1)));
        assert_eq!(up(&rx, "app"), Some((2, 2)));
        // www's one server fails a client's connect: blacklisted for 200 ms.
        {
            let mut st = lbs[0].lock();
            let now = Instant::now();
            st.servers[0].blacklist(now, Duration::from_millis(200));
            lbs[0].publish_availability(&st, now);
        }
        let t0 = Instant::now();
        for (want, what) in [(0, "www down"), (1, "www back by itself")] {
            let reached = rx.wait_for(|m| m.get("www").is_some_and(|p| p.up == want));
            let seen = tokio::time::timeout(Duration::from_secs(2), reached).await;
            assert!(seen.is_ok_and(|r| r.is_ok()), "{what}");
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(up(&rx, "app"), Some((2, 2)));
        let _ = stop_tx.send(true);
        for t in tasks {
            t.await.expect("task");
        }
    }
}
