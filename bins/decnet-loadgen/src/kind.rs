//! Which of DECNET's streams a run opens, and what it publishes to reach them.
//!
//! Keyed kinds (attacker, topology) spread the streams round-robin over
//! seeded keys and publish round-robin over the same keys; the firehose
//! kinds (identities, campaigns, orchestrator) have one kind-wide stream
//! key, so every event reaches every stream.

use anyhow::{Result, bail};

use crate::seed::{attacker_uuid, topology_id};

/// The bus topic of bench events on the attacker stream (forwarded as
/// `observation`).
pub(crate) const BENCH_TOPIC: &str = "attacker.observation.bench.latency";

/// A stream kind of decnet-events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `GET /api/v1/attackers/{uuid}/events` (the default).
    Attacker,
    /// `GET /api/v1/identities/events`.
    Identities,
    /// `GET /api/v1/campaigns/events`.
    Campaigns,
    /// `GET /api/v1/orchestrator/events/stream`.
    Orchestrator,
    /// `GET /api/v1/topologies/{id}/events`.
    Topology,
    /// `GET /api/v1/stream`: logs, stats and histogram polled from the
    /// database (no bus events; an idle run counts the database's load).
    Logs,
}

impl Kind {
    /// Parse `attacker | identities | campaigns | orchestrator | topology`.
    pub(crate) fn parse(name: &str) -> Result<Kind> {
        Ok(match name {
            "attacker" => Kind::Attacker,
            "identities" => Kind::Identities,
            "campaigns" => Kind::Campaigns,
            "orchestrator" => Kind::Orchestrator,
            "topology" => Kind::Topology,
            "logs" => Kind::Logs,
            other => bail!(
                "--kind must be attacker, identities, campaigns, orchestrator, topology or logs, got {other:?}"
            ),
        })
    }

    /// The name `--kind` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Attacker => "attacker",
            Kind::Identities => "identities",
            Kind::Campaigns => "campaigns",
            Kind::Orchestrator => "orchestrator",
            Kind::Topology => "topology",
            Kind::Logs => "logs",
        }
    }

    /// Whether streams have a key of their own (else one kind-wide key).
    pub(crate) fn is_keyed(self) -> bool {
        matches!(self, Kind::Attacker | Kind::Topology)
    }

    /// The stream keys: `count` seeded keys from `offset` for a keyed kind,
    /// the one kind-wide key (`""`) otherwise.
    pub(crate) fn keys(self, offset: usize, count: usize) -> Vec<String> {
        match self {
            Kind::Attacker => (0..count).map(|a| attacker_uuid(offset + a)).collect(),
            Kind::Topology => (0..count).map(|t| topology_id(offset + t)).collect(),
            _ => vec![String::new()],
        }
    }

    /// The stream's path (without the ticket).
    pub(crate) fn path(self, key: &str) -> String {
        match self {
            Kind::Attacker => format!("/api/v1/attackers/{key}/events"),
            Kind::Identities => "/api/v1/identities/events".to_owned(),
            Kind::Campaigns => "/api/v1/campaigns/events".to_owned(),
            Kind::Orchestrator => "/api/v1/orchestrator/events/stream".to_owned(),
            Kind::Topology => format!("/api/v1/topologies/{key}/events"),
            Kind::Logs => "/api/v1/stream".to_owned(),
        }
    }

    /// The topic a bench event for `key` is published on.
    pub(crate) fn topic(self, key: &str) -> String {
        match self {
            Kind::Attacker => BENCH_TOPIC.to_owned(),
            Kind::Identities => "identity.bench.latency".to_owned(),
            Kind::Campaigns => "campaign.bench.latency".to_owned(),
            Kind::Orchestrator => "orchestrator.bench.latency".to_owned(),
            Kind::Topology => format!("topology.{key}.bench.latency"),
            // Nothing on the bus reaches `/stream`; never published.
            Kind::Logs => "logs.bench.unused".to_owned(),
        }
    }

    /// The payload field that carries the key (the attacker stream routes
    /// on it; the topology key is in the topic, the field only lets the
    /// load generator check the routing).
    pub(crate) fn key_field(self) -> Option<&'static str> {
        match self {
            Kind::Attacker => Some("attacker_uuid"),
            Kind::Topology => Some("topology_id"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_routes_and_topics() {
        let a = Kind::parse("attacker").expect("valid");
        assert_eq!(a.keys(2, 2), vec![attacker_uuid(2), attacker_uuid(3)]);
        assert_eq!(
            a.path("u"),
            "/api/v1/attackers/u/events",
            "the attacker route"
        );
        assert_eq!(a.topic("u"), BENCH_TOPIC);
        let t = Kind::parse("topology").expect("valid");
        assert_eq!(t.topic("T1"), "topology.T1.bench.latency");
        assert_eq!(t.key_field(), Some("topology_id"));
        for name in ["identities", "campaigns", "orchestrator", "logs"] {
            let k = Kind::parse(name).expect("valid");
            assert!(!k.is_keyed());
            assert_eq!(k.keys(5, 100), vec![String::new()], "one kind-wide key");
            assert_eq!(k.key_field(), None);
        }
        assert!(Kind::parse("log").is_err());
        assert_eq!(Kind::Logs.path(""), "/api/v1/stream");
        for name in [
            "attacker",
            "identities",
            "campaigns",
            "orchestrator",
            "topology",
            "logs",
        ] {
            assert_eq!(Kind::parse(name).map(Kind::name).ok(), Some(name));
        }
    }
}
