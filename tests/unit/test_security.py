"""Security checks without a running stack: no credentials in the repo, local services configured for
loopback, Ray token auth always on, and the dependency audit's verdicts.

What the running stack does (listening addresses, the token refused or required, pip-audit on the
locked dependencies) is in integration/test_security.py. The Kubernetes side (non-root, read-only
root filesystems, NetworkPolicies, token auth on every RayCluster, Secrets only by reference) is
checked in test_manifests.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rayestate.localstack import REPO

sys.path.insert(0, str(REPO / "scripts"))

import audit_deps

LOOPBACK = "127.0.0.1"

# --- no credential literal in the repository ---------------------------------------------------

#: Shapes that are a credential wherever they appear.
CREDENTIAL_SHAPES = {
    "AWS access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "GitHub token": r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
    "Slack token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "JSON web token": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.",
    "password in a URL": r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?![$<{])[^/\s@'\"]+@",
}
_SECRET_KEY = r"\b(?P<key>[a-z_]*(?:password|passwd|secret|token|api[_-]?key|private[_-]?key)[a-z_]*)[\"']?\s*[:=]\s*"
#: `password = "..."`-style assignments of a secret-named key, in any file.
QUOTED_SECRET = re.compile(_SECRET_KEY + r"[\"'](?P<value>[^\"'\s]{6,})[\"']", re.I)
#: The same unquoted (`password: hunter2`, `--from-literal=TOKEN=abc`), in config and shell files only:
#: in code an unquoted right-hand side is an expression, not a literal.
BARE_SECRET = re.compile(_SECRET_KEY + r"(?P<value>[^\"'\s$<{(\[][^\s,;]{5,})(?=\s|$)", re.I)
CONFIG_SUFFIXES = {".yaml", ".yml", ".env", ".ini", ".cfg", ".sh", ".md", ".txt", ""}
#: Values that stand for "nothing here" in examples and throwaway CI clusters.
PLACEHOLDERS = {"unused", "example", "placeholder", "redacted"}
#: Keys that name a secret rather than hold one: a Kubernetes Secret's name or one of its keys
#: (secretName, existingSecret, passwordKey), a file path, a header, an env var.
NAMING_KEY = re.compile(r"(?i:name|ref|path|file|env|mode|header|type|kind|url)$|[a-z]Key$|^existing")
SKIPPED_FILES = re.compile(r"(^|/)(\.hypothesis|\.venv|node_modules)/|\.(png|jpg|gif|ico|parquet|db|gz|zip|whl)$")


def repo_files() -> list[Path]:
    """Files Git would commit: tracked plus untracked-but-not-ignored (read-only git call)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    return [REPO / name for name in listed if name and not SKIPPED_FILES.search(name) and (REPO / name).is_file()]


def credential_findings(relative: str, text: str) -> list[str]:
    """Every credential-looking literal in one file, as 'path:line: what'."""
    findings = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        for what, shape in CREDENTIAL_SHAPES.items():
            if re.search(shape, line):
                findings.append(f"{relative}:{number}: {what}")
        patterns = [QUOTED_SECRET] + [BARE_SECRET] * (Path(relative).suffix in CONFIG_SUFFIXES)
        for match in (m for pattern in patterns for m in pattern.finditer(line)):
            value = match["value"]
            if NAMING_KEY.search(match["key"]) or value.startswith(("$", "<", "{{")) or value.lower() in PLACEHOLDERS:
                continue
            # Tests may use throwaway literals for the local moto server only, and say so.
            nearby = " ".join(lines[max(0, number - 3) : number]).lower()
            if relative.startswith("tests/") and "moto" in nearby:
                continue
            findings.append(f"{relative}:{number}: {match['key']} has a literal value")
    return findings


def test_no_credential_literal_in_the_repo():
    findings, scanned = [], 0
    for path in repo_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        scanned += 1
        findings += credential_findings(str(path.relative_to(REPO)), text)
    assert scanned > 50  # the walk really covered the code and the manifests
    assert not findings, "credential literals (use env vars / Kubernetes Secrets):\n" + "\n".join(findings)


