//! `pipeline db migrate` and `pipeline db users` on a real PostgreSQL cluster: the
//! read-only user reads every table (also ones created later), cannot write, the
//! read-write user can, both commands are idempotent, and a non-ASCII password works
//! (the verifier is computed from its SASLprep'd form, as the server and clients do).

use std::process::Command;
use std::str::FromStr as _;

use pipeline::db::{self, UserChange};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

mod db_common;

use db_common::{passwords, prepared, specs};

async fn connect_as(tdb: &harness::TestDb, user: &str, password: &str) -> PgPool {
    db::connect(&tdb.url_as(user, password))
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

async fn public_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables")
}

fn assert_permission_denied(res: Result<sqlx::postgres::PgQueryResult, sqlx::Error>, what: &str) {
    match res {
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(e.code().as_deref(), Some("42501"), "{what}: {e}");
            assert!(e.message().contains("permission denied"), "{what}: {e}");
        }
        Ok(_) => panic!("{what} succeeded as ds_user"),
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

#[tokio::test]
async fn migrations_create_the_original_tables_with_keys() {
    let (_tdb, pool) = prepared().await;
    let tables = public_tables(&pool).await;
    for t in [
        "customer_activity",
        "customer_profiles",
        "labels",
        "sales",
        "store_locations",
        "monthly_sales",
        "feature_store",
        "pipeline_runs",
        "dq_results",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "missing table {t}: {tables:?}"
        );
        let has_pk: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_constraint \
             WHERE conrelid = ('public.' || $1)::regclass AND contype = 'p')",
        )
        .bind(t)
        .fetch_one(&pool)
        .await
        .expect("pk lookup");
        assert!(has_pk, "{t} has no primary key");
    }
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'monthly_sales' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .expect("columns");
    assert_eq!(cols, ["store_idx", "location", "sale_month", "value"]);
}

#[tokio::test]
async fn ds_user_reads_every_table_including_ones_created_after_the_grants() {
    let (tdb, owner) = prepared().await;
    let (ds_pw, mle_pw) = passwords();

    // Created by the owner role after `db users` ran: the original system's bug.
    sqlx::raw_sql(
        "CREATE TABLE later_by_owner (id int PRIMARY KEY); INSERT INTO later_by_owner VALUES (1)",
    )
    .execute(&owner)
    .await
    .expect("owner creates a table");
    // Created by mle_user itself.
    let mle = connect_as(&tdb, db::MLE_USER, mle_pw).await;
    sqlx::raw_sql(
        "CREATE TABLE later_by_mle (id int PRIMARY KEY); INSERT INTO later_by_mle VALUES (7)",
    )
    .execute(&mle)
    .await
    .expect("mle_user creates a table");

    let ds = connect_as(&tdb, db::DS_USER, ds_pw).await;
    let tables = public_tables(&owner).await;
    assert!(tables.len() >= 11, "{tables:?}");
    for t in &tables {
        sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(&ds)
            .await
            .unwrap_or_else(|e| panic!("ds_user cannot read {t}: {e}"));
    }
    let v: i32 = sqlx::query_scalar("SELECT id FROM later_by_mle")
        .fetch_one(&ds)
        .await
        .expect("read mle's table");
    assert_eq!(v, 7);
}

