//! What the commands print, as `Display` values (`status` and `history` render
//! through the library types' own `Display`).

use std::fmt;

use deployer::config::{Config, LockBackend};
use deployer::engine::Applied;
use deployer::init::InitReport;
use deployer::plan::Operation;
use deployer::release::Deployed;

/// `init`'s one line.
pub struct InitSummary<'a> {
    pub cfg: &'a Config,
    pub report: &'a InitReport,
}

impl fmt::Display for InitSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cfg, r) = (self.cfg, self.report);
        write!(
            f,
            "State bucket s3://{} {}; ",
            cfg.state.bucket,
            if r.bucket_created {
                "created"
            } else {
                "already there (settings enforced)"
            }
        )?;
        if cfg.artifacts.bucket != cfg.state.bucket {
            write!(
                f,
                "artifacts bucket s3://{} {}; ",
                cfg.artifacts.bucket,
                if r.artifacts_bucket_created {
                    "created"
                } else {
                    "already there (settings enforced)"
                }
            )?;
        }
        match &cfg.lock.table {
            Some(t) if cfg.lock.backend == LockBackend::Dynamodb => write!(
                f,
                "lock table {t} {}.",
                if r.table_created {
                    "created"
                } else {
                    "already there"
                }
            ),
            _ => f.write_str("S3 locking: no table needed."),
        }
    }
}

/// What `deploy` or `rollback` did: who holds the address, what became of the other
/// colour.
pub struct DeployedSummary<'a> {
    pub verb: &'a str,
    pub deployed: &'a Deployed,
}

impl fmt::Display for DeployedSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.deployed;
        write!(
            f,
            "{}: release {} on {} ({}) holds the Elastic IP.",
            self.verb, d.release, d.color, d.instance_id
        )?;
        if let Some((c, id)) = &d.previous {
            if d.retired.contains(id) {
                write!(f, "\nThe rollback window is over: {c} ({id}) terminated.")?;
            } else {
                write!(
                    f,
                    "\n{c} ({id}) is kept for a rollback until its window ends."
                )?;
            }
        }
        Ok(())
    }
}

/// The closing line of `apply` / `destroy` (after a blank line).
pub struct AppliedSummary<'a> {
    pub operation: Operation,
    pub applied: &'a Applied,
}

impl fmt::Display for AppliedSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.applied;
        match self.operation {
            Operation::Apply => write!(
                f,
                "\nApply complete! Resources: {} added, {} changed, {} destroyed{}.",
                a.added,
                a.changed,
                a.destroyed,
                if a.adopted > 0 {
                    format!(", {} recorded from tags", a.adopted)
                } else {
                    String::new()
                }
            ),
            Operation::Destroy => {
                write!(
                    f,
                    "\nDestroy complete! Resources: {} destroyed.",
                    a.destroyed
                )
            }
        }
    }
}
