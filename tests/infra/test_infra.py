"""Checks of the deployment files under infra/: they are not run here (no cluster, no Docker engine),
so everything that can be checked without one is checked.

- every YAML document parses; core kinds validate with kubernetes-validate (strict: unknown fields
  rejected) against Kubernetes ``K8S_VERSION``; KubeRay kinds validate against the strict schema
  vendored in infra/schemas/ (trimmed from KubeRay's CRDs), their pod templates with
  kubernetes-validate as core PodTemplateSpecs;
- references resolve: Services select pods that exist, env Secret/ConfigMap keys exist in the
  example Secrets and the ConfigMaps, claims, service accounts, role bindings, images, RayJob
  cluster selectors;
- every entry point a manifest, script, cron line or systemd unit names exists, and the flags the
  manifests pass are flags the entry point accepts;
- the scripts behave: the MLflow server's start script writes an auth config that MLflow itself
  reads and a command line that MLflow's CLI parses; the local scheduler picks the day's prefix.
"""

from __future__ import annotations

import configparser
import copy
import datetime as dt
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
LOCAL = INFRA / "local"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.dockerignore"
KUBERAY_SCHEMA = INFRA / "schemas" / "kuberay-v1.schema.json"

# The newest minor kubernetes-validate ships schemas for, minus two: what managed clusters run.
K8S_VERSION = "1.35"
CORE_KINDS = {"Deployment", "Service", "StatefulSet", "Secret", "PersistentVolumeClaim", "CronJob",
              "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Namespace"}
KUBERAY_KINDS = {"RayCluster", "RayJob"}
# Where the image puts the repository (Dockerfile WORKDIR) and where the systemd/cron examples
# expect it: both stand for the repository root here.
IMAGE_APP_DIR = "/app"
LOCAL_INSTALL_DIR = "/opt/cast-video"
# Values substituted for the placeholders of the RayJob template that the CronJob fills in.
TEMPLATE_VALUES = {"__NAME__": "cast-batch-infer-20260102-03", "__DAY__": "2026-01-02"}


# --------------------------------------------------------------------------------------------
# Loading


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in {".yaml", ".yml"})


def _manifest_files() -> list[Path]:
    return [p for p in _yaml_files() if p.name != "kustomization.yaml"]


def _embedded_manifests(doc: dict) -> Iterator[tuple[str, dict]]:
    """Manifests kept as text inside ConfigMaps (the CronJob's RayJob template), placeholders filled."""
    if doc.get("kind") != "ConfigMap":
        return
    for key, text in (doc.get("data") or {}).items():
        if key.endswith((".yaml", ".yml")):
            for value, sub in TEMPLATE_VALUES.items():
                text = text.replace(value, sub)
            for inner in yaml.safe_load_all(text):
                yield f"ConfigMap {doc['metadata']['name']}/{key}", inner


def _load_docs() -> list[tuple[str, dict]]:
    docs = []
    for path in _manifest_files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            where = f"{path.relative_to(REPO)}#{i}"
            docs.append((where, doc))
            docs.extend((f"{where} {inner_where}", inner) for inner_where, inner in _embedded_manifests(doc))
    return docs


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, dict]]:
    return _load_docs()


def _of_kind(docs: list[tuple[str, dict]], *kinds: str) -> list[tuple[str, dict]]:
    return [(w, d) for w, d in docs if d["kind"] in kinds]


def _pod_templates(doc: dict) -> Iterator[tuple[str, dict]]:
    """Every pod template of a workload, core or KubeRay, with a path for messages."""
    spec = doc.get("spec", {})
    kind = doc["kind"]
    if kind in {"Deployment", "StatefulSet"}:
        yield "spec.template", spec["template"]
    elif kind == "CronJob":
        yield "spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"]
    elif kind == "RayCluster":
        yield from _ray_cluster_templates(spec, "spec")
    elif kind == "RayJob":
        if "rayClusterSpec" in spec:
            yield from _ray_cluster_templates(spec["rayClusterSpec"], "spec.rayClusterSpec")
        if "submitterPodTemplate" in spec:
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"]


def _ray_cluster_templates(cluster: dict, at: str) -> Iterator[tuple[str, dict]]:
    yield f"{at}.headGroupSpec.template", cluster["headGroupSpec"]["template"]
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        yield f"{at}.workerGroupSpecs[{i}].template", group["template"]


