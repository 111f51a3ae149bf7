"""The docker-compose deployment (collector-config/, docker-compose.yml), checked without Docker or network.

What can be checked statically is checked here: every YAML/JSON file parses; the collector (and Jaeger,
which uses the collector's format) pipelines name only defined components; every referenced compose
service, volume and mounted file exists; ports agree between the OTel SDK defaults, the collector, the
backends' configs, the compose file and Grafana's data sources; images are pinned; only the OTLP ports are
published without authentication; Grafana's data source uids agree with the dashboard; the LogQL, TraceQL
and PromQL in the README section and the dashboard use only names from the telemetry contract.
What cannot be checked without Docker (that the images start with these configs) is listed in
docs/deployment.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "collector-config"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD_DIR = CONFIG / "grafana" / "dashboards"
DATASOURCES_FILE = CONFIG / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
README_HEADING = "## See it in Grafana"

SDK_DEFAULT_PORTS = {"grpc": 4317, "http": 4318}  # OTEL_EXPORTER_OTLP_ENDPOINT defaults

# --- the telemetry contract -------------------------------------------------------------------------
# Attribute keys come from docs/telemetry.md (first column of its tables, in backticks): the contract
# the code is tested against (tests/test_telemetry.py), so queries and dashboards follow it.
SPAN_NAMES = {"rocksdb.flush", "rocksdb.compaction", "rocksdb.recovery", "rocksdict.flush", "rocksdict.compact_range"}
EVENT_NAMES = {"rocksdb.blob_file.created", "rocksdb.blob_file.deleted",
               "rocksdb.table_file.created", "rocksdb.table_file.deleted"}
BLOB_REASONS = {"flush", "compaction", "recovery", "unknown"}
METRIC_ATTRIBUTE_KEYS = {"rocksdb.db.path", "rocksdb.column_family", "rocksdb.blob_file.reason"}
# OTel metric -> Prometheus name (OTLP receiver, UnderscoreEscapingWithSuffixes), as in docs/deployment.md.
PROMETHEUS_NAMES = {
    "rocksdb.blob_file.created": "rocksdb_blob_file_created_total",
    "rocksdb.blob_file.deleted": "rocksdb_blob_file_deleted_total",
    "rocksdb.blob_file.created.bytes": "rocksdb_blob_file_created_bytes_total",
    "rocksdb.blob_file.deleted.bytes": "rocksdb_blob_file_deleted_bytes_total",
    "rocksdb.blob_file.live": "rocksdb_blob_file_live",
    "rocksdb.blob_file.live.bytes": "rocksdb_blob_file_live_bytes",
    "rocksdb.blob_file.size": "rocksdb_blob_file_size_bytes",  # histogram
    "rocksdb.blob_file.lifetime": "rocksdb_blob_file_lifetime_seconds",  # histogram
    "otel_blob.lines.skipped": "otel_blob_lines_skipped_total",
    "otel_blob.events.dropped": "otel_blob_events_dropped_total",
    "otel_blob.export.lag": "otel_blob_export_lag_seconds",  # histogram
}
HISTOGRAMS = {"rocksdb.blob_file.size", "rocksdb.blob_file.lifetime", "otel_blob.export.lag"}
LOKI_BUILTIN_NAMES = {"service_name", "trace_id", "span_id", "severity_text"}  # from OTLP itself
PROMETHEUS_BUILTIN_LABELS = {"service_name", "job", "instance", "le"}


def contract_attribute_keys() -> set[str]:
    telemetry = ROOT / "docs" / "telemetry.md"
    keys = set()
    for line in telemetry.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("|"):
            first_cell = line.strip().strip("|").split("|")[0]
            keys.update(k for k in re.findall(r"`([^`]+)`", first_cell) if re.fullmatch(r"[a-z][\w.]*", k))
    assert keys, "docs/telemetry.md has no table with `attribute.keys` in its first column"
    return keys


def prometheus_metric_names() -> set[str]:
    names = set()
    for otel_name, prom in PROMETHEUS_NAMES.items():
        names |= {prom + s for s in ("_bucket", "_sum", "_count")} if otel_name in HISTOGRAMS else {prom}
    return names


# --- helpers ------------------------------------------------------------------------------------------
ENV_REF = re.compile(r"\$\{(?:env:)?(\w+)(?::?-([^}]*))?\}")  # ${env:X:-d} (collector), ${X:-d} (compose)


def resolve(value) -> str:
    """The value with every ${env:VAR:-default} / ${VAR:-default} replaced by its default."""
    return ENV_REF.sub(lambda m: m.group(2) or "", str(value))


def host_port(endpoint) -> tuple[str, int]:
    endpoint = resolve(endpoint)
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.hostname, parts.port
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def load(name: str) -> dict:
    return yaml.safe_load((CONFIG / name).read_text(encoding="utf-8"))


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def published_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each "ip:host:container" entry, defaults resolved."""
    result = []
    for entry in service.get("ports", []):
        parts = resolve(entry).split(":")
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        result.append((ip, int(parts[-2]), int(parts[-1].split("/")[0])))
    return result


