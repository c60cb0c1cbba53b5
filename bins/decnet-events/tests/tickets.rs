//! Tickets and secrets under contention (issue 14, item 5), on two real
//! `decnet-events` processes sharing one Redis ticket store: a ticket
//! redeemed by 100 concurrent requests spread over both instances opens
//! exactly one stream; every cause of a 401 answers the same bytes; and
//! neither instance, logging at `trace` (one in text, one in JSON, the
//! access log on), ever writes a ticket, the JWT or an `Authorization`
//! header.
//!
//! Fast variant: 3 tickets. `DECNET_SOAK=1`: 30.

mod reliability;

use reliability::{BusSpec, Database, Service, ServiceConfig, exactly, scaled, token};
use test_support::Service as Svc;
use test_support::http::{self, SseStream, events_path};

/// Concurrent redemptions of one ticket.
const REDEMPTIONS: usize = 100;

/// A token for `user` that expired a minute ago.
fn expired_token(user: &str) -> String {
    reliability::token_between(user, -3600, -60)
}

/// A 401's status, `WWW-Authenticate` and body, to compare causes.
fn shape(response: &http::Response) -> (u16, Option<String>, String) {
    (
        response.status,
        response.header("www-authenticate").map(str::to_owned),
        response.text(),
    )
}

mod svc_postgres {
    mod svc_redis {
        use super::super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_ticket_opens_one_stream_under_100_redemptions_over_two_instances() {
            let test = "a_ticket_opens_one_stream_under_100_redemptions_over_two_instances";
            let Some(pg) = test_support::service_url(Svc::Postgres) else {
                return;
            };
            let Some(redis) = test_support::service_url(Svc::Redis) else {
                return;
            };
            let db = Database::shared(&pg).await;
            let backend = "memory+postgres, redis tickets, 2 instances";
            let config = |format: &str| {
                ServiceConfig::new(BusSpec::Memory, &db.url)
                    .var("DECNET_TICKET_STORE", "redis")
                    .var(decnet_bus::ENV_REDIS_URL, redis.clone())
                    .var("RUST_LOG", "trace")
                    .var("DECNET_LOG_FORMAT", format)
                    .var("DECNET_ACCESS_LOG", "true")
            };
            let instances = [
                Service::start(&config("text")).await,
                Service::start(&config("json")).await,
            ];
            let user = db.user().await;
            let token = token(&user);
            let attacker = db.attacker().await;

            let rounds = scaled(3, 30);
            let mut tickets = Vec::new();
            let mut opened_total = 0;
            let mut refusals = Vec::new();
            for round in 0..rounds {
                let minted = instances[round % 2].post_ticket(&token).await;
                assert_eq!(minted.status, 200, "{}", minted.text());
                let ticket = minted.json()["ticket"]
                    .as_str()
                    .expect("a ticket")
                    .to_owned();
                let path = events_path(&attacker, Some(&ticket));
                let attempts = (0..REDEMPTIONS).map(|n| {
                    let addr = instances[n % 2].addr;
                    let path = path.clone();
                    async move { SseStream::try_open(addr, &path, &[]).await }
                });
                let answers = futures::future::join_all(attempts).await;
                let mut opened = Vec::new();
                for answer in answers {
                    match answer {
                        Ok(stream) => opened.push(stream),
                        Err(refused) => refusals.push(refused),
                    }
                }
                assert_eq!(
                    opened.len(),
                    1,
                    "round {round}: streams opened by one ticket"
                );
                opened_total += opened.len();
                tickets.push(ticket);
            }
            exactly(
                test,
                backend,
                &format!(
                    "streams opened by {rounds} tickets, {REDEMPTIONS} concurrent redemptions each"
                ),
                opened_total as f64,
                "streams",
                rounds as f64,
            );

            // Every cause of a 401 answers the same bytes.
            let base = instances[0].addr;
            let stream = events_path(&attacker, None);
            let bearer = |t: &str| format!("Bearer {t}");
            let (expired, forged) = (
                bearer(&expired_token(&user)),
                bearer(&format!("{}x", &token[..token.len() - 1])),
            );
            let mut causes = vec![
                (
                    "missing credentials",
                    http::request(base, "GET", &stream, &[]).await,
                ),
                (
                    "expired token",
                    http::request(base, "GET", &stream, &[("authorization", &expired)]).await,
                ),
                (
                    "bad signature",
                    http::request(base, "GET", &stream, &[("authorization", &forged)]).await,
                ),
                (
                    "not a JWT",
                    http::request(base, "GET", &stream, &[("authorization", "Bearer abc")]).await,
                ),
                (
                    "unknown ticket",
                    http::request(
                        base,
                        "GET",
                        &events_path(&attacker, Some("0123456789abcdef0123456789abcdef")),
                        &[],
                    )
                    .await,
                ),
                (
                    "ticket mint with an expired token",
                    http::request(
                        base,
                        "POST",
                        http::TICKET_PATH,
                        &[("authorization", &expired)],
                    )
                    .await,
                ),
            ];
            causes.extend(refusals.into_iter().map(|r| ("used ticket", r)));
            let reference = shape(&causes[0].1);
            causes[0].1.assert_401();
            let differing: Vec<_> = causes
                .iter()
                .filter(|(_, response)| shape(response) != reference)
                .map(|(cause, response)| format!("{cause}: {:?}", shape(response)))
                .collect();
            exactly(
                test,
                backend,
                &format!("401 answers differing from the others, of {}", causes.len()),
                differing.len() as f64,
                "answers",
                0.0,
            );
            assert!(differing.is_empty(), "{differing:?}");

            // No secret in either instance's trace-level log.
            let logs: Vec<String> = instances.iter().map(|s| s.child.stderr()).collect();
            assert!(
                logs.iter().all(|log| log.lines().count() > 100),
                "trace logging is on: {} and {} lines",
                logs[0].lines().count(),
                logs[1].lines().count()
            );
            assert!(
                logs[1].lines().any(|l| l.starts_with('{')),
                "the second instance logs JSON"
            );
            let mut secrets: Vec<&str> = tickets.iter().map(String::as_str).collect();
            secrets.push(&token);
            let leaks: usize = logs
                .iter()
                .map(|log| {
                    secrets.iter().filter(|s| log.contains(*s)).count()
                        + log.matches("Bearer ").count()
                        + log.to_ascii_lowercase().matches("authorization: ").count()
                        + log
                            .to_ascii_lowercase()
                            .matches("\"authorization\"")
                            .count()
                })
                .sum();
            exactly(
                test,
                backend,
                "tickets, JWTs or Authorization headers in trace logs (text and JSON)",
                leaks as f64,
                "occurrences",
                0.0,
            );
        }
    }
}
