use tonic::Code;

use crate::helpers::{
    HS256_HEADER, SECRET, TestApp, claims, expect_blacklisted, expect_code, forge,
    on_every_backend, simplejwt_claims,
};

#[tokio::test]
async fn refresh_without_rotation_returns_a_new_access_token_only() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, pair) = app.signed_up("judy").await;
        let refreshed = app.refresh(&pair.refresh).await.unwrap();
        assert!(
            refreshed.refresh.is_empty(),
            "rotation is off: no new refresh token"
        );
        let access = claims(&refreshed.access);
        assert_eq!(access["token_type"], "access");
        assert_eq!(access["user_id"], user.id.to_string());
        assert_ne!(access["jti"], claims(&pair.access)["jti"]);
        assert_ne!(access["jti"], claims(&pair.refresh)["jti"]);
        app.get_me(&refreshed.access).await.unwrap();
        // Without rotation the refresh token stays usable.
        app.refresh(&pair.refresh).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rotation_issues_a_new_refresh_token_and_blacklists_the_old() {
    on_every_backend(async |backend| {
        let app =
            TestApp::spawn_with(&backend, |s| s.tokens.policy.rotate_refresh_tokens = true).await;
        let (_, pair) = app.signed_up("ken").await;
        let rotated = app.refresh(&pair.refresh).await.unwrap();
        assert_eq!(claims(&rotated.refresh)["token_type"], "refresh");
        assert_ne!(
            claims(&rotated.refresh)["jti"],
            claims(&pair.refresh)["jti"]
        );

        // The successor works, and rotates again.
        let again = app.refresh(&rotated.refresh).await.unwrap();
        assert!(!again.refresh.is_empty());
        // The rotated-out token is refused (and, being reused, revokes the
        // family: see hardening::reusing_a_rotated_refresh_token_…).
        expect_blacklisted(app.refresh(&pair.refresh).await);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rotation_without_blacklisting_keeps_the_old_token_valid() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.tokens.policy.rotate_refresh_tokens = true;
            s.tokens.policy.blacklist_after_rotation = false;
        })
        .await;
        let (_, pair) = app.signed_up("leo").await;
        let rotated = app.refresh(&pair.refresh).await.unwrap();
        assert!(!rotated.refresh.is_empty());
        app.refresh(&pair.refresh).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_of_one_token_exactly_one_wins() {
    on_every_backend(async |backend| {
        let app =
            TestApp::spawn_with(&backend, |s| s.tokens.policy.rotate_refresh_tokens = true).await;
        let (_, pair) = app.signed_up("mallory").await;
        let attempts = (0..6).map(|_| app.refresh(&pair.refresh));
        let results = futures::future::join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for status in results.into_iter().filter_map(Result::err) {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_access_token_is_not_a_refresh_token() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("nina").await;
        let status = expect_code(app.refresh(&pair.access).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token has wrong type");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deactivated_or_deleted_users_cannot_refresh() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (olive, olive_tokens) = app.signed_up("olive").await;
        let (peggy, peggy_tokens) = app.signed_up("peggy").await;
        app.set_active(olive.id, false).await;
        app.delete_user(peggy.id).await;
        for refresh in [&olive_tokens.refresh, &peggy_tokens.refresh] {
            let status = expect_code(app.refresh(refresh).await, Code::Unauthenticated);
            assert_eq!(
                status.message(),
                "No active account found for the given token."
            );
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_and_forged_refresh_tokens_are_refused() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, _) = app.signed_up("quinn").await;

        let expired = forge(
            HS256_HEADER,
            &simplejwt_claims("refresh", user.id, -10),
            SECRET,
        );
        let status = expect_code(app.refresh(&expired).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token is expired");

        let wrong_key = forge(
            HS256_HEADER,
            &simplejwt_claims("refresh", user.id, 600),
            "another key",
        );
        let status = expect_code(app.refresh(&wrong_key).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token is invalid");

        // A refresh token from a Django service sharing the key is accepted.
        let django = forge(
            HS256_HEADER,
            &simplejwt_claims("refresh", user.id, 600),
            SECRET,
        );
        app.refresh(&django).await.unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_blank_refresh_token_is_a_missing_field_and_a_malformed_one_a_bad_token() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        for blank in ["", " \t "] {
            crate::helpers::expect_blank_field(app.refresh(blank).await, "refresh");
        }
        let status = expect_code(app.refresh("not.a.token").await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token is invalid");
        app.stop().await;
    })
    .await;
}
