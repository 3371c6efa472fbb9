//! Replicas started together on an empty database all come up: the first
//! applies the migrations while the others wait for it, instead of racing it
//! to create the same tables (and failing on a duplicate `pg_type`).

use std::time::Duration;

use crate::{
    child::{CHEAP_HASHING, ChildServer, stderr},
    helpers::{TestDatabase, on_every_backend, register_request},
};

const REPLICAS: usize = 4;
/// Each trial is a fresh database: the race is only on the first start.
const TRIALS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_an_empty_database_all_serve() {
    // Every backend runs before the verdict, so one failure report covers all.
    let failures = std::sync::Mutex::new(Vec::new());
    on_every_backend(async |backend| {
        for trial in 0..TRIALS {
            let database = TestDatabase::create(&backend).await;
            // Spawned within milliseconds of each other: each start spawns
            // its process on the first poll, before waiting for it.
            let started = futures::future::join_all(
                (0..REPLICAS).map(|_| ChildServer::try_start(&database.url, &CHEAP_HASHING)),
            )
            .await;
            let mut servers = Vec::new();
            for result in started {
                match result {
                    Ok(server) => servers.push(server),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{backend}, trial {trial}: {e}")),
                }
            }
            // Each one serves the schema: a Register on each.
            for (i, server) in servers.iter().enumerate() {
                server
                    .auth_client()
                    .register(register_request(&format!("replica{trial}x{i}")))
                    .await
                    .unwrap_or_else(|s| panic!("trial {trial}, replica {i}: {s:?}"));
            }
            for server in servers {
                let output = server.terminate(Duration::from_secs(30)).await;
                assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            }
        }
    })
    .await;
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} replicas exited before serving ({TRIALS} trials of {REPLICAS} per backend):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
