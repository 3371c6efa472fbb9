//! Hostile strings in every string field of every RPC (NUL, lone combining
//! marks, strings NFKC blows up, RTL overrides, 4-byte emoji, length
//! boundaries): whatever the input, no call answers INTERNAL or UNKNOWN (a
//! database refusing a value is a bug, not an answer), and login and
//! register keep their documented answers. On PostgreSQL, for one, a login
//! with 150 × U+FDFA or a NUL in the username must not fail inserting its
//! throttle key.

use auth_service::{error::INVALID_CREDENTIALS, grpc::MAX_REQUEST_BYTES, pb};
use prost::Message;
use tonic::{Code, Request, Status, metadata::AsciiMetadataValue};
use tonic_types::StatusExt;

use crate::helpers::{
    Backend, HS256_HEADER, SECRET, TestApp, bearer, forge, on_every_backend, register_request,
    simplejwt_claims,
};

/// A password that is plausible but nobody's: a hostile username must never
/// log in, whatever user registered along the way.
const WRONG_PASSWORD: &str = "plausible but wrong password";

/// Metadata values above this are not sent: the server's 16 KiB header
/// limit makes the HTTP/2 layer refuse them (client-side INTERNAL, tested
/// in hardening.rs), so they never reach the service.
const MAX_METADATA_PROBE: usize = 12 * 1024;

/// (description, value) of every hostile string.
fn hostile_strings() -> Vec<(String, String)> {
    let fdfa = |n: usize| "\u{FDFA}".repeat(n);
    let mut strings: Vec<(String, String)> = vec![
        ("empty".into(), String::new()),
        ("ASCII whitespace only".into(), " \t ".into()),
        (
            "Unicode whitespace only".into(),
            "\u{3000}\u{a0}\n\u{2028}".into(),
        ),
        ("NUL alone".into(), "\0".into()),
        ("NUL inside".into(), "ab\0cd".into()),
        ("NUL at start".into(), "\0abcd".into()),
        ("NUL at end".into(), "abcd\0".into()),
        ("64 NULs".into(), "\0".repeat(64)),
        (
            "C0 controls and DEL".into(),
            "a\u{1}\u{1b}[31m\u{7f}b".into(),
        ),
        ("lone U+0301".into(), "\u{301}".into()),
        ("200 × U+0301".into(), "\u{301}".repeat(200)),
        (
            "a + 1000 × U+0301".into(),
            format!("a{}", "\u{301}".repeat(1000)),
        ),
        // NFKC turns each U+FDFA into 18 characters.
        ("150 × U+FDFA".into(), fdfa(150)),
        ("151 × U+FDFA".into(), fdfa(151)),
        // Letters, so a valid-looking name, that NFKC triples.
        ("150 × U+FB03 (ﬃ)".into(), "\u{FB03}".repeat(150)),
        // Lower-cases to two characters.
        ("150 × U+0130 (İ)".into(), "\u{130}".repeat(150)),
        // The request must still fit the 64 KiB message limit to get deep.
        (
            "U+FDFA just under the 64 KiB message limit".into(),
            fdfa((MAX_REQUEST_BYTES - 1024) / 3),
        ),
        // Over the limit: RESOURCE_EXHAUSTED before any handler runs.
        ("64 KiB of U+FDFA".into(), fdfa(MAX_REQUEST_BYTES / 3 + 1)),
        ("RTL override".into(), "\u{202E}nimda".into()),
        (
            "RTL override inside".into(),
            "ad\u{202E}min\u{202C}x".into(),
        ),
        ("4-byte emoji".into(), "😀".into()),
        ("name with emoji".into(), "user😀".into()),
        ("ZWJ emoji sequence".into(), "👩\u{200D}👩\u{200D}👧".into()),
        ("BOM prefix".into(), "\u{FEFF}admin".into()),
        ("noncharacter U+FFFF".into(), "\u{FFFF}".into()),
        ("replacement character".into(), "\u{FFFD}".into()),
        ("SQL quote".into(), "' OR '1'='1' --".into()),
        ("LIKE wildcards and backslash".into(), "%_\\%".into()),
        (
            "JWT-ish with NUL".into(),
            "eyJhbGciOiJIUzI1NiJ9\0.eyJ1c2VyX2lkIjoiMSJ9.c2ln".into(),
        ),
    ];
    for n in [150, 151, 200, 201, 255, 256, 320, 321] {
        for (kind, c) in [
            ("ASCII", 'a'),
            ("2-byte é", '\u{e9}'),
            ("3-byte 用", '用'),
            ("4-byte 😀", '😀'),
        ] {
            strings.push((format!("{n} × {kind}"), c.to_string().repeat(n)));
        }
    }
    strings
}

