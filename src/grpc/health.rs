//! `grpc.health.v1.Health`: SERVING while the database answers.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::persistence;

/// Every service this server reports on: the whole server ("") and each API.
const HEALTH_SERVICES: [&str; 4] = [
    "",
    "auth.v1.AuthService",
    "auth.v1.UserService",
    "auth.v1.AdminService",
];
/// How often readiness re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

pub(super) async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Keeps health in step with the database: NOT_SERVING while it cannot be
/// reached (so load balancers route around this replica), SERVING again as
/// soon as it answers. The pool reconnects by itself; nothing restarts.
pub(super) async fn watch_database(
    health: HealthReporter,
    db: DatabaseConnection,
    timeout: Duration,
) {
    let mut serving = true;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let reachable = matches!(
            tokio::time::timeout(timeout, persistence::ping(&db)).await,
            Ok(Ok(()))
        );
        if reachable != serving {
            serving = reachable;
            if serving {
                tracing::info!("database reachable again: SERVING");
                set_health(&health, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
                set_health(&health, ServingStatus::NotServing).await;
            }
        }
    }
}
