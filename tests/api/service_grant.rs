//! ObtainServiceToken (issue 15): the client-credentials grant with a
//! secret and with a signed assertion (RFC 7523), its one refusal for every
//! bad credential, its scopes, its throttle and the token it returns — on
//! every configured backend.

use std::time::Duration;

use auth_service::pb;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    Backend, TestApp, bearer, claims, error_reason, expect_code, expect_refused, field_violations,
    on_every_backend,
};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
/// The one answer for every refused credential.
const REFUSED: &str = "Client authentication failed.";
const THROTTLED: &str = "Too many failed token requests for this client; try again later";

fn key(name: &str) -> String {
    let path = format!("{KEYS}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A server whose throttle stays out of the way of tests of refusals.
async fn lenient(backend: &Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| s.throttle.failure_limit = 1000).await
}

/// The access token of a superuser, who may grant any scope.
async fn superuser(app: &TestApp) -> String {
    let (user, pair) = app.signed_up("root").await;
    app.db
        .execute_unprepared(&format!(
            "UPDATE users SET is_staff = TRUE, is_superuser = TRUE WHERE id = {}",
            user.id
        ))
        .await
        .unwrap();
    pair.access
}

/// Administration as a superuser, and grants.
pub(crate) struct Setup<'a> {
    app: &'a TestApp,
    access: String,
}

impl<'a> Setup<'a> {
    pub(crate) async fn new(app: &'a TestApp) -> Setup<'a> {
        let access = superuser(app).await;
        Setup { app, access }
    }

    pub(crate) async fn create(&self, name: &str, scopes: &[&str]) -> pb::ServiceAccount {
        let request = pb::CreateServiceAccountRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.app
            .admin_client()
            .create_service_account(bearer(request, &self.access))
            .await
            .unwrap()
            .into_inner()
    }

    pub(crate) async fn add_secret(&self, id: i64) -> pb::AddServiceAccountSecretResponse {
        let request = pb::AddServiceAccountSecretRequest { id };
        self.app
            .admin_client()
            .add_service_account_secret(bearer(request, &self.access))
            .await
            .unwrap()
            .into_inner()
    }

    async fn remove_secret(&self, id: i64, secret_id: &str) {
        let request = pb::RemoveServiceAccountSecretRequest {
            id,
            secret_id: secret_id.into(),
        };
        self.app
            .admin_client()
            .remove_service_account_secret(bearer(request, &self.access))
            .await
            .unwrap();
    }

    async fn add_key(&self, id: i64, file: &str) -> String {
        let request = pb::AddServiceAccountKeyRequest {
            id,
            public_key_pem: key(file),
        };
        self.app
            .admin_client()
            .add_service_account_key(bearer(request, &self.access))
            .await
            .unwrap()
            .into_inner()
            .kid
    }

    async fn remove_key(&self, id: i64, kid: &str) {
        let request = pb::RemoveServiceAccountKeyRequest {
            id,
            kid: kid.into(),
        };
        self.app
            .admin_client()
            .remove_service_account_key(bearer(request, &self.access))
            .await
            .unwrap();
    }

    async fn set_active(&self, id: i64, active: bool) {
        let request = pb::SetServiceAccountActiveRequest { id, active };
        self.app
            .admin_client()
            .set_service_account_active(bearer(request, &self.access))
            .await
            .unwrap();
    }

    async fn delete(&self, id: i64) {
        let request = pb::DeleteServiceAccountRequest { id };
        self.app
            .admin_client()
            .delete_service_account(bearer(request, &self.access))
            .await
            .unwrap();
    }
}

async fn grant(
    app: &TestApp,
    request: pb::ObtainServiceTokenRequest,
) -> Result<pb::ObtainServiceTokenResponse, Status> {
    app.auth
        .clone()
        .obtain_service_token(request)
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) async fn with_secret(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    scopes: &[&str],
) -> Result<pb::ObtainServiceTokenResponse, Status> {
    grant(
        app,
        pb::ObtainServiceTokenRequest {
            client_id: client_id.into(),
            client_secret: secret.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            assertion: String::new(),
        },
    )
    .await
}

pub(crate) async fn with_assertion(
    app: &TestApp,
    assertion: &str,
) -> Result<pb::ObtainServiceTokenResponse, Status> {
    grant(
        app,
        pb::ObtainServiceTokenRequest {
            assertion: assertion.into(),
            ..Default::default()
        },
    )
    .await
}

/// Assertion claims from `client` to the default audience, valid a minute.
pub(crate) fn assertion_claims(client: &str) -> Value {
    let now = now();
    json!({"iss": client, "sub": client, "aud": "auth-service",
           "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().simple().to_string()})
}

/// `claims` signed with the private test key `file` (its algorithm read
/// from the name), naming `kid` if given.
pub(crate) fn sign(file: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = key(file);
    let (alg, key) = if file.contains("ed25519") {
        (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem.as_bytes()))
    } else if file.contains("p256") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes()))
    } else {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes()))
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.unwrap()).unwrap()
}

