"""Offline checks for the Kubernetes manifests under kuberay/ and argocd/.

No API server runs where this project is built, so the manifests must be right by
construction: every object is validated against the real schemas (core kinds with
kubernetes-validate's bundled OpenAPI schemas, ray.io and argoproj.io kinds against the
exact CRDs vendored in ../shared/schemas), plus the checks the KubeRay operator itself
makes at reconcile time (ported from ray-operator/controllers/ray/utils/validation.go,
KubeRay v1.7), which a schema cannot express.

Used by tests/test_manifests.py, scripts/sync_serve_config.py and `python
scripts/k8s_manifests.py` (prints every problem, exits 1 if there is any).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared"))
SCHEMA_DIR = SHARED / "schemas"
MANIFEST_ROOTS = (REPO / "kuberay", REPO / "argocd", REPO / ".github" / "kind")
#: Oldest Kubernetes minor we claim to support and the newest kubernetes-validate bundles.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRD_SOURCES = {
    "ray.io": SCHEMA_DIR / "kuberay-v1.7.0",
    "argoproj.io": SCHEMA_DIR / "argocd-v3.5.1",
}
#: Kinds whose CRDs are not vendored (Prometheus Operator); only checked structurally.
STRUCTURAL_ONLY = {"monitoring.coreos.com"}
#: KubeRay name limits (utils/constant.go): the operator appends suffixes to these names.
MAX_NAME = {"RayCluster": 53, "RayService": 47, "RayJob": 47, "RayCronJob": 41}
MIN_RAY_VERSION_FOR_AUTH = (2, 52, 0)
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ToolMissing(RuntimeError):
    """A renderer (kubectl kustomize / kustomize) is not installed."""


# --- loading ---------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict]:
    """Every non-empty YAML document of a file; a parse error names the file."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    return [doc for doc in docs if doc is not None]


def yaml_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def kustomization_dirs(*roots: Path) -> list[Path]:
    return sorted(p.parent for root in roots for p in root.rglob("kustomization.yaml"))


def is_k8s_object(doc: object) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def raw_objects(path: Path) -> list[dict]:
    """Kubernetes objects in a file (a kustomization.yaml is kustomize config, not an object)."""
    if path.name == "kustomization.yaml":
        return []
    return [doc for doc in load_docs(path) if is_k8s_object(doc)]


def renderer() -> list[str]:
    """The kustomize we can run: kubectl's built-in one, else a standalone kustomize."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise ToolMissing("neither kubectl nor kustomize is installed; cannot render kustomizations")


def is_component(directory: Path) -> bool:
    return (load_docs(directory / "kustomization.yaml") or [{}])[0].get("kind") == "Component"


def render(directory: Path) -> list[dict]:
    """Objects a kustomization produces, rendered by the real kustomize. A Component renders
    on top of the kustomization in its parent directory, the way kustomization.yaml or an
    Argo CD Application (spec.source.kustomize.components) would enable it."""
    if is_component(directory):
        with tempfile.TemporaryDirectory() as tmp:
            overlay = {
                "resources": [os.path.relpath(directory.parent, tmp)],
                "components": [os.path.relpath(directory, tmp)],
            }
            Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(overlay))
            return render(Path(tmp))
    result = subprocess.run([*renderer(), str(directory)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ValueError(f"{directory}: kustomize failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --- schemas ---------------------------------------------------------------------------


def group_of(obj: dict) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def forbid_unknown_fields(schema: dict) -> dict:
    """kubectl's default strict field validation rejects unknown fields; the API server
    would otherwise prune them silently. Objects with declared properties get
    additionalProperties: false unless the CRD marks them open."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, from the vendored CRDs (exact upstream copies)."""
    schemas = {}
    for directory in CRD_SOURCES.values():
        for path in sorted(directory.glob("*.yaml")):
            for doc in load_docs(path):
                if doc.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    if version.get("served"):
                        schema = version["schema"]["openAPIV3Schema"]
                        schemas[(f"{group}/{version['name']}", kind)] = forbid_unknown_fields(schema)
    return schemas


def schemas_available() -> bool:
    return all(directory.is_dir() for directory in CRD_SOURCES.values())


