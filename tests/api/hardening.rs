//! Abuse: oversize and malformed requests, forged tokens on every RPC that
//! takes one, login floods, and timing that could reveal usernames.

use std::time::{Duration, Instant};

use auth_service::pb;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::{Buf, BufMut};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_types::StatusExt;

use crate::helpers::{
    Backend, HS256_HEADER, PASSWORD, SECRET, TestApp, bearer, expect_blacklisted, expect_code,
    forge, on_every_backend, simplejwt_claims,
};

/// Sends raw bytes as the request message, to reach the server's decoder
/// with something the generated client could never produce.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_call(app: &TestApp, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn oversize_requests_are_resource_exhausted_and_the_server_keeps_serving() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let huge = "x".repeat(5 * 1024 * 1024);
    let status = expect_code(
        app.try_register(&huge, "big@example.com", PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert!(
        status.message().starts_with("request message too large"),
        "{}",
        status.message()
    );

    // Still serving, on a fresh call.
    app.register("afterwards").await;
    app.stop().await;
}

#[tokio::test]
async fn undecodable_bytes_are_invalid_argument() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    // Field 0 does not exist in protobuf: no message decodes from this.
    let status = expect_code(
        raw_call(
            &app,
            "/auth.v1.AuthService/Register",
            vec![0x00, 0xff, 0xff, 0xff],
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(
        !status.message().contains("Protobuf"),
        "{}",
        status.message()
    );
    // Truncated: a length-delimited field that claims more bytes than follow.
    expect_code(
        raw_call(
            &app,
            "/auth.v1.AuthService/Register",
            vec![0x0a, 0x40, b'a'],
        )
        .await,
        Code::InvalidArgument,
    );
    app.register("afterwards").await;
    app.stop().await;
}

/// Every RPC that takes a token, called with `token`.
async fn every_token_rpc(app: &TestApp, token: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let mut auth = app.auth.clone();
    let mut users = app.users.clone();
    vec![
        (
            "RefreshToken",
            auth.refresh_token(pb::RefreshTokenRequest {
                refresh: token.into(),
            })
            .await
            .map(drop),
        ),
        (
            "VerifyToken",
            auth.verify_token(pb::VerifyTokenRequest {
                token: token.into(),
            })
            .await
            .map(drop),
        ),
        (
            "Logout",
            auth.logout(pb::LogoutRequest {
                refresh: token.into(),
            })
            .await
            .map(drop),
        ),
        (
            "GetMe",
            users
                .get_me(bearer(pb::GetMeRequest {}, token))
                .await
                .map(drop),
        ),
        (
            "UpdateAvatar",
            users
                .update_avatar(bearer(
                    pb::UpdateAvatarRequest {
                        avatar: String::new(),
                    },
                    token,
                ))
                .await
                .map(drop),
        ),
        (
            "ListUsers",
            users
                .list_users(bearer(pb::ListUsersRequest::default(), token))
                .await
                .map(drop),
        ),
    ]
}

#[tokio::test]
async fn forged_tokens_are_refused_by_every_rpc() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (user, _) = app.signed_up("target").await;
        let id = user.id;
        let without = |kind: &str, key: &str| {
            let mut claims = simplejwt_claims(kind, id, 600);
            claims.as_object_mut().map(|o| o.remove(key));
            claims
        };
        let with = |kind: &str, key: &str, value: serde_json::Value| {
            let mut claims = simplejwt_claims(kind, id, 600);
            claims[key] = value;
            claims
        };
        let now = chrono::Utc::now().timestamp();
        let mut cases: Vec<(&str, String)> = Vec::new();
        for kind in ["access", "refresh"] {
            cases.extend([
                (
                    "alg none",
                    format!(
                        "{}.{}.",
                        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                        URL_SAFE_NO_PAD.encode(simplejwt_claims(kind, id, 600).to_string())
                    ),
                ),
                // HS/RS confusion: an RS256 header over an HMAC signature made
                // with the shared secret (what a public-key-as-secret attack sends).
                (
                    "RS256 header",
                    forge(
                        r#"{"alg":"RS256","typ":"JWT"}"#,
                        &simplejwt_claims(kind, id, 600),
                        SECRET,
                    ),
                ),
                (
                    "wrong key",
                    forge(
                        HS256_HEADER,
                        &simplejwt_claims(kind, id, 600),
                        "not the key",
                    ),
                ),
                (
                    "expired",
                    forge(HS256_HEADER, &simplejwt_claims(kind, id, -1), SECRET),
                ),
                (
                    "nbf in the future",
                    forge(HS256_HEADER, &with(kind, "nbf", (now + 600).into()), SECRET),
                ),
                (
                    "iat in the future",
                    forge(HS256_HEADER, &with(kind, "iat", (now + 600).into()), SECRET),
                ),
                ("no jti", forge(HS256_HEADER, &without(kind, "jti"), SECRET)),
                (
                    "no token_type",
                    forge(HS256_HEADER, &without(kind, "token_type"), SECRET),
                ),
                (
                    "sliding token_type",
                    forge(
                        HS256_HEADER,
                        &with(kind, "token_type", "sliding".into()),
                        SECRET,
                    ),
                ),
                (
                    "no user_id",
                    forge(HS256_HEADER, &without(kind, "user_id"), SECRET),
                ),
                ("no exp", forge(HS256_HEADER, &without(kind, "exp"), SECRET)),
            ]);
        }
        // Tampered payload, honest signature.
        let honest = forge(HS256_HEADER, &simplejwt_claims("access", id, 600), SECRET);
        let (_, signature) = honest.rsplit_once('.').unwrap_or_default();
        let other = forge(HS256_HEADER, &with("access", "user_id", "1".into()), SECRET);
        let (unsigned, _) = other.rsplit_once('.').unwrap_or_default();
        cases.push(("tampered payload", format!("{unsigned}.{signature}")));
        cases.push(("non-base64 garbage", "%%%.***.!!!".into()));
        cases.push(("60 KiB of garbage", "a".repeat(60 * 1024)));

        for (case, token) in &cases {
            for (rpc, result) in every_token_rpc(&app, token).await {
                let status = result
                    .err()
                    .unwrap_or_else(|| panic!("{case} accepted by {rpc}"));
                // Over 16 KiB a token cannot even travel as metadata.
                if token.len() > 16 * 1024 && matches!(rpc, "GetMe" | "UpdateAvatar" | "ListUsers")
                {
                    assert_ne!(status.code(), Code::Ok, "{case} / {rpc}");
                    continue;
                }
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{case} / {rpc}: {status:?}"
                );
            }
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_one_megabyte_token_is_refused_before_any_work() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let token = "a".repeat(1024 * 1024);
    for (rpc, result) in every_token_rpc(&app, &token).await {
        let status = result.err().unwrap_or_else(|| panic!("accepted by {rpc}"));
        // In a message it exceeds the 64 KiB request limit; as metadata, the
        // 16 KiB header limit. Either way: refused, nothing decoded.
        assert!(
            matches!(
                status.code(),
                Code::ResourceExhausted | Code::Internal | Code::Unavailable | Code::Cancelled
            ),
            "{rpc}: {status:?}"
        );
    }
    app.register("still-serving").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_shed_with_retry_info() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
        s.passwords.max_concurrent = std::num::NonZeroUsize::new(1);
        s.passwords.queue_limit = 2;
        s.throttle.failure_limit = 0; // the hashing queue is under test, not the throttle
    })
    .await;
    app.register("flooded").await;
    let attempts = (0..12).map(|_| app.try_login("flooded", "wrong password"));
    let results = futures::future::join_all(attempts).await;
    let shed: Vec<&Status> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    assert!(!shed.is_empty(), "nothing was shed: {results:?}");
    for status in &shed {
        let retry = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        assert!(retry.is_some_and(|d| d > Duration::ZERO), "{status:?}");
    }
    // At most one hashing and two waiting: everything else was refused.
    let answered = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    assert!(answered >= 1 && answered + shed.len() == 12, "{results:?}");
    app.login("flooded").await;
    app.stop().await;
}

