//! Failed-login throttling: per username by default, per client address
//! when configured; shared through the database, race-free.

use std::time::Duration;

use tonic::{Code, Request};
use tonic_types::StatusExt;

use auth_service::pb;

use crate::helpers::{PASSWORD, TestApp, expect_code, on_every_backend};

const INVALID_CREDENTIALS: &str = "No active account found with the given credentials";

const THROTTLED: &str = "Too many failed login attempts; try again later";

#[tokio::test]
async fn a_username_is_locked_after_five_failures_and_others_are_not() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("locked").await;
        app.register("neighbour").await;
        for _ in 0..5 {
            expect_code(
                app.try_login("locked", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        // Even the right password is refused now, without being checked.
        let status = expect_code(
            app.try_login("LOCKED", PASSWORD).await,
            Code::ResourceExhausted,
        );
        assert_eq!(status.message(), THROTTLED);
        let delay = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        let delay = delay.unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
        assert!(
            delay > Duration::from_secs(14 * 60) && delay <= Duration::from_secs(15 * 60),
            "{delay:?}"
        );

        // Unknown names are counted too (no hint about which names exist).
        for _ in 0..5 {
            expect_code(
                app.try_login("ghost", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        expect_code(
            app.try_login("ghost", "wrong password").await,
            Code::ResourceExhausted,
        );

        app.login("neighbour").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_successful_login_resets_the_count() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("forgetful").await;
        for _ in 0..4 {
            expect_code(
                app.try_login("forgetful", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        app.login("forgetful").await;
        for _ in 0..4 {
            expect_code(
                app.try_login("forgetful", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        app.login("forgetful").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_window_ends_and_counters_are_shared_by_replicas() {
    on_every_backend(async |backend| {
        let settings = |s: &mut auth_service::config::Settings| {
            s.throttle.failure_limit = 2;
            s.throttle.window = Duration::from_secs(2);
        };
        let app = TestApp::spawn_with(&backend, settings).await;
        app.register("patient").await;
        for _ in 0..2 {
            expect_code(
                app.try_login("patient", "wrong password").await,
                Code::Unauthenticated,
            );
        }
        expect_code(
            app.try_login("patient", PASSWORD).await,
            Code::ResourceExhausted,
        );
        // Another replica on the same database sees the same counter.
        let replica = TestApp::spawn_on_with(app.database_url(), settings).await;
        expect_code(
            replica.try_login("patient", PASSWORD).await,
            Code::ResourceExhausted,
        );
        replica.stop().await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        app.login("patient").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_attempts_cannot_slip_past_the_limit() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.register("raced").await;
        let attempts = (0..20).map(|_| app.try_login("raced", "wrong password"));
        let results = futures::future::join_all(attempts).await;
        let checked = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
            .count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
            .count();
        // Exactly the limit got a password check; none succeeded or failed otherwise.
        assert_eq!((checked, refused), (5, 15), "{results:?}");
        app.stop().await;
    })
    .await;
}

fn login_from(
    forwarded_for: &str,
    username: &str,
    password: &str,
) -> Request<pb::ObtainTokenPairRequest> {
    let mut request = Request::new(pb::ObtainTokenPairRequest {
        username: username.into(),
        password: password.into(),
    });
    let value = forwarded_for.parse().unwrap();
    request.metadata_mut().insert("x-forwarded-for", value);
    request
}

#[tokio::test]
async fn the_address_limit_is_opt_in_and_keys_on_the_trusted_header() {
    on_every_backend(async |backend| {
        // Off by default: many names from one address are fine (a gateway).
        let app = TestApp::spawn(&backend).await;
        for i in 0..8 {
            let username = format!("a{i}");
            let result = app
                .auth
                .clone()
                .obtain_token_pair(login_from("203.0.113.7", &username, "wrong password"))
                .await;
            expect_code(result, Code::Unauthenticated);
        }
        app.stop().await;

        let app = TestApp::spawn_with(&backend, |s| {
            s.throttle.address_failure_limit = 3;
            s.throttle.address_header = Some("x-forwarded-for".into());
        })
        .await;
        // One proxy (the default): it appended the last entry.
        for username in ["b1", "b2", "b3"] {
            let result = app
                .auth
                .clone()
                .obtain_token_pair(login_from("10.9.9.9, 203.0.113.7", username, "wrong"))
                .await;
            expect_code(result, Code::Unauthenticated);
        }
        let result = app
            .auth
            .clone()
            .obtain_token_pair(login_from("203.0.113.7", "b4", "wrong"))
            .await;
        expect_code(result, Code::ResourceExhausted);
        // Another end user behind the same gateway is not affected.
        let result = app
            .auth
            .clone()
            .obtain_token_pair(login_from("198.51.100.9", "b4", "wrong"))
            .await;
        expect_code(result, Code::Unauthenticated);
        app.stop().await;
    })
    .await;
}

/// The client writes whatever it likes into the header before the proxies
/// append to it: only the entry the last trusted proxy appended counts.
#[tokio::test]
async fn entries_the_client_wrote_do_not_buy_fresh_counters() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.throttle.address_failure_limit = 3;
            s.throttle.address_header = Some("x-forwarded-for".into());
        })
        .await;
        let mut answers = Vec::new();
        for i in 0..12 {
            let forged = format!("198.51.100.{i}, 203.0.113.7");
            let result = app
                .auth
                .clone()
                .obtain_token_pair(login_from(&forged, &format!("c{i}"), "wrong"))
                .await;
            answers.push(result.map(|_| ()).map_err(|s| s.code()));
        }
        let unauthenticated = answers
            .iter()
            .filter(|a| **a == Err(Code::Unauthenticated))
            .count();
        let refused = answers
            .iter()
            .filter(|a| **a == Err(Code::ResourceExhausted))
            .count();
        assert_eq!((unauthenticated, refused), (3, 9), "{answers:?}");
        app.stop().await;
    })
    .await;
}

/// With two proxies, the client is the second entry from the right; a
/// header with fewer entries did not come through both proxies, so the
/// peer address counts instead.
#[tokio::test]
async fn the_client_is_the_nth_entry_from_the_right() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.throttle.address_failure_limit = 2;
            s.throttle.address_header = Some("x-forwarded-for".into());
            s.throttle.trusted_proxies = 2;
        })
        .await;
        let attempt = async |forwarded: &str, username: &str| {
            app.auth
                .clone()
                .obtain_token_pair(login_from(forwarded, username, "wrong"))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        };
        let client = "192.0.2.1, 203.0.113.7, 10.0.0.2";
        for name in ["d1", "d2"] {
            assert_eq!(attempt(client, name).await, Err(Code::Unauthenticated));
        }
        // Same client entry, different forged prefixes and proxy entry: refused.
        assert_eq!(
            attempt("1.1.1.1, 203.0.113.7, 10.0.0.3", "d3").await,
            Err(Code::ResourceExhausted)
        );
        // A different client behind the same proxies: its own counter.
        assert_eq!(
            attempt("203.0.113.8, 10.0.0.2", "d4").await,
            Err(Code::Unauthenticated)
        );
        // One entry only: not through both proxies; the peer (127.0.0.1) counts.
        for name in ["d5", "d6"] {
            assert_eq!(
                attempt("203.0.113.9", name).await,
                Err(Code::Unauthenticated)
            );
        }
        assert_eq!(
            attempt("198.51.100.1", "d7").await,
            Err(Code::ResourceExhausted)
        );
        app.stop().await;
    })
    .await;
}

/// Logins the hash queue sheds never reached a password check: they must
/// not count as failures (an attacker flooding the queue would lock real
/// users out) nor leave counter rows behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_shed_by_the_hash_queue_do_not_use_up_the_budget() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.passwords.max_concurrent = std::num::NonZeroUsize::new(1);
            s.passwords.queue_limit = 1;
        })
        .await;
        app.register("flooded").await;
        let flood = (0..30).map(|_| app.try_login("flooded", "wrong password"));
        let results = futures::future::join_all(flood).await;
        let checked = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
            .count();
        let shed = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.message() == HASH_QUEUE_FULL))
            .count();
        assert_eq!(checked + shed, 30, "{results:?}");
        assert!(shed >= 20, "the queue shed too little to test: {results:?}");
        assert!(checked < 5, "{results:?}");
        // The shed attempts left no trace: the right password still works.
        app.login("flooded").await;
        assert_nothing_counted(&app).await;
        app.stop().await;
    })
    .await;
}

