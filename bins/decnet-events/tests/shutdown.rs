//! Graceful shutdown under load (issue 14, item 6), on the real binary:
//! SIGTERM with many streams open exits 0 within the grace and every
//! client sees its stream end cleanly (the chunked body's end, no reset);
//! a rolling restart of two instances behind a small TCP proxy of the
//! test's own leaves no client without a stream for longer than the retry
//! hint (clients reconnect at once, as an `EventSource` whose server closed
//! cleanly would after the hint).
//!
//! Fast variant: 250 streams, 40 clients, one hop. `DECNET_SOAK=1`: 1,000
//! streams, 200 clients, three hops.

mod reliability;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use reliability::{
    BusSpec, Database, RETRY_HINT, Service, ServiceConfig, Streams, at_most, exactly, ms,
    poll_until, scaled, token,
};
use test_support::Service as Svc;
use test_support::http::{Next, SseStream, events_path};
use test_support::process::Signal;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// The service's shutdown grace in these tests.
const GRACE: Duration = Duration::from_secs(10);

/// Poll the child until it exits (bounded); its status and how long.
async fn exit_within(
    service: &mut Service,
    within: Duration,
) -> (std::process::ExitStatus, Duration) {
    let started = tokio::time::Instant::now();
    let status = poll_until(within, "the process exits", || {
        let status = service.child.try_exit();
        async move { status }
    })
    .await;
    (status, started.elapsed())
}

/// A TCP proxy on 127.0.0.1 forwarding each new connection to the port in
/// `upstream` at the time it is accepted.
async fn proxy(upstream: Arc<AtomicU16>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let port = upstream.load(Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

/// What the reconnecting clients saw.
#[derive(Default)]
struct Clients {
    /// Streams opened (snapshot read), every client together.
    opened: usize,
    /// The longest time a client was without a stream.
    worst_gap: Duration,
    /// Streams that ended with a transport error instead of a clean end.
    unclean: Vec<String>,
}

/// A client that holds a stream through `proxy` and reconnects at once
/// whenever it ends.
async fn client(proxy: SocketAddr, token: String, attacker: String, seen: Arc<Mutex<Clients>>) {
    let auth = format!("Bearer {token}");
    let path = events_path(&attacker, None);
    let mut lost: Option<tokio::time::Instant> = None;
    loop {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(5),
            SseStream::try_open(proxy, &path, &[("authorization", auth.as_str())]),
        )
        .await
        else {
            // Refused or cut during the switch: try again.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stream.expect_snapshot().await;
        {
            let mut seen = seen.lock().await;
            seen.opened += 1;
            if let Some(lost) = lost.take() {
                seen.worst_gap = seen.worst_gap.max(lost.elapsed());
            }
        }
        loop {
            match stream.try_next(Duration::from_secs(3600)).await {
                Next::Item(_) | Next::Timeout => {}
                Next::Eof => break,
                Next::Error(error) => {
                    seen.lock().await.unclean.push(error);
                    break;
                }
            }
        }
        lost = Some(tokio::time::Instant::now());
    }
}

mod svc_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_with_many_streams_open_exits_0_within_the_grace_all_ending_cleanly() {
        let test = "sigterm_with_many_streams_open_exits_0_within_the_grace_all_ending_cleanly";
        let Some(pg) = test_support::service_url(Svc::Postgres) else {
            return;
        };
        let db = Database::shared(&pg).await;
        let backend = "memory+postgres";
        let config = ServiceConfig::new(BusSpec::Memory, &db.url)
            .var("DECNET_SHUTDOWN_GRACE_SECS", GRACE.as_secs().to_string());
        let mut service = Service::start(&config).await;
        let count = scaled(250, 1000);
        let mut streams = Streams::open(
            service.addr,
            &token(&db.user().await),
            &db.attacker().await,
            count,
        )
        .await;
        assert_eq!(
            service.metric("decnet_sse_streams_active").await,
            count as f64
        );

        service.child.signal(Signal::Term).expect("SIGTERM");
        let ((status, took), (clean, errors)) = tokio::join!(
            exit_within(&mut service, GRACE + Duration::from_secs(10)),
            streams.wait_all_ended(GRACE + Duration::from_secs(10)),
        );
        assert!(
            status.success(),
            "{status}\nstderr:\n{}",
            service.child.stderr()
        );
        at_most(
            test,
            backend,
            &format!("SIGTERM with {count} streams: time to exit 0"),
            ms(took),
            "ms",
            ms(GRACE),
        );
        assert!(
            errors.is_empty(),
            "{} streams ended with an error: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        exactly(
            test,
            backend,
            &format!("SIGTERM with {count} streams: streams ended cleanly"),
            clean as f64,
            "streams",
            count as f64,
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rolling_restart_behind_a_proxy_leaves_no_client_without_a_stream_past_the_retry_hint()
    {
        let test =
            "rolling_restart_behind_a_proxy_leaves_no_client_without_a_stream_past_the_retry_hint";
        let Some(pg) = test_support::service_url(Svc::Postgres) else {
            return;
        };
        let db = Database::shared(&pg).await;
        let backend = "memory+postgres, 2 instances";
        let config = ServiceConfig::new(BusSpec::Memory, &db.url)
            .var("DECNET_SHUTDOWN_GRACE_SECS", GRACE.as_secs().to_string());
        let mut current = Service::start(&config).await;
        let upstream = Arc::new(AtomicU16::new(current.addr.port()));
        let proxy = proxy(upstream.clone()).await;
        let token = token(&db.user().await);
        let attacker = db.attacker().await;
        let count = scaled(40, 200);
        let seen = Arc::new(Mutex::new(Clients::default()));
        let clients: Vec<_> = (0..count)
            .map(|_| tokio::spawn(client(proxy, token.clone(), attacker.clone(), seen.clone())))
            .collect();
        let opened_at_least = |n: usize| {
            let seen = seen.clone();
            move || {
                let seen = seen.clone();
                async move { (seen.lock().await.opened >= n).then_some(()) }
            }
        };
        poll_until(
            Duration::from_secs(30),
            "every client connected",
            opened_at_least(count),
        )
        .await;

        let hops = scaled(1, 3);
        for hop in 1..=hops {
            let next = Service::start(&config).await;
            upstream.store(next.addr.port(), Ordering::SeqCst);
            current
                .child
                .signal(Signal::Term)
                .expect("SIGTERM the old instance");
            let (status, _) = exit_within(&mut current, GRACE + Duration::from_secs(10)).await;
            assert!(
                status.success(),
                "{status}\nstderr:\n{}",
                current.child.stderr()
            );
            poll_until(
                Duration::from_secs(30),
                "every client reconnected to the new instance",
                opened_at_least(count * (hop + 1)),
            )
            .await;
            current = next;
        }
        for task in &clients {
            task.abort();
        }
        let seen = seen.lock().await;
        assert!(
            seen.unclean.is_empty(),
            "streams cut uncleanly: {:?}",
            seen.unclean
        );
        at_most(
            test,
            backend,
            &format!("{count} clients, {hops} hop(s): longest time without a stream"),
            ms(seen.worst_gap),
            "ms",
            ms(RETRY_HINT),
        );
    }
}
