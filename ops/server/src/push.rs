//! Live push streams to devices (Server-Sent Events). Each connected device
//! has one or more subscriptions; a subscription ends when its stream is
//! dropped (the [`Subscription`] removes itself).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use diemcau_ops_api::PushEvent;
use tokio::sync::mpsc;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Conns = HashMap<String, Vec<(u64, mpsc::Sender<PushEvent>)>>;

/// All live push streams.
#[derive(Debug, Default, Clone)]
pub struct PushHub {
    inner: Arc<Mutex<(Conns, u64)>>,
}

/// One live stream; dropping it unregisters it.
#[derive(Debug)]
pub struct Subscription {
    hub: PushHub,
    device: String,
    id: u64,
    /// Events for this stream.
    pub rx: mpsc::Receiver<PushEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut g = lock(&self.hub.inner);
        if let Some(v) = g.0.get_mut(&self.device) {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                g.0.remove(&self.device);
            }
        }
    }
}

impl PushHub {
    /// Registers a stream for `device`.
    pub fn subscribe(&self, device: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(32);
        let mut g = lock(&self.inner);
        g.1 += 1;
        let id = g.1;
        g.0.entry(device.to_owned()).or_default().push((id, tx));
        Subscription {
            hub: self.clone(),
            device: device.to_owned(),
            id,
            rx,
        }
    }

    /// Sends to every stream of `device`; returns how many got it.
    pub fn send(&self, device: &str, ev: &PushEvent) -> usize {
        let g = lock(&self.inner);
        g.0.get(device)
            .map(|v| {
                v.iter()
                    .filter(|(_, tx)| tx.try_send(ev.clone()).is_ok())
                    .count()
            })
            .unwrap_or(0)
    }

    /// Whether `device` has a live stream.
    pub fn is_connected(&self, device: &str) -> bool {
        lock(&self.inner).0.contains_key(device)
    }

    /// Sends `Revoked` and closes every stream of `device`.
    pub fn revoke(&self, device: &str) {
        let conns = lock(&self.inner).0.remove(device).unwrap_or_default();
        for (_, tx) in conns {
            let _ = tx.try_send(PushEvent::Revoked);
        }
    }

    /// Closes every stream (server shutdown).
    pub fn close_all(&self) {
        lock(&self.inner).0.clear();
    }

    /// Number of devices with a live stream.
    pub fn connected(&self) -> usize {
        lock(&self.inner).0.len()
    }
}
