//! ChangePassword and LogoutAll: every token issued to the user before the
//! call is refused (access tokens included), exactly — a token from the
//! same second but before the call is refused, the pair the call hands out
//! works — at once on this replica and within the cache TTL on another.

use std::time::Duration;

use auth_service::pb;
use tonic::{Code, Status};

use crate::helpers::{
    PASSWORD, SECRET, TestApp, bearer, claims, expect_code, expect_refused, field_violations,
    forge, on_every_backend, simplejwt_claims,
};

const NEW_PASSWORD: &str = "a brand new passphrase";
const PASSWORD_CHANGED: (&str, &str) =
    ("The user's password has been changed.", "password_changed");
const TOKENS_REVOKED: (&str, &str) = (
    "The user's tokens have been revoked; log in again.",
    "token_revoked",
);

impl TestApp {
    async fn change_password(
        &self,
        access: &str,
        current: &str,
        new: &str,
    ) -> Result<pb::TokenPair, Status> {
        let request = pb::ChangePasswordRequest {
            current_password: current.into(),
            new_password: new.into(),
        };
        self.users
            .clone()
            .change_password(bearer(request, access))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn logout_all(&self, access: &str) -> Result<pb::LogoutAllResponse, Status> {
        self.users
            .clone()
            .logout_all(bearer(pb::LogoutAllRequest {}, access))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Every way the tokens of `pair` can be used is refused with `why`.
async fn assert_revoked(app: &TestApp, pair: &pb::TokenPair, (message, reason): (&str, &str)) {
    expect_refused(app.get_me(&pair.access).await, message, reason);
    expect_refused(app.verify(&pair.access).await, message, reason);
    expect_refused(app.verify(&pair.refresh).await, message, reason);
    expect_refused(app.refresh(&pair.refresh).await, message, reason);
}

#[tokio::test]
async fn change_password_revokes_every_earlier_token_and_returns_a_working_pair() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, laptop) = app.signed_up("petra").await;
        let phone = app.login("petra").await;

        let fresh = app
            .change_password(&laptop.access, PASSWORD, NEW_PASSWORD)
            .await
            .unwrap();

        for old in [&laptop, &phone] {
            assert_revoked(&app, old, PASSWORD_CHANGED).await;
        }
        // Every refresh token of the user is on the blacklist too.
        let unlisted = app
            .count(&format!(
                "outstanding_tokens o WHERE o.user_id = {} AND NOT EXISTS \
                 (SELECT 1 FROM blacklisted_tokens b WHERE b.token_id = o.id)",
                user.id
            ))
            .await;
        assert_eq!(unlisted, 1, "only the new pair's refresh token is usable");

        assert_eq!(app.get_me(&fresh.access).await.unwrap().id, user.id);
        app.verify(&fresh.refresh).await.unwrap();
        let renewed = app.refresh(&fresh.refresh).await.unwrap();
        app.get_me(&renewed.access).await.unwrap();

        expect_code(
            app.try_login("petra", PASSWORD).await,
            Code::Unauthenticated,
        );
        app.try_login("petra", NEW_PASSWORD).await.unwrap();
        assert!(
            app.stored_password_hash(user.id)
                .await
                .starts_with("$argon2id$")
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn change_password_refusals_change_nothing() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("quentin").await;

        let wrong = app
            .change_password(&pair.access, "not my password", NEW_PASSWORD)
            .await;
        expect_refused(
            wrong,
            "Your old password was entered incorrectly. Please enter it again.",
            "password_incorrect",
        );

        // Django's validators, against the user's own name and email.
        for (new, rule) in [
            ("quentin1", "too similar to the username"),
            ("short", "too short"),
            ("password123", "too common"),
            ("81726354918273", "entirely numeric"),
        ] {
            let status = expect_code(
                app.change_password(&pair.access, PASSWORD, new).await,
                Code::InvalidArgument,
            );
            let violations = field_violations(&status);
            assert!(
                violations
                    .iter()
                    .any(|(field, text)| field == "new_password" && text.contains(rule)),
                "{new}: {violations:?}"
            );
        }
        let status = expect_code(
            app.change_password(&pair.access, " ", "").await,
            Code::InvalidArgument,
        );
        let fields: Vec<String> = field_violations(&status).into_iter().map(|v| v.0).collect();
        assert_eq!(fields, ["current_password", "new_password"]);

        // Nothing was revoked and the password is unchanged.
        app.get_me(&pair.access).await.unwrap();
        app.refresh(&pair.refresh).await.unwrap();
        app.try_login("quentin", PASSWORD).await.unwrap();

        // Without a token there is nobody whose password to change.
        let request = pb::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: NEW_PASSWORD.into(),
        };
        let anonymous = app.users.clone().change_password(request).await;
        expect_code(anonymous, Code::Unauthenticated);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_current_passwords_count_against_the_login_throttle() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| s.throttle.failure_limit = 3).await;
        let (_, pair) = app.signed_up("rosa").await;
        for _ in 0..3 {
            let wrong = app
                .change_password(&pair.access, "guess", NEW_PASSWORD)
                .await;
            expect_code(wrong, Code::Unauthenticated);
        }
        // The fourth guess, and a login by name, are both throttled now.
        let throttled = app
            .change_password(&pair.access, PASSWORD, NEW_PASSWORD)
            .await;
        expect_code(throttled, Code::ResourceExhausted);
        expect_code(
            app.try_login("rosa", PASSWORD).await,
            Code::ResourceExhausted,
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn logout_all_revokes_every_token_of_the_user_and_nobody_elses() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, laptop) = app.signed_up("sven").await;
        let phone = app.login("sven").await;
        let (_, other) = app.signed_up("tina").await;

