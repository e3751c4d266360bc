//! The database's shape and its users: migrations (`pipeline db migrate`) and the login
//! users `ds_user` / `mle_user` (`pipeline db users`).
//!
//! Both are idempotent. Passwords never appear in SQL text: `users` sends a SCRAM-SHA-256
//! verifier computed here (as `psql`'s `\password` does), so the plaintext reaches
//! neither the server's statement log nor `pg_stat_statements`. The verifier is computed
//! from the SASLprep'd password, as clients hash it when they log in ([`scram_verifier`]).

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

/// The SQL migrations under `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The read-only group role (migration 0002) and its login user.
pub const DS_ROLE: &str = "ds_user_role";
pub const DS_USER: &str = "ds_user";
/// The read-write group role (migration 0002) and its login user.
pub const MLE_ROLE: &str = "mle_user_role";
pub const MLE_USER: &str = "mle_user";

/// Environment variables the users' passwords come from.
pub const DS_PASSWORD_ENV: &str = "DS_USER_PASSWORD";
pub const MLE_PASSWORD_ENV: &str = "MLE_USER_PASSWORD";

/// Shortest password `users` accepts.
pub const MIN_PASSWORD_LEN: usize = 12;

const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{what}: {source}")]
    Query {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "{var} is not set: `pipeline db users` takes the password of {user} from the environment"
    )]
    MissingPassword {
        var: &'static str,
        user: &'static str,
    },
    #[error("{var} is too short: {user}'s password needs at least {min} characters")]
    WeakPassword {
        var: &'static str,
        user: &'static str,
        min: usize,
    },
}

fn query_err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
    let what = what.into();
    move |source| DbError::Query { what, source }
}

/// A small pool for administrative commands.
pub async fn connect(url: &str) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .map_err(DbError::Connect)
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Versions applied by this call, oldest first.
    pub applied: Vec<i64>,
    /// Versions that were already there.
    pub already: usize,
}

/// Applies every migration not applied yet (under sqlx's advisory lock, so two
/// concurrent runs against one database do not collide).
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, DbError> {
    let before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    let after = applied_versions(pool).await?;
    Ok(MigrateReport {
        applied: after
            .iter()
            .copied()
            .filter(|v| !before.contains(v))
            .collect(),
        already: before.len(),
    })
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(query_err("reading the migrations table"))?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(query_err("reading the migrations table"))
}

/// One login user to create or update.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: &'static str,
    pub group: &'static str,
    pub password: String,
}

impl UserSpec {
    /// `ds_user` and `mle_user`, with passwords from `DS_USER_PASSWORD` and
    /// `MLE_USER_PASSWORD`. Refuses to go on without them.
    pub fn from_env() -> Result<Vec<UserSpec>, DbError> {
        let get = |var: &'static str, user: &'static str| -> Result<String, DbError> {
            let pw = std::env::var(var).unwrap_or_default();
            if pw.is_empty() {
                Err(DbError::MissingPassword { var, user })
            } else if pw.chars().count() < MIN_PASSWORD_LEN {
                Err(DbError::WeakPassword {
                    var,
                    user,
                    min: MIN_PASSWORD_LEN,
                })
            } else {
                Ok(pw)
            }
        };
        Ok(vec![
            UserSpec {
                name: DS_USER,
                group: DS_ROLE,
                password: get(DS_PASSWORD_ENV, DS_USER)?,
            },
            UserSpec {
                name: MLE_USER,
                group: MLE_ROLE,
                password: get(MLE_PASSWORD_ENV, MLE_USER)?,
            },
        ])
    }
}

/// What happened to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Created,
    PasswordChanged,
    Unchanged,
}

/// Creates or updates the login users, makes each a member of its group role, and sets
/// default privileges so that tables `mle_user` creates are readable by `ds_user_role`.
/// Run it after `migrate` (the group roles come from migration 0002). Idempotent: a
/// second run with the same passwords changes nothing.
pub async fn ensure_users(
    pool: &PgPool,
    users: &[UserSpec],
) -> Result<Vec<(&'static str, UserChange)>, DbError> {
    let mut out = Vec::new();
    for u in users {
        // Roles are cluster-wide: another database's `users` may race with this one.
        let change = retry_concurrent(|| ensure_user(pool, u)).await?;
        out.push((u.name, change));
    }
    retry_concurrent(|| async {
        for sql in [
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {MLE_USER} IN SCHEMA public \
                 GRANT SELECT ON TABLES TO {DS_ROLE}"
            ),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {MLE_USER} IN SCHEMA public \
                 GRANT SELECT ON SEQUENCES TO {DS_ROLE}"
            ),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {MLE_USER} IN SCHEMA public \
                 GRANT ALL ON TABLES TO {MLE_ROLE}"
            ),
        ] {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(pool)
                .await
                .map_err(query_err("setting default privileges for mle_user"))?;
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

async fn ensure_user(pool: &PgPool, u: &UserSpec) -> Result<UserChange, DbError> {
    let row = sqlx::query("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(u.name)
        .fetch_optional(pool)
        .await
        .map_err(query_err(format!("looking up role {}", u.name)))?;
    let change = match row {
        None => {
            let verifier = scram_verifier(&u.password, &random_salt(), SCRAM_ITERATIONS);
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                u.name,
                quote_literal(&verifier)
            )))
            .execute(pool)
            .await
            .map_err(query_err(format!("creating role {}", u.name)))?;
            UserChange::Created
        }
        Some(row) => {
            let can_login: bool = row.get(0);
            if can_login && password_matches(pool, u).await? {
                UserChange::Unchanged
            } else {
                let verifier = scram_verifier(&u.password, &random_salt(), SCRAM_ITERATIONS);
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "ALTER ROLE {} LOGIN PASSWORD {}",
                    u.name,
                    quote_literal(&verifier)
                )))
                .execute(pool)
                .await
                .map_err(query_err(format!("updating role {}", u.name)))?;
                UserChange::PasswordChanged
            }
        }
    };
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(u.name)
        .bind(u.group)
        .fetch_one(pool)
        .await
        .map_err(query_err(format!(
            "checking {}'s membership of {}",
            u.name, u.group
        )))?;
    if !member {
        sqlx::raw_sql(AssertSqlSafe(format!("GRANT {} TO {}", u.group, u.name)))
            .execute(pool)
            .await
            .map_err(query_err(format!("granting {} to {}", u.group, u.name)))?;
    }
    Ok(change)
}