def mount_target(service: dict, source_suffix: str) -> str:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.rstrip("/").endswith(source_suffix):
            return target
    raise AssertionError(f"no volume mounts {source_suffix}")


def component_type(name: str) -> str:
    return name.split("/")[0]


def strip_strings(query: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', query)


def listen_ports() -> dict[str, set[int]]:
    """What each compose service listens on, read from its own config file."""
    tempo, loki, jaeger = load("tempo.yaml"), load("loki.yaml"), load("jaeger.yaml")
    otel = load("otelcol.yaml")
    return {
        "otel-collector": {host_port(p["endpoint"])[1] for p in otel["receivers"]["otlp"]["protocols"].values()}
        | {host_port(otel["extensions"]["health_check"]["endpoint"])[1]},
        "tempo": {host_port(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1],
                  tempo["server"]["http_listen_port"]},
        "jaeger": {host_port(jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1],
                   host_port(jaeger["extensions"]["jaeger_query"]["http"]["endpoint"])[1]},
        "loki": {loki["server"]["http_listen_port"]},
        "prometheus": {9090},  # Prometheus' default; test_prometheus_keeps_default_port checks it is not moved
        "grafana": {3000},  # Grafana's default; no GF_SERVER_HTTP_PORT is set
    }


# --- query checks (shared by the README section and the dashboard) -----------------------------------
LABEL_MATCHER = re.compile(r'\b([A-Za-z_]\w*)\s*(=~|!~|!=|==|=|>=|<=|>|<)\s*("(?:[^"\\]|\\.)*"|[\w.]+)')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def value_problems(name: str, op: str, value: str) -> list[str]:
    allowed = {"rocksdb_event": EVENT_NAMES, "rocksdb_blob_file_reason": BLOB_REASONS,
               "name": SPAN_NAMES, "event:name": EVENT_NAMES}.get(name)
    value = value.strip('"')
    if allowed is None or "$" in value or op not in ("=", "=~"):
        return []
    ok = value in allowed if op == "=" else any(re.fullmatch(value, a) for a in allowed)
    return [] if ok else [f"{name} {op} {value!r} matches no value of the contract"]


def logql_problems(query: str, keys: set[str]) -> list[str]:
    allowed = {k.replace(".", "_") for k in keys} | LOKI_BUILTIN_NAMES
    used = set(re.findall(r"\{\{-?\s*\.(\w+)", query))  # line_format / label_format templates
    query = re.sub(r'(line_format|label_format)\s+"(?:[^"\\]|\\.)*"', r'\1 ""', query)
    problems = []
    for name, op, value in LABEL_MATCHER.findall(query):
        used.add(name)
        problems += value_problems(name, op, value)
    for group in GROUPING.findall(query):
        used.update(n.strip() for n in group.split(",") if n.strip())
    used.update(re.findall(r"\bunwrap\s+(?:\w+\()?(\w+)", query))
    return problems + [f"LogQL name {n!r} is not in the contract" for n in sorted(used - allowed)]


def traceql_problems(query: str, keys: set[str]) -> list[str]:
    problems = []
    for name, op, value in re.findall(r'(?<![\w.])(event:name|name)\s*(=~|!=|=)\s*("(?:[^"\\]|\\.)*")', query):
        problems += value_problems(name, op, value)
    attribute = re.compile(r"(?<![\w.:])(span|resource|event|link|instrumentation)?\.([A-Za-z_][\w.]*)")
    for scope, key in attribute.findall(strip_strings(query)):
        if key not in keys and not (scope == "resource" and key == "service.name"):
            problems.append(f"TraceQL attribute {scope}.{key} is not in the contract")
    return problems


def promql_problems(query: str, keys: set[str]) -> list[str]:
    assert METRIC_ATTRIBUTE_KEYS <= keys, "metric attributes must be contract attributes"
    allowed_labels = {k.replace(".", "_") for k in METRIC_ATTRIBUTE_KEYS} | PROMETHEUS_BUILTIN_LABELS
    query = strip_strings(query)
    labels = {name for name, _, _ in LABEL_MATCHER.findall(" ".join(re.findall(r"\{[^}]*\}", query)))}
    for group in GROUPING.findall(query):
        labels.update(n.strip() for n in group.split(",") if n.strip())
    bare = GROUPING.sub("", re.sub(r"\{[^}]*\}", "", query))
    metrics = set(re.findall(r"\b((?:rocksdb|otel_blob)_\w+)", bare))
    assert metrics, f"no otel_blob metric in {query!r}"
    return ([f"PromQL label {n!r} is not a metric attribute" for n in sorted(labels - allowed_labels)]
            + [f"PromQL metric {m!r} is not derived from the contract" for m in sorted(metrics - prometheus_metric_names())])


CHECKERS = {"logql": logql_problems, "traceql": traceql_problems, "promql": promql_problems}


# --- files parse --------------------------------------------------------------------------------------
YAML_FILES = sorted(CONFIG.rglob("*.yaml")) + sorted(CONFIG.rglob("*.yml")) + [COMPOSE_FILE]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path):
    assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)


