//! The resources the deployer owns: how each is wanted, read, created, updated and
//! deleted, in dependency order.
//!
//! Every EC2 resource is created with its tags in the same call (`TagSpecifications`),
//! among them `deployer:address`, so one created just before a crash is found again by
//! its tags; IAM resources have fixed names derived from the app and are found by name.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    DomainType, Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType, Tag,
    TagSpecification, UserIdGroupPair,
};
use serde_json::{Value, json};

use crate::aws::{AwsError, Clients, code_of};
use crate::config::Config;

/// The `managed-by` tag value.
pub const MANAGED_BY: &str = "deployer";
/// The tag naming a resource's address in the state.
pub const ADDRESS_TAG: &str = "deployer:address";

/// A kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Vpc,
    Subnet,
    InternetGateway,
    IgwAttachment,
    RouteTable,
    Route,
    RouteTableAssociation,
    SecurityGroup,
    IamRole,
    IamRolePolicy,
    InstanceProfile,
    Eip,
}

/// Every resource of the shared stack, in dependency order (creation order; deletion
/// runs it backwards).
pub const STACK: [(Kind, &str); 12] = [
    (Kind::Vpc, "main"),
    (Kind::Subnet, "main"),
    (Kind::InternetGateway, "main"),
    (Kind::IgwAttachment, "main"),
    (Kind::RouteTable, "main"),
    (Kind::Route, "default"),
    (Kind::RouteTableAssociation, "main"),
    (Kind::SecurityGroup, "api"),
    (Kind::IamRole, "instance"),
    (Kind::IamRolePolicy, "artifact_read"),
    (Kind::InstanceProfile, "instance"),
    (Kind::Eip, "api"),
];

impl Kind {
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Vpc => "aws_vpc",
            Kind::Subnet => "aws_subnet",
            Kind::InternetGateway => "aws_internet_gateway",
            Kind::IgwAttachment => "aws_internet_gateway_attachment",
            Kind::RouteTable => "aws_route_table",
            Kind::Route => "aws_route",
            Kind::RouteTableAssociation => "aws_route_table_association",
            Kind::SecurityGroup => "aws_security_group",
            Kind::IamRole => "aws_iam_role",
            Kind::IamRolePolicy => "aws_iam_role_policy",
            Kind::InstanceProfile => "aws_iam_instance_profile",
            Kind::Eip => "aws_eip",
        }
    }

    /// `aws_vpc.main`.
    pub fn address(self) -> String {
        let name = STACK
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("main");
        format!("{}.{name}", self.type_name())
    }

    pub fn from_address(addr: &str) -> Option<Kind> {
        STACK.iter().map(|(k, _)| *k).find(|k| k.address() == addr)
    }

    /// Created with tags carrying its address (found again by them after a crash).
    fn ec2_resource_type(self) -> Option<ResourceType> {
        match self {
            Kind::Vpc => Some(ResourceType::Vpc),
            Kind::Subnet => Some(ResourceType::Subnet),
            Kind::InternetGateway => Some(ResourceType::InternetGateway),
            Kind::RouteTable => Some(ResourceType::RouteTable),
            Kind::SecurityGroup => Some(ResourceType::SecurityGroup),
            Kind::Eip => Some(ResourceType::ElasticIp),
            _ => None,
        }
    }
}

/// The ids of resources, by kind.
pub type Ids = BTreeMap<Kind, String>;

/// A wanted attribute value: known now, or only after its parent is created.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Known(Value),
    Unknown,
}

/// One wanted attribute.
#[derive(Debug, Clone)]
pub struct Want {
    pub name: &'static str,
    pub value: Attr,
    /// A change can only be made by replacing the resource.
    pub force_new: bool,
}

/// Attributes as read from AWS.
pub type Actual = BTreeMap<String, Value>;

/// The tags of a resource. Shared stack resources have colour `shared` and release
/// `none`; instances carry their colour and release.
pub fn tags_for(cfg: &Config, address: &str, color: &str, release: &str) -> Vec<(String, String)> {
    let name = address
        .split_once('.')
        .map(|(t, n)| format!("{}-{}-{n}", cfg.app, t.trim_start_matches("aws_")))
        .unwrap_or_else(|| format!("{}-{address}", cfg.app));
    vec![
        ("Name".into(), name.replace('_', "-")),
        ("app".into(), cfg.app.clone()),
        ("managed-by".into(), MANAGED_BY.into()),
        ("color".into(), color.into()),
        ("release".into(), release.into()),
        (ADDRESS_TAG.into(), address.into()),
    ]
}

fn stack_tags(cfg: &Config, kind: Kind) -> Vec<(String, String)> {
    tags_for(cfg, &kind.address(), "shared", "none")
}