async fn median_login_time(
    app: &TestApp,
    username: &str,
    password: &str,
    rounds: usize,
) -> Duration {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let result = app.try_login(username, password).await;
        times.push(started.elapsed());
        expect_code(result, Code::Unauthenticated);
    }
    times.sort();
    times[rounds / 2]
}

/// Asserts that a login with an unknown name takes as long as a wrong
/// password for `known` (medians of interleaved rounds, so machine noise
/// hits both alike). Without the dummy hash an unknown name answers in well
/// under a tenth of the time (no argon2 at all).
async fn assert_unknown_names_cost_as_much_as(app: &TestApp, known: &str) {
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        wrong.push(median_login_time(app, known, "wrong password", 3).await);
        unknown.push(median_login_time(app, "nobody-by-this-name", "wrong password", 3).await);
    }
    wrong.sort();
    unknown.sort();
    let (wrong, unknown) = (wrong[2], unknown[2]);
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown {unknown:?} vs wrong password {wrong:?}"
    );
}

#[tokio::test]
async fn unknown_usernames_cost_as_much_as_wrong_passwords() {
    // Throttling off: it would cut the measurement short.
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| s.throttle.failure_limit = 0).await;
    app.register("known").await;
    assert_unknown_names_cost_as_much_as(&app, "known").await;
    app.stop().await;
}

