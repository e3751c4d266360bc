//! `pipeline train`: options, and the lines printed around the library's steps.

use anyhow::Context as _;

use pipeline::train::{self, Location, Promotion, Report, Store};

/// `pipeline train` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Where artifacts go: a directory or s3://BUCKET/PREFIX (the root the server's
    /// --model reads: <root>/latest, <root>/<version>/...).
    #[arg(long, env = "MODELS")]
    pub models: String,
    /// Connection URL for the read-only ds_user.
    #[arg(long, env = "DS_DATABASE_URL", hide_env_values = true)]
    pub ds_database_url: String,
    /// Promote even if the new model's test ROC AUC is worse than latest's by more
    /// than --margin.
    #[arg(long)]
    pub force: bool,
    /// How much worse (test ROC AUC) than latest a new model may be and still be
    /// promoted.
    #[arg(long, default_value_t = 0.01)]
    pub margin: f64,
    /// Seed of the split and the tree bootstrap samples.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Trains, prints the evaluation table (before publishing, so a refused promotion
/// still shows it), publishes and prints where the model went.
pub async fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let location: Location = args
        .models
        .parse()
        .with_context(|| format!("invalid --models {:?}", args.models))?;
    let margin = train::check_margin(args.margin)?;
    let pool = train::connect(&args.ds_database_url).await?;
    let store = Store::open(location).await;
    let fitted = train::fit_from(&pool, args.seed).await?;
    println!("{}", fitted.trained);
    let report = train::publish_fitted(&store, fitted, margin, args.force).await?;
    println!("{}", promotion_line(&report));
    Ok(())
}

/// `model <v> saved at <where>; latest -> <v> (...)`.
fn promotion_line(r: &Report) -> String {
    match &r.promotion {
        Promotion::First => format!(
            "model {} saved at {}; latest -> {} (first model)",
            r.version, r.saved, r.version
        ),
        Promotion::Promoted {
            previous,
            previous_auc,
        } => format!(
            "model {} saved at {}; latest -> {} (test ROC AUC {:.4}, was {previous} with {previous_auc:.4})",
            r.version, r.saved, r.version, r.trained.test.roc_auc
        ),
        Promotion::Forced {
            previous,
            previous_auc,
        } => format!(
            "model {} saved at {}; latest -> {} FORCED (test ROC AUC {:.4}, was {previous} with {})",
            r.version,
            r.saved,
            r.version,
            r.trained.test.roc_auc,
            previous_auc.map_or("unreadable metrics".to_string(), |a| format!("{a:.4}"))
        ),
    }
}
