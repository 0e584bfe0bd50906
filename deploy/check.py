#!/usr/bin/env python3
"""Checks the deployment files in deploy/: they parse, and they refer only to things that exist.

    python3 deploy/check.py [--tollgate target/debug/tollgate]

Always: every YAML file parses; the dashboards are well-formed Grafana JSON (schema
version, unique panel ids, no overlapping panels, defined variables); the compose file
mounts files that exist; every `.Values.*` path the Helm templates use is in values.yaml.
When the tools are installed: promtool parses the scrape config, the alert rules and every
dashboard query; helm lints and renders the chart; systemd-analyze verifies the unit; and
`tollgate check` validates the compose config and the chart's default config.
Prints one line per check and exits non-zero if any failed. Needs PyYAML.
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

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
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
            if p["type"] == "row":
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


# === Helm ===

def values_paths(node, prefix=""):
    paths = set()
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else k
            paths.add(p)
            paths |= values_paths(v, p)
    return paths


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
    env = dict(os.environ, OPENAI_API_KEY="dummy")
    code, out = run([tollgate, "check", "-c", os.path.join(DEPLOY, "compose", "tollgate.yaml")], env=env)
    report("compose/tollgate.yaml (tollgate check)", [] if code == 0 else [out])
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