def test_expected_config_files_exist():
    for name in ("otelcol.yaml", "tempo.yaml", "loki.yaml", "jaeger.yaml", "prometheus.yaml"):
        assert (CONFIG / name).is_file(), name
    assert DATASOURCES_FILE.is_file()
    assert list(DASHBOARD_DIR.glob("*.json"))


# --- collector pipelines ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["otelcol.yaml", "jaeger.yaml"])  # Jaeger v2 uses the collector format
def test_pipelines_use_only_defined_components(name):
    config = load(name)
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in (config.get("extensions") or {}), f"undefined extension {extension}"
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_name, pipeline in service["pipelines"].items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"{pipeline_name} uses undefined {kind} {component}"
                used[kind].add(component)
    for kind, names in used.items():
        assert set(config.get(kind) or {}) == names, f"{kind} defined but unused: {set(config.get(kind) or {}) - names}"


def test_collector_pipelines_route_each_signal():
    config = load("otelcol.yaml")
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs", "metrics"}
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch"
    exporters = {p: {component_type(e) for e in pipelines[p]["exporters"]} for p in pipelines}
    trace_targets = {host_port(config["exporters"][e]["endpoint"])[0] for e in pipelines["traces"]["exporters"]}
    assert trace_targets == {"tempo", "jaeger"} and exporters["traces"] == {"otlp"}
    assert exporters["logs"] == {"otlphttp"}, "logs go to Loki's native OTLP endpoint (the loki exporter is deprecated)"
    assert "loki" not in {component_type(e) for e in config["exporters"]}
    assert "health_check" in config["service"]["extensions"]


def test_collector_destinations_come_from_env_with_compose_defaults():
    text = (CONFIG / "otelcol.yaml").read_text(encoding="utf-8")
    references = re.findall(r"\$\{env:(\w+)(:-)?[^}]*\}", text)
    assert references
    assert not [var for var, default in references if not default], "every ${env:...} needs a default"
    for name, exporter in load("otelcol.yaml")["exporters"].items():
        assert re.fullmatch(r"\$\{env:\w+:-[^}]+\}", exporter["endpoint"]), f"{name}: endpoint from an env var"
        assert "tls" in exporter and "headers" in exporter, f"{name}: TLS and auth headers configurable"
    passed = compose()["services"]["otel-collector"]["environment"]
    passed = set(passed) if isinstance(passed, list) else set(passed)
    assert {var for var, _ in references} <= {p.split("=")[0] for p in passed}, "compose passes every variable"


# --- ports --------------------------------------------------------------------------------------------
def test_otlp_ports_agree_between_sdk_collector_and_compose():
    protocols = load("otelcol.yaml")["receivers"]["otlp"]["protocols"]
    assert {p: host_port(c["endpoint"]) for p, c in protocols.items()} == {
        p: ("0.0.0.0", port) for p, port in SDK_DEFAULT_PORTS.items()}, "bound for the compose network"
    published = {(host, container) for _, host, container in published_ports(compose()["services"]["otel-collector"])}
    assert published == {(port, port) for port in SDK_DEFAULT_PORTS.values()}