const HASH_QUEUE_FULL: &str = "Too many password checks in progress; retry shortly";

/// Logins of one account arriving together, all with the right password:
/// none may be told its account is under attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_correct_logins_of_one_account_all_succeed() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            // Room for all 64 in the hash queue, and time for them to get
            // through two cores: the throttle is under test.
            s.passwords.queue_timeout = Duration::from_secs(120);
        })
        .await;
        app.register("worker-pool").await;
        let logins = (0..64).map(|_| app.try_login("worker-pool", PASSWORD));
        let results = futures::future::join_all(logins).await;
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failed.is_empty(), "{} refused: {failed:?}", failed.len());
        assert_nothing_counted(&app).await;
        app.stop().await;
    })
    .await;
}

/// With a tiny hash queue, the only refusal correct logins may get is the
/// queue's own overload answer, never the throttle's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_logins_beyond_the_hash_queue_are_shed_by_the_queue_not_the_throttle() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.passwords.max_concurrent = std::num::NonZeroUsize::new(1);
            s.passwords.queue_limit = 4;
        })
        .await;
        app.register("crowded").await;
        let logins = (0..64).map(|_| app.try_login("crowded", PASSWORD));
        let results = futures::future::join_all(logins).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let other: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .filter(|s| !(s.code() == Code::ResourceExhausted && s.message() == HASH_QUEUE_FULL))
            .collect();
        assert!(other.is_empty(), "{other:?}");
        assert!(ok >= 1, "{results:?}");
        app.stop().await;
    })
    .await;
}

