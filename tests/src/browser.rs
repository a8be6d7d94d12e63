//! Headless Chromium for the browser tests (the dashboard, `tests/dashboard.rs`; the STOMP and
//! MQTT browser libraries, `tests/browser_clients.rs`), driven over the Chrome DevTools
//! Protocol: a page is loaded, JavaScript evaluated in it, elements clicked with real mouse
//! events (`Input.dispatchMouseEvent` at the element's position, as a user's click), text typed
//! with `Input.insertText`, and screenshots taken.
//!
//! A small client of our own over `tokio-tungstenite` rather than a CDP crate: the test needs
//! six commands, and the CDP crates generate thousands of types (minutes of build on the 2-core
//! CI machine) or run their own threads outside the workspace's tokio.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`Page::wait_for`] polls before failing.
const WAIT: Duration = Duration::from_secs(20);

/// The Chromium binary: `WARREN_CHROMIUM`, else the first of the usual names on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARREN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
}

/// Finds Chromium, installing Debian's package when it is missing and apt-get can (as
/// `.ci/run` does); None only if neither works.
pub fn find_or_install_chromium() -> Option<PathBuf> {
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    eprintln!("chromium not found: trying apt-get install -y chromium");
    let installed = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        find_chromium()
    } else {
        None
    }
}

/// A running headless Chromium (killed on drop).
pub struct Browser {
    child: Child,
    _profile: TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// A tab of the browser, attached by session id.
pub struct Page<'a> {
    browser: &'a mut Browser,
    session: String,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and connects to its DevTools endpoint.
    pub async fn launch(chromium: &Path) -> Result<Browser, String> {
        let profile =
            std::env::temp_dir().join(format!("warren-chromium-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        let profile = TempDir(profile);
        let mut child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromium.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or("chromium did not print its DevTools address")?;
        // Keep reading its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("DevTools connection: {e}"))?;
        Ok(Browser {
            child,
            _profile: profile,
            ws,
            next_id: 1,
        })
    }

    /// Sends a command (to a page's session, or to the browser) and returns its result.
    async fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut cmd = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            cmd["sessionId"] = json!(s);
        }
        self.ws
            .send(WsMessage::Text(cmd.to_string().into()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), self.ws.next())
                .await
                .map_err(|_| format!("{method}: no answer from chromium"))?
                .ok_or("DevTools connection closed")?
                .map_err(|e| e.to_string())?;
            let WsMessage::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if v["id"] != json!(id) {
                continue; // an event, or another command's answer
            }
            if let Some(err) = v.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(v["result"].clone());
        }
    }

    /// Opens a tab of `width` x `height` CSS pixels.
    pub async fn new_page(&mut self, width: u32, height: u32) -> Result<Page<'_>, String> {
        let t = self
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let a = self
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": t["targetId"], "flatten": true}),
            )
            .await?;
        let session = a["sessionId"].as_str().ok_or("no session id")?.to_string();
        let mut page = Page {
            browser: self,
            session,
        };
        page.cmd("Page.enable", json!({})).await?;
        page.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        Ok(page)
    }

    /// Stops the browser.
    pub async fn close(mut self) {
        let _ = self.send(None, "Browser.close", json!({})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Page<'_> {
    async fn cmd(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.browser.send(Some(&session), method, params).await
    }

    /// Loads `url`.
    pub async fn goto(&mut self, url: &str) -> Result<(), String> {
        self.cmd("Page.navigate", json!({"url": url})).await?;
        self.wait_for("document.readyState === 'complete'")
            .await
            .map(|_| ())
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value as JSON.
    pub async fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self
            .cmd(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!(
                "{expr}: {}",
                e["exception"]["description"]
                    .as_str()
                    .unwrap_or("exception")
            ));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is truthy (then returns its value), failing after 20 s with the
    /// last value seen.
    pub async fn wait_for(&mut self, expr: &str) -> Result<Value, String> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.eval(expr).await?;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return Ok(v);
            }
            if tokio::time::Instant::now() > until {
                return Err(format!("timed out waiting for `{expr}` (last value: {v})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `selector` matches as a user would: scrolled into view, then a mouse
    /// press and release at its centre.
    pub async fn click(&mut self, selector: &str) -> Result<(), String> {
        let sel = serde_json::to_string(selector).expect("a string");
        let at = self
            .wait_for(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
            ))
            .await?;
        let (x, y) = (at[0].clone(), at[1].clone());
        for kind in ["mousePressed", "mouseReleased"] {
            self.cmd(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await?;
        }
        Ok(())
    }

    /// Clicks the field `selector` matches and types `text` into it.
    pub async fn type_into(&mut self, selector: &str, text: &str) -> Result<(), String> {
        self.click(selector).await?;
        self.cmd("Input.insertText", json!({"text": text}))
            .await
            .map(|_| ())
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        use base64::Engine as _;
        let r = self
            .cmd("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| e.to_string())
    }
}