def test_exporter_defaults_reach_a_compose_service_on_its_port():
    services, ports = compose()["services"], listen_ports()
    exporters = load("otelcol.yaml")["exporters"]
    for name, exporter in exporters.items():
        host, port = host_port(exporter["endpoint"])
        assert host in services, f"{name} -> unknown service {host}"
        assert port in ports[host], f"{name} -> {host}:{port}, but {host} listens on {ports[host]}"
    assert urlsplit(resolve(exporters["otlphttp/loki"]["endpoint"])).path == "/otlp"
    assert urlsplit(resolve(exporters["otlphttp/prometheus"]["endpoint"])).path == "/api/v1/otlp"
    assert "--web.enable-otlp-receiver" in services["prometheus"]["command"]


def test_prometheus_keeps_default_port():
    assert not any("--web.listen-address" in arg for arg in compose()["services"]["prometheus"]["command"])


def test_healthchecks_probe_the_service_own_port():
    ports = listen_ports()
    for name, service in compose()["services"].items():
        if name == "probe-tools":
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "/probe/busybox", "wget"], f"{name}: images without a shell use the probe"
        assert mount_target(service, "probe-tools") == "/probe"
        assert service["depends_on"]["probe-tools"]["condition"] == "service_completed_successfully"
        host, port = host_port(test[-1].split("/", 3)[2])
        assert host == "127.0.0.1" and port in ports[name], f"{name} healthcheck probes {host}:{port}"


# --- compose references, images, security -------------------------------------------------------------
def test_compose_references_exist():
    spec = compose()
    services, volumes = spec["services"], set(spec.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
    for data in ("tempo-data", "loki-data", "jaeger-data", "prometheus-data", "grafana-data"):
        assert data in volumes
    for config in ("otelcol.yaml", "tempo.yaml", "loki.yaml", "jaeger.yaml", "prometheus.yaml"):
        assert any(config in v for s in services.values() for v in s.get("volumes", [])), f"{config} not mounted"


def test_images_are_pinned():
    for name, service in compose()["services"].items():
        image = service["image"]
        assert re.search(r":v?\d+\.\d+\.\d+(-[\w.]+)?(@sha256:[0-9a-f]{64})?$", image), f"{name}: {image} not pinned"


def test_only_otlp_is_published_without_authentication():
    services = compose()["services"]
    for name in ("tempo", "loki", "prometheus", "jaeger"):  # write APIs, or (Jaeger) a UI without login
        for ip, _, _ in published_ports(services[name]):
            assert ip == "127.0.0.1", f"{name} is published on {ip}"
    published = {(name, port) for name, s in services.items() for _, _, port in published_ports(s)}
    allowed = {("otel-collector", 4317), ("otel-collector", 4318), ("grafana", 3000), ("jaeger", 16686)}
    assert published <= allowed, f"unexpected published ports: {published - allowed}"
    grafana = services["grafana"]["environment"]
    assert str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert grafana.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer") != "Admin"
    assert "GF_SECURITY_ADMIN_PASSWORD" in grafana


# --- Grafana provisioning -----------------------------------------------------------------------------
def datasources() -> dict[str, dict]:
    spec = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))
    assert spec["apiVersion"] == 1
    uids = [d["uid"] for d in spec["datasources"]]
    assert len(uids) == len(set(uids)), "data source uids are unique"
    return {d["uid"]: d for d in spec["datasources"]}


def test_datasources_reach_compose_services():
    services, ports, by_uid = compose()["services"], listen_ports(), datasources()
    assert {d["type"] for d in by_uid.values()} >= {"tempo", "jaeger", "loki", "prometheus"}
    for uid, source in by_uid.items():
        host, port = host_port(source["url"])
        assert host in services and port in ports[host], f"{uid}: {source['url']}"


def test_traces_to_logs_filter_trace_id_as_structured_metadata():
    by_uid = datasources()
    for source in (s for s in by_uid.values() if s["type"] in ("tempo", "jaeger")):
        link = source["jsonData"]["tracesToLogsV2"]
        assert by_uid[link["datasourceUid"]]["type"] == "loki"
        assert link["customQuery"] is True and link["filterByTraceID"] is False, "no line filter"
        assert re.search(r'\|\s*trace_id\s*=\s*"\$\$\{__trace\.traceId\}"', link["query"]), link["query"]
        assert {"key": "service.name", "value": "service_name"} in link["tags"]


def test_logs_to_trace_derived_fields():
    by_uid = datasources()
    loki = next(s for s in by_uid.values() if s["type"] == "loki")
    fields = loki["jsonData"]["derivedFields"]
    assert {by_uid[f["datasourceUid"]]["type"] for f in fields} >= {"tempo", "jaeger"}
    for field in fields:
        assert (field["matcherType"], field["matcherRegex"], field["url"]) == ("label", "trace_id", "$${__value.raw}")


