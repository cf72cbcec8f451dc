//! Embeds the web console's third-party browser code (noVNC, xterm.js), which
//! `scripts/web-assets.sh` unpacks into `web/vendor/` from pinned npm packages (ADR 0013).
//! Without it the daemon still builds and serves the console, whose pages then say the
//! consoles are missing and how to add them.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.file_name().is_some_and(|n| n != ".pinned") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("web/vendor");
    println!("cargo:rerun-if-changed=web/vendor");
    println!("cargo:rerun-if-changed=web/vendor.lock");
    let mut files = Vec::new();
    walk(&root, &mut files);
    if files.is_empty() {
        println!("cargo:warning=web console assets (noVNC, xterm.js) are missing: run scripts/web-assets.sh and build again");
    }
    let mut code =
        String::from("/// Third-party browser code: (path under `/ui/vendor/`, bytes).\npub(crate) static VENDOR: &[(&str, &[u8])] = &[\n");
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        code.push_str(&format!("    ({rel:?}, include_bytes!({:?})),\n", f.display().to_string()));
    }
    code.push_str("];\n");
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("vendor.rs"), code).unwrap();
}