def schema_errors(obj: dict) -> list[str]:
    """Problems found by the real schema of obj's kind (empty list = valid)."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name') or obj.get('metadata', {}).get('generateName')}"
    group = group_of(obj)
    if group in CRD_SOURCES:
        schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            return [f"{where}: no CRD serves {obj['apiVersion']} {obj['kind']}"]
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    if group in STRUCTURAL_ONLY:
        return prometheus_operator_errors(obj, where)
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            errors.append(f"{where}: k8s {version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{where}: {error.message}")
    return errors


def prometheus_operator_errors(obj: dict, where: str) -> list[str]:
    """The Prometheus Operator CRDs are not vendored: check the fields we rely on."""
    spec = obj.get("spec", {})
    if obj["apiVersion"] != "monitoring.coreos.com/v1" or obj["kind"] not in {"PodMonitor", "ServiceMonitor"}:
        return [f"{where}: unexpected Prometheus Operator kind {obj['apiVersion']} {obj['kind']}"]
    key = "podMetricsEndpoints" if obj["kind"] == "PodMonitor" else "endpoints"
    errors = [] if isinstance(spec.get("selector"), dict) else [f"{where}: spec.selector is required"]
    endpoints = spec.get(key)
    if not endpoints or not all(isinstance(e, dict) and ("port" in e or "targetPort" in e) for e in endpoints):
        errors.append(f"{where}: spec.{key} needs endpoints with a port")
    return errors


# --- walking objects -------------------------------------------------------------------


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """Every pod spec inside obj (Deployments, CronJobs and all KubeRay pod templates)."""

    def walk(node, path):
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                yield path, node
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{path}[{index}]")

    yield from walk(obj, "")


def containers(obj: dict) -> Iterator[tuple[str, dict]]:
    for path, spec in pod_specs(obj):
        for kind in ("initContainers", "containers"):
            for container in spec.get(kind) or []:
                yield f"{path}.{kind}[{container.get('name')}]", container


def images(obj: dict) -> list[str]:
    found = [container["image"] for _, container in containers(obj) if "image" in container]
    found += [
        cluster["autoscalerOptions"]["image"]
        for cluster in ray_cluster_specs(obj)
        if "image" in (cluster.get("autoscalerOptions") or {})
    ]
    return found


def ray_cluster_specs(obj: dict) -> list[dict]:
    """The RayCluster specs an object carries (RayService, RayJob, RayCronJob, RayCluster)."""
    spec = obj.get("spec") or {}
    kind = obj.get("kind")
    if kind == "RayCluster":
        return [spec]
    if kind == "RayService":
        return [spec.get("rayClusterConfig") or {}]
    if kind == "RayJob":
        return [spec["rayClusterSpec"]] if "rayClusterSpec" in spec else []
    if kind == "RayCronJob":
        template = spec.get("jobTemplate") or {}
        return [template["rayClusterSpec"]] if "rayClusterSpec" in template else []
    return []


def job_specs(obj: dict) -> list[dict]:
    if obj.get("kind") == "RayJob":
        return [obj.get("spec") or {}]
    if obj.get("kind") == "RayCronJob":
        return [(obj.get("spec") or {}).get("jobTemplate") or {}]
    return []


def config_references(obj: dict) -> set[tuple[str, str]]:
    """(kind, name) of every Secret and ConfigMap obj's pods or KubeRay specs refer to."""
    refs: set[tuple[str, str]] = set()
    for _, container in containers(obj):
        for source in container.get("envFrom") or []:
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in source and not source[key].get("optional"):
                    refs.add((kind, source[key]["name"]))
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if key in value_from and not value_from[key].get("optional"):
                    refs.add((kind, value_from[key]["name"]))
    for _, spec in pod_specs(obj):
        for volume in spec.get("volumes") or []:
            if "configMap" in volume:
                refs.add(("ConfigMap", volume["configMap"]["name"]))
            if "secret" in volume:
                refs.add(("Secret", volume["secret"]["secretName"]))
    for cluster in ray_cluster_specs(obj):
        secret = (cluster.get("authOptions") or {}).get("secretName")
        if secret:
            refs.add(("Secret", secret))
    return refs


