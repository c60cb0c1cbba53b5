//! `/stream`: the shared log pollers, on the memory repository with paused time.

use std::sync::Arc;
use std::time::Duration;

use decnet_bus::Bus;
use decnet_repo::prelude::*;
use decnet_repo::{DbTime, LogFilter, LogRow, MemoryRepository};
use decnet_sse::{Decoded, Decoder};
use decnet_stream::{EventStream, HubConfig, LogConfig, LogHub, LogParams, OpenOptions, StreamHub};
use futures::StreamExt;
use serde_json::{Value, json};

struct Fixture {
    repo: MemoryRepository,
    logs: LogHub,
    _hub: StreamHub,
}

fn fixture(config: LogConfig) -> Fixture {
    let repo = MemoryRepository::new();
    let hub = StreamHub::start(Bus::null(), Vec::new(), HubConfig::default());
    let logs = LogHub::new(&hub, Arc::new(repo.clone()), config);
    Fixture {
        repo,
        logs,
        _hub: hub,
    }
}

fn row(decky: &str, line: &str) -> LogRow {
    LogRow {
        id: 0,
        timestamp: DbTime::parse("2026-06-20 12:00:00.000000").expect("time"),
        decky: decky.into(),
        service: "ssh".into(),
        event_type: "login".into(),
        attacker_ip: "203.0.113.7".into(),
        raw_line: line.into(),
        fields: json!({"username": "root"}).to_string(),
        msg: None,
        trace_id: None,
        span_id: None,
    }
}

async fn insert(fx: &Fixture, decky: &str, line: &str) -> i64 {
    fx.repo.insert_log(&row(decky, line)).await.expect("insert")
}

struct Reader {
    stream: EventStream,
    decoder: Decoder,
    items: std::collections::VecDeque<Decoded>,
}

impl Reader {
    fn new(stream: EventStream) -> Self {
        Self {
            stream,
            decoder: Decoder::new(),
            items: Default::default(),
        }
    }

    /// The next decoded item, advancing paused time up to `within`.
    async fn next(&mut self, within: Duration) -> Option<Decoded> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            match tokio::time::timeout(within, self.stream.next()).await {
                Ok(Some(chunk)) => self.items.extend(self.decoder.feed(&chunk)),
                Ok(None) => return None,
                Err(_) => panic!("nothing within {within:?}"),
            }
        }
    }

    /// The next `message` frame: its `type`, `data` and `id`.
    async fn message(&mut self, within: Duration) -> (String, Value, String) {
        loop {
            match self.next(within).await {
                Some(Decoded::Event(event)) => {
                    assert_eq!(event.event, "message", "{event:?}");
                    let data: Value = serde_json::from_str(&event.data).expect("json");
                    let kind = data["type"].as_str().expect("type").to_owned();
                    return (kind, data["data"].clone(), event.id);
                }
                Some(_) => continue,
                None => panic!("stream ended"),
            }
        }
    }

    async fn preamble(&mut self) -> (Value, Value) {
        assert_eq!(
            self.next(SEC).await,
            Some(Decoded::Comment("keepalive".into()))
        );
        assert_eq!(self.next(SEC).await, Some(Decoded::Retry(3000)));
        let (kind, stats, _) = self.message(SEC).await;
        assert_eq!(kind, "stats");
        let (kind, histogram, _) = self.message(SEC).await;
        assert_eq!(kind, "histogram");
        (stats, histogram)
    }
}

const SEC: Duration = Duration::from_secs(1);

async fn open(fx: &Fixture, search: Option<&str>, last_event_id: i64) -> Reader {
    let params = LogParams {
        filter: LogFilter::new(search, None, None),
        last_event_id,
        max_output: None,
    };
    Reader::new(
        fx.logs
            .open(params, OpenOptions::default())
            .await
            .expect("open"),
    )
}

#[tokio::test(start_paused = true)]
async fn starts_with_stats_and_histogram_then_polls_from_the_newest() {
    let fx = fixture(LogConfig::default());
    for n in 0..3 {
        insert(&fx, "web01", &format!("old {n}")).await;
    }
    let mut reader = open(&fx, None, 0).await;
    let (stats, histogram) = reader.preamble().await;
    assert_eq!(
        stats,
        json!({"total_logs": 3, "unique_attackers": 1, "active_deckies": 0, "deployed_deckies": 0})
    );
    assert_eq!(
        histogram,
        json!([{"time": "2026-06-20 12:00:00", "count": 3}])
    );
    // lastEventId=0: from the newest on, the three old rows are not sent.
    let id = insert(&fx, "web01", "new").await;
    let (kind, rows, frame_id) = reader.message(Duration::from_secs(2)).await;
    assert_eq!((kind.as_str(), frame_id), ("logs", id.to_string()));
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["raw_line"], "new");
    assert_eq!(
        rows[0]["fields"], "{\"username\":\"root\"}",
        "fields stay a JSON string"
    );
    assert_eq!(rows[0]["timestamp"], "2026-06-20T12:00:00");
    // After new logs, stats and histogram follow in the same poll, counting them.
    let (kind, stats, _) = reader.message(SEC).await;
    assert_eq!((kind.as_str(), &stats["total_logs"]), ("stats", &json!(4)));
    let (kind, histogram, _) = reader.message(SEC).await;
    assert_eq!(
        (kind.as_str(), &histogram[0]["count"]),
        ("histogram", &json!(4))
    );
    // Again a second later: fresh, not the stats cached by the first poll.
    let id = insert(&fx, "web02", "newer").await;
    assert_eq!(
        reader.message(Duration::from_secs(2)).await.2,
        id.to_string()
    );
    assert_eq!(reader.message(SEC).await.1["total_logs"], 5);
}

