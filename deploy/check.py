#!/usr/bin/env python3
"""Checks the deployment files in deploy/: they parse, and they refer only to things that exist.

    python3 deploy/check.py [--tollgate target/debug/tollgate]

Always: every YAML file parses; the Dockerfile's build stage copies every workspace member
and every file the sources include from outside their crate (and, with cargo installed,
Cargo loads the workspace from exactly what it copies); the dashboards are well-formed
Grafana JSON (schema version, unique panel ids, no overlapping panels, defined variables);
the compose file mounts files that exist and its gateway configs have the shape the
compose services expect; every `.Values.*` path the Helm templates use is in values.yaml,
and the templates, with their values filled in and their control lines left out, hold the
chart's objects (Deployment with probes, preStop drain and data volume, Services,
ConfigMap, HPA, PodDisruptionBudget). When the tools are installed: promtool parses the
scrape config, the alert rules and every dashboard query; helm lints and renders the
chart; systemd-analyze verifies the unit; and `tollgate check` validates the compose
configs and the chart's default config.
Prints one line per check and exits non-zero if any failed. Needs Python 3.11 (tomllib) and
PyYAML (Debian: python3-yaml; scripts/setup.sh installs it).
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
CHART = os.path.join(DEPLOY, "helm", "tollgate")
results = {"passed": 0, "failed": 0, "skipped": 0}


def report(name, problems):
    if problems:
        results["failed"] += 1
        print(f"FAIL {name}")
        for p in problems:
            print(f"     {p}")
    else:
        results["passed"] += 1
        print(f"ok   {name}")


def skip(name, why):
    results["skipped"] += 1
    print(f"skip {name}: {why}")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return r.returncode, (r.stdout + r.stderr).strip()


def rel(path):
    return os.path.relpath(path, DEPLOY)


# === YAML ===

def check_yaml():
    problems = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.y*ml"), recursive=True)):
        if os.sep + "templates" + os.sep in path:
            continue
        try:
            with open(path) as f:
                list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            problems.append(f"{rel(path)}: {e}")
    report("YAML files parse", problems)


# === Dockerfile ===

def workspace_members():
    """The workspace members' directories, relative to the repository root, as Cargo finds them."""
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        workspace = tomllib.load(f)["workspace"]
    excluded = set(workspace.get("exclude", []))
    members = []
    for pattern in workspace.get("members", []):
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            member = os.path.relpath(path, ROOT)
            if member not in excluded and os.path.isfile(os.path.join(path, "Cargo.toml")):
                members.append(member)
    return members


def build_stage_copies():
    """(source, destination) of each COPY from the build context in the Dockerfile's first
    stage, both relative to the context and to the stage's WORKDIR respectively."""
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        # Continuation lines joined, comments dropped.
        text = re.sub(r"\\\n", " ", "".join(l for l in f if not l.lstrip().startswith("#")))
    copies, stages = [], 0
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            stages += 1
        if stages != 1 or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        *sources, dest = args
        for source in sources:
            source = os.path.normpath(source)
            into = dest.endswith("/") or len(sources) > 1
            target = os.path.join(dest, os.path.basename(source)) if into else dest
            copies.append((source, os.path.normpath(target)))
    return copies


def copied_to(path, copies):
    """Where the image's build stage has `path` (relative to the context), or None."""
    for source, target in copies:
        if path == source or path.startswith(source + os.sep) or source == ".":
            rest = os.path.relpath(path, source)
            return os.path.normpath(os.path.join(target, rest))
    return None


def outside_includes(members):
    """Files that the members' sources include with include_str!/include_bytes! from
    outside the member's own directory, relative to the repository root."""
    found = set()
    for member in members:
        for path in glob.glob(os.path.join(ROOT, member, "src", "**", "*.rs"), recursive=True):
            with open(path) as f:
                text = f.read()
            for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
                target = os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(path), inc)), ROOT)
                if not (target + os.sep).startswith(member + os.sep):
                    found.add(target)
    return sorted(found)


