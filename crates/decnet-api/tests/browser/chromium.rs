//! Headless Chromium for the browser tests, driven over the DevTools
//! protocol: one browser process per test (killed with its whole process
//! group, and its profile deleted, when the guard drops, also on panic), and
//! a small CDP client over a websocket (the browser's, or one page's).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long Chromium may take to start and announce its DevTools port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The Chromium binary: `DECNET_TEST_CHROMIUM`, else `chromium` on `PATH`.
/// `None` after saying why: a loud `SKIPPED` line off CI; on CI (`CI` set
/// and not `false`) a missing browser fails the test instead.
pub(crate) fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let (found, why) = match std::env::var_os("DECNET_TEST_CHROMIUM") {
        Some(path) => {
            let path = PathBuf::from(path);
            let why = format!(
                "no Chromium: DECNET_TEST_CHROMIUM={} is not an executable file",
                path.display()
            );
            (is_executable(&path).then_some(path), why)
        }
        None => (
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("chromium"))
                    .find(|candidate| is_executable(candidate))
            }),
            "no Chromium: no `chromium` on PATH and DECNET_TEST_CHROMIUM unset".to_owned(),
        ),
    };
    if found.is_some() {
        return found;
    }
    let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !on_ci,
        "{test}: {why}; install it (`apt-get install chromium`, as the xtask does)"
    );
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIPPED: {test}: {why} (`apt-get install chromium` to run it)");
    eprintln!("==================================================================");
    None
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running headless Chromium. Dropping it kills the browser and every
/// process it started, then deletes its profile and log.
pub(crate) struct Chromium {
    child: Child,
    dir: PathBuf,
    /// The DevTools port on 127.0.0.1.
    pub(crate) port: u16,
    /// The browser's DevTools websocket.
    pub(crate) browser_ws: String,
}

impl Chromium {
    /// Start `binary` headless with a fresh profile, plus `extra` flags.
    pub(crate) async fn launch(binary: &Path, extra: &[&str]) -> Chromium {
        let dir = std::env::temp_dir().join(format!(
            "decnet-browser-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("create the Chromium profile directory");
        let log = File::create(dir.join("chromium.log")).expect("create the Chromium log");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-sync",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                // Eight pages at once: none of them is a throttled background tab.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--mute-audio",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            // Its own process group, so the guard ends the renderers too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        // The guard exists from here on: a failed start still cleans up.
        let mut chromium = Chromium {
            child,
            dir,
            port: 0,
            browser_ws: String::new(),
        };
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The file is written whole once the port is bound: port, then path.
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    chromium.port = port;
                    chromium.browser_ws = format!("ws://127.0.0.1:{port}{}", path.trim());
                    return chromium;
                }
            }
            if let Ok(Some(status)) = chromium.child.try_wait() {
                panic!(
                    "Chromium exited at start ({status}):\n{}",
                    chromium.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Chromium announced no DevTools port within {START_TIMEOUT:?}:\n{}",
                chromium.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A page's DevTools websocket.
    pub(crate) fn page_ws(&self, target_id: &str) -> String {
        format!("ws://127.0.0.1:{}/devtools/page/{target_id}", self.port)
    }

    /// The last lines Chromium wrote to stderr (for failure messages).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // SIGKILL to the whole group (the browser, its zygotes, renderers and
        // utilities), by the group's id, which is the browser's pid.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A child that had not seen the signal yet may still write a file:
        // try a few times before giving up.
        for _ in 0..10 {
            if std::fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "warning: could not delete the Chromium profile {}",
            self.dir.display()
        );
    }
}

/// A DevTools protocol connection: commands and their answers; events that
/// arrive meanwhile are kept for [`Cdp::take_events`].
pub(crate) struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    /// Connect to a DevTools websocket (`ws://127.0.0.1:<port>/devtools/...`).
    pub(crate) async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| {
                panic!("DevTools websocket {url}: no handshake in {CALL_TIMEOUT:?}")
            })
            .unwrap_or_else(|e| panic!("DevTools websocket {url}: {e}"));
        Cdp {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Send a command without waiting for its answer (one that may never
    /// come back while the page stalls, as `Page.navigate`); its id.
    pub(crate) async fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::text(message))
            .await
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        id
    }

    /// Run a command; its `result`. A protocol error fails the test.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {CALL_TIMEOUT:?}"));
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => panic!("{method}: DevTools closed ({close:?})"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("{method}: DevTools websocket: {e}"),
                None => panic!("{method}: DevTools websocket ended"),
            };
            let message: Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("{method}: DevTools sent non-JSON ({e}): {text}"));
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message.get("result").cloned().unwrap_or(Value::Null);
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
            // Otherwise the answer to a command sent with `send`: not awaited.
        }
    }

    /// The events received so far (`{"method", "params"}`), emptied.
    pub(crate) fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Evaluate `expression` in the page; its value (`returnByValue`).
    pub(crate) async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluate {expression}: {exception}");
        }
        result
            .pointer("/result/value")
            .cloned()
            .unwrap_or(Value::Null)
    }
}
