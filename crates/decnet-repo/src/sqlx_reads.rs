//! The reads of the sqlx engines (SQLite, MySQL), written once: an engine
//! gives its SQL ([`SqlxEngine::QUERIES`]) and its query plumbing
//! ([`Fetch`]); every reader trait is implemented here for both.

use futures::FutureExt;

use crate::sql::{Dialect, conditions};
use crate::sqlx_support::{
    self as support, Bind, Cells, Fetch, attacker_from, campaign_from, identity_from, log_from,
    observation_from, orchestrator_event_from, stats_from, text, topology_from, user_from,
};
use crate::traits::RepoFuture;
use crate::{
    AccountReader, Attacker, AttackerReader, CampaignReader, CampaignRow, Health, HistogramBucket,
    IdentityReader, IdentityRow, LogFilter, LogReader, LogRow, LogStats, Observation,
    OrchestratorEventRow, OrchestratorReader, TopologyReader, TopologySnapshot, User,
    latest_per_primitive,
};

/// An engine's SQL: every statement the readers run, with `?` parameters.
pub(crate) struct Queries {
    /// How [`crate::LogFilter`] conditions are written.
    pub(crate) dialect: Dialect,
    /// `users` row by uuid.
    pub(crate) user_by_uuid: &'static str,
    /// `revoked` flag for a jti.
    pub(crate) is_token_revoked: &'static str,
    /// Every `users` row (`password_hash` empty), `LIMIT ?`.
    pub(crate) all_users: &'static str,
    /// `attackers` row by uuid.
    pub(crate) attacker_by_uuid: &'static str,
    /// The attacker uuids of an identity.
    pub(crate) attackers_of_identity: &'static str,
    /// Latest observation per primitive of an attacker.
    pub(crate) latest_per_primitive: &'static str,
    /// How many `?` of `latest_per_primitive` take the attacker's uuid.
    pub(crate) latest_per_primitive_binds: usize,
    /// The newest unmerged identities, `LIMIT ?`.
    pub(crate) recent_identities: &'static str,
    /// The newest unmerged campaigns, `LIMIT ?`.
    pub(crate) recent_campaigns: &'static str,
    /// The newest orchestrator events, `LIMIT ?`.
    pub(crate) recent_orchestrator_events: &'static str,
    /// A topology's `status`.
    pub(crate) topology_status: &'static str,
    /// A topology's pending then applying mutations.
    pub(crate) in_flight_mutations: &'static str,
    /// The statement that opens the topology read's transaction (`None`:
    /// the engine's `BEGIN`).
    pub(crate) topology_begin: Option<&'static str>,
    /// `max_id` of `logs` (0 when empty).
    pub(crate) max_log_id: &'static str,
    /// The select list of a log row.
    pub(crate) log_columns: &'static str,
    /// The `/stream` stats row.
    pub(crate) log_stats: &'static str,
    /// The histogram's `bucket_time` expression for buckets of `width`
    /// seconds.
    pub(crate) histogram_bucket: fn(width: u64) -> String,
}

/// A sqlx engine: its plumbing and its SQL.
pub(crate) trait SqlxEngine: Fetch<Row: Cells + Sync> + Send {
    /// The engine's SQL.
    const QUERIES: Queries;
}

impl<E: SqlxEngine> AccountReader for E {
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<User>> {
        async move {
            self.fetch_optional(E::QUERIES.user_by_uuid, vec![text(uuid)])
                .await?
                .map(|row| user_from(&row))
                .transpose()
        }
        .boxed()
    }

    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> RepoFuture<'a, bool> {
        async move {
            self.fetch_one(E::QUERIES.is_token_revoked, vec![text(jti)])
                .await?
                .flag("revoked")
        }
        .boxed()
    }

    fn all_users(&self, limit: u32) -> RepoFuture<'_, Option<Vec<User>>> {
        async move {
            let binds = vec![Bind::Int(support::limit(limit))];
            let rows = self.fetch_all(E::QUERIES.all_users, binds).await?;
            rows.iter()
                .map(user_from)
                .collect::<Result<_, _>>()
                .map(Some)
        }
        .boxed()
    }

    fn revoked_jtis(&self, limit: u32) -> RepoFuture<'_, Option<Vec<String>>> {
        async move {
            let binds = vec![Bind::Int(support::limit(limit))];
            let rows = self
                .fetch_all("SELECT jti FROM revoked_tokens LIMIT ?", binds)
                .await?;
            rows.iter()
                .map(|row| row.text("jti"))
                .collect::<Result<_, _>>()
                .map(Some)
        }
        .boxed()
    }
}

impl<E: SqlxEngine> AttackerReader for E {
    fn attacker_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<Attacker>> {
        async move {
            self.fetch_optional(E::QUERIES.attacker_by_uuid, vec![text(uuid)])
                .await?
                .map(|row| attacker_from(&row))
                .transpose()
        }
        .boxed()
    }

