//! Security group rules as strings, one per (permission, source), so that the wanted
//! and the actual rules compare as sorted lists: `tcp/8080-8080 from 0.0.0.0/0`.

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair};

/// One string per (permission, source): `tcp/8080-8080 from 0.0.0.0/0`.
pub fn rule_strings(p: &IpPermission) -> Vec<String> {
    let proto = p.ip_protocol().unwrap_or("-1");
    let ports = match (p.from_port(), p.to_port()) {
        (Some(f), Some(t)) if proto != "-1" => format!("{f}-{t}"),
        _ => "all".to_string(),
    };
    let head = format!("{proto}/{ports}");
    let mut out: Vec<String> = Vec::new();
    out.extend(
        p.ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .map(|c| format!("{head} from {c}")),
    );
    out.extend(
        p.ipv6_ranges()
            .iter()
            .filter_map(|r| r.cidr_ipv6())
            .map(|c| format!("{head} from {c}")),
    );
    out.extend(
        p.user_id_group_pairs()
            .iter()
            .filter_map(|g| g.group_id())
            .map(|g| format!("{head} from {g}")),
    );
    out.extend(
        p.prefix_list_ids()
            .iter()
            .filter_map(|l| l.prefix_list_id())
            .map(|l| format!("{head} from {l}")),
    );
    out
}

/// The inverse of [`rule_strings`] for one rule.
pub fn parse_rule(rule: &str) -> Option<IpPermission> {
    let (head, source) = rule.split_once(" from ")?;
    let (proto, ports) = head.split_once('/')?;
    let mut b = IpPermission::builder().ip_protocol(proto);
    if ports != "all" {
        let (f, t) = ports.split_once('-')?;
        b = b.from_port(f.parse().ok()?).to_port(t.parse().ok()?);
    }
    b = if source.starts_with("sg-") {
        b.user_id_group_pairs(UserIdGroupPair::builder().group_id(source).build())
    } else if source.starts_with("pl-") {
        b.prefix_list_ids(PrefixListId::builder().prefix_list_id(source).build())
    } else if source.contains(':') {
        b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(source).build())
    } else {
        b.ip_ranges(IpRange::builder().cidr_ip(source).build())
    };
    Some(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip() {
        for r in [
            "tcp/8080-8080 from 0.0.0.0/0",
            "tcp/22-22 from 203.0.113.7/32",
            "-1/all from sg-123",
            "udp/53-53 from ::/0",
        ] {
            let p = parse_rule(r).expect("parses");
            assert_eq!(rule_strings(&p), vec![r.to_string()]);
        }
    }
}
