//! The Rust half of the training benchmark (`bench/train/run.sh`).
//!
//! 1. Generates the dataset with the pipeline's generator (default 150,000 customers,
//!    seed 42) into `<out>/data` and turns it into `feature_store` rows by the same
//!    rules as the ETL (profile + the current activity row + label, in `idx` order).
//! 2. Builds the matrices with [`pipeline::train::prepare`], the code path
//!    `pipeline train` uses (stratified seeded split, the model crate's encoding fitted
//!    on the training split).
//! 3. Exports train and test X/y as `.npy` files for `bench/train/sklearn_baseline.py`.
//! 4. Times [`pipeline::train::fit::logistic`] (the fit `pipeline train` runs, same
//!    hyper-parameters) `--reps` times, scores the test rows through the exported
//!    `model::Model` (what the server scores) and writes the figures to `linfa.json`.
//!
//! Only files under `--out` are written; nothing touches the network.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use model::{Features, Model};
use ndarray::Array2;
use pipeline::etl::Source;
use pipeline::generate::{self, GenOptions};
use pipeline::train::{self, Data, fit, metrics};

#[derive(Debug, Parser)]
struct Args {
    /// Where the dataset, the exported matrices and linfa.json go.
    #[arg(long, default_value = "out/bench-train")]
    out: PathBuf,
    /// Customers to generate.
    #[arg(long, default_value_t = 150_000)]
    customers: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Split seed (`pipeline train --seed`, default 42).
    #[arg(long, default_value_t = 42)]
    split_seed: u64,
    /// Timed fits; the median is reported.
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Only time the fit on the exported `<out>/x_train.npy`, `y_train.npy` (after one
    /// untimed warm-up fit) and print the seconds as a JSON list: the baseline script
    /// calls this between its own fits, so both sides see the same load.
    #[arg(long)]
    fit_only: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.fit_only {
        return fit_only(&args);
    }
    let data_dir = args.out.join("data");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("{}", data_dir.display()))?;

    let opts = GenOptions {
        customers: args.customers,
        seed: args.seed,
        months: 1,
        ..GenOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(generate::generate(&Source::Dir(data_dir.clone()), &opts))?;
    let data = feature_rows(&data_dir)?;
    eprintln!(
        "generated {} customers (seed {}), {} labelled rows, {:.1}% positive, optimum AUC {:.4}",
        report.customers,
        args.seed,
        data.labels.len(),
        100.0 * report.positive_rate,
        report.optimum_auc
    );

    let t0 = Instant::now();
    let p = train::prepare(&data, args.split_seed)?;
    let prepare_seconds = t0.elapsed().as_secs_f64();
    write_npy_f64(&args.out.join("x_train.npy"), &p.x_train)?;
    write_npy_u8(&args.out.join("y_train.npy"), &p.y_train)?;
    write_npy_f64(&args.out.join("x_test.npy"), &p.x_test)?;
    write_npy_u8(&args.out.join("y_test.npy"), &p.y_test)?;

    let mut times = Vec::with_capacity(args.reps);
    let mut classifier = None;
    for _ in 0..args.reps.max(1) {
        let t = Instant::now();
        let c = fit::logistic(p.x_train.view(), &p.y_train)?;
        times.push(t.elapsed().as_secs_f64());
        classifier = Some(c);
    }
    let classifier = classifier.context("no fit ran")?;
    let weights = match &classifier {
        model::Classifier::LogisticRegression(l) => (l.weights.clone(), l.intercept),
        model::Classifier::TreeEnsemble(_) => bail!("fit::logistic returned a tree ensemble"),
    };
    let m = Model::new(p.encoding.clone(), classifier, 0.5)?;
    let scores = train::score(&m, &p.x_test);
    let test_auc = metrics::roc_auc(&scores, &p.y_test);

    // The generator's optimum on these very test rows: its true probabilities.
    let truth: Vec<f64> = p
        .split
        .test
        .iter()
        .map(|&i| {
            let f = &data.features[i];
            model::classifier::sigmoid(
                report.intercept + generate::signal(f.scd_a, f.scd_b, f.attr_a),
            )
        })
        .collect();
    let optimum_test_auc = metrics::roc_auc(&truth, &p.y_test);
    write_npy_f64(
        &args.out.join("linfa_test_scores.npy"),
        &Array2::from_shape_vec((scores.len(), 1), scores)?,
    )?;

    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let out = serde_json::json!({
        "rows_train": p.x_train.nrows(),
        "rows_test": p.x_test.nrows(),
        "columns": p.encoding.feature_names(),
        "alpha": fit::LOGISTIC_ALPHA,
        "max_iterations": fit::LOGISTIC_MAX_ITERATIONS,
        "gradient_tolerance": fit::LOGISTIC_GRADIENT_TOLERANCE,
        "fit_seconds": times,
        "fit_seconds_median": median,
        "test_auc": test_auc,
        "optimum_test_auc": optimum_test_auc,
        "optimum_auc_all_rows": report.optimum_auc,
        "prepare_seconds": prepare_seconds,
        "weights": weights.0,
        "intercept": weights.1,
    });
    std::fs::write(
        args.out.join("linfa.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    eprintln!(
        "linfa: {} x {} training matrix, fit median {:.4}s over {} runs, test AUC {:.4}",
        p.x_train.nrows(),
        p.x_train.ncols(),
        median,
        times.len(),
        test_auc
    );
    Ok(())
}

fn fit_only(args: &Args) -> Result<()> {
    let x = read_npy_f64(&args.out.join("x_train.npy"))?;
    let y = read_npy_u8(&args.out.join("y_train.npy"))?;
    fit::logistic(x.view(), &y)?;
    let mut times = Vec::with_capacity(args.reps);
    for _ in 0..args.reps.max(1) {
        let t = Instant::now();
        fit::logistic(x.view(), &y)?;
        times.push(t.elapsed().as_secs_f64());
    }
    println!("{}", serde_json::to_string(&times)?);
    Ok(())
}

/// `feature_store`'s rows for a generated dataset, by the ETL's rules: the profile, the
/// current activity row (empty `valid_to`; the latest `valid_from` if several) and the
/// label, in `idx` order; customers missing either are left out.
fn feature_rows(dir: &Path) -> Result<Data> {
    let read = |name: &str| -> Result<String> {
        std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {name}"))
    };
    let mut current: HashMap<i64, (String, f64, i64)> = HashMap::new();
    for line in read("customer_activity.csv")?.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [idx, from, to, scd_a, scd_b] = f[..] else {
            bail!("customer_activity.csv: bad line {line:?}");
        };
        if !to.is_empty() {
            continue;
        }
        let idx: i64 = idx.parse()?;
        let row = (from.to_string(), scd_a.parse()?, scd_b.parse()?);
        // ISO dates compare as strings.
        if current.get(&idx).is_none_or(|c| c.0 < row.0) {
            current.insert(idx, row);
        }
    }
    let mut labels: HashMap<i64, u8> = HashMap::new();
    for line in read("labels.csv")?.lines().skip(1) {
        let (idx, label) = line.split_once(',').context("labels.csv: bad line")?;
        labels.insert(idx.parse()?, label.parse()?);
    }
    let mut rows: Vec<(i64, Features, u8)> = Vec::new();
    for line in read("customer_profiles.csv")?.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [idx, attr_a, attr_b, _attr_c] = f[..] else {
            bail!("customer_profiles.csv: bad line {line:?}");
        };
        let idx: i64 = idx.parse()?;
        let (Some((_, scd_a, scd_b)), Some(&label)) = (current.get(&idx), labels.get(&idx)) else {
            continue;
        };
        rows.push((
            idx,
            Features {
                attr_a: attr_a.parse()?,
                attr_b: attr_b.to_string(),
                scd_a: *scd_a,
                scd_b: *scd_b,
            },
            label,
        ));
    }
    rows.sort_by_key(|r| r.0);
    Ok(Data::from_rows(rows))
}

