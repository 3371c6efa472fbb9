//! Failed-login throttling: per username by default, per client address
//! when configured; shared through the database, race-free.

use std::time::Duration;

use tonic::{Code, Request};
use tonic_types::StatusExt;

use auth_service::pb;

use crate::helpers::{PASSWORD, TestApp, expect_code, on_every_backend};

const THROTTLED: &str = "Too many failed login attempts; try again later";

#[tokio::test]
async fn a_username_is_locked_after_five_failures_and_others_are_not() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("locked").await;
        app.register("neighbour").await;
        for _ in 0..5 {
            expect_code(
                app.try_login("locked", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        // Even the right password is refused now, without being checked.
        let status = expect_code(
            app.try_login("LOCKED", PASSWORD).await,
            Code::ResourceExhausted,
        );
        assert_eq!(status.message(), THROTTLED);
        let delay = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        let delay = delay.unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
        assert!(
            delay > Duration::from_secs(14 * 60) && delay <= Duration::from_secs(15 * 60),
            "{delay:?}"
        );

        // Unknown names are counted too (no hint about which names exist).
        for _ in 0..5 {
            expect_code(
                app.try_login("ghost", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        expect_code(
            app.try_login("ghost", "wrong password").await,
            Code::ResourceExhausted,
        );

        app.login("neighbour").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_successful_login_resets_the_count() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("forgetful").await;
        for _ in 0..4 {
            expect_code(
                app.try_login("forgetful", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        app.login("forgetful").await;
        for _ in 0..4 {
            expect_code(
                app.try_login("forgetful", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        app.login("forgetful").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_window_ends_and_counters_are_shared_by_replicas() {
    on_every_backend(async |backend| {
        let settings = |s: &mut auth_service::config::Settings| {
            s.throttle.failure_limit = 2;
            s.throttle.window = Duration::from_secs(2);
        };
        let app = TestApp::spawn_with(&backend, settings).await;
        app.register("patient").await;
        for _ in 0..2 {
            expect_code(
                app.try_login("patient", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        expect_code(
            app.try_login("patient", PASSWORD).await,
            Code::ResourceExhausted,
        );
        // Another replica on the same database sees the same counter.
        let replica = TestApp::spawn_on_with(app.database_url(), settings).await;
        expect_code(
            replica.try_login("patient", PASSWORD).await,
            Code::ResourceExhausted,
        );
        replica.stop().await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        app.login("patient").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_attempts_cannot_slip_past_the_limit() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("raced").await;
        let attempts = (0..20).map(|_| app.try_login("raced", "wrong password"));
        let results = futures::future::join_all(attempts).await;
        let checked = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
            .count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
            .count();
        // Exactly the limit got a password check; none succeeded or failed otherwise.
        assert_eq!((checked, refused), (5, 15), "{results:?}");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_address_limit_is_opt_in_and_keys_on_the_trusted_header() {
    on_every_backend(async |backend| {
        let login_from = |address: &'static str, username: &'static str| {
            let mut request = Request::new(pb::ObtainTokenPairRequest {
                username: username.into(),
                password: "wrong password".into(),
            });
            let value = address.parse().unwrap_or_else(|e| panic!("{e}"));
            request.metadata_mut().insert("x-forwarded-for", value);
            request
        };
        // Off by default: many names from one address are fine (a gateway).
        let app = TestApp::spawn(&backend).await;
        for i in 0..8 {
            let username: &'static str = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"][i];
            let result = app
                .auth
                .clone()
                .obtain_token_pair(login_from("203.0.113.7", username))
                .await;
            expect_code(result, Code::Unauthenticated);
        }
        app.stop().await;

        let app = TestApp::spawn_with(&backend, |s| {
            s.throttle.address_failure_limit = 3;
            s.throttle.address_header = Some("x-forwarded-for".into());
        })
        .await;
        for username in ["b1", "b2", "b3"] {
            let result = app
                .auth
                .clone()
                .obtain_token_pair(login_from("203.0.113.7, 10.0.0.1", username))
                .await;
            expect_code(result, Code::Unauthenticated);
        }
        let result = app
            .auth
            .clone()
            .obtain_token_pair(login_from("203.0.113.7", "b4"))
            .await;
        expect_code(result, Code::ResourceExhausted);
        // Another end user behind the same gateway is not affected.
        let result = app
            .auth
            .clone()
            .obtain_token_pair(login_from("198.51.100.9", "b4"))
            .await;
        expect_code(result, Code::Unauthenticated);
        app.stop().await;
    })
    .await;
}
