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
}

/// Renders `userdata/boot.sh` (with `userdata/server.service` inside). Every value is
/// checked to be free of shell metacharacters first.
pub fn render_user_data(v: &BootValues<'_>) -> Result<String, ReleaseError> {
    tame("release", v.release, "")?;
    tame("model", v.model_uri, ":/@")?;
    tame("server URL", v.server_url, ":/?&=%+")?;
    tame("sha256", v.server_sha256, "")?;
    let unit = UNIT_TEMPLATE.trim_end();
    Ok(BOOT_TEMPLATE
        .replace("@SERVICE_UNIT@", unit)
        .replace("@RELEASE@", v.release)
        .replace("@MODEL_URI@", v.model_uri)
        .replace("@API_PORT@", &v.api_port.to_string())
        .replace("@SERVER_URL@", v.server_url)
        .replace("@SERVER_SHA256@", v.server_sha256))
}

impl Deployer {
    fn model_uri(&self, m: &Manifest) -> String {
        let base = format!("s3://{}/models", self.cfg.artifacts.bucket);
        match &m.model_version {
            Some(v) => format!("{base}@{v}"),
            None => base,
        }
    }

    /// The rendered boot script for release manifest `m` (presigned URLs valid for `lifetime`).
    pub async fn user_data(&self, m: &Manifest, lifetime: Duration) -> Result<String, Error> {
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
        };
        let text = render_user_data(&v).unwrap_or_default();
        assert!(
            !text.contains("@RELEASE@") && !text.contains("@SERVICE_UNIT@"),
            "{text}"
        );
        assert!(text.contains("RELEASE=\"abc123\""));
        assert!(text.contains("ExecStart=/opt/churn-api/current/server"));
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
