//! The reconcile loop task: it alone owns the netlink connection; others ask it
//! for a pass through a [`ReconcileHandle`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{Desired, Links, apply, plan};
use crate::network::Networks;
use crate::store::Store;

/// What the last pass did, for `/info` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileStatus {
    /// Completed passes since start.
    pub passes: u64,
    /// Kernel changes made by the last pass.
    pub last_changes: usize,
    /// Why the last pass failed, if it did.
    pub last_error: Option<String>,
}

/// Asks the reconcile task for passes and reads its status.
#[derive(Clone, Debug)]
pub struct ReconcileHandle {
    notify: Arc<Notify>,
    status: watch::Receiver<ReconcileStatus>,
}

impl ReconcileHandle {
    /// Requests a pass soon (coalesced with other requests).
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// The status after the last completed pass.
    pub fn status(&self) -> ReconcileStatus {
        self.status.borrow().clone()
    }
}

async fn pass<L: Links>(store: &Store, links: &L, networks: Option<&Networks>) -> Result<usize, String> {
    if let Some(n) = networks {
        n.reconcile().await.map_err(|e| e.to_string())?;
    }
    let networks = store.networks().map_err(|e| e.to_string())?;
    let desired = Desired { networks: networks.into_iter().map(|n| n.id).collect() };
    let observed = links.list().await.map_err(|e| e.to_string())?;
    let ops = plan(&desired, &observed);
    let (done, errors) = apply(links, &ops).await;
    match errors.first() {
        None => Ok(done),
        Some(e) => Err(format!("{} of {} changes failed, first: {e}", errors.len(), ops.len())),
    }
}

/// Runs one pass now (used at start, before the API serves), then spawns the
/// loop that runs on every notify, every `interval`, until `shutdown` is set.
pub async fn spawn<L: Links + Send + Sync + 'static>(
    store: Store,
    links: L,
    networks: Option<Arc<Networks>>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (ReconcileHandle, tokio::task::JoinHandle<()>) {
    let notify = Arc::new(Notify::new());
    let first = pass(&store, &links, networks.as_deref()).await;
    let (tx, rx) = watch::channel(status_after(0, first));
    let handle = ReconcileHandle { notify: notify.clone(), status: rx };
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = notify.notified() => {}
                _ = ticker.tick() => {}
            }
            let result = pass(&store, &links, networks.as_deref()).await;
            let passes = tx.borrow().passes;
            tx.send_replace(status_after(passes, result));
        }
        tracing::debug!("reconcile loop stopped");
    });
    (handle, task)
}

fn status_after(passes: u64, result: Result<usize, String>) -> ReconcileStatus {
    match result {
        Ok(n) => {
            tracing::debug!(changes = n, "reconcile pass done");
            ReconcileStatus { passes: passes + 1, last_changes: n, last_error: None }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reconcile pass failed");
            ReconcileStatus { passes: passes + 1, last_changes: 0, last_error: Some(e) }
        }
    }
}
