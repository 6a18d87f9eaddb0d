"""examples/rayjob-gsam2.yaml, the README's KubeRay example: valid YAML, a RayJob whose entrypoint is a gsam2
command that the CLI's own parser accepts, on a cluster whose pods all see the same shared folder."""

from __future__ import annotations

import shlex

import yaml
from packaging.version import Version

from gsam2.cli.main import build_parser
from gsam2.cluster.workers import MINIMUM_RAY

from .conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "rayjob-gsam2.yaml"


def load() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def pod_specs(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def test_the_example_is_a_rayjob_whose_entrypoint_is_a_gsam2_command_on_the_cluster():
    job = load()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[0] == "gsam2" and words[1] in ("image", "autolabel", "video")
    args = build_parser().parse_args(words[1:])  # exits (SystemExit) on an option the CLI does not have
    assert args.ray == "auto", "the driver runs on the head and joins its cluster"
    assert args.output.startswith("/data/") and all(path.startswith("/data/") for path in args.input)

    # One model replica per GPU the worker pods ask for.
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(group["replicas"] * int(pod["resources"]["limits"]["nvidia.com/gpu"])
               for group in workers for pod in group["template"]["spec"]["containers"])
    assert args.workers * args.gpus_per_worker == gpus


def test_every_pod_runs_gsam2s_image_of_the_clusters_ray_and_mounts_the_shared_folder():
    job = load()
    ray_version = job["spec"]["rayClusterSpec"]["rayVersion"]
    assert Version(ray_version) >= Version(MINIMUM_RAY)
    for name, pod in pod_specs(job).items():
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in pod["containers"]:
            assert container["image"].endswith(":" + ray_version), f"{name}: Ray's version differs from rayVersion"
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert set(mounts.values()) <= set(volumes), f"{name}: a mount without its volume"
            # The driver plans the output names, the workers write them: one volume, the same path everywhere.
            assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "gsam2-data", name
            assert container["resources"]["requests"] == container["resources"]["limits"], name