def test_no_key_or_token_files_in_the_repo():
    risky = re.compile(r"(^|/)(auth_token|id_rsa|id_ed25519|\.env|credentials)$|\.(pem|key|p12|pfx)$")
    assert not [p for p in repo_files() if risky.search(str(p.relative_to(REPO)))]


# Built at run time so this file itself holds no credential-shaped literal.
PLANTED = [
    ("ray_jobs/x.py", 'aws_secret_access_key = "' + "wJalrXUtnFEMI/K7MDENG" + '/bPxRfiCYEXAMPLEKEY"'),
    ("ray_jobs/x.py", '"api_key": "' + "0123456789abcdef" + '"'),
    ("kuberay/x.yaml", "  password: " + "hunter2hunter2"),
    ("README.md", "kubectl create secret generic s --from-literal=auth_token=" + "9f8e7d6c5b4a"),
    ("ray_jobs/x.py", "RAYESTATE_STORE_URI = 's3://someone:" + "topsecret@bucket/store'"),
    ("scripts/x.sh", "export AWS_ACCESS_KEY_ID=AKIA" + "ABCDEFGHIJKLMNOP"),
    ("tests/x.py", "-----BEGIN OPENSSH " + "PRIVATE KEY-----"),
]


@pytest.mark.parametrize(("path", "line"), PLANTED)
def test_the_scan_finds_planted_credentials(path, line):
    assert credential_findings(path, line)


@pytest.mark.parametrize(
    "line",
    [
        'secretName: "rayestate-ray-token"',
        'secretKey: "$RAY_S3_SECRET"',
        "    passwordKey: password",
        'RAYESTATE_MLFLOW_TRACKING_URI: "http://mlflow.mlops:5000"',
        "--from-literal=RAYESTATE_AWS_SECRET_ACCESS_KEY=unused",
    ],
)
def test_the_scan_ignores_references_to_secrets(line):
    assert not credential_findings("kuberay/x.yaml", line)
    assert not credential_findings("ray_jobs/x.py", "token = os.environ['RAY_AUTH_TOKEN']")


# --- loopback by default, token auth always ---------------------------------------------------


@pytest.fixture
def default_settings(monkeypatch, tmp_path):
    from rayestate.settings import Settings

    for name in [n for n in os.environ if n.startswith("RAYESTATE_")]:
        monkeypatch.delenv(name)
    return Settings(state_dir=tmp_path)


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_local_stack_services_bind_loopback_by_default(default_settings):
    from rayestate.cli import build_parser
    from rayestate.services import services, ui_service

    assert default_settings.bind_host == LOOPBACK
    by_name = {s.name: s for s in [*services(default_settings), ui_service(default_settings)]}
    assert _flag(by_name["ray"].argv, "--dashboard-host") == LOOPBACK  # dashboard and Job API
    assert _flag(by_name["mlflow"].argv, "--host") == LOOPBACK
    assert _flag(by_name["data-api"].argv, "--host") == LOOPBACK
    assert f"--web.listen-address={LOOPBACK}:9090" in by_name["prometheus"].argv
    assert _flag(by_name["ui"].argv, "--server.address") == LOOPBACK
    for service in by_name.values():
        assert service.url.startswith(f"http://{LOOPBACK}:"), service
    assert build_parser().parse_args(["data-api"]).host == LOOPBACK  # also when run by hand
    serve_config = yaml.safe_load((REPO / "serve_app/serve_config.yaml").read_text())
    assert serve_config["http_options"]["host"] == LOOPBACK


def test_ray_processes_get_token_auth_even_if_the_caller_disabled_it(default_settings, monkeypatch):
    from rayestate.localstack import ray_env

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ray_env(default_settings)["RAY_AUTH_MODE"] == "token"


