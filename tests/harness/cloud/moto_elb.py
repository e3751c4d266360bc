"""Network Load Balancers as AWS runs them, over moto 5.2's elbv2 backend.

Installed by moto_aws.py (`install(CONFIG)`), configured by the same LOCAL_CLOUD_AWS
object:

  lb_active_s        a new balancer stays "provisioning" for this long before it is
                     "active" (AWS: a few minutes; terraform-provider-aws waits up to
                     10 min). moto makes it active on the first describe.
  lb_interfaces_s    after DeleteLoadBalancer, the balancer's network interfaces
                     (description "ELB net/<name>/<id>") linger this long, still
                     holding their Elastic IPs: DeleteSubnet is refused
                     (DependencyViolation), ReleaseAddress too (InvalidIPAddress.InUse,
                     under strict), and the internet gateway cannot be detached while
                     they map public addresses (terraform-provider-aws waits up to
                     5 min for them to go).

Always (fidelity fixes, whatever the configuration):

* A subnet mapping's AllocationId is honoured as on AWS: the balancer gets one
  requester-managed interface per mapping in that subnet, the Elastic IP is associated
  with it (DescribeAddresses shows the interface), and DescribeLoadBalancers lists it
  under AvailabilityZones[].LoadBalancerAddresses. An unknown allocation id is
  refused (InvalidAllocationID.NotFound), as is one already associated
  (InvalidConfigurationRequest). moto ignores the allocation id. The same holds for
  a mapping SetSubnets adds to a balancer (how a network balancer gains a zone, e.g.
  the deployer moving the Elastic IP it held on an instance onto the balancer); the
  Elastic IP of an existing mapping cannot be changed (InvalidConfigurationRequest).
* Target health is not moto's "healthy for every running instance": a registered
  target is "initial" (Elb.RegistrationInProgress) until the health checker reports on
  it, then what the checker saw. The checker is the local cloud's balancer stand-in:
  it probes each target itself and writes what it saw to the JSON file named by the
  environment variable LOCAL_CLOUD_TARGET_HEALTH
  ({"<target group arn>": {"<instance id>": "healthy" | "unhealthy"}}).
* A deregistered target is "draining" (Target.DeregistrationInProgress) for the target
  group's deregistration_delay.timeout_seconds, and listed while it drains, as on AWS;
  moto forgets it at once.
"""

import json
import os
import threading
import time

LOCK = threading.Lock()
CREATED = {}  # balancer arn -> monotonic time of CreateLoadBalancer
MAPPINGS = {}  # balancer arn -> [(subnet id, allocation id, interface id)]
LINGERING = []  # (monotonic time gone, [interface ids], subnet ids) of deleted balancers
DRAINING = {}  # (target group arn, target id) -> (monotonic time, {"Id", "Port"})


def now():
    return time.monotonic()