        app.logout_all(&phone.access).await.unwrap();

        for old in [&laptop, &phone] {
            assert_revoked(&app, old, TOKENS_REVOKED).await;
        }
        // A revoked token cannot revoke again.
        expect_refused(
            app.logout_all(&phone.access).await,
            TOKENS_REVOKED.0,
            TOKENS_REVOKED.1,
        );
        app.get_me(&other.access).await.unwrap();
        app.refresh(&other.refresh).await.unwrap();

        // Logging in again starts a new, working session.
        let again = app.login("sven").await;
        app.get_me(&again.access).await.unwrap();
        app.refresh(&again.refresh).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// The edge `iat` alone cannot decide: tokens issued in the same second as
/// the revocation, before it (refused) and by it or after it (accepted).
#[tokio::test]
async fn revocation_is_exact_within_its_second() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("ulla").await;
        let mut same_second = 0;
        for _ in 0..40 {
            let before = app.login("ulla").await;
            let issued_by_it = app
                .change_password(&before.access, PASSWORD, NEW_PASSWORD)
                .await
                .unwrap();
            let after = app.try_login("ulla", NEW_PASSWORD).await.unwrap();
            assert_revoked(&app, &before, PASSWORD_CHANGED).await;
            for pair in [&issued_by_it, &after] {
                app.get_me(&pair.access).await.unwrap();
                app.verify(&pair.refresh).await.unwrap();
            }
            // Back to the original password, for the next round.
            app.change_password(&after.access, NEW_PASSWORD, PASSWORD)
                .await
                .unwrap();
            let iat = |pair: &pb::TokenPair| claims(&pair.access)["iat"].as_i64();
            if iat(&before) == iat(&issued_by_it) {
                same_second += 1;
                if same_second == 3 {
                    break;
                }
            }
        }
        assert!(same_second > 0, "no round fell within one second");
        app.stop().await;
    })
    .await;
}

/// A token from a Django peer sharing the key has no generation: it is
/// judged by its `iat`, refused up to the revocation's second.
#[tokio::test]
async fn tokens_without_a_generation_are_revoked_by_their_issue_time() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, pair) = app.signed_up("viktor").await;
        let django = |age: i64| {
            let mut claims = simplejwt_claims("access", user.id, 300);
            let iat = claims["iat"].as_i64().unwrap() - age;
            claims["iat"] = iat.into();
            forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, SECRET)
        };
        let earlier = django(5);
        app.get_me(&earlier).await.unwrap();

        app.logout_all(&pair.access).await.unwrap();
        expect_refused(
            app.get_me(&earlier).await,
            TOKENS_REVOKED.0,
            TOKENS_REVOKED.1,
        );
        // Issued in a later second than the revocation: accepted.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        app.get_me(&django(0)).await.unwrap();
        app.stop().await;
    })
    .await;
}

/// Another replica caches the user for up to AUTH_CACHE_TTL: the revocation
/// reaches it within that, as documented.
#[tokio::test]
async fn another_replica_refuses_revoked_tokens_within_the_cache_ttl() {
    on_every_backend(async |backend| {
        let ttl = Duration::from_millis(500);
        let app = TestApp::spawn_with(&backend, |s| s.cache.ttl = ttl).await;
        let replica = TestApp::spawn_on_with(app.database_url(), |s| s.cache.ttl = ttl).await;
        let (_, pair) = app.signed_up("wanda").await;
        // Cached on the replica.
        replica.get_me(&pair.access).await.unwrap();

        app.logout_all(&pair.access).await.unwrap();
        expect_refused(
            app.get_me(&pair.access).await,
            TOKENS_REVOKED.0,
            TOKENS_REVOKED.1,
        );
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert_revoked(&replica, &pair, TOKENS_REVOKED).await;
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

/// A login that rehashes an outdated hash, racing a password change: the
/// rehash of the old password must never land over the new one (it was read
/// before the change, and written after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_rehashing_the_old_password_cannot_undo_a_password_change() {
    const TRIALS: usize = 8;
    on_every_backend(async |backend| {
        // Users whose hashes are weaker than the server's configuration,
        // with a session each (logged in where the hash is not outdated).
        let legacy = TestApp::spawn_with(&backend, |s| {
            s.passwords.memory_kib = 1024;
            s.passwords.iterations = 1;
        })
        .await;
        let mut sessions = Vec::new();
        for trial in 0..TRIALS {
            let name = format!("racer{trial}");
            let (_, pair) = legacy.signed_up(&name).await;
            sessions.push((name, pair));
        }
        let app = TestApp::spawn_on(legacy.database_url()).await;
        let mut changed = 0;
        for (name, pair) in &sessions {
            let (login, change) = tokio::join!(
                app.try_login(name, PASSWORD),
                app.change_password(&pair.access, PASSWORD, NEW_PASSWORD),
            );
            let _ = login;
            if change.is_ok() {
                changed += 1;
                expect_code(app.try_login(name, PASSWORD).await, Code::Unauthenticated);
                app.try_login(name, NEW_PASSWORD).await.unwrap();
            }
        }
        assert!(changed > 0, "no password change went through");
        app.stop().await;
        legacy.stop().await;
    })
    .await;
}
