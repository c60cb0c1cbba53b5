//! [`serve`]: accept connections, run each under its watchdogs, drain on
//! shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::conn::{ConnCtx, Gated, ProgressIo};
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
        }
    }
}

/// Connections held, in total and per client address.
#[derive(Debug, Default)]
struct Holds {
    total: usize,
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
        holds.total = holds.total.saturating_sub(1);
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
    if guard.total >= config.max_connections || of_ip >= config.max_connections_per_ip {
        return None;
    }
    guard.total += 1;
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let holds = Arc::new(Mutex::new(Holds::default()));
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
                tokio::spawn(connection(served.clone(), stream, peer, graceful.watcher(), held));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting; ending streams");
    app.shutdown();
    match tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!(grace = ?config.shutdown_grace, "grace period over; dropping remaining connections")
        }
    }
    Ok(())
}

/// The request handler of one connection.
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
        // Boxed: hyper keeps a slot for the service future inline in every
        // connection for its whole life, streams included; a box makes that
        // slot one pointer.
        let response = Box::pin({
            let app = app.clone();
            async move { app.call(request).await }
        });
        async move { Ok::<_, Infallible>(response.await) }
    })
}

/// Serve one accepted socket: plain HTTP/1.1, or HTTPS (see [`tls_connection`])
/// under the watchdogs.
async fn connection(
    served: Arc<Served>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    held: Held,
) {
    let config = &served.config;
    let ctx = Arc::new(ConnCtx::default());
    let io = ProgressIo::new(stream, ctx.clone(), config.stream_sndbuf);
    let Some(tls) = &config.tls else {
        let conn = served.http1.serve_connection(
            TokioIo::new(io),
            service(served.app.clone(), ctx.clone(), peer),
        );
        run_connection(watcher.watch(conn), ctx, config, held).await;
        return;
    };
    // Boxed: the TLS state and HTTP/2 connection are far larger than a plain
    // HTTP/1.1 connection, and a spawned task is as large as its largest
    // state; inline, every plain connection would carry their size.
    Box::pin(tls_connection(&served, tls, io, ctx, peer, watcher, held)).await;
}

/// One HTTPS connection: the TLS handshake (bounded by the header timeout),
/// then HTTP/2 or HTTP/1.1 as ALPN decides.
async fn tls_connection(
    served: &Served,
    tls: &Tls,
    io: ProgressIo,
    ctx: Arc<ConnCtx>,
    peer: SocketAddr,
    watcher: Watcher,
    held: Held,
) {
    let config = &served.config;
    let handshake =
        tokio::time::timeout(config.header_read_timeout, tls.acceptor().accept(io)).await;
    let tls_stream = match handshake {
        Ok(Ok(tls_stream)) => tls_stream,
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
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let service = service(served.app.clone(), ctx.clone(), peer);
    if h2 {
        ctx.set_multiplexed(config.session_end_grace);
        let conn = served
            .http2
            .serve_connection(TokioIo::new(tls_stream), service);
        run_connection(watcher.watch(conn), ctx, config, held).await;
    } else {
        let conn = served
            .http1
            .serve_connection(TokioIo::new(tls_stream), service);
        run_connection(watcher.watch(conn), ctx, config, held).await;
    }
}

/// What ended a connection from outside hyper.
enum Watchdog {
    Stalled,
    SessionEnded(decnet_stream::SessionEnd),
}

/// One connection under its watchdogs; dropping the connection future closes
/// the socket. The watchdogs are [`Gated`]: polled when their own timers or
/// notifications fire, not on every frame the connection writes.
async fn run_connection<C>(connection: C, ctx: Arc<ConnCtx>, config: &ServeConfig, _held: Held)
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let watchdogs = Gated::new(async {
        tokio::select! {
            () = ctx.write_stalled(config.write_timeout) => Watchdog::Stalled,
            why = ctx.session_ended(config.session_end_grace) => Watchdog::SessionEnded(why),
        }
    });
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        fired = watchdogs => match fired {
            Watchdog::Stalled => {
                tracing::info!(timeout = ?config.write_timeout, "connection dropped: no write progress");
            }
            Watchdog::SessionEnded(why) => {
                tracing::info!(?why, "connection dropped: a stream's session ended and the client did not read it out");
            }
        },
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
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let served = Arc::new(Served::new(app.clone(), config));
        let task = tokio::spawn(connection(served, stream, peer, graceful.watcher(), held));
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
}
