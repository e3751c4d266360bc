//! `Config::parse` on good and broken files.

use super::*;

const GOOD: &str = r#"
region = "us-east-1"
app = "churn"
instance_type = "t3.micro"
api_port = 8080

[ami]
owner = "099720109477"
name = "ubuntu/images/*"

[state]
bucket = "churn-state"
key = "deployer.json"

[lock]
table = "churn-locks"

[artifacts]
bucket = "churn-artifacts"
"#;

fn parse(t: &str) -> Result<Config, ConfigError> {
    Config::parse(t, Path::new("deploy.toml"))
}

#[test]
fn good_config_parses_with_defaults() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.ssh_cidr, None);
    assert_eq!(c.lock.backend, LockBackend::Dynamodb);
    assert_eq!(c.lock.lease_seconds, 30);
    assert_eq!(c.lock_id(), "churn-state/deployer.json");
}

#[test]
fn wrong_type_names_line_and_key() {
    let t = GOOD.replace("api_port = 8080", "api_port = \"http\"");
    let e = parse(&t).expect_err("refused").to_string();
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("key `api_port`"), "{e}");
}

#[test]
fn unknown_key_is_refused() {
    let t = GOOD.replace("[lock]\n", "[lock]\ntabel = \"x\"\n");
    let e = parse(&t).expect_err("refused").to_string();
    assert!(e.contains("line 16"), "{e}");
    assert!(e.contains("tabel"), "{e}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let t = GOOD.replace(
        "api_port = 8080",
        "api_port = 8080\nssh_cidr = \"0.0.0.0/0\"",
    );
    let e = parse(&t).expect_err("refused").to_string();
    assert!(e.contains("line 6, key `ssh_cidr`"), "{e}");

    let t = GOOD.replace("bucket = \"churn-artifacts\"", "bucket = \"Bad_Bucket\"");
    let e = parse(&t).expect_err("refused").to_string();
    assert!(e.contains("line 19, key `bucket`"), "{e}");

    let t = GOOD.replace("owner = \"099720109477\"\n", "");
    let e = parse(&t).expect_err("refused").to_string();
    assert!(e.contains("key `owner`"), "{e}");
}

