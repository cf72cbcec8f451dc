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

/// The document and the router agree: every route served is documented, and every
/// documented operation is served.
#[test]
fn every_route_is_documented_and_every_documented_route_served() {
    let doc: serde_json::Value = serde_json::from_str(&kvmctl_server::openapi::openapi_json()).unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let served: Vec<(String, String)> = kvmctl_server::route_list().into_iter().map(|(m, p)| (m, p.to_owned())).collect();
    let undocumented: Vec<_> = served.iter().filter(|r| !documented.contains(r)).collect();
    let unserved: Vec<_> = documented.iter().filter(|r| !served.contains(r)).collect();
    assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
    assert!(unserved.is_empty(), "documented operations no route serves: {unserved:?}");
}
