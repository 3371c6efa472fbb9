use tonic::Code;

use crate::helpers::{PASSWORD, TestApp, claims, expect_code, header, on_every_backend};

const INVALID_CREDENTIALS: &str = "No active account found with the given credentials";

#[tokio::test]
async fn login_issues_simplejwt_token_pair() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let user = app.register("dave").await;
        let pair = app.login("dave").await;

        for token in [&pair.access, &pair.refresh] {
            let header = header(token);
            assert_eq!(header["alg"], "HS256");
            assert_eq!(header["typ"], "JWT");
        }
        let access = claims(&pair.access);
        let refresh = claims(&pair.refresh);
        assert_eq!(access["token_type"], "access");
        assert_eq!(refresh["token_type"], "refresh");
        // simplejwt 5.5.1 writes the user id as a string.
        assert_eq!(access["user_id"], user.id.to_string());
        assert_eq!(refresh["user_id"], user.id.to_string());
        let seconds = |c: &serde_json::Value, k: &str| c[k].as_i64().unwrap_or(-1);
        assert_eq!(seconds(&access, "exp") - seconds(&access, "iat"), 86_400);
        assert_eq!(
            seconds(&refresh, "exp") - seconds(&refresh, "iat"),
            30 * 86_400
        );
        for c in [&access, &refresh] {
            let jti = c["jti"].as_str().unwrap_or_default();
            assert_eq!(jti.len(), 32, "{jti}");
            assert!(
                jti.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{jti}"
            );
        }
        assert_ne!(access["jti"], refresh["jti"]);
        let keys: Vec<&str> = access
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut keys = keys;
        keys.sort_unstable();
        // simplejwt's claims, plus our token generation, which simplejwt
        // ignores (tests/api/interop.rs has it verify our tokens).
        assert_eq!(keys, ["exp", "gen", "iat", "jti", "token_type", "user_id"]);
        assert_eq!(access["gen"], 0);

        let me = app.get_me(&pair.access).await.unwrap();
        assert_eq!(me.id, user.id);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn login_matches_usernames_case_insensitively() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let user = app.register("Erin").await;
        let pair = app.login("eRIN").await;
        assert_eq!(claims(&pair.access)["user_id"], user.id.to_string());
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_inactive_user_look_the_same() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let frank = app.register("frank").await;
        app.register("grace").await;
        app.set_active(frank.id, false).await;

        let wrong_password = expect_code(
            app.try_login("grace", "not the password").await,
            Code::Unauthenticated,
        );
        let unknown = expect_code(
            app.try_login("nobody", PASSWORD).await,
            Code::Unauthenticated,
        );
        let inactive = expect_code(
            app.try_login("frank", PASSWORD).await,
            Code::Unauthenticated,
        );
        let invalid_name = expect_code(
            app.try_login("not a/name", PASSWORD).await,
            Code::Unauthenticated,
        );
        for status in [wrong_password, unknown, inactive, invalid_name] {
            assert_eq!(status.message(), INVALID_CREDENTIALS);
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn blank_credentials_are_invalid_argument() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let status = expect_code(app.try_login("", "").await, Code::InvalidArgument);
        assert!(status.message().contains("username") && status.message().contains("password"));
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn last_login_is_recorded_only_when_configured() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("heidi").await;
        let me = app.get_me(&pair.access).await.unwrap();
        assert!(
            me.last_login.is_none(),
            "UPDATE_LAST_LOGIN is off by default"
        );
        app.stop().await;

        let app = TestApp::spawn_with(&backend, |s| s.tokens.policy.update_last_login = true).await;
        let (_, pair) = app.signed_up("ivan").await;
        let me = app.get_me(&pair.access).await.unwrap();
        let last_login = me.last_login.map_or(0, |t| t.seconds);
        assert!(
            (chrono::Utc::now().timestamp() - last_login).abs() < 60,
            "last_login {last_login}"
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_credentials_are_refused_before_any_work() {
    let app = TestApp::spawn(&crate::helpers::Backend::Sqlite).await;
    let status = expect_code(
        app.try_login(&"a".repeat(151), PASSWORD).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().starts_with("username:"),
        "{}",
        status.message()
    );
    let status = expect_code(
        app.try_login("someone", &"p".repeat(4097)).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().starts_with("password:"),
        "{}",
        status.message()
    );
    app.stop().await;
}
