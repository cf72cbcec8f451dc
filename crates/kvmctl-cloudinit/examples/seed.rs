//! Writes an ISO from files named on the command line: `seed LABEL OUT [PATH=FILE]...`.
//! Used by the benchmark (bench/seed.sh) and handy for poking at the writer.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (label, out) = (&args[1], &args[2]);
    let files: Vec<(String, Vec<u8>)> = args[3..]
        .iter()
        .map(|a| {
            let (p, f) = a.split_once('=').expect("PATH=FILE");
            (p.to_owned(), std::fs::read(f).expect("readable file"))
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    std::fs::write(out, kvmctl_cloudinit::iso::build(label, &refs).expect("valid input")).expect("writable output");
}
