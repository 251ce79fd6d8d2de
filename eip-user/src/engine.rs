//! Runs lifecycle changes: store first (durable), then memory, then the kernel.
//!
//! A change the store committed is never lost: if the kernel refuses part of it, the engine
//! says so, marks itself for reconciliation, and the daemon's next reconcile pass (at most a
//! second later, and at every start) makes the kernel match the store.

use crate::{
    kernel::plan::{Effect, effects, reconcile},
    kernel::{Kernel, KernelError},
    lifecycle::{self, Change, LeaseEvent, Limits, Refusal},
    model::State,
    store::{self, Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("nothing changed: {0}")]
    Store(#[from] StoreError),
    #[error("the change is saved but the kernel refused part of it ({source}); the daemon keeps retrying")]
    Kernel {
        #[source]
        source: KernelError,
    },
}

pub struct Engine<K> {
    state: State,
    store: Store,
    kernel: K,
    limits: Limits,
    /// The kernel may differ from the state (an effect failed): reconcile soon.
    dirty: bool,
    /// Where lease events go (the lease script), if anywhere.
    events: Option<tokio::sync::mpsc::Sender<LeaseEvent>>,
}

impl<K: Kernel> Engine<K> {
    pub fn new(store: Store, kernel: K, limits: Limits) -> Result<Self, StoreError> {
        let state = store.load()?;
        Ok(Self::with_state(store, state, kernel, limits))
    }

    /// An engine over `state`, which the caller loaded from `store`.
    pub fn with_state(store: Store, state: State, kernel: K, limits: Limits) -> Self {
        Engine {
            state,
            store,
            kernel,
            limits,
            dirty: true,
            events: None,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What reservations, leases and pools must fit.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Lease events go to `tx` from now on (the lease script's queue).
    pub fn send_lease_events(&mut self, tx: tokio::sync::mpsc::Sender<LeaseEvent>) {
        self.events = Some(tx);
    }

    /// What the kernel reports (counters, statistics, paths). It changes only through the
    /// engine: [`Engine::run`], [`Engine::reconcile`] and [`Engine::tick`].
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The kernel itself, for tests that leave debris in it behind the engine's back.
    #[cfg(any(test, feature = "testing"))]
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// The host's own networks, which a pool must not overlap.
    pub async fn host_nets(&mut self) -> Result<Vec<ipnet::Ipv4Net>, KernelError> {
        self.kernel.host_nets().await
    }

    /// The bridge the VMs are on, as the kernel last saw it.
    pub fn bridge(&self) -> Option<&crate::kernel::netlink::Link> {
        self.kernel.bridge()
    }

    /// A DHCP client with `mac` just got its lease: its VM entry learns the bridge port.
    pub async fn learn_port(&mut self, mac: crate::model::Mac) -> Result<(), KernelError> {
        self.kernel.learn_port(mac).await
    }

    /// The daemon's once-a-second housekeeping, `n` counting the calls: the kernel's upkeep,
    /// a reconcile when something left the kernel behind, and (every other call) the VMs'
    /// bridge ports followed. Failures are logged and retried at the next call. Returns
    /// whether it reconciled.
    pub async fn tick(&mut self, n: u64) -> bool {
        match self.kernel.upkeep().await {
            Ok(true) => self.dirty = true,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %crate::error_chain(&e), "dataplane upkeep"),
        }
        let reconciled = self.dirty && self.kernel.ready();
        if reconciled {
            self.reconcile_if_dirty().await;
        }
        if n.is_multiple_of(2)
            && let Err(e) = self.kernel.follow_ports().await
        {
            tracing::warn!(error = %crate::error_chain(&e), "bridge port refresh");
        }
        reconciled
    }

    /// Commits `change` (recorded in the history as `command`), then applies it.
    pub async fn run(
        &mut self,
        command: &str,
        change: Result<Change, Refusal>,
    ) -> Result<String, EngineError> {
        let change = change?;
        if change.writes.is_empty() {
            return Ok(change.message);
        }
        let before = store::excerpt(&self.state, &change.writes);
        let mut after = before.clone();
        after.apply(&change.writes);
        if let Err(e) = self.store.commit(
            &change.writes,
            command,
            store::records(&before),
            store::records(&after),
        ) {
            tracing::error!(command, error = %crate::error_chain(&e), "not saved; nothing changed");
            return Err(e.into());
        }
        self.state.apply(&change.writes);
        self.emit(lifecycle::lease_events(&before, &after, &change.writes));
        let effects = effects(&before, &after, &change.writes);
        self.apply(&effects)
            .await
            .map_err(|source| EngineError::Kernel { source })?;
        tracing::info!(command, "{}", change.message);
        Ok(change.message)
    }

    /// Hands lease events to the lease script without waiting for it.
    pub fn emit(&self, events: Vec<LeaseEvent>) {
        let Some(tx) = &self.events else { return };
        for ev in events {
            if let Err(e) = tx.try_send(ev) {
                tracing::warn!(error = %e, "lease script queue full; event not run");
            }
        }
    }

    async fn apply(&mut self, effects: &[Effect]) -> Result<(), KernelError> {
        for e in effects {
            tracing::debug!(effect = ?e, "kernel");
            if let Err(err) = self.kernel.apply(e).await {
                tracing::error!(effect = ?e, error = %err, "kernel update failed; will reconcile");
                self.dirty = true;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Makes the kernel match the state, logging each correction. Returns how many there were.
    pub async fn reconcile(&mut self) -> Result<usize, KernelError> {
        let view = self.kernel.view().await?;
        let fixes = reconcile(&self.state, &view);
        for f in &fixes {
            tracing::warn!(correction = ?f, "reconcile: kernel differed from the store");
        }
        self.apply(&fixes).await?;
        self.dirty = false;
        Ok(fixes.len())
    }

    /// Reconciles only if an earlier change left the kernel behind.
    pub async fn reconcile_if_dirty(&mut self) {
        if self.dirty
            && let Err(e) = self.reconcile().await
        {
            tracing::error!(error = %e, "reconcile failed; retrying later");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernel::MemKernel, lifecycle::Target, model::Mac};

    fn limits() -> Limits {
        Limits {
            private: "192.168.6.0/24".parse().unwrap(),
            gateway: "192.168.6.22".parse().unwrap(),
            max_bindings: 16,
            max_vms: 1024,
            dynamic: None,
        }
    }

    async fn engine(dir: &std::path::Path) -> Engine<MemKernel> {
        let mut e = Engine::new(Store::open(dir).unwrap(), MemKernel::default(), limits()).unwrap();
        e.reconcile().await.unwrap();
        e
    }

    #[tokio::test]
    async fn a_failed_kernel_update_is_kept_and_reconciled() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path()).await;
        let l = limits();
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        let c = lifecycle::pool_add(e.state(), &l, "203.0.113.0/24".parse().unwrap(), &[]);
        e.run("pool add", c).await.unwrap();
        let c = lifecycle::host_add(e.state(), &l, mac, "192.168.6.10".parse().unwrap(), None);
        e.run("host add", c).await.unwrap();
        e.kernel.fail_on = Some(e.kernel.applied + 2);
        let c = lifecycle::bind(
            e.state(),
            &l,
            "203.0.113.5".parse().unwrap(),
            &Target::Mac(mac),
            false,
        );
        let err = e.run("bind", c).await.unwrap_err();
        assert!(matches!(err, EngineError::Kernel { .. }), "{err}");
        assert!(e.dirty);
        // Saved: a new engine on the same store has it.
        assert_eq!(e.store().load().unwrap(), *e.state());
        assert_eq!(e.state().bindings().len(), 1);
        let view = e.kernel.view().await.unwrap();
        assert_ne!(view, crate::kernel::KernelView::desired(e.state()));
        e.kernel.fail_on = None;
        assert!(e.reconcile().await.unwrap() > 0);
        assert_eq!(
            e.kernel.view().await.unwrap(),
            crate::kernel::KernelView::desired(e.state())
        );
        assert!(!e.dirty);
    }

    #[tokio::test]
    async fn a_refusal_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path()).await;
        let c = lifecycle::unbind(e.state(), "203.0.113.5".parse().unwrap());
        assert!(matches!(e.run("unbind", c).await, Err(EngineError::Refused(_))));
        assert!(e.store().history(None).unwrap().is_empty());
    }
}