def install(config):
    from moto.ec2 import exceptions as ec2_exc
    from moto.ec2.models import ec2_backends
    from moto.ec2.models import subnets as subnet_mod
    from moto.elbv2 import exceptions as elb_exc
    from moto.elbv2 import models as elb_models

    def seconds(key):
        return float(config.get(key) or 0)

    LB = elb_models.ELBv2Backend
    FakeLB = elb_models.FakeLoadBalancer

    def ec2_of(backend):
        return ec2_backends[backend.account_id][backend.region_name]

    # ---- subnet mappings with Elastic IPs ---------------------------------------------
    def checked_allocation(ec2, alloc):
        """The Elastic IP `alloc`, refused as AWS does when unknown or associated."""
        try:
            eip = ec2.address_by_allocation([alloc])[0]
        except ec2_exc.EC2ClientError:
            raise elb_exc.ELBClientError(
                "InvalidAllocationID.NotFound",
                f"The allocation ID '{alloc}' does not exist",
            )
        if eip.association_id or eip.instance is not None or eip.eni is not None:
            raise elb_exc.ELBClientError(
                "InvalidConfigurationRequest",
                f"The allocation ID '{alloc}' is already associated",
            )
        return eip

    orig_create = LB.create_load_balancer

    def create_load_balancer(self, name, security_groups, subnet_ids, subnet_mappings=None, *a, **kw):
        ec2 = ec2_of(self)
        wanted = []
        for m in subnet_mappings or []:
            alloc = m.get("AllocationId")
            if not alloc:
                continue
            checked_allocation(ec2, alloc)
            wanted.append((m["SubnetId"], alloc))
        lb = orig_create(self, name, security_groups, subnet_ids, subnet_mappings, *a, **kw)
        lb_id = lb.arn.rsplit("/", 1)[-1]
        made = []
        for subnet_id, alloc in wanted:
            subnet = ec2.get_subnet(subnet_id)
            eni = ec2.create_network_interface(
                subnet, None, description=f"ELB net/{name}/{lb_id}"
            )
            eni.requester_managed = True
            ec2.associate_address(eni=eni, allocation_id=alloc)
            made.append((subnet_id, alloc, eni.id))
        with LOCK:
            CREATED[lb.arn] = now()
            MAPPINGS[lb.arn] = made
        return lb

    LB.create_load_balancer = create_load_balancer

    orig_set_subnets = LB.set_subnets

    def set_subnets(self, arn, subnets, subnet_mappings):
        ec2 = ec2_of(self)
        with LOCK:
            made = list(MAPPINGS.get(arn, []))
        mapped = {s: a for s, a, _e in made}
        added = []
        for m in subnet_mappings or []:
            alloc = m.get("AllocationId")
            subnet_id = m["SubnetId"]
            if subnet_id in mapped:
                if alloc and alloc != mapped[subnet_id]:
                    raise elb_exc.ELBClientError(
                        "InvalidConfigurationRequest",
                        f"The Elastic IP of the mapping of subnet '{subnet_id}' cannot be changed",
                    )
                continue
            if alloc:
                checked_allocation(ec2, alloc)
                added.append((subnet_id, alloc))
        zones = orig_set_subnets(self, arn, subnets, subnet_mappings)
        lb = self.load_balancers.get(arn)
        lb_name = lb.name if lb is not None else "?"
        lb_id = arn.rsplit("/", 1)[-1]
        for subnet_id, alloc in added:
            eni = ec2.create_network_interface(
                ec2.get_subnet(subnet_id), None, description=f"ELB net/{lb_name}/{lb_id}"
            )
            eni.requester_managed = True
            ec2.associate_address(eni=eni, allocation_id=alloc)
            with LOCK:
                MAPPINGS.setdefault(arn, []).append((subnet_id, alloc, eni.id))
        return zones

    LB.set_subnets = set_subnets

    def activate(self):
        with LOCK:
            born = CREATED.get(self.arn)
        if born is not None and now() - born < seconds("lb_active_s"):
            return
        if self.state == "provisioning":
            self.state = "active"

    FakeLB.activate = activate

    class Zone:
        def __init__(self, subnet, addresses):
            self.subnet_id = subnet.id
            self.zone_name = subnet.availability_zone
            self.load_balancer_addresses = addresses

    def availability_zones(self):
        with LOCK:
            made = list(MAPPINGS.get(self.arn, []))
        zones = []
        for subnet in self.subnets:
            addresses = []
            for subnet_id, alloc, _eni in made:
                if subnet_id != subnet.id:
                    continue
                ip = None
                try:
                    backend = ec2_backends[self.arn.split(":")[4]][self.arn.split(":")[3]]
                    ip = backend.address_by_allocation([alloc])[0].public_ip
                except Exception:  # the address was released meanwhile
                    pass
                addresses.append({"IpAddress": ip, "AllocationId": alloc})
            zones.append(Zone(subnet, addresses))
        return zones

    FakeLB.availability_zones = property(availability_zones)

    # ---- deletion: the interfaces linger ----------------------------------------------
    orig_delete = LB.delete_load_balancer

    def delete_load_balancer(self, arn):
        existed = arn in self.load_balancers
        orig_delete(self, arn)
        if not existed:
            return
        with LOCK:
            made = MAPPINGS.pop(arn, [])
            CREATED.pop(arn, None)
        enis = [e for _s, _a, e in made]
        ec2 = ec2_of(self)
        window = seconds("lb_interfaces_s")
        if window <= 0:
            release_interfaces(ec2, enis)
            return
        with LOCK:
            LINGERING.append((now(), enis, {s for s, _a, _e in made}))
        timer = threading.Timer(window, release_interfaces, args=(ec2, enis))
        timer.daemon = True
        timer.start()

    def release_interfaces(ec2, enis):
        for eni_id in enis:
            for eip in list(ec2.addresses):
                if eip.eni is not None and eip.eni.id == eni_id:
                    try:
                        ec2.disassociate_address(association_id=eip.association_id)
                    except Exception:
                        eip.eni = None
                        eip.association_id = None
            try:
                ec2.delete_network_interface(eni_id)
            except Exception:
                pass
        with LOCK:
            LINGERING[:] = [g for g in LINGERING if not set(g[1]) & set(enis)]

    LB.delete_load_balancer = delete_load_balancer

    def interfaces_in(ec2, subnet_id):
        """Balancer interfaces (live or lingering) still in the subnet."""
        with LOCK:
            live = [e for made in MAPPINGS.values() for s, _a, e in made if s == subnet_id]
            gone = [e for _t, enis, subnets in LINGERING if subnet_id in subnets for e in enis]
        return live + gone

    SNB = subnet_mod.SubnetBackend
    prev_delete_subnet = SNB.delete_subnet

    def delete_subnet(self, subnet_id):
        if interfaces_in(self, subnet_id):
            raise ec2_exc.DependencyViolationError(
                f"The subnet '{subnet_id}' has dependencies and cannot be deleted."
            )
        return prev_delete_subnet(self, subnet_id)

    SNB.delete_subnet = delete_subnet

    # ---- target health from the balancer stand-in's own probes ------------------------
    def checked():
        path = os.environ.get("LOCAL_CLOUD_TARGET_HEALTH")
        if not path:
            return {}
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    FakeHealth = elb_models.FakeHealthStatus

    def delay_of(tg):
        try:
            return float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
        except (AttributeError, TypeError, ValueError):
            return 300.0

    orig_deregister = LB.deregister_targets

    def deregister_targets(self, target_group_arn, instances):
        tg = self.target_groups.get(target_group_arn)
        before = dict(tg.targets) if tg is not None else {}
        orig_deregister(self, target_group_arn, instances)
        with LOCK:
            for t in instances:
                if t["Id"] in before:
                    DRAINING[(target_group_arn, t["Id"])] = (now(), before[t["Id"]])

    LB.deregister_targets = deregister_targets

    orig_register = LB.register_targets

    def register_targets(self, target_group_arn, instances):
        orig_register(self, target_group_arn, instances)
        with LOCK:
            for t in instances:
                DRAINING.pop((target_group_arn, t["Id"]), None)

    LB.register_targets = register_targets

    def describe_target_health(self, target_group_arn, targets):
        tg = self.target_groups.get(target_group_arn)
        if tg is None:
            raise elb_exc.TargetGroupNotFoundError()
        delay = delay_of(tg)
        with LOCK:
            draining = {
                tid: t
                for (arn, tid), (since, t) in list(DRAINING.items())
                if arn == target_group_arn and now() - since < delay
            }
        if not targets:
            targets = list(tg.targets.values()) + [
                t for tid, t in draining.items() if tid not in tg.targets
            ]
        seen = checked().get(target_group_arn, {})
        hc_port = tg.health_check_port
        out = []
        for target in targets:
            tid = target["Id"]
            registered = tg.targets.get(tid)
            if registered is not None:
                port = registered.get("Port", tg.port)
                state = seen.get(tid)
                if state == "healthy":
                    out.append(FakeHealth(tid, port, hc_port, "healthy"))
                elif state == "unhealthy":
                    out.append(
                        FakeHealth(
                            tid, port, hc_port, "unhealthy",
                            "Target.FailedHealthChecks", "Health checks failed",
                        )
                    )
                else:
                    out.append(
                        FakeHealth(
                            tid, port, hc_port, "initial",
                            "Elb.RegistrationInProgress",
                            "Target registration is in progress",
                        )
                    )
            elif tid in draining:
                out.append(
                    FakeHealth(
                        tid, draining[tid].get("Port", tg.port), hc_port, "draining",
                        "Target.DeregistrationInProgress",
                        "Target deregistration is in progress",
                    )
                )
            else:
                out.append(
                    FakeHealth(
                        tid, target.get("Port", tg.port), hc_port, "unused",
                        "Target.NotRegistered", "Target is not registered to the target group",
                    )
                )
        return out

    LB.describe_target_health = describe_target_health