/// Whether the stored SCRAM verifier already belongs to this password. Needs to read
/// `pg_authid` (superuser); without that right the answer is "no" and the password is
/// set again, which is harmless.
async fn password_matches(pool: &PgPool, u: &UserSpec) -> Result<bool, DbError> {
    let stored: Option<Option<String>> =
        match sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(u.name)
            .fetch_optional(pool)
            .await
        {
            Ok(v) => v,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                return Ok(false);
            }
            Err(e) => return Err(query_err("reading pg_authid")(e)),
        };
    let Some(Some(stored)) = stored else {
        return Ok(false);
    };
    Ok(parse_verifier(&stored)
        .map(|(iter, salt)| scram_verifier(&u.password, &salt, iter) == stored)
        .unwrap_or(false))
}

/// Retries `f` when PostgreSQL reports a concurrent change to a shared catalog (two
/// sessions creating or granting the same role at once).
async fn retry_concurrent<T, F, Fut>(mut f: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(DbError::Query {
                source: sqlx::Error::Database(e),
                ..
            }) if attempt < 8
                && (matches!(e.code().as_deref(), Some("23505" | "42710" | "40001"))
                    || e.message().contains("concurrently")) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// A SQL string literal. Only used for SCRAM verifiers (base64 and `$:` characters), but
/// correct for any text with `standard_conforming_strings` on.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    salt
}

fn parse_verifier(v: &str) -> Option<(u32, Vec<u8>)> {
    let rest = v.strip_prefix("SCRAM-SHA-256$")?;
    let (iter_salt, _keys) = rest.split_once('$')?;
    let (iter, salt) = iter_salt.split_once(':')?;
    Some((iter.parse().ok()?, B64.decode(salt).ok()?))
}

/// The password as SCRAM hashes it: SASLprep (RFC 4013: non-ASCII spaces become spaces,
/// soft hyphens and the like vanish, NFKC, so a full-width `Ａ` is an `A`), which libpq,
/// sqlx and tokio-postgres apply before logging in. When SASLprep refuses the string
/// (prohibited or unassigned characters, mixed-direction text) the raw bytes are used,
/// as libpq and the server do (`pg_saslprep`'s fallback); sqlx refuses to log in with
/// such a password, psql and tokio-postgres log in with its raw bytes.
fn saslprep(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), the same
/// one the server computes when it is given the plaintext (for the same salt):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut salted = [0u8; 32];
    let password = saslprep(password);
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let hmac = |key: &[u8], msg: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key size");
        m.update(msg);
        m.finalize().into_bytes()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_round_trips_through_its_salt() {
        let v = scram_verifier("correct horse battery", b"0123456789abcdef", 4096);
        let (iter, salt) = parse_verifier(&v).expect("parses");
        assert_eq!(iter, 4096);
        assert_eq!(salt, b"0123456789abcdef");
        assert_eq!(scram_verifier("correct horse battery", &salt, iter), v);
        assert_ne!(scram_verifier("correct horse battery!", &salt, iter), v);
    }

    #[test]
    fn verifier_hashes_the_saslprepped_password_or_else_the_raw_one() {
        let salt = b"0123456789abcdef";
        // No-break space -> space, full-width A -> A, soft hyphen -> nothing.
        assert_eq!(
            scram_verifier("pass\u{00A0}word\u{FF21}\u{00AD}", salt, 4096),
            scram_verifier("pass wordA", salt, 4096)
        );
        // SASLprep refuses these; their raw bytes are hashed, as libpq does.
        for refused in ["private\u{E000}use", "\u{05D0}mixed", "bell\u{7}"] {
            assert!(stringprep::saslprep(refused).is_err(), "{refused:?}");
            assert_eq!(saslprep(refused), refused);
        }
    }

    #[test]
    fn quote_literal_doubles_quotes() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
    }
}