#[track_caller]
fn expect_invalid_client<T: std::fmt::Debug>(result: Result<T, Status>, case: &str) {
    let status = match result {
        Ok(value) => panic!("{case}: expected UNAUTHENTICATED, got Ok({value:?})"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    assert_eq!(status.message(), REFUSED, "{case}");
    assert_eq!(error_reason(&status), "invalid_client", "{case}");
}

#[tokio::test]
async fn a_secret_obtains_a_service_token_with_the_designed_claims() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("billing", &["orders:read", "reports"]).await;
        let secret = setup.add_secret(account.id).await;
        let before = now();
        let token = with_secret(&app, "billing", &secret.secret, &[])
            .await
            .unwrap();
        // Empty scopes: every allowed one.
        assert_eq!(token.scopes, ["orders:read", "reports"]);
        let claims = claims(&token.access);
        assert_eq!(claims.as_object().map(|o| o.len()), Some(7), "{claims}");
        // In the design's order, as written.
        let payload = token.access.split('.').nth(1).unwrap();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let at = |name: &str| payload.find(&format!("\"{name}\":")).unwrap();
        let order = [
            "token_type",
            "exp",
            "iat",
            "jti",
            "client_id",
            "scope",
            "cid",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{payload}");
        assert_eq!(claims["token_type"], "service");
        assert_eq!(claims["client_id"], "billing");
        assert_eq!(claims["scope"], "orders:read reports");
        assert_eq!(claims["cid"], secret.secret_id.as_str());
        assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
        let iat = claims["iat"].as_i64().unwrap();
        let exp = claims["exp"].as_i64().unwrap();
        assert!(iat >= before && iat <= now(), "{claims}");
        // AUTH_SERVICE_TOKEN_LIFETIME's default, 10 minutes.
        assert_eq!(exp - iat, 600);
        assert_eq!(token.expires_at.map(|t| t.seconds), Some(exp));
        assert!(claims.get("user_id").is_none());

        // Never a user's token.
        expect_refused(
            app.get_me(&token.access).await,
            "Token has wrong type",
            "token_not_valid",
        );

        // A subset.
        let narrow = with_secret(&app, "billing", &secret.secret, &["reports"])
            .await
            .unwrap();
        assert_eq!(narrow.scopes, ["reports"]);
        assert_eq!(claims_of(&narrow)["scope"], "reports");
        assert_ne!(claims_of(&narrow)["jti"], claims["jti"]);

        // Recorded as used (at most once a minute).
        let shown = app
            .admin_client()
            .get_service_account(bearer(
                pb::GetServiceAccountRequest { id: account.id },
                &setup.access,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(shown.last_used_at.is_some());
        app.stop().await;
    })
    .await;
}

fn claims_of(token: &pb::ObtainServiceTokenResponse) -> Value {
    claims(&token.access)
}

#[tokio::test]
async fn scopes_must_be_allowed_and_well_formed() {
    on_every_backend(async |backend| {
        let app = lenient(&backend).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("billing", &["orders:read"]).await;
        let secret = setup.add_secret(account.id).await.secret;

        let status = expect_code(
            with_secret(&app, "billing", &secret, &["orders:read", "orders:write"]).await,
            Code::InvalidArgument,
        );
        assert_eq!(
            field_violations(&status),
            [(
                "scopes".to_owned(),
                "Scope \"orders:write\" is not allowed for this client.".to_owned()
            )]
        );
        // A scope no account could hold.
        let status = expect_code(
            with_secret(&app, "billing", &secret, &["bad scope"]).await,
            Code::InvalidArgument,
        );
        let violations = field_violations(&status);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].0, "scopes");
        assert!(violations[0].1.contains("bad scope"), "{violations:?}");

        // An unauthenticated caller learns nothing about the allowed scopes.
        expect_invalid_client(
            with_secret(&app, "billing", "wrong", &["orders:write"]).await,
            "wrong secret with a scope not allowed",
        );

        // An account allowed nothing gets a token with no scope.
        let bare = setup.create("bare", &[]).await;
        let bare_secret = setup.add_secret(bare.id).await.secret;
        let token = with_secret(&app, "bare", &bare_secret, &[]).await.unwrap();
        assert!(token.scopes.is_empty());
        assert_eq!(claims_of(&token)["scope"], "");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_request_names_exactly_one_credential() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let neither = expect_code(
        with_secret(&app, "billing", "", &[]).await,
        Code::InvalidArgument,
    );
    let fields: Vec<String> = field_violations(&neither)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(fields, ["client_secret", "assertion"]);
    let both = expect_code(
        grant(
            &app,
            pb::ObtainServiceTokenRequest {
                client_id: "billing".into(),
                client_secret: "s".into(),
                assertion: "a.b.c".into(),
                scopes: Vec::new(),
            },
        )
        .await,
        Code::InvalidArgument,
    );
    let fields: Vec<String> = field_violations(&both)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(fields, ["assertion"]);
    let no_client = expect_code(
        with_secret(&app, "", "secret", &[]).await,
        Code::InvalidArgument,
    );
    let fields: Vec<String> = field_violations(&no_client)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(fields, ["client_id"]);
    // Neither status echoes what was sent.
    assert!(!format!("{both:?}").contains("a.b.c"));
    app.stop().await;
}

#[tokio::test]
async fn every_bad_secret_gets_the_same_answer_and_rotation_needs_no_downtime() {
    on_every_backend(async |backend| {
        let app = lenient(&backend).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("billing", &["reports"]).await;
        let old = setup.add_secret(account.id).await;
        // Rotation: a second secret works beside the first…
        let new = setup.add_secret(account.id).await;
        for secret in [&old, &new] {
            let token = with_secret(&app, "billing", &secret.secret, &[])
                .await
                .unwrap();
            assert_eq!(claims_of(&token)["cid"], secret.secret_id.as_str());
        }
        // …and removing the old one leaves the new one working.
        setup.remove_secret(account.id, &old.secret_id).await;
        expect_invalid_client(
            with_secret(&app, "billing", &old.secret, &[]).await,
            "rotated-out secret",
        );
        with_secret(&app, "billing", &new.secret, &[])
            .await
            .unwrap();

        expect_invalid_client(
            with_secret(&app, "billing", "not the secret", &[]).await,
            "wrong secret",
        );
        expect_invalid_client(
            with_secret(&app, "nobody", &new.secret, &[]).await,
            "unknown client",
        );
        // Another account's secret.
        let other = setup.create("orders", &[]).await;
        let other_secret = setup.add_secret(other.id).await.secret;
        expect_invalid_client(
            with_secret(&app, "billing", &other_secret, &[]).await,
            "another account's secret",
        );
        setup.set_active(account.id, false).await;
        expect_invalid_client(
            with_secret(&app, "billing", &new.secret, &[]).await,
            "deactivated",
        );
        setup.set_active(account.id, true).await;
        with_secret(&app, "billing", &new.secret, &[])
            .await
            .unwrap();
        setup.delete(account.id).await;
        expect_invalid_client(
            with_secret(&app, "billing", &new.secret, &[]).await,
            "deleted",
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_assertion_signed_with_each_algorithm_obtains_a_token() {
    on_every_backend(async |backend| {
        let app = lenient(&backend).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("billing", &["reports"]).await;
        for (private, public) in [
            ("service-ed25519.pem", "service-ed25519.pub.pem"),
            ("service-p256.pem", "service-p256.pub.pem"),
            ("service-rsa.pem", "service-rsa.pub.pem"),
        ] {
            let kid = setup.add_key(account.id, public).await;
            // Naming the key, and without kid (each key of the iss's account).
            for named in [Some(kid.as_str()), None] {
                let assertion = sign(private, named, &assertion_claims("billing"));
                let token = with_assertion(&app, &assertion)
                    .await
                    .unwrap_or_else(|e| panic!("{private} kid {named:?}: {e:?}"));
                let claims = claims_of(&token);
                assert_eq!(claims["token_type"], "service");
                assert_eq!(claims["client_id"], "billing");
                assert_eq!(claims["cid"], kid.as_str(), "{private}");
                assert_eq!(claims["scope"], "reports");
            }
        }
        // The request may name the client too, and must name the right one.
        let assertion = sign("service-ed25519.pem", None, &assertion_claims("billing"));
        let named = grant(
            &app,
            pb::ObtainServiceTokenRequest {
                client_id: "billing".into(),
                assertion: assertion.clone(),
                ..Default::default()
            },
        )
        .await;
        named.unwrap();
        setup.create("orders", &[]).await;
        let fresh = sign("service-ed25519.pem", None, &assertion_claims("billing"));
        expect_invalid_client(
            grant(
                &app,
                pb::ObtainServiceTokenRequest {
                    client_id: "orders".into(),
                    assertion: fresh,
                    ..Default::default()
                },
            )
            .await,
            "assertion of another client",
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_assertions_get_the_same_answer() {
    on_every_backend(async |backend| {
        let app = lenient(&backend).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("billing", &[]).await;
        let kid = setup.add_key(account.id, "service-ed25519.pub.pem").await;
        let signed = |claims: &Value| sign("service-ed25519.pem", Some(&kid), claims);
        let with = |name: &str, value: Value| {
            let mut claims = assertion_claims("billing");
            claims[name] = value;
            claims
        };

        let once = signed(&assertion_claims("billing"));
        with_assertion(&app, &once).await.unwrap();
        expect_invalid_client(with_assertion(&app, &once).await, "replayed");

        let now = now();
        let cases = [
            ("expired", signed(&with("exp", json!(now - 10)))),
            // Well over 5 minutes: the server's clock is read later than
            // `now`, so a second past the limit could fall inside it.
            ("exp too far ahead", signed(&with("exp", json!(now + 360)))),
            (
                "wrong audience",
                signed(&with("aud", json!("https://elsewhere"))),
            ),
            (
                "wrong key",
                sign("ed25519-1.pem", Some(&kid), &assertion_claims("billing")),
            ),
            (
                "wrong key, no kid",
                sign("ed25519-1.pem", None, &assertion_claims("billing")),
            ),
            ("iat in the future", signed(&with("iat", json!(now + 60)))),
            ("nbf in the future", signed(&with("nbf", json!(now + 60)))),
            ("no exp", {
                let mut claims = assertion_claims("billing");
                claims.as_object_mut().map(|o| o.remove("exp"));
                signed(&claims)
            }),
            ("another sub", signed(&with("sub", json!("orders")))),
            ("no jti", {
                let mut claims = assertion_claims("billing");
                claims.as_object_mut().map(|o| o.remove("jti"));
                signed(&claims)
            }),
            (
                "unknown client",
                sign("service-ed25519.pem", None, &assertion_claims("nobody")),
            ),
            (
                "unknown kid",
                sign(
                    "service-ed25519.pem",
                    Some("ffffffffffffffffffffffffffffffff"),
                    &assertion_claims("billing"),
                ),
            ),
            ("garbage", "not.a.jwt".to_owned()),
        ];
        for (case, assertion) in &cases {
            expect_invalid_client(with_assertion(&app, assertion).await, case);
        }
        // Each case is refused for what it changed: the same claims with
        // `exp` just inside 5 minutes, `iat` and `nbf` now, are accepted.
        let mut inside = with("exp", json!(now + 290));
        inside["nbf"] = json!(now);
        with_assertion(&app, &signed(&inside)).await.unwrap();

        // A removed key's assertions are refused, even ones never used.
        let unused = signed(&assertion_claims("billing"));
        setup.remove_key(account.id, &kid).await;
        expect_invalid_client(with_assertion(&app, &unused).await, "key removed");
        app.stop().await;
    })
    .await;
}

/// The jti table cannot grow while the server runs: a grant deletes the
/// expired ids (at most once a minute per replica).
#[tokio::test]
async fn used_assertion_ids_are_remembered_and_expired_ones_deleted() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("billing", &[]).await;
        let kid = setup.add_key(account.id, "service-ed25519.pub.pem").await;
        let long_ago = chrono::Utc::now().naive_utc() - chrono::TimeDelta::hours(1);
        let client = auth_service::domain::ServiceAccountName::parse("billing").unwrap();
        for jti in ["old-1", "old-2"] {
            let recorded = auth_service::persistence::assertion_ids::record_assertion_jti(
                &app.db, &client, jti, long_ago,
            )
            .await
            .unwrap();
            assert!(recorded);
        }
        assert_eq!(app.count("service_assertion_jtis").await, 2);
        let assertion = sign(
            "service-ed25519.pem",
            Some(&kid),
            &assertion_claims("billing"),
        );
        with_assertion(&app, &assertion).await.unwrap();
        // The deletion runs beside the grant: wait for it, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.count("service_assertion_jtis").await != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "expired ids never deleted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn failures_are_throttled_per_client_and_never_lock_out_the_right_credential() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let setup = Setup::new(&app).await;
        let billing = setup.create("billing", &[]).await;
        let billing_secret = setup.add_secret(billing.id).await.secret;
        let orders = setup.create("orders", &[]).await;
        let orders_secret = setup.add_secret(orders.id).await.secret;
        let attempts_before = app.count("login_attempts").await;

        // Successes leave the throttle's table alone.
        for _ in 0..3 {
            with_secret(&app, "billing", &billing_secret, &[])
                .await
                .unwrap();
        }
        assert_eq!(app.count("login_attempts").await, attempts_before);

        // Five failures (the login limit), then failures are told to back off.
        for _ in 0..5 {
            expect_invalid_client(
                with_secret(&app, "billing", "wrong", &[]).await,
                "wrong secret",
            );
        }
        assert_eq!(app.count("login_attempts").await, attempts_before + 1);
        let status = expect_code(
            with_secret(&app, "billing", "wrong", &[]).await,
            Code::ResourceExhausted,
        );
        assert_eq!(status.message(), THROTTLED);
        let delay = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
        assert!(
            delay > Duration::from_secs(14 * 60) && delay <= Duration::from_secs(15 * 60),
            "{delay:?}"
        );
        // Anybody can fail in a client's name (client ids are not secret):
        // the right secret still gets its token.
        with_secret(&app, "billing", &billing_secret, &[])
            .await
            .unwrap();
        // Assertions for the same client: a bad one is throttled, a good
        // one is not.
        let kid = setup.add_key(billing.id, "service-ed25519.pub.pem").await;
        let forged = sign("ed25519-2.pem", Some(&kid), &assertion_claims("billing"));
        expect_code(with_assertion(&app, &forged).await, Code::ResourceExhausted);
        let assertion = sign(
            "service-ed25519.pem",
            Some(&kid),
            &assertion_claims("billing"),
        );
        with_assertion(&app, &assertion).await.unwrap();

        // Another client is not affected, nor a user of the same name.
        with_secret(&app, "orders", &orders_secret, &[])
            .await
            .unwrap();
        app.register("billing").await;
        app.login("billing").await;

        // Unknown clients are counted too (no hint about which exist).
        for _ in 0..5 {
            expect_invalid_client(with_secret(&app, "ghost", "wrong", &[]).await, "unknown");
        }
        expect_code(
            with_secret(&app, "ghost", "wrong", &[]).await,
            Code::ResourceExhausted,
        );
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn grants_are_counted_by_credential_and_outcome() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
        s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let setup = Setup::new(&app).await;
    let account = setup.create("billing", &[]).await;
    let secret = setup.add_secret(account.id).await.secret;
    with_secret(&app, "billing", &secret, &[]).await.unwrap();
    expect_invalid_client(
        with_secret(&app, "billing", "wrong", &[]).await,
        "wrong secret",
    );
    expect_invalid_client(with_assertion(&app, "not.a.jwt").await, "garbage");
    let (_, text) = crate::metrics::fetch(app.http_addr.unwrap(), None).await;
    for (labels, expected) in [
        (r#"credential="secret",outcome="ok""#, "1"),
        (r#"credential="secret",outcome="bad_credentials""#, "1"),
        (r#"credential="assertion",outcome="bad_credentials""#, "1"),
        (r#"credential="assertion",outcome="ok""#, "0"),
    ] {
        let name = format!("auth_service_token_grants_total{{{labels}}} ");
        let line = text
            .lines()
            .find(|line| line.starts_with(&name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert_eq!(line[name.len()..].trim(), expected, "{line}");
    }
    // Neither the secret nor the assertion reaches the metrics.
    assert!(!text.contains(&secret));
    app.stop().await;
}

/// The replay check is the database's, not a replica's memory: an
/// assertion used on one replica is refused on another, either way round.
#[tokio::test]
async fn an_assertion_used_on_one_replica_is_refused_as_a_replay_on_another() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let replica = TestApp::spawn_on_with(app.database_url(), |_| {}).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("replayed", &["reports"]).await;
        let kid = setup.add_key(account.id, "service-ed25519.pub.pem").await;

        let first = sign(
            "service-ed25519.pem",
            Some(&kid),
            &assertion_claims("replayed"),
        );
        with_assertion(&app, &first).await.unwrap();
        expect_invalid_client(
            with_assertion(&replica, &first).await,
            "used on the first replica, replayed on the second",
        );

        let second = sign(
            "service-ed25519.pem",
            Some(&kid),
            &assertion_claims("replayed"),
        );
        with_assertion(&replica, &second).await.unwrap();
        expect_invalid_client(
            with_assertion(&app, &second).await,
            "used on the second replica, replayed on the first",
        );
        // Both uses remembered, once each.
        assert_eq!(app.count("service_assertion_jtis").await, 2);
        replica.stop().await;
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_raced_to_two_replicas_obtains_one_token() {
    on_every_backend(async |backend| {
        let app = lenient(&backend).await;
        let replica =
            TestApp::spawn_on_with(app.database_url(), |s| s.throttle.failure_limit = 1000).await;
        let setup = Setup::new(&app).await;
        let account = setup.create("racer", &[]).await;
        let kid = setup.add_key(account.id, "service-ed25519.pub.pem").await;
        for trial in 0..10 {
            // Two distinct assertions each sent four times at once, to both
            // replicas: each obtains exactly one token.
            let assertions: Vec<String> = (0..2)
                .map(|_| {
                    sign(
                        "service-ed25519.pem",
                        Some(&kid),
                        &assertion_claims("racer"),
                    )
                })
                .collect();
            let calls = (0..8).map(|i| {
                let server = if i % 2 == 0 { &app } else { &replica };
                let assertion = assertions[i / 4].clone();
                async move { (i / 4, with_assertion(server, &assertion).await) }
            });
            let mut granted = [0; 2];
            for (which, result) in futures::future::join_all(calls).await {
                match result {
                    Ok(_) => granted[which] += 1,
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                        assert_eq!(status.message(), REFUSED);
                    }
                }
            }
            assert_eq!(granted, [1, 1], "trial {trial}");
        }
        replica.stop().await;
        app.stop().await;
    })
    .await;
}
