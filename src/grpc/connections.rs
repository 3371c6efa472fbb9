//! The gRPC listener's connections, served by hyper's HTTP/2 server
//! directly rather than through tonic's `Server` (which has no per-connection
//! idle timeout, handshake timeout or connection cap to configure):
//!
//! - at most `max_connections` at once: one semaphore permit per connection,
//!   taken at accept (before TLS) and given back when its socket is dropped;
//!   past it, a new connection is closed at once;
//! - the HTTP/2 preface and the client's first frame (its SETTINGS), and
//!   every header block, must arrive within the handshake timeout
//!   ([`Watched`] reads the frame headers as they pass);
//! - a connection with no call open for the idle timeout is sent a GOAWAY
//!   (hyper's graceful shutdown);
//! - every call's request body has a deadline ([`super::request_body`]).

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::{Instant, Sleep},
};
use tokio_stream::StreamExt;
use tonic::transport::server::{Connected, TcpIncoming};
use tower::{Service, ServiceExt};

use super::{request_body::TimedBody, tls::Tls};

/// What bounds each connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
}

/// The gRPC routes as a connection calls them: every service behind the
/// call log.
pub(super) trait Routes:
    Service<
        Request<TimedBody>,
        Response = Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Routes for S where
    S: Service<
            Request<TimedBody>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Accepts connections on `tcp` (TLS over them when `tls` is given) and
