//! Asymmetric signing and the published public keys (issue "Consumers
//! verify tokens themselves"): EdDSA, ES256 and RS256 with key files, `kid`
//! thumbprints, verify-only keys, issuer and audience, SIGHUP reloads.

use std::{path::PathBuf, time::Duration};

use auth_service::{config::JwtAlgorithm, pb};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, Validation, jwk::Jwk};
use tonic::Code;

use crate::{
    child::{ChildServer, stderr},
    helpers::{
        Backend, PASSWORD, SECRET, TestApp, TestDatabase, claims, expect_code, forge, header,
        on_every_backend, register_request, simplejwt_claims,
    },
};

/// A test key checked in under `tests/keys/`.
fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// Each asymmetric algorithm, its JWA name, JWK key type and two private keys.
const ALGORITHMS: [(JwtAlgorithm, &str, &str, &str, &str); 3] = [
    (
        JwtAlgorithm::EdDsa,
        "EdDSA",
        "OKP",
        "ed25519-1.pem",
        "ed25519-2.pem",
    ),
    (
        JwtAlgorithm::Es256,
        "ES256",
        "EC",
        "p256-1.pem",
        "p256-2.pem",
    ),
    (
        JwtAlgorithm::Rs256,
        "RS256",
        "RSA",
        "rsa-1.pem",
        "rsa-2.pem",
    ),
];

async fn jwks(app: &TestApp) -> Vec<pb::Jwk> {
    app.auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// The published key as the JSON object an RFC 7517 consumer reads.
fn as_jwk(key: &pb::Jwk) -> Jwk {
    let mut members = serde_json::Map::new();
    for (name, value) in [
        ("kty", &key.kty),
        ("kid", &key.kid),
        ("alg", &key.alg),
        ("use", &key.r#use),
        ("crv", &key.crv),
        ("x", &key.x),
        ("y", &key.y),
        ("n", &key.n),
        ("e", &key.e),
    ] {
        if !value.is_empty() {
            members.insert(name.to_owned(), value.clone().into());
        }
    }
    serde_json::from_value(members.into()).expect("an RFC 7517 key")
}

/// A shared secret is never published: with HS256 the set is empty, and
/// unauthenticated callers may ask for it.
#[tokio::test]
async fn with_hs256_the_key_set_is_empty() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    assert!(jwks(&app).await.is_empty());
    app.stop().await;
}

/// Tokens carry the `kid` of a published key, which verifies them with any
/// JWT library; the service itself accepts them for every call.
#[tokio::test]
async fn every_asymmetric_algorithm_signs_with_its_published_key() {
    on_every_backend(async |backend| {
        for (algorithm, alg, kty, signing, _) in ALGORITHMS {
            let app = TestApp::spawn_with(&backend, |s| {
                s.tokens.algorithm = algorithm;
                s.tokens.private_key_file = Some(key(signing));
            })
            .await;
            let (user, pair) = app.signed_up("ines").await;
            let keys = jwks(&app).await;
            assert_eq!(keys.len(), 1, "{alg}: {keys:?}");
            let published = &keys[0];
            assert_eq!((published.kty.as_str(), published.alg.as_str()), (kty, alg));
            assert_eq!(published.r#use, "sig");
            for token in [&pair.access, &pair.refresh] {
                assert_eq!(header(token)["alg"], alg);
                assert_eq!(header(token)["kid"], published.kid.as_str());
                // Verified independently, with the published key only.
                let key = DecodingKey::from_jwk(&as_jwk(published)).unwrap();
                let algorithm = alg.parse().unwrap();
                let decoded = jsonwebtoken::decode::<serde_json::Value>(
                    token,
                    &key,
                    &Validation::new(algorithm),
                );
                assert_eq!(
                    decoded.unwrap().claims["user_id"],
                    user.id.to_string(),
                    "{alg}"
                );
            }
            assert_eq!(app.get_me(&pair.access).await.unwrap().id, user.id);
            assert_eq!(app.verify(&pair.refresh).await.unwrap().user_id, user.id);
            let refreshed = app.refresh(&pair.refresh).await.unwrap();
            assert_eq!(header(&refreshed.access)["kid"], published.kid.as_str());
            app.stop().await;
        }
    })
    .await;
}

/// The `kid` is the key's RFC 7638 thumbprint: the same key file gives the
/// same `kid` on every replica, and it can be recomputed from the JWK.
#[tokio::test]
async fn the_kid_is_the_rfc7638_thumbprint() {
    for (algorithm, _, _, signing, _) in ALGORITHMS {
        let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
            s.tokens.algorithm = algorithm;
            s.tokens.private_key_file = Some(key(signing));
        })
        .await;
        let published = jwks(&app).await.remove(0);
        let thumbprint = as_jwk(&published)
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(published.kid, thumbprint);
        let replica = TestApp::spawn_on_with(app.database_url(), |s| {
            s.tokens.algorithm = algorithm;
            s.tokens.private_key_file = Some(key(signing));
        })
        .await;
        assert_eq!(jwks(&replica).await.remove(0).kid, published.kid);
        replica.stop().await;
        app.stop().await;
    }
}

