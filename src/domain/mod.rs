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
mod token_text;
mod user;
mod user_filter;
mod user_ids;
mod username;

pub use avatar::Avatar;
pub use credentials::{Credentials, GivenPassword, LoginName};
pub use email::Email;
pub use password::{MAX_PASSWORD_BYTES, Password, UserAttributes};
pub use token_text::TokenText;
pub use user::{RevocationReason, TokensRevoked, User};
pub use user_filter::UserFilter;
pub use user_ids::{MAX_BATCH_IDS, UserIds};
pub use username::{MAX_USERNAME_CHARS, Username};

/// DRF's message for an empty (or all-blank) field.
pub const BLANK: &str = "This field may not be blank.";

/// DRF's message for a field over its maximum length.
fn too_long(max: usize, unit: &str) -> String {
    format!("Ensure this field has no more than {max} {unit}.")
}
