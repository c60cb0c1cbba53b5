//! The raw client the broker's tests drive it with: frames built and EVTs
//! parsed by hand, independently of any codec.

#![allow(dead_code, reason = "not every helper is used by every test file")]

use std::io;
use std::time::Duration;

use serde_json::Value;
use test_support::decnet_broker::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long an expected thing may take.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// How long silence is listened for.
pub(crate) const QUIET: Duration = Duration::from_millis(150);

/// A frame built by hand: `header` (without LF), LF, length, body.
pub(crate) fn frame(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.push(b'\n');
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// One EVT as received.
#[derive(Debug)]
pub(crate) struct Evt {
    /// The whole frame as received.
    pub(crate) raw: Vec<u8>,
    /// The topic of its header.
    pub(crate) topic: String,
    /// Its body, parsed.
    pub(crate) body: Value,
}

/// A raw connection to a broker.
pub(crate) struct Client {
    pub(crate) stream: UnixStream,
    pub(crate) buf: Vec<u8>,
}

impl Client {
    pub(crate) async fn connect(broker: &TestBroker) -> Client {
        let stream = UnixStream::connect(broker.path())
            .await
            .unwrap_or_else(|err| panic!("connect: {err}"));
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|err| panic!("send: {err}"));
    }

    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next frame, which must be an EVT.
    pub(crate) async fn evt(&mut self) -> Evt {
        match tokio::time::timeout(WAIT, self.read_evt()).await {
            Ok(evt) => evt,
            Err(_) => panic!("no EVT within {WAIT:?}"),
        }
    }

    pub(crate) async fn read_evt(&mut self) -> Evt {
        loop {
            match take_evt(&mut self.buf) {
                Ok(Some(evt)) => return evt,
                Ok(None) => {}
                Err(error) => panic!("{error}"),
            }
            match self.fill().await {
                Ok(0) => panic!("connection closed while waiting for an EVT"),
                Ok(_) => {}
                Err(err) => panic!("read: {err}"),
            }
        }
    }

    /// Write `bytes`, as far as the broker reads them (it may close the
    /// connection half-way).
    pub(crate) async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Read until the broker closes the connection (an end of stream, or a
    /// reset when our data was left unread), for at most `within`; whether
    /// it did. What it wrote is in `buf`.
    pub(crate) async fn read_to_close(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Nothing arrives for a while, and the connection stays open.
    pub(crate) async fn assert_quiet(&mut self) {
        if let Ok(res) = tokio::time::timeout(QUIET, self.fill()).await {
            panic!(
                "expected silence, got {res:?} ({:?})",
                String::from_utf8_lossy(&self.buf)
            );
        }
        assert!(self.buf.is_empty());
    }

    /// The broker closes the connection without sending a byte.
    pub(crate) async fn assert_closed(&mut self, what: &str) {
        assert!(
            self.read_to_close(WAIT).await,
            "{what}: connection still open after {WAIT:?}"
        );
        assert!(
            self.buf.is_empty(),
            "{what}: the broker wrote {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

/// The first whole frame of `buf`, taken out, which must be an EVT with a
/// JSON body; `Ok(None)` while it is incomplete.
///
/// # Errors
///
/// A frame that is not an EVT, or whose body is not JSON.
pub(crate) fn take_evt(buf: &mut Vec<u8>) -> Result<Option<Evt>, String> {
    let Some(lf) = buf.iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    if buf.len() < lf + 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[lf + 1], buf[lf + 2], buf[lf + 3], buf[lf + 4]]) as usize;
    if buf.len() < lf + 5 + len {
        return Ok(None);
    }
    let raw: Vec<u8> = buf.drain(..lf + 5 + len).collect();
    let header = String::from_utf8_lossy(&raw[..lf]).into_owned();
    let Some(topic) = header.strip_prefix("EVT ") else {
        return Err(format!("the broker sent a non-EVT frame: {header:?}"));
    };
    let body: Value =
        serde_json::from_slice(&raw[lf + 5..]).map_err(|err| format!("EVT body: {err}"))?;
    Ok(Some(Evt {
        topic: topic.to_owned(),
        body,
        raw,
    }))
}

/// A broker in a temporary directory of its own.
pub(crate) async fn broker() -> TestBroker {
    TestBroker::start_in_temp_dir()
        .await
        .unwrap_or_else(|err| panic!("broker: {err}"))
}

/// A client subscribed to `patterns`, once the broker has them.
pub(crate) async fn subscriber(broker: &TestBroker, name: &str, patterns: &[&str]) -> Client {
    let mut client = Client::connect(broker).await;
    let mut bytes = frame(&format!("HELLO {name}"), b"");
    for pattern in patterns {
        bytes.extend(frame(&format!("SUB {pattern}"), b""));
    }
    client.send(&bytes).await;
    let ready = broker
        .wait_until(WAIT, |b| {
            b.connections().iter().any(|c| {
                c.name == name && patterns.iter().all(|p| c.patterns.iter().any(|q| q == p))
            })
        })
        .await;
    assert!(ready, "subscriber {name} never registered {patterns:?}");
    client
}
