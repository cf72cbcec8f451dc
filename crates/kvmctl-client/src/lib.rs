//! Typed client of the kvmctl daemon.
//!
//! Speaks HTTP/1.1 over the daemon's unix socket (the default, `/run/kvmctl/kvmctl.sock`) or
//! over TCP (`http://host:port`, or `https://host:port` trusting the system's roots or a CA
//! file given with `with_ca_file`). One connection per request: the CLI makes few requests,
//! and a fresh connection can never be half-broken by a daemon restart.

/// The daemon's socket when none is given.
pub use backups::RestoreRequest;
pub use kvmctl_types::DEFAULT_SOCKET;

mod admin;
mod backups;
mod devices;
mod guest;
mod snapshots;
mod testruns;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use kvmctl_types::api::{
    ApiEvent, ErrorBody, Forward, ForwardCreateRequest, Image, ImageImportRequest, Network, NetworkCreateRequest, Plan, PortPoolStatus,
    StatusResponse, Vm, VmCloneRequest, VmCreateRequest, VmResizeRequest, VmStopRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port` of a plain-HTTP listener.
    Tcp(String),
    /// `host:port` of an HTTPS listener.
    Https(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
            Endpoint::Https(a) => write!(f, "https://{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the kvmctl daemon at {endpoint}; start it with `kvmctl serve` (as root), or point at it with --socket/--url")]
    Unreachable {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("permission denied on {endpoint}; run as root or as a member of the daemon's socket group")]
    PermissionDenied { endpoint: Endpoint },
    #[error("TLS with {endpoint} failed; if the daemon's certificate is self-signed or from a private CA, pass --ca-cert FILE (or KVMCTL_CA_CERT)")]
    Tls {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("CA certificate file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("talking to the daemon at {endpoint} failed")]
    Http {
        endpoint: Endpoint,
        #[source]
        source: hyper::Error,
    },
    /// The daemon answered with an error; its message says what to do.
    #[error("{}", .body.message)]
    Api { status: u16, body: ErrorBody },
    #[error("the daemon's answer (HTTP {status}) is not what this client understands: {message}")]
    Decode { status: u16, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the downloaded data")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

/// What a path in a guest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFile {
    File(Vec<u8>),
    Dir(Vec<kvmctl_types::api::GuestFileEntry>),
}

/// What `vm_file_download` found: a file (the bytes written) or a directory's entries.
#[derive(Debug)]
pub enum GuestDownload {
    File(u64),
    Dir(Vec<kvmctl_types::api::GuestFileEntry>),
}

/// A byte stream a terminal WebSocket runs over (unix socket or TCP).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A terminal session with the daemon: binary frames carry the terminal's bytes.
pub type Terminal = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// Sent as `Authorization: Bearer ...`; never printed (`Debug` hides it).
    token: Option<String>,
    /// For `https://` endpoints: the roots the daemon's certificate must chain to.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoint", &self.endpoint).field("token", &self.token.as_ref().map(|_| "<hidden>")).finish()
    }
}

impl Client {
    pub fn unix(path: impl AsRef<Path>) -> Self {
        Client { endpoint: Endpoint::Unix(path.as_ref().to_owned()), token: None, tls: None }
    }

