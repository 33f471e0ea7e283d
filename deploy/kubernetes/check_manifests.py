#!/usr/bin/env python3
"""Checks the deployment files (no Kubernetes or Docker needed): the Indexed Job and the example Secret
parse as YAML and have the fields sharded s3sync relies on, and the Dockerfile builds a stripped binary
onto a distroless image. Run by scripts/test.sh with the moto venv's Python (PyYAML)."""
import pathlib
import re
import sys

import yaml

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


job = yaml.safe_load((here / "job.yaml").read_text())
check(job["apiVersion"] == "batch/v1" and job["kind"] == "Job", "job.yaml is a batch/v1 Job")
spec = job["spec"]
check(spec.get("completionMode") == "Indexed", "completionMode: Indexed (pods get JOB_COMPLETION_INDEX)")
check(spec.get("completions") == spec.get("parallelism"), "completions == parallelism")
check(isinstance(spec.get("backoffLimitPerIndex"), int), "backoffLimitPerIndex retries one failed index")
pod = spec["template"]["spec"]
check(pod.get("restartPolicy") == "Never", "restartPolicy: Never (required with backoffLimitPerIndex)")
(container,) = pod["containers"]
args = container["args"]
count = [a for a in args if a.startswith("--shard-count=")]
check(count == [f"--shard-count={spec['completions']}"], "--shard-count equals completions")
check("--json-summary" in args, "--json-summary for log aggregation")
check(not any(a.startswith("--shard-index") for a in args), "the index comes from JOB_COMPLETION_INDEX")
plan = [a.split("=", 1)[1] for a in args if a.startswith("--shard-plan=")]
mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
volumes = {v["name"]: v for v in pod.get("volumes", [])}
if plan:
    check("plan" in mounts and plan[0].startswith(mounts["plan"] + "/"), "the plan file is on the mounted volume")
    check("configMap" in volumes.get("plan", {}), "the plan comes from a ConfigMap")
positional = [a for a in args if not a.startswith("-")]
check(len(positional) == 2, "SOURCE and TARGET")
res = container.get("resources", {})
check("memory" in res.get("limits", {}) and "cpu" in res.get("requests", {}), "resources are set")
check(any("secretRef" in e for e in container.get("envFrom", [])), "credentials from a Secret")

secret = yaml.safe_load((here / "secret.example.yaml").read_text())
check(secret["kind"] == "Secret", "secret.example.yaml is a Secret")
names = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
check(secret["metadata"]["name"] in names, "the Job refers to the example Secret")

docker = (root / "Dockerfile").read_text()
stages = re.findall(r"^FROM\s+(\S+)", docker, re.M)
check(len(stages) >= 2, "Dockerfile is multi-stage")
check(stages and "distroless" in stages[-1], "the final stage is distroless")
check("--profile dist" in docker, "the image gets the stripped `dist` build")
cargo = (root / "Cargo.toml").read_text()
check(re.search(r"\[profile\.dist\][^\[]*strip\s*=\s*true", cargo, re.S) is not None, "profile dist strips")

if failures:
    for f in failures:
        print(f"FAIL: {f}")
    sys.exit(1)
print("deploy manifests and Dockerfile: all checks passed")
