//! The boot script a release's instance starts with: `userdata/boot.sh` with
//! `userdata/server.service` inside, every value checked for shell metacharacters.

use std::time::Duration;

use super::ReleaseError;
use crate::aws::AwsError;
use crate::publish::{self, Manifest, PublishError};
use crate::{Deployer, Error};

/// The boot script template and the unit it installs.
pub const BOOT_TEMPLATE: &str = include_str!("../../../userdata/boot.sh");
pub const UNIT_TEMPLATE: &str = include_str!("../../../userdata/server.service");

fn tame(what: &'static str, v: &str, extra: &str) -> Result<(), ReleaseError> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
    {
        Ok(())
    } else {
        Err(ReleaseError::BadValue {
            what,
            value: v.to_string(),
        })
    }
}

/// Values that go into the boot script.
#[derive(Debug, Clone)]
pub struct BootValues<'a> {
    pub release: &'a str,
    pub model_uri: &'a str,
    pub api_port: u16,
    pub server_url: &'a str,
    pub server_sha256: &'a str,
    /// HTTPS (`tls = "acme"`): the server's TLS settings, written into the unit.
    pub tls: Option<TlsValues<'a>>,
}

/// What the unit gets when `tls = "acme"`: the `SERVER_*` variables of the server's
/// `--tls acme` flags.
#[derive(Debug, Clone)]
pub struct TlsValues<'a> {
    /// The Elastic IP: the identity of the certificate.
    pub ip: std::net::IpAddr,
    /// `s3://<artifacts bucket>` (the store's prefix is `tls/<ip>/`).
    pub store: String,
    pub https: &'a crate::config::HttpsConfig,
}

impl TlsValues<'_> {
    /// `Environment=` lines for the unit, every value checked.
    fn environment(&self) -> Result<String, ReleaseError> {
        let h = self.https;
        let mut vars = vec![
            ("SERVER_TLS", "acme".to_string()),
            ("SERVER_TLS_IP", self.ip.to_string()),
            ("SERVER_TLS_STORE", self.store.clone()),
            ("SERVER_HTTPS_LISTEN", format!("0.0.0.0:{}", h.port)),
            (
                "SERVER_ACME_HTTP_LISTEN",
                format!("0.0.0.0:{}", h.challenge_port),
            ),
            ("SERVER_ACME_VALIDATION_PORT", h.challenge_port.to_string()),
            ("SERVER_ACME_DIRECTORY", h.acme_directory.clone()),
            ("SERVER_HTTP_MODE", h.http_mode.as_str().to_string()),
            (
                "SERVER_TLS_CHECK_INTERVAL",
                h.check_interval_seconds.to_string(),
            ),
        ];
        if let Some(c) = &h.acme_contact {
            vars.push(("SERVER_ACME_CONTACT", c.clone()));
        }
        if let Some(k) = &h.kms_key_id {
            vars.push(("SERVER_TLS_KMS_KEY_ID", k.clone()));
        }
        if let Some(r) = &h.acme_directory_root {
            vars.push(("SERVER_ACME_ROOT", r.to_string_lossy().into_owned()));
        }
        let mut out = String::new();
        for (k, v) in vars {
            tame("TLS setting", &v, ":/?&=%+~@")?;
            out.push_str(&format!("Environment={k}={v}\n"));
        }
        Ok(out)
    }
}

/// Renders `userdata/boot.sh` (with `userdata/server.service` inside). Every value is
/// checked to be free of shell metacharacters first.
pub fn render_user_data(v: &BootValues<'_>) -> Result<String, ReleaseError> {
    tame("release", v.release, "")?;
    tame("model", v.model_uri, ":/@")?;
    tame("server URL", v.server_url, ":/?&=%+")?;
    tame("sha256", v.server_sha256, "")?;
    let tls = match &v.tls {
        Some(t) => t.environment()?,
        None => "# HTTPS off (tls = \"off\" in deploy.toml)\n".to_string(),
    };
    let unit = UNIT_TEMPLATE
        .trim_end()
        .replace("# @TLS_ENVIRONMENT@\n", &tls);
    Ok(BOOT_TEMPLATE
        .replace("@SERVICE_UNIT@", &unit)
        .replace("@RELEASE@", v.release)
        .replace("@MODEL_URI@", v.model_uri)
        .replace("@API_PORT@", &v.api_port.to_string())
        .replace("@SERVER_URL@", v.server_url)
        .replace("@SERVER_SHA256@", v.server_sha256))
}