pub fn tag_specification(rt: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn tags_value(tags: &[(String, String)]) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The managed tags among `actual` (other tags people add are not drift).
fn managed_tags(actual: &[Tag]) -> Value {
    const KEYS: [&str; 6] = ["Name", "app", "managed-by", "color", "release", ADDRESS_TAG];
    Value::Object(
        actual
            .iter()
            .filter_map(|t| {
                let k = t.key()?;
                KEYS.contains(&k)
                    .then(|| (k.to_string(), Value::String(t.value().unwrap_or("").into())))
            })
            .collect(),
    )
}

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

pub fn role_name(cfg: &Config) -> String {
    format!("{}-instance", cfg.app)
}
pub fn policy_name(cfg: &Config) -> String {
    format!("{}-artifact-read", cfg.app)
}
pub fn profile_name(cfg: &Config) -> String {
    format!("{}-instance", cfg.app)
}
pub fn security_group_name(cfg: &Config) -> String {
    format!("{}-api", cfg.app)
}

/// The security group's ingress rules, one string per rule and source:
/// `tcp/8080-8080 from 0.0.0.0/0`.
pub fn wanted_ingress(cfg: &Config) -> Vec<String> {
    let mut rules = vec![format!("tcp/{p}-{p} from 0.0.0.0/0", p = cfg.api_port)];
    if let Some(cidr) = &cfg.ssh_cidr {
        rules.push(format!("tcp/22-22 from {cidr}"));
    }
    rules.sort();
    rules
}

/// The wanted attributes of `kind`, given the ids of the parents that will still be
/// there (`None`: to be created).
pub fn wanted(cfg: &Config, kind: Kind, known: &BTreeMap<Kind, Option<String>>) -> Vec<Want> {
    let r = |k: Kind| match known.get(&k) {
        Some(Some(id)) => Attr::Known(Value::String(id.clone())),
        _ => Attr::Unknown,
    };
    let s = |v: &str| Attr::Known(Value::String(v.to_string()));
    let fnew = |name, value| Want {
        name,
        value,
        force_new: true,
    };
    let upd = |name, value| Want {
        name,
        value,
        force_new: false,
    };
    let tags = || upd("tags", Attr::Known(tags_value(&stack_tags(cfg, kind))));
    match kind {
        Kind::Vpc => vec![fnew("cidr_block", s(&cfg.vpc_cidr)), tags()],
        Kind::Subnet => {
            let mut w = vec![
                fnew("vpc_id", r(Kind::Vpc)),
                fnew("cidr_block", s(&cfg.subnet_cidr)),
            ];
            if let Some(az) = &cfg.availability_zone {
                w.push(fnew("availability_zone", s(az)));
            }
            w.push(tags());
            w
        }
        Kind::InternetGateway => vec![tags()],
        Kind::IgwAttachment => vec![
            fnew("internet_gateway_id", r(Kind::InternetGateway)),
            fnew("vpc_id", r(Kind::Vpc)),
        ],
        Kind::RouteTable => vec![fnew("vpc_id", r(Kind::Vpc)), tags()],
        Kind::Route => vec![
            fnew("route_table_id", r(Kind::RouteTable)),
            fnew("destination_cidr_block", s("0.0.0.0/0")),
            upd("gateway_id", r(Kind::InternetGateway)),
        ],
        Kind::RouteTableAssociation => vec![
            fnew("route_table_id", r(Kind::RouteTable)),
            fnew("subnet_id", r(Kind::Subnet)),
        ],
        Kind::SecurityGroup => vec![
            fnew("name", s(&security_group_name(cfg))),
            fnew(
                "description",
                s(&format!(
                    "API ingress for {} (managed by deployer)",
                    cfg.app
                )),
            ),
            fnew("vpc_id", r(Kind::Vpc)),
            upd("ingress", Attr::Known(json!(wanted_ingress(cfg)))),
            tags(),
        ],
        Kind::IamRole => vec![
            fnew("name", s(&role_name(cfg))),
            upd("assume_role_policy", Attr::Known(assume_role_policy())),
        ],
        Kind::IamRolePolicy => vec![
            fnew(
                "role",
                match known.get(&Kind::IamRole) {
                    Some(Some(_)) => s(&role_name(cfg)),
                    _ => Attr::Unknown,
                },
            ),
            fnew("name", s(&policy_name(cfg))),
            upd(
                "policy",
                Attr::Known(artifact_read_policy(&cfg.artifacts.bucket)),
            ),
        ],
        Kind::InstanceProfile => vec![
            fnew("name", s(&profile_name(cfg))),
            upd(
                "role",
                match known.get(&Kind::IamRole) {
                    Some(Some(_)) => s(&role_name(cfg)),
                    _ => Attr::Unknown,
                },
            ),
        ],
        Kind::Eip => vec![fnew("domain", s("vpc")), tags()],
    }
}

/// Whether an error code means "it is not there (any more)".
pub fn is_not_found(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.ends_with(".NotFound")
        || c.ends_with("NotFound")
        || c == "NoSuchEntity"
        || c == "Gateway.NotAttached"
        || c == "InvalidAssociationID.NotFound")
}

