//! The Redis ticket store (feature `redis`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::FutureExt;
use futures::future::BoxFuture;
use hmac::{KeyInit, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, warn};

use super::{
    Counters, DEFAULT_REDIS_PREFIX, MAX_TICKET_TTL, Redeemed, Ticket, TicketCounters, TicketError,
    TicketLimits, TicketStore, generate, well_formed,
};
use crate::Identity;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bound on connecting and on each command.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many fresh values a mint tries if `SET NX` finds the key taken (with
/// 256 random bits this never happens; the loop only keeps `NX` honest).
const MINT_ATTEMPTS: usize = 3;

/// Mint atomically: drop expired members of the user's and the store's live
/// sets (scores are expiry times in ms, Redis's own clock), refuse at either
/// cap, else `SET key value EX ttl NX` and record the member in both sets.
/// Returns 1 minted, 0 key taken, -1 user cap, -2 total cap.
const MINT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then return -2 end
if not redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl, 'NX') then return 0 end
local expiry = now + ttl * 1000
redis.call('ZADD', KEYS[2], expiry, ARGV[5])
redis.call('ZADD', KEYS[3], expiry, ARGV[5])
redis.call('EXPIRE', KEYS[2], ttl + 1)
return 1
";

/// Settings of a [`RedisTicketStore`].
#[derive(Clone)]
pub struct RedisTicketConfig {
    /// `redis://[user:password@]host:port[/db]` (never logged).
    pub url: String,
    /// Key prefix ([`DEFAULT_REDIS_PREFIX`] for DECNET's layout).
    pub prefix: String,
    /// The secret the key hash and the value MAC are derived from; every
    /// instance sharing the Redis must use the same (the JWT secret is).
    pub secret: Vec<u8>,
    /// Live-ticket caps (per user, and in the whole Redis under `prefix`).
    pub limits: TicketLimits,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
}

impl RedisTicketConfig {
    /// Settings for `url` with DECNET's prefix, default limits and a 2 s
    /// timeout.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        RedisTicketConfig {
            url: url.into(),
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            secret: secret.into(),
            limits: TicketLimits::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for RedisTicketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTicketConfig")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("secret", &"<redacted>")
            .field("limits", &self.limits)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Tickets in Redis, shared by every instance behind a load balancer.
///
/// Layout (under the configured prefix `P`):
/// - `P sse_ticket:<hex HMAC-SHA256(k1, ticket)>`: the ticket's record, with
///   `EX` = TTL. The key is a keyed hash, so a Redis dump (or `KEYS`) does not
///   reveal a single redeemable ticket.
/// - the record is `<user uuid>\n<base64url HMAC-SHA256(k2, key, identity)>\n<identity JSON>`:
///   a Redis writer without the secret cannot forge an identity or move one
///   record to another key; a record that fails the check is refused (and
///   counted as forged) when redeemed.
/// - `P sse_tickets_user:<uuid>` and `P sse_tickets_all`: sorted sets of live
///   records (score = expiry), for the per-user and total caps; kept by one
///   Lua script per mint, so the cap check and the `SET NX` are atomic.
///
/// `k1` and `k2` are derived from [`RedisTicketConfig::secret`]. Redemption is
/// one `GETDEL`: single use across instances. One multiplexed
/// [`ConnectionManager`] connection that reconnects on its own; every command
/// is bounded by the timeout and any failure is [`TicketError::Unavailable`].
/// Cheap to clone.
#[derive(Clone)]
pub struct RedisTicketStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    key_hash: Arc<HmacSha256>,
    value_mac: Arc<HmacSha256>,
    limits: TicketLimits,
    timeout: Duration,
    counters: Arc<Counters>,
}

impl fmt::Debug for RedisTicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTicketStore")
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> TicketError {
    TicketError::Unavailable(Box::new(error))
}