#[tokio::test(start_paused = true)]
async fn without_logs_the_refresh_comes_every_ten_polls() {
    let fx = fixture(LogConfig::default());
    let mut reader = open(&fx, None, 0).await;
    reader.preamble().await;
    let start = tokio::time::Instant::now();
    assert_eq!(reader.message(Duration::from_secs(30)).await.0, "stats");
    let first = start.elapsed();
    assert!(
        first >= Duration::from_secs(10) && first < Duration::from_secs(11),
        "{first:?}"
    );
    assert_eq!(reader.message(SEC).await.0, "histogram");
    assert_eq!(reader.message(Duration::from_secs(30)).await.0, "stats");
    let second = start.elapsed();
    assert!(
        second >= Duration::from_secs(20) && second < Duration::from_secs(21),
        "{second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hundred_dashboards_on_one_filter_share_one_poller() {
    let fx = fixture(LogConfig::default());
    insert(&fx, "web01", "x").await;
    let mut readers = Vec::new();
    for _ in 0..100 {
        readers.push(open(&fx, Some("decky:web01"), 0).await);
    }
    let other = open(&fx, Some("decky:db01"), 0).await;
    assert_eq!(fx.logs.stats().pollers, 2);
    assert_eq!(fx.logs.stats().streams_active, 101);
    let before = fx.logs.stats().queries;
    tokio::time::sleep(Duration::from_secs(100)).await;
    let queries = fx.logs.stats().queries - before;
    // Two pollers, one logs query a second each, plus a histogram each and
    // one shared stats every 10 s: about 2 * 100 + 10 * 3 = 230, never
    // 100 connections' worth (DECNET: ~10,000 + 2,000).
    assert!((200..=260).contains(&queries), "{queries} queries in 100 s");
    drop(readers);
    drop(other);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fx.logs.stats().pollers,
        0,
        "pollers retire with their last stream"
    );
}

#[tokio::test(start_paused = true)]
async fn last_event_id_replays_fifty_rows_a_poll_then_merges_with_the_live_poller() {
    let fx = fixture(LogConfig::default());
    for n in 0..120 {
        insert(&fx, "web01", &format!("l{n}")).await;
    }
    let mut live = open(&fx, None, 0).await;
    live.preamble().await;
    let mut replay = open(&fx, None, 10).await;
    replay.preamble().await;
    assert_eq!(fx.logs.stats().pollers, 2);
    let mut seen = Vec::new();
    while seen.len() < 110 {
        let (kind, rows, id) = replay.message(Duration::from_secs(5)).await;
        if kind != "logs" {
            continue;
        }
        let ids: Vec<i64> = rows
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["id"].as_i64().unwrap_or(0))
            .collect();
        assert!(ids.len() <= 50);
        assert_eq!(id, ids.last().expect("rows").to_string());
        seen.extend(ids);
    }
    assert_eq!(
        seen,
        (11..=120).collect::<Vec<_>>(),
        "ascending, nothing lost, nothing twice"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fx.logs.stats().pollers,
        1,
        "caught up: merged into the live poller"
    );
    let id = insert(&fx, "web01", "after").await;
    for reader in [&mut live, &mut replay] {
        loop {
            let (kind, _, frame_id) = reader.message(Duration::from_secs(5)).await;
            if kind == "logs" {
                assert_eq!(frame_id, id.to_string());
                break;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_poll_ends_every_stream_with_decnets_error_frame() {
    let fx = fixture(LogConfig::default());
    let mut reader = open(&fx, None, 0).await;
    reader.preamble().await;
    fx.repo.set_available(false);
    loop {
        match reader.next(Duration::from_secs(5)).await {
            Some(Decoded::Event(event)) => {
                assert_eq!(event.event, "error");
                assert_eq!(
                    event.data,
                    r#"{"type":"error","message":"Stream interrupted"}"#
                );
                break;
            }
            Some(_) => {}
            None => panic!("ended without the error frame"),
        }
    }
    assert_eq!(reader.next(SEC).await, None);
    // And a new stream is refused before any byte (503, not an aborted 200).
    let params = LogParams::default();
    assert!(matches!(
        fx.logs.open(params, OpenOptions::default()).await,
        Err(decnet_stream::OpenError::Repository(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn developer_max_output_ends_after_that_many_polls() {
    let fx = fixture(LogConfig {
        developer: true,
        ..LogConfig::default()
    });
    let params = LogParams {
        max_output: Some(3),
        ..LogParams::default()
    };
    let mut reader = Reader::new(
        fx.logs
            .open(params, OpenOptions::default())
            .await
            .expect("open"),
    );
    reader.preamble().await;
    let start = tokio::time::Instant::now();
    while reader.next(Duration::from_secs(10)).await.is_some() {}
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_fleet_count_comes_from_decnets_state_file() {
    let dir = std::env::temp_dir().join(format!(
        "decnet-logs-test-{}",
        test_support::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("decnet-state.json");
    std::fs::write(
        &state,
        r#"{"config": {"deckies": [{"name": "a"}, {"name": "b"}]}}"#,
    )
    .expect("write");
    let fx = fixture(LogConfig {
        state_file: Some(state),
        ..LogConfig::default()
    });
    fx.repo
        .upsert_topology("t", "net", "active")
        .await
        .expect("topology");
    fx.repo
        .insert_topology_decky("t", "d1", "running")
        .await
        .expect("decky");
    fx.repo
        .insert_topology_decky("t", "d2", "torn_down")
        .await
        .expect("decky");
    let mut reader = open(&fx, None, 0).await;
    let (stats, _) = reader.preamble().await;
    assert_eq!(stats["active_deckies"], 3);
    assert_eq!(stats["deployed_deckies"], 4);
    let _ = std::fs::remove_dir_all(&dir);
}
