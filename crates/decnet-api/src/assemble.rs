//! [`App::from_settings`]: the application the settings table describes,
//! over backends the caller built (the binary, or an embedder that reads
//! DECNET's env file the same way).

use std::sync::Arc;

use decnet_auth::{ConnectionLimiter, TicketStore, TokenVerifier, VerifierConfig};
use decnet_bus::Bus;
use decnet_repo::{CountedRepository, Repository};
use decnet_stream::{LogHub, StreamHub, decnet_kinds};

use crate::app::{App, AppParts};
use crate::breaker::RepositoryBreaker;
use crate::proxy::Upstream;
use crate::settings::Settings;

/// The backends [`App::from_settings`] runs on; which concrete ones is the
/// caller's choice.
pub struct Backends {
    /// Every reader (accounts, the stream kinds, `/stream`, health).
    pub repository: Arc<dyn Repository>,
    /// The bus.
    pub bus: Bus,
    /// The ticket store.
    pub tickets: Arc<dyn TicketStore>,
    /// The HS256 secret shared with DECNET's API.
    pub secret: Vec<u8>,
}

impl App {
    /// DECNET's six streams, the ticket endpoint and the ops endpoints, as
    /// `settings` configure them, on `backends`: starts the hub (it
    /// subscribes in the background) and `/stream`'s log pollers; forwards
    /// the rest to `DECNET_EVENTS_UPSTREAM` when it is set. Every query to
    /// the repository is counted (`decnet_repository_queries_total{read}`),
    /// and every reader goes through the repository's circuit breaker
    /// ([`RepositoryBreaker::guard`]); the breaker probes the (counted)
    /// repository itself, and its fast refusals reach no database.
    pub fn from_settings(settings: &Settings, backends: Backends) -> App {
        let Backends {
            repository: health,
            bus,
            tickets,
            secret,
        } = backends;
        let counted = CountedRepository::new(health);
        let queries = crate::metrics::RepositoryView(counted.counts());
        let health: Arc<dyn Repository> = Arc::new(counted);
        let breaker = RepositoryBreaker::new(settings.breaker);
        let repository = breaker.guard(health.clone());
        let verifier = TokenVerifier::new(
            VerifierConfig {
                secret,
                leeway_secs: settings.jwt_leeway_secs,
                cache_ttl: Some(crate::VERIFIER_CACHE_TTL),
            },
            repository.clone(),
        );
        let hub = StreamHub::start(bus.clone(), decnet_kinds(&repository), settings.hub.clone());
        let logs = LogHub::new(&hub, repository.clone(), settings.logs.clone());
        let app = App::new(
            AppParts {
                hub,
                verifier,
                tickets,
                limiter: ConnectionLimiter::new(settings.max_per_user, settings.max_total),
                health,
                breaker,
                bus,
                logs: Some(logs),
            },
            settings.app.clone(),
            vec![Box::new(queries)],
        );
        match &settings.upstream {
            Some(upstream) => app.with_upstream(Upstream::new(upstream.clone())),
            None => app,
        }
    }
}
