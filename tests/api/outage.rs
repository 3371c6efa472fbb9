//! Database outages, through a TCP proxy this test controls: calls fail fast
//! with UNAVAILABLE, health turns NOT_SERVING, and the service recovers by
//! itself when the database comes back.
//!
//! SQLite cannot be cut off, so these run only against a database server:
//! they are `#[ignore]`d in a plain `cargo test` and `.ci/run` runs them
//! with `--ignored` against PostgreSQL and MariaDB.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::Mutex,
    task::JoinHandle,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Backend, TestApp, TestDatabase, expect_code};

/// Forwards TCP to `upstream` until cut; while cut, it drops every live
/// connection and accepts new ones only to close them at once.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio::spawn({
            let (up, connections) = (Arc::clone(&up), Arc::clone(&connections));
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().await.push(relay);
                }
            }
        });
        Proxy {
            addr,
            up,
            connections,
            acceptor,
        }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for relay in self.connections.lock().await.drain(..) {
            relay.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn health_of(app: &TestApp) -> Option<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .ok()?
        .connect_lazy();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "auth.v1.UserService".into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

async fn wait_for_health(app: &TestApp, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_of(app).await != Some(wanted as i32) {
        assert!(Instant::now() < deadline, "health never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn outage_and_recovery(backend: Backend) {
    let database = TestDatabase::create(&backend).await;
    let mut url = url::Url::parse(&database.url).unwrap();
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port()))
        .expect("cannot set port");
    let app = TestApp::spawn_on_with(url.as_str(), |s| {
        s.database.timeout = Duration::from_secs(1)
    })
    .await;
    let (_, pair) = app.signed_up("outage").await;
    wait_for_health(&app, ServingStatus::Serving).await;

    proxy.cut().await;
    let started = Instant::now();
    let status = expect_code(app.get_me(&pair.access).await, Code::Unavailable);
    assert_eq!(status.message(), "database unavailable, try again later");
    // Bounded by the acquire timeout (1 s here), not hanging on a dead socket.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    expect_code(
        app.try_login("outage", crate::helpers::PASSWORD).await,
        Code::Unavailable,
    );
    wait_for_health(&app, ServingStatus::NotServing).await;

    proxy.restore();
    wait_for_health(&app, ServingStatus::Serving).await;
    let me = app.get_me(&pair.access).await.expect("not recovered");
    assert_eq!(me.username, "outage");
    app.login("outage").await;
    app.stop().await;
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs AUTH_TEST_POSTGRES_URL; .ci/run runs it"]
async fn postgres_outage_is_unavailable_then_recovers() {
    let url = std::env::var("AUTH_TEST_POSTGRES_URL")
        .expect("set AUTH_TEST_POSTGRES_URL to run this test");
    outage_and_recovery(Backend::Postgres(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs AUTH_TEST_MYSQL_URL; .ci/run runs it"]
async fn mariadb_outage_is_unavailable_then_recovers() {
    let url =
        std::env::var("AUTH_TEST_MYSQL_URL").expect("set AUTH_TEST_MYSQL_URL to run this test");
    outage_and_recovery(Backend::MySql(url)).await;
}
