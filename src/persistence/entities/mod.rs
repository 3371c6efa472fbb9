//! SeaORM entities, one per table created in `migrations/`.

pub mod blacklisted_token;
pub mod deleted_user;
pub mod login_attempt;
pub mod outstanding_token;
pub mod password_reset_token;
pub mod service_account;
pub mod service_account_key;
pub mod service_account_secret;
pub mod service_assertion_jti;
pub mod user;
