//! The gRPC listener's limits on slow, silent and surplus clients, spoken to
//! in raw HTTP/2 (the `h2` crate, or frames written by hand) with short
//! limits: a partial preface or header block is closed within the handshake
//! timeout; a request whose message never comes ends DEADLINE_EXCEEDED
//! within the request timeout (or the client's shorter grpc-timeout) and
//! its stream is freed; a body abandoned midway counts as CANCELLED, never
//! INTERNAL; connection N+1 is closed while the first N keep answering; an
//! idle connection gets a GOAWAY. Throughout, a legitimate client's calls
//! succeed. Times are only ever checked as "within the limit plus a margin".

use std::{net::SocketAddr, time::Duration};

use auth_service::config::Settings;
use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream, client::SendRequest};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    helpers::{Backend, TestApp},
    metrics::fetch,
};

/// Slack on a shared, loaded machine: generous, since only an upper bound
/// is checked.
const MARGIN: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_secs(1);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const REGISTER: &str = "/auth.v1.AuthService/Register";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;
const DEADLINE_EXCEEDED: &str = "4";

async fn spawn(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(&Backend::Sqlite, configure).await
}

/// A well-behaved client on a connection of its own.
struct Legit(HealthClient<Channel>);

impl Legit {
    async fn connect(app: &TestApp) -> Legit {
        let channel = Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Legit(HealthClient::new(channel))
    }

    async fn succeeds(&mut self) {
        let answer = tokio::time::timeout(MARGIN, self.0.check(HealthCheckRequest::default()))
            .await
            .expect("the legitimate call hung");
        answer.expect("the legitimate call failed");
    }
}

/// An HTTP/2 connection by the `h2` crate.
async fn h2_connect(addr: SocketAddr) -> Result<SendRequest<Bytes>, Box<dyn std::error::Error>> {
    let tcp = TcpStream::connect(addr).await?;
    let (send, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

fn grpc_request(path: &str, grpc_timeout: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    request.body(()).unwrap()
}

/// Opens a call on `path`, request headers only.
async fn open_call(
    send: &SendRequest<Bytes>,
    path: &str,
    grpc_timeout: Option<&str>,
) -> (h2::client::ResponseFuture, SendStream<Bytes>) {
    let mut send = send.clone().ready().await.unwrap();
    send.send_request(grpc_request(path, grpc_timeout), false)
        .unwrap()
}

/// The call's grpc-status, from the headers (trailers-only) or the trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> Result<String, h2::Error> {
    let response = response.await?;
    if let Some(status) = response.headers().get("grpc-status") {
        return Ok(status.to_str().unwrap().to_owned());
    }
    let mut body: RecvStream = response.into_body();
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok(trailers
        .get("grpc-status")
        .map(|s| s.to_str().unwrap().to_owned())
        .unwrap_or_default())
}

/// A Health/Check over raw HTTP/2: its grpc-status.
async fn h2_health(send: &SendRequest<Bytes>) -> Result<String, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut body) = send.send_request(grpc_request(HEALTH_CHECK, None), false)?;
    // An empty HealthCheckRequest: the 5-byte message prefix alone.
    body.send_data(Bytes::from_static(&[0; 5]), true)?;
    grpc_status(response).await
}

/// Whether the server closes `tcp` within `within` (end of file or a reset),
/// whatever it writes first.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0_u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The request headers of a Register call on `addr`, HPACK-encoded by hand
/// (static-table names, literal values without indexing or Huffman).
fn register_header_block(addr: SocketAddr) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let mut literal = |index: u8, value: &str| {
        block.push(index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    };
    literal(0x04, REGISTER); // :path
    literal(0x01, &addr.to_string()); // :authority
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.push(0x00); // te: a literal name
    block.push(2);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    block
}

/// Reads frames from `tcp` until one of `kind` (its stream id), or end of
/// file (`None`).
async fn next_frame_of(tcp: &mut TcpStream, kinds: &[u8]) -> Option<(u8, u32)> {
    loop {
        let mut header = [0_u8; 9];
        tcp.read_exact(&mut header).await.ok()?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0_u8; len];
        tcp.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if kinds.contains(&header[3]) {
            return Some((header[3], stream));
        }
    }
}

/// The preface and an empty SETTINGS: a client's whole handshake.
async fn raw_handshake(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(0x4, 0, 0, &[]));
    tcp.write_all(&opening).await.unwrap();
    tcp
}

