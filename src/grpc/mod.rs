//! Transport: the gRPC surface. Handlers decode a request into domain
//! values ([`convert`]), call one use case of [`crate::accounts`], and
//! encode its answer; errors become statuses in one place ([`status`]).
//! Also here: the bearer-token interceptor, the per-call log line, health,
//! and the server itself. Nothing outside this module uses tonic or the
//! generated protobuf types.

mod admin;
mod auth;
mod bearer;
mod call_log;
mod client_address;
mod codec_status;
mod connections;
mod convert;
mod health;
mod request_body;
mod server;
mod status;
pub mod tls;
mod users;

pub use bearer::BearerAuth;
pub(crate) use server::serve_with_grace;
pub use server::{MAX_REQUEST_BYTES, serve};
