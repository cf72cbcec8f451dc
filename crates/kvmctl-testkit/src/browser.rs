//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), for
//! the web console's tests: only what they use. It runs in the test's network namespace,
//! which has no route out, with its background traffic (updates, sync, safe browsing) off;
//! the pages it loads come from the test's daemon on loopback.
//!
//! Waiting is done in the page: `wait_for` runs a script that resolves when its condition
//! holds, re-checked on every DOM change (a MutationObserver), so a test waits for the event
//! it names, never for a fixed time; the bound is WebDriver's script timeout.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one wait in the page may take before the test fails (a bound, not a speed).
const WAIT: Duration = Duration::from_secs(120);

pub struct Browser {
    driver: tokio::process::Child,
    port: u16,
    session: String,
    /// Where screenshots go (the test's artifacts).
    pub shots: PathBuf,
}

/// One element of the page, by its WebDriver reference.
#[derive(Debug, Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium with its profile under `dir`; screenshots
    /// go to `shots`.
    pub async fn start(dir: &Path, shots: &Path) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt install chromium-driver; scripts/test.sh installs it)");
        let mut b = Browser { driver, port, session: String::new(), shots: shots.to_owned() };
        // chromedriver answers /status once it listens.
        for _ in 0..200 {
            if let Ok(v) = b.call("GET", "/status", None).await {
                if v["ready"] == json!(true) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::create_dir_all(shots).unwrap();
        let profile = dir.join("chromium-profile");
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--metrics-recording-only".to_owned(),
            "--safebrowsing-disable-auto-update".to_owned(),
            "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "timeouts": {"script": WAIT.as_millis() as u64, "pageLoad": 60_000, "implicit": 0},
        }}});
        let v = b.call("POST", "/session", Some(caps)).await.expect("a Chromium session starts");
        b.session = v["sessionId"].as_str().expect("a session id").to_owned();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        // chromedriver may keep the connection open: the answer ends at its Content-Length
        // (or, chunked, at the last chunk), not at the connection's end.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let (head, body) = loop {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let lower = head.to_ascii_lowercase();
                let length = lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
                let done = match length {
                    Some(len) => rest.len() >= len,
                    None if lower.contains("transfer-encoding: chunked") => rest.contains("\r\n0\r\n"),
                    None => n == 0,
                };
                if done || n == 0 {
                    let body = if lower.contains("transfer-encoding: chunked") { unchunk(rest) } else { rest.to_owned() };
                    break (head.to_owned(), body);
                }
            } else if n == 0 {
                return Err("no HTTP answer".into());
            }
        };
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status >= 400 {
            return Err(format!("{method} {path}: {}", v["value"]["message"].as_str().unwrap_or(&body)));
        }
        Ok(v["value"].clone())
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url }))).await.unwrap();
    }

    /// Runs `script` (a function body) in the page with `args`; its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({ "script": script, "args": args }))).await.unwrap()
    }

    /// Waits in the page until the element `css` exists and `test(el)` (a JavaScript
    /// expression over `el`) holds; re-checked on each DOM change. Returns the element.
    pub async fn wait_for(&self, css: &str, test: &str) -> Element {
        let script = format!(
            "const [css, done] = [arguments[0], arguments[arguments.length - 1]];\n\
             const ok = () => {{ const el = document.querySelector(css); return el && ({test}) ? el : null; }};\n\
             const found = ok(); if (found) {{ done(found); return; }}\n\
             const obs = new MutationObserver(() => {{ const el = ok(); if (el) {{ obs.disconnect(); done(el); }} }});\n\
             obs.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});"
        );
        let v = self
            .session_call("POST", "/execute/async", Some(json!({ "script": script, "args": [css] })))
            .await
            .unwrap_or_else(|e| panic!("waiting for {css} where {test}: {e}"));
        Element(v[ELEMENT_KEY].as_str().expect("an element").to_owned())
    }

    /// Runs `script` (a function body whose last argument is the callback to call with the
    /// result) in the page; its result.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        match self.session_call("POST", "/execute/async", Some(json!({ "script": script, "args": args }))).await {
            Ok(v) => v,
            Err(e) => {
                let page = self.execute("return location.hash + '\\n' + document.body.innerText;", json!([])).await;
                panic!("{e}\nthe page then: {}", page.as_str().unwrap_or_default());
            }
        }
    }

    /// Waits (checking every 25 ms) until `expr` (a JavaScript expression) is true, and returns its
    /// value: for what changes without touching the DOM (a canvas's pixels). The bound is
    /// WebDriver's script timeout.
    pub async fn wait_frames(&self, expr: &str, args: Value) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             const check = () => {{ let v; try {{ v = ({expr}); }} catch (e) {{ v = null; }} if (v) done(v); else setTimeout(check, 25); }};\n\
             check();"
        );
        self.session_call("POST", "/execute/async", Some(json!({ "script": script, "args": args })))
            .await
            .unwrap_or_else(|e| panic!("waiting until {expr}: {e}"))
    }

    /// The element `css` once it exists.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css, "true").await
    }

    /// Whether an element `css` exists now.
    pub async fn exists(&self, css: &str) -> bool {
        self.execute("return document.querySelector(arguments[0]) !== null;", json!([css])).await == json!(true)
    }

    pub async fn text(&self, e: &Element) -> String {
        self.session_call("GET", &format!("/element/{}/text", e.0), None).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        self.session_call("POST", &format!("/element/{}/clear", e.0), Some(json!({}))).await.unwrap();
        self.session_call("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await.unwrap();
    }

    /// Types into `e` without clearing it first (keys for a terminal, `\u{E007}` is Enter).
    pub async fn send_keys(&self, e: &Element, text: &str) {
        self.session_call("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await.unwrap();
    }

    pub async fn click(&self, e: &Element) {
        self.session_call("POST", &format!("/element/{}/click", e.0), Some(json!({}))).await.unwrap();
    }

    /// Sets the window's size in CSS pixels (a phone's width, say).
    pub async fn window_size(&self, width: u32, height: u32) {
        self.session_call("POST", "/window/rect", Some(json!({ "width": width, "height": height }))).await.unwrap();
    }

    /// Saves a PNG screenshot as `name`.png in the shots directory.
    pub async fn screenshot(&self, name: &str) {
        let v = self.session_call("GET", "/screenshot", None).await.unwrap();
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("a base64 screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Clears the page's cookies (a new user logs in).
    pub async fn clear_cookies(&self) {
        self.session_call("DELETE", "/cookie", None).await.unwrap();
    }

    /// Ends the session and chromedriver.
    pub async fn stop(mut self) {
        let _ = self.call("DELETE", &format!("/session/{}", self.session), None).await;
        let _ = self.driver.kill().await;
    }
}

fn unchunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
