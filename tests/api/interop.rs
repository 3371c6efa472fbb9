//! Our asymmetric tokens and JWKS against real Python clients: PyJWT's
//! `PyJWKClient` (EdDSA, ES256, RS256) and djangorestframework-simplejwt
//! 5.5.1 with `JWK_URL` (ES256, RS256). The clients come from
//! `tests/interop/requirements.txt`, installed once into a virtualenv under
//! `target/` (`python`). And a service token (issue 15) against a stock
//! simplejwt, which must refuse it as no user's.

use auth_service::config::JwtAlgorithm;

use crate::{
    helpers::{Backend, SECRET, TestApp},
    python::{interop_dir, python},
    service_grant::{Setup, with_secret},
};

#[tokio::test]
async fn python_clients_verify_our_tokens_with_our_jwks() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    for (algorithm, alg) in [
        (JwtAlgorithm::EdDsa, "EdDSA"),
        (JwtAlgorithm::Es256, "ES256"),
        (JwtAlgorithm::Rs256, "RS256"),
    ] {
        let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
            s.tokens.algorithm = algorithm;
            s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let (user, pair) = app.signed_up("pyjwt").await;
        let url = format!(
            "http://{}/.well-known/jwks.json",
            app.http_addr.expect("the HTTP listener")
        );
        let output = tokio::process::Command::new(python)
            .arg(interop_dir().join("check_token.py"))
            .args([url.as_str(), alg, pair.access.as_str()])
            .arg(user.id.to_string())
            .output()
            .await
            .expect("python");
        assert!(
            output.status.success(),
            "{alg}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        app.stop().await;
    }
}

/// A service token is no user's: a stock simplejwt `JWTAuthentication`
/// sharing our HS256 key refuses it with "Token has wrong type", as our
/// UserService does. The token comes from the real grant
/// (ObtainServiceToken with a client secret).
#[tokio::test]
async fn simplejwt_refuses_our_service_tokens() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let setup = Setup::new(&app).await;
    let account = setup.create("billing", &["auth.admin"]).await;
    let secret = setup.add_secret(account.id).await.secret;
    let token = with_secret(&app, "billing", &secret, &[])
        .await
        .unwrap()
        .access;
    let output = tokio::process::Command::new(python)
        .arg(interop_dir().join("check_service_token.py"))
        .args([SECRET, token.as_str()])
        .output()
        .await
        .expect("python");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}
