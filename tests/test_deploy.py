"""The Helm chart, the Alertmanager/Prometheus examples and the container files.

The chart is rendered and linted offline with helm-python-sdk (the Helm Go SDK); every rendered
manifest is validated with kubernetes-validate against a pinned Kubernetes version, and the
prometheus-operator objects against their schemas kept in tests/data/crd.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from agentic_observability.config import (
    SECRET_ENV,
    ChangesConfig,
    Config,
    LogsConfig,
    RemediationConfig,
    load_config,
)
from agentic_observability.demo.stack import find_binary

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "agentic-observability"
KUBERNETES_VERSION = "1.30.0"
CRD_SCHEMAS = {
    kind: json.loads((ROOT / "tests/data/crd" / f"{kind.lower()}.schema.json").read_text())
    for kind in ("ServiceMonitor", "PrometheusRule")
}
ALL_ON: dict[str, Any] = yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text())
CHANGES_LOGS: dict[str, Any] = yaml.safe_load((CHART / "ci" / "changes-logs-values.yaml").read_text())
REPLICAS: dict[str, Any] = yaml.safe_load((CHART / "ci" / "replicas-postgres-values.yaml").read_text())
CI_VALUES = {"defaults": None, "all-on": ALL_ON, "changes-logs": CHANGES_LOGS, "replicas-postgres": REPLICAS}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name="agentic-obs", namespace="monitoring", is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=values, name="agentic-obs", namespace="monitoring")[
            "agentic-observability/templates/NOTES.txt"
        ]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module", params=list(CI_VALUES))
def manifests(request: pytest.FixtureRequest) -> Iterator[list[dict[str, Any]]]:
    yield render(CI_VALUES[request.param])


def test_every_manifest_is_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    for doc in manifests:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_optional_parts_follow_their_flags() -> None:
    default_kinds = {d["kind"] for d in render()}
    assert default_kinds == {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
    }
    all_kinds = {d["kind"] for d in render(ALL_ON)}
    assert all_kinds - default_kinds == {
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
    }
    assert len(by_kind(render(ALL_ON), "ConfigMap")) == 2  # config + dashboards


def test_chart_lints_strictly() -> None:
    for values in CI_VALUES.values():
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _config_from(docs: list[dict[str, Any]], tmp_path: Path, **environ: str) -> Config:
    [configmap] = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    return load_config(path, environ={"AGENTIC_OBS_WEBHOOK_TOKEN": "x", **environ})


def test_rendered_config_is_accepted_by_the_service(tmp_path: Path) -> None:
    config = _config_from(render(), tmp_path)
    assert config.file.storage.path == "/var/lib/agentic-obs"
    assert config.file.prometheus.url.startswith("http://prometheus-operated")


def _keys(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return set()
    found = set()
    for key, value in data.items():
        found.add(prefix + key)
        found |= _keys(value, f"{prefix}{key}.")
    return found


def _remediation_schema_keys() -> set[str]:
    """``remediation.*`` keys the service reads (its schema), one level into nested sections."""
    found = set()
    for name, field in RemediationConfig.model_fields.items():
        found.add(f"remediation.{name}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= {f"remediation.{name}.{sub}" for sub in field.annotation.model_fields}
    return found | {"remediation"}


def test_every_config_key_is_reachable_from_the_chart() -> None:
    """config.example.yaml's keys are the chart's `config` keys, plus `remediation`, which the chart
    takes from its top-level `remediation` values (next to their `rbac`) and renders into the file."""
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart_config = {
        **values["config"],
        "remediation": {k: v for k, v in values["remediation"].items() if k != "rbac"},
    }
    assert "remediation" not in values["config"]
    assert _keys(example) | _remediation_schema_keys() == _keys(chart_config)


def test_deployment_is_locked_down() -> None:
    [deployment] = by_kind(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/ready"
    assert container["resources"]["requests"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/agentic-obs", "/etc/agentic-obs", "/tmp"} <= mounts


def test_secrets_come_from_an_existing_secret_or_a_chart_made_one() -> None:
    made = render(ALL_ON)
    [secret] = by_kind(made, "Secret")
    assert set(secret["data"]) == {"AGENTIC_OBS_WEBHOOK_TOKEN"}  # empty values are left out
    existing = render({"secrets": {"existingSecret": "team-secrets"}})
    assert by_kind(existing, "Secret") == []
    [deployment] = by_kind(existing, "Deployment")
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"secretRef": {"name": "team-secrets"}}]


def test_notes_print_the_in_cluster_receiver_url() -> None:
    text = notes()
    assert "http://agentic-obs-agentic-observability.monitoring.svc:8000/api/v1/webhook/alertmanager" in text
    assert "continue: true" in text and "send_resolved: true" in text


def test_chart_dashboards_and_rules_are_the_repository_files() -> None:
    ours = {p.name: p.read_bytes() for p in (ROOT / "dashboards").glob("*.json")}
    chart = {p.name: p.read_bytes() for p in (CHART / "dashboards").glob("*.json")}
    assert ours and ours == chart
    rules = "agentic-obs-health.yml"
    assert (CHART / "rules" / rules).read_bytes() == (ROOT / "alertmanager" / "rules" / rules).read_bytes()
    [configmap] = [
        d for d in by_kind(render(ALL_ON), "ConfigMap") if d["metadata"]["name"].endswith("dashboards")
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {k: json.loads(v) for k, v in configmap["data"].items()} == {
        k: json.loads(v) for k, v in ours.items()
    }


def test_dashboards_use_a_datasource_variable() -> None:
    for path in (ROOT / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"


def test_alertmanager_examples_pass_amtool() -> None:
    for path in [ROOT / "alertmanager" / "receiver.yml", ROOT / "deploy" / "compose" / "alertmanager.yml"]:
        result = subprocess.run(
            [find_binary("amtool", install=True), "check-config", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
    receiver = yaml.safe_load((ROOT / "alertmanager" / "receiver.yml").read_text())
    route = receiver["route"]["routes"][0]
    assert route["receiver"] == "agentic-obs" and route["continue"] is True and route["group_by"]
    [hook] = next(r for r in receiver["receivers"] if r["name"] == "agentic-obs")["webhook_configs"]
    assert hook["send_resolved"] is True and "max_alerts" in hook
    assert hook["http_config"]["authorization"]["credentials_file"]


def test_example_rules_pass_promtool() -> None:
    rules = sorted((ROOT / "alertmanager" / "rules").glob("*.yml"))
    result = subprocess.run(
        [find_binary("promtool", install=True), "check", "rules", *map(str, rules)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    demo_rules = ROOT / "src" / "agentic_observability" / "demo" / "rules.yml"
    assert (ROOT / "alertmanager" / "rules" / "shop.yml").read_bytes() == demo_rules.read_bytes()
    result = subprocess.run(
        [
            find_binary("promtool", install=True),
            "check",
            "config",
            str(ROOT / "deploy/compose/prometheus.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_runs_the_console_script() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and all("slim" in s for s in stages)
    final = lines[lines.index(stages[-1]) :]
    assert 'ENTRYPOINT ["agentic-obs"]' in final
    user = next(line for line in final if line.startswith("USER "))
    assert not user.split()[1].startswith(("0", "root"))
    assert not any(
        tool in " ".join(final) for tool in ("gcc", "build-essential", "pip install --upgrade pip build")
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'agentic-obs = "agentic_observability.cli:main"' in pyproject  # the entrypoint exists


def test_docker_build_context_is_only_the_package() -> None:
    ignore = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!src/"} <= set(ignore)


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"agentic-obs", "prometheus", "alertmanager", "grafana", "qdrant"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in services
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
    service = services["agentic-obs"]
    assert service["read_only"] is True and not service["user"].startswith("0")
    load_config(ROOT / "deploy" / "compose" / "agentic-obs.yaml", environ={"AGENTIC_OBS_WEBHOOK_TOKEN": "x"})


def test_the_chart_can_set_every_secret_the_service_reads() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(SECRET_ENV.values()) <= set(values["secrets"]["values"])
    made = render({"secrets": {"values": {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}}})
    [secret] = by_kind(made, "Secret")
    assert set(secret["data"]) == {"SLACK_WEBHOOK_URL"}
    [configmap] = [d for d in by_kind(made, "ConfigMap") if "config.yaml" in d["data"]]
    assert "hooks.slack.com" not in configmap["data"]["config.yaml"]  # the webhook URL is no config key


def test_changes_and_logs_render_into_config_the_service_takes_and_secrets_stay_in_the_secret(
    tmp_path: Path,
) -> None:
    docs = render(CHANGES_LOGS)
    config = _config_from(docs, tmp_path, LOKI_BEARER_TOKEN="from-the-secret")
    logs, changes = config.file.logs, config.file.changes
    assert logs.url == "http://loki-gateway.monitoring.svc:3100" and logs.tenant == "shop"
    assert logs.selector == '{namespace="{namespace}", container="{entity}"}' and logs.max_entities == 3
    assert logs.budget == 20.0 and logs.grafana_datasource == "loki-uid"
    assert changes.enabled and changes.poll_interval == 30.0 and changes.grafana_tag == "deploy"
    assert config.secrets.loki_bearer_token is not None
    [secret] = by_kind(docs, "Secret")
    assert set(secret["data"]) == {"AGENTIC_OBS_WEBHOOK_TOKEN", "LOKI_BEARER_TOKEN"}
    [configmap] = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    text = configmap["data"]["config.yaml"]
    assert "chart-test" not in text and "LOKI_" not in text  # no secret, not even by name, in the config
    [deployment] = by_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert "chart-test" not in json.dumps(deployment)  # the token reaches the pod through the Secret only
    existing = render({**CHANGES_LOGS, "secrets": {"existingSecret": "team-secrets"}})
    assert by_kind(existing, "Secret") == []
    [deployment] = by_kind(existing, "Deployment")
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"secretRef": {"name": "team-secrets"}}]  # LOKI_* come from the team's Secret


def _commented_example(path: Path, section: str, indent: str = "  ") -> dict[str, Any]:
    """The ``<section>:`` example a YAML file carries commented out (``# logs:`` at ``indent``, its
    settings on ``#   `` lines below), uncommented."""
    lines = path.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(f"{indent}# {section}:"))
    block = [f"{section}:"]
    for line in lines[start + 1 :]:
        if not line.startswith(f"{indent}#   "):
            break
        block.append(line.removeprefix(f"{indent}# "))
    return dict(yaml.safe_load("\n".join(block))[section])


