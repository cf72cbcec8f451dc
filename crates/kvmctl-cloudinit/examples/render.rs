//! Prints the documents of a seed for HOSTNAME USER KEYFILE: `render web-1 alice ~/.ssh/id_ed25519.pub`.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let key = std::fs::read_to_string(&a[3]).expect("key file").trim().to_owned();
    let spec = kvmctl_cloudinit::seed::SeedSpec::new(&format!("{}-1", a[1]), &a[1], &a[2], vec![key]);
    let seed = kvmctl_cloudinit::seed::render(&spec).expect("valid");
    print!("--- meta-data\n{}--- user-data\n{}--- network-config\n{}", seed.meta_data, seed.user_data, seed.network_config);
}
