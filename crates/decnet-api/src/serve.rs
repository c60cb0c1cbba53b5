//! [`serve`]: accept connections, run each under its watchdogs, drain on
//! shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::Pin;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::conn::{ConnCtx, Gated, ProgressIo};
use crate::h1stream::{self, Rewind};
use crate::tls::Tls;

/// Connection-level settings of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// A request head (request line and headers) must arrive within this
    /// (slowloris); an idle keep-alive connection is closed after it.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (431 beyond); also hyper's read buffer.
    pub max_head_bytes: usize,
    /// A connection whose write makes no progress for this long is dropped
    /// (`DECNET_SSE_WRITE_TIMEOUT_SECS`); also its `TCP_USER_TIMEOUT`.
    pub write_timeout: Duration,
    /// The send buffer of a connection that carries a stream
    /// (`DECNET_SSE_SNDBUF`; 0 leaves the kernel's).
    pub stream_sndbuf: usize,
    /// TCP keepalive idle time: a vanished peer is noticed and its slot freed.
    pub tcp_keepalive: Duration,
    /// Connections held at once (`DECNET_MAX_CONNECTIONS`); more are closed
    /// at accept.
    pub max_connections: usize,
    /// Connections held at once per client address
    /// (`DECNET_MAX_CONNECTIONS_PER_IP`).
    pub max_connections_per_ip: usize,
    /// How long a connection may take to deliver its stream's last frame
    /// once the session behind it ended.
    pub session_end_grace: Duration,
    /// How long shutdown waits for connections to close
    /// (`DECNET_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// HTTPS with ALPN `h2` and `http/1.1` (`DECNET_TLS_CERT`,
    /// `DECNET_TLS_KEY`); plain HTTP/1.1 when `None`.
    pub tls: Option<Arc<Tls>>,
    /// Streams one HTTP/2 connection may carry at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub h2_max_streams: u32,
    /// HTTP/1.1 streams are written by the connection task once hyper has
    /// read their request, without hyper's per-connection buffers
    /// (`DECNET_SSE_HTTP1_HANDOVER`; see docs/ARCHITECTURE.md). `false`
    /// leaves every response to hyper.
    pub http1_handover: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 8 * 1024,
            write_timeout: Duration::from_secs(30),
            stream_sndbuf: 64 * 1024,
            tcp_keepalive: Duration::from_secs(30),
            max_connections: 50_000,
            max_connections_per_ip: 4_096,
            session_end_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            h2_max_streams: 256,
            http1_handover: true,
        }
    }
}

/// Tells connections that the server is shutting down; [`serve`] waits for
/// every clone to be dropped.
#[derive(Debug, Clone)]
struct Drain(tokio::sync::watch::Receiver<bool>);

impl Drain {
    /// Resolve once shutdown began (or the server is gone).
    async fn signaled(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }

    fn is_signaled(&self) -> bool {
        *self.0.borrow()
    }
}

/// Connections held, in total and per client address.
#[derive(Debug, Default)]
struct Holds {
    /// Connections held in total (`decnet_http_connections_open`).
    total: prometheus_client::metrics::gauge::Gauge,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts a connection while its task runs.
struct Held {
    holds: Arc<Mutex<Holds>>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.total.dec();
        if let Some(n) = holds.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                holds.per_ip.remove(&self.ip);
            }
        }
    }
}

fn hold(holds: &Arc<Mutex<Holds>>, ip: IpAddr, config: &ServeConfig) -> Option<Held> {
    // std Mutex: a counter update at accept, never across an `.await`.
    let mut guard = holds.lock().unwrap_or_else(|e| e.into_inner());
    let of_ip = guard.per_ip.get(&ip).copied().unwrap_or(0);
    let total = usize::try_from(guard.total.get()).unwrap_or(0);
    if total >= config.max_connections || of_ip >= config.max_connections_per_ip {
        return None;
    }
    guard.total.inc();
    *guard.per_ip.entry(ip).or_insert(0) += 1;
    Some(Held {
        holds: holds.clone(),
        ip,
    })
}

