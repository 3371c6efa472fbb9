use tonic::Code;

use crate::helpers::{
    TestApp, claims, expect_blacklisted, expect_blank_field, expect_code, on_every_backend,
};

#[tokio::test]
async fn verify_describes_access_and_refresh_tokens() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, pair) = app.signed_up("rupert").await;
        for (token, kind) in [(&pair.access, "access"), (&pair.refresh, "refresh")] {
            let answer = app.verify(token).await.unwrap();
            assert_eq!(answer.token_type, kind);
            assert_eq!(answer.user_id, user.id);
            assert_eq!(
                answer.expires_at.map(|t| t.seconds),
                claims(token)["exp"].as_i64()
            );
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn verify_refuses_blacklisted_garbage_and_orphaned_tokens() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("sybil").await;
        app.logout(&pair.refresh).await.unwrap();
        expect_blacklisted(app.verify(&pair.refresh).await);
        // Logout does not revoke access tokens (as simplejwt).
        app.verify(&pair.access).await.unwrap();

        expect_code(app.verify("garbage").await, Code::Unauthenticated);
        // A missing token is a bad request naming the field (simplejwt: 400).
        for blank in ["", "   "] {
            expect_blank_field(app.verify(blank).await, "token");
        }

        let (trent, trent_tokens) = app.signed_up("trent").await;
        app.delete_user(trent.id).await;
        let status = expect_code(
            app.verify(&trent_tokens.access).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "User not found");
        app.stop().await;
    })
    .await;
}
