//! A small closed-loop HTTP/1.1 load generator for the server benchmark (no wrk or oha
//! needed): `C` connections each send the same request back to back for `D` seconds,
//! keep-alive when the server allows it, reconnecting when it closes (as the Flask
//! development server and gunicorn's sync workers do). Prints one JSON line:
//! `{"name", "requests", "errors", "rps", "p50_ms", "p99_ms"}`.
//!
//! ```text
//! loadgen --target 127.0.0.1:PORT --name rust --connections 16 --duration 10 \
//!         --path /predict --body '{"idx": 1, ...}'
//! loadgen --make-artifact DIR      # writes and promotes a benchmark model artifact
//! ```

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Opts {
    target: String,
    name: String,
    connections: usize,
    duration: Duration,
    path: String,
    body: String,
}

fn parse() -> anyhow::Result<Option<Opts>> {
    let mut o = Opts {
        target: "127.0.0.1:8080".into(),
        name: "server".into(),
        connections: 16,
        duration: Duration::from_secs(10),
        path: "/predict".into(),
        body: r#"{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#.into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--make-artifact" => {
                make_artifact(std::path::Path::new(&v()?))?;
                return Ok(None);
            }
            "--target" => o.target = v()?,
            "--name" => o.name = v()?,
            "--connections" => o.connections = v()?.parse()?,
            "--duration" => o.duration = Duration::from_secs_f64(v()?.parse()?),
            "--path" => o.path = v()?,
            "--body" => o.body = v()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if !o.target.starts_with("127.")
        && !o.target.starts_with("[::1]")
        && !o.target.starts_with("localhost")
    {
        bail!("refusing to load anything but loopback: {}", o.target);
    }
    Ok(Some(o))
}

/// A logistic model on the encoding of a small synthetic training set.
fn make_artifact(root: &std::path::Path) -> anyhow::Result<()> {
    use model::classifier::{Classifier, Logistic};
    let mut train = Vec::new();
    for i in 0..400i64 {
        train.push(model::Features {
            attr_a: i % 3,
            attr_b: ["a", "b", "c", "d"][(i % 4) as usize].into(),
            scd_a: (i as f64 * 0.37).fract(),
            scd_b: i % 7,
        });
    }
    let enc = model::FeatureEncoding::fit(&train)?;
    let w = enc.width();
    let m = model::Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights: (0..w).map(|i| 0.4 - 0.13 * i as f64).collect(),
            intercept: -1.2,
        }),
        0.3,
    )?;
    let a = model::Artifact::new(model::ArtifactSpec {
        model: m,
        code_version: "bench".into(),
        training_data: "sha256:bench".into(),
        metrics: Default::default(),
        extra_files: Default::default(),
        created: UNIX_EPOCH + Duration::from_secs(1_795_539_600),
    })?;
    if !root.join(a.version()).exists() {
        a.save(root)?;
    }
    model::artifact::promote(root, a.version())?;
    println!("{}", root.join(a.version()).display());
    Ok(())
}

struct Worker {
    lat_us: Vec<u32>,
    errors: u64,
}

async fn connect(target: &str) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

/// Sends one request and reads the response; returns (status, keep-alive).
async fn once(conn: &mut BufReader<TcpStream>, req: &[u8]) -> std::io::Result<(u16, bool)> {
    conn.get_mut().write_all(req).await?;
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let http10 = line.starts_with("HTTP/1.0");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len: Option<usize> = None;
    let mut close = http10;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok();
        } else if let Some(v) = lower.strip_prefix("connection:") {
            close = v.trim() == "close" || (http10 && v.trim() != "keep-alive");
        }
    }
    match len {
        Some(n) => {
            let mut body = vec![0; n];
            conn.read_exact(&mut body).await?;
        }
        None => {
            let mut sink = Vec::new();
            conn.read_to_end(&mut sink).await?;
            close = true;
        }
    }
    Ok((status, !close))
}

async fn worker(o: std::sync::Arc<Opts>, deadline: Instant) -> Worker {
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        o.path,
        o.target,
        o.body.len(),
        o.body
    )
    .into_bytes();
    let mut w = Worker {
        lat_us: Vec::with_capacity(100_000),
        errors: 0,
    };
    let mut conn = None;
    while Instant::now() < deadline {
        let t = Instant::now();
        if conn.is_none() {
            match connect(&o.target).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    w.errors += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match once(c, &req).await {
            Ok((status, keep)) => {
                if (200..300).contains(&status) {
                    w.lat_us
                        .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else {
                    w.errors += 1;
                }
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                w.errors += 1;
                conn = None;
            }
        }
    }
    w
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(o) = parse()? else { return Ok(()) };
    let o = std::sync::Arc::new(o);
    let start = Instant::now();
    let deadline = start + o.duration;
    let tasks: Vec<_> = (0..o.connections)
        .map(|_| tokio::spawn(worker(o.clone(), deadline)))
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let w = t.await?;
        lat.extend(w.lat_us);
        errors += w.errors;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "name": o.name,
            "requests": lat.len(),
            "errors": errors,
            "rps": lat.len() as f64 / secs,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
    Ok(())
}
