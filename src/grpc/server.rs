//! The gRPC server: limits, the call-log layer, and every service
//! (health, reflection, AuthService, and UserService and AdminService behind
//! their bearer checks), served on connections of our own (`connections`).

use std::{future::Future, pin::Pin, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    service::{Routes, interceptor::InterceptedService},
    transport::server::TcpIncoming,
};
use tonic_health::ServingStatus;
use tower::Layer;

use super::{
    admin::AdminHandlers,
    auth::AuthHandlers,
    bearer::{AdminBearerAuth, BearerAuth},
    call_log::CallLogLayer,
    client_address::ClientAddress,
    connections::{self, Limits},
    health::{set_health, watch_database},
    tls::Tls,
    users::UserHandlers,
};
use crate::{
    accounts::Accounts,
    config::Settings,
    pb::{
        self, admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
        user_service_server::UserServiceServer,
    },
};

/// The largest request message accepted (64 KiB): far above any valid one.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Metadata (headers) per call: room for a bearer token, not for abuse.
const MAX_METADATA_BYTES: u32 = 16 * 1024;

/// Serves `accounts` on `listener` until `shutdown` resolves, then stops
/// accepting calls and lets the ones in flight finish, for at most the
/// shutdown grace period. Health follows `db`. Over TLS when `tls` is
/// given, plaintext otherwise.
///
/// # Errors
/// The server failed (not a single call: those become statuses), or calls
/// were still in flight when the grace period ended.
pub async fn serve(
    listener: TcpListener,
    accounts: Accounts,
    db: DatabaseConnection,
    settings: &Settings,
    tls: Option<&Tls>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let watcher = tokio::spawn(watch_database(health, db, settings.database.timeout));
    // grpcurl speaks v1alpha, newer clients v1: serve both.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // Every request of ours is small; a bigger one is refused before it
    // is buffered, let alone parsed.
    let bearer = BearerAuth::new(accounts.token_codec());
    let metrics = accounts.metrics();
    let client_address = ClientAddress::new(&settings.throttle);
    let auth = AuthServiceServer::new(AuthHandlers {
        accounts: accounts.clone(),
        client_address: client_address.clone(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let admin = InterceptedService::new(
        AdminServiceServer::new(AdminHandlers {
            accounts: accounts.clone(),
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES),
        // A user's access token or a service token (issue 15).
        AdminBearerAuth::new(accounts.token_codec()),
    );
    let users = InterceptedService::new(
        UserServiceServer::new(UserHandlers {
            accounts,
            client_address,
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES),
        bearer,
    );

    let rpc_metrics = metrics.rpc(method_paths());
    let local_addr = listener.local_addr()?;
    let limits = Limits {
        handshake_timeout: settings.server.handshake_timeout,
        request_timeout: settings.server.request_timeout,
        idle_timeout: settings.server.idle_timeout,
        max_connections: max_connections(settings),
        // One client cannot hog the server: bounded streams per connection.
        max_concurrent_streams: MAX_STREAMS_PER_CONNECTION,
        max_header_list_size: MAX_METADATA_BYTES,
    };
    tracing::info!(
        addr = %local_addr,
        tls = tls.is_some(),
        max_connections = limits.max_connections,
        "serving gRPC"
    );
    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(users)
        .add_service(admin)
        .prepare();
    let service = CallLogLayer::new(rpc_metrics).layer(routes);
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let tls = tls.cloned();
    let grace = settings.server.shutdown_grace;
    let served = serve_with_grace(shutdown, grace, "calls", |signal| {
        connections::serve(incoming, tls, service, limits, signal)
    })
    .await;
    watcher.abort();
    served
}

/// Descriptors kept for what is not a gRPC connection when the connection
/// cap is derived from the descriptor limit, beside the database pool's:
/// the listeners, the HTTP listener's connections, SQLite's read
/// connections, log and key files.
const RESERVED_DESCRIPTORS: u64 = 128;

/// `AUTH_MAX_CONNECTIONS`, or the process's descriptor limit (soft
/// RLIMIT_NOFILE) less the database pool's and [`RESERVED_DESCRIPTORS`]; at
/// least 1. Unreadable limit (not Linux): 1,024, the common soft default.
fn max_connections(settings: &Settings) -> usize {
    if let Some(max) = settings.server.max_connections {
        return max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    }
    let limit = procfs::process::Process::myself()
        .and_then(|process| process.limits())
        .map_or(1024, |limits| match limits.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(limit) => limit,
            procfs::process::LimitValue::Unlimited => u64::from(u32::MAX),
        });
    // Three a pooled connection on SQLite in WAL mode (the file, -wal, -shm).
    let reserved = RESERVED_DESCRIPTORS + 3 * u64::from(settings.database.max_connections);
    usize::try_from(limit.saturating_sub(reserved).max(1))
        .unwrap_or(usize::MAX)
        .min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// Runs `server` (a server that stops accepting when the future it is
/// handed resolves: ours, or tonic's for HTTP) until `shutdown`; then what is `in_flight` gets the
/// shutdown `grace` to finish. Graceful shutdown waits for every connection
/// to close: a client that ignores GOAWAY must not keep the process up for
/// ever.
///
/// # Errors
/// The server's, or work still in flight when the grace period ended: it
/// was cut off, which the exit status must say, not only a log line.
pub(crate) async fn serve_with_grace<'a, S, E>(
    shutdown: impl Future<Output = ()> + Send + 'a,
    grace: Duration,
    in_flight: &str,
    server: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send + 'a>>) -> S,
) -> anyhow::Result<()>
where
    S: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let (signalled, on_signal) = oneshot::channel::<()>();
    let server = server(Box::pin(async move {
        shutdown.await;
        let _ = signalled.send(());
    }));
    let grace_over = async move {
        match on_signal.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => result.map_err(Into::into),
        () = grace_over => Err(anyhow::anyhow!(
            "shutdown grace period ({grace:?}) over with {in_flight} still in flight; they were cut off"
        )),
    }
}

/// Every method the server answers, as the paths calls arrive on
/// (`/auth.v1.UserService/GetMe`), read from the descriptors it serves by
/// reflection: the `method` label's values, fixed at start.
fn method_paths() -> Vec<String> {
    use prost::Message;
    let sets = [
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut paths = Vec::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
}

/// The descriptors reflection serves: our services, health, and the
/// error detail messages our statuses carry (`google.rpc.BadRequest`,
/// `ErrorInfo`, `RetryInfo` …, with the `google/protobuf/duration.proto`
/// they import), so grpcurl and other reflection clients print the details
/// as JSON instead of "is not recognized".
const REFLECTED: [&[u8]; 3] = [
    pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    // tonic-types' own set: exactly the messages `ErrorDetails` encodes.
    tonic_types::pb::FILE_DESCRIPTOR_SET,
];

fn reflection() -> tonic_reflection::server::Builder<'static> {
    REFLECTED.into_iter().fold(
        tonic_reflection::server::Builder::configure(),
        tonic_reflection::server::Builder::register_encoded_file_descriptor_set,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use prost::Message;
    use tonic::Status;
    use tonic_types::StatusExt;

    use super::*;
    use crate::error::{AuthFailure, Error};

    /// Every file the reflection service serves, by name.
    fn reflected_files() -> HashMap<String, prost_types::FileDescriptorProto> {
        REFLECTED
            .into_iter()
            .flat_map(|set| {
                prost_types::FileDescriptorSet::decode(set)
                    .expect("a descriptor set")
                    .file
            })
            .map(|file| (file.name().to_owned(), file))
            .collect()
    }

    /// `.package.Message` names of every message in `files`, nested ones too.
    fn message_names(files: &HashMap<String, prost_types::FileDescriptorProto>) -> HashSet<String> {
        fn walk(
            prefix: &str,
            messages: &[prost_types::DescriptorProto],
            out: &mut HashSet<String>,
        ) {
            for message in messages {
                let name = format!("{prefix}.{}", message.name());
                walk(&name, &message.nested_type, out);
                out.insert(name);
            }
        }
        let mut names = HashSet::new();
        for file in files.values() {
            walk(
                &format!(".{}", file.package()),
                &file.message_type,
                &mut names,
            );
        }
        names
    }

    /// One error of each kind the service returns with details: each detail
    /// message it sends (whatever gets added later) must be resolvable by a
    /// reflection client, imports included.
    #[test]
    fn every_error_detail_sent_is_served_by_reflection() {
        let errors = [
            Error::invalid("email", "Enter a valid email address."),
            Error::from(AuthFailure::InvalidCredentials),
            Error::hash_queue_full(),
        ];
        let files = reflected_files();
        let messages = message_names(&files);
        let mut sent = HashSet::new();
        for err in errors {
            let status = Status::from(err);
            let details = tonic_types::pb::Status::decode(status.details()).expect("details");
            assert!(!details.details.is_empty(), "{status:?} has no details");
            for any in details.details {
                let name = any
                    .type_url
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                sent.insert(format!(".{name}"));
            }
        }
        for name in &sent {
            assert!(
                messages.contains(name),
                "{name} is not served by reflection"
            );
        }
        for detail in [
            ".google.rpc.BadRequest",
            ".google.rpc.ErrorInfo",
            ".google.rpc.RetryInfo",
        ] {
            assert!(sent.contains(detail), "no error sends {detail}: {sent:?}");
        }
        for file in files.values() {
            for dependency in &file.dependency {
                assert!(
                    files.contains_key(dependency),
                    "{} imports {dependency}, not served",
                    file.name()
                );
            }
        }
        // The details decode too: the status's own extraction agrees.
        let status = Status::from(Error::hash_queue_full());
        assert!(status.get_error_details().retry_info().is_some());
    }
}
