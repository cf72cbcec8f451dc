//! The web console's benchmark (`bench/web.sh` runs it against a `kvmctl serve` it started):
//! in a real headless Chromium, logged in with a token,
//! 1. Create to running: from the click on Create to the VM page showing `running` (the
//!    event stream), timed in the page (`performance.now()`), RUNS times;
//! 2. console to first frame: from the click on *VNC console* to the first lit pixels on the
//!    canvas, and from the click on *Serial console* to the first bytes in the terminal;
//! 3. the daemon's resident memory (VmRSS of PID) with no console open, then with 20
//!    consoles open at once in one page (per VM: the serial console and three VNC viewers),
//!    each having drawn its first frame, and after they closed.
//!
//! Prints one line per measure: `name value unit`.
//!
//!   webbench --url http://127.0.0.1:PORT --token T --image IMG --plan PLAN --pid PID [--runs 3]

use kvmctl_testkit::browser::Browser;
use serde_json::{json, Value};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

const CANVAS_LIT: &str = "(() => { const c = document.querySelector('#console-screen canvas'); if (!c || !c.width) return 0; \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
    for (let i = 0; i < d.length; i += 16) if (d[i] + d[i + 1] + d[i + 2] > 150) n++; return n; })()";

/// Clicks `css` and resolves with the milliseconds until `done` (a JS expression) holds,
/// checked every animation frame, both measured in the page.
async fn click_until(b: &Browser, css: &str, done: &str) -> f64 {
    let script = format!(
        "const finish = arguments[arguments.length - 1];\n\
         const t0 = performance.now();\n\
         document.querySelector(arguments[0]).click();\n\
         const check = () => {{ let ok = false; try {{ ok = ({done}); }} catch (e) {{}} \
           if (ok) finish(performance.now() - t0); else requestAnimationFrame(check); }};\n\
         check();"
    );
    b.execute_async(&script, json!([css])).await.as_f64().expect("milliseconds")
}

fn main() {
    let t = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()))
        .unwrap();
    t.join().unwrap();
}

async fn run() {
    let url = arg("--url").expect("--url");
    let token = arg("--token").expect("--token");
    let image = arg("--image").expect("--image");
    let plan = arg("--plan").expect("--plan");
    let pid = arg("--pid").expect("--pid");
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let b = Browser::start(dir.path(), &dir.path().join("shots")).await;
    b.goto(&format!("{url}/")).await;
    b.type_into(&b.find("#login-token input[name=token]").await, &token).await;
    b.click(&b.find("#login-token button[type=submit]").await).await;
    b.find("#vms").await;

    // 1. Create to running.
    let mut names = Vec::new();
    for i in 0..runs.max(5) {
        let name = format!("kt-wb-{i}");
        b.goto(&format!("{url}/#/create")).await;
        b.wait_for("main h1", "el.textContent === 'Create a VM' && document.querySelector('#create select[name=image] option')").await;
        b.execute(
            "document.querySelector('#create select[name=plan]').value = arguments[0]; \
             document.querySelector('#create select[name=image]').value = arguments[1];",
            json!([plan, image]),
        )
        .await;
        b.type_into(&b.find("#create input[name=name]").await, &name).await;
        let ms = click_until(&b, "#create button[type=submit]", "document.querySelector('#vm-state')?.dataset.state === 'running'").await;
        if i < runs {
            println!("create_to_running_ms {ms:.0} ms");
        }
        names.push(name);
    }
    // Each guest has booted to its shells (the console log shows the ready marker) before the
    // consoles are timed: a first frame, not a boot, is measured.
    for name in &names {
        b.goto(&format!("{url}/#/vm/{name}")).await;
        b.wait_for("main h1", &format!("el.textContent === '{name}'")).await;
        b.wait_for("#console-log", "el.textContent.includes('KVMCTL_TINY_READY')").await;
    }

    // 2. Console to first frame.
    for name in names.iter().take(runs) {
        b.goto(&format!("{url}/#/vm/{name}")).await;
        b.wait_for("main h1", &format!("el.textContent === '{name}' && document.querySelector('#open-vnc')")).await;
        let ms = click_until(&b, "#open-vnc", &format!("{CANVAS_LIT} > 50")).await;
        println!("vnc_first_frame_ms {ms:.0} ms");
        b.goto(&format!("{url}/#/vm/{name}")).await;
        b.wait_for("main h1", &format!("el.textContent === '{name}' && document.querySelector('#open-serial')")).await;
        let ms = click_until(&b, "#open-serial", "Number(document.querySelector('#console-screen')?.dataset.bytes) > 0").await;
        println!("serial_first_bytes_ms {ms:.0} ms");
    }

    // 3. Resident memory with 20 consoles open.
    b.goto(&format!("{url}/#/")).await;
    b.find("#vms").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // the last console's close is seen
    let before = rss_kib(&pid);
    println!("daemon_rss_no_console_kib {before} KiB");
    let opened = b
        .execute_async(
            "const [names, finish] = [arguments[0], arguments[arguments.length - 1]];\n\
             const csrf = document.cookie.match(/kvmctl_csrf=([0-9a-f]+)/)[1];\n\
             const ticket = (n, kind) => fetch(`/v1/vms/${n}/console/ticket`, {method: 'POST', \
               headers: {'content-type': 'application/json', 'x-kvmctl-csrf': csrf}, body: JSON.stringify({kind})}).then(r => r.json().then(j => { if (!r.ok) throw new Error(`${n} ${kind}: ${j.message}`); return j; }));\n\
             import('/ui/vendor/novnc/core/rfb.js').then(async ({default: RFB}) => {\n\
               const waits = [];\n\
               window.kvmctlOpen = [];\n\
               for (const n of names) {\n\
                 const t = await ticket(n, 'serial');\n\
                 const ws = new WebSocket(`ws://${location.host}${t.path}`);\n\
                 window.kvmctlOpen.push(ws);\n\
                 waits.push(new Promise(ok => { ws.onmessage = () => ok(1); ws.onclose = () => ok(0); }));\n\
                 for (let v = 0; v < 3; v++) {\n\
                   const t = await ticket(n, 'vnc');\n\
                   const box = document.createElement('div'); box.style.width = '640px'; box.style.height = '400px';\n\
                   document.body.append(box);\n\
                   const rfb = new RFB(box, `ws://${location.host}${t.path}`, {shared: true});\n\
                   window.kvmctlOpen.push(rfb);\n\
                   waits.push(new Promise(ok => { rfb.addEventListener('connect', () => setTimeout(() => ok(1), 500)); \
                     rfb.addEventListener('disconnect', () => ok(0)); }));\n\
                 }\n\
               }\n\
               Promise.all(waits).then(r => finish(r.reduce((a, b) => a + b, 0)));\n\
             }).catch(e => finish('error: ' + e));",
            json!([names]),
        )
        .await;
    assert!(opened.is_number(), "the consoles did not open: {opened}");
    let during = rss_kib(&pid);
    println!("consoles_open {} of {}", opened, names.len() * 4);
    println!("daemon_rss_20_consoles_kib {during} KiB");
    println!("daemon_rss_per_console_kib {} KiB", during.saturating_sub(before) / (names.len() as u64 * 4).max(1));
    b.execute("for (const c of window.kvmctlOpen) { if (c.disconnect) c.disconnect(); else c.close(); } return true;", json!([])).await;
    b.goto(&format!("{url}/#/")).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    println!("daemon_rss_after_close_kib {} KiB", rss_kib(&pid));
    let _: Value = b.execute("return true;", json!([])).await;
    b.stop().await;
}
