//! The in-memory backend.
//!
//! It answers every reader with the semantics DECNET has on SQLite, its
//! default engine: `LIKE` ignores ASCII case, `=` does not, a JSON-key search
//! term matches only JSON strings, time bounds compare as text against the
//! stored `YYYY-MM-DD HH:MM:SS.ffffff` form, histogram buckets round the
//! timestamp to milliseconds first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures::FutureExt;

use crate::search::sqlite_numeric;
use crate::traits::RepoFuture;
use crate::{
    AccountReader, Attacker, AttackerReader, CampaignReader, CampaignRow, DbTime, Health,
    HistogramBucket, IdentityReader, IdentityRow, LogFilter, LogReader, LogRow, LogStats,
    MutationRow, Observation, OrchestratorEventRow, OrchestratorReader, RepoError,
    RepositoryWriter, SearchTerm, TopologyReader, TopologySnapshot, User, latest_per_primitive,
};

#[derive(Debug, Default)]
struct Tables {
    attackers: HashMap<String, Attacker>,
    /// Observations keyed by attacker uuid.
    observations: HashMap<String, Vec<Observation>>,
    users: HashMap<String, User>,
    revoked: HashSet<String>,
    identities: HashMap<String, IdentityRow>,
    campaigns: HashMap<String, CampaignRow>,
    orchestrator_events: Vec<OrchestratorEventRow>,
    /// id -> (name, status).
    topologies: HashMap<String, (String, String)>,
    mutations: HashMap<String, MutationRow>,
    /// (topology id, name, state).
    topology_deckies: Vec<(String, String, String)>,
    /// Logs by id (ascending iteration).
    logs: BTreeMap<i64, LogRow>,
}

/// In-process repository: the embedded demo's and the tests' backend.
///
/// A `std::sync::Mutex` guards the maps: every critical section is a short map
/// operation with no `.await` inside. [`MemoryRepository::set_available`] lets
/// tests simulate an unreachable database. Cheap to clone (clones share the
/// tables).
#[derive(Debug, Clone, Default)]
pub struct MemoryRepository {
    tables: Arc<Mutex<Tables>>,
    unavailable: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("memory repository switched off")]
struct SwitchedOff;

#[derive(Debug, thiserror::Error)]
#[error("malformed JSON in logs.fields of row {0}")]
struct MalformedFields(i64);

impl MemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make every call fail with [`RepoError::Unavailable`] (`false`), or
    /// answer again (`true`). For tests of the "database down" paths.
    pub fn set_available(&self, available: bool) {
        self.unavailable.store(!available, Ordering::SeqCst);
    }

    fn tables(&self) -> Result<MutexGuard<'_, Tables>, RepoError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(RepoError::Unavailable(Box::new(SwitchedOff)));
        }
        // A poisoned lock only means another thread panicked mid-update of
        // plain maps; the data is still usable.
        Ok(self.tables.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Run `f` on the tables as a ready future.
    fn with<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&mut Tables) -> Result<T, RepoError> + Send + 'a,
    ) -> RepoFuture<'a, T> {
        let res = self.tables().and_then(|mut tables| f(&mut tables));
        futures::future::ready(res).boxed()
    }
}

impl AccountReader for MemoryRepository {
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<User>> {
        self.with(move |t| Ok(t.users.get(uuid).cloned()))
    }

    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> RepoFuture<'a, bool> {
        self.with(move |t| Ok(t.revoked.contains(jti)))
    }

    fn all_users(&self, limit: u32) -> RepoFuture<'_, Option<Vec<User>>> {
        self.with(move |t| {
            Ok(Some(
                t.users
                    .values()
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .map(|user| User {
                        password_hash: String::new(),
                        ..user.clone()
                    })
                    .collect(),
            ))
        })
    }

    fn revoked_jtis(&self, limit: u32) -> RepoFuture<'_, Option<Vec<String>>> {
        self.with(move |t| {
            Ok(Some(
                t.revoked
                    .iter()
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .cloned()
                    .collect(),
            ))
        })
    }
}

impl AttackerReader for MemoryRepository {
    fn attacker_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<Attacker>> {
        self.with(move |t| Ok(t.attackers.get(uuid).cloned()))
    }

