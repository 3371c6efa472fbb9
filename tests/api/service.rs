//! Whole-server behaviour: health, database outages, graceful shutdown.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Backend, PASSWORD, TestApp, expect_code, on_every_backend, register_request};

#[tokio::test]
async fn health_reports_every_service_serving() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "auth.v1.AuthService",
        "auth.v1.UserService",
        "auth.v1.AdminService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or_else(|s| panic!("{service}: {s:?}"));
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await;
    expect_code(unknown, Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_without_details() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("ida").await;
        // Closing the server's pool makes every query fail to get a connection.
        app.db.clone().close().await.unwrap();

        let status = expect_code(app.get_me(&pair.access).await, Code::Unavailable);
        assert_eq!(status.message(), "database unavailable, try again later");
        let status = expect_code(app.try_login("ida", PASSWORD).await, Code::Unavailable);
        assert!(
            !status.message().to_lowercase().contains("select"),
            "{}",
            status.message()
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_calls_in_flight_then_refuses_new_ones() {
    // Slow hashing (~10x the default work) keeps Register running while the
    // shutdown starts.
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| s.passwords.iterations = 20).await;
    app.register("warmup").await; // the connection is up before the race starts
    let mut auth = app.auth.clone();
    let in_flight = tokio::spawn(async move { auth.register(register_request("jack")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = app.addr;
    app.stop().await;

    let registered = in_flight.await.unwrap();
    assert!(
        registered.is_ok(),
        "the call in flight finished: {registered:?}"
    );
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}
