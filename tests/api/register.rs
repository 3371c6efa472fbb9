use auth_service::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, PASSWORD, TestApp, expect_code, on_every_backend};

#[tokio::test]
async fn register_returns_the_user_without_secrets() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let user = app
            .auth
            .clone()
            .register(pb::RegisterRequest {
                email: "Alice.Smith@EXAMPLE.com".into(),
                username: "alice".into(),
                password: PASSWORD.into(),
                avatar: Some("https://cdn.example.com/alice.png".into()),
            })
            .await
            .map(tonic::Response::into_inner)
            .unwrap();
        assert!(user.id > 0);
        // Django's normalize_email: the domain only is lower-cased.
        assert_eq!(user.email, "Alice.Smith@example.com");
        assert_eq!(user.username, "alice");
        assert_eq!(
            user.avatar.as_deref(),
            Some("https://cdn.example.com/alice.png")
        );
        assert!(user.is_active && !user.is_staff && !user.is_superuser);
        assert!(user.last_login.is_none());
        let joined = user.date_joined.map_or(0, |t| t.seconds);
        assert!(
            (chrono::Utc::now().timestamp() - joined).abs() < 60,
            "date_joined {joined}"
        );

        // Stored as an argon2id PHC string at the OWASP parameters, never in clear.
        let stored = app.stored_password_hash(user.id).await;
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains(PASSWORD));
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn register_lists_every_invalid_field() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let result = app
            .auth
            .clone()
            .register(pb::RegisterRequest {
                email: "not-an-email".into(),
                username: "bad name!".into(),
                password: "short".into(),
                avatar: Some("ftp://example.com/a.png".into()),
            })
            .await;
        let status = expect_code(result, Code::InvalidArgument);
        let details = status.get_error_details();
        let mut fields: Vec<String> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        fields.sort();
        assert_eq!(fields, ["avatar", "email", "password", "username"]);
        assert!(
            status.message().contains("too short"),
            "{}",
            status.message()
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn register_refuses_oversized_passwords_before_hashing() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let huge = "x".repeat(4097);
        let status = expect_code(
            app.try_register("bob", "bob@example.com", &huge).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().starts_with("password:"),
            "{}",
            status.message()
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn taken_username_and_email_are_already_exists_case_insensitively() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("Carol").await;

        let status = expect_code(
            app.try_register("cAROL", "other@example.com", PASSWORD)
                .await,
            Code::AlreadyExists,
        );
        assert!(
            status.message().contains("username"),
            "{}",
            status.message()
        );

        let status = expect_code(
            app.try_register("carol2", "CAROL@Example.COM", PASSWORD)
                .await,
            Code::AlreadyExists,
        );
        assert!(status.message().contains("email"), "{}", status.message());
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn usernames_are_nfkc_normalised() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        // "ﬁ" (U+FB01) is NFKC "fi"; full-width "Ｄ" is "D".
        let user = app
            .try_register("ﬁＤo", "fido@example.com", PASSWORD)
            .await
            .unwrap();
        assert_eq!(user.username, "fiDo");
        // Logging in with the plain spelling finds the same user.
        app.login("FIDO").await;
        // And MariaDB's accent-insensitive collation must not merge distinct names.
        app.try_register("José", "jose1@example.com", PASSWORD)
            .await
            .unwrap();
        app.try_register("Jose", "jose2@example.com", PASSWORD)
            .await
            .unwrap();
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_username_exactly_one_wins() {
    on_every_backend(async |backend: Backend| {
        let app = TestApp::spawn(&backend).await;
        // All pass the "is it taken?" check before any insert (hashing takes
        // tens of milliseconds), so the unique index has to decide.
        let attempts = (0..8).map(|i| {
            let app = &app;
            async move {
                app.try_register("racer", &format!("racer{i}@example.com"), PASSWORD)
                    .await
            }
        });
        let results = futures::future::join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for result in results.into_iter().filter_map(Result::err) {
            assert_eq!(result.code(), Code::AlreadyExists, "{result:?}");
            assert!(result.message().contains("username"), "{result:?}");
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn register_applies_djangos_password_validators() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let cases = [
            ("password", "This password is too common."),
            ("alice1234", "The password is too similar to the username."),
            ("58203948571", "This password is entirely numeric."),
            (
                "Xy7$",
                "This password is too short. It must contain at least 8 characters.",
            ),
        ];
        for (password, message) in cases {
            let status = expect_code(
                app.try_register("alice", "alice@example.com", password)
                    .await,
                Code::InvalidArgument,
            );
            assert_eq!(
                crate::helpers::field_violations(&status),
                [("password".to_owned(), message.to_owned())],
                "{password:?}"
            );
        }
        app.stop().await;
    })
    .await;
}
