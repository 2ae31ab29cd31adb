"""The Kubernetes manifests (kuberay/, argocd/) checked offline against the real schemas,
plus the cross-checks that keep them consistent with the code.

The CRD schemas are vendored under ../shared/schemas: without them the schema tests skip locally
and fail where RAYESTATE_REQUIRE names ``schemas`` (tests.support.parts). The RayJob entrypoint run
for real through `ray job submit` is in data/test_manifests.py.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from rayestate.localstack import REPO
from tests.support.parts import missing

sys.path.insert(0, str(REPO / "scripts"))

import freeze_constraints
import k8s_manifests as k8s
import sync_serve_config

APP_METRICS = (
    "rayestate_requests_total",
    "rayestate_request_latency_ms",
    "rayestate_rejected_inputs_total",
    "rayestate_model_reloads_total",
    "rayestate_batch_size",
    "rayestate_rows_ingested_total",
    "rayestate_drift_verdicts_total",
    "rayestate_promotions_total",
)
RAY_PORTS = {6379: "GCS", 8265: "dashboard / Job API", 10001: "Ray client"}

OPERATOR_VALUES = k8s.SCHEMA_DIR / "kuberay-v1.7.0/kuberay-operator-values.yaml"


@pytest.fixture
def vendored_schemas(crd_schemas) -> None:
    """The exact CRD versions the manifests target (not just the schemas folder); see the docstring."""
    if not k8s.schemas_available():
        missing("schemas", f"the KubeRay / Argo CD CRD folders under {k8s.SCHEMA_DIR} are absent")


needs_schemas = pytest.mark.usefixtures("vendored_schemas")


def kustomize_or_skip():
    try:
        k8s.renderer()
    except k8s.ToolMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def sources() -> dict[str, list[dict]]:
    kustomize_or_skip()
    return k8s.all_objects()


@pytest.fixture(scope="module")
def objects(sources) -> list[dict]:
    return [obj for objs in sources.values() for obj in objs]


def one(path: str) -> dict:
    (obj,) = k8s.raw_objects(REPO / path)
    return obj


def of_kind(objects, kind) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


# --- parsing and schemas ----------------------------------------------------------------


@pytest.mark.parametrize("path", k8s.yaml_files(*k8s.MANIFEST_ROOTS), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_parses(path):
    docs = k8s.load_docs(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


@needs_schemas
def test_every_object_validates_against_its_schema(sources):
    problems = [f"{src}: {p}" for src, objs in sources.items() for obj in objs for p in k8s.schema_errors(obj)]
    assert not problems, "\n".join(problems)


@needs_schemas
def test_every_kuberay_object_passes_the_operators_own_checks(objects):
    problems = [p for obj in objects for p in k8s.kuberay_errors(obj)]
    assert not problems, "\n".join(problems)


@needs_schemas
@pytest.mark.parametrize(
    ("path", "breakage", "expected"),
    [
        ("kuberay/ray-service.rayestate.yaml", ("spec", "rayClusterConfig", "enableInTreeAutoscalin"), "unexpected"),
        ("kuberay/ray-service.rayestate.yaml", ("spec", "rayClusterConfig", "authOptions", "mode"), "is not one of"),
        ("kuberay/ray-job.pipeline.yaml", ("spec", "backoffLimit"), "is not of type"),
        ("kuberay/network-policies.yaml", ("spec", "policyTypes"), "is not of type"),
        ("argocd/apps/rayestate.yaml", ("spec", "syncPolicy", "automated", "selfheal"), "unexpected"),
    ],
)
def test_schema_validation_rejects_a_broken_copy(path, breakage, expected):
    """The validator can fail: a typo'd field or a wrong value in a real manifest is caught."""
    obj = copy.deepcopy(k8s.raw_objects(REPO / path)[0])
    parent = obj
    for key in breakage[:-1]:
        parent = parent[key]
    parent[breakage[-1]] = "tokens" if breakage[-1] == "mode" else "x"
    assert any(expected in problem for problem in k8s.schema_errors(obj))