fn tune(stream: &TcpStream, config: &ServeConfig) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(config.tcp_keepalive)
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "could not set TCP keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket.set_tcp_user_timeout(Some(config.write_timeout)) {
        tracing::debug!(%error, "could not set TCP_USER_TIMEOUT");
    }
}

/// How one accepted connection is served.
struct Served {
    app: App,
    config: Arc<ServeConfig>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Served {
    fn new(app: App, config: ServeConfig) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            // hyper's read buffer grows up to this and stays with the
            // connection: 8 KiB keeps an idle stream small (request heads
            // beyond it get 431).
            .max_buf_size(config.max_head_bytes);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_streams)
            // Windows that let a few frames of every stream be in flight
            // without letting one connection queue megabytes per stream.
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(1024 * 1024)
            .max_send_buf_size(64 * 1024)
            .max_header_list_size(u32::try_from(config.max_head_bytes).unwrap_or(u32::MAX))
            // Pings find a vanished peer, as TCP keepalive does for HTTP/1.1.
            .keep_alive_interval(Some(config.tcp_keepalive))
            .keep_alive_timeout(Duration::from_secs(10));
        Self {
            app,
            config: Arc::new(config),
            http1,
            http2,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting,
/// end every stream cleanly ([`App::shutdown`]: the hub is shut down, and
/// clients reconnect after their `retry`; the repository probe stops), and
/// wait up to [`ServeConfig::shutdown_grace`] for
/// connections to close (HTTP/2 connections get a GOAWAY first).
///
/// Every connection runs under its watchdogs (see [`ServeConfig`]): the
/// header timeout, the write-progress bound, the session of each stream it
/// carries, TCP keepalive (and HTTP/2 pings), and the connection caps. With
/// [`ServeConfig::tls`] every connection is HTTPS, HTTP/2 or HTTP/1.1 as ALPN
/// decides.
///
/// ```no_run
/// # async fn run(app: decnet_api::App) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
/// decnet_api::serve(listener, app, decnet_api::ServeConfig::default(), shutdown).await
/// # }
/// ```
///
/// # Errors
///
/// Never in practice: accept errors are logged and retried; the `Result`
/// leaves room for listener failures a future version may report.
pub async fn serve(
    listener: TcpListener,
    app: App,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let served = Arc::new(Served::new(app.clone(), config));
    let config = served.config.clone();
    let (drain_tx, drain) = tokio::sync::watch::channel(false);
    let drain = Drain(drain);
    let holds = Arc::new(Mutex::new(Holds {
        total: app.connections_gauge(),
        ..Holds::default()
    }));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(held) = hold(&holds, peer.ip(), &config) else {
                    tracing::debug!(peer = %peer, "connection refused: connection cap reached");
                    drop(stream);
                    continue;
                };
                tune(&stream, &config);
                tokio::spawn(connection(served.clone(), stream, peer, drain.clone(), held));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting; ending streams");
    // Connections first (HTTP/2 gets its GOAWAY, HTTP/1.1 no more
    // keep-alive), then the streams end.
    drain_tx.send_replace(true);
    drop(drain);
    app.shutdown();
    match tokio::time::timeout(config.shutdown_grace, drain_tx.closed()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!(grace = ?config.shutdown_grace, "grace period over; dropping remaining connections")
        }
    }
    Ok(())
}

/// The request handler of one connection. On an HTTP/1.1 connection with
/// the hand-over on, a stream's response is offered to the connection task
/// (crate::h1stream) instead of being returned to hyper.
fn service(
    app: App,
    ctx: Arc<ConnCtx>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert::<SocketAddr>(peer);
        request.extensions_mut().insert(ctx.clone());
        let http1 = request.version() <= hyper::Version::HTTP_11;
        let handover = ctx.handover_enabled() && h1stream::eligible(&request);
        // Boxed: hyper keeps a slot for the service future inline in every
        // connection for its whole life, streams included; a box makes that
        // slot one pointer.
        let response = Box::pin({
            let app = app.clone();
            let ctx = ctx.clone();
            async move {
                let response = app.call(request).await;
                if !(http1 && h1stream::is_stream(&response)) {
                    return response;
                }
                if !handover {
                    app.count_http1_stream("hyper");
                    return response;
                }
                // Taken: the connection task drops this future with
                // hyper's connection. Declined: hyper writes it.
                match ctx.offer(response).await {
                    Ok(response) => {
                        app.count_http1_stream("hyper");
                        response
                    }
                    Err(_) => {
                        crate::refusal::Refusal::unavailable("connection closed").into_response()
                    }
                }
            }
        });
        async move { Ok::<_, Infallible>(response.await) }
    })
}