/// A purpose-bound sub-key of `secret`.
fn derive(secret: &[u8], purpose: &[u8]) -> Result<HmacSha256, TicketError> {
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| TicketError::Unavailable("ticket secret cannot key HMAC-SHA256".into()))?;
    mac.update(purpose);
    let key = mac.finalize().into_bytes();
    HmacSha256::new_from_slice(&key)
        .map_err(|_| TicketError::Unavailable("derived ticket key rejected".into()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

impl RedisTicketStore {
    /// Connect with `config`.
    ///
    /// # Errors
    ///
    /// [`TicketError::Unavailable`] when the URL is invalid, the secret is
    /// empty, or Redis cannot be reached in time.
    pub async fn connect(config: RedisTicketConfig) -> Result<Self, TicketError> {
        if config.secret.is_empty() {
            return Err(TicketError::Unavailable(
                "the Redis ticket store needs a non-empty secret".into(),
            ));
        }
        let key_hash = derive(&config.secret, b"decnet-events sse ticket key v1")?;
        let value_mac = derive(&config.secret, b"decnet-events sse ticket value v1")?;
        let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = tokio::time::timeout(
            config.timeout.saturating_mul(2),
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: Arc::from(config.prefix),
            key_hash: Arc::new(key_hash),
            value_mac: Arc::new(value_mac),
            limits: config.limits,
            timeout: config.timeout,
            counters: Arc::default(),
        })
    }

    /// The Redis key of `ticket`: a keyed hash, never the ticket itself.
    pub fn key_of(&self, ticket: &str) -> String {
        let mut mac = (*self.key_hash).clone();
        mac.update(ticket.as_bytes());
        format!(
            "{}sse_ticket:{}",
            self.prefix,
            hex(&mac.finalize().into_bytes())
        )
    }

    fn user_set(&self, user_uuid: &str) -> String {
        format!("{}sse_tickets_user:{user_uuid}", self.prefix)
    }

    fn all_set(&self) -> String {
        format!("{}sse_tickets_all", self.prefix)
    }

    fn seal(&self, key: &str, json: &str) -> String {
        let mut mac = (*self.value_mac).clone();
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(json.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The identity in a stored record, if its MAC verifies.
    fn open(&self, key: &str, record: &str) -> Option<Identity> {
        let mut parts = record.splitn(3, '\n');
        let (_user, tag, json) = (parts.next()?, parts.next()?, parts.next()?);
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = (*self.value_mac).clone();
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(json.as_bytes());
        mac.verify_slice(&tag).ok()?;
        serde_json::from_str(json).ok()
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

    async fn mint_ticket(&self, identity: &Identity, ttl: Duration) -> Result<Ticket, TicketError> {
        let json = serde_json::to_string(identity).map_err(unavailable)?;
        let ttl = ttl.min(MAX_TICKET_TTL);
        let seconds = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .max(1);
        for _ in 0..MINT_ATTEMPTS {
            let value = generate().inspect_err(|_| self.counters.failed())?;
            let key = self.key_of(&value);
            let record = format!("{}\n{}\n{json}", identity.user_uuid, self.seal(&key, &json));
            let member = key.rsplit(':').next().unwrap_or(&key).to_owned();
            let mut connection = self.connection.clone();
            let outcome: i64 = self
                .bounded(
                    redis::cmd("EVAL")
                        .arg(MINT_SCRIPT)
                        .arg(3)
                        .arg(&key)
                        .arg(self.user_set(&identity.user_uuid))
                        .arg(self.all_set())
                        .arg(&record)
                        .arg(seconds)
                        .arg(self.limits.per_user)
                        .arg(self.limits.total)
                        .arg(&member)
                        .query_async(&mut connection),
                )
                .await?;
            match outcome {
                1 => {
                    self.counters.minted();
                    return Ok(Ticket {
                        value,
                        ttl: Duration::from_secs(seconds),
                    });
                }
                -1 => {
                    self.counters.refused();
                    return Err(TicketError::UserLimit {
                        limit: self.limits.per_user,
                    });
                }
                -2 => {
                    self.counters.refused();
                    return Err(TicketError::Full {
                        limit: self.limits.total,
                    });
                }
                _ => {}
            }
        }
        self.counters.failed();
        Err(TicketError::Random(
            "random ticket values collided repeatedly".into(),
        ))
    }

    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Identity>, TicketError> {
        if !well_formed(ticket) {
            self.counters.redeemed(Redeemed::Unknown);
            return Ok(None);
        }
        let key = self.key_of(ticket);
        let mut connection = self.connection.clone();
        let record: Option<String> = self
            .bounded(redis::cmd("GETDEL").arg(&key).query_async(&mut connection))
            .await?;
        let Some(record) = record else {
            debug!("unknown or expired ticket redeemed");
            self.counters.redeemed(Redeemed::Unknown);
            return Ok(None);
        };
        // Free the cap slots (best effort: expired members are dropped by the
        // next mint anyway).
        let user = record.split('\n').next().unwrap_or_default();
        let member = key.rsplit(':').next().unwrap_or(&key);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(self.user_set(user))
            .arg(member)
            .ignore()
            .cmd("ZREM")
            .arg(self.all_set())
            .arg(member)
            .ignore();
        if let Err(error) = self.bounded(pipe.query_async::<()>(&mut connection)).await {
            debug!(%error, "could not release a redeemed ticket's cap slot");
        }
        match self.open(&key, &record) {
            Some(identity) => {
                self.counters.redeemed(Redeemed::Ok);
                Ok(Some(identity))
            }
            None => {
                // Fail closed; neither the key nor the value is logged.
                warn!("a stored ticket record failed its integrity check");
                self.counters.redeemed(Redeemed::Forged);
                Ok(None)
            }
        }
    }
}

impl TicketStore for RedisTicketStore {
    fn mint<'a>(
        &'a self,
        identity: &'a Identity,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Ticket, TicketError>> {
        self.mint_ticket(identity, ttl).boxed()
    }

    fn redeem<'a>(
        &'a self,
        ticket: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, TicketError>> {
        self.redeem_ticket(ticket).boxed()
    }

    fn counters(&self) -> TicketCounters {
        self.counters.snapshot(0)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