#[tokio::test]
async fn ds_user_cannot_write_or_create() {
    let (tdb, owner) = prepared().await;
    sqlx::raw_sql("INSERT INTO labels VALUES (1, 0)")
        .execute(&owner)
        .await
        .expect("seed");
    let ds = connect_as(&tdb, db::DS_USER, &passwords().0).await;
    assert_permission_denied(
        sqlx::raw_sql("INSERT INTO labels VALUES (2, 1)")
            .execute(&ds)
            .await,
        "INSERT",
    );
    assert_permission_denied(
        sqlx::raw_sql("UPDATE labels SET label = 1")
            .execute(&ds)
            .await,
        "UPDATE",
    );
    assert_permission_denied(
        sqlx::raw_sql("DELETE FROM labels").execute(&ds).await,
        "DELETE",
    );
    assert_permission_denied(
        sqlx::raw_sql("CREATE TABLE sneaky (id int)")
            .execute(&ds)
            .await,
        "CREATE TABLE",
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM labels WHERE label = 0")
        .fetch_one(&owner)
        .await
        .expect("count");
    assert_eq!(n, 1, "nothing ds_user tried changed the data");
}

#[tokio::test]
async fn mle_user_can_write_and_create() {
    let (tdb, _owner) = prepared().await;
    let mle = connect_as(&tdb, db::MLE_USER, &passwords().1).await;
    sqlx::raw_sql(
        "INSERT INTO labels VALUES (1, 0), (2, 1); UPDATE labels SET label = 1 WHERE idx = 1; \
         DELETE FROM labels WHERE idx = 2; CREATE TABLE scratch (id int); DROP TABLE scratch;",
    )
    .execute(&mle)
    .await
    .expect("mle_user writes");
    let row = sqlx::query("SELECT idx, label FROM labels")
        .fetch_one(&mle)
        .await
        .expect("read back");
    assert_eq!((row.get::<i64, _>(0), row.get::<i16, _>(1)), (1, 1));
    // The ledger's sequence is usable too.
    sqlx::raw_sql(
        "INSERT INTO pipeline_runs (job, period, status, attempt) VALUES ('t', '-', 'success', 1)",
    )
    .execute(&mle)
    .await
    .expect("mle_user uses a sequence");
}

/// Everything `migrate` and `users` could touch, as text.
async fn snapshot(pool: &PgPool) -> Vec<String> {
    let queries = [
        "SELECT rolname || ' login=' || rolcanlogin || ' pw=' || coalesce(rolpassword, '') \
         FROM pg_authid WHERE rolname IN ('ds_user', 'mle_user', 'ds_user_role', 'mle_user_role') ORDER BY 1",
        "SELECT r.rolname || ' in ' || g.rolname FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid \
         WHERE r.rolname IN ('ds_user', 'mle_user') ORDER BY 1",
        "SELECT c.relname || ' ' || coalesce(c.relacl::text, '') FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1",
        "SELECT pg_get_userbyid(defaclrole) || ' ' || defaclobjtype::text || ' ' || defaclacl::text \
         FROM pg_default_acl ORDER BY 1",
        "SELECT coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'public'",
        "SELECT version || ' ' || encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
    ];
    let mut out = Vec::new();
    for q in queries {
        let rows: Vec<String> = sqlx::query_scalar(q)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        out.extend(rows);
    }
    out
}

#[tokio::test]
async fn migrate_and_users_twice_change_nothing() {
    let (_tdb, pool) = prepared().await;
    let before = snapshot(&pool).await;
    let report = db::migrate(&pool).await.expect("migrate again");
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.already, db::MIGRATOR.iter().count());
    let changes = db::ensure_users(&pool, &specs())
        .await
        .expect("users again");
    assert!(
        changes.iter().all(|(_, c)| *c == UserChange::Unchanged),
        "{changes:?}"
    );
    assert_eq!(before, snapshot(&pool).await);
}

#[tokio::test]
async fn a_new_password_is_applied() {
    // Its own cluster: changing a password must not disturb the shared one.
    let cluster = Box::leak(Box::new(harness::PgCluster::start().expect("cluster")));
    let tdb = cluster.database();
    let pool = db::connect(&tdb.url()).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    let mut users = specs();
    db::ensure_users(&pool, &users).await.expect("users");
    users[0].password = harness::unique("rotated");
    let changes = db::ensure_users(&pool, &users).await.expect("rotate");
    assert_eq!(changes[0], (db::DS_USER, UserChange::PasswordChanged));
    assert_eq!(changes[1], (db::MLE_USER, UserChange::Unchanged));
    connect_as(&tdb, db::DS_USER, &users[0].password).await;
    assert!(
        db::connect(&tdb.url_as(db::DS_USER, &passwords().0))
            .await
            .is_err(),
        "the old password still works"
    );
}

