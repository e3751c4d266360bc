//! Step 1 of training: the labelled rows of `feature_store`, read as the read-only
//! `ds_user` inside a READ ONLY transaction, with their fingerprint.

use model::{Features, Fingerprint};
use sqlx::Row as _;
use sqlx::postgres::PgPool;

use super::TrainError;

/// A small pool for training, as the read-only `ds_user`.
pub async fn connect(ds_database_url: &str) -> Result<PgPool, TrainError> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect(ds_database_url)
        .await
        .map_err(TrainError::Connect)
}

/// The labelled rows of `feature_store`, in `idx` order.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub idx: Vec<i64>,
    pub features: Vec<Features>,
    pub labels: Vec<u8>,
    /// `sha256:<hex>` over the rows ([`Fingerprint`]).
    pub fingerprint: String,
}

impl Data {
    /// The rows (in the order given) and their fingerprint.
    pub fn from_rows(rows: impl IntoIterator<Item = (i64, Features, u8)>) -> Data {
        let mut data = Data::default();
        let mut fp = Fingerprint::new();
        for (idx, f, label) in rows {
            fp.add(idx, &f, label);
            data.idx.push(idx);
            data.features.push(f);
            data.labels.push(label);
        }
        data.fingerprint = fp.finish();
        data
    }
}

/// Rows fetched per round trip: the driver holds at most this many rows beside the
/// growing [`Data`] (about 60 bytes a row: the training matrix, which is the one thing
/// sized by the table).
const FETCH_ROWS: usize = 50_000;

/// Reads every labelled row (rows with a NULL label are skipped) in a READ ONLY
/// transaction, so even a misconfigured role could not write through this path. The
/// rows come through a cursor, [`FETCH_ROWS`] at a time, never all at once as driver
/// rows.
pub async fn load_feature_store(pool: &PgPool) -> Result<Data, TrainError> {
    let mut tx = pool.begin().await.map_err(TrainError::Query)?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(TrainError::Query)?;
    sqlx::query(
        "DECLARE training_rows NO SCROLL CURSOR FOR \
         SELECT idx, attr_a, attr_b, scd_a, scd_b, label FROM feature_store \
         WHERE label IS NOT NULL ORDER BY idx",
    )
    .execute(&mut *tx)
    .await
    .map_err(TrainError::Query)?;
    let mut data = Data::default();
    let mut fp = Fingerprint::new();
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "FETCH FORWARD {FETCH_ROWS} FROM training_rows"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(TrainError::Query)?;
        let last = rows.len() < FETCH_ROWS;
        for r in rows {
            let (idx, f, label) = row(&r)?;
            fp.add(idx, &f, label);
            data.idx.push(idx);
            data.features.push(f);
            data.labels.push(label);
        }
        if last {
            break;
        }
    }
    tx.commit().await.map_err(TrainError::Query)?;
    data.fingerprint = fp.finish();
    Ok(data)
}

/// One row of the cursor, checked.
fn row(r: &sqlx::postgres::PgRow) -> Result<(i64, Features, u8), TrainError> {
    let idx: i64 = r.try_get("idx").map_err(TrainError::Query)?;
    let label: i16 = r.try_get("label").map_err(TrainError::Query)?;
    let label = match label {
        0 => 0u8,
        1 => 1u8,
        other => {
            return Err(TrainError::BadRow {
                idx,
                reason: format!("label {other} is not 0 or 1"),
            });
        }
    };
    let f = Features {
        attr_a: i64::from(r.try_get::<i16, _>("attr_a").map_err(TrainError::Query)?),
        attr_b: r.try_get("attr_b").map_err(TrainError::Query)?,
        scd_a: r.try_get("scd_a").map_err(TrainError::Query)?,
        scd_b: i64::from(r.try_get::<i32, _>("scd_b").map_err(TrainError::Query)?),
    };
    if !f.scd_a.is_finite() {
        return Err(TrainError::BadRow {
            idx,
            reason: format!("scd_a {} is not a finite number", f.scd_a),
        });
    }
    Ok((idx, f, label))
}
