//! Fuzzes `TokenCodec::decode`, the check every bearer token goes through.
//!
//! Input layout: byte 0 picks `expected` (bits 0-1) and the mode (bit 2).
//! - raw mode: the rest of the input is the token, as text. This covers the
//!   JWT parsing in front of the signature check.
//! - structured mode: bytes 1..=7 pick each claim (absent, right, or of a
//!   wrong kind) and the algorithm; the rest is free text used as `jti` or
//!   `user_id`. The claims are signed with the real key, so the fuzzer gets
//!   past the signature and reaches the claim checks behind it.
#![no_main]

use std::{
    borrow::Cow,
    sync::LazyLock,
    time::Duration,
};

use auth_service::tokens::{TokenCodec, TokenType, unix_now};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const KEY: &[u8] = b"fuzz key that is long enough for HS256";

/// Built once: deriving keys per input would only slow the fuzzer down.
static CODEC: LazyLock<TokenCodec> = LazyLock::new(|| {
    TokenCodec::new(
        KEY,
        Duration::from_secs(86_400),
        Duration::from_secs(2_592_000),
    )
    .expect("a non-empty key is accepted")
});
static SIGNING: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_secret(KEY).expect("a non-empty key is accepted"));
/// jsonwebtoken checks `exp` against the wall clock, not against the `now`
/// argument, so "now" must be real time for valid tokens to exist.
static NOW: LazyLock<i64> = LazyLock::new(unix_now);

/// Option `byte % options.len()`; `None` means the claim is left out.
fn pick(byte: u8, options: &[Option<Value>]) -> Option<Value> {
    options[usize::from(byte) % options.len()].clone()
}

/// A token signed with the real key whose claims are chosen by `sel`.
fn structured(sel: &[u8; 7], tail: &str) -> String {
    let now = *NOW;
    let mut claims = serde_json::Map::new();
    let fields: [(&str, Vec<Option<Value>>); 6] = [
        ("token_type", vec![None, Some(json!("access")), Some(json!("refresh")),
            Some(json!("sliding")), Some(json!(tail)), Some(json!(1)), Some(Value::Null)]),
        ("exp", vec![None, Some(json!(now + 3600)), Some(json!(now - 3600)),
            Some(json!(now as f64 + 3600.5)), Some(json!((now + 3600).to_string())),
            Some(json!(i64::MAX)), Some(json!(u64::MAX)), Some(json!(-1))]),
        ("iat", vec![None, Some(json!(now)), Some(json!(now + 3600)), Some(json!(now as f64)),
            Some(json!(now.to_string())), Some(json!(i64::MIN)), Some(json!(u64::MAX)),
            Some(Value::Null)]),
        ("jti", vec![None, Some(json!(tail)), Some(json!("")), Some(json!(5)),
            Some(Value::Null), Some(json!("0123456789abcdef0123456789abcdef"))]),
        ("user_id", vec![None, Some(json!(tail)), Some(json!("42")), Some(json!(42)),
            Some(json!(-1)), Some(json!(1.5)), Some(json!(u64::MAX)), Some(Value::Null),
            Some(json!(true))]),
        ("nbf", vec![None, Some(json!(now - 10)), Some(json!(now + 3600)), Some(json!("x"))]),
    ];
    for ((name, options), byte) in fields.iter().zip(sel) {
        if let Some(value) = pick(*byte, options) {
            claims.insert((*name).to_owned(), value);
        }
    }
    let alg = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512][usize::from(sel[6]) % 3];
    // Signing a JSON object with an HMAC key cannot fail.
    jsonwebtoken::encode(&Header::new(alg), &Value::Object(claims), &SIGNING)
        .expect("signing succeeds")
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let expected = match first & 0b11 {
        1 => Some(TokenType::Access),
        2 => Some(TokenType::Refresh),
        _ => None,
    };
    let token: Cow<'_, str> = match (first & 0b100 != 0, rest.split_first_chunk::<7>()) {
        (true, Some((sel, tail))) => structured(sel, &String::from_utf8_lossy(tail)).into(),
        _ => String::from_utf8_lossy(rest),
    };

    // Invariant 1: decode never panics (a panic here would abort the request
    // task on attacker-controlled input).
    let result = CODEC.decode(&token, expected, *NOW);

    if let Ok(claims) = result {
        // Invariant 2: an accepted token has an id; the blacklist is keyed on
        // it, so an empty jti would make refresh tokens unrevocable.
        assert!(!claims.jti.is_empty(), "accepted a token with an empty jti");
        // Invariant 3: the type asked for is the type returned; otherwise a
        // refresh token would pass as an access token or the other way round.
        if let Some(expected) = expected {
            assert_eq!(claims.token_type, expected, "accepted a token of the wrong type");
        }
        // Invariant 4: a token issued in the future is refused (PyJWT rule).
        assert!(claims.iat <= *NOW, "accepted a token issued in the future");
    }
});
