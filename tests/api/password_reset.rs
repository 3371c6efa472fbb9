//! IssuePasswordResetToken and ResetPassword: a token works once, within its
//! lifetime, for an active user; using it revokes every earlier token; a
//! wrong, used or expired token gets one answer.

use std::time::Duration;

use auth_service::pb;
use sea_orm::ConnectionTrait;
use tonic::{Code, Status};

use crate::{
    admin::issue_reset,
    helpers::{
        PASSWORD, TestApp, bearer, expect_code, expect_refused, field_violations, on_every_backend,
    },
};

const INVALID: (&str, &str) = (
    "The password reset token is invalid or has expired.",
    "reset_token_invalid",
);
const NEW_PASSWORD: &str = "a brand new passphrase";

async fn reset(app: &TestApp, token: &str, new_password: &str) -> Result<(), Status> {
    app.auth
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: new_password.into(),
        })
        .await
        .map(|_| ())
}

/// A staff account and a token for it, set up in the database.
async fn staff(app: &TestApp) -> String {
    let (user, pair) = app.signed_up("sally").await;
    app.db
        .execute_unprepared(&format!(
            "UPDATE users SET is_staff = TRUE WHERE id = {}",
            user.id
        ))
        .await
        .unwrap();
    pair.access
}

#[tokio::test]
async fn a_reset_token_works_once_and_revokes_every_earlier_token() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = staff(&app).await;
        let (bob, pair) = app.signed_up("bob").await;
        let issued = issue_reset(&app, &staff, bob.id).await.unwrap();
        // 256 bits, base64url; only a digest is stored.
        assert_eq!(issued.token.len(), 43, "{}", issued.token);
        let expires_at = issued.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
        assert!((3590..=3600).contains(&expires_at), "{expires_at}");
        let stored: Vec<String> = {
            let rows = app
                .db
                .query_all_raw(sea_orm::Statement::from_string(
                    app.db.get_database_backend(),
                    "SELECT token_hash FROM password_reset_tokens",
                ))
                .await
                .unwrap();
            rows.iter()
                .map(|row| row.try_get::<String>("", "token_hash").unwrap())
                .collect()
        };
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].contains(&issued.token));

        reset(&app, &issued.token, NEW_PASSWORD).await.unwrap();
        app.try_login("bob", NEW_PASSWORD).await.unwrap();
        app.try_login("bob", PASSWORD).await.unwrap_err();
        let changed = ("The user's password has been changed.", "password_changed");
        expect_refused(app.get_me(&pair.access).await, changed.0, changed.1);
        expect_code(app.refresh(&pair.refresh).await, Code::Unauthenticated);

        expect_refused(
            reset(&app, &issued.token, "yet another passphrase").await,
            INVALID.0,
            INVALID.1,
        );
        app.try_login("bob", NEW_PASSWORD).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// Wrong, expired, or of an inactive user: the same answer, and no change.
#[tokio::test]
async fn wrong_expired_and_inactive_users_tokens_are_refused_alike() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.accounts.password_reset_lifetime = Duration::from_secs(1);
        })
        .await;
        let staff = staff(&app).await;
        let bob = app.register("bob").await;
        let carol = app.register("carol").await;

        let wrong = "A".repeat(43);
        expect_refused(
            reset(&app, &wrong, NEW_PASSWORD).await,
            INVALID.0,
            INVALID.1,
        );

        let expiring = issue_reset(&app, &staff, bob.id).await.unwrap();
        let inactive = issue_reset(&app, &staff, carol.id).await.unwrap();
        app.set_active(carol.id, false).await;
        expect_refused(
            reset(&app, &inactive.token, NEW_PASSWORD).await,
            INVALID.0,
            INVALID.1,
        );
        // Whole seconds on MariaDB: past the second the token expires in.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        expect_refused(
            reset(&app, &expiring.token, NEW_PASSWORD).await,
            INVALID.0,
            INVALID.1,
        );
        app.try_login("bob", PASSWORD).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// The validators apply (against the token's user), and a refused password
/// does not use the token up. A blank field is a field violation.
#[tokio::test]
async fn the_password_validators_apply_and_a_refused_password_keeps_the_token() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = staff(&app).await;
        let bob = app.register("bobby_tables").await;
        let issued = issue_reset(&app, &staff, bob.id).await.unwrap();

        for weak in ["short", "bobby_tables1", "12345678901"] {
            let status = expect_code(
                reset(&app, &issued.token, weak).await,
                Code::InvalidArgument,
            );
            let violations = field_violations(&status);
            assert!(!violations.is_empty(), "{weak}: {status:?}");
            assert!(
                violations.iter().all(|v| v.0 == "new_password"),
                "{status:?}"
            );
        }
        let status = expect_code(reset(&app, " ", "").await, Code::InvalidArgument);
        let fields: Vec<String> = field_violations(&status).into_iter().map(|v| v.0).collect();
        assert_eq!(fields, ["token", "new_password"], "{status:?}");

        reset(&app, &issued.token, NEW_PASSWORD).await.unwrap();
        app.try_login("bobby_tables", NEW_PASSWORD).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// Any other password change ends a pending reset: ChangePassword here.
#[tokio::test]
async fn a_password_change_drops_pending_reset_tokens() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = staff(&app).await;
        let (bob, pair) = app.signed_up("bob").await;
        let issued = issue_reset(&app, &staff, bob.id).await.unwrap();
        let change = pb::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: NEW_PASSWORD.into(),
        };
        app.users
            .clone()
            .change_password(bearer(change, &pair.access))
            .await
            .unwrap();
        expect_refused(
            reset(&app, &issued.token, "yet another passphrase").await,
            INVALID.0,
            INVALID.1,
        );
        app.stop().await;
    })
    .await;
}

/// Resets racing with one token: exactly one succeeds, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resets_with_one_token_exactly_one_wins() {
    const TRIALS: usize = 3;
    const RACERS: usize = 4;
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let staff = staff(&app).await;
        let bob = app.register("bob").await;
        for trial in 0..TRIALS {
            let issued = issue_reset(&app, &staff, bob.id).await.unwrap();
            let racers = (0..RACERS).map(|i| {
                let (auth, token) = (app.auth.clone(), issued.token.clone());
                tokio::spawn(async move {
                    let request = pb::ResetPasswordRequest {
                        token,
                        new_password: format!("racing passphrase {trial} {i}"),
                    };
                    auth.clone().reset_password(request).await.map(|_| i)
                })
            });
            let results: Vec<Result<usize, Status>> = futures::future::join_all(racers)
                .await
                .into_iter()
                .map(|joined| joined.unwrap())
                .collect();
            let winners: Vec<usize> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            assert_eq!(winners.len(), 1, "trial {trial}: {results:?}");
            for result in results.into_iter().filter(Result::is_err) {
                expect_refused(result, INVALID.0, INVALID.1);
            }
            let password = format!("racing passphrase {trial} {}", winners[0]);
            app.try_login("bob", &password).await.unwrap();
        }
        app.stop().await;
    })
    .await;
}