/// Talks to AWS about the stack's resources.
#[derive(Debug, Clone)]
pub struct Stack<'a> {
    pub cfg: &'a Config,
    pub clients: &'a Clients,
}

impl<'a> Stack<'a> {
    pub fn new(cfg: &'a Config, clients: &'a Clients) -> Stack<'a> {
        Stack { cfg, clients }
    }

    fn tag_filters(&self, kind: Kind) -> Vec<Filter> {
        let f = |k: &str, v: &str| Filter::builder().name(format!("tag:{k}")).values(v).build();
        vec![
            f("app", &self.cfg.app),
            f("managed-by", MANAGED_BY),
            f(ADDRESS_TAG, &kind.address()),
        ]
    }

    /// Reads the resource `id` of `kind`; `None` when it no longer exists.
    pub async fn read(&self, kind: Kind, id: &str) -> Result<Option<Actual>, AwsError> {
        let ec2 = &self.clients.ec2;
        let iam = &self.clients.iam;
        let addr = kind.address();
        let mut a = Actual::new();
        macro_rules! call {
            ($action:literal, $fut:expr) => {
                match $fut.await {
                    Ok(out) => out,
                    Err(e) if is_not_found(code_of(&e)) => return Ok(None),
                    Err(e) => return Err(AwsError::new(&addr, $action, e)),
                }
            };
        }
        let str_v = |s: Option<&str>| s.map(|s| Value::String(s.into())).unwrap_or(Value::Null);
        match kind {
            Kind::Vpc => {
                let out = call!("DescribeVpcs", ec2.describe_vpcs().vpc_ids(id).send());
                let Some(v) = out.vpcs().first() else {
                    return Ok(None);
                };
                a.insert("cidr_block".into(), str_v(v.cidr_block()));
                a.insert("tags".into(), managed_tags(v.tags()));
            }
            Kind::Subnet => {
                let out = call!(
                    "DescribeSubnets",
                    ec2.describe_subnets().subnet_ids(id).send()
                );
                let Some(v) = out.subnets().first() else {
                    return Ok(None);
                };
                a.insert("vpc_id".into(), str_v(v.vpc_id()));
                a.insert("cidr_block".into(), str_v(v.cidr_block()));
                a.insert("availability_zone".into(), str_v(v.availability_zone()));
                a.insert("tags".into(), managed_tags(v.tags()));
            }
            Kind::InternetGateway => {
                let out = call!(
                    "DescribeInternetGateways",
                    ec2.describe_internet_gateways()
                        .internet_gateway_ids(id)
                        .send()
                );
                let Some(v) = out.internet_gateways().first() else {
                    return Ok(None);
                };
                a.insert("tags".into(), managed_tags(v.tags()));
            }
            Kind::IgwAttachment => {
                let Some((igw, vpc)) = id.split_once(':') else {
                    return Ok(None);
                };
                let out = call!(
                    "DescribeInternetGateways",
                    ec2.describe_internet_gateways()
                        .internet_gateway_ids(igw)
                        .send()
                );
                let attached = out.internet_gateways().first().is_some_and(|g| {
                    g.attachments().iter().any(|at| {
                        at.vpc_id() == Some(vpc)
                            && at
                                .state()
                                .is_some_and(|s| matches!(s.as_str(), "available" | "attached"))
                    })
                });
                if !attached {
                    return Ok(None);
                }
                a.insert("internet_gateway_id".into(), json!(igw));
                a.insert("vpc_id".into(), json!(vpc));
            }
            Kind::RouteTable => {
                let out = call!(
                    "DescribeRouteTables",
                    ec2.describe_route_tables().route_table_ids(id).send()
                );
                let Some(v) = out.route_tables().first() else {
                    return Ok(None);
                };
                a.insert("vpc_id".into(), str_v(v.vpc_id()));
                a.insert("tags".into(), managed_tags(v.tags()));
            }
            Kind::Route => {
                let Some((rtb, dest)) = id.split_once(':') else {
                    return Ok(None);
                };
                let out = call!(
                    "DescribeRouteTables",
                    ec2.describe_route_tables().route_table_ids(rtb).send()
                );
                let Some(route) = out.route_tables().first().and_then(|t| {
                    t.routes()
                        .iter()
                        .find(|r| r.destination_cidr_block() == Some(dest))
                }) else {
                    return Ok(None);
                };
                a.insert("route_table_id".into(), json!(rtb));
                a.insert("destination_cidr_block".into(), json!(dest));
                a.insert("gateway_id".into(), str_v(route.gateway_id()));
            }
            Kind::RouteTableAssociation => {
                let out = call!(
                    "DescribeRouteTables",
                    ec2.describe_route_tables()
                        .filters(
                            Filter::builder()
                                .name("association.route-table-association-id")
                                .values(id)
                                .build()
                        )
                        .send()
                );
                let Some(assoc) = out.route_tables().iter().find_map(|t| {
                    t.associations()
                        .iter()
                        .find(|x| x.route_table_association_id() == Some(id))
                }) else {
                    return Ok(None);
                };
                a.insert("route_table_id".into(), str_v(assoc.route_table_id()));
                a.insert("subnet_id".into(), str_v(assoc.subnet_id()));
            }
            Kind::SecurityGroup => {
                let out = call!(
                    "DescribeSecurityGroups",
                    ec2.describe_security_groups().group_ids(id).send()
                );
                let Some(g) = out.security_groups().first() else {
                    return Ok(None);
                };
                a.insert("name".into(), str_v(g.group_name()));
                a.insert("description".into(), str_v(g.description()));
                a.insert("vpc_id".into(), str_v(g.vpc_id()));
                let mut rules: Vec<String> =
                    g.ip_permissions().iter().flat_map(rule_strings).collect();
                rules.sort();
                a.insert("ingress".into(), json!(rules));
                a.insert("tags".into(), managed_tags(g.tags()));
            }
            Kind::IamRole => {
                let out = call!("GetRole", iam.get_role().role_name(id).send());
                let Some(role) = out.role() else {
                    return Ok(None);
                };
                a.insert("name".into(), json!(role.role_name()));
                a.insert("arn".into(), json!(role.arn()));
                a.insert(
                    "assume_role_policy".into(),
                    policy_json(role.assume_role_policy_document().unwrap_or("")),
                );
            }
            Kind::IamRolePolicy => {
                let Some((role, name)) = id.split_once(':') else {
                    return Ok(None);
                };
                let out = call!(
                    "GetRolePolicy",
                    iam.get_role_policy()
                        .role_name(role)
                        .policy_name(name)
                        .send()
                );
                a.insert("role".into(), json!(out.role_name()));
                a.insert("name".into(), json!(out.policy_name()));
                a.insert("policy".into(), policy_json(out.policy_document()));
            }
            Kind::InstanceProfile => {
                let out = call!(
                    "GetInstanceProfile",
                    iam.get_instance_profile().instance_profile_name(id).send()
                );
                let Some(p) = out.instance_profile() else {
                    return Ok(None);
                };
                a.insert("name".into(), json!(p.instance_profile_name()));
                a.insert("arn".into(), json!(p.arn()));
                a.insert(
                    "role".into(),
                    p.roles()
                        .first()
                        .map(|r| json!(r.role_name()))
                        .unwrap_or(Value::Null),
                );
            }
            Kind::Eip => {
                let out = call!(
                    "DescribeAddresses",
                    ec2.describe_addresses().allocation_ids(id).send()
                );
                let Some(ad) = out.addresses().first() else {
                    return Ok(None);
                };
                a.insert("domain".into(), str_v(ad.domain().map(|d| d.as_str())));
                a.insert("public_ip".into(), str_v(ad.public_ip()));
                a.insert("tags".into(), managed_tags(ad.tags()));
            }
        }
        Ok(Some(a))
    }

    /// Finds every existing resource of `kind` by its tags (EC2) or its fixed name (IAM)
    /// or its parents (attachments, routes, associations), given the current ids of
    /// its parents.
    pub async fn find(&self, kind: Kind, current: &Ids) -> Result<Vec<String>, AwsError> {
        let ec2 = &self.clients.ec2;
        let addr = kind.address();
        let filters = self.tag_filters(kind);
        let ids: Vec<String> = match kind {
            Kind::Vpc => ec2
                .describe_vpcs()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "DescribeVpcs", e))?
                .vpcs()
                .iter()
                .filter_map(|v| v.vpc_id().map(str::to_string))
                .collect(),
            Kind::Subnet => ec2
                .describe_subnets()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "DescribeSubnets", e))?
                .subnets()
                .iter()
                .filter_map(|v| v.subnet_id().map(str::to_string))
                .collect(),
            Kind::InternetGateway => ec2
                .describe_internet_gateways()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "DescribeInternetGateways", e))?
                .internet_gateways()
                .iter()
                .filter_map(|v| v.internet_gateway_id().map(str::to_string))
                .collect(),
            Kind::RouteTable => ec2
                .describe_route_tables()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "DescribeRouteTables", e))?
                .route_tables()
                .iter()
                .filter_map(|v| v.route_table_id().map(str::to_string))
                .collect(),
            Kind::SecurityGroup => ec2
                .describe_security_groups()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "DescribeSecurityGroups", e))?
                .security_groups()
                .iter()
                .filter_map(|v| v.group_id().map(str::to_string))
                .collect(),
            Kind::Eip => ec2
                .describe_addresses()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "DescribeAddresses", e))?
                .addresses()
                .iter()
                .filter_map(|v| v.allocation_id().map(str::to_string))
                .collect(),
            Kind::IgwAttachment => {
                match (current.get(&Kind::InternetGateway), current.get(&Kind::Vpc)) {
                    (Some(igw), Some(_)) => {
                        // Whatever VPC it is attached to (a replaced VPC's included).
                        let out = ec2
                            .describe_internet_gateways()
                            .internet_gateway_ids(igw)
                            .send()
                            .await;
                        match out {
                            Ok(out) => out
                                .internet_gateways()
                                .iter()
                                .flat_map(|g| g.attachments())
                                .filter_map(|at| at.vpc_id().map(|v| format!("{igw}:{v}")))
                                .collect(),
                            Err(e) if is_not_found(code_of(&e)) => vec![],
                            Err(e) => {
                                return Err(AwsError::new(&addr, "DescribeInternetGateways", e));
                            }
                        }
                    }
                    _ => vec![],
                }
            }
            Kind::Route => match current.get(&Kind::RouteTable) {
                Some(rtb) => vec![format!("{rtb}:0.0.0.0/0")],
                None => vec![],
            },
            Kind::RouteTableAssociation => match current.get(&Kind::RouteTable) {
                Some(rtb) => {
                    let out = ec2
                        .describe_route_tables()
                        .route_table_ids(rtb)
                        .send()
                        .await;
                    match out {
                        Ok(out) => out
                            .route_tables()
                            .iter()
                            .flat_map(|t| t.associations())
                            .filter(|x| x.main() != Some(true))
                            .filter_map(|x| x.route_table_association_id().map(str::to_string))
                            .collect(),
                        Err(e) if is_not_found(code_of(&e)) => vec![],
                        Err(e) => return Err(AwsError::new(&addr, "DescribeRouteTables", e)),
                    }
                }
                None => vec![],
            },
            Kind::IamRole => vec![role_name(self.cfg)],
            Kind::IamRolePolicy => {
                vec![format!("{}:{}", role_name(self.cfg), policy_name(self.cfg))]
            }
            Kind::InstanceProfile => vec![profile_name(self.cfg)],
        };
        // Keep only those that really exist.
        let mut found = Vec::new();
        for id in ids {
            if self.read(kind, &id).await?.is_some() {
                found.push(id);
            }
        }
        Ok(found)
    }

    /// Creates `kind` with `ids` of its parents; returns its id. The caller records the
    /// id in the state at once.
    pub async fn create(&self, kind: Kind, ids: &Ids) -> Result<String, AwsError> {
        let ec2 = &self.clients.ec2;
        let iam = &self.clients.iam;
        let addr = kind.address();
        let cfg = self.cfg;
        let parent = |k: Kind| {
            ids.get(&k).cloned().ok_or_else(|| {
                AwsError::other(
                    &addr,
                    "Create",
                    format!("its parent {} does not exist", k.address()),
                )
            })
        };
        let spec = || {
            kind.ec2_resource_type()
                .map(|rt| tag_specification(rt, &stack_tags(cfg, kind)))
        };
        let missing_id = |action: &'static str| {
            AwsError::other(&addr, action, "the answer carries no id".into())
        };
        Ok(match kind {
            Kind::Vpc => ec2
                .create_vpc()
                .cidr_block(&cfg.vpc_cidr)
                .set_tag_specifications(spec().map(|s| vec![s]))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "CreateVpc", e))?
                .vpc()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| missing_id("CreateVpc"))?
                .to_string(),
            Kind::Subnet => ec2
                .create_subnet()
                .vpc_id(parent(Kind::Vpc)?)
                .cidr_block(&cfg.subnet_cidr)
                .set_availability_zone(cfg.availability_zone.clone())
                .set_tag_specifications(spec().map(|s| vec![s]))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "CreateSubnet", e))?
                .subnet()
                .and_then(|v| v.subnet_id())
                .ok_or_else(|| missing_id("CreateSubnet"))?
                .to_string(),
            Kind::InternetGateway => ec2
                .create_internet_gateway()
                .set_tag_specifications(spec().map(|s| vec![s]))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "CreateInternetGateway", e))?
                .internet_gateway()
                .and_then(|v| v.internet_gateway_id())
                .ok_or_else(|| missing_id("CreateInternetGateway"))?
                .to_string(),
            Kind::IgwAttachment => {
                let (igw, vpc) = (parent(Kind::InternetGateway)?, parent(Kind::Vpc)?);
                ec2.attach_internet_gateway()
                    .internet_gateway_id(&igw)
                    .vpc_id(&vpc)
                    .send()
                    .await
                    .map_err(|e| AwsError::new(&addr, "AttachInternetGateway", e))?;
                format!("{igw}:{vpc}")
            }
            Kind::RouteTable => ec2
                .create_route_table()
                .vpc_id(parent(Kind::Vpc)?)
                .set_tag_specifications(spec().map(|s| vec![s]))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "CreateRouteTable", e))?
                .route_table()
                .and_then(|v| v.route_table_id())
                .ok_or_else(|| missing_id("CreateRouteTable"))?
                .to_string(),
            Kind::Route => {
                let rtb = parent(Kind::RouteTable)?;
                ec2.create_route()
                    .route_table_id(&rtb)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(parent(Kind::InternetGateway)?)
                    .send()
                    .await
                    .map_err(|e| AwsError::new(&addr, "CreateRoute", e))?;
                format!("{rtb}:0.0.0.0/0")
            }
            Kind::RouteTableAssociation => ec2
                .associate_route_table()
                .route_table_id(parent(Kind::RouteTable)?)
                .subnet_id(parent(Kind::Subnet)?)
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "AssociateRouteTable", e))?
                .association_id()
                .ok_or_else(|| missing_id("AssociateRouteTable"))?
                .to_string(),
            Kind::SecurityGroup => {
                let id = ec2
                    .create_security_group()
                    .group_name(security_group_name(cfg))
                    .description(format!("API ingress for {} (managed by deployer)", cfg.app))
                    .vpc_id(parent(Kind::Vpc)?)
                    .set_tag_specifications(spec().map(|s| vec![s]))
                    .send()
                    .await
                    .map_err(|e| AwsError::new(&addr, "CreateSecurityGroup", e))?
                    .group_id()
                    .ok_or_else(|| missing_id("CreateSecurityGroup"))?
                    .to_string();
                // Ingress is converged right away; a crash in between shows as drift.
                self.set_ingress(&id, &[], &wanted_ingress(cfg)).await?;
                id
            }
            Kind::IamRole => {
                let mut req = iam
                    .create_role()
                    .role_name(role_name(cfg))
                    .assume_role_policy_document(assume_role_policy().to_string())
                    .description(format!("Instances of {} (managed by deployer)", cfg.app));
                for (k, v) in stack_tags(cfg, kind) {
                    let tag = aws_sdk_iam::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| AwsError::other(&addr, "CreateRole", e.to_string()))?;
                    req = req.tags(tag);
                }
                match req.send().await {
                    Ok(_) => {}
                    Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {}
                    Err(e) => return Err(AwsError::new(&addr, "CreateRole", e)),
                }
                role_name(cfg)
            }
            Kind::IamRolePolicy => {
                let role = parent(Kind::IamRole)?;
                iam.put_role_policy()
                    .role_name(&role)
                    .policy_name(policy_name(cfg))
                    .policy_document(artifact_read_policy(&cfg.artifacts.bucket).to_string())
                    .send()
                    .await
                    .map_err(|e| AwsError::new(&addr, "PutRolePolicy", e))?;
                format!("{role}:{}", policy_name(cfg))
            }
            Kind::InstanceProfile => {
                let role = parent(Kind::IamRole)?;
                let mut req = iam
                    .create_instance_profile()
                    .instance_profile_name(profile_name(cfg));
                for (k, v) in stack_tags(cfg, kind) {
                    let tag = aws_sdk_iam::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| {
                            AwsError::other(&addr, "CreateInstanceProfile", e.to_string())
                        })?;
                    req = req.tags(tag);
                }
                match req.send().await {
                    Ok(_) => {}
                    Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {}
                    Err(e) => return Err(AwsError::new(&addr, "CreateInstanceProfile", e)),
                }
                iam.add_role_to_instance_profile()
                    .instance_profile_name(profile_name(cfg))
                    .role_name(role)
                    .send()
                    .await
                    .map_err(|e| AwsError::new(&addr, "AddRoleToInstanceProfile", e))?;
                profile_name(cfg)
            }
            Kind::Eip => ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .set_tag_specifications(spec().map(|s| vec![s]))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "AllocateAddress", e))?
                .allocation_id()
                .ok_or_else(|| missing_id("AllocateAddress"))?
                .to_string(),
        })
    }

    /// Brings the updatable attributes of an existing resource to what is wanted.
    pub async fn update(
        &self,
        kind: Kind,
        id: &str,
        ids: &Ids,
        actual: &Actual,
    ) -> Result<(), AwsError> {
        let ec2 = &self.clients.ec2;
        let iam = &self.clients.iam;
        let addr = kind.address();
        let cfg = self.cfg;
        let known: BTreeMap<Kind, Option<String>> =
            ids.iter().map(|(k, v)| (*k, Some(v.clone()))).collect();
        for want in wanted(cfg, kind, &known) {
            if want.force_new {
                continue;
            }
            let Attr::Known(value) = &want.value else {
                continue;
            };
            if actual.get(want.name) == Some(value) {
                continue;
            }
            match (kind, want.name) {
                (_, "tags") => {
                    ec2.create_tags()
                        .resources(id)
                        .set_tags(Some(
                            stack_tags(cfg, kind)
                                .into_iter()
                                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                                .collect(),
                        ))
                        .send()
                        .await
                        .map_err(|e| AwsError::new(&addr, "CreateTags", e))?;
                }
                (Kind::Route, "gateway_id") => {
                    let (rtb, dest) = id.split_once(':').unwrap_or((id, "0.0.0.0/0"));
                    ec2.replace_route()
                        .route_table_id(rtb)
                        .destination_cidr_block(dest)
                        .gateway_id(value.as_str().unwrap_or_default())
                        .send()
                        .await
                        .map_err(|e| AwsError::new(&addr, "ReplaceRoute", e))?;
                }
                (Kind::SecurityGroup, "ingress") => {
                    let have: Vec<String> = actual
                        .get("ingress")
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default();
                    self.set_ingress(id, &have, &wanted_ingress(cfg)).await?;
                }
                (Kind::IamRole, "assume_role_policy") => {
                    iam.update_assume_role_policy()
                        .role_name(id)
                        .policy_document(value.to_string())
                        .send()
                        .await
                        .map_err(|e| AwsError::new(&addr, "UpdateAssumeRolePolicy", e))?;
                }
                (Kind::IamRolePolicy, "policy") => {
                    let (role, name) = id.split_once(':').unwrap_or((id, ""));
                    iam.put_role_policy()
                        .role_name(role)
                        .policy_name(name)
                        .policy_document(value.to_string())
                        .send()
                        .await
                        .map_err(|e| AwsError::new(&addr, "PutRolePolicy", e))?;
                }
                (Kind::InstanceProfile, "role") => {
                    if let Some(old) = actual.get("role").and_then(Value::as_str) {
                        iam.remove_role_from_instance_profile()
                            .instance_profile_name(id)
                            .role_name(old)
                            .send()
                            .await
                            .map_err(|e| {
                                AwsError::new(&addr, "RemoveRoleFromInstanceProfile", e)
                            })?;
                    }
                    iam.add_role_to_instance_profile()
                        .instance_profile_name(id)
                        .role_name(value.as_str().unwrap_or_default())
                        .send()
                        .await
                        .map_err(|e| AwsError::new(&addr, "AddRoleToInstanceProfile", e))?;
                }
                (_, name) => {
                    return Err(AwsError::other(
                        &addr,
                        "Update",
                        format!("attribute {name} cannot be updated in place"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Revokes the rules in `have` that are not wanted and authorizes the missing ones.
    async fn set_ingress(
        &self,
        group: &str,
        have: &[String],
        want: &[String],
    ) -> Result<(), AwsError> {
        let addr = Kind::SecurityGroup.address();
        let extra: Vec<IpPermission> = have
            .iter()
            .filter(|r| !want.contains(r))
            .filter_map(|r| parse_rule(r))
            .collect();
        let missing: Vec<IpPermission> = want
            .iter()
            .filter(|r| !have.contains(r))
            .filter_map(|r| parse_rule(r))
            .collect();
        if !extra.is_empty() {
            self.clients
                .ec2
                .revoke_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(extra))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "RevokeSecurityGroupIngress", e))?;
        }
        if !missing.is_empty() {
            self.clients
                .ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(missing))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "AuthorizeSecurityGroupIngress", e))?;
        }
        Ok(())
    }

    /// Deletes resource `id` of `kind`; one already gone is not an error.
    pub async fn delete(&self, kind: Kind, id: &str) -> Result<(), AwsError> {
        let ec2 = &self.clients.ec2;
        let iam = &self.clients.iam;
        let addr = kind.address();
        macro_rules! gone_ok {
            ($action:literal, $fut:expr) => {
                match $fut.await {
                    Ok(_) => {}
                    Err(e) if is_not_found(code_of(&e)) => {}
                    Err(e) => return Err(AwsError::new(&addr, $action, e)),
                }
            };
        }
        match kind {
            Kind::Vpc => gone_ok!("DeleteVpc", ec2.delete_vpc().vpc_id(id).send()),
            Kind::Subnet => gone_ok!("DeleteSubnet", ec2.delete_subnet().subnet_id(id).send()),
            Kind::InternetGateway => gone_ok!(
                "DeleteInternetGateway",
                ec2.delete_internet_gateway().internet_gateway_id(id).send()
            ),
            Kind::IgwAttachment => {
                if let Some((igw, vpc)) = id.split_once(':') {
                    gone_ok!(
                        "DetachInternetGateway",
                        ec2.detach_internet_gateway()
                            .internet_gateway_id(igw)
                            .vpc_id(vpc)
                            .send()
                    );
                }
            }
            Kind::RouteTable => gone_ok!(
                "DeleteRouteTable",
                ec2.delete_route_table().route_table_id(id).send()
            ),
            Kind::Route => {
                if let Some((rtb, dest)) = id.split_once(':') {
                    gone_ok!(
                        "DeleteRoute",
                        ec2.delete_route()
                            .route_table_id(rtb)
                            .destination_cidr_block(dest)
                            .send()
                    );
                }
            }
            Kind::RouteTableAssociation => gone_ok!(
                "DisassociateRouteTable",
                ec2.disassociate_route_table().association_id(id).send()
            ),
            Kind::SecurityGroup => gone_ok!(
                "DeleteSecurityGroup",
                ec2.delete_security_group().group_id(id).send()
            ),
            Kind::IamRole => {
                // Inline policies and profiles that still name it would block the delete.
                if let Ok(out) = iam.list_role_policies().role_name(id).send().await {
                    for p in out.policy_names() {
                        gone_ok!(
                            "DeleteRolePolicy",
                            iam.delete_role_policy().role_name(id).policy_name(p).send()
                        );
                    }
                }
                if let Ok(out) = iam
                    .list_instance_profiles_for_role()
                    .role_name(id)
                    .send()
                    .await
                {
                    for p in out.instance_profiles() {
                        gone_ok!(
                            "RemoveRoleFromInstanceProfile",
                            iam.remove_role_from_instance_profile()
                                .instance_profile_name(p.instance_profile_name())
                                .role_name(id)
                                .send()
                        );
                    }
                }
                gone_ok!("DeleteRole", iam.delete_role().role_name(id).send());
            }
            Kind::IamRolePolicy => {
                if let Some((role, name)) = id.split_once(':') {
                    gone_ok!(
                        "DeleteRolePolicy",
                        iam.delete_role_policy()
                            .role_name(role)
                            .policy_name(name)
                            .send()
                    );
                }
            }
            Kind::InstanceProfile => {
                if let Ok(out) = iam
                    .get_instance_profile()
                    .instance_profile_name(id)
                    .send()
                    .await
                    && let Some(p) = out.instance_profile()
                {
                    for r in p.roles() {
                        gone_ok!(
                            "RemoveRoleFromInstanceProfile",
                            iam.remove_role_from_instance_profile()
                                .instance_profile_name(id)
                                .role_name(r.role_name())
                                .send()
                        );
                    }
                }
                gone_ok!(
                    "DeleteInstanceProfile",
                    iam.delete_instance_profile()
                        .instance_profile_name(id)
                        .send()
                );
            }
            Kind::Eip => {
                // AWS refuses to release an associated address: disassociate first.
                if let Ok(out) = ec2.describe_addresses().allocation_ids(id).send().await {
                    for ad in out.addresses() {
                        if let Some(assoc) = ad.association_id() {
                            gone_ok!(
                                "DisassociateAddress",
                                ec2.disassociate_address().association_id(assoc).send()
                            );
                        }
                    }
                }
                gone_ok!(
                    "ReleaseAddress",
                    ec2.release_address().allocation_id(id).send()
                );
            }
        }
        Ok(())
    }
}

/// A policy document as JSON, whether AWS sent it URL-encoded (as IAM does) or not.
pub fn policy_json(doc: &str) -> Value {
    let text = if doc.trim_start().starts_with('{') {
        doc.to_string()
    } else {
        percent_decode(doc)
    };
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len() + 1
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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

    #[test]
    fn url_encoded_policies_decode() {
        let enc = "%7B%22Version%22%3A%222012-10-17%22%7D";
        assert_eq!(policy_json(enc), json!({"Version": "2012-10-17"}));
        assert_eq!(policy_json("{\"a\":1}"), json!({"a": 1}));
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

    #[test]
    fn addresses_round_trip() {
        for (k, _) in STACK {
            assert_eq!(Kind::from_address(&k.address()), Some(k));
        }
    }
}