def test_operator_checks_reject_bad_deletion_rules():
    job = one("kuberay/ray-job.pipeline.yaml")
    rules = job["spec"]["deletionStrategy"]["deletionRules"]
    rules[2]["condition"]["jobDeploymentStatus"] = "Failed"  # two statuses in one condition
    rules[0]["condition"]["ttlSeconds"] = 10**6  # the cluster would outlive the RayJob that owns it
    job["spec"]["shutdownAfterJobFinishes"] = True  # legacy cleanup on top of rules
    problems = "\n".join(k8s.kuberay_errors(job))
    assert "exactly one of jobStatus" in problems
    assert "Workers <= Cluster <= Self" in problems
    assert "mutually exclusive" in problems


# --- generated parts stay identical to their sources ------------------------------------


def test_generated_manifests_are_up_to_date():
    """serveConfigV2, the RayCronJob jobTemplate and the fallback RayCluster are generated."""
    stale = [
        str(p.relative_to(REPO)) for p, text in sync_serve_config.expected_files().items() if p.read_text() != text
    ]
    assert not stale, f"out of date, run `python scripts/sync_serve_config.py`: {stale}"


def test_rayservice_serves_exactly_the_local_serve_config():
    local = sync_serve_config.load_serve_config()
    embedded = sync_serve_config.embedded_serve_config((REPO / "kuberay/ray-service.rayestate.yaml").read_text())
    assert embedded == sync_serve_config.kubernetes_serve_config(local)
    for app in embedded["applications"]:
        module = app["import_path"].split(":")[0]
        assert k8s.module_exists(module), f"Serve import path {app['import_path']} names no module of this repo"
    # the cluster's ConfigMap, not a loopback default, decides where MLflow is
    args = [app.get("args") or {} for app in embedded["applications"]]
    assert not any("mlflow_tracking_uri" in a for a in args)
    assert embedded.get("proxy_location", "EveryNode") == "EveryNode"


def test_sync_rewrites_only_the_serve_config_block():
    text = (REPO / "kuberay/ray-service.rayestate.yaml").read_text()
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {"name": "x", "import_path": "serve_app.app:app", "args": {"mlflow_tracking_uri": "h", "k": 1}}
        ],
    }
    k8s_config = sync_serve_config.kubernetes_serve_config(config, {"RAYESTATE_MLFLOW_TRACKING_URI"})
    rewritten = sync_serve_config.with_serve_config(text, k8s_config)
    embedded = sync_serve_config.embedded_serve_config(rewritten)
    assert embedded["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert embedded["proxy_location"] == "EveryNode"
    assert embedded["applications"][0]["args"] == {"k": 1}
    assert config["http_options"]["host"] == "127.0.0.1"  # the local config is not modified
    before, after = yaml.safe_load(text), yaml.safe_load(rewritten)
    before["spec"].pop("serveConfigV2"), after["spec"].pop("serveConfigV2")
    assert before == after
    assert "# Readiness: KubeRay injects the probes." in rewritten  # comments survive


def test_scheduled_runs_are_the_manual_run():
    job_spec = one("kuberay/ray-job.pipeline.yaml")["spec"]
    assert one("kuberay/ray-cronjob.pipeline.yaml")["spec"]["jobTemplate"] == job_spec
    assert one("kuberay/without-raycronjob/ray-cluster.pipeline.yaml")["spec"] == job_spec["rayClusterSpec"]


# --- cross-checks -----------------------------------------------------------------------


def test_images_are_pinned(objects):
    problems = [p for obj in objects for image in k8s.images(obj) if (p := k8s.image_problem(image))]
    assert not problems, problems
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^ARG RAY_IMAGE=(\S+)", dockerfile, re.M)
    assert bases and all(k8s.image_problem(b) is None for b in bases)
    assert ":latest" not in dockerfile


def test_project_image_tag_matches_the_release(objects):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    ours = {i for obj in objects for i in k8s.images(obj) if "/rayestate:" in i}
    assert ours, "no manifest runs the project image"
    tags = {image.rsplit(":", 1)[1] for image in ours}
    assert all(tag == version or re.fullmatch(r"[0-9a-f]{40}", tag) for tag in tags), tags


def test_chart_and_git_revisions_are_pinned():
    for path in sorted((REPO / "argocd/apps").glob("*.yaml")):
        source = one(str(path.relative_to(REPO)))["spec"]["source"]
        revision = str(source.get("targetRevision", ""))
        if "chart" in source:
            assert re.fullmatch(r"\d+\.\d+\.\d+", revision), f"{path.name}: chart version {revision!r}"
        elif "ray-estate/rayestate" not in source["repoURL"]:
            assert re.fullmatch(r"v\d+\.\d+\.\d+", revision), f"{path.name}: upstream git revision {revision!r}"


def documented_secrets() -> set[str]:
    text = (REPO / "kuberay/README.md").read_text().split("## Secrets you create", 1)[1]
    return set(re.findall(r"^\| \w+ \| `([a-z0-9-]+)` \|", text, re.M))


def test_referenced_secrets_and_configmaps_are_defined_or_documented(objects):
    defined = {(obj["kind"], obj["metadata"]["name"]) for obj in objects if obj["kind"] in {"Secret", "ConfigMap"}}
    documented = {("Secret", name) for name in documented_secrets()}
    missing = {ref for obj in objects for ref in k8s.config_references(obj)} - defined - documented
    assert not missing, f"referenced but neither defined nor listed in kuberay/README.md: {sorted(missing)}"


def test_helm_values_only_reference_documented_secrets():
    text = "\n".join(p.read_text() for p in (REPO / "argocd/apps").glob("*.yaml"))
    named = set(
        re.findall(r"(?:existingSecret|existingConfigSecret|name): ([a-z0-9-]+-(?:credentials|config))\b", text)
    )
    assert named and named <= documented_secrets(), named - documented_secrets()


def test_no_credentials_in_git(objects):
    assert not of_kind(objects, "Secret"), "Secrets are created in the cluster, never committed"
    for obj in objects:
        for _, container in k8s.containers(obj):
            for env in container.get("env") or []:
                assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)", env["name"]) or "valueFrom" in env, env


