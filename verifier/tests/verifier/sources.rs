//! The key cache and its sources: refreshes, rotation, outages, and the
//! refetch rate limit.

use std::time::Duration;

use auth_verifier::{Algorithm, Verifier, VerifyError};
use jsonwebtoken::Header;
use tokio::time::{Instant, sleep};

use crate::support::{
    Guard, JwksServer, TestKey, access_claims, assert_refused, call_with_token, jwks, serve_orders,
};

/// Waits (at most 5 s) until the server has seen `count` requests.
async fn wait_for_requests(source: &JwksServer, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.requests() < count {
        assert!(
            Instant::now() < deadline,
            "only {} requests",
            source.requests()
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn http_source_refreshes_at_half_the_cache_control_max_age() {
    let a = TestKey::ed25519_a();
    let source = JwksServer::http(jwks(&[&a]), Some(1)).await;
    let verifier = Verifier::builder()
        .jwks_url(source.url())
        .min_refetch_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert_eq!(source.requests(), 1);
    let started = Instant::now();
    wait_for_requests(&source, 3).await;
    // At 0.5 s and 1 s: half the max-age, not the whole (which would be 2 s).
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1900), "{elapsed:?}");
    assert!(verifier.verify(&a.access(1)).await.is_ok());
}

#[tokio::test]
async fn grpc_source_refreshes_at_the_configured_interval() {
    let a = TestKey::p256();
    let source = JwksServer::grpc(jwks(&[&a])).await;
    let verifier = Verifier::builder()
        .jwks_grpc(source.channel().await)
        .algorithms([Algorithm::ES256])
        .refresh_interval(Duration::from_millis(200))
        .min_refetch_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    assert_eq!(verifier.verify(&a.access(4)).await.unwrap().user_id, 4);
    wait_for_requests(&source, 3).await;
    assert_eq!(verifier.key_ids(), vec![a.kid.clone()]);
}

#[tokio::test]
async fn the_layer_waits_for_the_refetch_of_a_rotated_key() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let source = JwksServer::http(jwks(&[&a]), Some(600)).await;
    let verifier = Verifier::builder()
        .jwks_url(source.url())
        .build()
        .await
        .unwrap();
    let channel = serve_orders(&verifier, Guard::ServerLayer).await;
    assert_eq!(call_with_token(&channel, &a.access(1)).await.unwrap(), 1);

    // The auth service rotates to b and drops a.
    source.set_jwks(jwks(&[&b]));
    assert_eq!(call_with_token(&channel, &b.access(2)).await.unwrap(), 2);
    assert_eq!(source.requests(), 2);
    assert_eq!(verifier.key_ids(), vec![b.kid.clone()]);
    // a is gone; asking again for it within the interval fetches nothing.
    assert_refused(
        call_with_token(&channel, &a.access(1)).await,
        "Token is invalid",
        "token_not_valid",
    );
    assert_eq!(source.requests(), 2);
}

#[tokio::test]
async fn the_interceptor_refuses_an_unknown_kid_once_and_fetches_it_in_the_background() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let source = JwksServer::grpc(jwks(&[&a])).await;
    let verifier = Verifier::builder()
        .jwks_grpc(source.channel().await)
        .build()
        .await
        .unwrap();
    let channel = serve_orders(&verifier, Guard::Interceptor).await;
    source.set_jwks(jwks(&[&a, &b]));

    assert_refused(
        call_with_token(&channel, &b.access(2)).await,
        "Token is invalid",
        "token_not_valid",
    );
    wait_for_requests(&source, 2).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while verifier.key_ids().len() < 2 {
        assert!(Instant::now() < deadline, "b never arrived");
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(call_with_token(&channel, &b.access(2)).await.unwrap(), 2);
    assert_eq!(call_with_token(&channel, &a.access(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn keeps_verifying_with_cached_keys_while_the_http_source_is_gone() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let source = JwksServer::http(jwks(&[&a]), Some(1)).await;
    let verifier = Verifier::builder()
        .jwks_url(source.url())
        .min_refetch_interval(Duration::from_millis(100))
        .refresh_interval(Duration::from_millis(100))
        .fetch_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    source.stop();
    // Several refreshes fail (connection refused) meanwhile.
    sleep(Duration::from_millis(800)).await;
    assert_eq!(verifier.verify(&a.access(1)).await.unwrap().user_id, 1);
    assert_eq!(
        verifier.verify(&b.access(2)).await,
        Err(VerifyError::Invalid)
    );
    assert_eq!(verifier.key_ids(), vec![a.kid.clone()]);
}

#[tokio::test]
async fn keeps_verifying_while_the_grpc_source_fails_and_recovers_after() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let source = JwksServer::grpc(jwks(&[&a])).await;
    let verifier = Verifier::builder()
        .jwks_grpc(source.channel().await)
        .refresh_interval(Duration::from_millis(100))
        .min_refetch_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let channel = serve_orders(&verifier, Guard::ServiceLayer).await;
    source.set_down(true);
    wait_for_requests(&source, 4).await;
    assert_eq!(call_with_token(&channel, &a.access(1)).await.unwrap(), 1);

    // Back, rotated: the next refresh brings b.
    source.set_jwks(jwks(&[&b]));
    source.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while verifier.key_ids() != vec![b.kid.clone()] {
        assert!(Instant::now() < deadline, "b never arrived");
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call_with_token(&channel, &b.access(2)).await.unwrap(), 2);
}

/// A token signed with b but naming a made-up `kid`.
fn junk(b: &TestKey, i: usize) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(format!("junk-{i}"));
    b.sign_with(header, &access_claims(1))
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let a = TestKey::ed25519_a();
    let b = TestKey::ed25519_b();
    let source = JwksServer::http(jwks(&[&a]), Some(600)).await;
    let interval = Duration::from_millis(1500);
    let verifier = Verifier::builder()
        .jwks_url(source.url())
        .min_refetch_interval(interval)
        .build()
        .await
        .unwrap();
    let channel = serve_orders(&verifier, Guard::ServerLayer).await;
    let tokens: Vec<String> = (0..350).map(|i| junk(&b, i)).collect();

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for token in &tokens[..200] {
        let verifier = verifier.clone();
        let token = token.clone();
        calls.spawn(async move { verifier.verify(&token).await });
    }
    for token in &tokens[200..300] {
        assert_eq!(verifier.verify_cached(token), Err(VerifyError::Invalid));
    }
    for token in &tokens[300..] {
        let channel = channel.clone();
        let token = token.clone();
        calls.spawn(async move {
            call_with_token(&channel, &token)
                .await
                .map_err(|_| VerifyError::Invalid)
                .map(|_| unreachable!())
        });
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(
            result.unwrap().map(|u| u.user_id),
            Err(VerifyError::Invalid)
        );
    }
    assert!(
        started.elapsed() < interval,
        "the flood took too long to measure"
    );
    // The start, and one for the whole flood.
    assert_eq!(source.requests(), 2);
    // Valid tokens are unaffected.
    assert!(verifier.verify(&a.access(1)).await.is_ok());

    // The next interval allows one more.
    sleep(interval).await;
    for i in 0..50 {
        assert_eq!(
            verifier.verify(&junk(&b, i)).await,
            Err(VerifyError::Invalid)
        );
    }
    assert_eq!(source.requests(), 3);
}