def check_dockerfile():
    copies = build_stage_copies()
    members = workspace_members()
    problems = []
    needed = ["Cargo.toml", "Cargo.lock", *members, *outside_includes(members)]
    for path in needed:
        where = copied_to(path, copies)
        if where is None:
            problems.append(f"the build stage does not COPY {path}")
        elif where != path:
            problems.append(f"the build stage copies {path} to {where}, not to {path}")
    report(f"Dockerfile copies the workspace ({len(members)} members)", problems)

    cargo = shutil.which("cargo")
    if problems or not cargo:
        if not problems:
            skip("Cargo loads the Dockerfile's copy of the workspace", "cargo not installed")
        return
    # The build context as the build stage sees it: Cargo must load every member's
    # manifest from it, as `cargo build --locked` in the image does first.
    with tempfile.TemporaryDirectory() as d:
        for source, target in copies:
            src, dst = os.path.join(ROOT, source), os.path.join(d, target)
            if os.path.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("target", ".git"))
            elif os.path.exists(src):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(src, dst)
        # A CARGO_HOME of its own: loading manifests needs no registry, and the shared
        # one's package cache lock may be held by a build running meanwhile.
        env = dict(os.environ, CARGO_HOME=os.path.join(d, ".cargo-home"))
        code, out = run([cargo, "metadata", "--no-deps", "--offline", "--format-version", "1",
                         "--manifest-path", os.path.join(d, "Cargo.toml")], env=env)
    report("Cargo loads the Dockerfile's copy of the workspace (cargo metadata)",
           [] if code == 0 else [out])


# === dashboards ===

