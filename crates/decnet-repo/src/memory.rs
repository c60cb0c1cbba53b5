//! The in-memory backend.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::{Attacker, Observation, RepoError, Repository, User, latest_per_primitive};

#[derive(Debug, Default)]
struct Tables {
    attackers: HashMap<String, Attacker>,
    /// Observations keyed by attacker uuid.
    observations: HashMap<String, Vec<Observation>>,
    users: HashMap<String, User>,
    revoked: HashSet<String>,
}

/// In-process repository: the embedded demo's and the tests' backend.
///
/// A `std::sync::Mutex` guards the maps: every critical section is a short map
/// operation with no `.await` inside. [`MemoryRepository::set_available`] lets
/// tests simulate an unreachable database.
#[derive(Debug, Clone, Default)]
pub struct MemoryRepository {
    tables: Arc<Mutex<Tables>>,
    unavailable: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("memory repository switched off")]
struct SwitchedOff;

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
}

impl Repository for MemoryRepository {
    async fn attacker_by_uuid(&self, uuid: &str) -> Result<Option<Attacker>, RepoError> {
        Ok(self.tables()?.attackers.get(uuid).cloned())
    }

    async fn latest_observation_per_primitive(
        &self,
        attacker_uuid: &str,
    ) -> Result<Vec<Observation>, RepoError> {
        let tables = self.tables()?;
        Ok(tables
            .observations
            .get(attacker_uuid)
            .map(|rows| latest_per_primitive(rows.iter()))
            .unwrap_or_default())
    }

    async fn user_by_uuid(&self, uuid: &str) -> Result<Option<User>, RepoError> {
        Ok(self.tables()?.users.get(uuid).cloned())
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool, RepoError> {
        Ok(self.tables()?.revoked.contains(jti))
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.tables().map(drop)
    }

    async fn upsert_attacker(&self, attacker: &Attacker) -> Result<(), RepoError> {
        self.tables()?
            .attackers
            .insert(attacker.uuid.clone(), attacker.clone());
        Ok(())
    }

    async fn upsert_observation(&self, observation: &Observation) -> Result<(), RepoError> {
        let mut tables = self.tables()?;
        if !tables.attackers.contains_key(&observation.attacker_uuid) {
            return Err(RepoError::InvalidData(format!(
                "observation {} references unknown attacker {}",
                observation.id, observation.attacker_uuid
            )));
        }
        // `id` is the primary key: it may only name the row being replaced.
        let same_key = |row: &Observation| {
            row.evidence_ref == observation.evidence_ref && row.primitive == observation.primitive
        };
        if tables
            .observations
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
        for rows in tables.observations.values_mut() {
            rows.retain(|row| !same_key(row));
        }
        tables
            .observations
            .entry(observation.attacker_uuid.clone())
            .or_default()
            .push(observation.clone());
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<(), RepoError> {
        let mut tables = self.tables()?;
        if tables
            .users
            .values()
            .any(|other| other.username == user.username && other.uuid != user.uuid)
        {
            return Err(RepoError::InvalidData(format!(
                "username {:?} already taken",
                user.username
            )));
        }
        tables.users.insert(user.uuid.clone(), user.clone());
        Ok(())
    }

    async fn delete_user(&self, uuid: &str) -> Result<(), RepoError> {
        self.tables()?.users.remove(uuid);
        Ok(())
    }

    async fn set_attacker_identity(
        &self,
        attacker_uuid: &str,
        identity_id: Option<&str>,
    ) -> Result<(), RepoError> {
        let mut tables = self.tables()?;
        match tables.attackers.get_mut(attacker_uuid) {
            Some(attacker) => {
                attacker.identity_id = identity_id.map(str::to_owned);
                Ok(())
            }
            None => Err(RepoError::InvalidData(format!(
                "unknown attacker {attacker_uuid}"
            ))),
        }
    }

    async fn revoke_token(
        &self,
        jti: &str,
        _user_uuid: &str,
        _expires_at: SystemTime,
    ) -> Result<(), RepoError> {
        self.tables()?.revoked.insert(jti.to_owned());
        Ok(())
    }
}