/// 64 wrong passwords at once: exactly the limit is checked, the rest get
/// the throttle's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_check_at_most_the_limit() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.passwords.queue_timeout = Duration::from_secs(120);
        })
        .await;
        app.register("guessed").await;
        let attempts = (0..64).map(|_| app.try_login("guessed", "wrong password"));
        let results = futures::future::join_all(attempts).await;
        let checked = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
            .count();
        let throttled = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.message() == THROTTLED))
            .count();
        assert_eq!((checked, throttled), (5, 59), "{results:?}");
        app.stop().await;
    })
    .await;
}

/// With the default limit of 5: 4 wrong and 30 right at once. Every right
/// one succeeds, every wrong one is answered as bad credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_wrong_logins_among_many_right_ones_throttle_nothing() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.passwords.queue_timeout = Duration::from_secs(120);
        })
        .await;
        app.register("mixed").await;
        let passwords = (0..34).map(|i| {
            if i % 8 == 3 {
                "wrong password"
            } else {
                PASSWORD
            }
        });
        let shared = &app;
        let attempts = passwords
            .map(|password| async move { (password, shared.try_login("mixed", password).await) });
        let results = futures::future::join_all(attempts).await;
        let mut wrong = 0;
        for (password, result) in &results {
            if *password == PASSWORD {
                assert!(result.is_ok(), "a right password was refused: {result:?}");
            } else {
                wrong += 1;
                let status = expect_code(result.clone(), Code::Unauthenticated);
                assert_eq!(status.message(), INVALID_CREDENTIALS);
            }
        }
        assert_eq!(wrong, 4);
        app.stop().await;
    })
    .await;
}

/// No failures and no checks in flight left on any counter; at most the one
/// row of the key.
async fn assert_nothing_counted(app: &TestApp) {
    let counting = "login_attempts WHERE failures <> 0 OR in_flight <> 0 OR in_flight_before <> 0";
    assert_eq!(app.count(counting).await, 0);
    assert!(app.count("login_attempts").await <= 1);
}

/// A caller that gives up while its wrong password is being hashed (a
/// deadline shorter than the hash) must still have that failure counted,
/// or cancelling just before each answer would buy unlimited guesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_counts_even_when_its_caller_gives_up() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            // A hash far longer than the callers' deadline.
            s.passwords.memory_kib = 64 * 1024;
            s.passwords.iterations = 8;
            s.passwords.max_concurrent = std::num::NonZeroUsize::new(1);
            s.throttle.failure_limit = 2;
        })
        .await;
        app.register("impatient").await;
        for _ in 0..6 {
            let mut request = Request::new(pb::ObtainTokenPairRequest {
                username: "impatient".into(),
                password: "wrong password".into(),
            });
            request.set_timeout(Duration::from_millis(40));
            let result = app.auth.clone().obtain_token_pair(request).await;
            let status = result.expect_err("a wrong password was accepted");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        }
        // The two admitted checks finish in the background and count.
        let mut answer = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if app.count("login_attempts WHERE failures >= 2").await == 1 {
                answer = Some(app.try_login("impatient", PASSWORD).await);
                break;
            }
        }
        let answer = answer.expect("the cancelled failures were never counted");
        let status = expect_code(answer, Code::ResourceExhausted);
        assert_eq!(status.message(), THROTTLED);
        app.stop().await;
    })
    .await;
}

/// Issue 17's race at a lease-epoch boundary, on every backend's SQL: an
/// admission whose clock was read just before an epoch began, committing
/// after ones that read it just after, must not forget their checks in
/// flight (it once let a sixth password check through of five).
#[tokio::test]
async fn an_admission_with_an_older_clock_keeps_the_newer_checks_in_flight() {
    use auth_service::persistence::login_attempts::{Admission, Budget, Outcome, admit, settle};
    let at = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .map(|t| t.naive_utc())
            .unwrap_or_default()
    };
    let budget = Budget {
        limit: 3,
        window: Duration::from_secs(900),
        lease: Duration::from_secs(60),
    };
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let key = "user:epoch-race";
        for clock in [60_061, 60_062, 60_059] {
            let admitted = admit(&app.db, key, budget, at(clock)).await;
            assert!(
                matches!(admitted, Ok(Admission::Admitted { epoch: 1001 })),
                "{clock}: {admitted:?}"
            );
        }
        for clock in [60_059, 60_063] {
            let over = admit(&app.db, key, budget, at(clock)).await;
            assert!(matches!(over, Ok(Admission::Busy)), "{clock}: {over:?}");
        }
        for _ in 0..3 {
            settle(&app.db, key, 1001, Outcome::Failed)
                .await
                .expect("settled");
        }
        let throttled = admit(&app.db, key, budget, at(60_059)).await;
        assert!(
            matches!(throttled, Ok(Admission::Throttled { .. })),
            "{throttled:?}"
        );
        app.stop().await;
    })
    .await;
}