def _containers(template: dict) -> list[dict]:
    pod = template["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# --------------------------------------------------------------------------------------------
# Parsing and schemas


def test_every_yaml_document_parses_and_has_a_known_kind(docs):
    assert _yaml_files(), "no YAML under infra/"
    for path in _yaml_files():
        list(yaml.safe_load_all(path.read_text()))  # raises on a syntax error
    kinds = {d["kind"] for _, d in docs}
    unknown = kinds - CORE_KINDS - KUBERAY_KINDS
    assert not unknown, f"kinds without a check: {unknown}"
    for where, doc in docs:
        assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), where
    # Every kind the issue asks for is there.
    assert {"RayCluster", "RayJob", "CronJob", "Deployment", "StatefulSet", "Service", "Secret",
            "PersistentVolumeClaim", "Role", "RoleBinding", "ServiceAccount"} <= kinds


def test_core_kinds_validate_strictly(docs):
    core = [(w, d) for w, d in docs if d["kind"] in CORE_KINDS]
    assert len(core) >= 15
    for where, doc in core:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_strict_core_validation_rejects_an_unknown_field(docs):
    where, deployment = _of_kind(docs, "Deployment")[0]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["enviroment"] = []  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def kuberay_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KUBERAY_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _kuberay_errors(validator, doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def test_kuberay_kinds_validate_against_the_crd_schema(docs, kuberay_validator):
    ray_docs = _of_kind(docs, *KUBERAY_KINDS)
    assert {d["kind"] for _, d in ray_docs} == KUBERAY_KINDS
    for where, doc in ray_docs:
        errors = _kuberay_errors(kuberay_validator, doc)
        assert not errors, f"{where}: {errors}"
        # The CRDs embed core PodTemplateSpecs: validate those with the Kubernetes schemas.
        for at, template in _pod_templates(doc):
            pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                            "metadata": {"name": "check"}, "template": template}
            try:
                kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{where} {at}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda d: d["spec"].__setitem__("shutdownAfterJobFinish", True), id="unknown-field"),
    pytest.param(lambda d: d["spec"].__setitem__("submissionMode", "K8sMode"), id="bad-enum"),
    pytest.param(lambda d: d["spec"]["rayClusterSpec"].pop("headGroupSpec"), id="missing-required"),
    pytest.param(lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "4"),
                 id="wrong-type"),
    pytest.param(lambda d: d.__setitem__("apiVersion", "ray.io/v1alpha1"), id="old-api"),
])
def test_kuberay_schema_is_strict(docs, kuberay_validator, mutate):
    (_, job), = [(w, d) for w, d in _of_kind(docs, "RayJob") if "rayClusterSpec" in d["spec"]]
    assert not _kuberay_errors(kuberay_validator, job)
    bad = copy.deepcopy(job)
    mutate(bad)
    assert _kuberay_errors(kuberay_validator, bad)


# --------------------------------------------------------------------------------------------
# KubeRay semantics the schema cannot express


def test_ray_cluster_autoscales_a_gpu_worker_group(docs):
    (_, cluster), = _of_kind(docs, "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head.get("resources", {}).get("limits", {}), "the head is CPU-only"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    assert any(g["minReplicas"] < g["maxReplicas"] for g in gpu_groups), "nothing to autoscale"


def test_worker_group_replica_bounds(docs):
    for where, doc in _of_kind(docs, *KUBERAY_KINDS):
        cluster = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"].get("rayClusterSpec")
        for group in (cluster or {}).get("workerGroupSpecs", []):
            lo, hi = group["minReplicas"], group["maxReplicas"]
            assert 0 <= lo <= group.get("replicas", lo) <= hi, f"{where} {group['groupName']}"


def test_rayjobs_either_own_a_cluster_or_select_an_existing_one(docs):
    cluster_names = {d["metadata"]["name"] for _, d in _of_kind(docs, "RayCluster")}
    jobs = _of_kind(docs, "RayJob")
    assert any("rayClusterSpec" in d["spec"] for _, d in jobs)
    assert any("clusterSelector" in d["spec"] for _, d in jobs)
    for where, job in jobs:
        spec = job["spec"]
        assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), where
        assert spec.get("entrypoint"), where
        assert spec.get("submissionMode") in {"K8sJobMode", "HTTPMode"}, where
        if "clusterSelector" in spec:
            # KubeRay finds the cluster by the ray.io/cluster key and never deletes a cluster it
            # did not create.
            assert spec["clusterSelector"].get("ray.io/cluster") in cluster_names, where
            assert spec.get("shutdownAfterJobFinishes") is False, where
            assert "ttlSecondsAfterFinished" not in spec, where
        else:
            assert spec.get("shutdownAfterJobFinishes") is True, where
            assert spec.get("ttlSecondsAfterFinished", 0) > 0, where