def test_the_commented_changes_and_logs_examples_are_whole_and_what_the_service_takes(
    tmp_path: Path,
) -> None:
    """Uncommented, the examples are a config the service loads, name every setting of their
    sections, and show the defaults (the chart leaves both sections out: the service's defaults)."""
    values = CHART / "values.yaml"
    changes, logs = _commented_example(values, "changes"), _commented_example(values, "logs")
    assert set(changes) == set(ChangesConfig.model_fields) and set(logs) == set(LogsConfig.model_fields)
    docs = render({"config": {"changes": changes, "logs": logs}})
    config = _config_from(docs, tmp_path, LOKI_USERNAME="u", LOKI_PASSWORD="p")
    assert config.file.changes == ChangesConfig()
    assert config.file.logs == LogsConfig(url="http://loki-gateway.monitoring.svc:3100")
    assert logs == _commented_example(ROOT / "config.example.yaml", "logs", indent="")  # as it says there


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A compose service's bind mounts: container path -> the file or directory in the repository."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_compose_grafana_provisions_the_dashboards_and_a_prometheus_datasource() -> None:
    """Grafana in docker-compose.yml gets a dashboard provider that points at the mounted dashboards,
    a Prometheus datasource the dashboards pick (their `datasource` variable starts on the default
    datasource of its type), and the service is told where Grafana is. No Docker runs here: the files
    are parsed and every path is followed through the mounts."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = _mounts(services["grafana"])
    for target, source in mounts.items():
        assert source.exists(), f"grafana: {source} missing (mounted at {target})"

    [providers] = [p for t, p in mounts.items() if t.startswith("/etc/grafana/provisioning/dashboards/")]
    [provider] = yaml.safe_load(providers.read_text())["providers"]
    dashboards_dir = mounts[provider["options"]["path"]]  # the provider reads a mounted directory
    assert provider["type"] == "file" and sorted(dashboards_dir.glob("*.json"))

    [datasources] = [p for t, p in mounts.items() if t.startswith("/etc/grafana/provisioning/datasources/")]
    [datasource] = yaml.safe_load(datasources.read_text())["datasources"]
    assert datasource["isDefault"] is True and datasource["uid"]
    for path in dashboards_dir.glob("*.json"):
        dashboard = json.loads(path.read_text())
        [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == datasource["type"] == "prometheus", path.name
        used = {p["datasource"]["uid"] for p in dashboard["panels"]}
        assert used <= {"${datasource}", datasource["uid"]}, path.name
    url = datasource["url"].removeprefix("http://")
    host, port = url.split(":")
    assert host == "prometheus" and f"{port}:{port}" in services["prometheus"]["ports"]

    service = services["agentic-obs"]
    assert "grafana" in service["depends_on"]
    config = load_config(
        ROOT / "deploy" / "compose" / "agentic-obs.yaml", environ={"AGENTIC_OBS_WEBHOOK_TOKEN": "x"}
    )
    grafana = config.file.actions.grafana
    assert grafana.url is not None and grafana.url.rstrip("/") == "http://grafana:3000"
    assert any(p.endswith(":3000") for p in services["grafana"]["ports"])
    assert grafana.provision_dashboards is False  # Grafana provisions them from the files above
    assert provider["folderUid"] == "agentic-obs"  # the folder the service would push into


# -- remediation (issue 22): off by default; RBAC only when asked, limited to the catalogue's verbs ------

CATALOGUE_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "patch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale", "statefulsets/scale"],
        "verbs": ["get", "update", "patch"],
    },
]


def test_remediation_is_off_and_grants_nothing_by_default(tmp_path: Path) -> None:
    docs = render()
    assert by_kind(docs, "Role") == [] and by_kind(docs, "RoleBinding") == []
    assert not any(d["kind"].startswith("Cluster") for d in docs)
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    config = _config_from(docs, tmp_path)
    assert config.file.remediation.enabled is False and config.file.remediation.actions == ()
    # switched on without RBAC (http actions only): still no Role
    on = render({"remediation": {"enabled": True}})
    assert by_kind(on, "Role") == [] and by_kind(on, "RoleBinding") == []
    assert _config_from(on, tmp_path).file.remediation.enabled is True


def test_remediation_rbac_is_a_role_per_listed_namespace_with_the_catalogue_verbs(tmp_path: Path) -> None:
    docs = render(ALL_ON)
    namespaces = ALL_ON["remediation"]["rbac"]["namespaces"]
    roles, bindings = by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(namespaces)
    [account] = by_kind(docs, "ServiceAccount")
    for role in roles:
        assert role["rules"] == CATALOGUE_RULES
    for binding in bindings:
        [role] = [r for r in roles if r["metadata"]["namespace"] == binding["metadata"]["namespace"]]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "monitoring"}
        ]
    assert not any(d["kind"].startswith("Cluster") for d in docs)
    [deployment] = by_kind(docs, "Deployment")  # the actions authenticate as that account
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    # the catalogue reaches the config file, without the chart-only rbac key, and the service takes it
    config = _config_from(docs, tmp_path)
    assert config.file.remediation.enabled is True
    assert [a.name for a in config.file.remediation.actions] == ["restart-carts", "scale-carts"]
    [configmap] = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    assert "rbac" not in yaml.safe_load(configmap["data"]["config.yaml"])["remediation"]


def test_remediation_rbac_needs_its_namespaces() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"remediation\.rbac\.namespaces is empty"):
        render({"remediation": {"rbac": {"create": True}}})
    with pytest.raises(helm.HelmRenderError, match=r"remediation\.rbac\.namespaces is empty"):
        render({"remediation": {"enabled": True, "rbac": {"create": True, "namespaces": []}}})
    # an action allowed in a namespace the Role does not cover would only ever get a 403
    outside = {
        "remediation": {
            "enabled": True,
            "actions": [
                {
                    "name": "restart-carts",
                    "kind": "kubernetes.rollout_restart",
                    "namespaces": ["shop", "billing"],
                    "approvers": ["U0123ABCD"],
                }
            ],
            "rbac": {"create": True, "namespaces": ["shop"]},
        }
    }
    with pytest.raises(helm.HelmRenderError, match=r"restart-carts.*\"billing\""):
        render(outside)


def test_remediation_belongs_under_its_own_values_key() -> None:
    with pytest.raises(helm.HelmRenderError, match="top-level `remediation:` values"):
        render({"config": {"remediation": {"enabled": True}}})


# -- scale-out on PostgreSQL (issue 17): several replicas need the shared store and shared memory -------

PG_URL = "postgresql://agentic@postgres-rw.db.svc:5432/agentic"
POSTGRES = {"storage": {"backend": "postgres", "postgres": {"url": PG_URL}}}
QDRANT = {"memory": {"backend": "qdrant", "url": "http://qdrant.qdrant.svc:6333"}}


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = by_kind(docs, "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e for e in _pod(docs)["containers"][0]["env"]}


def test_more_than_one_replica_needs_the_postgres_store() -> None:
    for storage in ({}, {"storage": {"backend": "sqlite"}}):
        with pytest.raises(
            helm.HelmRenderError, match=r"replicaCount is 2 but config\.storage\.backend is sqlite"
        ):
            render({"replicaCount": 2, "config": {**storage, **QDRANT}})
    with pytest.raises(helm.HelmRenderError, match=r"config\.storage\.postgres\.url is not set"):
        render({"replicaCount": 2, "config": {"storage": {"backend": "postgres"}, **QDRANT}})
    # the same values with the shared store render
    assert by_kind(render({"replicaCount": 2, "config": {**POSTGRES, **QDRANT}}), "Deployment")


def test_more_than_one_replica_needs_memory_off_the_pods_disks() -> None:
    with pytest.raises(
        helm.HelmRenderError, match=r"config\.memory\.backend is edge.*memory\.backend: qdrant"
    ):
        render({"replicaCount": 2, "config": POSTGRES})
    with pytest.raises(helm.HelmRenderError, match=r"config\.memory\.backend is edge"):
        render({"replicaCount": 2, "config": {**POSTGRES, "memory": {"backend": "edge"}}})
    # a Qdrant server, or no memory at all, is fine
    assert by_kind(render({"replicaCount": 2, "config": {**POSTGRES, **QDRANT}}), "Deployment")
    assert by_kind(
        render({"replicaCount": 2, "config": {**POSTGRES, "memory": {"enabled": False}}}), "Deployment"
    )


def test_replicas_on_postgres_spread_roll_and_keep_the_password_in_a_secret(tmp_path: Path) -> None:
    docs = render(REPLICAS)
    [deployment] = by_kind(docs, "Deployment")
    pod = _pod(docs)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 3
    # a disruption budget over these pods
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["maxUnavailable"] == 1
    # a preferred anti-affinity: one pod per node where the nodes allow
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    # rolled one at a time, no ReadWriteOnce claim for the state directory
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert by_kind(docs, "PersistentVolumeClaim") == []
    [state] = [v for v in pod["volumes"] if v["name"] == "state"]
    assert state == {"name": "state", "emptyDir": {}}
    # the password: from the existing Secret, by reference
    assert _env(docs)["POSTGRES_PASSWORD"] == {
        "name": "POSTGRES_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "agentic-obs-postgres", "key": "password"}},
    }
    # the rendered config is what the service loads: the shared store and a Qdrant server
    config = _config_from(docs, tmp_path, POSTGRES_PASSWORD="from-the-secret")
    assert config.file.storage.backend == "postgres"
    assert config.file.storage.postgres.url == REPLICAS["config"]["storage"]["postgres"]["url"]
    assert config.file.memory.backend == "qdrant" and str(config.file.memory.url).startswith("http://qdrant.")
    assert config.secrets.postgres_password is not None
    [configmap] = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    assert "password" not in configmap["data"]["config.yaml"].lower()
    # with the chart's own Secret instead: the password is in the Secret and nowhere else
    own = render(
        {
            **REPLICAS,
            "postgresql": {"existingSecret": ""},
            "secrets": {"values": {"POSTGRES_PASSWORD": "chart-test-pg"}},
        }
    )
    [secret] = by_kind(own, "Secret")
    assert "POSTGRES_PASSWORD" in secret["data"] and "POSTGRES_PASSWORD" not in _env(own)
    for doc in by_kind(own, "ConfigMap") + by_kind(own, "Deployment"):
        assert "chart-test-pg" not in json.dumps(doc)
    # two sources for one password, or a password in the URL (it would sit in the ConfigMap), fail
    with pytest.raises(helm.HelmRenderError, match=r"POSTGRES_PASSWORD is given by"):
        render({**REPLICAS, "secrets": {"values": {"POSTGRES_PASSWORD": "chart-test-pg"}}})
    for url in ("postgresql://agentic:chart-test-pg@db:5432/agentic", "host=db dbname=agentic password=x"):
        leaky = {"replicaCount": 1, "config": {"storage": {"backend": "postgres", "postgres": {"url": url}}}}
        with pytest.raises(helm.HelmRenderError, match=r"storage\.postgres\.url carries a password"):
            render(leaky)


def test_pdb_and_anti_affinity_follow_their_values_with_replicas() -> None:
    values = {**REPLICAS, "podDisruptionBudget": {"enabled": False}, "podAntiAffinity": {"enabled": False}}
    docs = render(values)
    assert by_kind(docs, "PodDisruptionBudget") == [] and "affinity" not in _pod(docs)
    docs = render(
        {**REPLICAS, "podDisruptionBudget": {"minAvailable": 2}, "podAntiAffinity": {"type": "hard"}}
    )
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    [term] = _pod(docs)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    # an anti-affinity of the user's replaces the chart's; other affinity is kept next to the chart's
    own = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}}
    assert _pod(render({**REPLICAS, "affinity": own}))["affinity"] == own
    node: dict[str, Any] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert set(_pod(render({**REPLICAS, "affinity": node}))["affinity"]) == {
        "nodeAffinity",
        "podAntiAffinity",
    }


def test_cloudnativepg_cluster_is_the_store_when_enabled(tmp_path: Path) -> None:
    values: dict[str, Any] = {
        "replicaCount": 2,
        "config": QDRANT,
        "postgresql": {
            "cloudnativepg": {"enabled": True, "storage": {"size": "5Gi", "storageClass": "fast"}}
        },
    }
    docs = render(values)
    [cluster] = by_kind(docs, "Cluster")
    assert (
        cluster["apiVersion"] == "postgresql.cnpg.io/v1" and cluster["metadata"]["name"] == "agentic-obs-pg"
    )
    assert cluster["spec"]["instances"] == 3 and "imageName" not in cluster["spec"]
    assert cluster["spec"]["storage"] == {"size": "5Gi", "storageClass": "fast"}
    assert cluster["spec"]["bootstrap"] == {"initdb": {"database": "agentic", "owner": "agentic"}}
    # no selector of the chart (Service, PDB, anti-affinity) matches the database's pods
    [deployment] = by_kind(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"].items()
    assert not selector <= cluster["metadata"]["labels"].items()
    for doc in docs:
        if doc["kind"] != "Cluster":  # the CRD's schema is not kept in tests/data/crd
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # the password from the Secret the operator makes; the url to the read-write Service, as `agentic`
    assert _env(docs)["POSTGRES_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "agentic-obs-pg-app", "key": "password"}
    }
    config = _config_from(docs, tmp_path, POSTGRES_PASSWORD="from-the-operator")
    assert config.file.storage.backend == "postgres"
    assert config.file.storage.postgres.url == "postgresql://agentic@agentic-obs-pg-rw:5432/agentic"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "CloudNativePG operator" in notes(values)
    # options, and a url set by hand wins
    docs = render(
        {
            **values,
            "config": {**QDRANT, **POSTGRES},
            "postgresql": {
                "cloudnativepg": {"enabled": True, "name": "store", "instances": 2, "imageName": "pg:17"}
            },
        }
    )
    [cluster] = by_kind(docs, "Cluster")
    assert cluster["metadata"]["name"] == "store" and cluster["spec"]["instances"] == 2
    assert cluster["spec"]["imageName"] == "pg:17" and "storageClass" not in cluster["spec"]["storage"]
    assert _env(docs)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "store-app"
    assert _config_from(docs, tmp_path, POSTGRES_PASSWORD="p").file.storage.postgres.url == PG_URL
    # contradictions fail
    with pytest.raises(helm.HelmRenderError, match=r"POSTGRES_PASSWORD is given by"):
        render({**values, "postgresql": {**values["postgresql"], "existingSecret": "pg"}})
    with pytest.raises(
        helm.HelmRenderError, match=r"cloudnativepg\.enabled is true but config\.storage\.backend"
    ):
        render({**values, "replicaCount": 1, "config": {"storage": {"backend": "sqlite"}}})


def test_one_replica_on_sqlite_is_unchanged() -> None:
    docs = render()
    [deployment] = by_kind(docs, "Deployment")
    pod = _pod(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert by_kind(docs, "PodDisruptionBudget") == [] and by_kind(docs, "Cluster") == []
    assert "affinity" not in pod
    [claim] = by_kind(docs, "PersistentVolumeClaim")
    [state] = [v for v in pod["volumes"] if v["name"] == "state"]
    assert state["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "POSTGRES_PASSWORD" not in _env(docs)
    [configmap] = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    storage = yaml.safe_load(configmap["data"]["config.yaml"])["storage"]
    assert "backend" not in storage and "postgres" not in storage  # the service's default, sqlite
    # one replica on postgres keeping Qdrant Edge: the shard stays on the claim, one pod at a time
    docs = render({"config": POSTGRES})
    assert by_kind(docs, "PersistentVolumeClaim") and by_kind(docs, "Deployment")[0]["spec"]["strategy"] == {
        "type": "Recreate"
    }
