"""Checks of the deployment configs: cluster.yaml (Ray cluster launcher, AWS), deploy/rayjob*.yaml (KubeRay).

cluster.yaml is merged over Ray's AWS defaults and validated exactly as `ray up` does before it touches
AWS (`prepare_config` + `validate_config`, Ray's own JSON schema). The AWS bootstrap step and the
instance-type lookup run against moto's in-process AWS mock: no credentials, no network. This imports
Ray's autoscaler config code but starts no Ray processes.

On top of Ray's rules come the project's: a head that runs no work, GPU and CPU worker types whose
resources match their instances, the pinned Ray image, the project installed on every node, big disks,
object spilling, token auth, S3 through instance profiles, and no method hyperparameters. Each rule is a
problem-finder run on the real files (no problems) and on deliberately broken copies (the problem found).
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from coloc_core.config import ColocConfig, flat_keys

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYJOB_YAMLS = {"train": ROOT / "deploy" / "rayjob.yaml", "label": ROOT / "deploy" / "rayjob-label.yaml"}
ENTRY_SCRIPTS = {"train": "jobs/train_cub.py", "label": "jobs/label.py"}
MIN_DISK_GB = 200
# Sections and leaf names of the method's config: none of them may be set in a deployment file.
METHOD_KEYS = list(flat_keys(ColocConfig()))
METHOD_SECTIONS = sorted({k.split(".")[0] for k in METHOD_KEYS if "." in k})


def pinned_ray_version() -> str:
    """The X of ``ray[...]==X`` in pyproject.toml's dependencies."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib

        deps = tomllib.loads(text)["project"]["dependencies"]
    except ModuleNotFoundError:  # Python 3.10: no tomllib; the quoted strings are enough here.
        deps = re.findall(r'"([^"]+)"', text)
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"ray\[[^\]]*\]==(\d+\.\d+\.\d+)", d.strip()))]
    assert len(pins) == 1, f"expected exactly one ray[...]==X pin in pyproject.toml, got {pins}"
    return pins[0]


PIN = pinned_ray_version()
IMAGE = f"rayproject/ray:{PIN}-py311-gpu"


