//! `GET /api/v1/stream` end to end: DECNET's `search` language, the
//! `lastEventId` replay, the stats and histogram frames, against rows the
//! test writes through the world's repository writer. Every expectation is
//! computed from those rows by the rules of DECNET.md §3.1 (with each
//! engine's own answers where SQLite and MySQL differ), never written down.

use std::collections::BTreeMap;
use std::time::Duration;

use decnet_repo::{DbTime, LogRow, Read};
use serde_json::{Value, json};
use test_support::http::{ITEM_TIMEOUT, SseStream};

use crate::common::*;

const LOGS: &str = "/api/v1/stream";

/// DECNET's `/stream` histogram bucket (900 s).
const BUCKET_SECS: i64 = 900;

/// The rows every `/stream` case starts from (ids filled in by the writer).
fn seed_rows() -> Vec<LogRow> {
    let row =
        |at: &str, decky: &str, service: &str, event: &str, ip: &str, raw: &str, fields: Value| {
            LogRow {
                id: 0,
                timestamp: DbTime::parse(at).expect("datetime"),
                decky: decky.into(),
                service: service.into(),
                event_type: event.into(),
                attacker_ip: ip.into(),
                raw_line: raw.into(),
                fields: serde_json::to_string(&fields).expect("fields"),
                msg: None,
                trace_id: None,
                span_id: None,
            }
        };
    vec![
        row(
            "2026-06-20 12:00:00",
            "web01",
            "ssh",
            "login",
            "203.0.113.7",
            "sshd: accepted password for root",
            json!({"username": "root", "port": 22}),
        ),
        row(
            "2026-06-20 12:10:00",
            "web02",
            "http",
            "request",
            "198.51.100.9",
            "GET /admin HTTP/1.1",
            json!({"path": "/admin", "status": 404}),
        ),
        row(
            "2026-06-20 12:20:00",
            "web01",
            "ftp",
            "login",
            "198.51.100.9",
            "ftp: USER anonymous",
            json!({"username": "anonymous", "ok": true}),
        ),
        row(
            "2026-06-20 12:44:59",
            "db01",
            "mysql",
            "query",
            "203.0.113.7",
            "query SELECT 1 from web",
            json!({"query": "SELECT 1"}),
        ),
        row(
            "2026-06-20 13:00:00",
            "WEB01",
            "ssh",
            "logout",
            "192.0.2.1",
            "sshd: session closed for admin",
            json!({"username": "admin"}),
        ),
    ]
}

/// Write `rows` through the world's writer; the rows with their ids.
async fn write_rows(world: &World, rows: Vec<LogRow>) -> Vec<LogRow> {
    let mut written = Vec::new();
    for mut row in rows {
        row.id = world.writer.insert_log(&row).await.expect("insert a log");
        written.push(row);
    }
    written
}

/// Whether the world's engine is MySQL (its collations and JSON rules).
fn mysql(world: &World) -> bool {
    world.backend == Backend::UnixMysql
}

/// Whether `row` matches one token of DECNET's search language (already
/// split as the shell does), by DECNET.md §3.1: `key:value` equality on
/// the four columns, JSON-key match on `fields` for any other key reduced
/// to `[A-Za-z0-9_]` (ignored when nothing is left), free text
/// (`LIKE %token%`, ASCII case folded) on raw_line, decky, service and
/// attacker_ip. The tokens used here hold no LIKE wildcards.
fn token_matches(row: &LogRow, token: &str, mysql: bool) -> bool {
    // MySQL compares the columns with a case-insensitive collation.
    let equal = |column: &str, value: &str| {
        if mysql {
            column.eq_ignore_ascii_case(value)
        } else {
            column == value
        }
    };
    let Some((key, value)) = token.split_once(':') else {
        let needle = token.to_ascii_lowercase();
        return [&row.raw_line, &row.decky, &row.service, &row.attacker_ip]
            .iter()
            .any(|column| column.to_ascii_lowercase().contains(&needle));
    };
    match key {
        "decky" => equal(&row.decky, value),
        "service" => equal(&row.service, value),
        "event" => equal(&row.event_type, value),
        "attacker" | "attacker-ip" | "attacker_ip" => equal(&row.attacker_ip, value),
        _ => {
            let key: String = key
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if key.is_empty() {
                return true;
            }
            let fields: Value = serde_json::from_str(&row.fields).expect("fields are JSON");
            // SQLite compares json_extract with a text bind: strings only.
            // MySQL unquotes: numbers as their text, booleans true/false.
            match &fields[key.as_str()] {
                Value::String(text) => text == value,
                Value::Number(n) if mysql => n.to_string() == value,
                Value::Bool(b) if mysql => b.to_string() == value,
                _ => false,
            }
        }
    }
}