impl Deployer {
    async fn tls_values(&self, allocation: &str) -> Result<Option<TlsValues<'_>>, Error> {
        if self.cfg.tls == crate::config::TlsMode::Off {
            return Ok(None);
        }
        Ok(Some(TlsValues {
            ip: self.elastic_ip(allocation).await?,
            store: format!("s3://{}", self.cfg.artifacts.bucket),
            https: &self.cfg.https,
        }))
    }

    fn model_uri(&self, m: &Manifest) -> String {
        let base = format!("s3://{}/models", self.cfg.artifacts.bucket);
        match &m.model_version {
            Some(v) => format!("{base}@{v}"),
            None => base,
        }
    }

    /// The rendered boot script for release manifest `m` (presigned URLs valid for
    /// `lifetime`), for the stack's Elastic IP (read from the state when `tls = "acme"`).
    pub async fn user_data(&self, m: &Manifest, lifetime: Duration) -> Result<String, Error> {
        let allocation = match self.cfg.tls {
            crate::config::TlsMode::Off => String::new(),
            crate::config::TlsMode::Acme => {
                super::resource_id(&self.read_state().await?, crate::stack::Kind::Eip)?
            }
        };
        self.user_data_in(m, lifetime, &allocation).await
    }

    /// [`Deployer::user_data`] for the Elastic IP `allocation`: with `tls = "acme"`, its
    /// address is the certificate's identity.
    pub async fn user_data_in(
        &self,
        m: &Manifest,
        lifetime: Duration,
        allocation: &str,
    ) -> Result<String, Error> {
        let file = m.files.iter().find(|f| f.name == "server").ok_or_else(|| {
            ReleaseError::Publish(PublishError::BadManifest {
                bucket: self.cfg.artifacts.bucket.clone(),
                key: publish::manifest_key(&m.release),
                detail: "no server file".into(),
            })
        })?;
        // A model-only release names the server object of the release it is based on.
        let key = publish::file_key(m, file);
        let url = format!("s3://{}/{key}", self.cfg.artifacts.bucket);
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(lifetime)
            .map_err(|e| AwsError::other(&url, "GetObject", e.to_string()))?;
        let presigned = self
            .clients
            .s3
            .get_object()
            .bucket(&self.cfg.artifacts.bucket)
            .key(&key)
            .presigned(cfg)
            .await
            .map_err(|e| AwsError::new(&url, "GetObject", e))?;
        Ok(render_user_data(&BootValues {
            release: &m.release,
            model_uri: &self.model_uri(m),
            api_port: self.cfg.api_port,
            server_url: presigned.uri(),
            server_sha256: &file.sha256,
            tls: self.tls_values(allocation).await?,
        })?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_data_renders_every_placeholder_and_refuses_shell_metacharacters() {
        let v = BootValues {
            release: "abc123",
            model_uri: "s3://b/models@20260101",
            api_port: 8080,
            server_url: "http://127.0.0.1:5000/b/releases/abc123/server?X-Amz-Signature=ff&a=b%2F",
            server_sha256: "00ff",
            tls: None,
        };
        let text = render_user_data(&v).unwrap_or_default();
        assert!(
            !text.contains("@RELEASE@") && !text.contains("@SERVICE_UNIT@"),
            "{text}"
        );
        assert!(text.contains("RELEASE=\"abc123\""));
        assert!(text.contains("ExecStart=/opt/churn-api/current/server"));
        assert!(text.contains("# HTTPS off") && !text.contains("SERVER_TLS"));
        let https = crate::config::HttpsConfig {
            acme_contact: Some("mailto:ops@example.org".into()),
            ..Default::default()
        };
        let on = render_user_data(&BootValues {
            tls: Some(TlsValues {
                ip: std::net::IpAddr::from([127, 0, 0, 9]),
                store: "s3://arts".into(),
                https: &https,
            }),
            ..v.clone()
        })
        .unwrap();
        for line in [
            "Environment=SERVER_TLS=acme\n",
            "Environment=SERVER_TLS_IP=127.0.0.9\n",
            "Environment=SERVER_TLS_STORE=s3://arts\n",
            "Environment=SERVER_HTTPS_LISTEN=0.0.0.0:443\n",
            "Environment=SERVER_ACME_HTTP_LISTEN=0.0.0.0:80\n",
            "Environment=SERVER_ACME_VALIDATION_PORT=80\n",
            "Environment=SERVER_ACME_CONTACT=mailto:ops@example.org\n",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
        ] {
            assert!(on.contains(line), "{line} missing in {on}");
        }
        for bad in ["$(reboot)", "a\"b", "a b", "a;b", "`x`"] {
            assert!(
                render_user_data(&BootValues {
                    release: bad,
                    ..v.clone()
                })
                .is_err()
            );
            assert!(
                render_user_data(&BootValues {
                    server_url: bad,
                    ..v.clone()
                })
                .is_err()
            );
        }
    }
}
