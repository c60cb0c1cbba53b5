//! DECNET's bus-fed stream kinds, one module each.

mod attacker;
mod listing;
mod topology;

use std::sync::Arc;

pub use attacker::{AttackerKind, attacker_snapshot_frame};
pub use listing::{CampaignsKind, IdentitiesKind, OrchestratorKind, SNAPSHOT_ROWS};
pub use topology::TopologyKind;

use crate::kind::StreamKind;

/// Every bus-fed kind of DECNET's dashboard over one repository, in a fixed
/// order: attacker, identities, campaigns, orchestrator, topology.
pub fn decnet_kinds(repo: &Arc<dyn decnet_repo::Repository>) -> Vec<Arc<dyn StreamKind>> {
    vec![
        Arc::new(AttackerKind::new(repo.clone())),
        Arc::new(IdentitiesKind::new(repo.clone())),
        Arc::new(CampaignsKind::new(repo.clone())),
        Arc::new(OrchestratorKind::new(repo.clone())),
        Arc::new(TopologyKind::new(repo.clone())),
    ]
}