def dashboard_queries():
    """Every (dashboard, panel title, expr) and the structural problems found on the way."""
    problems, queries = [], []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "grafana", "dashboards", "*.json"))):
        name = os.path.basename(path)
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            problems.append(f"{name}: {e}")
            continue
        if d.get("schemaVersion", 0) < 36:
            problems.append(f"{name}: schemaVersion {d.get('schemaVersion')} < 36")
        variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
        before = len(queries)
        ids, cells = set(), {}
        for p in d.get("panels", []):
            title = p.get("title", "?")
            if p.get("id") in ids:
                problems.append(f"{name}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            g = p["gridPos"]
            if g["x"] + g["w"] > 24:
                problems.append(f"{name}: '{title}' is wider than the grid")
            overlap = next(((x, y) for x in range(g["x"], g["x"] + g["w"])
                            for y in range(g["y"], g["y"] + g["h"]) if (x, y) in cells), None)
            if overlap:
                problems.append(f"{name}: '{title}' overlaps '{cells[overlap]}'")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    cells[(x, y)] = title
            # Rows and text panels query nothing, so they need no datasource.
            if p["type"] in ("row", "text"):
                continue
            if p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{name}: '{title}' does not use the datasource variable")
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                for v in re.findall(r"\$(\w+)", expr):
                    if not v.startswith("__") and v not in variables:
                        problems.append(f"{name}: '{title}' uses undefined variable ${v}")
                queries.append((name, title, expr))
        if len(queries) == before:
            problems.append(f"{name}: no queries")
    return problems, queries


def concrete(expr):
    """A dashboard expression with Grafana's variables replaced, as Prometheus would get it."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
    return re.sub(r'=~"\$\w+"', '=~".*"', expr)


def check_dashboards():
    problems, queries = dashboard_queries()
    report(f"dashboards are well-formed ({len(queries)} queries)", problems)
    if not shutil.which("promtool"):
        skip("dashboard queries parse", "promtool not installed")
        return
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, (_, _, e) in enumerate(queries)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)
    code, out = run(["promtool", "check", "rules", f.name])
    os.unlink(f.name)
    report("dashboard queries parse (promtool)", [] if code == 0 else [out])


# === Prometheus ===

def check_prometheus():
    if not shutil.which("promtool"):
        skip("Prometheus config and rules", "promtool not installed")
        return
    code, out = run(["promtool", "check", "rules", *glob.glob(os.path.join(DEPLOY, "prometheus", "rules", "*.yml"))])
    report("alert rules (promtool)", [] if code == 0 else [out])
    with open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")) as f:
        text = f.read()
    # The config names the rules by their path in the Prometheus container.
    text = text.replace("/etc/prometheus/rules", os.path.join(DEPLOY, "prometheus", "rules"))
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(text)
    code, out = run(["promtool", "check", "config", f.name])
    os.unlink(f.name)
    report("scrape config (promtool)", [] if code == 0 else [out])


# === compose ===

def check_compose():
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    problems = []
    services = compose.get("services", {})
    for want in ["gateway", "mock-a", "mock-b", "prometheus", "grafana", "redis", "postgres"]:
        if want not in services:
            problems.append(f"service {want} missing")
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            dockerfile = os.path.join(DEPLOY, build["context"], build["dockerfile"])
            if not os.path.isfile(dockerfile):
                problems.append(f"{name}: no Dockerfile at {dockerfile}")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                if not os.path.exists(os.path.join(DEPLOY, source)):
                    problems.append(f"{name}: mounts missing {source}")
            elif source not in compose.get("volumes", {}):
                problems.append(f"{name}: undeclared volume {source}")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
    with open(os.path.join(DEPLOY, "grafana", "provisioning", "dashboards", "tollgate.yaml")) as f:
        provider = yaml.safe_load(f)["providers"][0]["options"]["path"]
    if not any(v.endswith(":" + provider + ":ro") for v in services.get("grafana", {}).get("volumes", [])):
        problems.append(f"grafana: the dashboard provider's path {provider} is not mounted")
    report("compose file refers to existing files and services", problems)
    check_compose_configs(compose)


def compose_configs(compose):
    """(service, config path) for each compose service that runs the gateway on a mounted config."""
    found = []
    for name, svc in compose.get("services", {}).items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if target == "/etc/tollgate/tollgate.yaml":
                found.append((name, os.path.join(DEPLOY, source)))
    return found


def url_host(url):
    m = re.match(r"^\w+://(?:[^@/]*@)?([^:/]+)", url or "")
    return m.group(1) if m else None


def check_compose_configs(compose):
    """The gateway configs fit the services that run them: listeners on the published
    ports, providers and state stores that are services of the stack, started first and
    in the same profiles, every ${VAR} set in the service's environment."""
    services = compose.get("services", {})
    problems = []
    backends = {}
    for name, path in compose_configs(compose):
        svc = services[name]
        with open(path) as f:
            text = f.read()
        config = yaml.safe_load(text)
        server = config.get("server", {})
        published = {p.rsplit(":", 1)[-1] for p in svc.get("ports", [])}
        for address in [*server.get("listen", []), server.get("admin_listen", "")]:
            if not address.startswith("0.0.0.0:") or address.rsplit(":", 1)[-1] not in published:
                problems.append(f"{name}: {address} is not a published port on all interfaces")
        depends = svc.get("depends_on", {})
        profiles = set(svc.get("profiles", []))
        hosts = [url_host(e) for p in config.get("providers", {}).values() for e in p.get("endpoints", [])]
        state, ledger = config.get("state") or {}, config.get("ledger") or {}
        keys = config.get("managed_keys") or {}
        if state.get("backend") == "redis":
            hosts.append(url_host(state.get("url")))
        if ledger.get("sink") == "postgres":
            hosts.append(url_host(ledger.get("url")))
        if keys.get("store") == "postgres":
            hosts.append(url_host(keys.get("url")))
        backends[name] = (state.get("backend", "memory"), ledger.get("sink", "sqlite"))
        for host in hosts:
            if host not in services:
                problems.append(f"{name}: {host} is not a compose service")
            elif host not in depends:
                problems.append(f"{name}: does not depend on {host}")
            elif not set(services[host].get("profiles", [])) <= profiles:
                problems.append(f"{name}: {host} is in a profile {name} is not")
        env = svc.get("environment", {})
        for var in sorted(set(re.findall(r"\$\{(\w+)", text))):
            if var not in env:
                problems.append(f"{name}: ${{{var}}} is not in the service's environment")
    if ("redis", "postgres") not in backends.values():
        problems.append("no compose gateway keeps its state in Redis and its ledger in PostgreSQL")
    report(f"compose gateway configs fit their services ({', '.join(sorted(backends))})", problems)


# === Helm ===

def values_paths(node, prefix=""):
    paths = set()
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else k
            paths.add(p)
            paths |= values_paths(v, p)
    return paths


# A template line that holds only actions ({{- if }}, {{- end }}, {{- toYaml … | nindent }}):
# left out, so both branches of an if appear and with-blocks stay empty. An indented
# include (labels, selectors) becomes one placeholder entry, so the mapping it fills is
# not empty.
ACTION_LINE = re.compile(r"^\s*(\{\{.*?\}\}\s*)+$")
INCLUDE_LINE = re.compile(r'^\s*\{\{-?\s*include\s+"([^"]+)"\s+\.\s*\|\s*nindent\s+(\d+)\s*-?\}\}\s*$')
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
SIMPLE_VALUE = re.compile(r"^\.Values\.([A-Za-z0-9_.]+)(\s*\|\s*quote)?$")


def lookup(values, path):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def raw_render(text, values):
    """The template's YAML without a template engine: action-only lines dropped, indented
    includes as one placeholder entry, a plain `.Values.x` (optionally `| quote`) replaced
    by its value, any other action by `tpl`."""
    def fill(m):
        simple = SIMPLE_VALUE.match(m.group(1))
        value = lookup(values, simple.group(1)) if simple else None
        if value is None or isinstance(value, (dict, list)):
            return "tpl"
        return json.dumps(str(value)) if simple.group(2) else str(value)
    lines = []
    for line in text.splitlines():
        include = INCLUDE_LINE.match(line)
        if include:
            lines.append(" " * int(include.group(2)) + f"{include.group(1)}: tpl")
        elif not ACTION_LINE.match(line):
            lines.append(ACTION.sub(fill, line))
    return "\n".join(lines)


def chart_objects(values):
    """{kind: [object, ...]} from the raw templates, and the problems parsing them."""
    objects, problems = {}, []
    for path in sorted(glob.glob(os.path.join(CHART, "templates", "*.yaml"))):
        with open(path) as f:
            text = raw_render(f.read(), values)
        try:
            docs = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as e:
            problems.append(f"{os.path.basename(path)}: not YAML once its actions are left out: {e}")
            continue
        for d in docs:
            objects.setdefault(d.get("kind"), []).append(d)
    return objects, problems


def dig(node, *path):
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and len(node) > part else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def check_chart_structure(values):
    objects, problems = chart_objects(values)
    for kind in ["Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"]:
        if kind not in objects:
            problems.append(f"no {kind} in the templates")
    deployment = (objects.get("Deployment") or [{}])[0]
    pod = dig(deployment, "spec", "template", "spec") or {}
    container = dig(pod, "containers", 0) or {}
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    if ports.get("admin") != dig(values, "ports", "admin"):
        problems.append(f"container port admin is {ports.get('admin')}, not ports.admin")
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = dig(container, probe, "httpGet") or {}
        if get.get("path") != path or get.get("port") != "admin":
            problems.append(f"{probe} is {get or 'missing'}, not GET {path} on the admin port")
    pre_stop = dig(container, "lifecycle", "preStop", "exec", "command") or []
    if pre_stop[:1] != ["sleep"] or not str(pre_stop[-1]).isdigit() or int(pre_stop[-1]) <= 0:
        problems.append(f"lifecycle.preStop does not sleep before the drain: {pre_stop}")
    # The pod is killed at the end of the grace period: it must cover the preStop sleep,
    # the gateway's default drain (server.shutdown_grace 300 s) and shutdown_timeout (5 s).
    grace, sleep = pod.get("terminationGracePeriodSeconds"), values.get("preStopSleepSeconds", 0)
    if not isinstance(grace, int) or grace < sleep + 300 + 5:
        problems.append(f"terminationGracePeriodSeconds {grace} < preStop {sleep} s + 305 s of drain")
    mounts = {m.get("name"): m.get("mountPath") for m in container.get("volumeMounts") or []}
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for name, where in [("data", "/var/lib/tollgate"), ("config", "/etc/tollgate"), ("tmp", "/tmp")]:
        if mounts.get(name) != where or name not in volumes:
            problems.append(f"volume {name} is not mounted at {where}")
    for service in objects.get("Service", []):
        for port in dig(service, "spec", "ports") or []:
            if port.get("targetPort") not in ports:
                problems.append(f"a Service targets port {port.get('targetPort')}, which the container lacks")
    hpa = (objects.get("HorizontalPodAutoscaler") or [{}])[0]
    if dig(hpa, "spec", "scaleTargetRef", "kind") != "Deployment":
        problems.append("the HPA does not scale the Deployment")
    pdb = (objects.get("PodDisruptionBudget") or [{}])[0]
    if not dig(pdb, "spec", "selector", "matchLabels"):
        problems.append("the PodDisruptionBudget selects no pods")
    config_map = (objects.get("ConfigMap") or [{}])[0]
    if "tollgate.yaml" not in (config_map.get("data") or {}):
        problems.append("the ConfigMap has no tollgate.yaml")
    report("chart templates hold the objects, probes, preStop drain and volumes (without helm)", problems)


def check_helm():
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    known = values_paths(values)
    problems = []
    for path in sorted(glob.glob(os.path.join(CHART, "templates", "*"))):
        with open(path) as f:
            text = f.read()
        for ref in sorted(set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text))):
            if ref not in known:
                problems.append(f"{os.path.basename(path)}: .Values.{ref} is not in values.yaml")
    report("chart templates use only values that exist", problems)
    check_chart_structure(values)

    helm = shutil.which("helm")
    if not helm:
        skip("helm lint and render", "helm not installed")
        return
    code, out = run([helm, "lint", "--strict", CHART])
    report("helm lint --strict", [] if code == 0 else [out])
    code, out = run([helm, "template", "check", CHART])
    docs = [d for d in yaml.safe_load_all(out) if d] if code == 0 else []
    kinds = sorted(d["kind"] for d in docs)
    want = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"]
    report("helm template renders the default objects",
           [] if kinds == want else [out if code else f"kinds {kinds}, expected {want}"])
    everything = ["--set", "autoscaling.enabled=true", "--set", "autoscaling.activeStreams.enabled=true",
                  "--set", "metrics.serviceMonitor.enabled=true", "--set", "providerKeys.values.OPENAI_API_KEY=x"]
    code, out = run([helm, "template", "check", CHART, *everything])
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d) if code == 0 else []
    extra = {"HorizontalPodAutoscaler", "ServiceMonitor", "Secret"}
    report("helm template renders the optional objects", [] if extra <= set(kinds) else [out or str(kinds)])
    code, out = run([helm, "template", "check", CHART, "--set-string",
                     "config=server: { admin_listen: 127.0.0.1:9090 }"])
    report("helm refuses an admin listener on loopback", [] if code != 0 else ["rendered"])


