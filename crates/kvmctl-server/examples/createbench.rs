//! Create throughput against one or more running daemons (`bench/shared_db.sh` starts them):
//! COUNT creates of the tiny image (`--no-start`, no SSH forward), CONCURRENCY at a time,
//! spread round-robin over the daemons' sockets; then every VM is deleted. Prints
//! `creates_per_second X`, `p50_ms X`, `p99_ms X` and `made N`.
//!
//!   createbench --image IMG [--network NET] --count 100 --concurrency 8 --prefix kt-cb SOCKET...

use kvmctl_client::Client;
use kvmctl_types::api::VmCreateRequest;
use std::sync::Arc;
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let image = arg("--image").expect("--image IMG");
    let count: usize = arg("--count").map_or(100, |v| v.parse().expect("--count N"));
    let concurrency: usize = arg("--concurrency").map_or(8, |v| v.parse().expect("--concurrency N"));
    let prefix = arg("--prefix").unwrap_or_else(|| "kt-cb".into());
    let network = arg("--network");
    let sockets: Vec<String> = std::env::args().skip(1).filter(|a| a.ends_with(".sock")).collect();
    assert!(!sockets.is_empty(), "name at least one daemon socket (*.sock)");
    let clients: Vec<Client> = sockets.iter().map(Client::unix).collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let began = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let gate = gate.clone();
            let req = VmCreateRequest {
                name: format!("{prefix}-{i}"),
                image: image.clone(),
                vcpus: Some(1),
                memory_mib: Some(128),
                disk_gib: Some(1),
                no_start: true,
                no_ssh_forward: true,
                network: network.clone(),
                ..Default::default()
            };
            tokio::spawn(async move {
                let _slot = gate.acquire().await.expect("semaphore");
                let t0 = Instant::now();
                let r = client.vm_create(&req).await;
                (t0.elapsed().as_secs_f64() * 1000.0, r.map(|v| v.name).map_err(|e| e.to_string()))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut made = Vec::new();
    for t in tasks {
        let (ms, r) = t.await.expect("task");
        match r {
            Ok(name) => {
                latencies.push(ms);
                made.push(name);
            }
            Err(e) => eprintln!("create failed: {e}"),
        }
    }
    let total = began.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    println!("creates_per_second {:.1}", made.len() as f64 / total);
    println!("p50_ms {:.1}", pct(0.50));
    println!("p99_ms {:.1}", pct(0.99));
    println!("made {}", made.len());
    for (i, name) in made.iter().enumerate() {
        if let Err(e) = clients[i % clients.len()].vm_delete(name, false).await {
            eprintln!("delete {name}: {e}");
        }
    }
}
