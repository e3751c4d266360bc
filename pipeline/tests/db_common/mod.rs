//! The database set-up shared by the tests that log in as the pipeline's users
//! (`db_roles.rs`, `train.rs`): generated passwords, the user specs, and a fresh
//! migrated database with the users in place.
#![allow(dead_code)]

use std::sync::OnceLock;

use pipeline::db::{self, UserSpec};
use sqlx::postgres::PgPool;

/// `(ds_user, mle_user)` passwords. Roles are cluster-wide and the cluster is shared by
/// one test binary's tests, so they all use the same generated passwords.
pub fn passwords() -> &'static (String, String) {
    static PW: OnceLock<(String, String)> = OnceLock::new();
    PW.get_or_init(|| (harness::unique("ds-pw"), harness::unique("mle-pw")))
}

/// Both users with their [`passwords`].
pub fn specs() -> Vec<UserSpec> {
    let (ds, mle) = passwords();
    vec![
        UserSpec {
            name: db::DS_USER,
            group: db::DS_ROLE,
            password: ds.clone(),
        },
        UserSpec {
            name: db::MLE_USER,
            group: db::MLE_ROLE,
            password: mle.clone(),
        },
    ]
}

/// A fresh database, migrated, with the users in place; returns it with an owner pool.
pub async fn prepared() -> (harness::TestDb, PgPool) {
    let tdb = harness::postgres().database();
    let pool = db::connect(&tdb.url()).await.expect("connect as owner");
    db::migrate(&pool).await.expect("migrate");
    db::ensure_users(&pool, &specs()).await.expect("users");
    (tdb, pool)
}