ENTRYPOINT_MODULE = re.compile(r"(?:^|\s)python3?\s+-m\s+([A-Za-z_][\w.]*)")


def entrypoint_modules(obj: dict) -> list[str]:
    """Python modules that RayJob/RayCronJob entrypoints and container commands run."""
    commands = [spec.get("entrypoint", "") for spec in job_specs(obj)]
    commands += [" ".join(map(str, c.get("command", []) + c.get("args", []))) for _, c in containers(obj)]
    return [module for command in commands for module in ENTRYPOINT_MODULE.findall(command)]


def module_exists(module: str) -> bool:
    """True when the module is a file or package of this repository."""
    path = REPO.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


# --- image pinning ---------------------------------------------------------------------

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PINNED_TAG = re.compile(r"^v?\d+(\.\d+)+([.-][\w.]+)?$|^[0-9a-f]{40}$")


def image_problem(image: str) -> str | None:
    """Why an image reference is not reproducible, or None when it is pinned."""
    if DIGEST.search(image):
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return f"{image}: no tag"
    if tag == "latest":
        return f"{image}: ':latest' is not pinned"
    if not PINNED_TAG.match(tag):
        return f"{image}: tag {tag!r} is not a version or commit SHA"
    return None


# --- what the KubeRay operator checks at reconcile time --------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def kuberay_errors(obj: dict) -> list[str]:
    """Checks ported from KubeRay v1.7 validation.go that the CRD schema cannot express."""
    kind = obj.get("kind")
    if kind not in MAX_NAME:
        return []
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName", "").rstrip("-") + "-xxxxx"
    where = f"{kind}/{name}"
    errors = []
    if len(name) > MAX_NAME[kind]:
        errors.append(f"{where}: name longer than {MAX_NAME[kind]} characters (KubeRay appends suffixes)")
    if not DNS1035.match(name):
        errors.append(f"{where}: name is not a DNS-1035 label")
    for cluster in ray_cluster_specs(obj):
        errors += [f"{where}: {problem}" for problem in ray_cluster_errors(cluster)]
    for job in job_specs(obj):
        errors += [f"{where}: {problem}" for problem in ray_job_errors(job)]
    if kind == "RayService":
        upgrade = (obj.get("spec", {}).get("upgradeStrategy") or {}).get("type")
        if upgrade not in {None, "NewCluster", "NewClusterWithIncrementalUpgrade", "None"}:
            errors.append(f"{where}: upgradeStrategy.type {upgrade!r} is not one KubeRay accepts")
    if kind == "RayCronJob":
        from croniter import croniter

        if not croniter.is_valid(obj["spec"].get("schedule", "")):
            errors.append(f"{where}: schedule {obj['spec'].get('schedule')!r} is not a cron expression")
    return errors


def autoscaling_v2(cluster: dict) -> bool:
    return (
        bool(cluster.get("enableInTreeAutoscaling")) and (cluster.get("autoscalerOptions") or {}).get("version") == "v2"
    )