    /// The same client, authenticating with `token` (`kvm_...`).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// `url` is `http://host:port` or `https://host:port` (a trailing `/` is fine). HTTPS
    /// trusts the system's root certificates; `with_ca_file` trusts a private CA instead.
    pub fn http(url: &str) -> Result<Self, String> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => return Err(format!("{url:?}: expected http://HOST:PORT or https://HOST:PORT")),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: expected http(s)://HOST:PORT"));
        }
        if !https {
            return Ok(Client { endpoint: Endpoint::Tcp(host.to_owned()), token: None, tls: None });
        }
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        // Unreadable system certificates leave the roots empty; the handshake then fails with
        // advice to pass --ca-cert.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Ok(Client { endpoint: Endpoint::Https(host.to_owned()), token: None, tls: Some(connector(roots)) })
    }

    /// The same HTTPS client, trusting only the CA certificate(s) in `path` (PEM); for a
    /// daemon with a self-signed certificate this is that certificate.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, ClientError> {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
        let err = |message: String| ClientError::CaFile { path: path.to_owned(), message };
        if !matches!(self.endpoint, Endpoint::Https(_)) {
            return Err(err("a CA certificate only applies to an https:// URL".into()));
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(format!("cannot read it ({e})")))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("not PEM certificates ({e})")))?;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(err("holds no usable certificate (expected -----BEGIN CERTIFICATE-----)".into()));
        }
        self.tls = Some(connector(roots));
        Ok(self)
    }

    /// A connection to the daemon: the socket, TCP, or TCP with TLS (certificate checked
    /// against the host name in the URL).
    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        match &self.endpoint {
            Endpoint::Unix(p) => Ok(Box::new(tokio::net::UnixStream::connect(p).await.map_err(|e| self.connect_error(e))?)),
            Endpoint::Tcp(a) => Ok(Box::new(tokio::net::TcpStream::connect(a.as_str()).await.map_err(|e| self.connect_error(e))?)),
            Endpoint::Https(a) => {
                let tcp = tokio::net::TcpStream::connect(a.as_str()).await.map_err(|e| self.connect_error(e))?;
                let host = host_of(a);
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| ClientError::Tls {
                    endpoint: self.endpoint.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                })?;
                let tls = self.tls.as_ref().expect("https clients carry a connector");
                let stream = tls.connect(name, tcp).await.map_err(|source| ClientError::Tls { endpoint: self.endpoint.clone(), source })?;
                Ok(Box::new(stream))
            }
        }
    }

    /// What goes in the `Host` header.
    fn host_header(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_owned(),
            Endpoint::Tcp(h) | Endpoint::Https(h) => h.clone(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/v1/status").await
    }

    pub async fn image_list(&self) -> Result<Vec<Image>, ClientError> {
        self.get("/v1/images").await
    }

    pub async fn image_get(&self, name: &str) -> Result<Image, ClientError> {
        self.get(&format!("/v1/images/{}", seg(name))).await
    }

    pub async fn image_import(&self, req: &ImageImportRequest) -> Result<Image, ClientError> {
        self.send_json(Method::POST, "/v1/images", req).await
    }

    pub async fn image_delete(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/images/{}", seg(name))).await
    }

    pub async fn plan_list(&self) -> Result<Vec<Plan>, ClientError> {
        self.get("/v1/plans").await
    }

    pub async fn network_list(&self) -> Result<Vec<Network>, ClientError> {
        self.get("/v1/networks").await
    }

    pub async fn network_get(&self, name: &str) -> Result<Network, ClientError> {
        self.get(&format!("/v1/networks/{}", seg(name))).await
    }

    pub async fn network_create(&self, req: &NetworkCreateRequest) -> Result<Network, ClientError> {
        self.send_json(Method::POST, "/v1/networks", req).await
    }

    pub async fn network_delete(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/networks/{}", seg(name))).await
    }

    pub async fn port_pool_list(&self) -> Result<Vec<PortPoolStatus>, ClientError> {
        self.get("/v1/port-pools").await
    }

    pub async fn forward_list(&self, vm: &str) -> Result<Vec<Forward>, ClientError> {
        self.get(&format!("/v1/vms/{}/forwards", seg(vm))).await
    }

    pub async fn forward_create(&self, vm: &str, req: &ForwardCreateRequest) -> Result<Forward, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/forwards", seg(vm)), req).await
    }

    pub async fn forward_delete(&self, vm: &str, protocol: &str, host_port: u16) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/vms/{}/forwards/{}/{host_port}", seg(vm), seg(protocol))).await
    }

    /// Subscribes to `GET /v1/events` (one VM's with `vm`): events arrive on the receiver
    /// until the daemon closes the stream or the receiver is dropped.
    pub async fn events(&self, vm: Option<&str>) -> Result<tokio::sync::mpsc::Receiver<ApiEvent>, ClientError> {
        let path = match vm {
            Some(v) => format!("/v1/events?vm={}", seg(v)),
            None => "/v1/events".to_owned(),
        };
        let mut req = Request::builder().method(Method::GET).uri(path).header(hyper::header::HOST, self.host_header());
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new())).expect("valid request");
        let resp = self.send(TokioIo::new(self.connect().await?), req).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|source| ClientError::Http { endpoint: self.endpoint.clone(), source })?
                .to_bytes();
            return decode::<ApiEvent>(status, &bytes).map(|_| unreachable!("an error status decodes to an error"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    buf.push_str(&String::from_utf8_lossy(data));
                }
                while let Some(i) = buf.find("\n\n") {
                    let block: String = buf.drain(..i + 2).collect();
                    for line in block.lines() {
                        if let Some(ev) = line.strip_prefix("data:").and_then(|d| serde_json::from_str::<ApiEvent>(d.trim()).ok()) {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    pub async fn vm_list(&self) -> Result<Vec<Vm>, ClientError> {
        self.get("/v1/vms").await
    }

    pub async fn vm_get(&self, name: &str) -> Result<Vm, ClientError> {
        self.get(&format!("/v1/vms/{}", seg(name))).await
    }

    pub async fn vm_create(&self, req: &VmCreateRequest) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, "/v1/vms", req).await
    }

    pub async fn vm_delete(&self, name: &str, keep_disk: bool) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/vms/{}?keep_disk={keep_disk}", seg(name))).await
    }

    pub async fn vm_start(&self, name: &str) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/start", seg(name)), &serde_json::json!({})).await
    }

    pub async fn vm_stop(&self, name: &str, req: &VmStopRequest) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/stop", seg(name)), req).await
    }

    pub async fn vm_reboot(&self, name: &str) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/reboot", seg(name)), &serde_json::json!({})).await
    }

    pub async fn vm_clone(&self, source: &str, req: &VmCloneRequest) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/clone", seg(source)), req).await
    }

    pub async fn vm_resize(&self, name: &str, req: &VmResizeRequest) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/resize", seg(name)), req).await
    }

    pub async fn vm_labels_set(&self, name: &str, req: &kvmctl_types::api::VmLabelsRequest) -> Result<Vm, ClientError> {
        self.send_json(Method::PUT, &format!("/v1/vms/{}/labels", seg(name)), req).await
    }

    pub async fn node_evacuate(&self, name: &str) -> Result<kvmctl_types::api::NodeEvacuation, ClientError> {
        self.send_json(Method::POST, &format!("/v1/nodes/{}/evacuate", seg(name)), &serde_json::json!({})).await
    }

    pub async fn vm_migrate(&self, name: &str, req: &kvmctl_types::api::VmMigrateRequest) -> Result<Vm, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/migrate", seg(name)), req).await
    }

    /// Opens a terminal WebSocket (`/v1/vms/{name}/console` or `/ssh?...`).
    pub async fn terminal(&self, path: &str) -> Result<Terminal, ClientError> {
        let url = format!("ws://{}{path}", self.host_header());
        let mut url = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .map_err(|e| ClientError::Decode { status: 0, message: format!("WebSocket: {e}") })?;
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                url.headers_mut().insert(hyper::header::AUTHORIZATION, v);
            }
        }
        let io = self.connect().await?;
        match tokio_tungstenite::client_async(url, io).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                match decode::<serde_json::Value>(status, resp.body().as_deref().unwrap_or_default()) {
                    Err(e) => Err(e),
                    Ok(_) => Err(ClientError::Decode { status: status.as_u16(), message: "the daemon did not switch to WebSocket".into() }),
                }
            }
            Err(e) => Err(ClientError::Decode { status: 0, message: format!("WebSocket: {e}") }),
        }
    }

    pub async fn send_json<B: Serialize, T: DeserializeOwned>(&self, method: Method, path: &str, body: &B) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        let (status, body) = self.request(method, path, Some(bytes)).await?;
        decode(status, &body)
    }

    pub(crate) async fn empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let (status, body) = self.request(method, path, None).await?;
        if status.is_success() {
            return Ok(());
        }
        decode::<serde_json::Value>(status, &body).map(drop)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, body) = self.request(Method::GET, path, None).await?;
        decode(status, &body)
    }

    /// One request on a fresh connection; returns the status and the whole body.
    pub async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes), ClientError> {
        self.request_typed(method, path, body, "application/json").await.map(|(s, _, b)| (s, b))
    }

    /// As `request`, with the body's content type; also returns the response headers.
    pub async fn request_typed(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ClientError> {
        let mut req = Request::builder().method(method).uri(path).header(hyper::header::HOST, self.host_header());
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("valid request");
        let resp = self.send(TokioIo::new(self.connect().await?), req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes =
            resp.into_body().collect().await.map_err(|source| ClientError::Http { endpoint: self.endpoint.clone(), source })?.to_bytes();
        Ok((status, headers, bytes))
    }

    fn connect_error(&self, source: std::io::Error) -> ClientError {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::PermissionDenied { endpoint: self.endpoint.clone() }
        } else {
            ClientError::Unreachable { endpoint: self.endpoint.clone(), source }
        }
    }

    async fn send<IO, B>(&self, io: TokioIo<IO>, req: Request<B>) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let http_err = |source| ClientError::Http { endpoint: self.endpoint.clone(), source };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(http_err)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(req).await.map_err(http_err)
    }
}

