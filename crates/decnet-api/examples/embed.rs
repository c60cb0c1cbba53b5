//! decnet-api's routes (the attacker stream, tickets) inside your own hyper service.
use decnet_api::{App, AppParts, RepositoryBreaker, full};
use decnet_auth::{ConnectionLimiter, MemoryTicketStore, TokenVerifier, VerifierConfig};
use decnet_stream::{AttackerKind, StreamHub, StreamKind};
use hyper::{Response, server::conn::http1, service::service_fn};
use std::{convert::Infallible, sync::Arc};
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let health = Arc::new(decnet_repo::MemoryRepository::new()); // your data layer
    let breaker = RepositoryBreaker::default(); // 503 at once while the database is down or hung
    let repo = breaker.guard(health.clone());
    let bus = decnet_bus::Bus::memory(); // or decnet_bus::Bus::connect(&config)
    let kinds: Vec<Arc<dyn StreamKind>> = vec![Arc::new(AttackerKind::new(repo.clone()))];
    let secret = VerifierConfig::new(b"32-byte-secret-shared-with-DECNET");
    let parts = AppParts {
        hub: StreamHub::start(bus.clone(), kinds, Default::default()),
        verifier: TokenVerifier::new(secret, repo.clone()),
        tickets: Arc::new(MemoryTicketStore::default()),
        limiter: ConnectionLimiter::new(5, None),
        health,
        breaker,
        bus,
        logs: None,
    };
    let app = App::new(parts, Default::default(), Vec::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move {
                if app.serves(&request) {
                    return Ok::<_, Infallible>(app.handle(request).await);
                }
                Ok(Response::new(full("your own routes here")))
            }
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        tokio::spawn(http1::Builder::new().serve_connection(io, service));
    }
}