/// On SQLite without a key file, a private key is generated once beside the
/// database (owner-only), and a restart signs with the same key.
#[tokio::test]
async fn on_sqlite_a_key_is_generated_once_beside_the_database() {
    use std::os::unix::fs::PermissionsExt;
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let db_file = database.sqlite_file().expect("a file database").to_owned();
    for (algorithm, alg, _, _, _) in ALGORITHMS {
        let app = TestApp::spawn_on_with(&database.url, |s| s.tokens.algorithm = algorithm).await;
        let kid = jwks(&app).await.remove(0).kid;
        app.stop().await;
        let key_file = PathBuf::from(format!(
            "{}.jwt-{}.pem",
            db_file.display(),
            alg.to_lowercase()
        ));
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
        let again = TestApp::spawn_on_with(&database.url, |s| s.tokens.algorithm = algorithm).await;
        assert_eq!(jwks(&again).await.remove(0).kid, kid, "{alg}");
        again.stop().await;
    }
}

/// The attack suite for public keys: no `none`, no HS256 keyed with the
/// public key, no other algorithm, no unknown or missing `kid`, no
/// signature by another key under our `kid`.
#[tokio::test]
async fn forged_and_confused_tokens_are_refused() {
    for (algorithm, alg, _, signing, other) in ALGORITHMS {
        let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
            s.tokens.algorithm = algorithm;
            s.tokens.private_key_file = Some(key(signing));
        })
        .await;
        let (user, pair) = app.signed_up("mallory").await;
        let kid = header(&pair.access)["kid"].as_str().unwrap().to_owned();
        let payload = simplejwt_claims("access", user.id, 300);
        let public_pem =
            std::fs::read_to_string(key(&signing.replace(".pem", ".pub.pem"))).unwrap_or_default();
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#)),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let hs_with_public_key = forge(
            &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
            &payload,
            &public_pem,
        );
        let hs_without_kid = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, SECRET);
        let other_key = sign(alg, other, None, &payload);
        let other_key_our_kid = sign(alg, other, Some(&kid), &payload);
        let ours_without_kid = sign(alg, signing, None, &payload);
        let cases = [
            ("alg none", none, "Token is invalid"),
            (
                "HS256 keyed with the public key",
                hs_with_public_key,
                "Invalid algorithm specified",
            ),
            (
                "HS256 with the old shared secret",
                hs_without_kid,
                "Invalid algorithm specified",
            ),
            ("an unknown kid", other_key, "Token is invalid"),
            (
                "another key under our kid",
                other_key_our_kid,
                "Token is invalid",
            ),
            (
                "our key without a kid",
                ours_without_kid,
                "Token is invalid",
            ),
        ];
        for (case, token, message) in cases {
            let status = expect_code(app.get_me(&token).await, Code::Unauthenticated);
            assert_eq!(status.message(), message, "{alg}: {case}");
            let status = expect_code(app.verify(&token).await, Code::Unauthenticated);
            assert_eq!(status.message(), message, "{alg}: {case}");
        }
        // Another asymmetric family is another algorithm.
        let (_, _, _, foreign, _) =
            ALGORITHMS[(ALGORITHMS.iter().position(|a| a.1 == alg).unwrap() + 1) % 3];
        let foreign_alg = ALGORITHMS.iter().find(|a| a.3 == foreign).unwrap().1;
        let cross = sign(foreign_alg, foreign, Some(&kid), &payload);
        let status = expect_code(app.get_me(&cross).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Invalid algorithm specified", "{alg}");
        app.stop().await;
    }
}

