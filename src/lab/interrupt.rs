//! Ctrl-C for the lab and the drill: SIGINT, SIGTERM and SIGHUP set a flag that the long
//! loops check, so they stop at a safe point and undo what they did (tear the lab down, put
//! a drilled pair back) instead of dying half-way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Sleep, unless Ctrl-C came.
pub fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted() {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
    }
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP set a flag the lab checks between steps; it then tears down.
pub fn watch_signals() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::spawn(move || {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let sigs = (|| {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ))
            })();
            let (mut int, mut term, mut hup) = match sigs {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            INTERRUPTED.store(true, Ordering::Relaxed);
            eprintln!("fwlb: interrupted: undoing what was done");
            // Later signals are absorbed by the handlers: the teardown runs to its end.
            std::future::pending::<()>().await;
        });
    });
    rx.recv()
        .map_err(|_| anyhow!("signal thread died"))?
        .context("cannot install signal handlers")
}