    fn latest_observation_per_primitive<'a>(
        &'a self,
        attacker_uuid: &'a str,
    ) -> RepoFuture<'a, Vec<Observation>> {
        self.with(move |t| {
            Ok(t.observations
                .get(attacker_uuid)
                .map(|rows| latest_per_primitive(rows.iter()))
                .unwrap_or_default())
        })
    }

    fn attackers_of_identity<'a>(&'a self, identity_uuid: &'a str) -> RepoFuture<'a, Vec<String>> {
        self.with(move |t| {
            let mut uuids: Vec<String> = t
                .attackers
                .values()
                .filter(|a| a.identity_id.as_deref() == Some(identity_uuid))
                .map(|a| a.uuid.clone())
                .collect();
            uuids.sort();
            Ok(uuids)
        })
    }
}

/// At most `limit` of the `rows` `keep` keeps, newest first: by `key` (a
/// time, then the uuid breaking ties), descending. The `recent_*` readers.
fn newest<'a, R: Clone + 'a>(
    rows: impl IntoIterator<Item = &'a R>,
    keep: impl Fn(&R) -> bool,
    key: impl Fn(&R) -> (DbTime, &String),
    limit: u32,
) -> Vec<R> {
    let mut rows: Vec<R> = rows.into_iter().filter(|r| keep(r)).cloned().collect();
    rows.sort_by(|a, b| key(b).cmp(&key(a)));
    rows.truncate(limit as usize);
    rows
}

impl IdentityReader for MemoryRepository {
    fn recent_identities(&self, limit: u32) -> RepoFuture<'_, Vec<IdentityRow>> {
        self.with(move |t| {
            Ok(newest(
                t.identities.values(),
                |r| r.merged_into_uuid.is_none(),
                |r| (r.updated_at, &r.uuid),
                limit,
            ))
        })
    }
}

impl CampaignReader for MemoryRepository {
    fn recent_campaigns(&self, limit: u32) -> RepoFuture<'_, Vec<CampaignRow>> {
        self.with(move |t| {
            Ok(newest(
                t.campaigns.values(),
                |r| r.merged_into_uuid.is_none(),
                |r| (r.updated_at, &r.uuid),
                limit,
            ))
        })
    }
}

impl OrchestratorReader for MemoryRepository {
    fn recent_orchestrator_events(&self, limit: u32) -> RepoFuture<'_, Vec<OrchestratorEventRow>> {
        self.with(move |t| {
            Ok(newest(
                &t.orchestrator_events,
                |_| true,
                |r| (r.ts, &r.uuid),
                limit,
            ))
        })
    }
}

impl TopologyReader for MemoryRepository {
    fn topology_snapshot<'a>(
        &'a self,
        topology_id: &'a str,
    ) -> RepoFuture<'a, Option<TopologySnapshot>> {
        self.with(move |t| {
            let Some((_, status)) = t.topologies.get(topology_id) else {
                return Ok(None);
            };
            let mut in_flight = Vec::new();
            for state in ["pending", "applying"] {
                let mut rows: Vec<MutationRow> = t
                    .mutations
                    .values()
                    .filter(|m| m.topology_id == topology_id && m.state == state)
                    .cloned()
                    .collect();
                rows.sort_by(|a, b| (b.requested_at, &b.id).cmp(&(a.requested_at, &a.id)));
                in_flight.extend(rows);
            }
            Ok(Some(TopologySnapshot {
                status: status.clone(),
                in_flight,
            }))
        })
    }
}

/// The stored SQLite text of a naive timestamp (always six fractional digits).
fn sqlite_text(at: DbTime) -> String {
    let utc = at.utc();
    format!(
        "{} {:02}:{:02}:{:02}.{:06}",
        &at.to_sql_seconds()[..10],
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    )
}

