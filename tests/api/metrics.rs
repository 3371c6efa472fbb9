//! `GET /metrics` on the HTTP listener: known traffic, then the scrape
//! parsed by Prometheus's own Python client (a real text-format parser),
//! and every counter moved by exactly what was sent.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use auth_service::{pb, telemetry::metrics::LATENCY_BUCKETS, web::METRICS_PATH};
use axum::body::Body;
use http::{Request, StatusCode, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, bearer, expect_code, on_every_backend},
    python::{interop_dir, python},
};

/// `GET /metrics` with `accept`, if any: the content type and the body.
pub(crate) async fn fetch(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::get(format!("http://{addr}{METRICS_PATH}"));
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(request.body(Body::empty()).unwrap()),
    )
    .await
    .expect("an answer within 30 s")
    .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(Body::new(response.into_body()), 16 * 1024 * 1024)
        .await
        .unwrap();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// One scrape, as `prometheus_client.parser` read it.
struct Scrape {
    /// Family name → type.
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    async fn of(addr: SocketAddr) -> Scrape {
        let (content_type, text) = fetch(addr, None).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        tokio::task::spawn_blocking(move || Scrape::parse(&text))
            .await
            .unwrap()
    }

    /// Through tests/interop/parse_metrics.py: a scrape it cannot parse fails.
    fn parse(text: &str) -> Scrape {
        let python = python();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        let output = Command::new(python)
            .arg(interop_dir().join("parse_metrics.py"))
            .stdin(Stdio::from(file.reopen().unwrap()))
            .output()
            .expect("python");
        assert!(
            output.status.success(),
            "the parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let families = parsed["families"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, kind)| (name.clone(), kind.as_str().unwrap().to_owned()))
            .collect();
        let samples = parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let labels = sample["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let value = sample["value"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("not a finite number: {sample}"));
                (sample["name"].as_str().unwrap().to_owned(), labels, value)
            })
            .collect();
        Scrape { families, samples }
    }

    /// The sample `name` with exactly `labels`, if present.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|&(_, _, value)| value)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    fn of_name<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a (String, BTreeMap<String, String>, f64)> + 'a {
        self.samples.iter().filter(move |(n, _, _)| n == name)
    }
}

/// How much `name{labels}` moved from `before` to `after` (absent before: from 0).
fn moved(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.value(name, labels).unwrap_or(0.0)
}

const AUTH: &str = "/auth.v1.AuthService/";
const USERS: &str = "/auth.v1.UserService/";

