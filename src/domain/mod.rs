//! Validated values ("parse, don't validate"): each type's only constructor
//! checks its input, so an `Email` or a `Username` that exists is valid and
//! the rest of the service never re-checks it.
//!
//! Parse errors are the caller-facing descriptions that end up as
//! `google.rpc.BadRequest` field violations; the wording follows Django's.

mod avatar;
mod credentials;
mod email;
mod password;
mod public_key;
mod scope;
mod service_account;
mod token_text;
mod user;
mod user_filter;
mod user_ids;
mod username;

pub use avatar::Avatar;
pub use credentials::{Credentials, GivenPassword, LoginName};
pub use email::Email;
pub use password::{MAX_PASSWORD_BYTES, Password, UserAttributes};
pub use public_key::{KeyAlgorithm, PublicKey};
pub use scope::{ADMIN_READ_SCOPE, ADMIN_SCOPE, MAX_SCOPES, RESERVED_SCOPE_PREFIX, Scope, Scopes};
pub use service_account::{
    CredentialId, KeyInfo, MAX_KEYS, MAX_SECRETS, SecretInfo, ServiceAccount,
    ServiceAccountCredentials, ServiceAccountName, StoredKey, StoredSecret, client_secret_digest,
};
pub use token_text::TokenText;
pub use user::{RevocationReason, TokensRevoked, User};
pub use user_filter::UserFilter;
pub use user_ids::{MAX_BATCH_IDS, UserIds};
pub use username::{MAX_USERNAME_CHARS, Username};

/// Lower-case hex SHA-256 of `text`: how digests of high-entropy values
/// (client secrets, reset tokens) and throttle keys are stored.
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// DRF's message for an empty (or all-blank) field.
pub const BLANK: &str = "This field may not be blank.";

/// DRF's message for a field over its maximum length.
fn too_long(max: usize, unit: &str) -> String {
    format!("Ensure this field has no more than {max} {unit}.")
}
