//! The guest's stdout and stderr: forwarded line by line to the log, and the
//! last few KiB kept so a trap message can show what the guest printed
//! (a Rust panic message, a Python traceback).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of guest output kept for error messages.
const TAIL_BYTES_MAX: usize = 4096;

/// A guest output stream shared by every handle the guest opens on it.
#[derive(Clone)]
pub struct GuestOutput {
    operator: Arc<str>,
    stream: &'static str,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    tail: VecDeque<u8>,
    partial_line: Vec<u8>,
}

impl GuestOutput {
    /// A stream for `operator`, named `stream` (`stdout` or `stderr`) in logs.
    pub fn new(operator: Arc<str>, stream: &'static str) -> GuestOutput {
        GuestOutput {
            operator,
            stream,
            inner: Arc::default(),
        }
    }

    /// The last bytes written, lossily decoded, trimmed.
    pub fn tail(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = inner.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }

    /// Forgets the kept tail (called before each batch, so a trap shows only
    /// what its own batch printed).
    pub fn clear_tail(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tail
            .clear();
    }

    fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tail.extend(bytes);
        let excess = inner.tail.len().saturating_sub(TAIL_BYTES_MAX);
        inner.tail.drain(..excess);
        inner.partial_line.extend_from_slice(bytes);
        while let Some(nl) = inner.partial_line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = inner.partial_line.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            tracing::info!(operator = &*self.operator, stream = self.stream, "{text}");
        }
        if inner.partial_line.len() > TAIL_BYTES_MAX {
            let text = String::from_utf8_lossy(&inner.partial_line).into_owned();
            inner.partial_line.clear();
            tracing::info!(operator = &*self.operator, stream = self.stream, "{text}");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 16)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