def test_entrypoints_name_modules_that_exist(objects):
    modules = {m for obj in objects for m in k8s.entrypoint_modules(obj)}
    assert "ray_jobs.pipeline" in modules
    missing = [m for m in modules if not k8s.module_exists(m)]
    assert not missing, f"entrypoints run modules that do not exist: {missing}"
    ui = one("kuberay/ui/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["command"]
    script = ui[ui.index("run") + 1]
    assert (REPO / Path(script).relative_to("/app")).is_file(), f"UI script {script} is not in the repo"


def test_every_container_requests_resources(objects):
    problems = []
    for obj in objects:
        for where, container in k8s.containers(obj):
            resources = container.get("resources") or {}
            if not {"cpu", "memory"} <= set(resources.get("requests") or {}):
                problems.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {where} lacks cpu/memory requests")
            if "memory" not in (resources.get("limits") or {}):
                problems.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {where} lacks a memory limit")
        for cluster in k8s.ray_cluster_specs(obj):
            if cluster.get("enableInTreeAutoscaling"):
                assert (cluster.get("autoscalerOptions") or {}).get("resources", {}).get("requests")
    assert not problems, "\n".join(problems)


def test_containers_are_non_root_with_read_only_root_and_writable_tmp(objects):
    for obj in objects:
        for _, pod in k8s.pod_specs(obj):
            tmp_volumes = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
            for container in pod["containers"]:
                context = container.get("securityContext") or {}
                label = f"{obj['kind']}/{obj['metadata'].get('name')}:{container['name']}"
                assert context.get("readOnlyRootFilesystem") is True, label
                assert context.get("allowPrivilegeEscalation") is False, label
                assert (pod.get("securityContext") or {}).get("runAsNonRoot") or context.get("runAsNonRoot"), label
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
                assert mounts.get("/tmp") in tmp_volumes, f"{label}: /tmp must be an emptyDir"
        for cluster in k8s.ray_cluster_specs(obj):
            if cluster.get("enableInTreeAutoscaling"):
                assert cluster["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True


def test_ray_clusters_use_token_auth_and_autoscaler_v2(objects):
    clusters = [c for obj in objects for c in k8s.ray_cluster_specs(obj)]
    assert clusters
    for cluster in clusters:
        assert cluster["authOptions"] == {"mode": "token", "secretName": "rayestate-ray-token"}
        assert k8s.autoscaling_v2(cluster)
        assert cluster["rayVersion"] == "2.60.0"


def test_rayservice_readiness_uses_serve_health():
    """KubeRay only adds the Serve /-/healthz check to worker readiness when no custom probe
    replaces it, and finds the proxy through the container port named `serve`."""
    service = one("kuberay/ray-service.rayestate.yaml")["spec"]["rayClusterConfig"]
    for group in [service["headGroupSpec"], *service["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        assert "readinessProbe" not in container
        assert {"name": "serve", "containerPort": 8000} in container["ports"]
    workers = service["workerGroupSpecs"]
    assert all(g["minReplicas"] >= 1 and g["maxReplicas"] > g["minReplicas"] for g in workers)


def test_serve_pods_run_serve_as_the_local_stack_does():
    """The Serve throughput settings reach every Ray pod through the shared ConfigMap, equal to the
    local stack's, and the RayService's containers read that ConfigMap."""
    from rayestate.localstack import SERVE_THROUGHPUT_ENV

    data = one("kuberay/config.yaml")["data"]
    assert {name: data.get(name) for name in SERVE_THROUGHPUT_ENV} == SERVE_THROUGHPUT_ENV
    service = one("kuberay/ray-service.rayestate.yaml")["spec"]["rayClusterConfig"]
    for group in [service["headGroupSpec"], *service["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": "rayestate-config"}} in container["envFrom"]


def test_network_policies_fence_the_ray_head_ports(objects):
    policies = of_kind(objects, "NetworkPolicy")
    head = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].get("ray.io/node-type") == "head"]
    assert head, "no NetworkPolicy selects the Ray head"
    for policy in head:
        for rule in policy["spec"]["ingress"]:
            ports = {p["port"] for p in rule.get("ports", [])}
            if not rule.get("from"):  # open to every source: only the Serve API may be
                assert ports and not ports & set(RAY_PORTS), f"{rule} opens {ports & set(RAY_PORTS)} to everyone"
        opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
        assert {8265} <= opened


def test_pipeline_schedule_cleans_up_and_never_overlaps(objects):
    job = one("kuberay/ray-job.pipeline.yaml")["spec"]
    rules = {(r["policy"], r["condition"].get("jobStatus")) for r in job["deletionStrategy"]["deletionRules"]}
    for status in ("SUCCEEDED", "FAILED"):
        assert {("DeleteCluster", status), ("DeleteSelf", status)} <= rules
    cronjob = one("kuberay/ray-cronjob.pipeline.yaml")
    assert len(cronjob["metadata"]["name"]) <= k8s.MAX_NAME["RayCronJob"]
    fallback = one("kuberay/without-raycronjob/cronjob.pipeline-submit.yaml")
    assert fallback["spec"]["concurrencyPolicy"] == "Forbid"
    assert fallback["spec"]["schedule"] == cronjob["spec"]["schedule"]
    command = fallback["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--") + 1 :] == [job["entrypoint"]], "the fallback must run the same entrypoint"
    assert "rayestate-pipeline-head-svc" in " ".join(command)
    kinds = {o["kind"] for o in k8s.render(REPO / "kuberay/without-raycronjob")}
    assert "RayCronJob" not in kinds and {"CronJob", "RayCluster"} <= kinds


@needs_schemas
def test_operator_app_enables_raycronjob_and_skips_crds():
    if not OPERATOR_VALUES.is_file():
        missing("schemas", f"{OPERATOR_VALUES} (the operator chart's upstream values) is absent")
    gates_upstream = yaml.safe_load(OPERATOR_VALUES.read_text())
    known = {gate["name"] for gate in gates_upstream["featureGates"]}
    source = one("argocd/apps/kuberay-operator.yaml")["spec"]["source"]
    assert source["helm"]["skipCrds"] is True and source["targetRevision"] == "1.7.0"
    gates = {g["name"]: g["enabled"] for g in source["helm"]["valuesObject"]["featureGates"]}
    assert set(gates) == known, "Helm replaces the whole list: keep every upstream gate"
    assert gates["RayCronJob"] and gates["RayJobDeletionPolicy"]
    crds = one("argocd/apps/kuberay-crds.yaml")["spec"]
    assert "Replace=true" in crds["syncPolicy"]["syncOptions"] and crds["source"]["targetRevision"] == "v1.7.0"


def test_argocd_sync_waves_put_crds_and_operator_first():
    waves = {}
    for path in (REPO / "argocd/apps").glob("*.yaml"):
        app = one(str(path.relative_to(REPO)))
        waves[app["metadata"]["name"]] = int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
    first = max(waves["kuberay-crds"], waves["kuberay-operator"])
    assert waves["kuberay-crds"] < waves["kuberay-operator"]
    assert all(wave > first for name, wave in waves.items() if not name.startswith("kuberay-"))
    assert waves["postgresql"] < waves["mlflow"] < waves["rayestate"]
    root = one("argocd/root.yaml")["spec"]["source"]
    assert root["path"] == "argocd/apps"


def test_argocd_ignores_autoscaler_replica_counts():
    app = one("argocd/apps/rayestate.yaml")["spec"]
    ignored = {(d["kind"], e) for d in app["ignoreDifferences"] for e in d["jqPathExpressions"]}
    assert ("RayCluster", ".spec.workerGroupSpecs[].replicas") in ignored
    assert "RespectIgnoreDifferences=true" in app["syncPolicy"]["syncOptions"]


def test_grafana_dashboard_uses_ray_prefixed_app_metrics():
    dashboard = json.loads((REPO / "kuberay/monitoring/rayestate-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for metric in APP_METRICS:
        assert f"ray_{metric}" in exprs, metric  # Ray prefixes ray.util.metrics with ray_
    assert not re.search(r"(?<!ray_)rayestate_\w+", exprs), "an app metric without Ray's ray_ prefix"


def test_image_constraints_pin_every_runtime_dependency_within_pyproject():
    pins = {}
    for line in (REPO / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    for requirement in freeze_constraints.runtime_requirements():
        name = freeze_constraints.canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in docker/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    assert Requirement("ray==" + pins["ray"]).specifier.contains("2.60.0")


def test_github_workflow_is_complete_and_pins_its_actions():
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yaml").read_text())
    assert {"test", "manifests", "image", "e2e-kind"} <= set(workflow["jobs"])
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    for step in steps:
        if "uses" in step:
            assert re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", step["uses"]), step["uses"]
    text = (REPO / ".github/workflows/ci.yaml").read_text()
    assert "${{ github.sha }}" in text and ":latest" not in text
    assert "scripts/k8s_manifests.py" in text and "sync_serve_config.py --check" in text


def test_pipeline_workers_are_sized_for_the_data_parallel_fit():
    # kuberay/README.md "Sizing the pipeline's workers": one Ray Train worker per cpu pod, its shard
    # (~0.25 KiB per row) plus the object store and the Ray worker within the pod's memory limit.
    from rayestate.settings import Settings

    cluster = one("kuberay/ray-job.pipeline.yaml")["spec"]["rayClusterSpec"]
    (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    settings = Settings(**{e["name"].removeprefix("RAYESTATE_").lower(): e["value"] for e in head.get("env", [])})
    (group,) = cluster["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    pod_cpus = float(worker["resources"]["limits"]["cpu"])
    assert settings.train_worker_cpus == pod_cpus, "one Ray Train worker takes a whole worker pod"
    gib = {"Gi": 1.0, "Mi": 1 / 1024}
    memory = float(worker["resources"]["limits"]["memory"][:-2]) * gib[worker["resources"]["limits"]["memory"][-2:]]
    shm = next(v for v in group["template"]["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    shard_gib = settings.train_rows_per_worker * 0.25 / 2**20 * 1.64  # masked copies at most
    assert shard_gib + float(shm[:-2]) + 1.0 <= memory, (shard_gib, shm, memory)
    assert group["maxReplicas"] >= 2, "the data-parallel fit needs two workers at least"
