//! Churn (issue 14, item 4): open / close cycles against the real binary,
//! mixing clean closes, resets (SO_LINGER 0), half-closed and half-sent
//! clients and ticket failures (unknown and reused tickets). Afterwards `decnet_sse_streams_active` and
//! `decnet_sse_connection_slots_used` return to 0, the user can open
//! exactly its per-user cap of streams again (the slots really are free),
//! and the server process's RSS (`VmRSS` of the `decnet-events` child
//! process, not of the test) is within 10 % of its baseline, measured
//! after a warm-up of the same mix.
//!
//! Fast variant: 2,000 cycles. `DECNET_SOAK=1`: 100,000.

mod reliability;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reliability::{
    BusSpec, Database, Service, ServiceConfig, at_most, exactly, ms, poll_until, read_until,
    scaled, token,
};
use test_support::Service as Svc;
use test_support::http::{self, SseStream, events_path};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Clients churning at once.
const WORKERS: usize = 16;
/// The per-user stream cap of the churned service.
const CAP: usize = 64;

/// What every cycle needs.
struct Target {
    addr: SocketAddr,
    token: String,
    attacker: String,
}

/// A raw `GET` of the attacker's stream with the bearer token, as text.
fn raw_request(target: &Target) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        events_path(&target.attacker, None),
        target.addr,
        target.token
    )
}