/// Serve one accepted socket: plain HTTP/1.1, or HTTPS (see
/// [`tls_connection`]), under the watchdogs.
async fn connection(
    served: Arc<Served>,
    stream: TcpStream,
    peer: SocketAddr,
    drain: Drain,
    held: Held,
) {
    let config = &served.config;
    let ctx = Arc::new(ConnCtx::default());
    let io = ProgressIo::new(stream, ctx.clone(), config.stream_sndbuf);
    let Some(tls) = &config.tls else {
        guarded(http1(&served, io, &ctx, peer, drain), &ctx, config, held).await;
        return;
    };
    // Boxed: the TLS state and HTTP/2 connection are far larger than a plain
    // HTTP/1.1 connection, and a spawned task is as large as its largest
    // state; inline, every plain connection would carry their size.
    Box::pin(tls_connection(&served, tls, io, ctx, peer, drain, held)).await;
}

/// An HTTPS connection's TLS stream (boxed: see [`tls_connection`]).
type TlsIo = Box<tokio_rustls::server::TlsStream<ProgressIo>>;

/// One HTTPS connection: the TLS handshake (bounded by the header timeout),
/// then HTTP/2 or HTTP/1.1 as ALPN decides.
///
/// A future is as large as its largest state, and an HTTP/1.1 stream over
/// TLS lives in this one for hours: the handshake and HTTP/2 are boxed by
/// [`tls_handshake`] and [`h2_connection`] (a future built inside an
/// `async fn`'s statement stays in its state while awaited), and the TLS
/// stream itself is boxed once, so that HTTP/1.1's states, which move the
/// socket between them, hold a pointer and not 1.2 KB each. Before, the
/// future was 8.3 KB; the test `a_tls_connection_task_stays_small` bounds
/// it.
async fn tls_connection(
    served: &Served,
    tls: &Tls,
    io: ProgressIo,
    ctx: Arc<ConnCtx>,
    peer: SocketAddr,
    drain: Drain,
    held: Held,
) {
    let config = &served.config;
    let tls_stream: TlsIo = match tls_handshake(tls, io, config.header_read_timeout).await {
        Ok(Ok(tls_stream)) => Box::new(tls_stream),
        Ok(Err(error)) => {
            tracing::debug!(peer = %peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    ctx.set_secure();
    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        ctx.set_multiplexed(config.session_end_grace);
        h2_connection(served, tls_stream, ctx, peer, drain, held).await;
    } else {
        guarded(
            http1(served, tls_stream, &ctx, peer, drain),
            &ctx,
            config,
            held,
        )
        .await;
    }
}

/// The TLS handshake within `within`, boxed.
fn tls_handshake(
    tls: &Tls,
    io: ProgressIo,
    within: Duration,
) -> Pin<Box<tokio::time::Timeout<tokio_rustls::Accept<ProgressIo>>>> {
    Box::pin(tokio::time::timeout(within, tls.acceptor().accept(io)))
}

/// HTTP/2 on a TLS stream until it ends or, once drained, finishes its
/// streams; boxed.
fn h2_connection<'a>(
    served: &'a Served,
    tls_stream: TlsIo,
    ctx: Arc<ConnCtx>,
    peer: SocketAddr,
    mut drain: Drain,
    held: Held,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    let service = service(served.app.clone(), ctx.clone(), peer);
    let mut conn = served
        .http2
        .serve_connection(TokioIo::new(tls_stream), service);
    let work = async move {
        let mut draining = false;
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = drain.signaled(), if !draining => {
                    draining = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
        }
    };
    Box::pin(async move { guarded(work, &ctx, &served.config, held).await })
}

/// An HTTP/1.1 connection: hyper reads the requests and writes the
/// responses, except a stream's, which it hands over (see crate::h1stream):
/// the socket is taken back from hyper, the stream written here, and the
/// socket given to a new hyper connection when the stream ends.
async fn http1<T>(served: &Served, io: T, ctx: &Arc<ConnCtx>, peer: SocketAddr, mut drain: Drain)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &served.config;
    if config.http1_handover {
        ctx.enable_handover();
    }
    let mut io = Rewind::new(io);
    loop {
        // Boxed: hyper's connection is the largest state of this task, and
        // a spawned task is as large as its largest state; boxed, a
        // handed-over stream's task holds none of it.
        let taken = Box::pin(hyper_phase(served, io, ctx, peer, &mut drain)).await;
        let Some((mut socket, response, prefix)) = taken else {
            return;
        };
        let ended =
            h1stream::write_stream(&mut socket, response, prefix, config.max_head_bytes).await;
        let h1stream::Ended::Complete(kept) = ended else {
            return;
        };
        if drain.is_signaled() {
            // Shutting down: the stream ended with its last chunk; close.
            let _ = socket.shutdown().await;
            return;
        }
        io = Rewind::with_prefix(socket, kept);
    }
}

