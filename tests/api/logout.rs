use std::time::Duration;

use auth_service::{config::Settings, persistence::token_blacklist};
use tonic::Code;

use crate::helpers::{TestApp, expect_blacklisted, expect_code, on_every_backend};

#[tokio::test]
async fn logout_blacklists_the_refresh_token() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("uma").await;
        app.logout(&pair.refresh).await.unwrap();

        expect_blacklisted(app.refresh(&pair.refresh).await);
        expect_blacklisted(app.logout(&pair.refresh).await);

        // Other sessions of the same user are untouched.
        let second = app.login("uma").await;
        app.refresh(&second.refresh).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn logout_survives_a_restart() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("victor").await;
        app.logout(&pair.refresh).await.unwrap();
        // A second server on the same database: another replica, or a restart.
        let url = app.database_url().to_owned();
        let replica = TestApp::spawn_on(&url).await;
        expect_blacklisted(replica.refresh(&pair.refresh).await);
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn logout_takes_refresh_tokens_only() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("wendy").await;
        let status = expect_code(app.logout(&pair.access).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token has wrong type");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_blank_refresh_token_is_a_missing_field() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        for blank in ["", "  "] {
            crate::helpers::expect_blank_field(app.logout(blank).await, "refresh");
        }
        let status = expect_code(app.logout("garbage").await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token is invalid");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn flushing_deletes_expired_tokens_and_their_blacklist_rows() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, first) = app.signed_up("xavier").await;
        app.login("xavier").await;
        app.logout(&first.refresh).await.unwrap();

        let now = chrono::Utc::now().naive_utc();
        let deleted = token_blacklist::flush_expired(&app.db, now).await.unwrap();
        assert_eq!(deleted, 0, "nothing has expired yet");

        // 31 days on, both refresh tokens (30-day lifetime) have expired.
        let later = now + chrono::Duration::days(31);
        let deleted = token_blacklist::flush_expired(&app.db, later)
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        let rows = app.count("blacklisted_tokens").await;
        assert_eq!(rows, 0, "blacklist rows go with their tokens");
        app.stop().await;
    })
    .await;
}

/// Refresh tokens found not blacklisted are cached (`AUTH_CACHE_TTL`): a
/// Logout on this replica is seen at once even with a long TTL, one on
/// another replica within the TTL.
#[tokio::test]
async fn a_logout_is_seen_at_once_here_and_within_the_cache_ttl_elsewhere() {
    on_every_backend(async |backend| {
        let hour = |s: &mut Settings| s.cache.ttl = Duration::from_secs(3600);
        let app = TestApp::spawn_with(&backend, hour).await;
        let (_, pair) = app.signed_up("yara").await;
        // Cached as not blacklisted, by RefreshToken and by VerifyToken.
        app.refresh(&pair.refresh).await.unwrap();
        app.verify(&pair.refresh).await.unwrap();
        app.logout(&pair.refresh).await.unwrap();
        expect_blacklisted(app.refresh(&pair.refresh).await);
        expect_code(app.verify(&pair.refresh).await, Code::Unauthenticated);
        app.stop().await;

        let short = |s: &mut Settings| s.cache.ttl = Duration::from_millis(300);
        let app = TestApp::spawn_with(&backend, short).await;
        let replica = TestApp::spawn_on_with(app.database_url(), short).await;
        let (_, pair) = app.signed_up("zeke").await;
        replica.refresh(&pair.refresh).await.unwrap();
        app.logout(&pair.refresh).await.unwrap();
        tokio::time::sleep(replica.cache_ttl).await;
        expect_blacklisted(replica.refresh(&pair.refresh).await);
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

/// With rotation, reuse detection needs every replica to see a rotated-out
/// token at once, so nothing is cached whatever the TTL.
#[tokio::test]
async fn with_rotation_a_rotated_out_token_is_refused_at_once_on_every_replica() {
    on_every_backend(async |backend| {
        let rotating = |s: &mut Settings| {
            s.tokens.policy.rotate_refresh_tokens = true;
            s.cache.ttl = Duration::from_secs(3600);
        };
        let app = TestApp::spawn_with(&backend, rotating).await;
        let replica = TestApp::spawn_on_with(app.database_url(), rotating).await;
        let (_, pair) = app.signed_up("abe").await;
        // The replica checks the token (not blacklisted yet)...
        replica.verify(&pair.refresh).await.unwrap();
        // ...then this server rotates it out.
        app.refresh(&pair.refresh).await.unwrap();
        expect_blacklisted(replica.refresh(&pair.refresh).await);
        replica.stop().await;
        app.stop().await;
    })
    .await;
}
