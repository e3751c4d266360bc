//! `load-customers` publishes the three customer tables at once: the files load
//! concurrently into new tables which one transaction swaps in. Readers, whatever their
//! isolation level and the order they read the tables in, see the old three tables or
//! the new three, never a mix (and never empty ones); the swap keeps the tables' owner,
//! grants and index names; a failed load leaves nothing behind; a role that cannot
//! swap still loads (in place, in one transaction).

mod etl_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etl_common::{Bucket, count, database, load_customers, loader};
use pipeline::runs::Status;
use sqlx::PgPool;

/// (profiles, labels, activity rows) as one transaction sees them.
type Counts = (i64, i64, i64);

async fn counts(pool: &PgPool) -> Counts {
    (
        count(pool, "SELECT count(*) FROM customer_profiles").await,
        count(pool, "SELECT count(*) FROM labels").await,
        count(pool, "SELECT count(*) FROM customer_activity").await,
    )
}

/// One reader: a REPEATABLE READ transaction that takes its snapshot first, then reads
/// the three tables one statement at a time, in an order that depends on `n`, so that
/// some readers hold one table while the swap wants the others.
async fn read_once(pool: &PgPool, n: usize) -> Result<Counts, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    // The snapshot is taken here, possibly long before the tables are read.
    sqlx::query("SELECT 1").execute(&mut *tx).await?;
    tokio::time::sleep(std::time::Duration::from_millis((n % 7) as u64 * 3)).await;
    let tables = ["customer_profiles", "labels", "customer_activity"];
    let mut got = [0i64; 3];
    for k in 0..3 {
        let i = if n.is_multiple_of(2) { k } else { 2 - k };
        let sql = format!("SELECT count(*) FROM {}", tables[i]);
        got[i] = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((got[0], got[1], got[2]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_readers_see_all_old_or_all_new_tables() {
    let (db, pool) = database().await;
    let old = Bucket::new("etl-pub-old").await;
    old.generate(20_000, 1, 1).await;
    let new = Bucket::new("etl-pub-new").await;
    new.generate(30_000, 1, 2).await;
    let s = load_customers(&loader(&pool, old.source())).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    let before = counts(&pool).await;

    // Readers on a pool of their own, so that they never wait for the loader's.
    let readers = pipeline::db::connect(&db.url()).await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for r in 0..3 {
        let (pool, stop) = (readers.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                seen.insert(read_once(&pool, n).await.expect("a reader failed"));
                n += 3;
            }
            seen
        }));
    }
    let s = load_customers(&loader(&pool, new.source())).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    // A few more reads after the commit.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let after = counts(&pool).await;
    let mut seen = BTreeSet::new();
    for t in tasks {
        seen.extend(t.await.expect("reader task"));
    }
    println!("before {before:?}, after {after:?}, seen {seen:?}");
    assert_eq!(after.0, 30_000);
    assert!(seen.contains(&after), "{seen:?}");
    assert!(
        seen.iter().all(|s| *s == before || *s == after),
        "a reader saw a mix: {seen:?} (old {before:?}, new {after:?})"
    );
}

/// What a swap must keep: owner, grants, index names and definitions, constraints.
async fn catalog(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s owner=%s acl=%s', c.relname, pg_get_userbyid(c.relowner), \
                coalesce(c.relacl::text, 'default')) \
         FROM pg_class c WHERE c.relname IN ('customer_activity', 'customer_profiles', 'labels') \
         UNION ALL \
         SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x \
         WHERE x.indrelid::regclass::text IN ('customer_activity', 'customer_profiles', 'labels') \
         UNION ALL \
         SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) \
         FROM pg_constraint \
         WHERE conrelid::regclass::text IN ('customer_activity', 'customer_profiles', 'labels') \
           AND contype <> 'n' \
         UNION ALL \
         SELECT relname::text FROM pg_class WHERE relname LIKE '%loading%' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("catalog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_keeps_owner_grants_and_index_names_and_a_failure_leaves_nothing() {
    let (_db, pool) = database().await;
    sqlx::query("GRANT SELECT ON labels TO PUBLIC")
        .execute(&pool)
        .await
        .expect("grant");
    let before = catalog(&pool).await;
    let bucket = Bucket::new("etl-pub-cat").await;
    bucket.generate(3_000, 1, 5).await;
    let l = loader(&pool, bucket.source());
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    assert_eq!(catalog(&pool).await, before);
    let loaded = counts(&pool).await;

    // A bad last line in the activity file: nothing changes, no staging table is left.
    let mut a = bucket.get("customer_activity.csv").await;
    a.extend_from_slice(b"not,a,valid,line,here\n");
    bucket.put("customer_activity.csv", a).await;
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Failed);
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("customer_activity.csv, line")),
        "{:?}",
        s.error
    );
    assert_eq!(counts(&pool).await, loaded);
    assert_eq!(catalog(&pool).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_the_tables_loads_them_in_place() {
    let (db, pool) = database().await;
    let user = harness::unique("etl_loader").replace('-', "_");
    let password = harness::unique("pw");
    let quoted = format!("'{password}'"); // generated above: no quote inside
    db.psql(&format!(
        "CREATE ROLE {user} LOGIN PASSWORD {quoted} IN ROLE mle_user_role"
    ))
    .expect("create a non-owner role");
    let as_user = pipeline::db::connect(&db.url_as(&user, &password))
        .await
        .expect("connect as the non-owner");
    let bucket = Bucket::new("etl-pub-inplace").await;
    bucket.generate(2_000, 1, 6).await;
    let s = load_customers(&loader(&as_user, bucket.source())).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    assert_eq!(counts(&pool).await.0, 2_000);
    // The tables are still the migration's (owned by the migrating role).
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE relname = 'labels'",
    )
    .fetch_one(&pool)
    .await
    .expect("owner");
    assert_ne!(owner, user);
}
