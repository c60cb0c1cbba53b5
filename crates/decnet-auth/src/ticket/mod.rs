//! Single-use stream tickets.
//!
//! A browser's `EventSource` cannot send an `Authorization` header, so the
//! dashboard trades its JWT for a short-lived opaque ticket
//! (`POST /api/v1/auth/sse-ticket`) and opens the stream with `?ticket=`.
//! A ticket is 32 bytes from the OS CSPRNG, base64url without padding
//! ([`TICKET_LEN`] = 43 characters), bound to the [`Identity`] it was minted
//! for, valid for a TTL, and redeemed by *removing* it in one step: two racing
//! redemptions cannot both succeed, and an expired ticket is removed too.
//!
//! Where tickets live is the [`TicketStore`] seam (dyn-compatible, held as
//! `Arc<dyn TicketStore>`, the policy of every backend seam in this project):
//! [`MemoryTicketStore`] for one instance, `RedisTicketStore` (feature
//! `redis`) for every instance behind a load balancer. Both bound what a
//! client can make them hold ([`TicketLimits`]): live tickets per user and in
//! total.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;

use crate::{BoxError, Identity};

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryTicketStore;
#[cfg(feature = "redis")]
pub use redis::{RedisTicketConfig, RedisTicketStore};

/// Length of a ticket: 32 random bytes in base64url without padding.
pub const TICKET_LEN: usize = 43;

/// The key prefix the Redis store uses unless told otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "decnet:";

/// Tickets live at most this long, whatever TTL is asked for.
pub const MAX_TICKET_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Bounds on the tickets a store holds (DECNET has none: a mint flood grows
/// its dict without limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketLimits {
    /// Live (minted, unredeemed, unexpired) tickets per user; a mint beyond is
    /// refused with [`TicketError::UserLimit`] (HTTP 429). Default 20.
    pub per_user: usize,
    /// Live tickets in the whole store; a mint beyond is refused with
    /// [`TicketError::Full`] (HTTP 503). Default 100,000.
    pub total: usize,
}

impl Default for TicketLimits {
    fn default() -> Self {
        TicketLimits {
            per_user: 20,
            total: 100_000,
        }
    }
}

/// A freshly minted ticket.
///
/// `Debug` and `Display` never show the value: call [`Ticket::expose`] only
/// to put it in the response body.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    value: String,
    ttl: Duration,
}

impl Ticket {
    /// The ticket's value, for the HTTP response. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// How long the ticket is valid from minting (the response's `expires_in`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(<redacted>)")
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a ticket could not be minted or redeemed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The backing store failed or did not answer in time (HTTP 503).
    #[error("ticket store unavailable")]
    Unavailable(#[source] BoxError),
    /// The user already holds this many live tickets (HTTP 429).
    #[error("ticket limit ({limit}) reached for this user")]
    UserLimit {
        /// The per-user maximum.
        limit: usize,
    },
    /// The store holds its maximum of live tickets (HTTP 503).
    #[error("ticket store full ({limit} live tickets)")]
    Full {
        /// The configured maximum.
        limit: usize,
    },
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Random(#[source] BoxError),
}

/// A snapshot of a store's counters, for metrics. Counters are per store
/// handle family (clones share them) and per process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketCounters {
    /// Tickets minted.
    pub minted: u64,
    /// Mints refused because the user or the store held its maximum.
    pub refused: u64,
    /// Redemptions that returned an identity.
    pub redeemed_ok: u64,
    /// Redemptions of an unknown (never minted, already redeemed, or malformed)
    /// ticket. The Redis store counts expired tickets here too: Redis removes
    /// them itself.
    pub redeemed_unknown: u64,
    /// Redemptions of a ticket found but past its TTL (memory store).
    pub redeemed_expired: u64,
    /// Redemptions of a stored value that failed its integrity check (a
    /// value written into Redis by someone without the key; Redis store).
    pub redeemed_forged: u64,
    /// Mints and redemptions that failed with [`TicketError::Unavailable`]
    /// or [`TicketError::Random`].
    pub failures: u64,
    /// Live tickets held now (memory store; the Redis store reports 0).
    pub live: u64,
}

/// Live counters shared by the clones of one store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    minted: AtomicU64,
    refused: AtomicU64,
    redeemed_ok: AtomicU64,
    redeemed_unknown: AtomicU64,
    redeemed_expired: AtomicU64,
    redeemed_forged: AtomicU64,
    failures: AtomicU64,
}

/// How a redemption ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Redeemed {
    Ok,
    Unknown,
    Expired,
    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "Redis store only"))]
    Forged,
}

