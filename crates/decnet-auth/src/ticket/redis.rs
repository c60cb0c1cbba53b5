//! The Redis ticket store (feature `redis`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, warn};

use super::{Counters, Redeemed, Ticket, TicketCounters, TicketError, generate, well_formed};
use crate::Identity;

/// Bound on connecting and on each command.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many fresh values a mint tries if `SET NX` finds the key taken (with
/// 256 random bits this never happens; the loop only keeps `NX` honest).
const MINT_ATTEMPTS: usize = 3;

/// Tickets in Redis, shared by every instance behind a load balancer.
///
/// Keys are `<prefix>sse_ticket:<ticket>`; the value is the identity as JSON,
/// written with `SET key value EX <ttl> NX` (TTL rounded up to whole seconds,
/// at least 1 s) and redeemed with `GETDEL`, which reads and deletes in one
/// atomic step: single use across instances. Redis removes expired keys itself.
///
/// One multiplexed [`ConnectionManager`] connection that reconnects on its own;
/// every command is bounded by a timeout and any failure is
/// [`TicketError::Unavailable`]. Cheap to clone.
#[derive(Clone)]
pub struct RedisTicketStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    counters: Arc<Counters>,
}

impl fmt::Debug for RedisTicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTicketStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> TicketError {
    TicketError::Unavailable(Box::new(error))
}

impl RedisTicketStore {
    /// Connect to `url` with keys under `prefix`, each command bounded by 2 s.
    ///
    /// # Errors
    ///
    /// [`TicketError::Unavailable`] when the URL is invalid or Redis cannot be
    /// reached in time.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, TicketError> {
        Self::connect_with_timeout(url, prefix, DEFAULT_TIMEOUT).await
    }

    /// Connect to `url` with keys under `prefix`, bounding the connection and
    /// every later command by `timeout`.
    ///
    /// # Errors
    ///
    /// [`TicketError::Unavailable`] when the URL is invalid or Redis cannot be
    /// reached in time.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, TicketError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = tokio::time::timeout(
            timeout.saturating_mul(2),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: Arc::from(prefix),
            timeout,
            counters: Arc::default(),
        })
    }

    fn key(&self, ticket: &str) -> String {
        format!("{}sse_ticket:{ticket}", self.prefix)
    }

    /// Run one command under the timeout; any failure is `Unavailable`.
    async fn bounded<T>(
        &self,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, TicketError> {
        let result = match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => unavailable(error),
            Err(elapsed) => unavailable(elapsed),
        };
        self.counters.failed();
        Err(result)
    }

    /// Mint a ticket for `identity`, valid for `ttl` (whole seconds, rounded
    /// up, at least 1 s).
    ///
    /// # Errors
    ///
    /// [`TicketError::Random`] when the OS random number generator fails;
    /// [`TicketError::Unavailable`] when Redis fails or times out.
    pub async fn mint(&self, identity: &Identity, ttl: Duration) -> Result<Ticket, TicketError> {
        let json = serde_json::to_string(identity).map_err(unavailable)?;
        let seconds = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .max(1);
        for _ in 0..MINT_ATTEMPTS {
            let value = generate().inspect_err(|_| self.counters.failed())?;
            let mut connection = self.connection.clone();
            let set: Option<String> = self
                .bounded(
                    redis::cmd("SET")
                        .arg(self.key(&value))
                        .arg(&json)
                        .arg("EX")
                        .arg(seconds)
                        .arg("NX")
                        .query_async(&mut connection),
                )
                .await?;
            if set.is_some() {
                self.counters.minted();
                return Ok(Ticket {
                    value,
                    ttl: Duration::from_secs(seconds),
                });
            }
        }
        self.counters.failed();
        Err(TicketError::Random(
            "random ticket values collided repeatedly".into(),
        ))
    }

    /// Redeem `ticket` with `GETDEL`: the identity when it was live, `None` when
    /// unknown, malformed, already redeemed, expired or unreadable.
    ///
    /// # Errors
    ///
    /// [`TicketError::Unavailable`] when Redis fails or times out.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Identity>, TicketError> {
        if !well_formed(ticket) {
            self.counters.redeemed(Redeemed::Unknown);
            return Ok(None);
        }
        let mut connection = self.connection.clone();
        let json: Option<String> = self
            .bounded(
                redis::cmd("GETDEL")
                    .arg(self.key(ticket))
                    .query_async(&mut connection),
            )
            .await?;
        let Some(json) = json else {
            debug!("unknown or expired ticket redeemed");
            self.counters.redeemed(Redeemed::Unknown);
            return Ok(None);
        };
        match serde_json::from_str::<Identity>(&json) {
            Ok(identity) => {
                self.counters.redeemed(Redeemed::Ok);
                Ok(Some(identity))
            }
            Err(error) => {
                // Fail closed; the key (which holds the ticket) is not logged.
                warn!(%error, "ticket value in redis is not an identity");
                self.counters.redeemed(Redeemed::Unknown);
                Ok(None)
            }
        }
    }

    /// A snapshot of this store's counters (this process only).
    pub fn counters(&self) -> TicketCounters {
        self.counters.snapshot()
    }
}