def test_every_ray_the_product_starts_gets_one_environment():
    """`make up` (ray_env) and the tests' and benchmarks' clusters (LocalCluster) share ray_process_env."""
    from rayestate.localstack import BIN, SERVE_THROUGHPUT_ENV, ray_process_env

    caller = {"PATH": "/usr/bin", "RAY_AUTH_MODE": "disabled", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "KEEP": "1"}
    env = ray_process_env(caller)
    assert env["RAY_AUTH_MODE"] == "token"  # never off
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"  # Serve's mode is a default the caller may override
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == SERVE_THROUGHPUT_ENV["RAY_SERVE_ENABLE_DIRECT_INGRESS"]
    assert env["PATH"].split(os.pathsep) == [str(BIN), "/usr/bin"]  # a job's `python` is this venv's
    assert env["KEEP"] == "1" and caller["PATH"] == "/usr/bin"  # the caller's mapping is not modified


def test_the_haproxy_ingress_is_the_default_and_leaves_the_users_haproxy_settings_alone(tmp_path, monkeypatch):
    """serve_ingress=haproxy (the default) adds HAProxy's variables under the user's own, with its
    sockets in a short directory only this user can enter (a unix socket path holds 107 characters
    and Ray goes 70 below it); a longer one is refused, naming why. proxy starts Ray without them."""
    from rayestate.localstack import HAPROXY_DIR_MAX_CHARS, haproxy_ingress_env, ray_env
    from rayestate.settings import load_settings

    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    monkeypatch.delenv("RAYESTATE_SERVE_INGRESS", raising=False)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in ray_env(load_settings(state_dir=tmp_path, serve_ingress="proxy"))
    env = ray_env(load_settings(state_dir=tmp_path))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"  # the user's value wins
    runtime_dir = Path(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent
    assert runtime_dir.is_dir() and runtime_dir.stat().st_mode & 0o777 == 0o700
    assert len(str(runtime_dir)) + 1 + 56 + 1 + len("metrics.sock") <= 107  # Ray's node id is 56 characters
    assert Path(env["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"]).parent == runtime_dir
    with pytest.raises(ValueError, match="unix socket paths"):
        haproxy_ingress_env(Path("/tmp") / ("x" * HAPROXY_DIR_MAX_CHARS))
    with pytest.raises(ValueError, match="serve_ingress"):
        load_settings(state_dir=tmp_path, serve_ingress="nginx")


def test_the_haproxy_dir_is_made_private_only_when_ray_starts(tmp_path, monkeypatch, capsys):
    """Stopping (`make down`) only looks for HAProxy's dir; starting makes it and refuses one that
    others can enter. `make up` prints the stats port Ray's environment set, the user's if theirs."""
    from rayestate import cli
    from rayestate.localstack import haproxy_runtime_dir, private_dir
    from rayestate.settings import load_settings

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert not haproxy_runtime_dir().exists()  # asking for the path makes nothing
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="this user alone"):
        private_dir(shared)
    assert private_dir(haproxy_runtime_dir()).stat().st_mode & 0o777 == 0o700
    cli._print_urls(
        load_settings(state_dir=tmp_path, serve_ingress="haproxy"), {"RAY_SERVE_HAPROXY_STATS_PORT": "18404"}
    )
    assert ":18404/stats" in capsys.readouterr().out