impl Counters {
    pub(crate) fn minted(&self) {
        self.minted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn redeemed(&self, outcome: Redeemed) {
        let counter = match outcome {
            Redeemed::Ok => &self.redeemed_ok,
            Redeemed::Unknown => &self.redeemed_unknown,
            Redeemed::Expired => &self.redeemed_expired,
            Redeemed::Forged => &self.redeemed_forged,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, live: u64) -> TicketCounters {
        TicketCounters {
            minted: self.minted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            redeemed_ok: self.redeemed_ok.load(Ordering::Relaxed),
            redeemed_unknown: self.redeemed_unknown.load(Ordering::Relaxed),
            redeemed_expired: self.redeemed_expired.load(Ordering::Relaxed),
            redeemed_forged: self.redeemed_forged.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            live,
        }
    }
}

/// A new ticket value: 32 bytes from the OS CSPRNG, base64url, no padding.
pub(crate) fn generate() -> Result<String, TicketError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TicketError::Random(Box::new(e)))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `ticket` could be one we minted; anything else is unknown without
/// touching the store (bounds the work and the key an input can name).
pub(crate) fn well_formed(ticket: &str) -> bool {
    ticket.len() == TICKET_LEN
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where tickets live.
///
/// After redeeming, re-check the identity with
/// [`crate::TokenVerifier::revalidate`]: the token it came from may have been
/// revoked, or the user deleted, since the ticket was minted.
pub trait TicketStore: Send + Sync + 'static {
    /// Mint a single-use ticket for `identity`, valid for `ttl` (at most
    /// [`MAX_TICKET_TTL`]).
    ///
    /// # Errors
    ///
    /// [`TicketError::UserLimit`] when the user holds
    /// [`TicketLimits::per_user`] live tickets, [`TicketError::Full`] at
    /// [`TicketLimits::total`], [`TicketError::Random`] when the OS random
    /// number generator fails, [`TicketError::Unavailable`] when the backing
    /// store fails or times out.
    fn mint<'a>(
        &'a self,
        identity: &'a Identity,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Ticket, TicketError>>;

    /// Redeem `ticket`: the identity it was minted for, or `None` when it is
    /// unknown, malformed, already redeemed, expired or fails its integrity
    /// check. The ticket is deleted whatever the outcome (an expired one too),
    /// so it can never be redeemed twice.
    ///
    /// # Errors
    ///
    /// [`TicketError::Unavailable`] when the backing store fails or times out
    /// (the ticket may or may not have been consumed).
    fn redeem<'a>(
        &'a self,
        ticket: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, TicketError>>;

    /// A snapshot of this store's counters.
    fn counters(&self) -> TicketCounters;

    /// A short name for logs and readiness: `"memory"`, `"redis"`, ...
    fn kind(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tickets_are_43_base64url_chars() {
        for _ in 0..100 {
            let ticket = generate().expect("rng");
            assert_eq!(ticket.len(), TICKET_LEN);
            assert!(well_formed(&ticket), "{ticket}");
            assert!(!ticket.contains('='));
            assert_eq!(
                URL_SAFE_NO_PAD.decode(&ticket).map(|b| b.len()).ok(),
                Some(32)
            );
        }
        assert_ne!(generate().ok(), generate().ok());
    }

    #[test]
    fn malformed_tickets_are_recognised() {
        let good = "A".repeat(TICKET_LEN);
        assert!(well_formed(&good));
        for bad in [
            String::new(),
            "A".repeat(TICKET_LEN - 1),
            "A".repeat(TICKET_LEN + 1),
            format!("{}=", "A".repeat(TICKET_LEN - 1)),
            format!("{}+", "A".repeat(TICKET_LEN - 1)),
            format!("{}/", "A".repeat(TICKET_LEN - 1)),
            format!("{}é", "A".repeat(TICKET_LEN - 2)),
        ] {
            assert!(!well_formed(&bad), "{bad:?}");
        }
    }

    #[test]
    fn ticket_formatting_redacts_the_value() {
        let ticket = Ticket {
            value: "s3cr3t-value".into(),
            ttl: Duration::from_secs(60),
        };
        assert_eq!(format!("{ticket:?}"), "Ticket(<redacted>)");
        assert_eq!(format!("{ticket}"), "<redacted>");
        assert_eq!(
            format!("{:#?}", Some(&ticket)),
            "Some(\n    Ticket(<redacted>),\n)"
        );
        assert_eq!(ticket.expose(), "s3cr3t-value");
    }
}
