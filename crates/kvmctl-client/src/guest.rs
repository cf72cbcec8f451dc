//! The client's calls into a running guest: readiness waits, commands, the console log and
//! files both ways.

use crate::{decode, seg, Client, ClientError, GuestDownload, GuestFile};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use kvmctl_types::api::{Vm, VmExecRequest, VmExecResponse};
use std::path::Path;

impl Client {
    /// Blocks until the VM reaches `stage` (`running`, `ssh`, `cloud-init`) or the timeout.
    pub async fn vm_wait(&self, name: &str, stage: &str, timeout_seconds: u64) -> Result<Vm, ClientError> {
        self.get(&format!("/v1/vms/{}/wait?for={}&timeout_seconds={timeout_seconds}", seg(name), seg(stage))).await
    }

    pub async fn vm_exec(&self, name: &str, req: &VmExecRequest) -> Result<VmExecResponse, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/exec", seg(name)), req).await
    }

    /// What the VM wrote on its serial console (the last `lines` lines).
    pub async fn vm_console_log(&self, name: &str, lines: usize) -> Result<String, ClientError> {
        let (status, body) = self.request(Method::GET, &format!("/v1/vms/{}/console/log?lines={lines}", seg(name)), None).await?;
        if status.is_success() {
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        decode::<String>(status, &body)
    }

    /// Writes `data` to `path` in the guest (or makes the directory `path`).
    pub async fn vm_file_put(&self, name: &str, path: &str, dir: bool, data: Vec<u8>) -> Result<(), ClientError> {
        let url = format!("/v1/vms/{}/files?path={}&dir={dir}", seg(name), seg(path));
        let (status, _, body) = self.request_typed(Method::PUT, &url, Some(data), "application/octet-stream").await?;
        if status.is_success() {
            return Ok(());
        }
        decode::<serde_json::Value>(status, &body).map(drop)
    }

    /// Copies a local file or tree to `path` in the guest (its directories made as it goes);
    /// the bytes sent. `local` itself may be a symlink; inside a tree, symlinks and names
    /// that are not UTF-8 are skipped, never followed.
    pub async fn vm_upload(&self, name: &str, local: &Path, path: &str) -> Result<u64, ClientError> {
        let read = |source| ClientError::Read { path: local.to_owned(), source };
        let meta = std::fs::metadata(local).map_err(read)?;
        if !meta.is_dir() {
            let data = std::fs::read(local).map_err(read)?;
            let n = data.len() as u64;
            self.vm_file_put(name, path, false, data).await?;
            return Ok(n);
        }
        self.vm_file_put(name, path, true, Vec::new()).await?;
        let mut entries: Vec<_> = std::fs::read_dir(local).map_err(read)?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        let mut total = 0;
        for e in entries {
            let (Some(entry), Ok(kind)) = (e.file_name().to_str().map(str::to_owned), e.file_type()) else { continue };
            if kind.is_symlink() {
                continue;
            }
            total += Box::pin(self.vm_upload(name, &e.path(), &format!("{}/{entry}", path.trim_end_matches('/')))).await?;
        }
        Ok(total)
    }

    /// A guest file's bytes, or a directory's entries.
    pub async fn vm_file_get(&self, name: &str, path: &str) -> Result<GuestFile, ClientError> {
        let url = format!("/v1/vms/{}/files?path={}", seg(name), seg(path));
        let (status, headers, body) = self.request_typed(Method::GET, &url, None, "application/json").await?;
        if !status.is_success() {
            return decode::<serde_json::Value>(status, &body).map(|_| GuestFile::File(Vec::new()));
        }
        if headers.get("x-kvmctl-kind").is_some_and(|k| k == "dir") {
            return decode(status, &body).map(GuestFile::Dir);
        }
        Ok(GuestFile::File(body.to_vec()))
    }

    /// A guest file written to `out` as it arrives (nothing of it held beyond one chunk), or
    /// a directory's entries; the bytes written, for a file.
    pub async fn vm_file_download<W>(&self, name: &str, path: &str, out: &mut W) -> Result<GuestDownload, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let url = format!("/v1/vms/{}/files?path={}", seg(name), seg(path));
        let resp = self.open(Method::GET, &url, Full::new(Bytes::new()), None).await?;
        let status = resp.status();
        let dir = resp.headers().get("x-kvmctl-kind").is_some_and(|k| k == "dir");
        let http_err = |source| ClientError::Http { endpoint: self.endpoint.clone(), source };
        if !status.is_success() || dir {
            let body = resp.into_body().collect().await.map_err(http_err)?.to_bytes();
            if !status.is_success() {
                return decode::<serde_json::Value>(status, &body).map(|_| GuestDownload::File(0));
            }
            return decode(status, &body).map(GuestDownload::Dir);
        }
        Ok(GuestDownload::File(self.body_to(resp, out).await?))
    }

    /// Sends a request with `body` (streamed as it is polled) on a fresh connection; the
    /// response, its body still to read.
    pub(crate) async fn open<B>(
        &self,
        method: Method,
        url: &str,
        body: B,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut req = Request::builder().method(method).uri(url).header(hyper::header::HOST, self.host_header());
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(c) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, c);
        }
        let req = req.body(body).expect("valid request");
        self.send(TokioIo::new(self.connect().await?), req).await
    }

    /// A response's body written to `out` as it arrives; the bytes written.
    pub(crate) async fn body_to<W>(&self, resp: hyper::Response<hyper::body::Incoming>, out: &mut W) -> Result<u64, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let http_err = |source| ClientError::Http { endpoint: self.endpoint.clone(), source };
        let mut body = resp.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http_err)?;
            if let Some(chunk) = frame.data_ref() {
                out.write_all(chunk).await.map_err(|e| ClientError::Write { source: e })?;
                written += chunk.len() as u64;
            }
        }
        out.flush().await.map_err(|e| ClientError::Write { source: e })?;
        Ok(written)
    }
}