/// SQLite's `LIKE`: `%` any run of characters, `_` exactly one character
/// (not byte), ASCII letters compared without case, no escape character.
fn like(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len()
            && pattern[p] != '%'
            && (pattern[p] == '_' || pattern[p].eq_ignore_ascii_case(&text[t]))
        {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

/// Whether `row` passes `filter`, or an error for malformed `fields` JSON
/// when a JSON-key term has to read it (SQLite fails the whole query).
fn passes(row: &LogRow, filter: &LogFilter) -> Result<bool, RepoError> {
    let stored = sqlite_text(row.timestamp);
    if let Some(start) = &filter.start_time
        && !sqlite_numeric(start)
        && stored.as_str() < start.as_str()
    {
        return Ok(false);
    }
    if let Some(end) = &filter.end_time
        && (sqlite_numeric(end) || stored.as_str() > end.as_str())
    {
        return Ok(false);
    }
    for term in &filter.terms {
        let ok = match term {
            SearchTerm::Equals { column, value } => {
                let field = match column {
                    crate::LogColumn::Decky => &row.decky,
                    crate::LogColumn::Service => &row.service,
                    crate::LogColumn::EventType => &row.event_type,
                    crate::LogColumn::AttackerIp => &row.attacker_ip,
                };
                field == value
            }
            SearchTerm::JsonKey { key, value } => {
                let fields: serde_json::Value = serde_json::from_str(&row.fields)
                    .map_err(|_| RepoError::Query(Box::new(MalformedFields(row.id))))?;
                fields.get(key).and_then(serde_json::Value::as_str) == Some(value.as_str())
            }
            SearchTerm::Text(text) => {
                let pattern = format!("%{text}%");
                [&row.raw_line, &row.decky, &row.service, &row.attacker_ip]
                    .iter()
                    .any(|field| like(&pattern, field))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

impl LogReader for MemoryRepository {
    fn max_log_id(&self) -> RepoFuture<'_, i64> {
        self.with(|t| Ok(t.logs.keys().next_back().copied().unwrap_or(0)))
    }

    fn logs_after_id<'a>(
        &'a self,
        after: i64,
        limit: u32,
        filter: &'a LogFilter,
    ) -> RepoFuture<'a, Vec<LogRow>> {
        self.with(move |t| {
            let mut rows = Vec::new();
            for row in t.logs.range(after.saturating_add(1)..).map(|(_, r)| r) {
                if rows.len() >= limit as usize {
                    break;
                }
                if passes(row, filter)? {
                    rows.push(row.clone());
                }
            }
            Ok(rows)
        })
    }

    fn log_stats(&self) -> RepoFuture<'_, LogStats> {
        self.with(|t| {
            let attackers: HashSet<&str> =
                t.logs.values().map(|r| r.attacker_ip.as_str()).collect();
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            Ok(LogStats {
                total_logs: count(t.logs.len()),
                unique_attackers: count(attackers.len()),
                running_topology_deckies: count(
                    t.topology_deckies
                        .iter()
                        .filter(|(_, _, s)| s == "running")
                        .count(),
                ),
                topology_deckies: count(t.topology_deckies.len()),
            })
        })
    }

    fn log_histogram<'a>(
        &'a self,
        filter: &'a LogFilter,
        interval_minutes: u32,
    ) -> RepoFuture<'a, Vec<HistogramBucket>> {
        self.with(move |t| {
            let width = i64::from(interval_minutes.max(1)) * 60;
            let mut buckets: BTreeMap<i64, i64> = BTreeMap::new();
            for row in t.logs.values() {
                if !passes(row, filter)? {
                    continue;
                }
                // strftime('%s') reads the stored text at millisecond precision.
                let millis = row
                    .timestamp
                    .unix_micros()
                    .saturating_add(500)
                    .div_euclid(1000);
                let bucket = millis.div_euclid(1000).div_euclid(width) * width;
                *buckets.entry(bucket).or_default() += 1;
            }
            Ok(buckets
                .into_iter()
                .map(|(start, count)| HistogramBucket {
                    time: DbTime::from_unix_micros(start.saturating_mul(1_000_000))
                        .map(DbTime::to_sql_seconds),
                    count,
                })
                .collect())
        })
    }
}

impl Health for MemoryRepository {
    fn ping(&self) -> RepoFuture<'_, ()> {
        self.with(|_| Ok(()))
    }
}

