//! The conformance suite on the null bus (subscriptions end at once,
//! publishes are accepted and dropped, state always `Connected`).

mod conformance;

use std::sync::Arc;

use conformance::Harness;
use decnet_bus::{Bus, NullBus};
use futures::FutureExt;

fn harness() -> Harness {
    Harness::new(decnet_bus::BusKind::Null, true, |options| {
        async move { Bus::from_backend_with(Arc::new(NullBus::new()), options) }.boxed()
    })
}

conformance_suite!(harness());