/// serves `service` on each until `signal` resolves; then stops accepting,
/// asks every connection to finish (GOAWAY) and waits for them to close.
pub(super) async fn serve<S>(
    mut tcp: TcpIncoming,
    tls: Option<Tls>,
    service: S,
    limits: Limits,
    signal: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Routes,
{
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        // gRPC clients never read it; it costs every response a header and
        // every connection a new HPACK table entry each second.
        .auto_date_header(false)
        // Dead peers are noticed and dropped.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection holds a receiver: the sender sees them all gone.
    let (stop, stopping) = watch::channel(false);
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            () = &mut signal => break,
            stream = tcp.next() => stream,
        };
        let stream = match stream {
            Some(Ok(stream)) => stream,
            Some(Err(e)) if accept_error_is_local(&e) => {
                // Out of file descriptors or memory: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // One peer's connection failed (reset, aborted): the next one
            // is not made to wait for it.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a connection failed as it was accepted");
                continue;
            }
            None => break,
        };
        let accepted = Instant::now();
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Dropped here: closed at once, and the ones open keep working.
            tracing::debug!(
                peer = ?stream.peer_addr().ok(),
                max = limits.max_connections,
                "connection refused: too many open"
            );
            continue;
        };
        let connection = Connection {
            http2: http2.clone(),
            service: service.clone(),
            limits,
            accepted,
            permit,
            stopping: stopping.clone(),
        };
        match &tls {
            None => {
                tokio::spawn(connection.serve(stream));
            }
            Some(tls) => {
                let acceptor = tls.grpc_acceptor();
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    let deadline = accepted + limits.handshake_timeout;
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection.serve(tls).await,
                        Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    // Closes the listener before the connections drain.
    drop(tcp);
    stop.send_replace(true);
    drop(stopping);
    stop.closed().await;
    Ok(())
}

/// One accepted connection, before it is served.
struct Connection<S> {
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    service: S,
    limits: Limits,
    accepted: Instant,
    permit: OwnedSemaphorePermit,
    stopping: watch::Receiver<bool>,
}

impl<S> Connection<S>
where
    S: Routes,
{
    async fn serve<IO>(mut self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    {
        let open_calls = Arc::new(watch::Sender::new(0_usize));
        let service = PerConnection {
            inner: self.service,
            // What `Request::remote_addr` reads (TCP or TLS connect info).
            connect_info: io.connect_info(),
            open_calls: Arc::clone(&open_calls),
            request_timeout: self.limits.request_timeout,
        };
        let io = Watched::new(
            io,
            self.accepted,
            self.limits.handshake_timeout,
            self.permit,
        );
        let connection = self.http2.serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        let idle = idle(&open_calls, self.limits.idle_timeout);
        let mut idle = std::pin::pin!(idle);
        loop {
            tokio::select! {
                served = &mut connection => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    break;
                }
                () = &mut idle, if !closing => {
                    tracing::debug!("idle connection: GOAWAY");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = self.stopping.wait_for(|&stop| stop), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Resolves once no call has been open on the connection for `timeout`.
async fn idle(open_calls: &watch::Sender<usize>, timeout: Duration) {
    let mut calls = open_calls.subscribe();
    loop {
        if calls.wait_for(|&open| open == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = tokio::time::sleep(timeout) => return,
            // A call opened (and maybe closed again): start over.
            _ = calls.changed() => {}
        }
    }
}

/// The service each connection runs: the connection's address info on each
/// request, the request body under its deadline, and each call counted
/// open until its response is done.
#[derive(Clone)]
struct PerConnection<S, C> {
    inner: S,
    connect_info: C,
    open_calls: Arc<watch::Sender<usize>>,
    request_timeout: Duration,
}

impl<S, C> hyper::service::Service<Request<Incoming>> for PerConnection<S, C>
where
    S: Routes,
    C: Clone + Send + Sync + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let open = OpenCall::new(Arc::clone(&self.open_calls));
        let client_deadline = super::request_body::grpc_timeout(request.headers());
        let mut request = super::request_body::with_deadline(request, self.request_timeout);
        request.extensions_mut().insert(self.connect_info.clone());
        let inner = self.inner.clone();
        Box::pin(async move {
            let call = inner.oneshot(request);
            // The client's deadline bounds the whole call, as tonic's own
            // server does: past it nobody waits for the answer, and a client
            // that does not reset the stream must not keep argon2 busy.
            let response = match client_deadline {
                None => call.await?,
                Some(deadline) => match tokio::time::timeout(deadline, call).await {
                    Ok(response) => response?,
                    Err(_) => tonic::Status::cancelled("Timeout expired").into_http(),
                },
            };
            // Open until hyper drops the body: the response is sent, or reset.
            Ok(response.map(|body| tonic::body::Body::new(Counted { body, _open: open })))
        })
    }
}

/// Errors of the process or the system (EMFILE, ENFILE, ENOBUFS, ENOMEM),
/// which every accept would hit again at once, as opposed to one peer's.
fn accept_error_is_local(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}

/// A call open on its connection, from its headers to its response's end.
struct OpenCall(Arc<watch::Sender<usize>>);

impl OpenCall {
    fn new(open_calls: Arc<watch::Sender<usize>>) -> Self {
        open_calls.send_modify(|open| *open += 1);
        Self(open_calls)
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open = open.saturating_sub(1));
    }
}

/// A response body that keeps its call counted open.
struct Counted {
    body: tonic::body::Body,
    _open: OpenCall,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The HTTP/2 connection preface a client opens with.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// A connection's socket, holding its permit, that fails its reads once the
/// handshake or a header block has taken longer than the handshake timeout
/// (hyper then closes the connection). It reads only the frame headers of
/// what passes (9 bytes a frame), never a payload: h2 itself checks the
/// frames; this only notices that they are slow to come.
pub(super) struct Watched<IO> {
    io: IO,
    frames: FrameWatch,
    timeout: Duration,
    /// Armed while the handshake or a header block is unfinished.
    deadline: Option<Pin<Box<Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl<IO> Watched<IO> {
    fn new(io: IO, accepted: Instant, timeout: Duration, permit: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            frames: FrameWatch::default(),
            timeout,
            deadline: Some(Box::pin(tokio::time::sleep_until(accepted + timeout))),
            _permit: permit,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let was_waiting = this.frames.waiting();
            this.frames.observe(&buf.filled()[before..]);
            match (was_waiting, this.frames.waiting()) {
                (true, false) => this.deadline = None,
                // A header block began: it has the timeout from now.
                (false, true) => {
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.timeout)));
                }
                _ => {}
            }
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP/2 handshake or header block not completed within the handshake timeout",
            )));
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Which part of the client's byte stream is passing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Part {
    #[default]
    Preface,
    FrameHeader,
    Payload,
}

/// Where the client's byte stream is, frame by frame.
#[derive(Debug, Default)]
struct FrameWatch {
    part: Part,
    /// Bytes of the preface, or of the current frame header, seen so far.
    seen: usize,
    header: [u8; FRAME_HEADER_LEN],
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    /// The preface and the whole first frame (SETTINGS, or h2 refuses) are in.
    handshaken: bool,
    /// A HEADERS or PUSH_PROMISE frame began, and the frame that ends its
    /// header block (END_HEADERS) has not fully arrived.
    in_header_block: bool,
    /// The frame passing is the last of its header block.
    ends_header_block: bool,
}