/// A token signed with the test key `key_file` for `alg`, with `kid`.
fn sign(alg: &str, key_file: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(key(key_file)).unwrap();
    let algorithm: jsonwebtoken::Algorithm = alg.parse().unwrap();
    let key = match alg {
        "EdDSA" => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
        "ES256" => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// The rotation's middle step: a replica that signs with the new key and
/// still verifies with the old one accepts the old key's tokens and
/// publishes both keys; one without the old key refuses them.
#[tokio::test]
async fn verify_keys_accept_the_previous_keys_tokens() {
    on_every_backend(async |backend| {
        let old = TestApp::spawn_with(&backend, |s| {
            s.tokens.algorithm = JwtAlgorithm::EdDsa;
            s.tokens.private_key_file = Some(key("ed25519-1.pem"));
        })
        .await;
        let (user, pair) = old.signed_up("rotor").await;
        let old_kid = header(&pair.access)["kid"].as_str().unwrap().to_owned();
        let rotating = TestApp::spawn_on_with(old.database_url(), |s| {
            s.tokens.algorithm = JwtAlgorithm::EdDsa;
            s.tokens.private_key_file = Some(key("ed25519-2.pem"));
            // Public keys verify too.
            s.tokens.verify_key_files = vec![key("ed25519-1.pub.pem")];
        })
        .await;
        assert_eq!(rotating.get_me(&pair.access).await.unwrap().id, user.id);
        let refreshed = rotating.refresh(&pair.refresh).await.unwrap();
        let new_kid = header(&refreshed.access)["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(new_kid, old_kid);
        let kids: Vec<String> = jwks(&rotating).await.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, [new_kid, old_kid]);
        let rotated = TestApp::spawn_on_with(old.database_url(), |s| {
            s.tokens.algorithm = JwtAlgorithm::EdDsa;
            s.tokens.private_key_file = Some(key("ed25519-2.pem"));
        })
        .await;
        let status = expect_code(rotated.get_me(&pair.access).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token is invalid");
        assert_eq!(rotated.get_me(&refreshed.access).await.unwrap().id, user.id);
        for app in [rotated, rotating, old] {
            app.stop().await;
        }
    })
    .await;
}

/// With `AUTH_JWT_ISSUER` and `AUTH_JWT_AUDIENCE`, every token carries
/// `iss` and `aud`, and a token without them (or with others) is refused.
#[tokio::test]
async fn issuer_and_audience_are_written_and_required() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
        s.tokens.issuer = Some("https://auth.example.com".to_owned());
        s.tokens.audience = Some("orders".to_owned());
    })
    .await;
    let (user, pair) = app.signed_up("audrey").await;
    assert_eq!(claims(&pair.access)["iss"], "https://auth.example.com");
    assert_eq!(claims(&pair.access)["aud"], "orders");
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let mut payload = simplejwt_claims("access", user.id, 300);
    let without = forge(hs256, &payload, SECRET);
    payload["iss"] = "https://auth.example.com".into();
    payload["aud"] = "billing".into();
    let other_audience = forge(hs256, &payload, SECRET);
    payload["aud"] = "orders".into();
    let both = forge(hs256, &payload, SECRET);
    for token in [without, other_audience] {
        let status = expect_code(app.get_me(&token).await, Code::Unauthenticated);
        assert_eq!(status.message(), "Token is invalid");
    }
    assert_eq!(app.get_me(&both).await.unwrap().id, user.id);
    app.stop().await;
}