#[tokio::test]
async fn the_scrape_counts_exactly_the_traffic_sent() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
            s.tokens.policy.rotate_refresh_tokens = true;
            s.throttle.failure_limit = 2;
            s.cache.ttl = Duration::from_secs(600);
        })
        .await;
        let addr = app.http_addr.expect("the HTTP listener is on");
        let before = Scrape::of(addr).await;

        // 3 registrations; 2 good logins; 2 wrong passwords, then a throttled one.
        app.register("alice").await;
        app.register("bob").await;
        let carol = app.register("carol").await;
        let alice = app.login("alice").await;
        let carol_pair = app.login("carol").await;
        for _ in 0..2 {
            expect_code(
                app.try_login("bob", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        expect_code(
            app.try_login("bob", PASSWORD).await,
            Code::ResourceExhausted,
        );
        // 4 GetMe, and 1 without a token.
        for _ in 0..4 {
            app.get_me(&alice.access).await.unwrap();
        }
        let anonymous = app.users.clone().get_me(pb::GetMeRequest {}).await;
        expect_code(anonymous, Code::Unauthenticated);
        // A refresh (rotating), then the rotated-out token twice: two reuses,
        // one revocation (the replay finds nothing left to revoke).
        app.refresh(&alice.refresh).await.unwrap();
        expect_code(app.refresh(&alice.refresh).await, Code::Unauthenticated);
        expect_code(app.refresh(&alice.refresh).await, Code::Unauthenticated);
        // LogoutAll; then carol, deactivated, logs in with the right password.
        app.users
            .clone()
            .logout_all(bearer(pb::LogoutAllRequest {}, &carol_pair.access))
            .await
            .unwrap();
        app.db
            .execute_unprepared(&format!(
                "UPDATE users SET is_active = FALSE WHERE id = {}",
                carol.id
            ))
            .await
            .unwrap();
        // A wrong password is a bad credential even for an inactive user.
        expect_code(
            app.try_login("carol", "wrong password").await,
            Code::Unauthenticated,
        );
        expect_code(
            app.try_login("carol", PASSWORD).await,
            Code::Unauthenticated,
        );

        let after = Scrape::of(addr).await;
        let calls = "auth_grpc_calls_total";
        let expected = [
            ("Register", AUTH, "OK", 3.0),
            ("ObtainTokenPair", AUTH, "OK", 2.0),
            ("ObtainTokenPair", AUTH, "UNAUTHENTICATED", 4.0),
            ("ObtainTokenPair", AUTH, "RESOURCE_EXHAUSTED", 1.0),
            ("GetMe", USERS, "OK", 4.0),
            ("GetMe", USERS, "UNAUTHENTICATED", 1.0),
            ("RefreshToken", AUTH, "OK", 1.0),
            ("RefreshToken", AUTH, "UNAUTHENTICATED", 2.0),
            ("LogoutAll", USERS, "OK", 1.0),
        ];
        let mut per_method: BTreeMap<String, f64> = BTreeMap::new();
        for (method, service, code, count) in expected {
            let path = format!("{service}{method}");
            let labels = [("method", path.as_str()), ("code", code)];
            assert_eq!(
                moved(&before, &after, calls, &labels),
                count,
                "{path} {code}"
            );
            *per_method.entry(path).or_default() += count;
        }
        // Nothing else was counted.
        let total = |scrape: &Scrape| scrape.of_name(calls).map(|s| s.2).sum::<f64>();
        assert_eq!(total(&after) - total(&before), 19.0);
        assert_eq!(after.families["auth_grpc_calls"], "counter");

        // The latency histogram: one observation per call, monotone buckets
        // covering 0.1 ms to 5 s.
        let histogram = "auth_grpc_call_duration_seconds";
        assert_eq!(after.families[histogram], "histogram");
        for (path, count) in &per_method {
            let labels = [("method", path.as_str())];
            assert_eq!(
                moved(&before, &after, &format!("{histogram}_count"), &labels),
                *count,
                "{path}"
            );
            let mut buckets: Vec<(f64, f64)> = after
                .of_name(&format!("{histogram}_bucket"))
                .filter(|(_, l, _)| l["method"] == *path)
                .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap(), *v))
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
            let mut wanted = LATENCY_BUCKETS.to_vec();
            wanted.push(f64::INFINITY);
            assert_eq!(bounds, wanted, "{path}");
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{path}: {buckets:?}"
            );
            assert_eq!(
                buckets.last().unwrap().1,
                after.get(&format!("{histogram}_count"), &labels)
            );
            assert!(after.get(&format!("{histogram}_sum"), &labels) > 0.0);
        }

        // What the use cases count.
        let logins = [
            ("ok", 2.0),
            ("bad_credentials", 3.0),
            ("inactive", 1.0),
            ("throttled", 1.0),
            ("shed", 0.0),
            ("error", 0.0),
        ];
        for (outcome, count) in logins {
            let labels = [("outcome", outcome)];
            assert_eq!(
                moved(&before, &after, "auth_logins_total", &labels),
                count,
                "{outcome}"
            );
        }
        assert_eq!(moved(&before, &after, "auth_registrations_total", &[]), 3.0);
        assert_eq!(
            moved(&before, &after, "auth_token_refreshes_total", &[]),
            1.0
        );
        let reuse = "auth_refresh_token_reuse_detections_total";
        assert_eq!(moved(&before, &after, reuse, &[]), 2.0);
        for (reason, count) in [
            ("refresh_token_reuse", 1.0),
            ("tokens_revoked", 1.0),
            ("password_changed", 0.0),
        ] {
            let labels = [("reason", reason)];
            assert_eq!(
                moved(&before, &after, "auth_revocations_total", &labels),
                count,
                "{reason}"
            );
        }

        // Hashing: 3 hashes and 6 checks (the inactive user's too; the
        // throttled login never hashes), one after the other: no waits.
        let queued = "auth_password_hash_queue_wait_seconds_count";
        assert_eq!(moved(&before, &after, queued, &[]), 9.0);
        assert_eq!(
            moved(&before, &after, "auth_password_hash_waits_total", &[]),
            0.0
        );
        assert!(after.get("auth_password_hash_permits", &[]) >= 1.0);
        assert_eq!(after.get("auth_password_hash_permits_in_use", &[]), 0.0);
        assert_eq!(after.get("auth_password_hash_queue_depth", &[]), 0.0);

        // The pool and the caches.
        let open = after.get("auth_db_pool_connections", &[]);
        assert!(open >= 1.0, "{open}");
        assert!(after.get("auth_db_pool_max_connections", &[]) >= open);
        let idle = after.get("auth_db_pool_connections_idle", &[]);
        assert_eq!(
            after.get("auth_db_pool_connections_in_use", &[]),
            open - idle
        );
        // Present; process-wide, so other tests' outages may move it.
        assert!(after.get("auth_db_connection_errors_total", &[]) >= 0.0);
        let users = [("cache", "users")];
        let hits = moved(&before, &after, "auth_cache_hits_total", &users);
        assert!(hits >= 3.0, "4 GetMe in a row: {hits} hits");
        assert!(moved(&before, &after, "auth_cache_misses_total", &users) >= 1.0);
        after.get("auth_cache_hits_total", &[("cache", "refresh_tokens")]);

        // Fed by others later; here from the start.
        assert_eq!(after.get("auth_log_records_dropped_total", &[]), 0.0);
        assert_eq!(after.get("auth_trace_spans_dropped_total", &[]), 0.0);

        // The process.
        assert!(after.get("process_resident_memory_bytes", &[]) > 0.0);
        assert!(after.get("process_open_fds", &[]) > 0.0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = after.get("process_start_time_seconds", &[]);
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "started {started}, now {now}"
        );
        assert_eq!(after.families["process_resident_memory_bytes"], "gauge");
        app.stop().await;
    })
    .await;
}

/// Prometheus asks for OpenMetrics first; curl gets the 0.0.4 text. The
/// same metrics either way.
#[tokio::test]
async fn openmetrics_when_the_scraper_asks_for_it() {
    let app = TestApp::spawn_with(&crate::helpers::Backend::Sqlite, |s| {
        s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = app.http_addr.unwrap();
    let prometheus_accept = "application/openmetrics-text;version=1.0.0;q=0.5,\
                             text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
    let (content_type, open) = fetch(addr, Some(prometheus_accept)).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    let (content_type, text) = fetch(addr, Some("text/plain")).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(!text.contains("# EOF"));
    let names = |body: &str| -> BTreeSet<String> {
        body.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .map(|name| name.trim_end_matches("_total").to_owned())
            .collect()
    };
    assert_eq!(names(&open), names(&text));
    app.stop().await;
}