/// The rows matching every token (AND).
fn matching<'a>(rows: &'a [LogRow], tokens: &[&str], mysql: bool) -> Vec<&'a LogRow> {
    rows.iter()
        .filter(|row| tokens.iter().all(|t| token_matches(row, t, mysql)))
        .collect()
}

/// DECNET's histogram of `rows`: 900 s buckets of the epoch seconds, only
/// the non-empty ones, ascending, labelled `YYYY-MM-DD HH:MM:SS`.
fn histogram<'a>(rows: impl IntoIterator<Item = &'a LogRow>) -> Value {
    let mut buckets: BTreeMap<i64, i64> = BTreeMap::new();
    for row in rows {
        let secs = row.timestamp.unix_micros().div_euclid(1_000_000);
        *buckets.entry(secs.div_euclid(BUCKET_SECS)).or_default() += 1;
    }
    buckets
        .into_iter()
        .map(|(bucket, count)| {
            let at = DbTime::from_unix_micros(bucket * BUCKET_SECS * 1_000_000).expect("in range");
            json!({"time": at.to_sql_seconds(), "count": count})
        })
        .collect()
}

/// The rows as a `logs` frame carries them.
fn as_frame<'a>(rows: impl IntoIterator<Item = &'a LogRow>) -> Value {
    rows.into_iter()
        .map(|row| serde_json::to_value(row).expect("row"))
        .collect()
}

/// The next `/stream` frame: `event: message`; its `type`, `data` and `id:`.
async fn message(stream: &mut SseStream) -> (String, Value, String) {
    let frame = stream.next_event(ITEM_TIMEOUT).await;
    assert_eq!(frame.event, "message", "{frame:?}");
    let mut body = object(serde_json::from_str(&frame.data).expect("JSON"));
    let kind = body["type"].as_str().expect("a type").to_owned();
    (kind, body.remove("data").unwrap_or_default(), frame.id)
}

/// The next `logs` frame (stats and histogram refreshes skipped); its rows
/// and `id:`.
async fn next_logs(stream: &mut SseStream) -> (Value, String) {
    loop {
        let (kind, data, id) = message(stream).await;
        if kind == "logs" {
            return (data, id);
        }
        assert!(kind == "stats" || kind == "histogram", "{kind}: {data}");
    }
}

/// Open `/stream` with `query` (already encoded) as `token`'s bearer;
/// past the preamble, the first stats and histogram frames.
async fn open(server: &TestServer, token: &str, query: &str) -> (SseStream, Value, Value) {
    let mut stream = server
        .open_path_with_bearer(token, &format!("{LOGS}?{query}"))
        .await;
    stream.expect_preamble().await;
    let (kind, stats, _) = message(&mut stream).await;
    assert_eq!(kind, "stats", "{stats}");
    let (kind, histogram, _) = message(&mut stream).await;
    assert_eq!(kind, "histogram", "{histogram}");
    (stream, stats, histogram)
}