impl RepositoryWriter for MemoryRepository {
    fn upsert_attacker<'a>(&'a self, attacker: &'a Attacker) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.attackers.insert(attacker.uuid.clone(), attacker.clone());
            Ok(())
        })
    }

    fn upsert_observation<'a>(&'a self, observation: &'a Observation) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            if !t.attackers.contains_key(&observation.attacker_uuid) {
                return Err(RepoError::InvalidData(format!(
                    "observation {} references unknown attacker {}",
                    observation.id, observation.attacker_uuid
                )));
            }
            // `id` is the primary key: it may only name the row being replaced.
            let same_key = |row: &Observation| {
                row.evidence_ref == observation.evidence_ref
                    && row.primitive == observation.primitive
            };
            if t.observations
                .values()
                .flatten()
                .any(|row| row.id == observation.id && !same_key(row))
            {
                return Err(RepoError::InvalidData(format!(
                    "observation id {} already used by another (evidence_ref, primitive)",
                    observation.id
                )));
            }
            // Unique on (evidence_ref, primitive) across all attackers, as in SQL.
            for rows in t.observations.values_mut() {
                rows.retain(|row| !same_key(row));
            }
            t.observations
                .entry(observation.attacker_uuid.clone())
                .or_default()
                .push(observation.clone());
            Ok(())
        })
    }

    fn create_user<'a>(&'a self, user: &'a User) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            if t.users
                .values()
                .any(|other| other.username == user.username && other.uuid != user.uuid)
            {
                return Err(RepoError::InvalidData(format!(
                    "username {:?} already taken",
                    user.username
                )));
            }
            t.users.insert(user.uuid.clone(), user.clone());
            Ok(())
        })
    }

    fn delete_user<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.users.remove(uuid);
            Ok(())
        })
    }

    fn set_attacker_identity<'a>(
        &'a self,
        attacker_uuid: &'a str,
        identity_id: Option<&'a str>,
    ) -> RepoFuture<'a, ()> {
        self.with(move |t| match t.attackers.get_mut(attacker_uuid) {
            Some(attacker) => {
                attacker.identity_id = identity_id.map(str::to_owned);
                Ok(())
            }
            None => Err(RepoError::InvalidData(format!(
                "unknown attacker {attacker_uuid}"
            ))),
        })
    }

    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        _user_uuid: &'a str,
        _expires_at: SystemTime,
    ) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.revoked.insert(jti.to_owned());
            Ok(())
        })
    }

    fn upsert_identity<'a>(&'a self, identity: &'a IdentityRow) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.identities.insert(identity.uuid.clone(), identity.clone());
            Ok(())
        })
    }

    fn upsert_campaign<'a>(&'a self, campaign: &'a CampaignRow) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.campaigns.insert(campaign.uuid.clone(), campaign.clone());
            Ok(())
        })
    }

    fn insert_orchestrator_event<'a>(
        &'a self,
        event: &'a OrchestratorEventRow,
    ) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            if t.orchestrator_events.iter().any(|e| e.uuid == event.uuid) {
                return Err(RepoError::InvalidData(format!(
                    "orchestrator event {} already exists",
                    event.uuid
                )));
            }
            t.orchestrator_events.push(event.clone());
            Ok(())
        })
    }

    fn upsert_topology<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        status: &'a str,
    ) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            if t.topologies
                .iter()
                .any(|(other, (other_name, _))| other_name == name && other != id)
            {
                return Err(RepoError::InvalidData(format!(
                    "topology name {name:?} already taken"
                )));
            }
            t.topologies
                .insert(id.to_owned(), (name.to_owned(), status.to_owned()));
            Ok(())
        })
    }

    fn upsert_mutation<'a>(&'a self, mutation: &'a MutationRow) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.mutations.insert(mutation.id.clone(), mutation.clone());
            Ok(())
        })
    }

    fn insert_topology_decky<'a>(
        &'a self,
        topology_id: &'a str,
        name: &'a str,
        state: &'a str,
    ) -> RepoFuture<'a, ()> {
        self.with(move |t| {
            t.topology_deckies
                .push((topology_id.to_owned(), name.to_owned(), state.to_owned()));
            Ok(())
        })
    }

    fn insert_log<'a>(&'a self, row: &'a LogRow) -> RepoFuture<'a, i64> {
        self.with(move |t| {
            // SQLite's rowid without AUTOINCREMENT: one past the highest.
            let id = t
                .logs
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            let mut row = row.clone();
            row.id = id;
            t.logs.insert(id, row);
            Ok(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_sqlite() {
        let check = |pattern: &str, text: &str| like(pattern, text);
        assert!(check("%ssh%", "OpenSSH login"));
        assert!(check("%a_c%", "xxabcxx"));
        assert!(!check("%a_c%", "xxacxx"));
        assert!(check("%%", ""));
        assert!(check("%50%%", "50% off"));
        assert!(!check("%root%", "rot"));
        // `_` is one character, and only ASCII letters fold.
        assert!(check("%a_c%", "aéc"));
        assert!(!check("%É%", "é"));
        assert!(check("%\\%", "back\\slash"));
    }
}
