"""The cloud manifests in cluster/ stay usable: valid for the tools that read them, and their commands exist.

The AWS cluster-launcher YAML is validated with Ray's own schema, as ``ray up`` does. The KubeRay ``RayJob`` is
checked by structure against the fields of KubeRay's ``ray.io/v1`` CRD (no Kubernetes API server here). Every
``padnet-dist`` command in them is parsed by that command's own argument parser and its config loaded.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import shlex

import pytest
import yaml

from padnet_dist.cli import COMMANDS
from padnet_dist.config.cli_args import config_from_args
from tests.helpers import REPO_ROOT

AWS_CLUSTER = REPO_ROOT / "cluster/aws/ray-cluster.yaml"
RAYJOB = REPO_ROOT / "cluster/kuberay/rayjob-cityscapes.yaml"
S3_LIFECYCLE = REPO_ROOT / "cluster/aws/s3-lifecycle.json"
IMAGE_REPO = "/opt/padnet-dist"  # where the image of cluster/README.md holds this repository

# Fields of KubeRay's RayJobSpec (ray.io/v1); a misspelt key would be dropped silently by the API server.
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode",
    "entrypointResources", "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes", "suspend", "managedBy", "deletionStrategy",
}  # fmt: skip
RAY_CLUSTER_SPEC_FIELDS = {
    "rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling", "autoscalerOptions",
    "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions",
}  # fmt: skip
WORKER_GROUP_FIELDS = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
    "scaleStrategy", "suspend", "idleTimeoutSeconds",
}  # fmt: skip


def parse_padnet_commands(shell: str) -> list[tuple[str, argparse.Namespace]]:
    """Each ``padnet-dist SUBCOMMAND ...`` of a ``&&``-joined shell line, parsed by the subcommand's parser."""
    parsed = []
    for part in shell.split("&&"):
        argv = shlex.split(part)
        assert argv[:1] == ["padnet-dist"], f"not a padnet-dist command: {part.strip()}"
        if argv[1:] == ["--help"]:
            continue
        name = argv[1]
        assert name in COMMANDS, f"padnet-dist has no command '{name}' (it has {', '.join(COMMANDS)})"
        parser = argparse.ArgumentParser(prog=f"padnet-dist {name}", exit_on_error=False)
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        try:
            args = parser.parse_args(argv[2:])
        except (argparse.ArgumentError, SystemExit) as e:
            pytest.fail(f"`{part.strip()}` does not parse: {e}")
        parsed.append((name, args))
    return parsed


def test_the_aws_cluster_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(AWS_CLUSTER.read_text())
    validate_config(prepare_config(config))  # what `ray up` runs before it starts anything

    workers = config["available_node_types"]["gpu_spot"]
    assert workers["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert workers["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    assert config["provider"]["type"] == "aws"
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert any("padnet-dist" in c for c in installs), "the nodes must install this package"
    for command in config["setup_commands"]:
        if command.startswith("padnet-dist"):
            parse_padnet_commands(command.split(">")[0])


def test_rays_cluster_config_validation_still_rejects_a_misspelt_key():
    """Pins the private API the test above relies on: it must fail on a bad config, not pass everything."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(AWS_CLUSTER.read_text())
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_spot"]["min_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wokers"):
        validate_config(prepare_config(bad))
    with pytest.raises(RuntimeError, match="cluster_synced_files"):  # it expects the defaults filled in
        validate_config(copy.deepcopy(config))


def test_the_rayjob_manifest_has_kuberays_structure_and_real_commands():
    job = yaml.safe_load(RAYJOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, f"unknown RayJob fields: {set(spec) - RAYJOB_SPEC_FIELDS}"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1  # retries resume: run.resume=auto
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)

    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAY_CLUSTER_SPEC_FIELDS, (
        f"unknown RayCluster fields: {set(cluster) - RAY_CLUSTER_SPEC_FIELDS}"
    )
    head_pod = cluster["headGroupSpec"]["template"]["spec"]
    pods = [head_pod]
    num_gpus = 0
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP_FIELDS, f"unknown worker group fields: {set(group) - WORKER_GROUP_FIELDS}"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        pods.append(pod)
        for container in pod["containers"]:
            num_gpus += group["replicas"] * int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert num_gpus > 0, "no GPU worker group"
    for pod in pods:
        for container in pod["containers"]:
            assert container["name"] and container["image"]
            secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert secrets, f"container {container['name']} gets no S3 credentials from a Secret"
            literal = {e["name"] for e in container.get("env", []) if "value" in e}
            assert not literal & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, "credentials written in the manifest"

    commands = parse_padnet_commands(spec["entrypoint"].replace(IMAGE_REPO, str(REPO_ROOT)))
    assert [name for name, _ in commands] == ["ray-train", "ray-train"]
    phases = []
    for _, args in commands:
        cfg = config_from_args(args)  # the config and every override load
        phases.append(cfg.phase)
        assert args.use_gpu and args.num_workers == num_gpus, "one Ray Train worker per GPU of the worker group"
        assert cfg.run.resume == "auto" and cfg.run.dir.startswith("s3://")
    assert phases == [1, 2]


def test_the_rayjob_turns_a_pod_eviction_into_a_ray_preemption_drain():
    """The worker pods' preStop hook is a `ray drain-node` that Ray's own command-line parser accepts."""
    from ray.scripts.scripts import cli as ray_cli

    job = yaml.safe_load(RAYJOB.read_text())
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        drain, _, wait = hook[-1].partition(";")
        argv = shlex.split(drain)
        assert argv[:2] == ["ray", "drain-node"]
        context = ray_cli.commands["drain-node"].make_context("drain-node", argv[2:])
        assert context.params["reason"] == "DRAIN_NODE_REASON_PREEMPTION"
        deadline_s = context.params["deadline_remaining_seconds"]
        wait_s = int(shlex.split(wait)[1])
        # the pod lives until the commit: Kubernetes kills it after the grace period, preStop included
        assert wait_s < deadline_s <= pod["terminationGracePeriodSeconds"]


def test_the_s3_lifecycle_rule_aborts_incomplete_multipart_uploads(s3):
    """The rule cluster/README.md tells users to install, accepted by an S3 API (moto) as written."""
    import json

    rules = json.loads(S3_LIFECYCLE.read_text())
    client = s3.client()
    client.put_bucket_lifecycle_configuration(Bucket=s3.bucket, LifecycleConfiguration=rules)
    (rule,) = client.get_bucket_lifecycle_configuration(Bucket=s3.bucket)["Rules"]
    assert rule["Status"] == "Enabled" and rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