    fn latest_observation_per_primitive<'a>(
        &'a self,
        attacker_uuid: &'a str,
    ) -> RepoFuture<'a, Vec<Observation>> {
        async move {
            let binds = vec![text(attacker_uuid); E::QUERIES.latest_per_primitive_binds];
            let rows = self
                .fetch_all(E::QUERIES.latest_per_primitive, binds)
                .await?;
            let rows = rows
                .iter()
                .map(observation_from)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(latest_per_primitive(&rows))
        }
        .boxed()
    }

    fn attackers_of_identity<'a>(&'a self, identity_uuid: &'a str) -> RepoFuture<'a, Vec<String>> {
        async move {
            let rows = self
                .fetch_all(E::QUERIES.attackers_of_identity, vec![text(identity_uuid)])
                .await?;
            let mut uuids = rows
                .iter()
                .map(|row| row.text("uuid"))
                .collect::<Result<Vec<_>, _>>()?;
            uuids.sort();
            Ok(uuids)
        }
        .boxed()
    }
}

impl<E: SqlxEngine> IdentityReader for E {
    fn recent_identities(&self, limit: u32) -> RepoFuture<'_, Vec<IdentityRow>> {
        async move {
            let binds = vec![Bind::Int(support::limit(limit))];
            let rows = self.fetch_all(E::QUERIES.recent_identities, binds).await?;
            rows.iter().map(identity_from).collect()
        }
        .boxed()
    }
}

impl<E: SqlxEngine> CampaignReader for E {
    fn recent_campaigns(&self, limit: u32) -> RepoFuture<'_, Vec<CampaignRow>> {
        async move {
            let binds = vec![Bind::Int(support::limit(limit))];
            let rows = self.fetch_all(E::QUERIES.recent_campaigns, binds).await?;
            rows.iter().map(campaign_from).collect()
        }
        .boxed()
    }
}

impl<E: SqlxEngine> OrchestratorReader for E {
    fn recent_orchestrator_events(&self, limit: u32) -> RepoFuture<'_, Vec<OrchestratorEventRow>> {
        async move {
            let binds = vec![Bind::Int(support::limit(limit))];
            let sql = E::QUERIES.recent_orchestrator_events;
            let rows = self.fetch_all(sql, binds).await?;
            rows.iter().map(orchestrator_event_from).collect()
        }
        .boxed()
    }
}

impl<E: SqlxEngine> TopologyReader for E {
    /// Both reads in one transaction ([`Queries::topology_begin`]): one
    /// snapshot, whatever DECNET commits in between.
    fn topology_snapshot<'a>(
        &'a self,
        topology_id: &'a str,
    ) -> RepoFuture<'a, Option<TopologySnapshot>> {
        async move {
            let rows = self
                .fetch_head_and_rest(
                    E::QUERIES.topology_begin,
                    (E::QUERIES.topology_status, vec![text(topology_id)]),
                    (E::QUERIES.in_flight_mutations, vec![text(topology_id)]),
                )
                .await?;
            rows.map(|(status, mutations)| topology_from(&status, &mutations))
                .transpose()
        }
        .boxed()
    }
}

impl<E: SqlxEngine> LogReader for E {
    fn max_log_id(&self) -> RepoFuture<'_, i64> {
        async move {
            self.fetch_one(E::QUERIES.max_log_id, Vec::new())
                .await?
                .int("max_id")
        }
        .boxed()
    }

    fn logs_after_id<'a>(
        &'a self,
        after: i64,
        limit: u32,
        filter: &'a LogFilter,
    ) -> RepoFuture<'a, Vec<LogRow>> {
        async move {
            let filter = conditions(filter, E::QUERIES.dialect, 1);
            let sql = format!(
                "SELECT {} FROM logs WHERE id > ?{} ORDER BY id ASC LIMIT ?",
                E::QUERIES.log_columns,
                filter.and_clause()
            );
            let mut binds = vec![Bind::Int(after)];
            binds.extend(filter.binds.into_iter().map(Bind::Text));
            binds.push(Bind::Int(support::limit(limit)));
            let rows = self.fetch_all(&sql, binds).await?;
            rows.iter().map(log_from).collect()
        }
        .boxed()
    }

    fn log_stats(&self) -> RepoFuture<'_, LogStats> {
        async move { stats_from(&self.fetch_one(E::QUERIES.log_stats, Vec::new()).await?) }.boxed()
    }

    fn log_histogram<'a>(
        &'a self,
        filter: &'a LogFilter,
        interval_minutes: u32,
    ) -> RepoFuture<'a, Vec<HistogramBucket>> {
        async move {
            let width = u64::from(interval_minutes.max(1)) * 60;
            let filter = conditions(filter, E::QUERIES.dialect, 1);
            let sql = format!(
                "SELECT {} AS bucket_time, COUNT(*) AS n FROM logs{} \
                 GROUP BY bucket_time ORDER BY bucket_time",
                (E::QUERIES.histogram_bucket)(width),
                filter.where_clause()
            );
            let binds = filter.binds.into_iter().map(Bind::Text).collect();
            let rows = self.fetch_all(&sql, binds).await?;
            rows.iter()
                .map(|row| {
                    Ok(HistogramBucket {
                        time: row.opt_text("bucket_time")?,
                        count: row.int("n")?,
                    })
                })
                .collect()
        }
        .boxed()
    }
}

impl<E: SqlxEngine> Health for E {
    fn ping(&self) -> RepoFuture<'_, ()> {
        async move {
            self.fetch_one("SELECT 1 AS one", Vec::new())
                .await
                .map(drop)
        }
        .boxed()
    }
}
