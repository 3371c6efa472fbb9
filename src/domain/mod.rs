//! Validated values ("parse, don't validate"): each type's only constructor
//! checks its input, so an `Email` or a `Username` that exists is valid and
//! the rest of the service never re-checks it.
//!
//! Parse errors are the caller-facing descriptions that end up as
//! `google.rpc.BadRequest` field violations; the wording follows Django's.

mod avatar;
mod email;
mod password;
mod username;

pub use avatar::Avatar;
pub use email::Email;
pub use password::{MAX_PASSWORD_BYTES, Password, UserAttributes};
pub use username::{MAX_USERNAME_CHARS, Username};