def test_dashboard_provider_points_at_the_mounted_dashboards():
    grafana = compose()["services"]["grafana"]
    provider = yaml.safe_load((CONFIG / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == mount_target(grafana, "grafana/dashboards")
    assert mount_target(grafana, "grafana/provisioning") == "/etc/grafana/provisioning"


def dashboard() -> dict:
    return json.loads((DASHBOARD_DIR / "rocksdb-blob-files.json").read_text(encoding="utf-8"))


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_dashboard_datasource_uids_are_provisioned():
    uids = datasources()
    referenced = {n["datasource"]["uid"] for n in walk(dashboard()) if isinstance(n.get("datasource"), dict)}
    assert referenced and referenced <= set(uids), f"unknown uids: {referenced - set(uids)}"
    for node in walk(dashboard()):
        if isinstance(node.get("datasource"), dict):
            assert uids[node["datasource"]["uid"]]["type"] == node["datasource"]["type"]


def test_dashboard_has_the_required_panels():
    board = dashboard()
    assert board["title"] == "RocksDB blob files"
    panels = {p["title"]: p for p in board["panels"]}
    exprs = {t: " ".join(x.get("expr", "") + x.get("query", "") for x in p["targets"]) for t, p in panels.items()}
    assert any("created_total" in e and "by (rocksdb_blob_file_reason)" in e for e in exprs.values())
    assert any("deleted_total" in e and "by (rocksdb_blob_file_reason)" in e for e in exprs.values())
    assert any("rocksdb_blob_file_live{" in e for e in exprs.values())
    assert any("rocksdb_blob_file_live_bytes{" in e for e in exprs.values())
    table = next(p for p in board["panels"] if p["type"] == "table" and p["datasource"]["uid"] == "loki")
    assert "rocksdb_event" in exprs[table["title"]]
    assert "${__value.raw}" in json.dumps(table["fieldConfig"]["overrides"]), "trace_id links to the trace"
    assert any(p["datasource"]["type"] == "tempo" for p in board["panels"]), "a panel of job traces"


def test_dashboard_queries_use_contract_names():
    keys, problems = contract_attribute_keys(), []
    language = {"prometheus": "promql", "loki": "logql", "tempo": "traceql"}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            query = target.get("expr") or target.get("query")
            problems += CHECKERS[language[target["datasource"]["type"]]](query, keys)
    assert not problems, problems


# --- README section and docs --------------------------------------------------------------------------
def readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_HEADING in text, "README.md lost its 'See it in Grafana' section"
    section = text[text.index(README_HEADING):]
    following = re.search(r"^## ", section[len(README_HEADING):], re.MULTILINE)
    return section[: len(README_HEADING) + following.start()] if following else section


def test_readme_section_has_commands_and_queries():
    section = readme_section()
    assert "docker compose up -d" in section and "OTEL_EXPORTER_OTLP_ENDPOINT" in section
    for language in ("logql", "traceql"):
        assert re.search(rf"```{language}\n", section), f"no {language} block"


def test_readme_queries_use_contract_names():
    keys, problems = contract_attribute_keys(), []
    for language, body in re.findall(r"```(logql|traceql|promql)\n(.*?)```", readme_section(), re.DOTALL):
        for query in filter(None, (line.strip() for line in body.splitlines())):
            problems += CHECKERS[language](query, keys)
    assert not problems, problems


def test_query_checks_reject_unknown_names():
    keys = contract_attribute_keys()
    assert logql_problems('{service_name="a"} | rocksdb_blob_number="4"', keys)
    assert logql_problems('{service_name="a"} | rocksdb_event="rocksdb.blob.created"', keys)
    assert logql_problems('{service_name="a"} | line_format "{{.rocksdb_size}}"', keys)
    assert traceql_problems('{ span.rocksdb.jobid = 1 }', keys)
    assert traceql_problems('{ name = "rocksdb.compact" }', keys)
    assert promql_problems("rate(rocksdb_blob_file_created[5m])", keys)
    assert not logql_problems('{service_name="a"} | rocksdb_event="rocksdb.blob_file.created"', keys)


def test_deployment_doc_lists_prometheus_names_and_security():
    doc = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for otel_name, prom_name in PROMETHEUS_NAMES.items():
        assert f"`{otel_name}`" in doc and f"`{prom_name}`" in doc, otel_name
    assert re.search(r"^## Security", doc, re.MULTILINE)
    assert re.search(r"^## What the tests verify", doc, re.MULTILINE)
