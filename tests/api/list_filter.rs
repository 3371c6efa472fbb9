//! ListUsers' `filter` (AIP-160 subset): each restriction and their
//! conjunction, refusals naming the unsupported part, page tokens bound to
//! their filter, and exact lookups reading one index on every backend.

use auth_service::{domain::UserFilter, persistence};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tonic::Code;

use crate::helpers::{Backend, TestApp, expect_code, field_violations, on_every_backend};

/// Every user `filter` lets through, page by page (`page_size` a page).
async fn list_all(app: &TestApp, access: &str, filter: &str, page_size: i32) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .list_users_page(access, filter, page_size, &token)
            .await
            .unwrap_or_else(|s| panic!("{filter:?}: {s:?}"));
        assert!(page.users.len() <= page_size as usize);
        ids.extend(page.users.iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn list_users_filters_on_each_field_and_their_conjunction() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (ann, pair) = app.signed_up("Ann").await;
        let bob = app.register("bob").await;
        let cat = app.register("cat").await;
        let dan = app.register("dan").await;
        app.set_staff(bob.id, true).await;
        app.set_active(cat.id, false).await;

        let cases: Vec<(&str, Vec<i64>)> = vec![
            ("", vec![ann.id, bob.id, cat.id, dan.id]),
            // Case-insensitive, as login: the registered email is Ann@example.com.
            (r#"email = "ANN@example.COM""#, vec![ann.id]),
            (r#"email = "ann@example.com""#, vec![ann.id]),
            (r#"email = "nobody@example.com""#, vec![]),
            (r#"username = "aNN""#, vec![ann.id]),
            (r#"username = "ann""#, vec![ann.id]),
            (r#"username = "nobody""#, vec![]),
            ("is_staff = true", vec![bob.id]),
            ("is_staff = false", vec![ann.id, cat.id, dan.id]),
            ("is_active = false", vec![cat.id]),
            ("is_active = true", vec![ann.id, bob.id, dan.id]),
            ("is_active = true AND is_staff = false", vec![ann.id, dan.id]),
            (" is_staff=false\tAND\nis_active=true ", vec![ann.id, dan.id]),
            (r#"username = "bob" AND is_staff = true"#, vec![bob.id]),
            (r#"username = "bob" AND is_staff = false"#, vec![]),
            (r#"email = "cat@example.com" AND is_active = true"#, vec![]),
            (r#"email = "cat@example.com" AND is_active = false"#, vec![cat.id]),
            (
                r#"email = "dan@example.com" AND username = "DAN" AND is_active = true AND is_staff = false"#,
                vec![dan.id],
            ),
            (r#"email = "dan@example.com" AND username = "ann""#, vec![]),
        ];
        for (filter, expected) in cases {
            let page = app.list_users_page(&pair.access, filter, 10, "").await;
            let page = page.unwrap_or_else(|s| panic!("{filter:?}: {s:?}"));
            let got: Vec<i64> = page.users.iter().map(|u| u.id).collect();
            assert_eq!(got, expected, "{filter:?}");
            assert!(page.next_page_token.is_empty(), "{filter:?}");
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn filtered_pages_are_keyset_paged_and_bound_to_their_filter() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("gus").await;
        app.seed_users(30, |i| i % 3 == 0).await; // 10 staff among them

        let everyone = list_all(&app, &pair.access, "", 7).await;
        assert_eq!(everyone.len(), 31);
        let staff = list_all(&app, &pair.access, "is_staff = true", 4).await;
        assert_eq!(staff.len(), 10);
        assert!(staff.windows(2).all(|w| w[0] < w[1]), "by id, once each");
        let not_staff = list_all(&app, &pair.access, "is_staff = false", 4).await;
        assert_eq!(not_staff.len(), 21);
        assert!(not_staff.iter().all(|id| !staff.contains(id)));

        // A token from a filtered page works with that filter, however written...
        let first = app
            .list_users_page(&pair.access, "is_staff = true", 4, "")
            .await
            .unwrap();
        assert_eq!(first.users.len(), 4);
        let token = first.next_page_token;
        let second = app
            .list_users_page(&pair.access, "  is_staff=true ", 4, &token)
            .await
            .unwrap();
        assert_eq!(
            second.users.iter().map(|u| u.id).collect::<Vec<_>>(),
            staff[4..8]
        );
        // ...and with no other.
        for other in [
            "",
            "is_staff = false",
            "is_staff = true AND is_active = true",
        ] {
            let status = expect_code(
                app.list_users_page(&pair.access, other, 4, &token).await,
                Code::InvalidArgument,
            );
            let violations = field_violations(&status);
            assert_eq!(violations.len(), 1, "{other:?}: {violations:?}");
            assert_eq!(violations[0].0, "page_token", "{other:?}");
            assert!(violations[0].1.contains("another filter"), "{violations:?}");
        }
        let unfiltered = app.list_users_page(&pair.access, "", 4, "").await.unwrap();
        let status = expect_code(
            app.list_users_page(
                &pair.access,
                "is_staff = true",
                4,
                &unfiltered.next_page_token,
            )
            .await,
            Code::InvalidArgument,
        );
        assert_eq!(field_violations(&status)[0].0, "page_token");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unsupported_filters_are_invalid_argument_naming_the_part() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        let (_, pair) = app.signed_up("hal").await;
        for (filter, named) in [
            (r#"name = "hal""#, "\"name\""),
            (r#"email != "hal@example.com""#, "\"!=\""),
            (r#"username : "hal""#, "\":\""),
            ("is_active < true", "\"<\""),
            ("is_active = true OR is_staff = true", "OR"),
            ("NOT is_staff = true", "NOT"),
            ("is_active = true and is_staff = true", "\"and\""),
            ("(is_active = true)", "\"(\""),
            ("username = 'hal'", "single quotes"),
            ("username = hal", "\"hal\""),
            ("is_staff = 1", "\"1\""),
            ("is_staff = true AND", "AND"),
            ("is_staff = true AND is_staff = false", "twice"),
            (r#"username = "hal"#, "not closed"),
            (r#"username = "h\al""#, "\\a"),
            (r#"email = "not-an-email""#, "email:"),
        ] {
            let status = expect_code(
                app.list_users_page(&pair.access, filter, 10, "").await,
                Code::InvalidArgument,
            );
            let violations = field_violations(&status);
            assert_eq!(violations.len(), 1, "{filter:?}: {violations:?}");
            assert_eq!(violations[0].0, "filter", "{filter:?}");
            assert!(
                violations[0].1.contains(named),
                "{filter:?}: {:?} does not name {named}",
                violations[0].1
            );
        }
        app.stop().await;
    })
    .await;
}

/// The query plan of ListUsers' filtered pages, on every backend: an exact
/// lookup is one read of the unique index on the key column, a flag alone
/// (`is_staff = true`) a range scan of its `(flag, id)` index rather than a
/// walk over the table. The statement is the one `list_after` runs for the
/// first page of 50, explained with its values inlined (as
/// `list_after_statement` renders it), not bound: a prepared statement's
/// generic plan could differ.
#[tokio::test]
async fn filtered_lookups_read_their_index() {
    on_every_backend(async |backend| {
        let app = TestApp::spawn(&backend).await;
        app.seed_users(2000, |i| i % 3 == 0).await;
        let db = &app.db;
        // Staff are few, as in a real user table: one in a hundred. (With
        // the seed's one in three, walking the primary key and skipping the
        // others is as cheap, and the planners rightly take it.)
        db.execute_unprepared("UPDATE users SET is_staff = FALSE")
            .await
            .unwrap();
        db.execute_unprepared("UPDATE users SET is_staff = TRUE WHERE id % 100 = 0")
            .await
            .unwrap();
        let analyze = match backend {
            Backend::Sqlite => "ANALYZE",
            Backend::Postgres(_) => "ANALYZE users",
            Backend::MySql(_) => "ANALYZE TABLE users",
        };
        db.execute_unprepared(analyze).await.unwrap();
        // (filter, index, the column its index condition must be on)
        for (filter, index, column) in [
            (
                r#"email = "Seed1234@example.com""#,
                "ux_users_email_key",
                "email_key",
            ),
            (
                r#"username = "SEED1234""#,
                "ux_users_username_key",
                "username_key",
            ),
            (
                r#"username = "seed1234" AND is_active = true"#,
                "ux_users_username_key",
                "username_key",
            ),
            ("is_staff = true", "ix_users_is_staff_id", "is_staff"),
        ] {
            let filter = UserFilter::parse(filter).unwrap();
            let backend_kind = db.get_database_backend();
            let sql = persistence::list_after_statement(backend_kind, 0, &filter, 51);
            let plan = explain(db, backend_kind, &sql).await;
            eprintln!("{sql}\n{plan}");
            let uses_index = match backend_kind {
                // The index is scanned with a condition on its column, not
                // merely walked in order with every row filtered.
                DbBackend::Postgres => {
                    (plan.contains(&format!("Index Scan using {index} "))
                        || plan.contains(&format!("Bitmap Index Scan on {index}")))
                        && plan
                            .lines()
                            .any(|l| l.contains("Index Cond:") && l.contains(column))
                        && !plan.contains("Seq Scan")
                }
                // SEARCH with the index's constraint in parentheses: a
                // lookup, not a SCAN of the index or the table.
                DbBackend::Sqlite => {
                    plan.contains(&format!("SEARCH users USING INDEX {index} ("))
                        && !plan.contains("SCAN")
                }
                // A lookup by key value: const / eq_ref / ref, not a
                // range, index or full scan.
                _ => ["const", "eq_ref", "ref"]
                    .iter()
                    .any(|t| plan.contains(&format!("type={t} key={index}"))),
            };
            assert!(
                uses_index,
                "{backend}: not a read of {index} on {column}:\n{sql}\n{plan}"
            );
        }
        app.stop().await;
    })
    .await;
}

/// The plan of `sql` as text: PostgreSQL's lines, SQLite's details, or
/// MariaDB's `type=… key=…` per table.
async fn explain(db: &sea_orm::DatabaseConnection, backend: DbBackend, sql: &str) -> String {
    let statement = |prefix: &str| Statement::from_string(backend, format!("{prefix} {sql}"));
    match backend {
        DbBackend::Postgres => {
            let rows = db.query_all_raw(statement("EXPLAIN")).await.unwrap();
            rows.iter()
                .map(|r| r.try_get::<String>("", "QUERY PLAN").unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        }
        DbBackend::Sqlite => {
            let rows = db
                .query_all_raw(statement("EXPLAIN QUERY PLAN"))
                .await
                .unwrap();
            rows.iter()
                .map(|r| r.try_get::<String>("", "detail").unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            let rows = db.query_all_raw(statement("EXPLAIN")).await.unwrap();
            rows.iter()
                .map(|r| {
                    let column = |name: &str| {
                        r.try_get::<Option<String>>("", name)
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                    };
                    format!("type={} key={}", column("type"), column("key"))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}