/// Zero-downtime rotation on one replica: SIGHUP reloads the key files
/// without a restart; a bad file keeps the current keys and says so once.
#[tokio::test]
async fn sighup_reloads_the_keys_without_a_restart() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let signing = dir.path().join("signing.pem");
    let verify = dir.path().join("verify.pem");
    let copy = |from: &str, to: &PathBuf| std::fs::copy(key(from), to).unwrap();
    copy("ed25519-1.pem", &signing);
    copy("ed25519-1.pem", &verify);
    let env = [
        ("AUTH_JWT_ALGORITHM", "EdDSA"),
        ("AUTH_JWT_PRIVATE_KEY_FILE", signing.to_str().unwrap()),
        ("AUTH_JWT_VERIFY_KEY_FILES", verify.to_str().unwrap()),
    ];
    let server = ChildServer::on(&database.url)
        .envs(&env)
        .log("warn")
        .start()
        .await;
    let mut auth = server.auth_client();
    auth.register(register_request("hupert")).await.unwrap();
    let login = async |auth: &mut pb::auth_service_client::AuthServiceClient<_>| {
        let request = pb::ObtainTokenPairRequest {
            username: "hupert".into(),
            password: PASSWORD.into(),
        };
        auth.obtain_token_pair(request).await.unwrap().into_inner()
    };
    let kids = async |auth: &mut pb::auth_service_client::AuthServiceClient<_>| -> Vec<String> {
        let set = auth.get_jwks(pb::GetJwksRequest {}).await.unwrap();
        set.into_inner().keys.into_iter().map(|k| k.kid).collect()
    };
    let first = login(&mut auth).await;
    let old_kid = kids(&mut auth).await.remove(0);

    // Rotate: the new key signs, the old one still verifies. Calls keep
    // going through the reload: none may fail.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn({
        let mut auth = auth.clone();
        let token = first.access.clone();
        async move {
            let mut calls = 0u32;
            while !*stopped.borrow_and_update() {
                let request = pb::VerifyTokenRequest {
                    token: token.clone(),
                };
                auth.verify_token(request)
                    .await
                    .unwrap_or_else(|status| panic!("a call failed during the reload: {status:?}"));
                calls += 1;
            }
            calls
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    copy("ed25519-2.pem", &signing);
    copy("ed25519-1.pem", &verify);
    server.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rotated = loop {
        let now = kids(&mut auth).await;
        if now.len() == 2 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reloaded: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rotated[1], old_kid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send_replace(true);
    let calls = load.await.unwrap();
    assert!(calls > 0, "no call went through during the reload");
    let second = login(&mut auth).await;
    assert_eq!(header(&second.access)["kid"], rotated[0].as_str());
    let verify_call = async |auth: &mut pb::auth_service_client::AuthServiceClient<_>,
                             token: &str| {
        auth.verify_token(pb::VerifyTokenRequest {
            token: token.into(),
        })
        .await
    };
    assert!(verify_call(&mut auth, &first.access).await.is_ok());

    // A broken file: the current keys stay, one error line says why.
    std::fs::write(&signing, "not a key").unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kids(&mut auth).await, rotated);
    assert!(verify_call(&mut auth, &second.access).await.is_ok());

    // The old key dropped: its tokens are refused, without a restart.
    copy("ed25519-2.pem", &signing);
    copy("ed25519-2.pem", &verify);
    server.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while kids(&mut auth).await.len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = verify_call(&mut auth, &first.access).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(verify_call(&mut auth, &second.access).await.is_ok());

    let output = server.terminate(Duration::from_secs(30)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert_eq!(log.matches("could not be reloaded").count(), 1, "{log}");
    for key_file in ["ed25519-1.pem", "ed25519-2.pem"] {
        let pem = std::fs::read_to_string(key(key_file)).unwrap();
        let body = pem.lines().nth(1).unwrap();
        assert!(!log.contains(body), "a key reached the log: {log}");
    }
}

/// Keys that cannot be right stop the start, naming the file.
#[tokio::test]
async fn bad_key_files_refuse_to_start() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let short_rsa = key("rsa-1024.pem");
    let ed = key("ed25519-1.pem");
    let cases = [
        ("RS256", short_rsa.to_str().unwrap(), "2048"),
        ("ES256", ed.to_str().unwrap(), "ed25519-1.pem"),
        ("EdDSA", "/nonexistent/key.pem", "/nonexistent/key.pem"),
    ];
    for (alg, file, expected) in cases {
        let env = [
            ("AUTH_JWT_ALGORITHM", alg),
            ("AUTH_JWT_PRIVATE_KEY_FILE", file),
        ];
        let err = ChildServer::on(&database.url)
            .envs(&env)
            .try_start()
            .await
            .err()
            .unwrap_or_else(|| panic!("{alg} with {file} started"));
        assert!(err.contains(expected), "{alg} {file}: {err}");
        assert!(!err.contains("PRIVATE KEY-----"), "{err}");
    }
}

/// Several replicas must sign with one key: PostgreSQL and MariaDB need a
/// key file with an asymmetric algorithm.
#[tokio::test]
async fn a_shared_database_needs_a_key_file() {
    for backend in Backend::configured() {
        if matches!(backend, Backend::Sqlite) {
            continue;
        }
        let database = TestDatabase::create(&backend).await;
        let err = ChildServer::on(&database.url)
            .envs(&[("AUTH_JWT_ALGORITHM", "EdDSA")])
            .try_start()
            .await
            .err()
            .unwrap_or_else(|| panic!("{backend} started without a key file"));
        assert!(
            err.contains("AUTH_JWT_PRIVATE_KEY_FILE is required"),
            "{err}"
        );
    }
}
