//! Times building a NoCloud seed in-process from the files named on the command line:
//! `seedbench RUNS USER_DATA META_DATA`. Prints the median and minimum in microseconds.
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args[1].parse().expect("RUNS");
    let ud = std::fs::read(&args[2]).expect("user-data");
    let md = std::fs::read(&args[3]).expect("meta-data");
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let img = kvmctl_cloudinit::iso::build("cidata", &[("user-data", &ud), ("meta-data", &md)]).expect("valid");
        std::hint::black_box(&img);
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{:.1} {:.1}", t[runs / 2], t[0]);
}