/// hyper serves the connection until a stream is handed over (the socket,
/// the stream's response, and what the client sent past its request) or
/// the connection ends (`None`).
async fn hyper_phase<T>(
    served: &Served,
    io: Rewind<T>,
    ctx: &Arc<ConnCtx>,
    peer: SocketAddr,
    drain: &mut Drain,
) -> Option<(T, hyper::Response<crate::Body>, bytes::Bytes)>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = served.http1.serve_connection(
        TokioIo::new(io),
        service(served.app.clone(), ctx.clone(), peer),
    );
    let mut draining = drain.is_signaled();
    if draining {
        Pin::new(&mut conn).graceful_shutdown();
    }
    let offer = loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return None;
            }
            () = drain.signaled(), if !draining => {
                draining = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            offer = ctx.offered() => {
                // hyper has read the request and written nothing of its
                // response; all it wrote before must be out.
                if draining || !ctx.writes_done() {
                    offer.decline();
                    continue;
                }
                break offer;
            }
        }
    };
    served.app.count_http1_stream("own");
    let parts = conn.into_parts();
    drop(parts.service);
    let (socket, before) = parts.io.into_inner().into_parts();
    // What hyper read past the request, then anything left in front:
    // copied, as `read_buf` shares hyper's whole read buffer.
    let prefix = if parts.read_buf.is_empty() && before.is_empty() {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from([&parts.read_buf[..], &before[..]].concat())
    };
    Some((socket, offer.response, prefix))
}

/// What ended a connection from outside hyper.
enum Watchdog {
    Stalled,
    SessionEnded(decnet_stream::SessionEnd),
}

/// A connection's work under its watchdogs; dropping the work closes the
/// socket. The watchdogs are [`Gated`]: polled when their own timers or
/// notifications fire, not on every frame the connection writes.
fn guarded<'a>(
    work: impl Future<Output = ()> + 'a,
    ctx: &'a ConnCtx,
    config: &'a ServeConfig,
    held: Held,
) -> impl Future<Output = ()> + 'a {
    let watchdogs = Gated::new(async move {
        let fired = tokio::select! {
            () = ctx.write_stalled(config.write_timeout) => Watchdog::Stalled,
            why = ctx.session_ended(config.session_end_grace) => Watchdog::SessionEnded(why),
        };
        match fired {
            Watchdog::Stalled => {
                tracing::info!(timeout = ?config.write_timeout, "connection dropped: no write progress");
            }
            Watchdog::SessionEnded(why) => {
                tracing::info!(
                    ?why,
                    "connection dropped: a stream's session ended and the client did not read it out"
                );
            }
        }
    });
    Guarded {
        work,
        watchdogs,
        _held: held,
    }
}