/// Fast polls and refreshes (DECNET's: 1 s apart, every 10 polls), room
/// for many streams opened in a burst.
fn fast_logs(settings: &mut decnet_api::settings::Settings) {
    settings.logs.poll_every = Duration::from_millis(20);
    settings.logs.refresh_every = 5;
    settings.logs.state_file = None;
    settings.max_per_user = 64;
    settings.app.open_burst = 64;
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Each token form of DECNET's `search`, quoting and AND, through HTTP:
/// the histogram of the first frames and the first `logs` frame (replaying
/// from the first row) hold exactly the matching rows.
pub(crate) async fn logs_stream_search(world: World) {
    let rows = write_rows(&world, seed_rows()).await;
    let server = world.server_with(fast_logs).await;
    let token = world.token(&world.user("viewer").await);
    let mysql = mysql(&world);
    server.request("GET", LOGS, &[]).await.assert_401();

    // (the `search` parameter, its tokens as the shell splits them)
    let searches: &[(&str, &[&str])] = &[
        ("decky:web01", &["decky:web01"]),
        ("service:ssh", &["service:ssh"]),
        ("event:login", &["event:login"]),
        ("attacker:203.0.113.7", &["attacker:203.0.113.7"]),
        ("attacker-ip:198.51.100.9", &["attacker-ip:198.51.100.9"]),
        ("attacker_ip:192.0.2.1", &["attacker_ip:192.0.2.1"]),
        ("decky:nowhere", &["decky:nowhere"]),
        ("username:root", &["username:root"]),
        ("user.name:admin", &["user.name:admin"]),
        ("port:22", &["port:22"]),
        ("status:404", &["status:404"]),
        ("ok:true", &["ok:true"]),
        (".-:anything", &[".-:anything"]),
        ("admin", &["admin"]),
        ("ADMIN", &["ADMIN"]),
        ("web", &["web"]),
        ("\"for root\"", &["for root"]),
        ("'session closed'", &["session closed"]),
        (r"for\ admin", &["for admin"]),
        ("service:ssh root", &["service:ssh", "root"]),
        (
            "decky:web01 event:login ftp",
            &["decky:web01", "event:login", "ftp"],
        ),
        (
            "username:root service:ftp",
            &["username:root", "service:ftp"],
        ),
    ];
    let mut non_empty = 0;
    for (search, tokens) in searches {
        let want = matching(&rows, tokens, mysql);
        let (mut stream, _, got_histogram) = open(
            &server,
            &token,
            &format!("search={}&lastEventId=-1", encode(search)),
        )
        .await;
        assert_eq!(got_histogram, histogram(want.iter().copied()), "{search}");
        if want.is_empty() {
            // Nothing comes before the next refresh (5 polls later).
            let (kind, data, _) = message(&mut stream).await;
            assert_eq!(kind, "stats", "{search}: no rows, got {data}");
        } else {
            non_empty += 1;
            let (got, id) = next_logs(&mut stream).await;
            assert_eq!(got, as_frame(want.iter().copied()), "{search}");
            let last = want.last().map(|row| row.id).unwrap_or_default();
            assert_eq!(id, last.to_string(), "{search}: id: the highest row id");
        }
    }
    assert!(
        non_empty >= searches.len() / 2,
        "the rows cover the searches"
    );
}

/// `lastEventId` replay (0: from the newest on; n: the rows after n, lax
/// integer parsing), the stats fields and the unfiltered histogram.
pub(crate) async fn logs_stream_replay_stats_histogram(world: World) {
    let mut rows = write_rows(&world, seed_rows()).await;
    let deckies = [
        ("T1", "d1", "running"),
        ("T1", "d2", "torn_down"),
        ("T2", "d3", "running"),
        ("T2", "d4", "failed"),
    ];
    for (topology, name, state) in deckies {
        world
            .writer
            .insert_topology_decky(topology, name, state)
            .await
            .expect("seed a decky");
    }
    let server = world.server_with(fast_logs).await;
    let token = world.token(&world.user("viewer").await);
    let stats = |rows: &[LogRow]| {
        let mut ips: Vec<&str> = rows.iter().map(|r| r.attacker_ip.as_str()).collect();
        ips.sort_unstable();
        ips.dedup();
        json!({
            "total_logs": rows.len(),
            "unique_attackers": ips.len(),
            "active_deckies": deckies.iter().filter(|d| d.2 == "running").count(),
            "deployed_deckies": deckies.len(),
        })
    };

    // From the newest on: the stats and histogram of every row, then only
    // what comes after.
    let (mut live, got_stats, got_histogram) = open(&server, &token, "").await;
    assert_eq!(got_stats, stats(&rows));
    assert_eq!(got_histogram, histogram(&rows));
    let (mut zero, _, _) = open(&server, &token, "lastEventId=0").await;
    let mut new = seed_rows().swap_remove(1);
    new.timestamp = DbTime::parse("2026-06-20 14:00:00").expect("datetime");
    new.raw_line = "GET /after HTTP/1.1".into();
    let new = write_rows(&world, vec![new]).await;
    for stream in [&mut live, &mut zero] {
        let (got, id) = next_logs(stream).await;
        assert_eq!(got, as_frame(&new));
        assert_eq!(id, new[0].id.to_string());
    }
    rows.extend(new);
    // The refresh after new logs: the stats count them.
    let (kind, data, _) = message(&mut live).await;
    assert_eq!((kind.as_str(), data), ("stats", stats(&rows)));
    let (kind, data, _) = message(&mut live).await;
    assert_eq!((kind.as_str(), data), ("histogram", histogram(&rows)));

    // From an id: the rows after it, ascending, in one frame; `+n` parses.
    let after = rows[1].id;
    for query in [
        format!("lastEventId={after}"),
        format!("lastEventId={}", encode(&format!("+{after}"))),
    ] {
        let (mut replay, _, _) = open(&server, &token, &query).await;
        let (got, id) = next_logs(&mut replay).await;
        assert_eq!(got, as_frame(&rows[2..]), "{query}");
        assert_eq!(
            id,
            rows.last().map(|r| r.id).unwrap_or_default().to_string()
        );
    }
    // Not an integer: 422 after authentication.
    let auth = format!("Bearer {token}");
    server
        .request(
            "GET",
            &format!("{LOGS}?lastEventId=1.5"),
            &[("authorization", &auth)],
        )
        .await
        .assert_detail(422, "Invalid request parameters");
}

/// 20 dashboards on one filter and one on another make the `logs_after_id`
/// queries of two pollers, not of 21: a poller polls once per
/// `poll_every`, so `POLLS` queries by two of them span at least
/// `POLLS / 2 - 1` intervals (a slow machine only makes that longer; 21
/// pollers would make them in about three intervals).
pub(crate) async fn logs_stream_one_poller_per_filter(world: World) {
    const DASHBOARDS: usize = 20;
    const POLLS: u64 = 40;
    write_rows(&world, seed_rows()).await;
    let mut every = Duration::ZERO;
    let server = world
        .server_with(|settings| {
            fast_logs(settings);
            every = settings.logs.poll_every;
        })
        .await;
    let token = world.token(&world.user("viewer").await);
    let mut dashboards = Vec::new();
    for _ in 0..DASHBOARDS {
        dashboards.push(open(&server, &token, "search=service%3Assh").await.0);
    }
    dashboards.push(open(&server, &token, "search=decky%3Aweb02").await.0);

    let before = server.queries.get(Read::LogsAfterId);
    let began = tokio::time::Instant::now();
    poll_until(Duration::from_secs(30), "the pollers' queries", || async {
        (server.queries.get(Read::LogsAfterId) >= before + POLLS).then_some(())
    })
    .await;
    let took = began.elapsed();
    let floor = every * u32::try_from(POLLS / 2 - 1).unwrap_or(u32::MAX);
    assert!(
        took >= floor,
        "{POLLS} polls in {took:?}, under the {floor:?} two pollers need: one poller per stream?"
    );
    // Every dashboard is still served by its filter's poller.
    for stream in &mut dashboards {
        let (kind, _, _) = message(stream).await;
        assert!(
            kind == "stats" || kind == "histogram" || kind == "logs",
            "{kind}"
        );
    }
}
