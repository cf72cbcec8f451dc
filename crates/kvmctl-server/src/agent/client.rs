//! The controller's side of the agent protocol: HTTPS with its client certificate, the
//! agent's certificate checked against the agent CA (`agent_ca`), bounded answers, and a
//! time limit on every call.

use super::{AgentStatus, GcReport, SyncReport};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// How long one call to an agent may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Most an agent's answer may be (a console log's end is 1 MiB).
const ANSWER_MAX: usize = (super::CONSOLE_MAX as usize) + (64 << 10);

/// How controllers authenticate to agents, and check them.
#[derive(Clone)]
pub struct AgentTls(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentTls")
    }
}

impl AgentTls {
    /// From the agent CA and the controller's client certificate and key (PEM files).
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<AgentTls, String> {
        let mut roots = rustls::RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("agent_ca {}: cannot read it ({e})", ca.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("agent_ca {}: not PEM ({e})", ca.display()))?;
        for c in cas {
            roots.add(c).map_err(|e| format!("agent_ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("agent_ca {}: holds no certificate", ca.display()));
        }
        let (certs, key) = crate::tls::cert_and_key(cert, key).map_err(|e| format!("agent client certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("agent client certificate: {e}"))?;
        Ok(AgentTls(Arc::new(config)))
    }
}

/// An agent's URL checked: `https://HOST:PORT` with nothing after it.
pub fn url_check(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("https://").ok_or("use https://HOST:PORT (agents speak only TLS)")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest.len() > 255
        || rest.contains(['/', '?', '#', '@'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("use https://HOST:PORT with nothing after it".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => return Err(format!("{p:?} is not a port")),
        },
        _ => (rest, 7443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host.to_owned(), port))
}

/// One node's agent.
#[derive(Clone, Debug)]
pub struct AgentClient {
    pub url: String,
    host: String,
    port: u16,
    tls: AgentTls,
}

impl AgentClient {
    pub fn new(url: &str, tls: AgentTls) -> Result<AgentClient, String> {
        let (host, port) = url_check(url)?;
        Ok(AgentClient { url: url.to_owned(), host, port, tls })
    }

    /// One request; the answer's status and body, or why there is none.
    pub async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Bytes), String> {
        tokio::time::timeout(CALL_LIMIT, self.call_unlimited(method, path, body))
            .await
            .map_err(|_| format!("the agent at {} did not answer within {} s", self.url, CALL_LIMIT.as_secs()))?
    }

    async fn call_unlimited(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Bytes), String> {
        let at = |e: &dyn std::fmt::Display| format!("agent {}: {e}", self.url);
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| at(&e))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| at(&e))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.0.clone()).connect(name, tcp).await.map_err(|e| at(&e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| at(&e))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder().method(method).uri(path).header("host", &self.host);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| at(&e))?;
        let resp = send.send_request(req).await.map_err(|e| at(&e))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), ANSWER_MAX).collect().await.map_err(|e| at(&e))?.to_bytes();
        Ok((status, bytes))
    }

    /// The answer as JSON when it is a success, else the agent's error sentence.
    async fn json<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<T, String> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(self.refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("agent {}: an answer kvmctl cannot read ({e})", self.url))
    }

    fn refusal(&self, status: u16, bytes: &[u8]) -> String {
        let said = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned());
        format!("agent {} answered {status}: {said}", self.url)
    }

    pub async fn status(&self) -> Result<AgentStatus, String> {
        self.json("GET", "/v1/agent", None).await
    }

    pub async fn sync(&self) -> Result<SyncReport, String> {
        self.json("POST", "/v1/agent/sync", Some(b"{}".to_vec())).await
    }

    /// The end of a VM's console log (at most `bytes`).
    pub async fn console(&self, name: &kvmctl_types::Name, bytes: u64) -> Result<String, String> {
        let (status, body) = self.call("GET", &format!("/v1/agent/console/{name}?bytes={bytes}"), None).await?;
        if status != 200 {
            return Err(self.refusal(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Removes a deleted VM's logs on the node.
    pub async fn logs_remove(&self, name: &kvmctl_types::Name) -> Result<(), String> {
        let (status, body) = self.call("DELETE", &format!("/v1/agent/logs/{name}"), None).await?;
        if !(200..300).contains(&status) {
            return Err(self.refusal(status, &body));
        }
        Ok(())
    }

    pub async fn gc(&self, dry_run: bool, keep: &[String]) -> Result<GcReport, String> {
        let body = serde_json::to_vec(&serde_json::json!({ "dry_run": dry_run, "keep": keep })).map_err(|e| e.to_string())?;
        self.json("POST", "/v1/agent/gc", Some(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::url_check;

    #[test]
    fn agent_urls() {
        assert_eq!(url_check("https://10.79.0.2:7443"), Ok(("10.79.0.2".into(), 7443)));
        assert_eq!(url_check("https://node2.example/"), Ok(("node2.example".into(), 7443)));
        assert_eq!(url_check("https://[fd00::2]:9000"), Ok(("fd00::2".into(), 9000)));
        for bad in ["http://10.0.0.2:7443", "https://", "https://h:0", "https://h:x", "https://h/path", "https://u@h", "https://h :1"] {
            assert!(url_check(bad).is_err(), "{bad}");
        }
    }
}
