//! The IAM policy documents of the instance role, and reading them back.

use serde_json::{Value, json};

use crate::config::{Config, TlsMode};

/// The instance role's trust policy.
pub fn assume_role_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "ec2.amazonaws.com" },
            "Action": "sts:AssumeRole"
        }]
    })
}

/// The instance role's permissions: read releases and models; with `tls = "acme"` also
/// read and write `tls/*` (the ACME account, the certificate and the renewal lock, which
/// only the instance role may touch), list that prefix (so a missing object is a 404,
/// not a 403), and use the KMS key when one is configured (SSE-KMS).
pub fn artifact_read_policy(cfg: &Config) -> Value {
    let bucket = &cfg.artifacts.bucket;
    let mut statements = vec![json!({
        "Sid": "ReadReleasesAndModels",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": [
            format!("arn:aws:s3:::{bucket}/releases/*"),
            format!("arn:aws:s3:::{bucket}/models/*")
        ]
    })];
    if cfg.tls == TlsMode::Acme {
        statements.push(json!({
            "Sid": "TlsStore",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": format!("arn:aws:s3:::{bucket}/tls/*")
        }));
        statements.push(json!({
            "Sid": "TlsStoreList",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": format!("arn:aws:s3:::{bucket}"),
            "Condition": { "StringLike": { "s3:prefix": "tls/*" } }
        }));
        if let Some(key) = &cfg.https.kms_key_id {
            statements.push(json!({
                "Sid": "TlsStoreKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": key
            }));
        }
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// A policy document as JSON, whether AWS sent it URL-encoded (as IAM does, per RFC
/// 3986: `+` is a plus sign, not a space) or not.
pub fn policy_json(doc: &str) -> Value {
    let text = if doc.trim_start().starts_with('{') {
        doc.to_string()
    } else {
        percent_encoding::percent_decode_str(doc)
            .decode_utf8_lossy()
            .into_owned()
    };
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

#[cfg(test)]
mod tests {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    use super::*;

    #[test]
    fn url_encoded_policies_decode() {
        let enc = "%7B%22Version%22%3A%222012-10-17%22%7D";
        assert_eq!(policy_json(enc), json!({"Version": "2012-10-17"}));
        assert_eq!(policy_json("{\"a\":1}"), json!({"a": 1}));
    }

    #[test]
    fn a_literal_plus_survives_decoding() {
        let policy = json!({
            "Statement": [{
                "Condition": { "StringLike": { "aws:userid": "AIDA+example*" } },
                "Resource": "arn:aws:s3:::arts/models/a b+c"
            }]
        });
        let text = policy.to_string();
        // Encoded the way IAM sends it: `+` as `%2B`.
        let encoded = utf8_percent_encode(&text, NON_ALPHANUMERIC).to_string();
        assert!(encoded.contains("%2B"), "{encoded}");
        assert_eq!(policy_json(&encoded), policy);
        // And a `+` left as it is stays a plus sign, not a space.
        let raw_plus = encoded.replace("%2B", "+");
        assert_eq!(policy_json(&raw_plus), policy);
    }

    #[test]
    fn policy_names_only_the_artifact_prefixes() {
        let text = include_str!("../../../deploy.example.toml");
        let mut cfg = Config::parse(text, std::path::Path::new("deploy.example.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        cfg.artifacts.bucket = "arts".into();
        let p = artifact_read_policy(&cfg);
        let s = &p["Statement"];
        assert_eq!(s.as_array().map(Vec::len), Some(1));
        assert_eq!(s[0]["Action"], json!("s3:GetObject"));
        assert_eq!(
            s[0]["Resource"],
            json!(["arn:aws:s3:::arts/releases/*", "arn:aws:s3:::arts/models/*"])
        );
        // HTTPS on: tls/* read and write, listing only that prefix; the key when given.
        cfg.tls = TlsMode::Acme;
        let p = artifact_read_policy(&cfg);
        let s = p["Statement"].as_array().cloned().unwrap_or_default();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1]["Resource"], json!("arn:aws:s3:::arts/tls/*"));
        assert_eq!(s[2]["Condition"]["StringLike"]["s3:prefix"], json!("tls/*"));
        cfg.https.kms_key_id = Some("arn:aws:kms:us-east-1:111122223333:key/k".into());
        let p = artifact_read_policy(&cfg);
        assert_eq!(
            p["Statement"][3]["Action"],
            json!(["kms:Decrypt", "kms:GenerateDataKey"])
        );
    }
}
