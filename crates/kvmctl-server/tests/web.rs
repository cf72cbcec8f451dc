//! The web console in a real headless Chromium (Debian's `chromium` and `chromium-driver`)
//! against the real daemon and a real guest (the tiny image): a user whose first password an
//! admin set logs in, must choose their own, creates a VM from the form and sees it turn
//! running without reloading (the event stream), stops and deletes it from its page; a
//! second user sees none of it; the browser boundary (origin, CSRF, cookie flags, login
//! limits, security headers) holds. Screenshots of each page go to
//! `target/web-screenshots/` (the CI artifacts; the README's pictures come from them).

use kvmctl_testkit::browser::Browser;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{PasswordSetRequest, PlanCreateRequest, UserCreateRequest};
use serde_json::json;
use std::path::PathBuf;

const VM: &str = "kt-web-1";
const IMG: &str = "kt-web-img";
const ALICE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/web-screenshots")
}

/// A raw HTTP/1.1 request to the daemon (what a hostile page or script could send): status,
/// headers, body.
async fn raw(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// A WebSocket handshake by hand: the status and, unless it switched, the answer's body.
async fn ws_open(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the daemon closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status == 101 {
        return (101, String::new());
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Logs `user` in by hand: the cookie jar and the CSRF value.
async fn login_raw(addr: std::net::SocketAddr, user: &str, password: &str) -> (String, String) {
    let body = json!({"user": user, "password": password}).to_string();
    let (s, head, answer) = raw(addr, "POST", "/v1/session", &[("content-type", "application/json")], &body).await;
    assert_eq!(s, 200, "{user} logs in: {answer}");
    let cookies = set_cookies(&head);
    let pick = |name: &str| cookies.iter().find(|c| c.starts_with(name)).unwrap().split(';').next().unwrap().to_owned();
    let (token, csrf) = (pick("kvmctl_token="), pick("kvmctl_csrf="));
    let csrf_value = csrf.trim_start_matches("kvmctl_csrf=").to_owned();
    (format!("{token}; {csrf}"), csrf_value)
}

/// A console ticket asked for by hand: its WebSocket path.
async fn ticket_raw(addr: std::net::SocketAddr, jar: &str, csrf: &str, vm: &str, kind: &str) -> String {
    let origin = format!("http://{addr}");
    let (s, _, body) = raw(
        addr,
        "POST",
        &format!("/v1/vms/{vm}/console/ticket"),
        &[("cookie", jar), ("origin", &origin), ("x-kvmctl-csrf", csrf), ("content-type", "application/json")],
        &json!({"kind": kind}).to_string(),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["path"].as_str().unwrap().to_owned()
}

/// The text in the page's xterm.js terminal.
const TERM_TEXT: &str = "(() => { const b = window.kvmctlTerm.buffer.active; let s = ''; \
    for (let i = 0; i < b.length; i++) s += b.getLine(i).translateToString(true) + '\\n'; return s; })()";
/// How many pixels of the page's VNC canvas are lit (text on the guest's screen).
const CANVAS_LIT: &str = "(() => { const c = document.querySelector('#console-screen canvas'); if (!c || !c.width) return 0; \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 150) n++; return n; })()";

fn set_cookies(head: &str) -> Vec<String> {
    head.lines().filter_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: "))).map(str::to_owned).collect()
}

async fn login_form(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(base).await;
    b.find("#login").await;
    b.type_into(&b.find("#login input[name=user]").await, user).await;
    b.type_into(&b.find("#login input[name=password]").await, password).await;
    b.click(&b.find("#login button[type=submit]").await).await;
}

#[test]
fn a_user_logs_in_creates_a_vm_watches_it_run_and_deletes_it_in_chromium() {
    // The scenario's poll frame is large in a debug build (every await's future is built on
    // the stack first): it runs on a thread with a stack to match.
    let t = std::thread::Builder::new()
        .name("web".into())
        .stack_size(32 << 20)
        .spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(scenario()));
    t.unwrap().join().unwrap_or_else(|e| std::panic::resume_unwind(e));
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM], &[IMG]);
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    // The daemon's clock moves only when told: console tickets expire without a wait.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let clock = std::sync::Arc::new(kvmctl_server::clock::ManualClock::new(now));
    let (server, root) = daemon::start_with_clock(&cfg, clock.clone()).await;
    let addr = server.tcp_addr.unwrap();
    let base = format!("http://{addr}/");
    daemon::tiny_image(&root, d, IMG).await;
    root.plan_create(&PlanCreateRequest {
        name: "kt-web-tiny".into(),
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        price_hourly: "0.01".into(),
        sort_order: None,
    })
    .await
    .unwrap();
    for u in ["alice", "bob"] {
        root.user_create(&UserCreateRequest { name: u.into(), ..Default::default() }).await.unwrap();
        root.password_set(u, &PasswordSetRequest { password: format!("first-{u}-password"), current: None }).await.unwrap();
    }

    // The page and its assets carry the security headers; nothing is inline.
    let (s, head, page) = raw(addr, "GET", "/", &[], "").await;
    assert_eq!(s, 200);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'self'; script-src 'self'"), "{head}");
    assert!(lower.contains("x-content-type-options: nosniff") && lower.contains("x-frame-options: deny"), "{head}");
    assert!(!page.contains("<script>") && !page.contains("style="), "no inline script or style");
    // Only the embedded assets are served, by name: no path reaches the file system.
    for path in [
        "/ui/../../etc/passwd",
        "/ui/..%2f..%2fetc%2fpasswd",
        "/ui/%2e%2e",
        "/ui/app.js%00.html",
        "/ui/vendor/../../../../etc/passwd",
        "/ui/vendor/novnc/..%2f..%2f..%2fbuild.rs",
        "/ui/vendor/%2fetc%2fpasswd",
    ] {
        let (s, _, body) = raw(addr, "GET", path, &[], "").await;
        assert!(s != 200 && !body.contains("root:"), "{path}: {s}");
    }

    // noVNC and xterm.js are built in (scripts/web-assets.sh) and served like the pages.
    let (s, head, body) = raw(addr, "GET", "/ui/vendor/novnc/core/rfb.js", &[], "").await;
    assert!(s == 200 && body.contains("export default class RFB"), "noVNC is embedded: {s}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/javascript"), "{head}");

    let b = Browser::start(d, &shots()).await;
    b.goto(&base).await;
    b.find("#login").await;
    b.screenshot("01-login").await;

    // A wrong password: the same message as an unknown user, and the form stays.
    login_form(&b, &base, "alice", "not-her-password").await;
    let err = b.wait_for("#login p.error", "el.textContent.length > 0").await;
    assert_eq!(b.text(&err).await, "the user name or password is wrong");

    // Her first password was set by an admin: she chooses her own before anything else.
    login_form(&b, &base, "alice", "first-alice-password").await;
    b.find("#password").await;
    b.screenshot("02-choose-password").await;
    b.type_into(&b.find("#password input[name=current]").await, "first-alice-password").await;
    b.type_into(&b.find("#password input[name=password]").await, "alice-own-password").await;
    b.click(&b.find("#password button[type=submit]").await).await;
    b.find("#vms").await;
    b.screenshot("03-dashboard-empty").await;

    // The session cookie is HttpOnly: the page's scripts cannot read it; the CSRF one they can.
    let cookies = b.execute("return document.cookie;", json!([])).await;
    let cookies = cookies.as_str().unwrap();
    assert!(cookies.contains("kvmctl_csrf=") && !cookies.contains("kvmctl_token="), "{cookies}");

    // A key saved in her profile on the SSH keys page; the create form offers it, ticked.
    b.goto(&format!("{base}#/keys")).await;
    b.type_into(&b.find("#add-key input[name=name]").await, "laptop").await;
    b.type_into(&b.find("#add-key textarea[name=public_key]").await, ALICE_KEY).await;
    b.click(&b.find("#add-key button[type=submit]").await).await;
    b.wait_for("#keys tbody", "el.textContent.includes('SHA256:')").await;
    b.screenshot("03b-ssh-keys").await;

    // Create from the form, with the API's field error shown first for a bad name.
    b.goto(&format!("{base}#/create")).await;
    b.find("#create").await;
    b.find("#saved-keys input[type=checkbox]:checked").await;
    b.execute(
        "document.querySelector('#create select[name=plan]').value = 'kt-web-tiny'; \
         document.querySelector('#create select[name=image]').value = arguments[0];",
        json!([IMG]),
    )
    .await;
    b.type_into(&b.find("#create input[name=name]").await, "Bad_Name").await;
    b.click(&b.find("#create button[type=submit]").await).await;
    let e = b.wait_for("#f-name-error", "el.textContent.length > 0").await;
    assert!(b.text(&e).await.contains("lowercase"), "the name's own error shows under it");
    b.screenshot("04-create-field-error").await;
    b.type_into(&b.find("#create input[name=name]").await, VM).await;
    b.click(&b.find("#create button[type=submit]").await).await;

    // The VM page turns running by itself (the event stream), without a reload.
    b.find("#vm-state").await;
    b.execute("window.kvmctlNoReload = true;", json!([])).await;
    b.wait_for("#vm-state", "el.dataset.state === 'running'").await;
    assert_eq!(b.execute("return window.kvmctlNoReload === true;", json!([])).await, json!(true), "the page was not reloaded");
    // Its readiness stages arrive live, and with them the console log: the guest's ready marker.
    b.wait_for("#console-log", "el.textContent.includes('KVMCTL_TINY_READY')").await;
    b.screenshot("05-vm-running").await;
    let alice_vm = root.vm_get(VM).await.unwrap();
    assert_eq!(alice_vm.owner, "alice");
    // The profile's key went into the guest.
    let keys = root
        .vm_exec(VM, &kvmctl_types::api::VmExecRequest { command: "cat /home/*/.ssh/authorized_keys".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(keys.stdout.contains(ALICE_KEY.split_whitespace().nth(1).unwrap()), "the saved key is in the guest: {}", keys.stdout);

    // The serial console in the page (xterm.js over a ticket's WebSocket): it replays the
    // boot, with the ready marker; typed keys reach the guest's shell and its answer shows.
    b.click(&b.find("#open-serial").await).await;
    b.wait_for("#console-status", "el.dataset.state === 'connected'").await;
    b.wait_frames(&format!("window.kvmctlTerm && {TERM_TEXT}.includes('KVMCTL_TINY_READY')"), json!([])).await;
    let keys = b.find("#console-screen textarea").await;
    b.send_keys(&keys, "\u{E007}echo web-$((6 * 7))\u{E007}").await;
    b.wait_frames(&format!("{TERM_TEXT}.includes('web-42')"), json!([])).await;
    b.screenshot("08-serial-console").await;
    // A second viewer of the serial console (another tab, say) is refused while this one is open.
    let second = b
        .execute(
            "const csrf = document.cookie.match(/kvmctl_csrf=([0-9a-f]+)/)[1]; \
             return fetch('/v1/vms/' + arguments[0] + '/console/ticket', {method: 'POST', \
               headers: {'content-type': 'application/json', 'x-kvmctl-csrf': csrf}, body: '{\"kind\":\"serial\"}'}) \
             .then(r => r.json()).then(t => new Promise(done => { \
               const ws = new WebSocket('ws://' + location.host + t.path); \
               ws.onopen = () => { ws.close(); done('opened'); }; ws.onclose = () => done('refused'); }));",
            json!([VM]),
        )
        .await;
    assert_eq!(second, json!("refused"), "one serial viewer at a time");
    // Pop out: the console closes here and opens in a window of its own, without the header.
    b.execute("window.kvmctlOpened = []; window.open = (url) => { window.kvmctlOpened.push(url); return null; };", json!([])).await;
    b.click(&b.find("#popout").await).await;
    b.wait_for("main h1", &format!("el.textContent === '{VM}'")).await;
    let opened = b.execute("return window.kvmctlOpened;", json!([])).await;
    assert_eq!(opened, json!([format!("#/vm/{VM}/serial/popout")]));
    b.goto(&format!("{base}#/vm/{VM}/serial/popout")).await;
    b.wait_for("#console-status", "el.dataset.state === 'connected'").await;
    assert_eq!(b.execute("return getComputedStyle(document.querySelector('header')).display;", json!([])).await, json!("none"));
    b.wait_frames(&format!("window.kvmctlTerm && {TERM_TEXT}.includes('web-42')"), json!([])).await;
    b.screenshot("08b-serial-popout").await;

    // The VNC display in the page (noVNC, proxied by the daemon, no VNC port opened): the
    // framebuffer arrives, and keys typed through it change the guest's screen.
    b.goto(&format!("{base}#/vm/{VM}")).await;
    b.click(&b.find("#open-vnc").await).await;
    b.wait_for("#console-status", "el.dataset.state === 'connected'").await;
    let lit = b.wait_frames(&format!("{CANVAS_LIT} > 200 && {CANVAS_LIT}"), json!([])).await.as_i64().unwrap();
    // Typed on the guest's screen (tty1), the command writes to its serial console, whose
    // log shows that every key, shifted ones too, arrived as typed.
    b.type_into(&b.find("#paste-text").await, "echo \"VNC typed: $((6 * 7))!\" > /dev/ttyS0\n").await;
    b.click(&b.find("#paste").await).await;
    b.wait_frames(&format!("{CANVAS_LIT} > {}", lit + 600), json!([])).await;
    let mut typed = false;
    for _ in 0..600 {
        if root.vm_console_log(VM, 20).await.unwrap().contains("VNC typed: 42!") {
            typed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(typed, "the keys typed through noVNC ran in the guest: {}", root.vm_console_log(VM, 20).await.unwrap());
    b.screenshot("09-vnc-console").await;
    assert!(root.forward_list(VM).await.unwrap().iter().all(|f| f.pool != "vnc"), "the browser's VNC display opened no VNC port");

    // Tickets, by hand. A good one opens (the control for what follows).
    let (alice_jar, alice_csrf) = login_raw(addr, "alice", "alice-own-password").await;
    let (bob_jar, _) = login_raw(addr, "bob", "first-bob-password").await;
    let origin = format!("http://{addr}");
    let path = ticket_raw(addr, &alice_jar, &alice_csrf, VM, "vnc").await;
    let (s, body) = ws_open(addr, &path, &[("cookie", &alice_jar), ("origin", &origin)]).await;
    assert_eq!(s, 101, "{body}");
    // Used once: refused the second time.
    let (s, body) = ws_open(addr, &path, &[("cookie", &alice_jar), ("origin", &origin)]).await;
    assert!(s == 403 && body.contains("ticket is unknown, used or expired"), "a used ticket: {s} {body}");
    // From another site's page: refused before the ticket is looked at.
    let path = ticket_raw(addr, &alice_jar, &alice_csrf, VM, "vnc").await;
    let (s, _) = ws_open(addr, &path, &[("cookie", &alice_jar), ("origin", "http://evil.example")]).await;
    assert_eq!(s, 403, "a cross-origin WebSocket");
    // Alice's ticket in Bob's session: refused, with the words every bad ticket gets.
    let (s, body) = ws_open(addr, &path, &[("cookie", &bob_jar), ("origin", &origin)]).await;
    assert!(s == 403 && body.contains("ticket is unknown, used or expired") && !body.contains(VM), "{s} {body}");
    // ...and spent by that try: Alice cannot use it after Bob did.
    let (s, _) = ws_open(addr, &path, &[("cookie", &alice_jar), ("origin", &origin)]).await;
    assert_eq!(s, 403, "a ticket someone else tried is spent");
    // A ticket for the VNC display does not open the serial console.
    let path = ticket_raw(addr, &alice_jar, &alice_csrf, VM, "vnc").await;
    let (s, _) = ws_open(addr, &path.replace("/console/vnc?", "/console/serial?"), &[("cookie", &alice_jar), ("origin", &origin)]).await;
    assert_eq!(s, 403, "a ticket is for one kind of console");
    // Bob cannot even ask for one for her VM: it does not exist for him.
    let (s, _, _) = raw(
        addr,
        "POST",
        &format!("/v1/vms/{VM}/console/ticket"),
        &[
            ("authorization", &format!("Bearer {}", bob_jar.split(';').next().unwrap().trim_start_matches("kvmctl_token="))),
            ("content-type", "application/json"),
        ],
        r#"{"kind":"serial"}"#,
    )
    .await;
    assert_eq!(s, 404, "bob asks for a ticket to alice's VM");
    // Expired after a minute.
    let path = ticket_raw(addr, &alice_jar, &alice_csrf, VM, "serial").await;
    clock.advance(61);
    let (s, body) = ws_open(addr, &path, &[("cookie", &alice_jar), ("origin", &origin)]).await;
    assert!(s == 403 && body.contains("expired"), "an expired ticket: {s} {body}");
    // A ticket URL alone, with no session, opens nothing.
    let path = ticket_raw(addr, &alice_jar, &alice_csrf, VM, "serial").await;
    let (s, _) = ws_open(addr, &path, &[("origin", &origin)]).await;
    assert_eq!(s, 401, "a ticket without the session");

    // Forwards from the VM page: one for port 80 is added, listed, and removed.
    b.goto(&format!("{base}#/vm/{VM}")).await;
    b.find("#add-forward").await;
    b.execute("window.confirm = () => true;", json!([])).await;
    b.type_into(&b.find("#add-forward input[name=guest_port]").await, "80").await;
    b.click(&b.find("#add-forward button[type=submit]").await).await;
    b.wait_for("#forwards tbody", "[...el.querySelectorAll('tr')].some(r => r.children[2].textContent === '80')").await;
    let port = root.forward_list(VM).await.unwrap().into_iter().find(|f| f.guest_port == 80).expect("the forward was made").host_port;
    b.click(&b.find(&format!("button[data-action=remove-forward-{port}]")).await).await;
    b.wait_for("#forwards tbody", &format!("!el.querySelector(\"tr[data-forward='{port}']\")")).await;
    assert!(root.forward_list(VM).await.unwrap().iter().all(|f| f.guest_port != 80), "removed for real");

    // An hour passes (the daemon's clock): metering records it, and the usage page shows the
    // VM's day, the chart and a CSV of the hourly records; the dashboard shows the month's cost.
    clock.advance(3600);
    let mut usage = Vec::new();
    for _ in 0..300 {
        usage = root.usage_list(Some("alice"), None, None).await.unwrap();
        if !usage.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!usage.is_empty(), "metering recorded the hour");
    let month = usage[0].hour_utc[..7].to_owned();
    b.goto(&format!("{base}#/usage/{month}")).await;
    b.wait_for("#usage tbody", &format!("el.textContent.includes('{VM}')")).await;
    assert!(b.exists("#usage-chart rect.chart-bar").await, "a bar for the day");
    assert!(b.exists("a#usage-csv[download][href^='blob:']").await, "a download link");
    let csv = b.execute("return window.kvmctlUsageCsv;", json!([])).await;
    let csv = csv.as_str().unwrap();
    assert!(csv.starts_with("vm,owner,node,hour_utc") && csv.contains(&format!("{VM},alice,local,")), "{csv}");
    b.screenshot("10-usage").await;

    // Tokens: made on the tokens page, shown once, and it works for scripts.
    b.goto(&format!("{base}#/tokens")).await;
    b.type_into(&b.find("#create-token input[name=description]").await, "laptop").await;
    b.click(&b.find("#create-token button[type=submit]").await).await;
    let secret = b.text(&b.find("#token-secret").await).await;
    let (s, _, body) = raw(addr, "GET", "/v1/whoami", &[("authorization", &format!("Bearer {secret}"))], "").await;
    assert!(s == 200 && body.contains("\"alice\""), "{s} {body}");
    b.screenshot("11-tokens").await;

    // The dashboard lists it running.
    b.goto(&base).await;
    b.wait_for(&format!("tr[data-vm='{VM}'] td.state"), "el.dataset.state === 'running'").await;
    b.screenshot("06-dashboard-running").await;
    // On a phone's width the page fits: nothing scrolls sideways.
    b.window_size(390, 844).await;
    let fits = b.execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", json!([])).await;
    b.screenshot("06b-dashboard-phone").await;
    assert_eq!(fits, json!(true), "the dashboard fits a phone's width");
    b.goto(&format!("{base}#/vm/{VM}")).await;
    b.wait_for("main h1", &format!("el.textContent === '{VM}'")).await;
    let fits = b.execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", json!([])).await;
    b.screenshot("06c-vm-phone").await;
    assert_eq!(fits, json!(true), "the VM page fits a phone's width");
    b.window_size(1280, 900).await;
    b.goto(&base).await;

    // A change from the page without its CSRF header, or from another origin, is refused.
    let status = b
        .execute(
            "return fetch('/v1/vms/' + arguments[0] + '/stop', {method: 'POST', \
             headers: {'content-type': 'application/json'}, body: '{}'}).then(r => r.status);",
            json!([VM]),
        )
        .await;
    assert_eq!(status, json!(403), "no x-kvmctl-csrf header");

    // Stop and delete from the VM page (the confirmations accepted).
    b.goto(&format!("{base}#/vm/{VM}")).await;
    b.wait_for("#vm-state", "el.dataset.state === 'running'").await;
    b.execute("window.confirm = () => true;", json!([])).await;
    b.click(&b.find("button[data-action=stop]").await).await;
    b.wait_for("#vm-state", "el.dataset.state === 'stopped'").await;
    b.click(&b.find("button[data-action=delete]").await).await;
    b.find("#vms").await;
    b.wait_for("#vm-rows", &format!("!el.querySelector(\"tr[data-vm='{VM}']\")")).await;
    assert!(root.vm_list().await.unwrap().is_empty(), "deleted for real");

    // Bob: the admin's VM of the same name; he sees nothing of it, and not through the API either.
    root.vm_create(&kvmctl_types::api::VmCreateRequest { no_start: true, no_ssh_forward: true, ..daemon::tiny_vm(VM, IMG, vec![]) })
        .await
        .unwrap();
    b.click(&b.find("#logout").await).await;
    b.find("#login").await;
    login_form(&b, &base, "bob", "first-bob-password").await;
    b.type_into(&b.find("#password input[name=current]").await, "first-bob-password").await;
    b.type_into(&b.find("#password input[name=password]").await, "bob-own-password1").await;
    b.click(&b.find("#password button[type=submit]").await).await;
    b.find("#vms").await;
    let body = b.execute("return document.body.innerText;", json!([])).await;
    assert!(!body.as_str().unwrap().contains(VM), "bob's page shows nothing of root's VM: {body}");
    let status = b.execute("return fetch('/v1/vms/' + arguments[0]).then(r => r.status);", json!([VM])).await;
    assert_eq!(status, json!(404));
    b.screenshot("07-other-user").await;
    // Bob is no admin: the admin pages show the API's refusal.
    b.goto(&format!("{base}#/admin/nodes")).await;
    let e = b.wait_for("main p.error", "el.textContent.length > 0").await;
    assert!(b.text(&e).await.contains("admin"), "bob is told the page is for admins");

    // An admin (logged in with a token): the nodes page with its bars, drain and undrain; the
    // audit log holds what Alice did from her pages.
    root.user_create(&UserCreateRequest { name: "carol".into(), role: Some("admin".into()), ..Default::default() }).await.unwrap();
    let carol = root
        .token_create(&kvmctl_types::api::TokenCreateRequest {
            description: Some("web".into()),
            user: Some("carol".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .token;
    b.click(&b.find("#logout").await).await;
    b.find("#login-token").await;
    b.type_into(&b.find("#login-token input[name=token]").await, &carol).await;
    b.click(&b.find("#login-token button[type=submit]").await).await;
    b.find("#vms").await;
    b.goto(&format!("{base}#/admin/nodes")).await;
    b.find("section[data-node=local] .bar").await;
    b.screenshot("12-admin-nodes").await;
    b.execute("window.confirm = () => true;", json!([])).await;
    b.click(&b.find("button[data-action=drain-local]").await).await;
    b.wait_for("section[data-node=local] .state", "el.dataset.state === 'draining'").await;
    assert_eq!(root.node_get("local").await.unwrap().state, "draining");
    b.click(&b.find("button[data-action=undrain-local]").await).await;
    b.wait_for("section[data-node=local] .state", "el.dataset.state === 'active'").await;
    assert_eq!(root.node_get("local").await.unwrap().state, "active");
    b.goto(&format!("{base}#/admin/audit/user%3Dalice")).await;
    let log = b.wait_for("#audit tbody", &format!("el.textContent.includes('DELETE /v1/vms/{VM}')")).await;
    let log = b.text(&log).await;
    for want in [
        format!("DELETE /v1/vms/{VM}"),
        format!("POST /v1/vms/{VM}/stop"),
        format!("POST /v1/vms/{VM}/console/ticket"),
        format!("POST /v1/vms/{VM}/forwards"),
    ] {
        assert!(log.contains(&want), "the audit log shows {want}: {log}");
    }
    assert!(!log.contains("bob"), "filtered to alice");
    b.screenshot("13-admin-audit").await;
    b.goto(&format!("{base}#/admin/users/alice")).await;
    b.find("#user-detail[data-user=alice] #user-quota").await;
    b.screenshot("14-admin-users").await;
    b.goto(&format!("{base}#/admin/plans")).await;
    b.find("tr[data-plan=kt-web-tiny]").await;
    b.screenshot("15-admin-plans").await;
    b.goto(&format!("{base}#/admin/gc")).await;
    b.find("#gc").await;
    b.screenshot("16-admin-gc").await;
    b.stop().await;

    // Logged out: the session is gone for good, its cookie useless.
    let (s, head, _) =
        raw(addr, "POST", "/v1/session", &[("content-type", "application/json")], r#"{"user":"bob","password":"bob-own-password1"}"#).await;
    assert_eq!(s, 200);
    let cookies = set_cookies(&head);
    let token = cookies.iter().find(|c| c.starts_with("kvmctl_token=")).expect("session cookie");
    assert!(token.contains("HttpOnly") && token.contains("SameSite=Strict") && token.contains("Path=/"), "{token}");
    let token_value = token.split(';').next().unwrap();
    let csrf = cookies.iter().find(|c| c.starts_with("kvmctl_csrf=")).unwrap().split(';').next().unwrap();
    let csrf_value = csrf.trim_start_matches("kvmctl_csrf=");
    let jar = format!("{token_value}; {csrf}");
    let origin = format!("http://{addr}");
    let (s, _, body) = raw(addr, "GET", &format!("/v1/vms/{VM}"), &[("cookie", &jar)], "").await;
    assert!(s == 404 && body.contains("not found"), "{s} {body}");
    // Another site's page: refused with the cookie, for reads that change nothing too.
    let (s, _, _) = raw(addr, "GET", "/v1/vms", &[("cookie", &jar), ("origin", "http://evil.example")], "").await;
    assert_eq!(s, 403);
    let (s, _, _) = raw(
        addr,
        "POST",
        "/v1/session",
        &[("content-type", "application/json"), ("origin", "http://evil.example")],
        r#"{"user":"bob","password":"bob-own-password1"}"#,
    )
    .await;
    assert_eq!(s, 403, "a login posted from another site (login CSRF)");
    let (s, _, _) = raw(addr, "DELETE", "/v1/session", &[("cookie", &jar), ("origin", &origin), ("x-kvmctl-csrf", csrf_value)], "").await;
    assert_eq!(s, 204);
    let (s, _, _) = raw(addr, "GET", "/v1/session", &[("cookie", &jar)], "").await;
    assert_eq!(s, 401, "a logged-out session is dead");

    // A user who does not exist gets the answer a wrong password gets.
    let (s, _, body) =
        raw(addr, "POST", "/v1/session", &[("content-type", "application/json")], r#"{"user":"nobody","password":"whatever-it-is"}"#).await;
    assert!(s == 401 && body.contains("the user name or password is wrong"), "{s} {body}");

    // Failed logins: five a minute per user name and per address (Alice's and nobody's wrong
    // passwords above count for this one), then 429 with Retry-After, even with the right password.
    let mut refused = 0;
    loop {
        let (s, _, _) =
            raw(addr, "POST", "/v1/session", &[("content-type", "application/json")], r#"{"user":"bob","password":"wrong-wrong-wrong"}"#)
                .await;
        if s == 429 {
            break;
        }
        assert_eq!(s, 401);
        refused += 1;
        assert!(refused <= 5, "still no limit after {refused} failures");
    }
    let (s, head, _) =
        raw(addr, "POST", "/v1/session", &[("content-type", "application/json")], r#"{"user":"bob","password":"bob-own-password1"}"#).await;
    assert_eq!(s, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after: "), "{head}");

    root.vm_delete(VM, false).await.unwrap();
    root.image_delete(IMG).await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
