//! Fuzzes what request fields go through before anything else: the domain
//! parsers (`Email`, `Username`, `Password`, `Avatar`, login `Credentials`)
//! and the ListUsers page token codec. The whole input, as text, is fed to every one of them; its
//! first 8 bytes are also an i64 for the page-token round trip.
#![no_main]

use std::sync::LazyLock;

use auth_service::{
    domain::{
        Avatar, Credentials, Email, MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS, Password,
        UserAttributes, Username,
    },
    accounts::PageTokenCodec,
};
use libfuzzer_sys::fuzz_target;

/// Keyed once, as the server does at start-up.
static PAGES: LazyLock<PageTokenCodec> = LazyLock::new(|| {
    PageTokenCodec::new(b"fuzz key that is long enough for HS256").expect("HMAC takes any key")
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;
    // Invariant 0, for every parser below: no panic. They run on
    // unauthenticated request fields.

    if let Ok(email) = Email::parse(text) {
        // The email and its key go to columns of 255 characters.
        assert!(email.as_str().chars().count() <= 255, "email over 255 chars: {email:?}");
        let key = email.key();
        assert!(key.chars().count() <= 255, "email key over 255 chars: {key:?}");
        // Uniqueness is decided on the key: it must already be lower-case,
        // or two spellings of one address could map to two users.
        assert_eq!(key.to_lowercase(), key, "email key is not lower-case");
    }

    if let Ok(name) = Username::parse(text) {
        let chars = name.as_str().chars().count();
        assert!((1..=150).contains(&chars), "username of {chars} chars: {name:?}");
        // A stored username is parsed again at login; it must come back the
        // same, or the user could not log in under the name they registered.
        assert_eq!(Username::parse(name.as_str()).as_ref(), Ok(&name), "not idempotent");
    }

    // Password: text up to the first NUL; the similarity check compares it
    // with a username and an email taken from what follows (NUL-separated).
    let mut parts = text.splitn(3, '\0');
    let password = parts.next().unwrap_or_default();
    let user = UserAttributes {
        username: parts.next().unwrap_or_default(),
        email: parts.next().unwrap_or_default(),
    };
    if let Ok(password) = Password::parse(password.to_owned(), user) {
        let password = password.expose();
        // The size cap is what bounds argon2 work per request.
        assert!(password.len() <= MAX_PASSWORD_BYTES, "password over the cap");
        // Django's MinimumLength and NumericPassword validators.
        assert!(password.chars().count() >= 8, "password under 8 chars");
        assert!(!password.chars().all(char::is_numeric), "numeric password");
    }

    // Login: the name as given, the password after the first NUL.
    let (name, login_password) = text.split_once('\0').unwrap_or((text, "pw"));
    if let Ok(credentials) = Credentials::parse(name, login_password.to_owned()) {
        // Both are bounded before any lookup or hashing.
        assert!(name.chars().count() <= MAX_USERNAME_CHARS, "login name over the cap");
        assert!(credentials.password().len() <= MAX_PASSWORD_BYTES, "login password over the cap");
        // A name registered as a username logs in under the same key.
        if let Ok(username) = Username::parse(name) {
            assert!(credentials.name.could_exist(), "a valid username cannot exist");
            assert_eq!(credentials.name.key(), username.key(), "login key differs");
        }
    }

    if let Ok(avatar) = Avatar::parse(text) {
        let url = avatar.as_str();
        // What is stored is what clients will load: it must be a plain
        // absolute http(s) URL. The scheme is compared ignoring ASCII case,
        // which RFC 3986 and Django's URLValidator allow ("HTTPS://…").
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        assert!(
            lower.starts_with("http://") || lower.starts_with("https://"),
            "avatar is not an absolute http(s) URL: {url:?}"
        );
        assert!(url.chars().count() <= 200, "avatar over 200 chars: {url:?}");
    }

    // Page tokens arrive from clients: decoding anything must not panic.
    if let Ok(id) = PAGES.decode(text) {
        // The codec only ever hands out `encode(id)`, with a 16-byte tag; any
        // other accepted non-empty string means the HMAC check is weaker than
        // designed (e.g. a shorter tag that can be guessed).
        if !text.is_empty() {
            assert_eq!(PAGES.encode(id), text, "accepted a page token encode() never produces");
        }
    }
    // Round trip: the id we hand out is the id we get back.
    let mut id = [0u8; 8];
    let n = data.len().min(8);
    id[..n].copy_from_slice(&data[..n]);
    let id = i64::from_be_bytes(id);
    assert_eq!(PAGES.decode(&PAGES.encode(id)).ok(), Some(id), "page token round trip");
});