def test_haproxy_runs_with_its_stats_page_and_exporter_rebound_to_loopback(tmp_path):
    """Ray 2.60's own template binds both listeners on every interface; the wrapper Serve runs as
    HAProxy rebinds every such line to 127.0.0.1 and then runs the real binary with the same args."""
    import jinja2
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    from rayestate.localstack import HAPROXY_LOOPBACK, haproxy_ingress_env

    binds = [line for line in HAPROXY_CONFIG_TEMPLATE.splitlines() if line.strip().startswith("bind ")]
    ports = {"stats_port": 18404, "metrics_port": 19101, "frontend_port": 18000, "grpc_frontend_port": 19000}
    config = SimpleNamespace(frontend_host="127.0.0.1", grpc_frontend_host="127.0.0.1", **ports)
    rendered = [jinja2.Template(line).render(config=config) for line in binds]
    assert any("*:18404" in line for line in rendered) and any("bind :19101" in line for line in rendered)
    config_file = tmp_path / "haproxy.cfg"
    config_file.write_text("global\n" + "\n".join(rendered) + "\n")
    recorder = tmp_path / "haproxy"
    recorder.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    recorder.chmod(0o755)

    env = {"PATH": os.environ["PATH"], "RAYESTATE_HAPROXY_BINARY": str(recorder)}
    args = ["-db", "-f", str(config_file), "-sf", "123"]
    subprocess.run([str(HAPROXY_LOOPBACK), *args], env=env, check=True)
    assert (tmp_path / "args").read_text().split() == args  # the real binary got the same arguments
    after = [line.split()[1] for line in config_file.read_text().splitlines() if line.strip().startswith("bind ")]
    assert after == [f"127.0.0.1:{port}" for port in (19101, 18000, 19000, 18404)], after
    missing = subprocess.run([str(HAPROXY_LOOPBACK), *args], env={"PATH": os.environ["PATH"]}, capture_output=True)
    assert missing.returncode != 0 and b"RAYESTATE_HAPROXY_BINARY" in missing.stderr

    env = haproxy_ingress_env(Path("/tmp") / "rehap-unit")  # only named: nothing is made there
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_LOOPBACK)
    assert Path(env["RAYESTATE_HAPROXY_BINARY"]).name == "haproxy"


AUTH_MODE_SETTING = re.compile(r"RAY_AUTH_MODE[\"'\]]*\s*(?:[:=,]|\?=)\s*[\"']?(\w+)")


def test_nothing_in_the_repo_turns_token_auth_off():
    planted = 'os.environ["RAY_AUTH_MODE"] = "disabled"\nenv:\n  RAY_AUTH_MODE: "token"'
    assert AUTH_MODE_SETTING.findall(planted) == ["disabled", "token"]
    offenders, settings_seen = [], 0
    for path in repo_files():
        if path.suffix not in {".py", ".yaml", ".yml", ".sh", ".md", ".toml", ".cfg", ".json", ""}:
            continue
        if path == Path(__file__).resolve():  # plants other values on purpose
            continue
        for value in AUTH_MODE_SETTING.findall(path.read_text(errors="replace")):
            settings_seen += 1
            if value != "token":
                offenders.append(f"{path.relative_to(REPO)}: RAY_AUTH_MODE {value}")
    assert settings_seen > 5 and not offenders, offenders


# --- dependency audit -------------------------------------------------------------------------


def test_audit_verdicts():
    vuln = {"id": "PYSEC-1", "aliases": ["CVE-1"], "fix_versions": ["2.0"]}
    clean = {"dependencies": [{"name": "a", "version": "1", "vulns": []}]}
    bad = {"dependencies": [{"name": "a", "version": "1", "vulns": [vuln]}]}
    offline = {"dependencies": [{"name": "a", "version": "1", "skip_reason": "Dependency not found on PyPI"}]}
    assert audit_deps.verdict(clean, {})[0] == 0
    assert audit_deps.verdict(bad, {})[0] == 1
    code, lines = audit_deps.verdict(bad, {"CVE-1": "not reachable from our code"})
    assert code == 0 and "accepted" in lines[0]
    assert "stale" in " ".join(audit_deps.verdict(clean, {"CVE-9": "x"})[1])
    assert audit_deps.verdict(offline, {})[0] == audit_deps.UNREACHABLE


def test_accepted_advisories_each_have_a_reason():
    audit_deps.accepted_ids()  # raises naming the line otherwise


def test_ci_runs_the_dependency_audit():
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yaml").read_text())
    audit = workflow["jobs"]["audit"]
    assert any("scripts/audit_deps.py" in step.get("run", "") for step in audit["steps"])
    assert "audit" in workflow["jobs"]["image"]["needs"]  # no image is pushed past a failed audit


def test_a_local_cluster_is_never_started_without_token_auth():
    """Ray reads RAY_AUTH_MODE once, at import: a process that imported it first gets a clear error, not a head it cannot reach."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    script = "import ray\nfrom rayestate.localstack import init_local_ray\ninit_local_ray(num_cpus=1, dashboard=False)"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "imported ray before RAY_AUTH_MODE=token was set" in result.stderr
