//! What the commands print, as `Display` values (`status` and `history` render
//! through the library types' own `Display`).

use std::fmt;

use deployer::cert::CertificateView;
use deployer::config::{Config, LockBackend};
use deployer::engine::Applied;
use deployer::init::InitReport;
use deployer::plan::{Operation, counts};
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
            Operation::Apply => {
                let n = [a.added, a.changed, a.destroyed, a.adopted];
                let words = ["added", "changed", "destroyed", "recorded from tags"];
                write!(f, "\nApply complete! Resources: {}.", counts(n, words))
            }
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

/// The HTTPS certificate line of `plan` and `status` (`tls = "acme"`): identity,
/// issuer and expiry of the stored certificate.
pub struct CertificateLine<'a>(pub &'a CertificateView);

impl fmt::Display for CertificateLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            CertificateView::Off => Ok(()),
            CertificateView::NoAddress => f.write_str(
                "HTTPS certificate: no Elastic IP yet (the first deploy after apply issues it)",
            ),
            CertificateView::NotIssued { ip, store } => write!(
                f,
                "HTTPS certificate for {ip}: none in {store} yet (the colour holding the address issues it after the first deploy)"
            ),
            CertificateView::Stored {
                ip,
                identity,
                issuer,
                serial,
                not_after,
                remaining_s,
                matches_ip,
            } => {
                write!(
                    f,
                    "HTTPS certificate for {ip}: {identity}, issuer {issuer}, serial {serial}, expires {not_after}"
                )?;
                if *remaining_s == 0 {
                    f.write_str(" (EXPIRED)")?;
                } else {
                    write!(f, " (in {})", deployer::cert::hours(*remaining_s))?;
                }
                if !matches_ip {
                    write!(f, " (NOT valid for {ip})")?;
                }
                Ok(())
            }
            CertificateView::Unreadable { ip, why } => {
                write!(
                    f,
                    "HTTPS certificate for {ip}: the store cannot be read: {why}"
                )
            }
        }
    }
}

/// Prints the certificate line after `plan` or `status` (nothing when HTTPS is off); a
/// failure to look is a line too, never the command's failure.
pub async fn print_certificate(d: &deployer::Deployer) {
    match d.certificate_view().await {
        Ok(CertificateView::Off) => {}
        Ok(v) => println!("\n{}", CertificateLine(&v)),
        Err(e) => println!("\nHTTPS certificate: cannot look it up: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_line_names_identity_issuer_and_expiry() {
        let stored = |remaining_s, matches_ip| CertificateView::Stored {
            ip: "127.0.0.9".into(),
            identity: "IP:127.0.0.9".into(),
            issuer: "CN=Pebble Intermediate CA 0a".into(),
            serial: "0b".into(),
            not_after: "2026-12-05T10:00:00Z".into(),
            remaining_s,
            matches_ip,
        };
        assert_eq!(
            CertificateLine(&stored(576_000 + 59 * 60, true)).to_string(),
            "HTTPS certificate for 127.0.0.9: IP:127.0.0.9, issuer CN=Pebble Intermediate CA 0a, serial 0b, expires 2026-12-05T10:00:00Z (in 160h 59m)"
        );
        let bad = CertificateLine(&stored(0, false)).to_string();
        assert!(
            bad.ends_with("(EXPIRED) (NOT valid for 127.0.0.9)"),
            "{bad}"
        );
        assert_eq!(CertificateLine(&CertificateView::Off).to_string(), "");
    }
}
