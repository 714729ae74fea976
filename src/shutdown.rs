//! The stop signal of `edgefilter run` and `demo`, beside the data flow: SIGTERM/SIGINT (or
//! a test, or the demo's end) fires a [`Trigger`]; every task holding a [`Shutdown`] sees it —
//! the connection loop starts its drain, the metrics server and the stats line stop.

use tokio::sync::watch;

/// Fires the shutdown (once; later calls do nothing).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// Another receiver of this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

/// Waits for the shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its first receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Self {
        Shutdown(rx)
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the shutdown fired. If the trigger is dropped without firing it never
    /// resolves: whoever owns the trigger decides when things stop.
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_sees_the_trigger() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_triggered());
        trigger.fire();
        a.wait().await;
        b.wait().await;
        assert!(a.is_triggered() && b.is_triggered());
    }

    #[tokio::test]
    async fn a_dropped_trigger_never_fires() {
        let (trigger, mut rx) = channel();
        drop(trigger);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), rx.wait()).await;
        assert!(waited.is_err());
    }
}