#[tokio::test]
async fn a_partial_preface_or_header_block_is_closed_within_the_handshake_timeout() {
    let app = spawn(|s| s.server.handshake_timeout = SHORT).await;
    let mut legit = Legit::connect(&app).await;
    // A client that did complete its handshake may then stay silent.
    let handshaken = h2_connect(app.addr).await.unwrap();

    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial.write_all(&PREFACE[..16]).await.unwrap();
    legit.succeeds().await;
    assert!(
        closed_within(&mut partial, SHORT + MARGIN).await,
        "a connection that sent 16 of the 24 preface bytes is still open"
    );

    // The handshake done, then a HEADERS frame without END_HEADERS, and
    // the CONTINUATION never sent.
    let mut unfinished = raw_handshake(app.addr).await;
    let block = register_header_block(app.addr);
    unfinished
        .write_all(&frame(HEADERS, 0, 1, &block[..4]))
        .await
        .unwrap();
    legit.succeeds().await;
    assert!(
        closed_within(&mut unfinished, SHORT + MARGIN).await,
        "a connection with a header block left unfinished is still open"
    );

    assert_eq!(h2_health(&handshaken).await.unwrap(), "0");
    legit.succeeds().await;
    app.stop().await;
}

#[tokio::test]
async fn headers_without_a_body_end_deadline_exceeded_and_free_their_streams() {
    let app = spawn(|s| s.server.request_timeout = SHORT).await;
    let mut legit = Legit::connect(&app).await;
    let attacker = h2_connect(app.addr).await.unwrap();
    // As many silent calls as the connection may have open at once.
    let mut calls = Vec::new();
    for _ in 0..256 {
        calls.push(open_call(&attacker, REGISTER, None).await);
    }
    legit.succeeds().await;
    for (response, mut body) in calls {
        let status = tokio::time::timeout(SHORT + MARGIN, grpc_status(response))
            .await
            .expect("no answer within the request timeout");
        assert_eq!(status.unwrap(), DEADLINE_EXCEEDED);
        // The server is done with the stream: it resets our half.
        let reset = tokio::time::timeout(MARGIN, std::future::poll_fn(|cx| body.poll_reset(cx)))
            .await
            .expect("the stream was not reset");
        assert!(reset.is_ok(), "{reset:?}");
    }
    // Every slot is free again: a new call on the same connection runs.
    let answer = tokio::time::timeout(MARGIN, h2_health(&attacker))
        .await
        .expect("no stream slot came free");
    assert_eq!(answer.unwrap(), "0");
    legit.succeeds().await;
    app.stop().await;
}

#[tokio::test]
async fn a_body_trickled_in_slower_than_the_request_timeout_ends_deadline_exceeded() {
    let app = spawn(|s| s.server.request_timeout = SHORT).await;
    let mut legit = Legit::connect(&app).await;
    let client = h2_connect(app.addr).await.unwrap();
    let (response, mut body) = open_call(&client, REGISTER, None).await;
    // A 60 KiB message announced, then 1 KiB every 200 ms (12 s in all).
    let trickle = tokio::spawn(async move {
        body.send_data(Bytes::from_static(&[0, 0, 0, 0xf0, 0]), false)?;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            body.send_data(Bytes::from(vec![0x0a; 1024]), false)?;
        }
        Ok::<_, h2::Error>(())
    });
    legit.succeeds().await;
    let status = tokio::time::timeout(SHORT + MARGIN, grpc_status(response))
        .await
        .expect("no answer within the request timeout");
    assert_eq!(status.unwrap(), DEADLINE_EXCEEDED);
    trickle.abort();
    legit.succeeds().await;
    app.stop().await;
}

#[tokio::test]
async fn a_shorter_grpc_timeout_wins_over_the_request_timeout() {
    let app = spawn(|s| s.server.request_timeout = Duration::from_secs(600)).await;
    let client = h2_connect(app.addr).await.unwrap();
    let (response, _body) = open_call(&client, REGISTER, Some("300m")).await;
    let status = tokio::time::timeout(MARGIN, grpc_status(response))
        .await
        .expect("the client's grpc-timeout was not applied");
    assert_eq!(status.unwrap(), DEADLINE_EXCEEDED);
    app.stop().await;
}