/// After the argon2 parameters are raised, stored hashes keep the old ones
/// until their users log in: an unknown name must then cost what those cost,
/// not what the new parameters cost.
#[tokio::test]
async fn unknown_usernames_cost_as_much_as_wrong_passwords_after_a_parameter_rise() {
    let old = TestApp::spawn_with(&Backend::Sqlite, |s| {
        s.passwords.memory_kib = 4096;
        s.passwords.iterations = 1;
    })
    .await;
    for name in ["known", "second", "third"] {
        old.register(name).await;
    }
    let raised = TestApp::spawn_on_with(old.database_url(), |s| s.throttle.failure_limit = 0).await;
    assert_unknown_names_cost_as_much_as(&raised, "known").await;
    raised.stop().await;
    old.stop().await;
}

#[tokio::test]
async fn login_upgrades_hashes_weaker_than_the_configuration() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.passwords.memory_kib = 1024;
            s.passwords.iterations = 1;
        })
        .await;
        let user = app.register("legacy").await;
        assert!(
            app.stored_password_hash(user.id)
                .await
                .starts_with("$argon2id$v=19$m=1024,t=1,p=1$")
        );

        // The same database under the default (OWASP) parameters.
        let upgraded = TestApp::spawn_on(app.database_url()).await;
        expect_code(
            upgraded.try_login("legacy", "wrong password").await,
            Code::Unauthenticated,
        );
        assert!(
            upgraded
                .stored_password_hash(user.id)
                .await
                .contains("m=1024,t=1"),
            "a failed login must not touch the hash"
        );
        upgraded.login("legacy").await;
        let stored = upgraded.stored_password_hash(user.id).await;
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        upgraded.login("legacy").await; // the new hash verifies
        upgraded.stop().await;
        app.stop().await;
    })
    .await;
}

/// Replays arriving together each revoke the family at once; the inserts
/// overlap and must not turn into INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_of_a_rotated_token_are_all_refused_cleanly() {
    on_every_backend(async |backend| {
        let app =
            TestApp::spawn_with(&backend, |s| s.tokens.policy.rotate_refresh_tokens = true).await;
        let (_, first) = app.signed_up("replayed").await;
        let rotated = app.refresh(&first.refresh).await.unwrap();
        for _ in 0..3 {
            app.login("replayed").await;
        }
        let replays = (0..8).map(|_| app.refresh(&first.refresh));
        for result in futures::future::join_all(replays).await {
            expect_blacklisted(result);
        }
        expect_blacklisted(app.refresh(&rotated.refresh).await);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    on_every_backend(async |backend| {
        let app =
            TestApp::spawn_with(&backend, |s| s.tokens.policy.rotate_refresh_tokens = true).await;
        let (_, first) = app.signed_up("victim").await;
        let rotated = app.refresh(&first.refresh).await.unwrap();
        let other_device = app.login("victim").await;
        let (_, bystander) = app.signed_up("bystander").await;

        // The rotated-out token shows up again: stolen, or replayed.
        expect_blacklisted(app.refresh(&first.refresh).await);
        for refresh in [&rotated.refresh, &other_device.refresh] {
            expect_blacklisted(app.refresh(refresh).await);
        }
        // Other users are untouched, and the victim can log in again.
        app.refresh(&bystander.refresh).await.unwrap();
        let fresh = app.login("victim").await;
        app.refresh(&fresh.refresh).await.unwrap();
        app.stop().await;
    })
    .await;
}
