//! The committed OpenAPI document must match the one the code generates.
//! `UPDATE_OPENAPI=1 cargo test -p kvmctl-server --test openapi` rewrites it.

use std::path::Path;

#[test]
fn committed_openapi_document_matches_the_code() {
    let generated = kvmctl_server::openapi::openapi_json();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/kvmctl.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/kvmctl.json is out of date with the code; run `UPDATE_OPENAPI=1 cargo test -p kvmctl-server --test openapi` and commit the result"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["paths"]["/v1/status"]["get"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
