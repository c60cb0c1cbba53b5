//! The session behind a stream: the seam to the auth layer ([`SessionCheck`])
//! and the watch that ends a stream when its session does ([`SessionWatch`]).
//!
//! The watch is a future of its own, not part of the stream body: a server
//! polls a body only while the socket takes bytes, so a client that stops
//! reading would otherwise keep its stream (and its slot) past its token's
//! `exp` and past a revocation. The HTTP layer takes the watch with
//! [`crate::EventStream::take_session_watch`] and polls it from the
//! connection task, which can drop the connection whatever the client does;
//! a stream whose watch was not taken drives it itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a periodic re-check of a stream's session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// The session is still valid.
    Valid,
    /// The token expired or was revoked: end the stream with `Session expired`.
    Ended,
    /// The check could not be made (e.g. the database is down); try again later.
    Unknown,
}

/// The session (JWT) a stream was opened with, as the stream sees it.
///
/// The HTTP layer implements it with the auth crate; this crate only calls
/// it, so the stream core stays free of JWT and HTTP concerns.
pub trait SessionCheck: Send + Sync + 'static {
    /// When the token behind the stream expires, if it does (and if that
    /// instant is representable).
    fn expires_at(&self) -> Option<SystemTime>;

    /// Re-check revocation (jti denylist, `tokens_valid_from`, user deleted,
    /// role no longer allowed). Called every `HubConfig::revalidate_every`.
    fn revalidate(&self) -> BoxFuture<'static, SessionVerdict>;
}

/// Why a session ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The token expired or was revoked (`Session expired`).
    Expired,
    /// No revalidation succeeded for [`crate::HubConfig::session_unknown_max`]
    /// (the repository is down): the session cannot be vouched for any
    /// longer (`Stream interrupted`).
    Unverifiable,
}

const RUNNING: u8 = 0;
const EXPIRED: u8 = 1;
const UNVERIFIABLE: u8 = 2;

/// The state a stream and its watch share.
#[derive(Debug)]
pub(crate) struct SessionFlag {
    ended: AtomicU8,
    notify: Notify,
    /// The hub's count of expired sessions, raised when this one expires:
    /// here and not in the stream's body, which a client that stopped
    /// reading never lets run again.
    expired: Arc<AtomicU64>,
}

impl SessionFlag {
    pub(crate) fn ended(&self) -> Option<SessionEnd> {
        match self.ended.load(Ordering::Acquire) {
            EXPIRED => Some(SessionEnd::Expired),
            UNVERIFIABLE => Some(SessionEnd::Unverifiable),
            _ => None,
        }
    }

    fn end(&self, why: SessionEnd) {
        let code = match why {
            SessionEnd::Expired => EXPIRED,
            SessionEnd::Unverifiable => UNVERIFIABLE,
        };
        let first = self
            .ended
            .compare_exchange(RUNNING, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first && why == SessionEnd::Expired {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        self.notify.notify_waiters();
        // A stream not waiting right now sees the flag on its next wake-up;
        // store a permit too so the next `notified()` returns at once.
        self.notify.notify_one();
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.ended().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// Checks a stream's session on a timer of its own and ends the stream when
/// the session ends. Poll [`SessionWatch::ended`] from a task that runs
/// whatever the client does (the connection task).
pub struct SessionWatch {
    check: Arc<dyn SessionCheck>,
    flag: Arc<SessionFlag>,
    expires_at: Option<Instant>,
    revalidate_every: Duration,
    unknown_max: Duration,
}

impl std::fmt::Debug for SessionWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWatch")
            .field("expires_at", &self.expires_at)
            .field("revalidate_every", &self.revalidate_every)
            .finish_non_exhaustive()
    }
}

/// `at` on the monotonic clock, or `None` when it is beyond what the clock
/// can hold (checked arithmetic: `at` comes from a token).
pub(crate) fn instant_of(at: SystemTime) -> Option<Instant> {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now.checked_add(ahead),
        Err(_) => Some(now),
    }
}

impl SessionWatch {
    /// The flag a stream opened with `session` checks and the watch its
    /// connection task runs (neither for a stream without a session);
    /// `expired` counts the sessions that expire.
    pub(crate) fn for_session(
        session: Option<Arc<dyn SessionCheck>>,
        revalidate_every: Duration,
        unknown_max: Duration,
        expired: &Arc<AtomicU64>,
    ) -> (Option<Arc<SessionFlag>>, Option<SessionWatch>) {
        let Some(check) = session else {
            return (None, None);
        };
        let flag = Arc::new(SessionFlag {
            ended: AtomicU8::new(RUNNING),
            notify: Notify::new(),
            expired: expired.clone(),
        });
        let expires_at = check.expires_at().and_then(instant_of);
        let watch = Self {
            check,
            flag: flag.clone(),
            expires_at,
            revalidate_every,
            unknown_max,
        };
        (Some(flag), Some(watch))
    }

    /// Run the checks until the session ends; the stream is told at once
    /// (it sends its error frame and ends). Cancel-safe: dropping the future
    /// stops the checks, nothing else.
    pub async fn ended(&self) -> SessionEnd {
        let mut last_valid = Instant::now();
        loop {
            if let Some(why) = self.flag.ended() {
                return why;
            }
            let now = Instant::now();
            let next_check = now.checked_add(self.revalidate_every).unwrap_or(now);
            let wake = match self.expires_at {
                Some(expires) => expires.min(next_check),
                None => next_check,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.flag.wait() => continue,
            }
            let now = Instant::now();
            if self.expires_at.is_some_and(|at| at <= now) {
                self.flag.end(SessionEnd::Expired);
                continue;
            }
            if wake < next_check {
                continue;
            }
            match self.check.revalidate().await {
                SessionVerdict::Valid => last_valid = Instant::now(),
                SessionVerdict::Ended => self.flag.end(SessionEnd::Expired),
                SessionVerdict::Unknown => {
                    if Instant::now().saturating_duration_since(last_valid) >= self.unknown_max {
                        self.flag.end(SessionEnd::Unverifiable);
                    }
                }
            }
        }
    }

    /// Whether the session has ended (the stream has been told).
    pub fn has_ended(&self) -> Option<SessionEnd> {
        self.flag.ended()
    }
}