# === systemd ===

def check_systemd(tollgate):
    tool = shutil.which("systemd-analyze")
    if not tool:
        skip("systemd unit", "systemd-analyze not installed")
        return
    with open(os.path.join(DEPLOY, "systemd", "tollgate.service")) as f:
        unit = f.read()
    if tollgate:
        # verify insists that ExecStart's binary exists.
        unit = unit.replace("/usr/local/bin/tollgate", os.path.abspath(tollgate))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tollgate.service")
        with open(path, "w") as f:
            f.write(unit)
        code, out = run([tool, "verify", "--man=no", path])
    problems = [line for line in out.splitlines() if line and (tollgate or "is not executable" not in line)]
    report("systemd unit (systemd-analyze verify)", problems)


# === gateway configs ===

def check_configs(tollgate):
    if not tollgate:
        skip("gateway configs (tollgate check)", "no tollgate binary given")
        return
    env = dict(os.environ, OPENAI_API_KEY="dummy", POSTGRES_PASSWORD="dummy")
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    for _, path in compose_configs(compose):
        code, out = run([tollgate, "check", "-c", path], env=env)
        report(f"{rel(path)} (tollgate check)", [] if code == 0 else [out])
    with open(os.path.join(CHART, "values.yaml")) as f:
        config = yaml.safe_load(f)["config"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    code, out = run([tollgate, "check", "-c", f.name], env=env)
    os.unlink(f.name)
    report("chart's default config (tollgate check)", [] if code == 0 else [out])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tollgate", help="path of a built tollgate binary")
    args = parser.parse_args()
    tollgate = args.tollgate
    if tollgate and not os.access(tollgate, os.X_OK):
        parser.error(f"{tollgate} is not an executable")
    check_yaml()
    check_dockerfile()
    check_dashboards()
    check_prometheus()
    check_compose()
    check_helm()
    check_systemd(tollgate)
    check_configs(tollgate)
    print(f"deploy: {results['passed']} passed, {results['failed']} failed, {results['skipped']} skipped")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
