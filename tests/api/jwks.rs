//! The published public keys (issue "Consumers verify tokens themselves").

use auth_service::pb;

use crate::helpers::{Backend, TestApp};

/// A shared secret is never published: with HS256 the set is empty, and
/// unauthenticated callers may ask for it.
#[tokio::test]
async fn with_hs256_the_key_set_is_empty() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let jwks = app
        .auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(jwks.keys.is_empty(), "{jwks:?}");
    app.stop().await;
}