pin_project_lite::pin_project! {
    /// A connection's work beside its watchdogs, whichever ends first. A
    /// struct, not an `async fn`: one would hold `work` twice (as its
    /// argument and inside its `select!`), and every connection task would
    /// carry the copy.
    struct Guarded<W, D> {
        #[pin]
        work: W,
        #[pin]
        watchdogs: D,
        _held: Held,
    }
}

impl<W: Future<Output = ()>, D: Future<Output = ()>> Future for Guarded<W, D> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.project();
        if this.work.poll(cx).is_ready() {
            return std::task::Poll::Ready(());
        }
        this.watchdogs.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use decnet_auth::MemoryTicketStore;
    use decnet_bus::Bus;
    use decnet_repo::MemoryRepository;
    use test_support::http::poll_until;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::assemble::Backends;
    use crate::demo::{DEMO_ATTACKER, DEMO_USER};
    use crate::settings::Settings;

    const SECRET: &[u8] = b"serve-unit-test-secret-of-32-bytes!!";

    /// The demo's rows on the memory backends, as the binary assembles them.
    async fn demo_app() -> App {
        let repo = MemoryRepository::new();
        crate::demo::seed(&repo).await.expect("seed the demo rows");
        let app = App::from_settings(
            &Settings::default(),
            Backends {
                repository: Arc::new(repo),
                bus: Bus::memory(),
                tickets: Arc::new(MemoryTicketStore::default()),
                secret: SECRET.to_vec(),
            },
        );
        tokio::time::timeout(Duration::from_secs(5), app.hub().wait_subscribed())
            .await
            .expect("the hub subscribes");
        app
    }

    /// Finding 1, read back from the server's own socket: an accepted
    /// connection gets TCP keepalive (the configured idle time, 3 probes
    /// 10 s apart) and `TCP_USER_TIMEOUT` = the write timeout; its send
    /// buffer is capped once it carries a stream, not before.
    #[tokio::test]
    async fn accepted_sockets_get_keepalive_user_timeout_and_a_capped_send_buffer() {
        let config = ServeConfig {
            write_timeout: Duration::from_secs(7),
            tcp_keepalive: Duration::from_secs(21),
            stream_sndbuf: 40_000,
            ..ServeConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().expect("addr")),
            listener.accept()
        );
        let mut client = client.expect("connect");
        let (stream, peer) = accepted.expect("accept");
        // The same kernel socket under a second descriptor: still readable
        // once the connection task owns `stream`.
        let socket = socket2::SockRef::from(&stream)
            .try_clone()
            .expect("dup the server's socket");
        tune(&stream, &config);
        assert!(socket.tcp_nodelay().expect("TCP_NODELAY"));
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(21)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 3);
        assert_eq!(
            socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_secs(7))
        );
        // Linux reports twice the size asked for (socket(7)).
        let capped = 2 * config.stream_sndbuf;
        assert_ne!(
            socket.send_buffer_size().expect("SO_SNDBUF"),
            capped,
            "capped before any stream"
        );

        // Served as `serve` serves it, a stream opens on it.
        let app = demo_app().await;
        let holds = Arc::new(Mutex::new(Holds::default()));
        let held = hold(&holds, peer.ip(), &config).expect("a free slot");
        let (_drain_tx, drain) = tokio::sync::watch::channel(false);
        let served = Arc::new(Served::new(app.clone(), config));
        let task = tokio::spawn(connection(served, stream, peer, Drain(drain), held));
        let (token, _) = decnet_auth::mint_access_token(SECRET, DEMO_USER, Duration::from_secs(60))
            .expect("token");
        let head = format!(
            "GET /api/v1/attackers/{DEMO_ATTACKER}/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        client.write_all(head.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(5), async {
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before the response head");
                answer.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the stream's head in time");
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        poll_until(Duration::from_secs(5), "the capped send buffer", || {
            let size = socket.send_buffer_size().expect("SO_SNDBUF");
            async move { (size == capped).then_some(()) }
        })
        .await;
        assert_eq!(
            socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_secs(7))
        );
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        drop(client);
        task.abort();
        app.hub().shutdown();
    }

    /// `serve()` on 127.0.0.1:0 with the demo app; the stop sender ends it.
    async fn start(config: ServeConfig) -> (SocketAddr, App, tokio::sync::oneshot::Sender<()>) {
        let app = demo_app().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app.clone(), config, async move {
            let _ = stopped.await;
        }));
        (addr, app, stop)
    }

    /// Read from `client` until `done` says the bytes are complete.
    async fn read_until(
        client: &mut TcpStream,
        what: &str,
        done: impl Fn(&[u8]) -> bool,
    ) -> Vec<u8> {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done(&answer) {
                let n = client.read(&mut buf).await.expect("read");
                assert!(
                    n > 0,
                    "closed before {what}: {}",
                    String::from_utf8_lossy(&answer)
                );
                answer.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} in time: {}", String::from_utf8_lossy(&answer)));
        answer
    }

    /// A connection that asked for the demo attacker's stream with a Bearer
    /// token.
    async fn open_with_bearer(addr: SocketAddr) -> TcpStream {
        let (token, _) = decnet_auth::mint_access_token(SECRET, DEMO_USER, Duration::from_secs(60))
            .expect("token");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let get = format!(
            "GET /api/v1/attackers/{DEMO_ATTACKER}/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        client.write_all(get.as_bytes()).await.expect("write");
        client
    }

    fn count(app: &App, writer: &str) -> f64 {
        let series = format!("decnet_sse_http1_streams_total{{writer=\"{writer}\"}}");
        test_support::http::metric(&app.metrics_text(), &series).unwrap_or(0.0)
    }

    /// The browser's way: the ticket POST and the stream's GET on one
    /// keep-alive connection. The stream is handed over (written by the
    /// connection task), ends when its token expires, and the connection
    /// then serves the next request through hyper again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_is_handed_over_and_its_connection_lives_on() {
        let (addr, app, _stop) = start(ServeConfig::default()).await;
        let (token, _) = decnet_auth::mint_access_token(SECRET, DEMO_USER, Duration::from_secs(2))
            .expect("token");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let post = format!(
            "POST /api/v1/auth/sse-ticket HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        );
        client.write_all(post.as_bytes()).await.expect("write");
        let answer = read_until(&mut client, "the ticket", |a| a.ends_with(b"}")).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body: serde_json::Value =
            serde_json::from_str(&text[text.find("\r\n\r\n").expect("head") + 4..]).expect("json");
        let ticket = body["ticket"].as_str().expect("a ticket");
        let get = format!(
            "GET /api/v1/attackers/{DEMO_ATTACKER}/events?ticket={ticket} HTTP/1.1\r\nHost: t\r\n\r\n"
        );
        client.write_all(get.as_bytes()).await.expect("write");
        let stream = read_until(&mut client, "the stream's end", |a| {
            a.ends_with(b"\r\n0\r\n\r\n")
        })
        .await;
        let text = String::from_utf8_lossy(&stream);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\ncontent-type: text/event-stream; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(text.contains("event: snapshot"), "{text}");
        assert_eq!(count(&app, "own"), 1.0);
        assert_eq!(count(&app, "hyper"), 0.0);
        // The same connection, back with hyper.
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let health = read_until(&mut client, "the health answer", |a| {
            a.windows(4).any(|w| w == b"\r\n\r\n") && a.ends_with(b"}")
        })
        .await;
        assert!(
            health.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&health)
        );
        // Counted from accept to close.
        let open = |app: &App| {
            test_support::http::metric(&app.metrics_text(), "decnet_http_connections_open")
        };
        assert_eq!(open(&app), Some(1.0));
        drop(client);
        poll_until(
            Duration::from_secs(5),
            "the connection no longer counted",
            || {
                let now = open(&app);
                async move { (now == Some(0.0)).then_some(()) }
            },
        )
        .await;
        app.hub().shutdown();
    }

    /// With `http1_handover` off, hyper writes the stream, as it did before
    /// the hand-over existed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_hand_over_off_hyper_writes_the_stream() {
        let (addr, app, _stop) = start(ServeConfig {
            http1_handover: false,
            ..ServeConfig::default()
        })
        .await;
        let mut client = open_with_bearer(addr).await;
        let stream = read_until(&mut client, "the snapshot", |a| {
            String::from_utf8_lossy(a).contains("event: snapshot")
        })
        .await;
        assert!(stream.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(count(&app, "hyper"), 1.0);
        assert_eq!(count(&app, "own"), 0.0);
        app.hub().shutdown();
    }

    /// Shutdown ends a handed-over stream with its last chunk and closes
    /// the connection (no new hyper connection on a draining server).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_a_handed_over_stream_and_closes() {
        let (addr, app, stop) = start(ServeConfig::default()).await;
        let mut client = open_with_bearer(addr).await;
        read_until(&mut client, "the snapshot", |a| {
            String::from_utf8_lossy(a).contains("event: snapshot")
        })
        .await;
        assert_eq!(count(&app, "own"), 1.0);
        let _ = stop.send(());
        // The frame before it ended with its CRLF.
        read_until(&mut client, "the last chunk", |a| a.ends_with(b"0\r\n\r\n")).await;
        let mut rest = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut rest))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest[..n]));
    }

    /// Every connection's task is as large as its future's largest state,
    /// for its whole life: hyper's connection is boxed away from it
    /// (`hyper_phase`), the TLS path too, and `guarded` holds its work once.
    /// 3.3 KB with hyper's connection in it and the work held twice, 2.2 KB
    /// now; the bound leaves room for small changes, not for either.
    #[tokio::test]
    async fn a_plain_connection_task_stays_small() {
        let served = Arc::new(Served::new(demo_app().await, ServeConfig::default()));
        let (client, stream, peer, held, drain) = accepted_connection(&served).await;
        let task = connection(served.clone(), stream, peer, drain.1, held);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2_600, "the connection future is {size} bytes");
        drop((task, client, drain.0));
        served.app.hub().shutdown();
    }

    /// A connected client, the server's side of it (its peer and slot), and
    /// a drain signal with its sender.
    async fn accepted_connection(
        served: &Served,
    ) -> (
        TcpStream,
        TcpStream,
        SocketAddr,
        Held,
        (tokio::sync::watch::Sender<bool>, Drain),
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().expect("addr")),
            listener.accept()
        );
        let (stream, peer) = accepted.expect("accept");
        let holds = Arc::new(Mutex::new(Holds::default()));
        let held = hold(&holds, peer.ip(), &served.config).expect("a free slot");
        let (drain_tx, drain) = tokio::sync::watch::channel(false);
        (
            client.expect("connect"),
            stream,
            peer,
            held,
            (drain_tx, Drain(drain)),
        )
    }

    /// The TLS connection's future, which an HTTP/1.1 stream over TLS
    /// holds for its life, is no larger than a plain connection's.
    #[tokio::test]
    async fn a_tls_connection_task_stays_small() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tls/");
        let tls = crate::Tls::load(format!("{dir}cert-a.pem"), format!("{dir}key-a.pem"))
            .expect("the test certificate");
        let config = ServeConfig {
            tls: Some(tls.clone()),
            ..ServeConfig::default()
        };
        let served = Arc::new(Served::new(demo_app().await, config));
        let (client, stream, peer, held, drain) = accepted_connection(&served).await;
        let ctx = Arc::new(ConnCtx::default());
        let io = ProgressIo::new(stream, ctx.clone(), served.config.stream_sndbuf);
        let task = tls_connection(&served, &tls, io, ctx, peer, drain.1, held);
        let size = std::mem::size_of_val(&task);
        // 8.3 KB before its states were boxed (see tls_connection).
        assert!(size <= 2_600, "the TLS connection future is {size} bytes");
        drop((task, client, drain.0));
        served.app.hub().shutdown();
    }
}
