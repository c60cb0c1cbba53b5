//! The three firehose streams: every event of a root goes to every stream of
//! the kind, the snapshot is the 50 newest rows of a table.
//!
//! - `GET /api/v1/identities/events`: `identity.>`, named by the topic minus
//!   `identity.`, snapshot `{"identities": [...]}`;
//! - `GET /api/v1/campaigns/events`: `campaign.>`, named by the topic minus
//!   `campaign.`, snapshot `{"campaigns": [...]}`;
//! - `GET /api/v1/orchestrator/events/stream`: `orchestrator.>`, named by
//!   the second token, snapshot `{"events": [...]}`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use decnet_bus::Event;
use decnet_repo::{CampaignReader, IdentityReader, OrchestratorReader, RepoError};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::frames::snapshot_frame;
use crate::kind::{KIND_WIDE_KEY, KeyInfo, Route, StreamKind};

/// How many rows a listing snapshot holds (DECNET's `limit=50`).
pub const SNAPSHOT_ROWS: u32 = 50;

fn kind_wide(key: &str) -> Option<KeyInfo> {
    (key == KIND_WIDE_KEY).then(KeyInfo::default)
}

/// The topic without `prefix` (`identity.formed` -> `formed`), or the topic.
fn strip_root<'t>(topic: &'t str, prefix: &str) -> Cow<'t, str> {
    Cow::Borrowed(topic.strip_prefix(prefix).unwrap_or(topic))
}

#[derive(Serialize)]
struct Identities<'a, T> {
    identities: &'a [T],
}

#[derive(Serialize)]
struct Campaigns<'a, T> {
    campaigns: &'a [T],
}

#[derive(Serialize)]
struct Events<'a, T> {
    events: &'a [T],
}

/// The identity stream (firehose of `identity.>`).
pub struct IdentitiesKind {
    reader: Arc<dyn IdentityReader>,
}

impl IdentitiesKind {
    /// The kind, reading identities from `reader`.
    pub fn new(reader: Arc<dyn IdentityReader>) -> Self {
        Self { reader }
    }
}

impl StreamKind for IdentitiesKind {
    fn name(&self) -> &'static str {
        "identities"
    }

    fn patterns(&self) -> &'static [&'static str] {
        &[decnet_topics::PATTERN_IDENTITY]
    }

    fn route<'e>(&self, _event: &'e Event) -> Route<'e> {
        Route::All
    }

    fn event_name<'t>(&self, topic: &'t str) -> Cow<'t, str> {
        strip_root(topic, "identity.")
    }

    fn known_event_names(&self) -> &'static [&'static str] {
        &[
            "formed",
            "observation.linked",
            "merged",
            "unmerged",
            "campaign.assigned",
        ]
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyInfo>, RepoError>> {
        futures::future::ready(Ok(kind_wide(key))).boxed()
    }

    fn snapshot<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, RepoError>> {
        async move {
            let rows = self.reader.recent_identities(SNAPSHOT_ROWS).await?;
            Ok(Some(snapshot_frame(&Identities { identities: &rows })))
        }
        .boxed()
    }
}

/// The campaign stream (firehose of `campaign.>`).
pub struct CampaignsKind {
    reader: Arc<dyn CampaignReader>,
}

impl CampaignsKind {
    /// The kind, reading campaigns from `reader`.
    pub fn new(reader: Arc<dyn CampaignReader>) -> Self {
        Self { reader }
    }
}

impl StreamKind for CampaignsKind {
    fn name(&self) -> &'static str {
        "campaigns"
    }

    fn patterns(&self) -> &'static [&'static str] {
        &["campaign.>"]
    }

    fn route<'e>(&self, _event: &'e Event) -> Route<'e> {
        Route::All
    }

    fn event_name<'t>(&self, topic: &'t str) -> Cow<'t, str> {
        strip_root(topic, "campaign.")
    }

    fn known_event_names(&self) -> &'static [&'static str] {
        &["formed", "identity.assigned", "merged", "unmerged"]
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyInfo>, RepoError>> {
        futures::future::ready(Ok(kind_wide(key))).boxed()
    }

    fn snapshot<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, RepoError>> {
        async move {
            let rows = self.reader.recent_campaigns(SNAPSHOT_ROWS).await?;
            Ok(Some(snapshot_frame(&Campaigns { campaigns: &rows })))
        }
        .boxed()
    }
}

/// The orchestrator stream (firehose of `orchestrator.>`).
pub struct OrchestratorKind {
    reader: Arc<dyn OrchestratorReader>,
}

impl OrchestratorKind {
    /// The kind, reading orchestrator events from `reader`.
    pub fn new(reader: Arc<dyn OrchestratorReader>) -> Self {
        Self { reader }
    }
}

/// DECNET's orchestrator naming: the second token when the first is
/// `orchestrator` (`orchestrator.traffic.web01` -> `traffic`), else the topic.
pub(crate) fn orchestrator_event_name(topic: &str) -> &str {
    let mut tokens = topic.split('.');
    match (tokens.next(), tokens.next()) {
        (Some("orchestrator"), Some(second)) => second,
        _ => topic,
    }
}

impl StreamKind for OrchestratorKind {
    fn name(&self) -> &'static str {
        "orchestrator"
    }

    fn patterns(&self) -> &'static [&'static str] {
        &["orchestrator.>"]
    }

    fn route<'e>(&self, _event: &'e Event) -> Route<'e> {
        Route::All
    }

    fn event_name<'t>(&self, topic: &'t str) -> Cow<'t, str> {
        Cow::Borrowed(orchestrator_event_name(topic))
    }

    fn known_event_names(&self) -> &'static [&'static str] {
        &["traffic", "file", "email"]
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyInfo>, RepoError>> {
        futures::future::ready(Ok(kind_wide(key))).boxed()
    }

    fn snapshot<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, RepoError>> {
        async move {
            let rows = self
                .reader
                .recent_orchestrator_events(SNAPSHOT_ROWS)
                .await?;
            Ok(Some(snapshot_frame(&Events { events: &rows })))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let repo = Arc::new(decnet_repo::MemoryRepository::new());
        let identities = IdentitiesKind::new(repo.clone());
        assert_eq!(identities.event_name("identity.formed"), "formed");
        assert_eq!(
            identities.event_name("identity.observation.linked"),
            "observation.linked"
        );
        assert_eq!(
            identities.event_name("identity.campaign.assigned"),
            "campaign.assigned"
        );
        let campaigns = CampaignsKind::new(repo.clone());
        assert_eq!(
            campaigns.event_name("campaign.identity.assigned"),
            "identity.assigned"
        );
        assert_eq!(campaigns.event_name("campaign.merged"), "merged");
        let orchestrator = OrchestratorKind::new(repo);
        assert_eq!(
            orchestrator.event_name("orchestrator.traffic.web01"),
            "traffic"
        );
        assert_eq!(orchestrator.event_name("orchestrator.email.x.y"), "email");
        assert_eq!(orchestrator.event_name("orchestrator.file"), "file");
    }
}
