"""moto_server with AWS's eventual consistency and a few of AWS's refusals.

Runs `moto.server.main` after wrapping the backend methods where AWS is eventually
consistent or stricter than moto 5.2. Every behaviour is configured by the JSON object
in the environment variable LOCAL_CLOUD_AWS (unset or "{}" = plain moto):

  instance_profile_s     RunInstances refuses an instance profile created (or given a
                         role) less than this many seconds ago, with AWS's
                         InvalidParameterValue "Invalid IAM Instance Profile name".
  role_s                 a new IAM role is unknown (NoSuchEntity) to PutRolePolicy and
                         AddRoleToInstanceProfile for this long after CreateRole.
  instance_s             a new instance id is unknown (InvalidInstanceID.NotFound, and
                         absent from listings) for this long after RunInstances.
  security_group_s       a new security group id is unknown (InvalidGroup.NotFound)
                         for this long after CreateSecurityGroup.
  address_s              DescribeAddresses shows the previous association for this
                         long after AssociateAddress.
  terminated_eni_s       the interfaces of a terminated instance block DeleteSubnet and
                         DeleteSecurityGroup (DependencyViolation) and still count as
                         mapped public addresses for this long.
  strict                 true: AWS's refusals moto lacks. DetachInternetGateway with
                         mapped public addresses, ReleaseAddress of an associated
                         address, DeleteSecurityGroup / DeleteSubnet still used by an
                         instance are refused; terminating an instance disassociates
                         its Elastic IP.

Always (a fidelity fix, whatever the configuration): an interface that an Elastic IP
leaves through AssociateAddress with AllowReassociation gets a new public address of
its own, as on AWS (moto keeps showing the Elastic IP on it).

Apart from LOCAL_CLOUD_AWS, LOCAL_CLOUD_LATENCY_MS (unset or 0 = none) delays every
request by that many milliseconds before it is served, as AWS's own round trip
(50-300 ms) would: the plan benchmark (bench/plan) prices sequential calls with it.
Requests are served on threads of their own, so concurrent ones wait together.

Network Load Balancers (their provisioning, interfaces, Elastic IPs and target health)
are in moto_elb.py, configured by the same object.

Usage: python moto_aws.py -H 127.0.0.1 -p PORT   (the same arguments as moto_server)
"""

import copy
import json
import os
import sys
import threading
import time

CONFIG = json.loads(os.environ.get("LOCAL_CLOUD_AWS") or "{}")


def seconds(key):
    return float(CONFIG.get(key) or 0)


LOCK = threading.Lock()
BORN = {}  # resource id (instance, security group) -> monotonic time it was created
PROFILE_CHANGED = {}  # instance profile name -> monotonic time of its last change
MOVED = {}  # allocation id or public ip -> (monotonic time, stale view attributes)
LAUNCHED = threading.local()  # ids launched by the RunInstances request in this thread
TERMINATED = []  # (monotonic time, vpc id, subnet id, security group ids, instance id)


def now():
    return time.monotonic()


def young(resource_id, window):
    if window <= 0:
        return False
    with LOCK:
        born = BORN.get(resource_id)
    return born is not None and now() - born < window


def recent_terminations():
    window = seconds("terminated_eni_s")
    if window <= 0:
        return []
    with LOCK:
        return [t for t in TERMINATED if now() - t[0] < window]