/// The answers a call may give besides INTERNAL and UNKNOWN, which it never may.
#[derive(Clone, Copy)]
enum Expect {
    /// OK, ALREADY_EXISTS, or INVALID_ARGUMENT naming the field.
    Register(&'static str),
    /// simplejwt's one UNAUTHENTICATED answer, INVALID_ARGUMENT naming the
    /// field (blank, too long) or RESOURCE_EXHAUSTED (throttled).
    Login(&'static str),
    /// UNAUTHENTICATED (INVALID_ARGUMENT naming the field when blank), or OK
    /// when the hostile part may leave a valid token intact.
    Token { ok_allowed: bool },
    /// OK or INVALID_ARGUMENT naming the field.
    Field(&'static str),
}

/// Every answer that broke a rule, as "rpc field [input]: status".
#[derive(Default)]
struct Findings {
    internal: Vec<String>,
    contract: Vec<String>,
    calls: usize,
}

impl Findings {
    /// Checks the answer to a call carrying `input` in `field`; `len` is the
    /// encoded request message, to tell answers the size limit decides.
    fn check(
        &mut self,
        (rpc, field, input): (&str, &str, &str),
        len: Option<usize>,
        result: Result<(), Status>,
        expect: Expect,
    ) {
        self.calls += 1;
        let what = format!("{rpc} {field} [{input}]");
        let status = result.err();
        if let Some(s) = status.as_ref()
            && matches!(s.code(), Code::Internal | Code::Unknown)
        {
            self.internal
                .push(format!("{what}: {:?} {:?}", s.code(), s.message()));
            return;
        }
        let oversize = len.is_some_and(|n| n > MAX_REQUEST_BYTES);
        let fine = match (&status, expect) {
            (Some(s), _) if oversize => s.code() == Code::ResourceExhausted,
            (None, _) if oversize => false,
            (None, Expect::Register(_) | Expect::Field(_)) => true,
            (None, Expect::Token { ok_allowed }) => ok_allowed,
            (None, Expect::Login(_)) => false,
            (Some(s), Expect::Register(f)) => s.code() == Code::AlreadyExists || names_field(s, f),
            (Some(s), Expect::Login(f)) => {
                (s.code() == Code::Unauthenticated && s.message() == INVALID_CREDENTIALS)
                    || names_field(s, f)
                    || s.code() == Code::ResourceExhausted
            }
            // A blank token is a missing field (DRF's 400), anything else a bad token.
            (Some(s), Expect::Token { .. }) => {
                s.code() == Code::Unauthenticated || names_field(s, field)
            }
            (Some(s), Expect::Field(f)) => names_field(s, f),
        };
        if !fine {
            let answer = status.map_or_else(
                || "OK".to_owned(),
                |s| format!("{:?} {:?}", s.code(), s.message()),
            );
            self.contract.push(format!("{what}: {answer}"));
        }
    }

    /// What went wrong on `backend`, if anything.
    fn report(&self, backend: &str) -> Option<String> {
        if self.internal.is_empty() && self.contract.is_empty() {
            return None;
        }
        Some(format!(
            "on {backend}, of {} calls:\n{} answered INTERNAL/UNKNOWN:\n  {}\n{} broke their contract:\n  {}",
            self.calls,
            self.internal.len(),
            self.internal.join("\n  "),
            self.contract.len(),
            self.contract.join("\n  "),
        ))
    }
}

/// Runs `probe` on every backend and only then asserts, so that one
/// failure lists what every backend answered.
async fn on_every_backend_report(probe: impl AsyncFn(&Backend) -> Findings) {
    let reports = std::sync::Mutex::new(Vec::new());
    on_every_backend(async |backend| {
        let findings = probe(&backend).await;
        eprintln!("{} calls on {backend}", findings.calls);
        if let Some(report) = findings.report(&backend.to_string()) {
            reports.lock().unwrap().push(report);
        }
    })
    .await;
    let reports = reports.into_inner().unwrap();
    assert!(reports.is_empty(), "{}", reports.join("\n"));
}

/// INVALID_ARGUMENT whose `google.rpc.BadRequest` names `field`.
fn names_field(status: &Status, field: &str) -> bool {
    status.code() == Code::InvalidArgument
        && status
            .get_error_details()
            .bad_request()
            .is_some_and(|b| b.field_violations.iter().any(|v| v.field == field))
}

fn blank(value: &str) -> bool {
    value.trim_ascii().is_empty()
}

/// `message` with `authorization: value` if HTTP/2 can carry it: metadata
/// is bytes 0x20–0xFF and tab only (non-ASCII goes as opaque UTF-8 octets),
/// so NUL, other controls and newlines cannot be sent at all.
fn with_raw_authorization<T>(message: T, value: &str) -> Option<Request<T>> {
    if value.len() > MAX_METADATA_PROBE {
        return None;
    }
    let value = AsciiMetadataValue::try_from(value.as_bytes()).ok()?;
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Some(request)
}

/// The state the probes need: an existing user, its tokens, a page token.
struct Fixture {
    access: String,
    refresh: String,
    page_token: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    app.register("victim").await;
    app.register("bystander").await;
    let tokens = app.login("victim").await;
    let page = app
        .users
        .clone()
        .list_users(bearer(
            pb::ListUsersRequest {
                page_size: 1,
                page_token: String::new(),
                filter: String::new(),
            },
            &tokens.access,
        ))
        .await
        .map(tonic::Response::into_inner)
        .expect("ListUsers");
    assert!(!page.next_page_token.is_empty());
    Fixture {
        access: tokens.access,
        refresh: tokens.refresh,
        page_token: page.next_page_token,
    }
}

async fn register_probes(app: &TestApp, findings: &mut Findings, hostile: &[(String, String)]) {
    let mut n = 0;
    for (input, h) in hostile {
        // Bare, and inside a valid shape so that it gets past the syntax checks.
        for (field, shape, value) in [
            ("email", "bare", h.clone()),
            ("email", "in the local part", format!("x{h}@example.com")),
            ("username", "bare", h.clone()),
            ("password", "bare", h.clone()),
            ("avatar", "bare", h.clone()),
            ("avatar", "in a URL", format!("https://example.com/{h}")),
        ] {
            n += 1;
            let mut request = register_request(&format!("reg{n}"));
            match field {
                "email" => request.email = value,
                "username" => request.username = value,
                "password" => request.password = value,
                _ => request.avatar = Some(value),
            }
            let len = request.encoded_len();
            let result = app.auth.clone().register(request).await.map(drop);
            findings.check(
                ("Register", field, &format!("{input}, {shape}")),
                Some(len),
                result,
                Expect::Register(field),
            );
        }
    }
}

/// Twice each: the second attempt finds the throttle row of the first.
async fn login_probes(app: &TestApp, findings: &mut Findings, hostile: &[(String, String)]) {
    for (input, h) in hostile {
        for pass in ["1st", "2nd"] {
            let input = format!("{input}, {pass}");
            for (field, username, password) in [
                ("username", h.as_str(), WRONG_PASSWORD),
                ("password", "victim", h.as_str()),
            ] {
                let request = pb::ObtainTokenPairRequest {
                    username: username.into(),
                    password: password.into(),
                };
                let len = request.encoded_len();
                let result = app.auth.clone().obtain_token_pair(request).await.map(drop);
                findings.check(
                    ("ObtainTokenPair", field, &input),
                    Some(len),
                    result,
                    Expect::Login(field),
                );
            }
            // The address throttle reads this header (it is on in these tests).
            let request = pb::ObtainTokenPairRequest {
                username: "victim".into(),
                password: WRONG_PASSWORD.into(),
            };
            if let Some(mut request) = with_raw_authorization(request, h) {
                let value = request.metadata_mut().remove("authorization");
                if let Some(value) = value {
                    request.metadata_mut().insert("x-forwarded-for", value);
                }
                let result = app.auth.clone().obtain_token_pair(request).await.map(drop);
                findings.check(
                    ("ObtainTokenPair", "x-forwarded-for metadata", &input),
                    None,
                    result,
                    Expect::Login("x-forwarded-for"),
                );
            }
        }
    }
}

/// Bare, appended to a valid token, and inside a JWT-shaped string.
fn token_shapes(valid: &str, h: &str) -> Vec<(&'static str, String, bool)> {
    let (header_payload, _) = valid.rsplit_once('.').unwrap_or_default();
    let mut claims = simplejwt_claims("refresh", 1, 600);
    claims["jti"] = h.into();
    vec![
        ("bare", h.to_owned(), false),
        ("after a valid token", format!("{valid}{h}"), blank(h)),
        ("as the signature", format!("{header_payload}.{h}"), false),
        (
            "as the jti of a token signed with another key",
            forge(HS256_HEADER, &claims, "not the service key"),
            false,
        ),
    ]
}

async fn token_probes(
    app: &TestApp,
    findings: &mut Findings,
    hostile: &[(String, String)],
    fx: &Fixture,
) {
    for (input, h) in hostile {
        for (shape, token, ok_allowed) in token_shapes(&fx.refresh, h) {
            let input = format!("{input}, {shape}");
            let expect = Expect::Token { ok_allowed };
            let request = pb::RefreshTokenRequest {
                refresh: token.clone(),
            };
            let len = request.encoded_len();
            let result = app.auth.clone().refresh_token(request).await.map(drop);
            findings.check(
                ("RefreshToken", "refresh", &input),
                Some(len),
                result,
                expect,
            );
            let request = pb::VerifyTokenRequest { token };
            let len = request.encoded_len();
            let result = app.auth.clone().verify_token(request).await.map(drop);
            findings.check(("VerifyToken", "token", &input), Some(len), result, expect);
        }
        // Logout last: with an empty suffix it blacklists the valid token,
        // which the probes above no longer need.
        for (shape, token, ok_allowed) in token_shapes(&fx.refresh, h) {
            let input = format!("{input}, {shape}");
            let request = pb::LogoutRequest { refresh: token };
            let len = request.encoded_len();
            let result = app.auth.clone().logout(request).await.map(drop);
            findings.check(
                ("Logout", "refresh", &input),
                Some(len),
                result,
                Expect::Token { ok_allowed },
            );
        }
    }
}

async fn user_service_probes(
    app: &TestApp,
    findings: &mut Findings,
    hostile: &[(String, String)],
    fx: &Fixture,
) {
    for (input, h) in hostile {
        for (shape, avatar) in [
            ("bare", h.clone()),
            ("in a URL", format!("https://example.com/{h}")),
        ] {
            let request = pb::UpdateAvatarRequest { avatar };
            let len = request.encoded_len();
            let result = app
                .users
                .clone()
                .update_avatar(bearer(request, &fx.access))
                .await
                .map(drop);
            findings.check(
                ("UpdateAvatar", "avatar", &format!("{input}, {shape}")),
                Some(len),
                result,
                Expect::Field("avatar"),
            );
        }
        for (shape, page_token) in [
            ("bare", h.clone()),
            ("after a valid page token", format!("{}{h}", fx.page_token)),
        ] {
            let request = pb::ListUsersRequest {
                page_size: 1,
                page_token,
                filter: String::new(),
            };
            let len = request.encoded_len();
            let result = app
                .users
                .clone()
                .list_users(bearer(request, &fx.access))
                .await
                .map(drop);
            findings.check(
                ("ListUsers", "page_token", &format!("{input}, {shape}")),
                Some(len),
                result,
                Expect::Field("page_token"),
            );
        }
        // ListUsers' filter: the hostile string as the whole filter, and as
        // each field's value (reaching the database when it parses).
        let quoted = h.replace('\\', "\\\\").replace('"', "\\\"");
        for (shape, filter) in [
            ("bare", h.clone()),
            ("as an email", format!("email = \"{quoted}\"")),
            ("in an email", format!("email = \"a{quoted}@example.com\"")),
            ("as a username", format!("username = \"{quoted}\"")),
            ("as a flag", format!("is_active = {h}")),
        ] {
            let request = pb::ListUsersRequest {
                page_size: 1,
                page_token: String::new(),
                filter,
            };
            let len = request.encoded_len();
            let result = app
                .users
                .clone()
                .list_users(bearer(request, &fx.access))
                .await
                .map(drop);
            findings.check(
                ("ListUsers", "filter", &format!("{input}, {shape}")),
                Some(len),
                result,
                Expect::Field("filter"),
            );
        }
        // Values HTTP/2 cannot carry (NUL, newlines, over the metadata
        // limit) are skipped by `with_raw_authorization`: no client can send them.
        for (shape, value, ok_allowed) in [
            ("bare", h.clone(), false),
            ("after Bearer", format!("Bearer {h}"), false),
            (
                "after a valid bearer token",
                format!("Bearer {}{h}", fx.access),
                blank(h),
            ),
            (
                "as a second word",
                format!("Bearer {} {h}", fx.access),
                blank(h),
            ),
        ] {
            let input = format!("{input}, {shape}");
            let expect = Expect::Token { ok_allowed };
            if let Some(request) = with_raw_authorization(pb::GetMeRequest {}, &value) {
                let result = app.users.clone().get_me(request).await.map(drop);
                findings.check(("GetMe", "authorization", &input), None, result, expect);
            }
            let request = pb::ListUsersRequest {
                page_size: 1,
                page_token: String::new(),
                filter: String::new(),
            };
            if let Some(request) = with_raw_authorization(request, &value) {
                let result = app.users.clone().list_users(request).await.map(drop);
                findings.check(("ListUsers", "authorization", &input), None, result, expect);
            }
            let request = pb::UpdateAvatarRequest {
                avatar: String::new(),
            };
            if let Some(request) = with_raw_authorization(request, &value) {
                let result = app.users.clone().update_avatar(request).await.map(drop);
                findings.check(
                    ("UpdateAvatar", "authorization", &input),
                    None,
                    result,
                    expect,
                );
            }
        }
    }
}

#[tokio::test]
async fn hostile_strings_in_every_field_never_answer_internal() {
    on_every_backend_report(async |backend| {
        let app = TestApp::spawn_with(backend, |s| {
            // Cheap hashes: hundreds of registrations and logins. The
            // parameters change only the hash's cost, not any code path.
            s.passwords.memory_kib = 64;
            s.passwords.iterations = 1;
            // Every attempt passes the throttle and reaches the lookup and
            // the hash, and writes its counter rows (username and address).
            s.throttle.failure_limit = 1_000_000;
            s.throttle.address_failure_limit = 1_000_000;
            s.throttle.address_header = Some("x-forwarded-for".into());
        })
        .await;
        let fx = fixture(&app).await;
        let hostile = hostile_strings();
        let mut findings = Findings::default();
        register_probes(&app, &mut findings, &hostile).await;
        login_probes(&app, &mut findings, &hostile).await;
        user_service_probes(&app, &mut findings, &hostile, &fx).await;
        token_probes(&app, &mut findings, &hostile, &fx).await;

        // Still serving: a normal registration, login and bearer call.
        app.register("survivor").await;
        let tokens = app.login("survivor").await;
        app.get_me(&tokens.access)
            .await
            .expect("GetMe after the probes");
        app.stop().await;
        findings
    })
    .await;
}

/// Tokens that pass the signature check carry strings too: a service that
/// shares the signing key (a Django peer, or a leaked key) decides their
/// claims, and `jti` reaches the blacklist tables. OK or UNAUTHENTICATED,
/// never INTERNAL or UNKNOWN.
#[tokio::test]
async fn hostile_claims_in_validly_signed_tokens_never_answer_internal() {
    on_every_backend_report(async |backend| {
        let app = TestApp::spawn(backend).await;
        let victim = app.register("victim").await;
        let mut findings = Findings::default();
        for (input, h) in hostile_strings() {
            for kind in ["refresh", "access"] {
                for claim in ["jti", "token_type", "user_id"] {
                    let mut claims = simplejwt_claims(kind, victim.id, 600);
                    claims[claim] = h.as_str().into();
                    let token = forge(HS256_HEADER, &claims, SECRET);
                    let input = format!("{input}, {kind} token");
                    let field = format!("{claim} claim");
                    let anything = Expect::Token { ok_allowed: true };
                    let request = pb::RefreshTokenRequest {
                        refresh: token.clone(),
                    };
                    let len = request.encoded_len();
                    let result = app.auth.clone().refresh_token(request).await.map(drop);
                    findings.check(
                        ("RefreshToken", &field, &input),
                        Some(len),
                        result,
                        anything,
                    );
                    let request = pb::VerifyTokenRequest {
                        token: token.clone(),
                    };
                    let len = request.encoded_len();
                    let result = app.auth.clone().verify_token(request).await.map(drop);
                    findings.check(("VerifyToken", &field, &input), Some(len), result, anything);
                    if let Some(request) =
                        with_raw_authorization(pb::GetMeRequest {}, &format!("Bearer {token}"))
                    {
                        let result = app.users.clone().get_me(request).await.map(drop);
                        findings.check(("GetMe", &field, &input), None, result, anything);
                    }
                    let request = pb::LogoutRequest { refresh: token };
                    let len = request.encoded_len();
                    let result = app.auth.clone().logout(request).await.map(drop);
                    findings.check(("Logout", &field, &input), Some(len), result, anything);
                }
            }
        }
        app.stop().await;
        findings
    })
    .await;
}