def test_runtime_env_yaml_is_yaml_with_the_image_working_dir(docs):
    for where, job in _of_kind(docs, "RayJob"):
        env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
        # The shared volume is declared to the jobs' multi-node path checks (workflows/cluster/shared_storage).
        assert env == {"working_dir": IMAGE_APP_DIR,
                       "env_vars": {"CAST_SHARED_DIRS": "/mnt/cluster_storage"}}, where


def test_ray_pods_reach_mlflow_through_its_service_with_secret_credentials(docs):
    services = {d["metadata"]["name"]: d for _, d in _of_kind(docs, "Service")}
    for where, doc in _of_kind(docs, *KUBERAY_KINDS):
        for at, template in _pod_templates(doc):
            for container in template["spec"]["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                uri = env["MLFLOW_TRACKING_URI"]["value"]
                m = re.fullmatch(r"http://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", uri)
                assert m, f"{where} {at}: {uri}"
                service = services[m.group(1)]
                assert int(m.group(2)) in {p["port"] for p in service["spec"]["ports"]}
                for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                    assert "secretKeyRef" in env[var]["valueFrom"], f"{where} {at}: {var}"


# --------------------------------------------------------------------------------------------
# References between objects


def test_services_select_pods_that_exist(docs):
    templates = [(w, t) for w, d in _of_kind(docs, "Deployment", "StatefulSet") for _, t in _pod_templates(d)]
    services = _of_kind(docs, "Service")
    assert services
    for where, service in services:
        selector = service["spec"]["selector"]
        targets = [t for _, t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert targets, f"{where}: selector {selector} matches no pod template"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            exposed = {p.get("name") for t in targets for c in _containers(t) for p in c.get("ports", [])} | \
                      {p["containerPort"] for t in targets for c in _containers(t) for p in c.get("ports", [])}
            assert target in exposed, f"{where}: targetPort {target!r} is no container port"


def test_workload_selectors_match_their_templates(docs):
    for where, doc in _of_kind(docs, "Deployment", "StatefulSet"):
        match = doc["spec"]["selector"]["matchLabels"]
        assert match.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), where
    services = {d["metadata"]["name"] for _, d in _of_kind(docs, "Service")}
    for where, doc in _of_kind(docs, "StatefulSet"):
        assert doc["spec"]["serviceName"] in services, where


def _example_secrets(docs) -> dict[str, set[str]]:
    secrets = {}
    for where, doc in _of_kind(docs, "Secret"):
        assert where.startswith("infra/k8s/secrets.example.yaml"), f"{where}: Secrets belong in the example file"
        for key in {**doc.get("data", {}), **doc.get("stringData", {})}:
            secrets.setdefault(doc["metadata"]["name"], set()).add(key)
    return secrets


def test_secret_references_exist_in_the_example_secrets(docs):
    secrets = _example_secrets(docs)
    refs = [(w, node["secretKeyRef"]) for w, d in docs for node in _walk(d) if "secretKeyRef" in node]
    assert len(refs) >= 10
    for where, ref in refs:
        assert ref["key"] in secrets.get(ref["name"], set()), f"{where}: Secret {ref['name']}/{ref['key']}"
    used = {ref["name"] for _, ref in refs}
    assert used == set(secrets), f"example Secrets nobody reads: {set(secrets) - used}"


def test_example_secrets_hold_no_credentials(docs):
    for where, doc in _of_kind(docs, "Secret"):
        assert "data" not in doc, f"{where}: base64 data could hide a real value; use stringData"
        for key, value in doc["stringData"].items():
            if re.search(r"PASSWORD|SECRET", key):
                assert value == "CHANGE-ME", f"{where}: {key}"


def test_configmap_and_volume_references_exist(docs):
    configmaps = {d["metadata"]["name"]: set(d.get("data", {})) for _, d in _of_kind(docs, "ConfigMap")}
    claims = {d["metadata"]["name"] for _, d in _of_kind(docs, "PersistentVolumeClaim")}
    accounts = {d["metadata"]["name"] for _, d in _of_kind(docs, "ServiceAccount")}
    for where, doc in docs:
        for node in _walk(doc):
            if "configMapKeyRef" in node:
                ref = node["configMapKeyRef"]
                assert ref["key"] in configmaps.get(ref["name"], set()), f"{where}: ConfigMap {ref}"
            if "persistentVolumeClaim" in node:
                assert node["persistentVolumeClaim"]["claimName"] in claims, where
            if "configMap" in node and isinstance(node["configMap"], dict) and "name" in node["configMap"]:
                assert node["configMap"]["name"] in configmaps, where
        for at, template in _pod_templates(doc):
            pod = template["spec"]
            if "serviceAccountName" in pod:
                assert pod["serviceAccountName"] in accounts, f"{where} {at}"
            volumes = {v["name"] for v in pod.get("volumes", [])}
            claim_templates = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
            for container in _containers(template):
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes | claim_templates, f"{where} {at}: {mount['name']}"


def test_role_binding_grants_the_scheduler_rayjob_creation(docs):
    (_, binding), = _of_kind(docs, "RoleBinding")
    roles = {d["metadata"]["name"]: d for _, d in _of_kind(docs, "Role")}
    role = roles[binding["roleRef"]["name"]]
    assert any("ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and "create" in r["verbs"]
               for r in role["rules"])
    accounts = {d["metadata"]["name"] for _, d in _of_kind(docs, "ServiceAccount")}
    assert {s["name"] for s in binding["subjects"] if s["kind"] == "ServiceAccount"} <= accounts
    (_, cron), = _of_kind(docs, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] in {s["name"] for s in binding["subjects"]}


def test_cronjob_runs_a_script_from_its_mounted_configmap(docs):
    (where, cron), = _of_kind(docs, "CronJob")
    configmaps = {d["metadata"]["name"]: d for _, d in _of_kind(docs, "ConfigMap")}
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    files = {}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            for key, text in configmaps[volume["configMap"]["name"]]["data"].items():
                files[f"{mounts[volume['name']]}/{key}"] = text
    named = [arg for arg in pod["containers"][0]["command"] if arg.startswith("/etc/")]
    assert named and all(path in files for path in named), f"{where}: {named} not in {sorted(files)}"
    for path in named + [p for p in files if p.endswith(".sh")]:
        # The template the script fills is in the same ConfigMap.
        for ref in re.findall(r"/etc/[\w./-]+", files[path]):
            assert ref in files, f"{path} reads {ref}"
        subprocess.run(["sh", "-n"], input=files[path], text=True, check=True)
    # The script fills in every placeholder of the template, the same ones this test fills in.
    script = "".join(files[p] for p in files if p.endswith(".sh"))
    templates = "".join(files[p] for p in files if p.endswith(".yaml"))
    placeholders = set(re.findall(r"__[A-Z]+__", templates))
    assert placeholders == set(TEMPLATE_VALUES)
    assert placeholders == set(re.findall(r"s/(__[A-Z]+__)/", script))


def test_kustomizations_list_every_manifest_once_and_map_every_image(docs):
    """The base (infra/k8s) and the training run (infra/k8s/train) together apply every manifest but
    the example Secrets, each once, in one namespace, with the same image mapping."""
    namespace = next(d["metadata"]["name"] for _, d in _of_kind(docs, "Namespace"))
    listed: list[Path] = []
    mapping: dict[str, tuple[str, str]] = {}
    for kustomization_path in sorted(K8S.rglob("kustomization.yaml")):
        kustomization = yaml.safe_load(kustomization_path.read_text())
        assert kustomization["namespace"] == namespace, kustomization_path
        resources = [(kustomization_path.parent / r).resolve() for r in kustomization["resources"]]
        assert all(p.is_relative_to(kustomization_path.parent) and p.exists() for p in resources)
        listed += resources
        images = {i["name"]: (i["newName"], i["newTag"]) for i in kustomization["images"]}
        for name, target in images.items():
            assert mapping.setdefault(name, target) == target, f"{kustomization_path}: {name} mapped differently"
        used = {c["image"] for p in resources for doc in yaml.safe_load_all(p.read_text()) if doc
                for _, t in _pod_templates(doc) for c in _containers(t)}
        unpinned = {i for i in used - set(images) if ":" not in i}
        assert not unpinned, f"{kustomization_path}: images neither mapped nor tagged: {unpinned}"
    assert len(listed) == len(set(listed)), "a manifest is listed twice"
    expected = {p.resolve() for p in _manifest_files() if p.is_relative_to(K8S)}
    expected -= {(K8S / "secrets.example.yaml").resolve()}
    assert set(listed) == expected, f"not listed: {expected - set(listed)}; missing: {set(listed) - expected}"
    assert {"cast-video", "cast-mlflow", "kubectl"} <= set(mapping)


# --------------------------------------------------------------------------------------------
# Entry points


def _ray_entrypoint_argv(docs) -> list[tuple[str, list[str]]]:
    return [(w, shlex.split(d["spec"]["entrypoint"])) for w, d in _of_kind(docs, "RayJob")]


def _python_scripts(argv: list[str]) -> list[str]:
    return [arg for arg in argv if arg.endswith(".py")]


def _local_entrypoints() -> list[tuple[str, str]]:
    """(where, repository-relative path) of what the systemd unit, the cron line and the script run."""
    found = []
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(LOCAL / "cast-batch-infer.service")
    exec_start = shlex.split(unit["Service"]["ExecStart"])[0]
    found.append(("cast-batch-infer.service ExecStart", exec_start))
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read(LOCAL / "cast-batch-infer.timer")
    assert (LOCAL / timer["Timer"]["Unit"]).exists()
    cron_lines = [line for line in (LOCAL / "crontab.example").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    assert len(cron_lines) == 1
    fields = cron_lines[0].split(None, 5)
    assert len(fields) == 6, "a crontab line has five time fields and a command"
    found += [("crontab.example", tok) for tok in shlex.split(fields[5]) if tok.endswith((".sh", ".py"))]
    script = (LOCAL / "run_scheduled_inference.sh").read_text()
    found += [("run_scheduled_inference.sh", p) for p in re.findall(r"workflows/\w+\.py", script)]
    out = []
    for where, path in found:
        for prefix in (LOCAL_INSTALL_DIR + "/", "$repo/"):
            path = path.removeprefix(prefix)
        out.append((where, path))
    return out


def _all_entrypoints(docs) -> list[tuple[str, str]]:
    entry = [(w, s) for w, argv in _ray_entrypoint_argv(docs) for s in _python_scripts(argv)]
    return entry + _local_entrypoints()


def test_every_named_entrypoint_exists(docs):
    entry = _all_entrypoints(docs)
    names = {p for _, p in entry}
    assert {"workflows/train_ssv2.py", "workflows/batch_infer.py", "infra/local/run_scheduled_inference.sh"} <= names
    missing = [f"{where}: {path}" for where, path in entry if not (REPO / path).is_file()]
    assert not missing, f"entry points that do not exist in the repository: {missing}"
    mode = (REPO / "infra/local/run_scheduled_inference.sh").stat().st_mode
    assert mode & stat.S_IXUSR, "run_scheduled_inference.sh must be executable"


def _flags_by_script(docs) -> dict[str, set[str]]:
    """The --flags each Python entry point is given by the RayJobs and by the local scheduler."""
    flags: dict[str, set[str]] = {}
    for _, argv in _ray_entrypoint_argv(docs):
        for script in _python_scripts(argv):
            flags.setdefault(script, set()).update(a for a in argv if a.startswith("--"))
    script = (LOCAL / "run_scheduled_inference.sh").read_text()
    flags.setdefault("workflows/batch_infer.py", set()).update(
        re.findall(r"(--[a-z][a-z-]+) (?:\"\$|\d)", script))
    return flags


@pytest.mark.slow
def test_entrypoint_flags_are_accepted_by_the_entry_points(docs, python_probe):
    """Every --flag a manifest or the local script passes is one the entry point's --help lists."""
    flags_by_script = _flags_by_script(docs)
    missing_scripts = [s for s in flags_by_script if not (REPO / s).is_file()]
    assert not missing_scripts, f"entry points not in the repository yet: {missing_scripts}"
    for script_path, flags in sorted(flags_by_script.items()):
        assert script_path not in python_probe["errors"], \
            f"{script_path} --help failed:\n{python_probe['errors'][script_path]}"
        help_text = python_probe["help"][script_path]
        unknown = sorted(f for f in flags if not re.search(rf"{re.escape(f)}(?![\w-])", help_text))
        assert not unknown, f"{script_path} does not accept {unknown}"


def test_dockerfile_copies_paths_that_exist_and_are_not_ignored():
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", "data", "mlruns"} <= set(ignored)
    copies = [shlex.split(line)[1:-1] for line in text.splitlines() if line.strip().startswith("COPY ")]
    sources = [s for srcs in copies for s in srcs if not s.startswith("--")]
    assert "pyproject.toml" in sources and "workflows" in sources
    for source in sources:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
        assert not any(source == pat or source.startswith(pat + "/") for pat in ignored), \
            f"Dockerfile copies {source}, which the .dockerignore excludes"
    # The RayJobs' working_dir is the image's WORKDIR, and everything they run is copied there.
    assert f"WORKDIR {IMAGE_APP_DIR}" in text
    for where, path in _all_entrypoints(_load_docs()):
        if where.startswith("infra/k8s"):
            assert any(path == s or path.startswith(s.rstrip("/") + "/") for s in sources), \
                f"{where}: {path} is not copied into the image"
    assert re.search(r"pip install --no-deps -e \.( |$)", text, re.M), "the project itself is pip-installed"
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", text, re.M) and re.search(r"CUDA_IMAGE=nvidia/cuda:13\.", text)


# --------------------------------------------------------------------------------------------
# Scripts, run for real where they can run here


def _mlflow_container(docs) -> dict:
    (_, deployment), = [(w, d) for w, d in _of_kind(docs, "Deployment") if d["metadata"]["name"] == "mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def mlflow_start(docs, tmp_path_factory) -> dict[str, Any]:
    """Run the MLflow container's start script with a recording `mlflow` on PATH (no Postgres or
    S3 here): what it wrote (the auth INI) and the command line it would exec."""
    tmp_path = tmp_path_factory.mktemp("mlflow-start")
    container = _mlflow_container(docs)
    env_values = {"POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": "s3cr3t",
                  "MLFLOW_AUTH_ADMIN_PASSWORD": "adm1n", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k",
                  "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                  "ARTIFACTS_DESTINATION": "s3://bucket/mlflow", "MLFLOW_S3_ENDPOINT_URL": "http://s3:9000",
                  "ALLOWED_HOSTS": "mlflow,mlflow:*"}
    env = {var["name"]: var["value"] if "value" in var else env_values[var["name"]] for var in container["env"]}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "auth" / "basic_auth.ini")
    script = container["args"][0].replace("/tmp/mlflow-auth", str(tmp_path / "auth"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "mlflow"
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n")
    recorder.chmod(0o755)
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    subprocess.run(container["command"][-2:] + [script], env=env, check=True, timeout=30)
    return {"argv": json.loads((tmp_path / "argv.json").read_text()), "env": env,
            "ini": Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()}


# One fresh Python process for everything that needs the heavy imports (torch, Ray, DALI, MLflow):
# each entry point's `--help` (as `python SCRIPT --help` would print it), MLflow's own parse of the
# server command line, and MLflow's own read of the auth INI. (The auth config module is loaded by
# file: the auth package's __init__ needs Flask-WTF, an extra that only the server image installs.)
_PROBE = """
import contextlib, importlib.util, io, json, pathlib, runpy, sys, traceback
request = json.loads(sys.argv[1])
result = {"help": {}, "errors": {}}
for script in request["scripts"]:
    sys.argv, sys.path[0] = [script, "--help"], script.rsplit("/", 1)[0]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            result["errors"][script] = f"exit status {e.code}"
    except Exception:
        result["errors"][script] = traceback.format_exc()
    result["help"][script] = out.getvalue()
import mlflow
from mlflow.cli import server
result["server_params"] = server.make_context("server", request["mlflow_argv"]).params
spec = importlib.util.spec_from_file_location(
    "mlflow_auth_config", pathlib.Path(mlflow.__file__).parent / "server" / "auth" / "config.py")
config = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config)
result["auth_config"] = config.read_auth_config()._asdict()
sys.stdout.write("\\n" + json.dumps(result) + "\\n")
"""


@pytest.fixture(scope="module")
def python_probe(docs, mlflow_start) -> dict[str, Any]:
    scripts = [str(REPO / s) for s in sorted(_flags_by_script(docs)) if (REPO / s).is_file()]
    argv = mlflow_start["argv"]
    assert argv[0] == "server"
    request = json.dumps({"scripts": scripts, "mlflow_argv": argv[1:]})
    env = {**os.environ, **{k: mlflow_start["env"][k] for k in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_PASSWORD")}}
    proc = subprocess.run([sys.executable, "-c", _PROBE, request], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("help", "errors"):
        result[key] = {str(Path(k).relative_to(REPO)): v for k, v in result[key].items()}
    return result


@pytest.mark.slow
def test_mlflow_start_script_writes_an_auth_config_and_a_valid_server_command(mlflow_start, python_probe):
    params = python_probe["server_params"]
    assert params["app_name"] == "basic-auth"
    assert params["serve_artifacts"] is True
    assert params["backend_store_uri"] == "postgresql://mlflow:s3cr3t@mlflow-postgres:5432/mlflow"
    assert params["artifacts_destination"] == "s3://bucket/mlflow"
    assert params["host"] == "0.0.0.0"
    assert params["allowed_hosts"] == "mlflow,mlflow:*"
    config = python_probe["auth_config"]
    assert config["database_uri"] == "postgresql://mlflow:s3cr3t@mlflow-postgres:5432/mlflow_auth"
    assert config["admin_username"] == "admin"
    assert config["admin_password"] == "adm1n"  # from the Secret's env var, not from the file
    assert "adm1n" not in mlflow_start["ini"]


def test_postgres_creates_the_auth_database_the_server_uses(docs):
    (_, init), = [(w, d) for w, d in _of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "mlflow-postgres-init"]
    sql = "\n".join(init["data"].values())
    assert re.search(r"CREATE DATABASE mlflow_auth\b", sql)
    (_, postgres), = _of_kind(docs, "StatefulSet")
    env = {e["name"]: e for e in postgres["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_DB"]["value"] == "mlflow"


def _run_local(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LOCAL / "run_scheduled_inference.sh"), *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})})


def test_local_scheduler_skips_a_day_without_a_prefix(tmp_path):
    proc = _run_local("--inbox", str(tmp_path / "inbox"), "--out-root", str(tmp_path / "out"),
                      "--date", "2026-01-02")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_local_scheduler_runs_batch_inference_on_the_days_prefix(tmp_path):
    (tmp_path / "inbox" / "2026-01-02").mkdir(parents=True)
    proc = _run_local("--inbox", str(tmp_path / "inbox"), "--out-root", str(tmp_path / "out"),
                      "--date", "2026-01-02", "--dry-run", env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr
    uri_line, cmd_line = proc.stdout.strip().splitlines()
    # The embedded store, as an absolute path (Ray workers have other working directories).
    assert uri_line == f"MLFLOW_TRACKING_URI=sqlite:///{REPO}/data/mlflow/mlflow.db"
    argv = shlex.split(cmd_line)
    assert argv[1] == str(REPO / "workflows" / "batch_infer.py")
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert flags["--model"] == "models:/cast-ssv2@champion"
    assert flags["--input"] == str(tmp_path / "inbox" / "2026-01-02")
    assert flags["--out"] == str(tmp_path / "out" / "2026-01-02")


@pytest.mark.parametrize("args", [["--date", "2026-02-30"], ["--date", "yesterday"], ["--frobnicate"]])
def test_local_scheduler_rejects_bad_arguments_before_any_work(tmp_path, args):
    (tmp_path / "inbox").mkdir()
    proc = _run_local("--inbox", str(tmp_path / "inbox"), "--out-root", str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    assert "run_scheduled_inference:" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_local_scheduler_does_not_overlap_a_running_one(tmp_path):
    (tmp_path / "inbox" / "2026-01-02").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    lock = tmp_path / "out" / ".batch-infer.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        for _ in range(50):  # wait until the holder has the lock
            if subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
            subprocess.run(["sleep", "0.1"])
        proc = _run_local("--inbox", str(tmp_path / "inbox"), "--out-root", str(tmp_path / "out"),
                          "--date", "2026-01-02", env={"PYTHON": "/nonexistent/python"})
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 0, proc.stderr
    assert "skipping" in proc.stdout


# A stand-in for kubectl (no API server here) that keeps RayJobs as JSON files and answers exactly
# the calls submit.sh makes; the script itself, its date logic, sed and awk run for real.
_FAKE_KUBECTL = r'''#!PYTHON
import json, pathlib, sys, yaml
store = pathlib.Path(sys.argv[0]).parent.parent / "rayjobs"
store.mkdir(exist_ok=True)
args = sys.argv[1:]
jobs = sorted((json.loads(p.read_text()) for p in store.glob("*.json")), key=lambda j: j["_created"])
def labelled(selector):
    key, value = selector.split("=")
    return [j for j in jobs if j["metadata"].get("labels", {}).get(key) == value]
if args[:2] == ["get", "rayjobs"] and any(a.startswith("jsonpath=") for a in args):
    for j in labelled(args[args.index("-l") + 1]):
        print(f"{j['metadata']['name']}={j.get('status', {}).get('jobDeploymentStatus', '')}")
elif args[:2] == ["get", "rayjobs"] and "name" in args:
    for j in labelled(args[args.index("-l") + 1]):
        print(f"rayjob.ray.io/{j['metadata']['name']}")
elif args[:2] == ["get", "rayjob"]:
    sys.exit(0 if (store / f"{args[2]}.json").exists() else 1)
elif args[:2] == ["create", "-f"]:
    doc = yaml.safe_load(sys.stdin)
    doc["_created"] = len(jobs)
    (store / f"{doc['metadata']['name']}.json").write_text(json.dumps(doc))
    print(f"rayjob.ray.io/{doc['metadata']['name']} created")
elif args[0] == "delete":
    for ref in args[1:]:
        (store / (ref.split("/")[-1] + ".json")).unlink()
else:
    sys.exit(f"fake kubectl: unexpected call {args}")
'''


def _run_submit_script(docs, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    configmaps = {d["metadata"]["name"]: d for _, d in _of_kind(docs, "ConfigMap")}
    files = configmaps["cast-batch-infer"]["data"]
    etc, shared, bin_dir = tmp_path / "etc", tmp_path / "shared", tmp_path / "bin"
    for d in (etc, shared, bin_dir):
        d.mkdir(exist_ok=True)
    for key, text in files.items():
        (etc / key).write_text(text)
    script = files["submit.sh"].replace("/etc/cast-batch-infer", str(etc)).replace("/mnt/cluster_storage", str(shared))
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(_FAKE_KUBECTL.replace("#!PYTHON", f"#!{sys.executable}"))
    kubectl.chmod(0o755)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "rayjobs").glob("*.json"))] \
        if (tmp_path / "rayjobs").exists() else []
    return proc, jobs


def test_cronjob_script_creates_one_rayjob_for_todays_prefix(docs, tmp_path, kuberay_validator):

    proc, jobs = _run_submit_script(docs, tmp_path)  # no inbox folder yet
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout and jobs == []

    before = dt.datetime.now(dt.timezone.utc)
    (tmp_path / "shared" / "inbox" / before.strftime("%Y-%m-%d")).mkdir(parents=True)
    proc, jobs = _run_submit_script(docs, tmp_path)
    after = dt.datetime.now(dt.timezone.utc)
    assert proc.returncode == 0, proc.stderr
    (job,) = jobs
    assert job["metadata"]["name"] in {f"cast-batch-infer-{t:%Y%m%d-%H}" for t in (before, after)}
    day = job["metadata"]["labels"]["cast-video/day"]
    assert day in {f"{t:%Y-%m-%d}" for t in (before, after)}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[argv.index("--input") + 1] == f"/mnt/cluster_storage/inbox/{day}"
    assert argv[argv.index("--out") + 1] == f"/mnt/cluster_storage/predictions/{day}"
    job.pop("_created")
    assert not _kuberay_errors(kuberay_validator, job)

    # The same hour again while that job runs: nothing new.
    proc, jobs = _run_submit_script(docs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "still running" in proc.stdout and len(jobs) == 1


def test_cronjob_script_keeps_the_newest_48_rayjobs(docs, tmp_path):

    store = tmp_path / "rayjobs"
    store.mkdir()
    for i in range(50):  # finished runs of earlier hours
        job = {"metadata": {"name": f"cast-batch-infer-old-{i:02d}",
                            "labels": {"app.kubernetes.io/component": "batch-infer"}},
               "status": {"jobDeploymentStatus": "Complete" if i % 2 else "Failed"}, "_created": i}
        (store / f"{job['metadata']['name']}.json").write_text(json.dumps(job))
    (tmp_path / "shared" / "inbox" / dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")).mkdir(parents=True)
    proc, jobs = _run_submit_script(docs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = sorted(j["metadata"]["name"] for j in jobs)
    assert len(names) == 48
    assert "cast-batch-infer-old-00" not in names and "cast-batch-infer-old-02" not in names
    assert "cast-batch-infer-old-03" in names and any(not n.startswith("cast-batch-infer-old") for n in names)


def test_cluster_up_refuses_a_port_another_process_listens_on(tmp_path):
    """Two stacks on one port (two test runs side by side) must not half-start or stop each other:
    `up` names the port and its variable and touches nothing."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "CAST_CLUSTER_DIR": str(tmp_path / "stack"), "CAST_MLFLOW_PORT": str(port),
               "CAST_CLUSTER_RUN_DIR": str(tmp_path / "run")}
        proc = subprocess.run([sys.executable, str(INFRA / "local/cluster/stack.py"), "up"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"{port} (CAST_MLFLOW_PORT)" in proc.stderr
    assert "Nothing was started or stopped" in proc.stderr
    assert not (tmp_path / "stack").exists() and not (tmp_path / "run").exists()
