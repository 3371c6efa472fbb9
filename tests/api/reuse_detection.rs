//! Refresh-token reuse detection (rotation on): what revokes a token family,
//! and that nothing escapes the revocation however the calls interleave.

use std::time::Duration;

use tonic::Code;

use crate::helpers::{TestApp, expect_blacklisted, on_every_backend};

const TRIALS: usize = 50;

/// An attacker holding a stolen refresh token rotates it in a tight loop
/// while the victim replays the original: once the replay has been refused,
/// no token of the attacker's chain may refresh any more, including the one
/// being minted at that very moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_minted_during_a_replay_does_not_escape_the_revocation() {
    on_every_backend(async |backend| {
        let app =
            TestApp::spawn_with(&backend, |s| s.tokens.policy.rotate_refresh_tokens = true).await;
        app.register("victim").await;
        let mut escapes = Vec::new();
        let mut unexpected = Vec::new();
        for trial in 0..TRIALS {
            let stolen = app.login("victim").await.refresh;
            let mut current = app.refresh(&stolen).await.unwrap().refresh;
            let replayed = std::sync::atomic::AtomicBool::new(false);
            let attacker = async {
                let mut rotations = 0;
                while !replayed.load(std::sync::atomic::Ordering::Acquire) {
                    match app.refresh(&current).await {
                        Ok(pair) => {
                            current = pair.refresh;
                            rotations += 1;
                        }
                        Err(status) => {
                            if status.message() != "Token is blacklisted" {
                                unexpected.push((trial, status));
                            }
                            break;
                        }
                    }
                }
                rotations
            };
            let victim = async {
                // Land somewhere inside the attacker's loop.
                tokio::time::sleep(Duration::from_micros(200 * (trial as u64 % 20))).await;
                let replay = app.refresh(&stolen).await;
                replayed.store(true, std::sync::atomic::Ordering::Release);
                replay
            };
            let (_, replay) = tokio::join!(attacker, victim);
            expect_blacklisted(replay);
            // Whatever the attacker holds now must be dead.
            match app.refresh(&current).await {
                Ok(_) => escapes.push(trial),
                Err(status) if status.code() == Code::Unauthenticated => {}
                Err(status) => unexpected.push((trial, status)),
            }
        }
        assert!(
            escapes.is_empty(),
            "{} of {TRIALS} trials left the attacker a live refresh token: {escapes:?}",
            escapes.len()
        );
        assert!(unexpected.is_empty(), "{unexpected:?}");
        app.stop().await;
    })
    .await;
}

/// Only a rotated-out token proves reuse. One ended by Logout and presented
/// again (a stale retry) is refused, and nothing else is revoked.
#[tokio::test]
async fn a_logged_out_token_presented_again_revokes_nothing_else() {
    on_every_backend(async |backend| {
        let app =
            TestApp::spawn_with(&backend, |s| s.tokens.policy.rotate_refresh_tokens = true).await;
        let (_, laptop) = app.signed_up("traveller").await;
        let phone = app.login("traveller").await;
        app.logout(&laptop.refresh).await.unwrap();
        for _ in 0..2 {
            expect_blacklisted(app.refresh(&laptop.refresh).await);
        }
        // The phone's session is untouched.
        let rotated = app.refresh(&phone.refresh).await.unwrap();
        app.refresh(&rotated.refresh).await.unwrap();
        assert_eq!(blacklisted_by(&app, "revoked").await, 0);
        app.stop().await;
    })
    .await;
}

/// A token inside the leeway is still accepted, so revoking a family must
/// include it: "expired" for revocation means expired beyond the leeway.
#[tokio::test]
async fn revocation_includes_tokens_expired_within_the_leeway() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.tokens.policy.rotate_refresh_tokens = true;
            s.tokens.refresh_lifetime = Duration::from_secs(1);
            s.tokens.leeway = Duration::from_secs(3600);
        })
        .await;
        let (_, first) = app.signed_up("lenient").await;
        app.refresh(&first.refresh).await.unwrap();
        let other_device = app.login("lenient").await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // Past `exp`, inside the leeway: still a working token.
        expect_blacklisted(app.refresh(&first.refresh).await);
        expect_blacklisted(app.refresh(&other_device.refresh).await);
        app.stop().await;
    })
    .await;
}

async fn blacklisted_by(app: &TestApp, reason: &str) -> i64 {
    app.count(&format!("blacklisted_tokens WHERE reason = '{reason}'"))
        .await
}