def install():
    from moto.ec2 import exceptions as ec2_exc
    from moto.ec2.models import elastic_ip_addresses as eip_mod
    from moto.ec2.models import instances as inst_mod
    from moto.ec2.models import internet_gateways as igw_mod
    from moto.ec2.models import security_groups as sg_mod
    from moto.ec2.models import subnets as subnet_mod
    from moto.ec2.models import EC2Backend
    from moto.ec2.responses import instances as inst_resp
    from moto.ec2.utils import generic_filter
    from moto.iam import models as iam_models

    EC2Error = ec2_exc.EC2ClientError

    # ---- IAM instance profile propagation -------------------------------------------
    def profile_changed(name):
        with LOCK:
            PROFILE_CHANGED[name] = now()

    orig_create_profile = iam_models.IAMBackend.create_instance_profile

    def create_instance_profile(self, name, *args, **kwargs):
        profile = orig_create_profile(self, name, *args, **kwargs)
        profile_changed(profile.name)
        return profile

    orig_add_role = iam_models.IAMBackend.add_role_to_instance_profile

    def add_role_to_instance_profile(self, profile_name, role_name):
        if young("role:" + role_name, seconds("role_s")):
            from moto.iam.exceptions import NotFoundException

            raise NotFoundException(f"The role with name {role_name} cannot be found.")
        orig_add_role(self, profile_name, role_name)
        profile_changed(profile_name)

    iam_models.IAMBackend.create_instance_profile = create_instance_profile

    # ---- a new IAM role briefly unknown to the calls that name it ------------------------
    orig_create_role = iam_models.IAMBackend.create_role

    def create_role(self, role_name, *args, **kwargs):
        role = orig_create_role(self, role_name, *args, **kwargs)
        with LOCK:
            BORN["role:" + role_name] = now()
        return role

    def refuse_young_role(role_name):
        if young("role:" + role_name, seconds("role_s")):
            from moto.iam.exceptions import NotFoundException

            raise NotFoundException(f"The role with name {role_name} cannot be found.")

    orig_put_role_policy = iam_models.IAMBackend.put_role_policy

    def put_role_policy(self, role_name, *args, **kwargs):
        refuse_young_role(role_name)
        return orig_put_role_policy(self, role_name, *args, **kwargs)

    iam_models.IAMBackend.create_role = create_role
    iam_models.IAMBackend.put_role_policy = put_role_policy
    iam_models.IAMBackend.add_role_to_instance_profile = add_role_to_instance_profile

    orig_filter_profiles = inst_resp.filter_iam_instance_profiles

    def filter_iam_instance_profiles(
        account_id, partition, iam_instance_profile_arn, iam_instance_profile_name
    ):
        profile = orig_filter_profiles(
            account_id,
            partition=partition,
            iam_instance_profile_arn=iam_instance_profile_arn,
            iam_instance_profile_name=iam_instance_profile_name,
        )
        window = seconds("instance_profile_s")
        name = getattr(profile, "name", None) or iam_instance_profile_name
        if window > 0 and name:
            with LOCK:
                changed = PROFILE_CHANGED.get(name)
            if changed is not None and now() - changed < window:
                if iam_instance_profile_name:
                    raise EC2Error(
                        "InvalidParameterValue",
                        f"Value ({iam_instance_profile_name}) for parameter "
                        "iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
                    )
                raise EC2Error(
                    "InvalidParameterValue",
                    f"Value ({iam_instance_profile_arn}) for parameter "
                    "iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN",
                )
        return profile

    inst_resp.filter_iam_instance_profiles = filter_iam_instance_profiles

    # ---- new instance ids briefly unknown ---------------------------------------------
    IB = inst_mod.InstanceBackend
    orig_run = IB.run_instances

    def run_instances(self, *args, **kwargs):
        reservation = orig_run(self, *args, **kwargs)
        LAUNCHED.ids = [i.id for i in reservation.instances]
        return reservation

    # The ids become unknown only once the RunInstances request is answered: moto itself
    # looks the new instance up (to attach its instance profile) within the request.
    orig_run_response = inst_resp.InstanceResponse.run_instances

    def run_instances_response(self):
        LAUNCHED.ids = []
        try:
            return orig_run_response(self)
        finally:
            with LOCK:
                for iid in LAUNCHED.ids:
                    BORN[iid] = now()
            LAUNCHED.ids = []

    inst_resp.InstanceResponse.run_instances = run_instances_response

    orig_all_reservations = IB.all_reservations

    def all_reservations(self, filters=None):
        found = orig_all_reservations(self, filters)
        window = seconds("instance_s")
        if window <= 0:
            return found
        shown = []
        for r in found:  # shallow copies made by moto: safe to replace .instances
            r.instances = [i for i in r.instances if not young(i.id, window)]
            if r.instances:
                shown.append(r)
        return shown

    orig_by_id = IB.get_instance_by_id

    def get_instance_by_id(self, instance_id):
        if young(instance_id, seconds("instance_s")):
            return None
        return orig_by_id(self, instance_id)

    IB.run_instances = run_instances
    IB.all_reservations = all_reservations
    IB.get_instance_by_id = get_instance_by_id

    # CreateTags checks resources through do_resources_exist, where moto accepts an
    # unknown instance id; AWS refuses it (and a young one).
    orig_exist = EC2Backend.do_resources_exist

    def do_resources_exist(self, resource_ids):
        for rid in resource_ids:
            if rid.startswith("i-") and self.get_instance_by_id(rid) is None:
                raise ec2_exc.InvalidInstanceIdError(rid)
        return orig_exist(self, resource_ids)

    EC2Backend.do_resources_exist = do_resources_exist

    # ---- new security groups briefly unknown ------------------------------------------
    SB = sg_mod.SecurityGroupBackend
    orig_create_sg = SB.create_security_group

    def create_security_group(self, name, *args, **kwargs):
        group = orig_create_sg(self, name, *args, **kwargs)
        if name != "default" and not kwargs.get("is_default"):
            with LOCK:
                BORN[group.id] = now()
        return group

    orig_sg_from_id = SB.get_security_group_from_id

    def get_security_group_from_id(self, group_id):
        if young(group_id, seconds("security_group_s")):
            return None
        return orig_sg_from_id(self, group_id)

    orig_describe_sgs = SB.describe_security_groups

    def describe_security_groups(self, group_ids=None, groupnames=None, filters=None):
        window = seconds("security_group_s")
        for gid in group_ids or []:
            if young(gid, window):
                raise ec2_exc.InvalidSecurityGroupNotFoundError(gid)
        found = orig_describe_sgs(self, group_ids, groupnames, filters)
        return [g for g in found if not young(g.id, window)]

    orig_delete_sg = SB.delete_security_group

    def delete_security_group(self, name=None, group_id=None):
        gid = group_id
        if gid is None and name is not None:
            g = self.get_security_group_by_name_or_id(name)
            gid = g.id if g else None
        if gid is not None:
            if young(gid, seconds("security_group_s")):
                raise ec2_exc.InvalidSecurityGroupNotFoundError(gid)
            blocked = any(gid in t[3] for t in recent_terminations())
            if CONFIG.get("strict") and not blocked:
                blocked = any(
                    i.state != "terminated"
                    and gid in [g.id for g in i.security_groups]
                    for i in self.all_instances()
                )
            if blocked:
                raise ec2_exc.DependencyViolationError(
                    f"resource {gid} has a dependent object"
                )
        return orig_delete_sg(self, name, group_id)

    SB.create_security_group = create_security_group
    SB.get_security_group_from_id = get_security_group_from_id
    SB.describe_security_groups = describe_security_groups
    SB.delete_security_group = delete_security_group

    # ---- terminated instances: interfaces linger, Elastic IPs let go -----------------
    orig_terminate = IB.terminate_instances

    def terminate_instances(self, instance_ids):
        done = orig_terminate(self, instance_ids)
        with LOCK:
            for instance, _previous in done:
                TERMINATED.append(
                    (
                        now(),
                        instance.vpc_id,
                        instance.subnet_id,
                        [g.id for g in instance.security_groups],
                        instance.id,
                    )
                )
        if CONFIG.get("strict"):
            gone = {instance.id for instance, _ in done}
            for eip in list(self.addresses):
                if eip.instance is not None and eip.instance.id in gone:
                    self.disassociate_address(address=eip.public_ip)
        return done

    IB.terminate_instances = terminate_instances

    SNB = subnet_mod.SubnetBackend
    orig_delete_subnet = SNB.delete_subnet

    def delete_subnet(self, subnet_id):
        blocked = any(t[2] == subnet_id for t in recent_terminations())
        if CONFIG.get("strict") and not blocked:
            blocked = any(
                i.state != "terminated" and i.subnet_id == subnet_id
                for i in self.all_instances()
            )
        if blocked:
            raise ec2_exc.DependencyViolationError(
                f"The subnet '{subnet_id}' has dependencies and cannot be deleted."
            )
        return orig_delete_subnet(self, subnet_id)

    SNB.delete_subnet = delete_subnet

    # ---- internet gateway: no detach while public addresses are mapped ---------------
    GB = igw_mod.InternetGatewayBackend
    orig_detach = GB.detach_internet_gateway

    def eni_vpc(eni):
        subnet = getattr(eni, "subnet", None)
        return getattr(subnet, "vpc_id", None)

    def detach_internet_gateway(self, internet_gateway_id, vpc_id):
        if CONFIG.get("strict"):
            mapped = any(
                (eip.instance is not None and eip.instance.vpc_id == vpc_id)
                or (eip.eni is not None and eni_vpc(eip.eni) == vpc_id)
                for eip in self.addresses
            )
            mapped = mapped or any(
                i.vpc_id == vpc_id and i.state != "terminated" and i.public_ip
                for i in self.all_instances()
            )
            mapped = mapped or any(t[1] == vpc_id for t in recent_terminations())
            if mapped:
                raise ec2_exc.DependencyViolationError(
                    f"Network {vpc_id} has some mapped public address(es). Please "
                    "unmap those public address(es) before detaching the gateway."
                )
        return orig_detach(self, internet_gateway_id, vpc_id)

    GB.detach_internet_gateway = detach_internet_gateway

    # ---- Elastic IPs: stale DescribeAddresses, no release while associated -----------
    AB = eip_mod.ElasticAddressBackend
    orig_associate = AB.associate_address

    def key_of(eip):
        return eip.allocation_id or eip.public_ip

    def associate_address(
        self, instance=None, eni=None, address=None, allocation_id=None, reassociate=False
    ):
        before = None
        try:
            if address:
                before = self.address_by_ip([address])[0]
            elif allocation_id:
                before = self.address_by_allocation([allocation_id])[0]
        except EC2Error:
            before = None
        stale = None
        if before is not None:
            stale = (before.instance, before.eni, before.association_id)
        eip = orig_associate(self, instance, eni, address, allocation_id, reassociate)
        # AWS: the interface the address leaves gets a new public address of its own
        # (if it maps one); moto leaves it showing the Elastic IP on a reassociation.
        left = stale[1] if stale is not None else None
        if left is not None and left is not eip.eni:
            left.public_ip = None
            holder = getattr(left, "instance", None)
            if holder is not None and holder._state.name == "running":
                left.check_auto_public_ip()
        if stale is not None and seconds("address_s") > 0:
            with LOCK:
                previous = MOVED.get(key_of(eip))
                # Within a window already open, what readers see stays the oldest view.
                if previous and now() - previous[0] < seconds("address_s"):
                    stale = previous[1]
                MOVED[key_of(eip)] = (now(), stale)
        return eip

    orig_describe_addresses = AB.describe_addresses

    def describe_addresses(self, allocation_ids=None, public_ips=None, filters=None):
        found = orig_describe_addresses(self, allocation_ids, public_ips, None)
        window = seconds("address_s")
        if window > 0:
            shown = []
            for eip in found:
                with LOCK:
                    moved = MOVED.get(key_of(eip))
                if moved and now() - moved[0] < window:
                    view = copy.copy(eip)
                    view.instance, view.eni, view.association_id = moved[1]
                    shown.append(view)
                else:
                    shown.append(eip)
            found = shown
        if filters:
            found = generic_filter(filters, found)
        return found

    orig_release = AB.release_address

    def release_address(self, address=None, allocation_id=None):
        if CONFIG.get("strict"):
            if address:
                eip = self.address_by_ip([address])[0]
            else:
                eip = self.address_by_allocation([allocation_id])[0]
            if eip.association_id or eip.instance is not None or eip.eni is not None:
                if eip.allocation_id:
                    message = (
                        f"The address with allocation id [{eip.allocation_id}] is in use."
                    )
                else:
                    message = f"The address '{eip.public_ip}' is in use."
                raise EC2Error("InvalidIPAddress.InUse", message)
        return orig_release(self, address, allocation_id)

    AB.associate_address = associate_address
    AB.describe_addresses = describe_addresses
    AB.release_address = release_address


def add_latency():
    delay = float(os.environ.get("LOCAL_CLOUD_LATENCY_MS") or 0) / 1000
    if delay <= 0:
        return
    from moto.core import utils as core_utils

    served = core_utils.convert_to_flask_response.__call__

    def delayed(self, *args, **kwargs):
        time.sleep(delay)
        return served(self, *args, **kwargs)

    core_utils.convert_to_flask_response.__call__ = delayed


def main():
    install()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moto_elb

    moto_elb.install(CONFIG)
    add_latency()
    from moto.server import main as moto_main

    sys.stderr.write(f"local cloud AWS behaviours: {json.dumps(CONFIG, sort_keys=True)}\n")
    sys.stderr.flush()
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