impl FrameWatch {
    /// Whether the client owes the rest of its handshake or of a header block.
    fn waiting(&self) -> bool {
        let mid_frame_header = self.part == Part::FrameHeader && self.seen > 0;
        !self.handshaken || self.in_header_block || mid_frame_header
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.part {
                Part::Preface => {
                    let take = (PREFACE_LEN - self.seen).min(bytes.len());
                    self.seen += take;
                    bytes = &bytes[take..];
                    if self.seen == PREFACE_LEN {
                        self.seen = 0;
                        self.part = Part::FrameHeader;
                    }
                }
                Part::FrameHeader => {
                    let take = (FRAME_HEADER_LEN - self.seen).min(bytes.len());
                    self.header[self.seen..self.seen + take].copy_from_slice(&bytes[..take]);
                    self.seen += take;
                    bytes = &bytes[take..];
                    if self.seen == FRAME_HEADER_LEN {
                        self.seen = 0;
                        self.frame_header();
                    }
                }
                Part::Payload => {
                    let take = self.payload_left.min(bytes.len());
                    self.payload_left -= take;
                    bytes = &bytes[take..];
                    if self.payload_left == 0 {
                        self.frame_done();
                    }
                }
            }
        }
    }

    /// A whole frame header is in `self.header`.
    fn frame_header(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        // A header block is owed from its first frame header until the
        // payload of its END_HEADERS frame is in: a HEADERS frame whose own
        // payload trickles in counts as much as a missing CONTINUATION.
        if matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
            self.in_header_block = true;
            self.ends_header_block = flags & END_HEADERS != 0;
        }
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        if self.payload_left == 0 {
            self.frame_done();
        } else {
            self.part = Part::Payload;
        }
    }

    fn frame_done(&mut self) {
        if self.ends_header_block {
            self.in_header_block = false;
            self.ends_header_block = false;
        }
        self.handshaken = true;
        self.part = Part::FrameHeader;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend_from_slice(payload);
        frame
    }

    fn fed_byte_by_byte(bytes: &[u8]) -> FrameWatch {
        let mut watch = FrameWatch::default();
        for byte in bytes {
            watch.observe(std::slice::from_ref(byte));
        }
        watch
    }

    #[test]
    fn a_partial_preface_or_first_frame_is_waited_for() {
        assert_eq!(PREFACE.len(), PREFACE_LEN);
        for cut in [0, 16, 24, 30, 36] {
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(0x4, 0, &[0; 6]));
            let mut watch = FrameWatch::default();
            watch.observe(&bytes[..cut]);
            assert!(watch.waiting(), "cut at {cut}");
        }
    }

    #[test]
    fn the_handshake_is_done_after_the_first_frame_in_any_split() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6]));
        bytes.extend(frame(0x8, 0, &[0; 4]));
        let mut whole = FrameWatch::default();
        whole.observe(&bytes);
        assert!(!whole.waiting());
        assert!(!fed_byte_by_byte(&bytes).waiting());
    }

    #[test]
    fn a_header_block_is_open_until_its_continuation_ends_it() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[]));
        bytes.extend(frame(HEADERS, 0, &[0x82; 10]));
        let mut watch = fed_byte_by_byte(&bytes);
        assert!(watch.waiting());
        watch.observe(&frame(CONTINUATION, 0, &[0x84; 3]));
        assert!(watch.waiting());
        watch.observe(&frame(CONTINUATION, END_HEADERS, &[0x86; 3]));
        assert!(!watch.waiting());
        watch.observe(&frame(HEADERS, END_HEADERS | 0x1, &[0x82; 5]));
        assert!(!watch.waiting());
    }

    #[test]
    fn a_header_frame_or_frame_header_cut_short_is_waited_for() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[]));
        let mut watch = fed_byte_by_byte(&bytes);
        assert!(!watch.waiting());
        let headers = frame(HEADERS, END_HEADERS | 0x1, &[0x82; 100]);
        watch.observe(&headers[..40]);
        assert!(watch.waiting(), "HEADERS payload cut short");
        watch.observe(&headers[40..]);
        assert!(!watch.waiting());
        let data = frame(0x0, 0, &[0; 8]);
        watch.observe(&data[..4]);
        assert!(watch.waiting(), "frame header cut short");
        watch.observe(&data[4..12]);
        assert!(
            !watch.waiting(),
            "a DATA payload cut short is the request timeout's"
        );
        watch.observe(&data[12..]);
        assert!(!watch.waiting());
    }
}