/// A NumPy `.npy` file (format 1.0): a text header, then the data little-endian, C order.
fn write_npy(path: &Path, descr: &str, shape: &str, body: &[u8]) -> Result<()> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes
    // and ended by a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
    );
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&u16::try_from(header.len())?.to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(body)?;
    f.flush()?;
    Ok(())
}

fn write_npy_f64(path: &Path, x: &Array2<f64>) -> Result<()> {
    let body: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        path,
        "<f8",
        &format!("({}, {})", x.nrows(), x.ncols()),
        &body,
    )
}

fn write_npy_u8(path: &Path, y: &[u8]) -> Result<()> {
    write_npy(path, "|u1", &format!("({},)", y.len()), y)
}

/// The body and the header's shape of an `.npy` file written by [`write_npy`].
fn read_npy(path: &Path, descr: &str) -> Result<(Vec<u8>, Vec<usize>)> {
    let b = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    if b.len() < 10 || &b[..8] != b"\x93NUMPY\x01\x00" {
        bail!("{}: not a version 1.0 .npy file", path.display());
    }
    let hl = usize::from(u16::from_le_bytes([b[8], b[9]]));
    let header = std::str::from_utf8(b.get(10..10 + hl).context("short header")?)?;
    if !header.contains(&format!("'descr': '{descr}'")) || header.contains("'fortran_order': True")
    {
        bail!(
            "{}: expected a C-order {descr} array, header {header}",
            path.display()
        );
    }
    let shape = header
        .split_once("'shape': (")
        .and_then(|(_, r)| r.split_once(')'))
        .context("no shape")?
        .0
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((b[10 + hl..].to_vec(), shape))
}

fn read_npy_f64(path: &Path) -> Result<Array2<f64>> {
    let (body, shape) = read_npy(path, "<f8")?;
    let [n, d] = shape[..] else {
        bail!("{}: expected two dimensions, got {shape:?}", path.display());
    };
    let v: Vec<f64> = body
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(Array2::from_shape_vec((n, d), v)?)
}

fn read_npy_u8(path: &Path) -> Result<Vec<u8>> {
    Ok(read_npy(path, "|u1")?.0)
}