/// `auth_grpc_calls_total` of Register with `code`, from `/metrics`.
async fn register_calls(app: &TestApp, code: &str) -> u64 {
    let (_, text) = fetch(app.http_addr.unwrap(), None).await;
    let wanted = format!("auth_grpc_calls_total{{method=\"{REGISTER}\",code=\"{code}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test]
async fn a_body_abandoned_midway_is_cancelled_not_internal() {
    let app = spawn(|s| {
        s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.server.request_timeout = Duration::from_secs(600);
    })
    .await;
    let mut legit = Legit::connect(&app).await;
    // A message announced as 100 bytes, 10 sent.
    let mut half = vec![0, 0, 0, 0, 100];
    half.extend_from_slice(&[0x0a; 10]);

    // The client resets the stream midway…
    let client = h2_connect(app.addr).await.unwrap();
    let (_response, mut body) = open_call(&client, REGISTER, None).await;
    body.send_data(Bytes::from(half.clone()), false).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    body.send_reset(Reason::CANCEL);
    // …or drops the connection midway.
    let mut dropped = raw_handshake(app.addr).await;
    dropped
        .write_all(&frame(HEADERS, 0x4, 1, &register_header_block(app.addr)))
        .await
        .unwrap();
    dropped.write_all(&frame(0x0, 0, 1, &half)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(dropped);

    let mut cancelled = 0;
    for _ in 0..50 {
        cancelled = register_calls(&app, "CANCELLED").await;
        if cancelled >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cancelled, 2, "both abandoned calls count as CANCELLED");
    assert_eq!(register_calls(&app, "INTERNAL").await, 0);
    assert_eq!(register_calls(&app, "UNKNOWN").await, 0);
    legit.succeeds().await;
    app.stop().await;
}

#[tokio::test]
async fn connection_n_plus_one_is_closed_while_the_first_n_keep_answering() {
    const MAX: usize = 4;
    let app = spawn(|s| s.server.max_connections = Some(MAX)).await;
    let mut legit = Legit::connect(&app).await;
    legit.succeeds().await;
    let mut others = Vec::new();
    for _ in 1..MAX {
        let connection = h2_connect(app.addr).await.unwrap();
        assert_eq!(h2_health(&connection).await.unwrap(), "0");
        others.push(connection);
    }

    let mut surplus = TcpStream::connect(app.addr).await.unwrap();
    surplus.write_all(PREFACE).await.unwrap();
    assert!(
        closed_within(&mut surplus, MARGIN).await,
        "connection {} was not closed",
        MAX + 1
    );
    for connection in &others {
        assert_eq!(h2_health(connection).await.unwrap(), "0");
    }
    legit.succeeds().await;

    // A connection closed makes room for a new one.
    drop(others.pop());
    let mut admitted = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(connection) = h2_connect(app.addr).await
            && let Ok(status) = h2_health(&connection).await
        {
            admitted = Some(status);
            break;
        }
    }
    assert_eq!(admitted.as_deref(), Some("0"), "no room after a close");
    legit.succeeds().await;
    app.stop().await;
}

#[tokio::test]
async fn an_idle_connection_gets_a_goaway_and_an_open_call_keeps_it() {
    let app = spawn(|s| {
        s.server.idle_timeout = SHORT;
        s.server.request_timeout = Duration::from_secs(3);
    })
    .await;
    // A client calling more often than the idle timeout: never idle, its
    // connection is never sent away.
    let mut legit = Legit::connect(&app).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let busy_client = tokio::spawn(async move {
        let mut calls = 0;
        loop {
            legit.succeeds().await;
            calls += 1;
            tokio::select! {
                _ = &mut stopped => return calls,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });

    let mut idle = raw_handshake(app.addr).await;
    let goaway = tokio::time::timeout(SHORT + MARGIN, next_frame_of(&mut idle, &[GOAWAY])).await;
    assert!(
        matches!(goaway, Ok(Some((GOAWAY, _)))),
        "no GOAWAY: {goaway:?}"
    );

    // A call open longer than the idle timeout (its request never comes):
    // its answer comes before any GOAWAY.
    let mut busy = raw_handshake(app.addr).await;
    busy.write_all(&frame(HEADERS, 0x4, 1, &register_header_block(app.addr)))
        .await
        .unwrap();
    let first = tokio::time::timeout(
        Duration::from_secs(3) + MARGIN,
        next_frame_of(&mut busy, &[GOAWAY, HEADERS]),
    )
    .await;
    assert!(
        matches!(first, Ok(Some((HEADERS, 1)))),
        "expected the call's answer first: {first:?}"
    );
    let goaway = tokio::time::timeout(SHORT + MARGIN, next_frame_of(&mut busy, &[GOAWAY])).await;
    assert!(
        matches!(goaway, Ok(Some((GOAWAY, _)))),
        "no GOAWAY once idle: {goaway:?}"
    );
    let _ = stop.send(());
    let calls = busy_client.await.expect("a legitimate call failed");
    assert!(calls > 1);
    // hyper waits for the ack of the PING sent with the GOAWAY, which
    // these hand-driven clients never send: close them.
    drop((idle, busy));
    app.stop().await;
}

#[tokio::test]
async fn compressed_requests_are_refused_with_unimplemented() {
    let app = spawn(|_| {}).await;
    let client = h2_connect(app.addr).await.unwrap();
    let mut send = client.clone().ready().await.unwrap();
    let mut request = grpc_request(HEALTH_CHECK, None);
    request
        .headers_mut()
        .insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
    let (response, mut body) = send.send_request(request, false).unwrap();
    // The compressed flag set on an (empty) gzip member.
    let gzip_empty: [u8; 20] = [
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut message = vec![1, 0, 0, 0, 20];
    message.extend_from_slice(&gzip_empty);
    body.send_data(Bytes::from(message), true).unwrap();
    let status = tokio::time::timeout(MARGIN, grpc_status(response))
        .await
        .expect("no answer");
    assert_eq!(status.unwrap(), "12", "UNIMPLEMENTED");
    app.stop().await;
}