/// One cycle of kind `n % 8`; `Err` describes what went wrong.
async fn cycle(target: &Target, n: usize) -> Result<(), String> {
    match n % 8 {
        // A clean close after the snapshot, opened with a ticket.
        0 | 1 => {
            let auth = format!("Bearer {}", target.token);
            let minted = http::try_request(
                target.addr,
                "POST",
                http::TICKET_PATH,
                &[("authorization", &auth)],
            )
            .await?;
            if minted.status != 200 {
                return Err(format!("mint: {} {}", minted.status, minted.text()));
            }
            let ticket = minted.json()["ticket"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let path = events_path(&target.attacker, Some(&ticket));
            let mut stream = SseStream::try_open(target.addr, &path, &[])
                .await
                .map_err(|r| format!("open: {} {}", r.status, r.text()))?;
            stream.expect_snapshot().await;
            Ok(())
        }
        // A reset (SO_LINGER 0) after the snapshot.
        2 | 3 => {
            let mut tcp = TcpStream::connect(target.addr)
                .await
                .map_err(|e| e.to_string())?;
            tcp.write_all(raw_request(target).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            read_until(&mut tcp, "event: snapshot", Duration::from_secs(10)).await?;
            tcp.set_zero_linger().map_err(|e| e.to_string())?;
            drop(tcp);
            Ok(())
        }
        // Half-closed: the request, then FIN on the write side. The server
        // takes the EOF for a client gone (hyper without half-close
        // support) and must close its side too, stream or not.
        4 => {
            let mut tcp = TcpStream::connect(target.addr)
                .await
                .map_err(|e| e.to_string())?;
            tcp.write_all(raw_request(target).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            tcp.shutdown().await.map_err(|e| e.to_string())?;
            let mut rest = Vec::new();
            match tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await {
                Ok(Ok(_)) => Ok(()),
                // A reset is a close too.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
                Ok(Err(e)) => Err(format!("read: {e}")),
                Err(_) => Err("a half-closed connection still open after 10 s".to_owned()),
            }
        }
        // Half-sent: part of a request head, then gone.
        5 => {
            let mut tcp = TcpStream::connect(target.addr)
                .await
                .map_err(|e| e.to_string())?;
            let request = raw_request(target);
            tcp.write_all(&request.as_bytes()[..request.len() / 2])
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        // A ticket nobody minted.
        6 => {
            let path = events_path(&target.attacker, Some("not-a-ticket-0123456789abcdef"));
            let refused = http::try_request(target.addr, "GET", &path, &[]).await?;
            (refused.status == 401)
                .then_some(())
                .ok_or_else(|| format!("unknown ticket: {}", refused.status))
        }
        // A ticket redeemed twice: the second is refused.
        _ => {
            let auth = format!("Bearer {}", target.token);
            let minted = http::try_request(
                target.addr,
                "POST",
                http::TICKET_PATH,
                &[("authorization", &auth)],
            )
            .await?;
            let ticket = minted.json()["ticket"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let path = events_path(&target.attacker, Some(&ticket));
            drop(
                SseStream::try_open(target.addr, &path, &[])
                    .await
                    .map_err(|r| r.text())?,
            );
            let again = http::try_request(target.addr, "GET", &path, &[]).await?;
            (again.status == 401)
                .then_some(())
                .ok_or_else(|| format!("a used ticket: {}", again.status))
        }
    }
}

/// Run `count` cycles on [`WORKERS`] clients; the failures.
async fn churn(target: &Arc<Target>, count: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (target, next) = (target.clone(), next.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return failures;
                    }
                    if let Err(error) = cycle(&target, n).await {
                        failures.push(format!("cycle {n} (kind {}): {error}", n % 8));
                    }
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.expect("worker"));
    }
    failures
}

mod svc_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn churn_returns_streams_slots_and_memory() {
        let test = "churn_returns_streams_slots_and_memory";
        let Some(pg) = test_support::service_url(Svc::Postgres) else {
            return;
        };
        let db = Database::shared(&pg).await;
        let backend = "memory+postgres";
        let config = ServiceConfig::new(BusSpec::Memory, &db.url)
            .var("DECNET_SSE_MAX_PER_USER", CAP.to_string());
        let service = Service::start(&config).await;
        let target = Arc::new(Target {
            addr: service.addr,
            token: token(&db.user().await),
            attacker: db.attacker().await,
        });
        let drained = || async {
            (service.metric("decnet_sse_streams_active").await == 0.0
                && service.metric("decnet_sse_connection_slots_used").await == 0.0)
                .then_some(())
        };

        let warm_up = churn(&target, 400).await;
        assert!(warm_up.is_empty(), "warm-up: {warm_up:?}");
        poll_until(
            Duration::from_secs(30),
            "streams and slots back to 0",
            drained,
        )
        .await;
        let baseline = service.rss_kib();

        let cycles = scaled(2_000, 100_000);
        let started = tokio::time::Instant::now();
        let failures = churn(&target, cycles).await;
        let took = started.elapsed();
        let drain_started = tokio::time::Instant::now();
        poll_until(
            Duration::from_secs(60),
            "streams and slots back to 0",
            drained,
        )
        .await;
        let drain = drain_started.elapsed();
        let after = service.rss_kib();

        exactly(
            test,
            backend,
            &format!("failed cycles of {cycles}"),
            failures.len() as f64,
            "cycles",
            0.0,
        );
        assert!(
            failures.is_empty(),
            "{:?}",
            &failures[..failures.len().min(10)]
        );
        at_most(
            test,
            backend,
            &format!("{cycles} cycles: time for active streams and slots to reach 0"),
            ms(drain),
            "ms",
            30_000.0,
        );
        eprintln!("{cycles} cycles in {took:?}; RSS {baseline} KiB before, {after} KiB after");
        let growth = (after as f64 - baseline as f64) * 100.0 / baseline as f64;
        at_most(
            test,
            backend,
            &format!("{cycles} cycles: server RSS growth over the {baseline} KiB baseline"),
            growth,
            "%",
            10.0,
        );

        // The user's slots are really free: exactly the cap opens again.
        let mut held = Vec::new();
        for _ in 0..CAP {
            held.push(
                service
                    .try_open(&target.token, &target.attacker)
                    .await
                    .map_err(|r| format!("{} {}", r.status, r.text()))
                    .expect("a slot within the cap"),
            );
        }
        let over = service
            .try_open(&target.token, &target.attacker)
            .await
            .expect_err("one over the cap");
        assert_eq!(over.status, 429, "{}", over.text());
        exactly(
            test,
            backend,
            "per-user slots free after churn (cap opens, cap + 1 is 429)",
            held.len() as f64,
            "streams",
            CAP as f64,
        );
    }
}
