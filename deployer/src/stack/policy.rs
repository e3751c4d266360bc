//! The IAM policy documents of the instance role, and reading them back.

use serde_json::{Value, json};

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

/// The instance role's only permission: read releases and models, nothing else.
pub fn artifact_read_policy(bucket: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadReleasesAndModels",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [
                format!("arn:aws:s3:::{bucket}/releases/*"),
                format!("arn:aws:s3:::{bucket}/models/*")
            ]
        }]
    })
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
        let p = artifact_read_policy("arts");
        let s = &p["Statement"];
        assert_eq!(s.as_array().map(Vec::len), Some(1));
        assert_eq!(s[0]["Action"], json!("s3:GetObject"));
        assert_eq!(
            s[0]["Resource"],
            json!(["arn:aws:s3:::arts/releases/*", "arn:aws:s3:::arts/models/*"])
        );
    }
}
