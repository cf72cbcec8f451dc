//! The client's calls for exporting a VM to an archive and restoring one.

use crate::{decode, seg, Client, ClientError};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame};
use hyper::Method;
use kvmctl_types::api::Vm;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Where a restore puts the new VM.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub name: String,
    pub network: Option<String>,
    pub no_start: bool,
    pub no_ssh_forward: bool,
}

/// A file sent as a request body as it is read; counts the bytes sent into `sent`.
struct FileBody {
    file: tokio::fs::File,
    buf: Box<[u8]>,
    sent: Arc<AtomicU64>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                this.sent.fetch_add(rb.filled().len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(rb.filled())))))
            }
        }
    }
}

impl Client {
    /// The VM's archive written to `out` as it arrives; the bytes written. An error the
    /// daemon meets once the archive has begun breaks the stream off (an error here).
    pub async fn vm_export<W>(&self, name: &str, out: &mut W) -> Result<u64, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let resp = self.open(Method::GET, &format!("/v1/vms/{}/export", seg(name)), Full::new(Bytes::new()), None).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.into_body().collect().await.map_err(|source| ClientError::Http { endpoint: self.endpoint.clone(), source })?;
            return decode::<serde_json::Value>(status, &body.to_bytes()).map(|_| 0);
        }
        self.body_to(resp, out).await
    }

    /// A new VM from the archive `file`, streamed as it is read; `sent` counts its bytes.
    pub async fn vm_restore(&self, req: &RestoreRequest, file: tokio::fs::File, sent: Arc<AtomicU64>) -> Result<Vm, ClientError> {
        let mut url = format!("/v1/restore?name={}&no_start={}&no_ssh_forward={}", seg(&req.name), req.no_start, req.no_ssh_forward);
        if let Some(n) = &req.network {
            url.push_str(&format!("&network={}", seg(n)));
        }
        let body = FileBody { file, buf: vec![0; 256 << 10].into_boxed_slice(), sent };
        let resp = self.open(Method::POST, &url, body, Some("application/x-tar")).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|source| ClientError::Http { endpoint: self.endpoint.clone(), source })?;
        decode(status, &body.to_bytes())
    }
}