def load(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


@pytest.fixture
def cluster() -> dict[str, Any]:
    return load(CLUSTER_YAML)


def prepared(cfg: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` validates: the user config merged over Ray's AWS defaults."""
    return prepare_config(copy.deepcopy(cfg))


def all_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | set().union(*(all_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(all_keys(v) for v in node))
    return set()


def all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in all_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in all_strings(v)]
    return [node] if isinstance(node, str) else []


def method_hyperparameters_in(node: Any) -> list[str]:
    """Method config keys used as YAML keys, or passed as ``--section.key`` flags."""
    leaves = {k.split(".")[-1] for k in METHOD_KEYS}
    found = sorted(all_keys(node) & leaves)
    for s in all_strings(node):
        found += re.findall(rf"--(?:{'|'.join(METHOD_SECTIONS)})\.\w+", s)
    return found


# ----------------------------------------------------------------------------------------------------------
# cluster.yaml: Ray's own validation


def test_cluster_yaml_passes_rays_validation_after_merging_aws_defaults(cluster):
    merged = prepared(cluster)
    validate_config(merged)  # raises on any schema or consistency error
    # The merge really happened: fields only Ray's AWS defaults.yaml provides are present, ours survived.
    assert merged["cluster_synced_files"] == []
    assert merged["upscaling_speed"] == 1.0
    assert merged["cluster_name"] == "coloc"
    assert merged["docker"]["image"] == IMAGE
    # merge_setup_commands: every node gets the common setup (the project install).
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert merged[key] == cluster["setup_commands"]
    # fill_node_type_min_max_workers: the head type launches no extra nodes of its own type.
    assert merged["available_node_types"][merged["head_node_type"]]["max_workers"] == 0


def _walk(cfg: Any, path: str) -> tuple[Any, Any]:
    """The container holding the last element of a ``a/b/0/c`` path, and that element's key or index."""
    *parents, last = (int(p) if p.isdigit() else p for p in path.split("/"))
    node = cfg
    for p in parents:
        node = node[p]
    return node, last


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        node, last = _walk(cfg, path)
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        node, last = _walk(cfg, path)
        del node[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(_set("max_wrokers", 3), jsonschema.ValidationError, id="unknown-top-level-key"),
        pytest.param(
            _set("available_node_types/ray.worker.gpu/resources", {"CPU": 8, "GPU": 0.5}),
            jsonschema.ValidationError,
            id="fractional-gpu-resource",
        ),
        pytest.param(
            _set("available_node_types/ray.head.default/resources", {"CPU": -1}),
            jsonschema.ValidationError,
            id="negative-cpu",
        ),
        pytest.param(
            _drop("available_node_types/ray.worker.cpu/node_config"),
            jsonschema.ValidationError,
            id="node-type-without-node-config",
        ),
        pytest.param(_set("docker/imag", IMAGE), jsonschema.ValidationError, id="misspelt-docker-key"),
        pytest.param(_set("head_node_type", "ray.head.gpu"), ValueError, id="unknown-head-type"),
        pytest.param(
            _set("available_node_types/ray.worker.gpu/min_workers", 20), ValueError, id="min-above-global-max"
        ),
    ],
)
def test_rays_validation_rejects_broken_copies(cluster, mutate, error):
    broken = copy.deepcopy(cluster)
    mutate(broken)
    with pytest.raises(error):
        validate_config(prepared(broken))


# ----------------------------------------------------------------------------------------------------------
# cluster.yaml: Ray's AWS bootstrap and instance catalogue, against moto's in-process mock


@pytest.fixture
def mocked_aws(monkeypatch, tmp_path):
    moto = pytest.importorskip("moto")
    # Fake credentials so nothing can reach a real account; HOME in tmp because the bootstrap writes a
    # generated SSH key to ~/.ssh.
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
        "HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with moto.mock_aws():
        yield


def test_aws_bootstrap_accepts_the_config(cluster, mocked_aws):
    import boto3
    from ray.autoscaler._private.aws.config import bootstrap_aws

    profiles = {
        t["node_config"]["IamInstanceProfile"]["Name"] for t in cluster["available_node_types"].values()
    }
    iam = boto3.client("iam")
    for name in profiles:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

    merged = prepared(cluster)
    validate_config(merged)
    resolved = bootstrap_aws(copy.deepcopy(merged))

    zones = cluster["provider"]["availability_zone"].split(",")
    ec2 = boto3.client("ec2", region_name=cluster["provider"]["region"])
    for name, node_type in resolved["available_node_types"].items():
        nc = node_type["node_config"]
        # Our profiles are used as given (Ray creates its default ray-autoscaler-v1 profile otherwise).
        assert (
            nc["IamInstanceProfile"]
            == cluster["available_node_types"][name]["node_config"]["IamInstanceProfile"]
        )
        assert nc["SecurityGroupIds"] and nc["KeyName"], name
        subnets = ec2.describe_subnets(SubnetIds=nc["SubnetIds"])["Subnets"]
        assert {s["AvailabilityZone"] for s in subnets} <= set(zones), name
    # No silently created default role for the head: the head profile is the configured one.
    assert "IamInstanceProfile" not in resolved.get("head_node", {})


def test_declared_resources_match_what_ray_detects_for_the_instance_types(cluster, mocked_aws):
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

    stripped = prepared(cluster)
    for node_type in stripped["available_node_types"].values():
        node_type.pop("resources")
    detected = AWSNodeProvider.fillout_available_node_types_resources(stripped)["available_node_types"]
    for name, node_type in cluster["available_node_types"].items():
        if name == cluster["head_node_type"]:
            continue  # the head deliberately declares CPU 0
        declared = node_type["resources"]
        assert declared.get("CPU") == detected[name]["resources"]["CPU"], name
        assert declared.get("GPU", 0) == detected[name]["resources"].get("GPU", 0), name


# ----------------------------------------------------------------------------------------------------------
# cluster.yaml: project rules


def cluster_problems(cfg: dict[str, Any]) -> list[str]:
    """Every way `cfg` breaks the project's rules for the cluster (empty when fine)."""
    problems: list[str] = []
    types = cfg.get("available_node_types", {})
    head_name = cfg.get("head_node_type")
    head = types.get(head_name, {})
    workers = {n: t for n, t in types.items() if n != head_name}

    if cfg.get("cluster_name") != "coloc":
        problems.append("cluster_name is not coloc")
    if head.get("resources", {}).get("CPU") != 0 or head.get("resources", {}).get("GPU", 0) != 0:
        problems.append("head must declare resources CPU 0 (and no GPU)")
    gpu_types = {n: t for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) >= 1}
    cpu_types = {n: t for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) == 0}
    if not gpu_types:
        problems.append("no GPU worker type")
    if not cpu_types:
        problems.append("no CPU worker type")
    for name, t in workers.items():
        if t.get("resources", {}).get("CPU", 0) < 1:
            problems.append(f"{name}: worker type without CPUs")
        if not 0 <= t.get("min_workers", 0) <= t.get("max_workers", -1):
            problems.append(f"{name}: needs 0 <= min_workers <= max_workers")
    if not 0 < cfg.get("idle_timeout_minutes", 0):
        problems.append("idle_timeout_minutes must be set")
    if not sum(t.get("min_workers", 0) for t in workers.values()) <= cfg.get("max_workers", -1):
        problems.append("global max_workers below the sum of min_workers")
    if cfg.get("max_workers", 0) < max((t.get("max_workers", 0) for t in workers.values()), default=0):
        problems.append("global max_workers below a per-type max_workers")

    # One image, the pinned Ray version, with CUDA; no per-node-type image overrides.
    docker = cfg.get("docker", {})
    image = docker.get("image", "")
    m = re.fullmatch(r"rayproject/ray:(?P<ver>[^-]+)-py3\d+-(?P<plat>gpu|cu\d+)", image)
    if not m:
        problems.append(f"docker image {image!r} is not a rayproject/ray GPU image")
    elif m["ver"] != PIN:
        problems.append(f"docker image Ray {m['ver']} != pyproject pin {PIN}")
    if {"head_image", "worker_image"} & set(docker) or any(
        "worker_image" in t.get("docker", {}) for t in types.values()
    ):
        problems.append("per-node images: head and workers must share one image")
    for name, t in gpu_types.items():
        if "--gpus all" not in t.get("docker", {}).get("worker_run_options", []):
            problems.append(f"{name}: the container must get the GPUs (--gpus all)")

    # The repo is synced and installed on every node, without replacing the image's Ray.
    mounts = cfg.get("file_mounts", {})
    if Path(mounts.get("~/coloc", "/nonexistent")).expanduser().resolve() != ROOT.resolve():
        problems.append("file_mounts must sync the repo (run from its root) to ~/coloc")
    setup = " ".join(cfg.get("setup_commands", []))
    if not re.search(r"pip install\b.*-e ~/coloc\b", setup):
        problems.append("setup_commands must `pip install -e ~/coloc`")
    if "ray.__version__" not in setup:
        problems.append("the project install must pin ray to the image's version")

    # Disks, spilling, IAM.
    for name, t in types.items():
        nc = t.get("node_config", {})
        disks = [d.get("Ebs", {}) for d in nc.get("BlockDeviceMappings", [])]
        if not disks or min(d.get("VolumeSize", 0) for d in disks) < MIN_DISK_GB:
            problems.append(f"{name}: EBS volume below {MIN_DISK_GB} GB")
        if any(d.get("VolumeType") != "gp3" for d in disks):
            problems.append(f"{name}: EBS volume is not gp3")
        if "Name" not in nc.get("IamInstanceProfile", {}) and "Arn" not in nc.get("IamInstanceProfile", {}):
            problems.append(f"{name}: no IamInstanceProfile (S3 access)")
    if len({str(t.get("node_config", {}).get("IamInstanceProfile")) for t in workers.values()}) != 1:
        problems.append("worker types must share one instance profile")

    mounted = {
        o.split("=", 1)[1].split(":")[1] for o in docker.get("run_options", []) if o.startswith("--volume=")
    }
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cmds = cfg.get(key, [])
        if not cmds or cmds[0].strip() != "ray stop":
            problems.append(f"{key}: must start with `ray stop`")
        starts = [c for c in cmds if "ray start" in c]
        if len(starts) != 1:
            problems.append(f"{key}: needs exactly one `ray start`")
            continue
        if "ulimit -n" not in starts[0]:
            problems.append(f"{key}: raise the open-files limit before `ray start`")
        spill = re.search(r"--object-spilling-directory=(\S+)", starts[0])
        if not spill:
            problems.append(f"{key}: no --object-spilling-directory")
        elif spill[1] not in mounted:
            problems.append(f"{key}: spill directory {spill[1]} is not a mounted host volume")
    if "--head" not in " ".join(cfg.get("head_start_ray_commands", [])):
        problems.append("head_start_ray_commands: missing --head")

    # Token authentication everywhere: mode in the container env, token file on every node.
    if "--env=RAY_AUTH_MODE=token" not in docker.get("run_options", []):
        problems.append("RAY_AUTH_MODE=token missing from the container env")
    if "~/.ray/auth_token" not in mounts:
        problems.append("the auth token is not mounted on the nodes")

    found = method_hyperparameters_in(cfg)
    if found:
        problems.append(f"method hyperparameters in cluster.yaml: {found}")
    return problems


def test_cluster_yaml_follows_the_project_rules(cluster):
    assert cluster_problems(cluster) == []


def test_cluster_yaml_sizes(cluster):
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["ray.worker.gpu"]["resources"] == {"CPU": 8, "GPU": 1}
    assert types["ray.worker.gpu"]["node_config"]["InstanceType"] == "g5.2xlarge"
    assert types["ray.worker.cpu"]["resources"] == {"CPU": 16}
    assert types["ray.worker.cpu"]["node_config"]["InstanceType"] == "c6i.4xlarge"
    assert cluster["docker"]["image"] == f"rayproject/ray:{PIN}-py311-gpu"
    assert [t["min_workers"] for n, t in types.items() if n != cluster["head_node_type"]] == [0, 0]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_set("available_node_types/ray.head.default/resources", {}), "head must declare resources CPU 0"),
        (_set("available_node_types/ray.worker.gpu/resources", {"CPU": 8}), "no GPU worker type"),
        (_drop("available_node_types/ray.worker.cpu"), "no CPU worker type"),
        (_set("docker/image", "rayproject/ray:2.9.0-py311-gpu"), "!= pyproject pin"),
        (_set("docker/image", f"rayproject/ray:{PIN}-py311-cpu"), "is not a rayproject/ray GPU image"),
        (_set("docker/image", f"rayproject/ray:{PIN}1-py311-gpu"), "!= pyproject pin"),
        (_set("docker/worker_image", IMAGE), "head and workers must share one image"),
        (
            _set("available_node_types/ray.worker.cpu/docker", {"worker_image": "rayproject/ray:latest"}),
            "head and workers must share one image",
        ),
        (_drop("available_node_types/ray.worker.gpu/docker"), "must get the GPUs"),
        (_set("setup_commands", ["pip install ray"]), "pip install -e ~/coloc"),
        (_set("file_mounts", {}), "sync the repo"),
        (
            _set("available_node_types/ray.worker.gpu/node_config/BlockDeviceMappings/0/Ebs/VolumeSize", 100),
            "ray.worker.gpu: EBS volume below",
        ),
        (
            _drop("available_node_types/ray.worker.cpu/node_config/IamInstanceProfile"),
            "no IamInstanceProfile",
        ),
        (
            _set("worker_start_ray_commands", ["ray start --address=$RAY_HEAD_IP:6379"]),
            "must start with `ray stop`",
        ),
        (
            _set("head_start_ray_commands", ["ray stop", "ulimit -n 65536; ray start --head --port=6379"]),
            "no --object-spilling-directory",
        ),
        (_set("docker/run_options", ["--ulimit nofile=65536:65536"]), "RAY_AUTH_MODE=token missing"),
        (_set("max_workers", 4), "global max_workers below a per-type max_workers"),
        (_set("available_node_types/ray.worker.gpu/lr", 0.01), "method hyperparameters"),
        (
            _set("setup_commands", ["pip install -e ~/coloc --optim.lr=0.1 ray.__version__"]),
            "method hyperparameters",
        ),
    ],
)
def test_project_rules_catch_broken_copies(cluster, mutate, problem):
    broken = copy.deepcopy(cluster)
    mutate(broken)
    problems = cluster_problems(broken)
    assert any(problem in p for p in problems), problems


# ----------------------------------------------------------------------------------------------------------
# deploy/rayjob*.yaml: KubeRay RayJobs


def pod_specs(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = {"head": cluster_spec.get("headGroupSpec", {}).get("template", {}).get("spec", {})}
    for g in cluster_spec.get("workerGroupSpecs", []):
        specs[f"worker:{g.get('groupName')}"] = g.get("template", {}).get("spec", {})
    return specs


def flag(entrypoint: str, name: str) -> str | None:
    for tok in shlex.split(entrypoint):
        if tok.startswith(f"--{name}="):
            return tok.split("=", 1)[1]
    return None


def rayjob_problems(doc: dict[str, Any], kind: str) -> list[str]:
    """Every way a RayJob manifest breaks what KubeRay needs or the project's rules (empty when fine)."""
    problems: list[str] = []
    if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") != "RayJob":
        problems.append("apiVersion/kind must be ray.io/v1 RayJob")
    name = doc.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 label")
    spec = doc.get("spec", {})

    entry = spec.get("entrypoint", "")
    script = next((t for t in shlex.split(entry) if t.endswith(".py")), "")
    # The image holds the repo at /home/ray/coloc (see the header of deploy/rayjob.yaml).
    if not entry.startswith("python ") or script != f"/home/ray/coloc/{ENTRY_SCRIPTS[kind]}":
        problems.append(f"entrypoint must run python /home/ray/coloc/{ENTRY_SCRIPTS[kind]}")
    if spec.get("submissionMode") != "K8sJobMode":
        problems.append("submissionMode must be K8sJobMode")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("shutdownAfterJobFinishes must be true")
    if not isinstance(spec.get("ttlSecondsAfterFinished"), int) or spec["ttlSecondsAfterFinished"] <= 0:
        problems.append("ttlSecondsAfterFinished must be a positive integer")
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", ""))
    except yaml.YAMLError:
        runtime_env = None
    if not isinstance(runtime_env, dict):
        problems.append("runtimeEnvYAML must be a YAML mapping")

    cs = spec.get("rayClusterSpec", {})
    if cs.get("rayVersion") != PIN:
        problems.append(f"rayVersion {cs.get('rayVersion')!r} != pyproject pin {PIN}")
    if cs.get("authOptions", {}).get("mode") != "token":
        problems.append("authOptions.mode must be token")
    head_params = cs.get("headGroupSpec", {}).get("rayStartParams")
    if not isinstance(head_params, dict):
        problems.append("headGroupSpec.rayStartParams missing")
    elif head_params.get("num-cpus") != "0":
        problems.append('headGroupSpec.rayStartParams num-cpus must be the string "0"')
    params = [head_params or {}] + [g.get("rayStartParams", {}) for g in cs.get("workerGroupSpecs", [])]
    if any(not isinstance(v, str) for p in params for v in p.values()):
        problems.append("rayStartParams values must be strings")

    groups = cs.get("workerGroupSpecs", [])
    names = [g.get("groupName") for g in groups]
    if not groups or None in names or len(set(names)) != len(names):
        problems.append("workerGroupSpecs need unique groupNames")
    gpus_by_group: dict[str, int] = {}
    for g in groups:
        counts = [g.get(k) for k in ("minReplicas", "replicas", "maxReplicas")]
        if not all(isinstance(c, int) for c in counts) or not counts[0] <= counts[1] <= counts[2]:
            problems.append(f"{g.get('groupName')}: needs integer minReplicas <= replicas <= maxReplicas")
        containers = g.get("template", {}).get("spec", {}).get("containers") or [{}]
        res = containers[0].get("resources", {})
        gpu_limit = int(res.get("limits", {}).get("nvidia.com/gpu", 0))
        # Kubernetes rejects extended resources (GPUs) whose request differs from the limit.
        if gpu_limit and str(res.get("requests", {}).get("nvidia.com/gpu", gpu_limit)) != str(gpu_limit):
            problems.append(f"{g.get('groupName')}: GPU requests must equal limits")
        gpus_by_group[str(g.get("groupName"))] = gpu_limit
    gpu_groups = [g for g in groups if gpus_by_group.get(str(g.get("groupName")), 0) >= 1]
    if not gpu_groups:
        problems.append("no worker group with nvidia.com/gpu limits")
    if not any(v == 0 for v in gpus_by_group.values()):
        problems.append("no CPU worker group for decoding")

    # The GPU pods started up front match what the job asks for, so it never waits for the autoscaler.
    wanted = flag(entry, "run.num_workers" if kind == "train" else "num_actors")
    use_gpu = flag(entry, "run.use_gpu" if kind == "train" else "use_gpu")
    if use_gpu != "true":
        problems.append("the job must use GPUs")
    up_front = sum(g.get("replicas", 0) * gpus_by_group[str(g.get("groupName"))] for g in gpu_groups)
    if wanted is None or int(wanted) != up_front:
        problems.append(f"GPU pods up front ({up_front}) != workers/actors the job asks for ({wanted})")

    specs = pod_specs(cs)
    images = set()
    for where, pod in specs.items():
        containers = pod.get("containers") or [{}]
        images.add(containers[0].get("image", ""))
        if not pod.get("serviceAccountName"):
            problems.append(f"{where}: no serviceAccountName (IRSA for S3)")
        mounts = {m.get("mountPath") for m in containers[0].get("volumeMounts", [])}
        if "/dev/shm" not in mounts:
            problems.append(f"{where}: no /dev/shm volume for the object store")
    if len(images) != 1:
        problems.append(f"head and workers must share one image, got {sorted(images)}")
    elif not re.search(rf"[:-]ray{re.escape(PIN)}-py3\d+-gpu$", images.pop()):
        problems.append(f"image tag must carry the pinned Ray version ray{PIN}-py3xx-gpu")
    if len({p.get("serviceAccountName") for p in specs.values()}) != 1:
        problems.append("all pods must use the same serviceAccountName")

    found = method_hyperparameters_in(doc)
    if found:
        problems.append(f"method hyperparameters in the RayJob: {found}")
    return problems


@pytest.fixture(params=sorted(RAYJOB_YAMLS))
def rayjob(request) -> tuple[str, dict[str, Any]]:
    return request.param, load(RAYJOB_YAMLS[request.param])


def test_rayjob_has_what_kuberay_needs_and_follows_the_project_rules(rayjob):
    kind, doc = rayjob
    assert rayjob_problems(doc, kind) == []


def test_rayjob_values(rayjob):
    kind, doc = rayjob
    spec = doc["spec"]
    assert spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["shutdownAfterJobFinishes"] is True
    groups = {g["groupName"]: g for g in spec["rayClusterSpec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    image = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":ray{PIN}-py311-gpu")
    assert ENTRY_SCRIPTS[kind] in spec["entrypoint"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_set("apiVersion", "ray.io/v1alpha1"), "apiVersion/kind"),
        (_set("metadata/name", "Coloc_Train"), "DNS-1123"),
        (_set("spec/entrypoint", "bash run.sh"), "entrypoint must run python"),
        (_drop("spec/shutdownAfterJobFinishes"), "shutdownAfterJobFinishes must be true"),
        (_set("spec/submissionMode", "HTTPMode"), "K8sJobMode"),
        (_set("spec/runtimeEnvYAML", "- not\n- a mapping\n"), "runtimeEnvYAML must be a YAML mapping"),
        (_set("spec/rayClusterSpec/rayVersion", "2.9.0"), "rayVersion"),
        (
            _set("spec/rayClusterSpec/headGroupSpec/rayStartParams/num-cpus", 0),
            'num-cpus must be the string "0"',
        ),
        (_drop("spec/rayClusterSpec/headGroupSpec/rayStartParams"), "rayStartParams missing"),
        (_drop("spec/rayClusterSpec/workerGroupSpecs/0/groupName"), "unique groupNames"),
        (
            _set("spec/rayClusterSpec/workerGroupSpecs/0/maxReplicas", 1),
            "minReplicas <= replicas <= maxReplicas",
        ),
        (
            _set(
                "spec/rayClusterSpec/workerGroupSpecs/0/template/spec/containers/0/resources/limits",
                {"cpu": "7"},
            ),
            "no worker group with nvidia.com/gpu",
        ),
        (_set("spec/rayClusterSpec/workerGroupSpecs/0/replicas", 2), "GPU pods up front"),
        (
            _set("spec/rayClusterSpec/workerGroupSpecs/1/template/spec/containers/0/image", IMAGE),
            "share one image",
        ),
        (
            _set("spec/rayClusterSpec/headGroupSpec/template/spec/containers/0/image", "x/coloc:latest"),
            "share one image",
        ),
        (
            _set(
                "spec/rayClusterSpec/workerGroupSpecs/0/template/spec/containers/0/resources/requests",
                {"cpu": "7", "memory": "26Gi", "nvidia.com/gpu": "2"},
            ),
            "GPU requests must equal limits",
        ),
        (_drop("spec/rayClusterSpec/authOptions"), "authOptions.mode must be token"),
        (
            _drop("spec/rayClusterSpec/workerGroupSpecs/0/template/spec/serviceAccountName"),
            "serviceAccountName",
        ),
        (
            _set("spec/entrypoint", "python /home/ray/coloc/jobs/train_cub.py --loss.margin=0.2"),
            "hyperparameters",
        ),
    ],
)
def test_rayjob_rules_catch_broken_copies(mutate, problem):
    doc = load(RAYJOB_YAMLS["train"])
    mutate(doc)
    problems = rayjob_problems(doc, "train")
    assert any(problem in p for p in problems), problems


def test_rayjob_image_check_rejects_a_different_ray_version():
    doc = load(RAYJOB_YAMLS["label"])
    for pod in pod_specs(doc["spec"]["rayClusterSpec"]).values():
        pod["containers"][0]["image"] = "registry/coloc:ray2.9.0-py311-gpu"
    assert any("pinned Ray version" in p for p in rayjob_problems(doc, "label"))


# ----------------------------------------------------------------------------------------------------------
# One Ray version everywhere


def test_every_ray_image_reference_uses_the_pinned_version():
    files = [CLUSTER_YAML, *RAYJOB_YAMLS.values(), ROOT / "docs" / "CLUSTER.md"]
    seen = []
    for path in files:
        text = path.read_text()
        seen += [(path.name, v) for v in re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)", text)]
        seen += [(path.name, v) for v in re.findall(r"\bray(\d+\.\d+\.\d+)-py3", text)]
        seen += [(path.name, v) for v in re.findall(r'rayVersion:\s*"?(\d+\.\d+\.\d+)', text)]
    assert {name for name, _ in seen} == {p.name for p in files}, seen
    assert {v for _, v in seen} == {PIN}, seen
