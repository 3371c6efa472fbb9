//! Our asymmetric tokens and JWKS against real Python clients: PyJWT's
//! `PyJWKClient` (EdDSA, ES256, RS256) and djangorestframework-simplejwt
//! 5.5.1 with `JWK_URL` (ES256, RS256). The clients come from
//! `tests/interop/requirements.txt`, installed once into a virtualenv under
//! `target/` (`python`).

use auth_service::config::JwtAlgorithm;

use crate::{
    helpers::{Backend, TestApp},
    python::{interop_dir, python},
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