#[test]
fn tls_is_off_by_default_and_its_settings_are_checked() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.tls, TlsMode::Off);
    assert_eq!(c.https, HttpsConfig::default());
    let on = GOOD.replace("api_port = 8080\n", "api_port = 8080\ntls = \"acme\"\n")
        + "\n[https]\nport = 8443\nhttp_mode = \"redirect\"\n";
    let c = parse(&on).expect("valid");
    assert_eq!(c.tls, TlsMode::Acme);
    assert_eq!(c.https.port, 8443);
    assert_eq!(c.https.challenge_port, 80);
    assert_eq!(c.https.http_mode, HttpMode::Redirect);
    assert_eq!(c.https.acme_directory, LETS_ENCRYPT_PRODUCTION);

    let e = parse(&on.replace("port = 8443", "port = 8080"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("line 23, key `port`"), "{e}");
    assert!(e.starts_with("deploy.toml, "), "{e}");
    let e = parse(&(on.clone() + "acme_directory = \"http://ca.example/dir\"\n"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("key `acme_directory`: not an https://"), "{e}");
    let e = parse(&(on.clone() + "kms_key_id = \"alias/x\"\n"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("key `kms_key_id`"), "{e}");
    let e = parse(&(on.clone() + "challenge_port = 8443\n"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("key `challenge_port`"), "{e}");
    let e = parse(&on.replace("acme", "letsencrypt"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("line 6, key `tls`"), "{e}");
    // Off: [https] is not checked (it may be kept for later).
    parse(
        &on.replace("tls = \"acme\"\n", "")
            .replace("port = 8443", "port = 8080"),
    )
    .expect("off ignores [https]");
}

#[test]
fn front_is_eip_by_default_and_nlb_settings_are_checked() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.front, Front::Eip);
    assert_eq!(c.instances_per_color, 1);
    assert_eq!(c.nlb, NlbConfig::default());
    assert_eq!(c.canary, CanaryConfig::default());

    // More than one instance needs the balancer.
    let three = GOOD.replace(
        "api_port = 8080\n",
        "api_port = 8080\ninstances_per_color = 3\n",
    );
    let e = parse(&three).expect_err("refused").to_string();
    assert!(e.contains("line 6, key `instances_per_color`"), "{e}");
    assert!(e.contains("front = \"nlb\""), "{e}");

    let nlb = three.replace("api_port = 8080\n", "api_port = 8080\nfront = \"nlb\"\n")
        + "\n[nlb]\nsubnet_b_cidr = \"10.42.7.0/24\"\nhealthy_threshold = 2\n\n[canary]\nsoak_seconds = 30\n";
    let c = parse(&nlb).expect("valid");
    assert_eq!((c.front, c.instances_per_color), (Front::Nlb, 3));
    assert_eq!(c.nlb.subnet_b_cidr, "10.42.7.0/24");
    assert_eq!(c.nlb.healthy_threshold, 2);
    assert_eq!(c.nlb.unhealthy_threshold, 3);
    assert_eq!(c.canary.soak_seconds, 30);

    // The errors name the file, the line and the key.
    let e = parse(&nlb.replace("10.42.7.0/24", "10.42.1.0/25"))
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with("deploy.toml, line 24, key `subnet_b_cidr`"),
        "{e}"
    );
    assert!(e.contains("overlaps subnet_cidr"), "{e}");
    let e = parse(&nlb.replace("10.42.7.0/24", "10.9.0.0/24"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("not inside vpc_cidr"), "{e}");
    let e = parse(&nlb.replace("healthy_threshold = 2", "healthy_threshold = 1"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("line 25, key `healthy_threshold`"), "{e}");
    let e = parse(&(nlb.clone() + "max_error_rate = 2.0\n"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("key `max_error_rate`"), "{e}");
    let e = parse(&nlb.replace("front = \"nlb\"", "front = \"alb\""))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("line 6, key `front`"), "{e}");
    let e = parse(&nlb.replace("instances_per_color = 3", "instances_per_color = 0"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("key `instances_per_color`"), "{e}");

    // HTTPS at the balancer's addresses is refused in one line.
    let e = parse(&nlb.replace("front = \"nlb\"\n", "front = \"nlb\"\ntls = \"acme\"\n"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("key `tls`"), "{e}");
    assert!(e.contains("both balancer addresses"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    // With eip, [nlb] is not checked (it may be kept for later).
    parse(
        &GOOD
            .replace("api_port = 8080\n", "api_port = 8080\nfront = \"eip\"\n")
            .replace("[ami]", "[nlb]\nsubnet_b_cidr = \"10.42.1.0/24\"\n\n[ami]"),
    )
    .expect("eip ignores [nlb]");
}

#[test]
fn syntax_error_names_line() {
    let t = GOOD.replace("app = \"churn\"", "app = churn");
    let e = parse(&t).expect_err("refused");
    assert_eq!(e.line(), Some(3), "{e}");
}

#[test]
fn example_file_is_valid_and_documents_every_key() {
    // include_str! (not a path from env!): cargo rebuilds when the file changes, and
    // a build cached from another checkout reads this checkout's file.
    let path = Path::new("deploy.example.toml");
    let text = include_str!("../../../deploy.example.toml");
    Config::parse(text, path).expect("the example is valid");
    for key in [
        "region",
        "app",
        "instance_type",
        "api_port",
        "ssh_cidr",
        "vpc_cidr",
        "subnet_cidr",
        "availability_zone",
        "root_volume_gib",
        "[ami]",
        "id",
        "owner",
        "name",
        "[state]",
        "bucket",
        "key",
        "[lock]",
        "backend",
        "table",
        "lease_seconds",
        "[artifacts]",
        "tls",
        "[https]",
        "port",
        "challenge_port",
        "acme_directory",
        "acme_contact",
        "http_mode",
        "kms_key_id",
        "roots",
        "acme_directory_root",
        "check_interval_seconds",
    ] {
        assert!(
            text.contains(key),
            "deploy.example.toml does not mention {key}"
        );
    }
}
