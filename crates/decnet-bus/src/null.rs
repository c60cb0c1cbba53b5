//! The bus that does nothing, for deployments with the bus disabled.

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::backend::{Backend, ConnectionState, RawSubscription};
use crate::config::BusKind;
use crate::error::{PublishError, SubscribeError};

/// A bus that drops every publish (returning `Ok`) and whose subscriptions
/// end at once. Its state is always [`ConnectionState::Connected`] (until
/// it is closed), so a readiness probe passes when the bus is disabled on
/// purpose.
#[derive(Debug)]
pub struct NullBus {
    state: watch::Sender<ConnectionState>,
}

impl NullBus {
    /// A null bus.
    pub fn new() -> NullBus {
        let (state, _) = watch::channel(ConnectionState::Connected);
        NullBus { state }
    }
}

impl Default for NullBus {
    fn default() -> Self {
        NullBus::new()
    }
}

impl Backend for NullBus {
    fn publish(&self, _topic: &str, _body: Bytes) -> BoxFuture<'_, Result<(), PublishError>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn subscribe(&self, _pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>> {
        futures::future::ready(Ok(RawSubscription::empty())).boxed()
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.state.send_replace(ConnectionState::Closed);
        futures::future::ready(()).boxed()
    }

    fn kind(&self) -> BusKind {
        BusKind::Null
    }
}
