"""docker-compose.yml, without a Docker engine: valid against the Compose Specification's
schema, every file it mounts or builds from exists, and the services point at each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from tests.telemetry_stack.tools import (
    COMPOSE,
    ROOT,
    TELEMETRY,
    compose_schema_path,
)

GRAFANA_DASHBOARDS = "/etc/grafana/dashboards/llm-init"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a path relative to the repository, or a volume name)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """The compose file validates against the Compose Specification's JSON schema."""
    schema = json.loads(compose_schema_path().read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    assert errors == []


def test_every_mounted_file_and_build_context_exists(compose: dict[str, Any],
                                                     services: dict[str, Any]) -> None:
    """Bind mounts name files of the repository; other sources are declared volumes; build
    contexts hold their Dockerfile."""
    for name, service in services.items():
        for target, source in mounts(service).items():
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} (for {target}) is missing"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()


def test_grafana_has_no_default_admin_password(services: dict[str, Any]) -> None:
    """The admin password comes from the environment, and compose refuses to start without it."""
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password)


def test_grafana_provisions_the_datasources_and_the_generated_dashboard(
        services: dict[str, Any]) -> None:
    """Grafana gets the provisioning directories, and the dashboard provider reads the path
    where the generated JSON is mounted; every data source points at a service of the stack."""
    grafana = mounts(services["grafana"])
    for kind in ("datasources", "dashboards"):
        assert grafana[f"/etc/grafana/provisioning/{kind}"] == f"./dashboards/provisioning/{kind}"
    mounted = {t: s for t, s in grafana.items() if t.startswith(GRAFANA_DASHBOARDS)}
    assert mounted == {f"{GRAFANA_DASHBOARDS}/llm-init-initialization.json":
                       "./dashboards/llm-init-initialization.json"}
    provider = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/llm-init.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == GRAFANA_DASHBOARDS
    sources = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/llm-init.yml").read_text())["datasources"]
    assert {urlparse(s["url"]).hostname for s in sources} <= set(services)
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert [s["isDefault"] for s in prometheus] == [True]


def test_prometheus_gets_its_config_rules_and_rays_discovery_file(
        services: dict[str, Any]) -> None:
    """Prometheus mounts telemetry/ (config, rules, standalone targets) and the demo's
    /tmp/ray; its Alertmanager and the demo's DNS alias are services of the stack."""
    prometheus = mounts(services["prometheus"])
    assert prometheus["/etc/prometheus"] == "./telemetry"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert prometheus["/tmp/ray"] == mounts(services["llm-init"])["/tmp/ray"]
    config = yaml.safe_load((TELEMETRY / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (TELEMETRY / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ray"]["file_sd_configs"][0]["files"] == [
        "/tmp/ray/prom_metrics_service_discovery.json"]
    for sd in jobs["llm-init"]["file_sd_configs"]:
        assert all((TELEMETRY / f).is_file() for f in sd["files"])
    aliases = {alias for s in services.values()
               for alias in s.get("networks", {}).get("default", {}).get("aliases", [])}
    assert set(jobs["ray-demo"]["dns_sd_configs"][0]["names"]) <= aliases
    for am in config["alerting"]["alertmanagers"]:
        hosts = {t.split(":")[0] for c in am["static_configs"] for t in c["targets"]}
        assert hosts <= set(services)


def test_the_collector_takes_otlp_and_sends_traces_to_jaeger(services: dict[str, Any]) -> None:
    """OTLP in over gRPC and HTTP; every pipeline names defined components; traces leave for
    Jaeger; the demo exports to the collector's HTTP port."""
    collector = mounts(services["otel-collector"])
    assert collector["/etc/otelcol-contrib/config.yaml"] == "./telemetry/otel-collector.yml"
    config = yaml.safe_load((TELEMETRY / "otel-collector.yml").read_text())
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    pipelines = config["service"]["pipelines"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config.get(kind, {}))
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    assert set(pipelines) == {"traces", "logs"}
    [exporter] = pipelines["traces"]["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    assert {"4317:4317", "4318:4318"} <= set(services["otel-collector"]["ports"])
    endpoint = services["llm-init"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4318"


def test_the_demo_runs_on_the_cpu_by_default_and_on_gpus_in_the_gpu_profile(
        services: dict[str, Any]) -> None:
    """The default demo builds vLLM's CPU build; the gpu profile's builds the CUDA one and
    reserves the GPUs. Both run llm-init demo with Ray's metrics on port 8080."""
    cpu, gpu = services["llm-init"], services["llm-init-gpu"]
    assert "profiles" not in cpu
    assert cpu["build"]["args"]["LLM_INIT_VLLM"] == "cpu"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["LLM_INIT_VLLM"] == "gpu"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    for demo in (cpu, gpu):
        assert demo["command"][:2] == ["llm-init", "demo"]
        assert demo["command"][demo["command"].index("--metrics-port") + 1] == "8080"


def test_the_dockerfile_runs_setup_and_the_demo() -> None:
    """The image installs through scripts/setup.sh with the chosen vLLM build and runs the demo;
    the build context leaves out the virtual environment and secrets."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG LLM_INIT_VLLM=cpu$", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN bash scripts/setup\.sh", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["llm-init", "demo"', dockerfile, re.MULTILINE)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", ".env"} <= ignored


def test_no_two_default_services_publish_the_same_host_port(services: dict[str, Any]) -> None:
    """The default profile's published ports do not collide."""
    ports = [p.split(":")[0] for s in services.values() if "profiles" not in s
             for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))


def test_compose_schema_location_can_be_overridden(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """COMPOSE_SPEC_SCHEMA names the schema to use."""
    monkeypatch.setenv("COMPOSE_SPEC_SCHEMA", str(tmp_path / "schema.json"))
    assert compose_schema_path() == tmp_path / "schema.json"