fn connector(roots: tokio_rustls::rustls::RootCertStore) -> tokio_rustls::TlsConnector {
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The host part of `host:port` (`[v6]:port` keeps its address without brackets).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// A name as one path segment: anything outside a DNS label is percent-encoded, so a bad
/// name reaches the daemon (and is refused there, by rule) instead of changing the path.
pub(crate) fn seg(name: &str) -> String {
    name.bytes()
        .map(
            |b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            },
        )
        .collect()
}

pub(crate) fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, ClientError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| ClientError::Decode { status: status.as_u16(), message: e.to_string() });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => Err(ClientError::Api { status: status.as_u16(), body }),
        Err(_) => Err(ClientError::Decode { status: status.as_u16(), message: String::from_utf8_lossy(body).chars().take(200).collect() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_daemon_says_how_to_start_one() {
        let dir = std::env::temp_dir().join(format!("kvmctl-client-test-{}", std::process::id()));
        let c = Client::unix(dir.join("none.sock"));
        let e = c.status().await.unwrap_err().to_string();
        assert!(e.contains("kvmctl serve") && e.contains("none.sock"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(Client::http("http://127.0.0.1:8443/").unwrap().endpoint(), &Endpoint::Tcp("127.0.0.1:8443".into()));
        assert_eq!(Client::http("https://kvm.example:8443").unwrap().endpoint(), &Endpoint::Https("kvm.example:8443".into()));
        assert!(Client::http("ftp://x").is_err());
        assert!(Client::http("http://x/y").is_err());
        assert_eq!((host_of("h:1"), host_of("[::1]:8443"), host_of("h")), ("h", "::1", "h"));
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":"not_found","message":"vm \"x\" not found"}"#;
        match decode::<StatusResponse>(StatusCode::NOT_FOUND, body) {
            Err(ClientError::Api { status: 404, body }) => assert_eq!(body.error, "not_found"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode::<StatusResponse>(StatusCode::BAD_GATEWAY, b"<html>"), Err(ClientError::Decode { status: 502, .. })));
    }
}