/// A password with a no-break space and a full-width letter: sqlx (like libpq) hashes
/// its SASLprep'd form (`' '`, `'A'`) when logging in, so the stored verifier must too.
#[tokio::test]
async fn ds_user_logs_in_through_sqlx_with_a_non_ascii_password() {
    // Its own cluster: changing ds_user's password must not disturb the shared one.
    let cluster = Box::leak(Box::new(harness::PgCluster::start().expect("cluster")));
    let tdb = cluster.database();
    let pool = db::connect(&tdb.url()).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    let mut users = specs();
    users[0].password = format!("{}\u{00A0}\u{FF21}", harness::unique("nbsp"));
    db::ensure_users(&pool, &users).await.expect("users");
    let options = PgConnectOptions::from_str(&tdb.url())
        .expect("parse the owner's URL")
        .username(db::DS_USER)
        .password(&users[0].password);
    let ds = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("ds_user cannot log in with its non-ASCII password: {e}"));
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&ds)
        .await
        .expect("query as ds_user");
    assert_eq!(who, db::DS_USER);
}

/// Our verifier is the one PostgreSQL itself computes from the plaintext (`pg_saslprep`,
/// falling back to the raw bytes when SASLprep refuses the string), for every kind of
/// password: ASCII, mapped and normalised characters, and ones SASLprep prohibits.
#[tokio::test]
async fn verifiers_match_the_servers_own_for_every_kind_of_password() {
    let tdb = harness::postgres().database();
    let pool = db::connect(&tdb.url()).await.expect("connect");
    let base = harness::unique("pw");
    let cases = [
        ("ascii", base.clone()),
        ("no-break space, FF21", format!("{base}\u{00A0}\u{FF21}")),
        ("mapped to nothing", format!("{base}\u{00AD}x")),
        ("private use (prohibited)", format!("{base}\u{E000}")),
        ("mixed direction (bidi)", format!("\u{05D0}{base}")),
        ("unassigned in Unicode 3.2", format!("{base}\u{0221}")),
        ("ASCII control", format!("{base}\u{7}")),
    ];
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::raw_sql("SET password_encryption = 'scram-sha-256'")
        .execute(&mut *conn)
        .await
        .expect("set password_encryption");
    for (what, password) in cases {
        let role = harness::unique("saslprep").replace('-', "_");
        // The plaintext in SQL on purpose: the server computes its own verifier.
        let plaintext = format!("'{}'", password.replace('\'', "''"));
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN PASSWORD {plaintext}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: create role: {e}"));
        let row = sqlx::query(
            "SELECT rolpassword, \
                    split_part(split_part(rolpassword, '$', 2), ':', 1)::int AS iterations, \
                    decode(split_part(split_part(rolpassword, '$', 2), ':', 2), 'base64') AS salt \
             FROM pg_authid WHERE rolname = $1",
        )
        .bind(&role)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: read the verifier: {e}"));
        let servers: String = row.get("rolpassword");
        let iterations: i32 = row.get("iterations");
        let salt: Vec<u8> = row.get("salt");
        let iterations = u32::try_from(iterations).expect("positive iterations");
        assert_eq!(
            db::scram_verifier(&password, &salt, iterations),
            servers,
            "{what}: {password:?}"
        );
        sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {role}")))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{what}: drop role: {e}"));
    }
}

fn pipeline_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.env_remove("DS_USER_PASSWORD")
        .env_remove("MLE_USER_PASSWORD")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    c
}

#[test]
fn cli_users_refuses_to_run_without_passwords() {
    // The URL points nowhere: the command must stop on the missing password first.
    let out = pipeline_cmd()
        .args(["db", "users"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("MLE_USER_PASSWORD", "x".repeat(20))
        .output()
        .expect("run pipeline");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DS_USER_PASSWORD is not set"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn cli_migrate_then_users_twice() {
    let tdb = harness::postgres().database();
    let (ds, mle) = passwords();
    let run = |args: &[&str]| {
        let out = pipeline_cmd()
            .args(args)
            .env("DATABASE_URL", tdb.url())
            .env("DS_USER_PASSWORD", ds)
            .env("MLE_USER_PASSWORD", mle)
            .output()
            .expect("run pipeline");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["db", "migrate"]).contains("applied [1, 2"));
    assert!(run(&["db", "migrate"]).contains("up to date"));
    run(&["db", "users"]);
    let second = run(&["db", "users"]);
    assert!(second.contains("ds_user: Unchanged"), "{second}");
    assert!(second.contains("mle_user: Unchanged"), "{second}");
}