def ray_cluster_errors(cluster: dict) -> list[str]:
    errors = []
    groups = [("head", cluster.get("headGroupSpec") or {})]
    groups += [(g.get("groupName", "?"), g) for g in cluster.get("workerGroupSpecs") or []]
    for group_name, group in groups:
        pod = (group.get("template") or {}).get("spec") or {}
        if not pod.get("containers"):
            errors.append(f"group {group_name}: needs at least one container")
        params = group.get("rayStartParams") or {}
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            errors.append(f"group {group_name}: resources set in both rayStartParams and resources")
        if "labels" in params:
            errors.append(f"group {group_name}: rayStartParams['labels'] is not supported")
        if autoscaling_v2(cluster) and pod.get("restartPolicy") not in (None, "Never"):
            errors.append(f"group {group_name}: restartPolicy must be Never or unset with autoscaler v2")
        if group is not groups[0][1]:
            low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
            if low > high:
                errors.append(f"group {group_name}: minReplicas > maxReplicas")
    head_env = ((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec", {}).get("containers", [{}])
    head_env_names = {env.get("name") for env in head_env[0].get("env") or []}
    if cluster.get("autoscalerOptions", {}).get("version") and "RAY_enable_autoscaler_v2" in head_env_names:
        errors.append("set the autoscaler version in autoscalerOptions.version only, not RAY_enable_autoscaler_v2")
    if (cluster.get("authOptions") or {}).get("mode") == "token":
        version = cluster.get("rayVersion")
        if not version or parse_version(version) < MIN_RAY_VERSION_FOR_AUTH:
            errors.append(f"token auth needs rayVersion >= 2.52.0, got {version!r}")
    return errors


def ray_job_errors(job: dict) -> list[str]:
    errors = []
    strategy = job.get("deletionStrategy") or {}
    rules = strategy.get("deletionRules") or []
    selector_mode = bool(job.get("clusterSelector"))
    if not job.get("rayClusterSpec") and not selector_mode:
        errors.append("one of rayClusterSpec or clusterSelector must be set")
    if selector_mode and not job["clusterSelector"].get("ray.io/cluster"):
        errors.append("clusterSelector needs a ray.io/cluster entry")
    if not job.get("shutdownAfterJobFinishes") and job.get("ttlSecondsAfterFinished", 0) > 0:
        errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    if rules and job.get("shutdownAfterJobFinishes"):
        errors.append("shutdownAfterJobFinishes and deletionStrategy.deletionRules are mutually exclusive")
    if rules and ("onSuccess" in strategy or "onFailure" in strategy):
        errors.append("deletionRules cannot be combined with legacy onSuccess/onFailure")
    autoscaling = bool((job.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"))
    ttl_by_status: dict[str, dict[str, int]] = {}
    for index, rule in enumerate(rules):
        condition, policy = rule.get("condition") or {}, rule.get("policy")
        if ("jobStatus" in condition) == ("jobDeploymentStatus" in condition):
            errors.append(f"deletionRules[{index}]: needs exactly one of jobStatus / jobDeploymentStatus")
        if selector_mode and policy in {"DeleteCluster", "DeleteWorkers"}:
            errors.append(f"deletionRules[{index}]: {policy} is not allowed with clusterSelector")
        if autoscaling and policy == "DeleteWorkers":
            errors.append(f"deletionRules[{index}]: DeleteWorkers is not supported with autoscaling")
        policies = ttl_by_status.setdefault(condition.get("jobStatus", ""), {})
        if policy in policies:
            errors.append(f"deletionRules[{index}]: duplicate {policy} rule for the same status")
        policies[policy] = condition.get("ttlSeconds", 0)
    for status, policies in ttl_by_status.items():
        ordered = [policies[p] for p in ("DeleteWorkers", "DeleteCluster", "DeleteSelf") if p in policies]
        if ordered != sorted(ordered):
            errors.append(f"deletion TTLs for status {status or 'deployment'!r} must grow Workers <= Cluster <= Self")
    if job.get("activeDeadlineSeconds") is not None and job["activeDeadlineSeconds"] <= 0:
        errors.append("activeDeadlineSeconds must be positive")
    try:
        yaml.safe_load(job.get("runtimeEnvYAML") or "{}")
    except yaml.YAMLError as error:
        errors.append(f"runtimeEnvYAML is not YAML: {error}")
    return errors


# --- everything at once ----------------------------------------------------------------


def all_objects() -> dict[str, list[dict]]:
    """Source label -> objects: every plain manifest file and every rendered kustomization."""
    sources = {str(path.relative_to(REPO)): raw_objects(path) for path in yaml_files(*MANIFEST_ROOTS)}
    for directory in kustomization_dirs(*MANIFEST_ROOTS):
        sources[f"kustomize {directory.relative_to(REPO)}"] = render(directory)
    return sources


def main() -> int:
    problems = []
    if not schemas_available():
        print(f"CRD schemas not found under {SCHEMA_DIR}", file=sys.stderr)
        return 2
    for source, objects in all_objects().items():
        for obj in objects:
            problems += [f"{source}: {p}" for p in schema_errors(obj) + kuberay_errors(obj)]
            problems += [f"{source}: {p}" for image in images(obj) if (p := image_problem(image))]
    print("\n".join(problems) or "all manifests valid")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
