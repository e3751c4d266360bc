//! The customer load's publish: the three files are loaded into new tables
//! (`<table>_loading`, see `load.rs`), then swapped in for the live ones inside one
//! transaction, keeping their owner, grants and index names; readers see the three old
//! tables or the three new ones. Also whether this role may swap at all.

use sqlx::{AssertSqlSafe, PgConnection};

use super::EtlError;

/// The tables `load-customers` replaces, in file order.
pub(super) const CUSTOMER_TABLES: [&str; 3] = ["customer_activity", "customer_profiles", "labels"];

/// The table a customer file is loaded into before it is swapped in.
pub(super) fn staging_name(table: &str) -> String {
    format!("{table}_loading")
}

/// Whether this role can load the customer tables by swapping: it owns them (or is a
/// member of their owner), may create tables in `public`, and nothing else (a view, a
/// foreign key) depends on them. Otherwise the load replaces the rows in place.
pub(super) async fn can_swap(conn: &mut PgConnection) -> Result<bool, EtlError> {
    let ok: Option<bool> = sqlx::query_scalar(
        "SELECT count(*) = 3 AND has_schema_privilege('public', 'CREATE') \
                AND bool_and(pg_has_role(current_user, c.relowner, 'USAGE')) \
                AND NOT bool_or(EXISTS (SELECT 1 FROM pg_depend d \
                    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid \
                      AND d.deptype = 'n' \
                      AND d.classid IN ('pg_rewrite'::regclass, 'pg_constraint'::regclass))) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname = ANY($1)",
    )
    .bind(CUSTOMER_TABLES)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ok == Some(true))
}

/// Builds on the staging table `next` the indexes and the primary key, unique and
/// exclusion constraints of `table` (which `CREATE TABLE ... (LIKE ... EXCLUDING
/// INDEXES)` left out so that the rows go in without index upkeep). [`swap_in`] then
/// gives them the old indexes' names.
pub(super) async fn index_like(
    conn: &mut PgConnection,
    table: &str,
    next: &str,
) -> Result<(), sqlx::Error> {
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE %I ADD %s', $2::text, pg_get_constraintdef(c.oid)) \
         FROM pg_constraint c \
         WHERE c.conrelid = $1::regclass AND c.contype IN ('p', 'u', 'x') \
         UNION ALL \
         SELECT format('CREATE %sINDEX ON %I USING %s', \
                       CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END, $2::text, \
                       regexp_replace(pg_get_indexdef(x.indexrelid), '^.* USING ', '')) \
         FROM pg_index x \
         WHERE x.indrelid = $1::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
           WHERE c.conrelid = $1::regclass AND c.conindid = x.indexrelid)",
    )
    .bind(table)
    .bind(next)
    .fetch_all(&mut *conn)
    .await?;
    if !statements.is_empty() {
        sqlx::raw_sql(AssertSqlSafe(statements.join(";\n")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Locks the three tables for the swap. A reader holding one of them is waited for;
/// but a reader that goes on to another table the swap already holds would deadlock
/// with it, so each attempt gives up after a short `lock_timeout` (well before
/// PostgreSQL's one-second deadlock check), releases what it took and tries again; the
/// last attempt waits as long as it takes.
async fn lock_for_swap(conn: &mut PgConnection) -> Result<(), EtlError> {
    const ATTEMPTS: u32 = 8;
    for attempt in 0..ATTEMPTS {
        let last = attempt + 1 == ATTEMPTS;
        let timeout_ms = if last { 0 } else { 100u64 << attempt.min(3) };
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SAVEPOINT swap_lock; SET LOCAL lock_timeout = {timeout_ms}"
        )))
        .execute(&mut *conn)
        .await?;
        let locked = sqlx::query(
            "LOCK TABLE customer_activity, customer_profiles, labels IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut *conn)
        .await;
        match locked {
            Ok(_) => {
                sqlx::raw_sql("RELEASE SAVEPOINT swap_lock; SET LOCAL lock_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            Err(e) if !last && is_lock_timeout(&e) => {
                tracing::debug!(attempt, "the customer tables are busy; retrying the swap");
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT swap_lock")
                    .execute(&mut *conn)
                    .await?;
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(4))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// `lock_not_available`: a `lock_timeout` ran out.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

/// Inside the publishing transaction: the loaded tables take the place of the old
/// ones, with their names, owner, grants and index names. Readers see the old tables
/// until the commit and the new ones after (the rows are frozen, so whatever their
/// snapshot); one that is reading a table when the swap begins is waited for.
pub(super) async fn swap_in(conn: &mut PgConnection) -> Result<(), EtlError> {
    lock_for_swap(conn).await?;
    for table in CUSTOMER_TABLES {
        let next = staging_name(table);
        let mut statements: Vec<String> = sqlx::query_scalar(
            "SELECT format('GRANT %s ON %I TO %s%s', a.privilege_type, $2::text, \
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                         ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                    CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_class c, aclexplode(c.relacl) a \
             WHERE c.oid = $1::regclass AND a.grantee <> c.relowner",
        )
        .bind(table)
        .bind(&next)
        .fetch_all(&mut *conn)
        .await?;
        let owner: String = sqlx::query_scalar(
            "SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        // The new table's indexes, paired with the old ones by definition.
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "WITH i AS (SELECT x.indrelid, c.relname::text AS name, x.indisunique, \
                          x.indisprimary, \
                          regexp_replace(pg_get_indexdef(x.indexrelid), '^.* USING ', '') AS def \
                        FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
                        WHERE x.indrelid IN ($1::regclass, $2::regclass)) \
             SELECT n.name, o.name FROM i n JOIN i o \
               ON n.indrelid = $2::regclass AND o.indrelid = $1::regclass \
              AND n.def = o.def AND n.indisunique = o.indisunique \
              AND n.indisprimary = o.indisprimary",
        )
        .bind(table)
        .bind(&next)
        .fetch_all(&mut *conn)
        .await?;
        statements.push(format!("ALTER TABLE {next} OWNER TO {owner}"));
        statements.push(format!("DROP TABLE {table}"));
        statements.push(format!("ALTER TABLE {next} RENAME TO {table}"));
        for (new, old) in indexes {
            if new != old {
                statements.push(format!("ALTER INDEX \"{new}\" RENAME TO \"{old}\""));
            }
        }
        sqlx::raw_sql(AssertSqlSafe(statements.join(";\n")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
