#!/usr/bin/env python3
"""Turns the suite's JSON results (bench/results/*.json) into bench/RESULTS.md tables and
PNG plots under bench/results/. Tables need only the standard library; plots need
matplotlib (bench/run.sh installs it in bench/.venv-plot) and are skipped without it.

Every figure is the median over a scenario's runs; ratios compare medians.
"""
import argparse
import glob
import json
import os
import statistics
import sys
import time

BASELINE_ORDER = ["direct", "nginx", "pingora", "litellm"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}{unit}"
    return f"{v:,.0f}{unit}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


def us(v):
    """Microseconds, shown in µs below 10 ms and in ms above."""
    if v is None:
        return "–"
    if abs(v) >= 10_000:
        return f"{v / 1000:,.1f} ms"
    return f"{v:,.0f} µs"


def mock_tokens(mock):
    if mock.get("reply"):
        return f"a fixed reply of {len(mock['reply'].split())} words"
    if mock.get("pad"):
        return f"{mock['tokens']} tokens of {mock['pad']:,} bytes"
    return f"{mock['tokens']} tokens"


def load_kind(spec):
    if spec.get("stalled"):
        return "soak"
    if spec.get("stream") and spec.get("count"):
        return "memory"
    if spec.get("stream"):
        return "stream"
    if spec.get("mode") == "open" or spec.get("concurrency") == 1:
        return "latency"
    return "throughput"


class Scenario:
    def __init__(self, doc):
        self.doc = doc
        self.name = doc["scenario"]
        self.systems = [s["name"] for s in doc["systems"]]
        self.by = {}
        for r in doc["results"]:
            self.by.setdefault((r["system"], r["load"]), []).append(r["result"])
        self.loads = []
        for r in doc["results"]:
            if r["load"] not in [l for l, _ in self.loads]:
                self.loads.append((r["load"], r["result"]["spec"]))

    def runs(self, system, load):
        return self.by.get((system, load), [])

    def med(self, system, load, getter):
        vals = []
        for r in self.runs(system, load):
            try:
                vals.append(getter(r))
            except (KeyError, TypeError):
                pass
        return median(vals)

    def errors(self, system, load):
        total = {}
        for r in self.runs(system, load):
            for k, n in r["errors"].items():
                total[k] = total.get(k, 0) + n
        sent = sum(r["sent"] for r in self.runs(system, load))
        if not total:
            return "0"
        return ", ".join(f"{k} {n}" for k, n in sorted(total.items())) + f" of {sent:,}"


def tput(s, sys_, load):
    return s.med(sys_, load, lambda r: r["throughput_rps"])


def throughput_table(s, load, out):
    out.append("| system | req/s (median) | runs (min–max) | vs pingora | vs nginx | vs direct | p50 | p99 | errors |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for sys_ in s.systems:
        runs = s.runs(sys_, load)
        if not runs:
            continue
        t = tput(s, sys_, load)
        vals = [r["throughput_rps"] for r in runs]
        out.append(
            f"| {sys_} | {fmt(t)} | {fmt(min(vals))}–{fmt(max(vals))} | {ratio(t, tput(s, 'pingora', load))} "
            f"| {ratio(t, tput(s, 'nginx', load))} | {ratio(t, tput(s, 'direct', load))} "
            f"| {us(s.med(sys_, load, lambda r: r['latency_us']['p50']))} "
            f"| {us(s.med(sys_, load, lambda r: r['latency_us']['p99']))} | {s.errors(sys_, load)} |"
        )


def latency_table(s, load, out):
    out.append("| system | req/s | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | send lag p99 | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    q = lambda k: (lambda r: r["latency_us"][k])
    for sys_ in s.systems:
        if not s.runs(sys_, load):
            continue
        row = [s.med(sys_, load, q(k)) for k in ("p50", "p99", "p999")]
        base = [s.med("direct", load, q(k)) for k in ("p50", "p99", "p999")]
        added = [None if a is None or b is None else a - b for a, b in zip(row, base)]
        if sys_ == "direct":
            added = [None, None, None]
        lag = s.med(sys_, load, lambda r: r["send_lag_us"]["p99"]) if s.runs(sys_, load)[0]["spec"]["mode"] == "open" else None
        out.append(
            f"| {sys_} | {fmt(tput(s, sys_, load))} | " + " | ".join(us(v) for v in row) + " | "
            + " | ".join(us(v) for v in added) + f" | {us(lag)} | {s.errors(sys_, load)} |"
        )


def stream_table(s, load, out):
    out.append("| system | streams | TTFT p50 | TTFT p99 | added TTFT p99 | gap p50 | gap p99 | added gap p99 | clean | lost | merged | coalesced | CPU µs/token | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    st = lambda f: (lambda r: f(r["stream"]))
    for sys_ in s.systems:
        runs = s.runs(sys_, load)
        if not runs:
            continue
        ttft50 = s.med(sys_, load, st(lambda x: x["ttft_us"]["p50"]))
        ttft99 = s.med(sys_, load, st(lambda x: x["ttft_us"]["p99"]))
        gap50 = s.med(sys_, load, st(lambda x: x["gap_us"]["p50"]))
        gap99 = s.med(sys_, load, st(lambda x: x["gap_us"]["p99"]))
        d_ttft = s.med("direct", load, st(lambda x: x["ttft_us"]["p99"]))
        d_gap = s.med("direct", load, st(lambda x: x["gap_us"]["p99"]))
        streams = sum(r["stream"]["streams"] for r in runs)
        clean = sum(r["stream"]["clean"] for r in runs)
        lost = sum(r["stream"]["lost_tokens"] for r in runs)
        merged = sum(r["stream"]["merged_events"] for r in runs)
        coal = sum(r["stream"]["coalesced_events"] for r in runs)
        cpu = s.med(sys_, load, cpu_per_token)
        out.append(
            f"| {sys_} | {streams:,} | {us(ttft50)} | {us(ttft99)} | "
            f"{'–' if sys_ == 'direct' or d_ttft is None else us(ttft99 - d_ttft)} | {us(gap50)} | {us(gap99)} | "
            f"{'–' if sys_ == 'direct' or d_gap is None else us(gap99 - d_gap)} | {clean:,}/{streams:,} | {lost} | {merged} | {coal} | "
            f"{fmt(cpu, 2)} | {s.errors(sys_, load)} |"
        )


def cpu_per_token(r):
    tokens = r["stream"]["tokens"]
    if not tokens or not r.get("usage"):
        return None
    return r["usage"]["cpu_seconds"] * 1e6 / tokens


def memory_rows(s):
    rows = []
    for load, spec in s.loads:
        for sys_ in s.systems:
            for r in s.runs(sys_, load):
                u = r.get("usage") or {}
                n = u.get("open_peak", 0)
                peak = u.get("rss_at_open_peak_kb", 0)
                idle = u.get("rss_idle_kb", 0)
                rows.append({
                    "system": sys_, "load": load, "target": spec.get("count"), "open": n,
                    "idle": idle, "peak": peak, "after": u.get("rss_after_kb", 0),
                    "per_stream": (peak - idle) / n if n else None,
                    "cpu": u.get("cpu_share_at_open_peak"),
                    "clean": r["stream"]["clean"], "streams": r["stream"]["streams"],
                    "errors": r["errors"], "samples": r.get("samples", []),
                })
    return rows


def slope(points):
    """Least-squares slope of (x, y) points."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / den


def memory_table(s, out):
    rows = memory_rows(s)
    out.append("| system | streams held | RSS idle | RSS all open | KiB/stream | RSS 3 s after | after vs idle | CPU at plateau | clean | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        after_pct = f"{(r['after'] / r['idle'] - 1) * 100:+.0f}%" if r["idle"] else "–"
        errs = ", ".join(f"{k} {n}" for k, n in sorted(r["errors"].items())) or "0"
        cpu = "–" if r["cpu"] is None else f"{r['cpu'] * 100:.0f}%"
        out.append(
            f"| {r['system']} | {r['open']:,} of {r['target']:,} | {fmt(r['idle'] / 1024, 1, ' MiB')} | {fmt(r['peak'] / 1024, 1, ' MiB')} "
            f"| {fmt(r['per_stream'], 1)} | {fmt(r['after'] / 1024, 1, ' MiB')} | {after_pct} | "
            f"{cpu} | {r['clean']:,}/{r['streams']:,} | {errs} |"
        )
    out.append("")
    out.append("Per-stream slope (least squares over the levels, RSS with all streams open) and the")
    out.append("sizing rule it gives for 100k streams (idle + slope × 100,000; several processes")
    out.append("are needed past ~9.9k streams each with HTTP/1 upstreams, see deploy/TUNING.md):")
    out.append("")
    out.append("| system | KiB per stream (slope) | idle | 100k streams ≈ |")
    out.append("|---|---:|---:|---:|")
    for sys_ in s.systems:
        pts = [(r["open"], r["peak"]) for r in rows if r["system"] == sys_ and r["open"]]
        k = slope(pts)
        idle = median([r["idle"] for r in rows if r["system"] == sys_])
        if k is None or idle is None:
            continue
        out.append(f"| {sys_} | {k:.1f} | {idle / 1024:.1f} MiB | {(idle + k * 100_000) / 1024 / 1024:.2f} GiB |")
    return rows


def soak_rows(s):
    rows = []
    for load, spec in s.loads:
        for sys_ in s.systems:
            for r in s.runs(sys_, load):
                u = r.get("usage") or {}
                st = r.get("stalled") or {}
                rows.append({"system": sys_, "load": load, "spec": spec, "u": u, "st": st, "r": r})
    return rows


def soak_growth(row):
    """RSS growth over the measured part as a share of the RSS at its start."""
    u, spec = row["u"], row["spec"]
    k, first = u.get("steady_rss_slope_kb_per_min"), u.get("steady_rss_first_kb")
    if k is None or not first:
        return None
    return k * duration_s(spec["duration"]) / 60 / first


def duration_s(text):
    """Seconds in a humantime duration such as `2m`, `120s` or `1m 30s`."""
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    total, num = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        if c == " ":
            i += 1
            continue
        unit = ""
        while i < len(text) and text[i].isalpha():
            unit += text[i]
            i += 1
        total += float(num or 0) * units.get(unit, 1)
        num = ""
    return total


def soak_table(s, out):
    rows = soak_rows(s)
    out.append("| system | streams done | clean | errors | RSS idle | RSS at warm-up end | RSS at end | slope | growth over the run | RSS 3 s after | CPU |")
    out.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    mib = lambda kb: fmt((kb or 0) / 1024, 1, " MiB")
    for row in rows:
        r, u = row["r"], row["u"]
        k = u.get("steady_rss_slope_kb_per_min")
        g = soak_growth(row)
        out.append(
            f"| {row['system']} | {r['sent']:,} | {r['stream']['clean']:,} | {s.errors(row['system'], row['load'])} "
            f"| {mib(u.get('rss_idle_kb'))} | {mib(u.get('steady_rss_first_kb'))} | {mib(u.get('steady_rss_last_kb'))} "
            f"| {'–' if k is None else f'{k:+,.0f} KiB/min'} | {'–' if g is None else f'{g * 100:+.1f}%'} "
            f"| {mib(u.get('rss_after_kb'))} | {u.get('cpu_share', 0) * 100:.0f}% |"
        )
    out.append("")
    out.append("| system | stalled streams | closed by the gateway | close after p50 | close after max | still open at the client's timeout | failed |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        st = row["st"]
        if not st:
            continue
        ca = st.get("close_after_ms") or {}
        errs = ", ".join(f"{k} {n}" for k, n in sorted((st.get("errors") or {}).items())) or "0"
        sec = lambda ms: "–" if not ms else f"{ms / 1000:.1f} s"
        out.append(
            f"| {row['system']} | {st.get('stalled', 0):,} | {st.get('closed_by_server', 0):,} | {sec(ca.get('p50'))} "
            f"| {sec(ca.get('max'))} | {st.get('held_to_timeout', 0):,} | {errs} |"
        )
    return rows


def features_table(s, out):
    tp_load = next((l for l, spec in s.loads if load_kind(spec) == "throughput"), None)
    st_load = next((l for l, spec in s.loads if load_kind(spec) == "stream"), None)
    out.append("| system | req/s (plain, median) | vs pingora | p99 | stream CPU µs/token | vs pingora | stream clean |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    base_cpu = s.med("pingora", st_load, cpu_per_token) if st_load else None
    for sys_ in s.systems:
        t = tput(s, sys_, tp_load) if tp_load else None
        cpu = s.med(sys_, st_load, cpu_per_token) if st_load else None
        runs = s.runs(sys_, st_load) if st_load else []
        clean = sum(r["stream"]["clean"] for r in runs)
        streams = sum(r["stream"]["streams"] for r in runs)
        out.append(
            f"| {sys_} | {fmt(t)} | {ratio(t, tput(s, 'pingora', tp_load)) if tp_load else '–'} "
            f"| {us(s.med(sys_, tp_load, lambda r: r['latency_us']['p99'])) if tp_load else '–'} "
            f"| {fmt(cpu, 2)} | {ratio(cpu, base_cpu)} | {clean:,}/{streams:,} |"
        )


# === Feature on vs off (scenarios with a baseline, and the cache) ===

def diff(a, b):
    return None if a is None or b is None else a - b


def cache_mix(s, sys_, load):
    """Share of the measured answers by `x-tollgate-cache` value, over every run."""
    total = {}
    for r in s.runs(sys_, load):
        for k, n in (r.get("cache") or {}).items():
            total[k] = total.get(k, 0) + n
    n = sum(total.values())
    if not n:
        return "–"
    return ", ".join(f"{k} {v / n * 100:.2f}% ({v:,})" for k, v in sorted(total.items(), key=lambda kv: -kv[1]))


def cpu_per_request(r):
    if not r.get("usage") or not r["ok"]:
        return None
    return r["usage"]["cpu_seconds"] * 1e6 / r["ok"]


def cpu_per_sent_token(r):
    """CPU time over every token the mock sent to the measured streams (the same
    denominator for every system, whatever a redactor replaced)."""
    st = r["stream"]
    n = st["streams"] * st["expected_tokens"]
    if not n or not r.get("usage"):
        return None
    return r["usage"]["cpu_seconds"] * 1e6 / n


def compare_tables(s, out):
    """One table per load: each system against `direct` and against the scenario's
    baseline (the gateway with the feature off)."""
    base = s.doc.get("baseline")
    bname = base or "direct"
    for load, spec in s.loads:
        desc = f"{spec['mode']} loop, HTTP/{spec['http']}"
        if spec.get("rate"):
            desc += f", {spec['rate']:,.0f}/s"
        if spec["mode"] == "closed":
            desc += f", concurrency {spec['concurrency']}"
        if spec.get("stream"):
            desc += ", streamed"
        if spec.get("max_tokens"):
            desc += f", max_tokens {spec['max_tokens']}"
        if spec.get("unique_prompts"):
            desc += ", a unique prompt per request"
        out.append(f"### {load} ({desc}, {spec['duration']} measured)")
        out.append("")
        if spec.get("stream"):
            stream_compare(s, load, base, bname, out)
        else:
            plain_compare(s, load, base, bname, out)
        out.append("")


def plain_compare(s, load, base, bname, out):
    q = lambda k: (lambda r: r["latency_us"][k])
    vs = f"vs {bname} | " if base else ""
    out.append(f"| system | req/s (median) | runs (min–max) | {vs}vs direct | p50 | p99 | added p50 vs {bname} | added p99 vs {bname} | CPU µs/req | cache | errors |")
    out.append("|---|---:|---|" + ("---:|" if base else "") + "---:|---:|---:|---:|---:|---:|---|---|")
    for sys_ in s.systems:
        runs = s.runs(sys_, load)
        if not runs:
            continue
        t = tput(s, sys_, load)
        vals = [r["throughput_rps"] for r in runs]
        p50, p99 = s.med(sys_, load, q("p50")), s.med(sys_, load, q("p99"))
        b50, b99 = s.med(bname, load, q("p50")), s.med(bname, load, q("p99"))
        own = sys_ in (bname, "direct")
        out.append(
            f"| {sys_} | {fmt(t)} | {fmt(min(vals))}–{fmt(max(vals))} | "
            + (f"{ratio(t, tput(s, bname, load))} | " if base else "")
            + f"{ratio(t, tput(s, 'direct', load))} | {us(p50)} | {us(p99)} "
            f"| {'–' if own else us(diff(p50, b50))} | {'–' if own else us(diff(p99, b99))} "
            f"| {fmt(s.med(sys_, load, cpu_per_request), 1)} | {cache_mix(s, sys_, load)} | {s.errors(sys_, load)} |"
        )


def stream_compare(s, load, base, bname, out):
    st = lambda f: (lambda r: f(r["stream"]))
    out.append(f"| system | streams | TTFT p50 | TTFT p99 | added TTFT p50 / p99 vs {bname} | gap p50 | gap p99 | added gap p50 / p99 vs {bname} | CPU µs/token | vs {bname} | complete | masks/stream | words replaced | merged | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    bcpu = s.med(bname, load, cpu_per_sent_token)
    for sys_ in s.systems:
        runs = s.runs(sys_, load)
        if not runs:
            continue
        v = {k: s.med(sys_, load, st(lambda x, k=k: x[k.split(".")[0]][k.split(".")[1]]))
             for k in ("ttft_us.p50", "ttft_us.p99", "gap_us.p50", "gap_us.p99")}
        b = {k: s.med(bname, load, st(lambda x, k=k: x[k.split(".")[0]][k.split(".")[1]]))
             for k in v}
        own = sys_ in (bname, "direct")
        added = lambda k50, k99: "–" if own else f"{us(diff(v[k50], b[k50]))} / {us(diff(v[k99], b[k99]))}"
        streams = sum(r["stream"]["streams"] for r in runs)
        complete = sum(r["stream"]["streams"] - r["stream"]["incomplete"] - r["stream"]["errored"] for r in runs)
        masks = sum(r["stream"].get("masks", 0) for r in runs)
        lost = sum(r["stream"]["lost_tokens"] for r in runs)
        merged = sum(r["stream"]["merged_events"] for r in runs)
        cpu = s.med(sys_, load, cpu_per_sent_token)
        out.append(
            f"| {sys_} | {streams:,} | {us(v['ttft_us.p50'])} | {us(v['ttft_us.p99'])} | {added('ttft_us.p50', 'ttft_us.p99')} "
            f"| {us(v['gap_us.p50'])} | {us(v['gap_us.p99'])} | {added('gap_us.p50', 'gap_us.p99')} "
            f"| {fmt(cpu, 2)} | {ratio(cpu, bcpu)} | {complete:,}/{streams:,} "
            f"| {masks / streams if streams else 0:.2f} | {lost / streams if streams else 0:.2f} | {merged:,} | {s.errors(sys_, load)} |"
        )


def cache_summary(s, out):
    """The cache scenario in one table: hits and misses side by side."""
    rows = [
        ("mock direct", "direct", "fixed"),
        ("exact hit", "tollgate-cache", "fixed"),
        ("semantic hit", "tollgate-semantic", "unique"),
        ("miss (looked up, forwarded, stored)", "tollgate-cache", "unique"),
        ("no cache on the route", "tollgate", "unique"),
    ]
    miss_t = tput(s, "tollgate-cache", "unique-c64")
    miss_p50 = s.med("tollgate-cache", "unique-c1", lambda r: r["latency_us"]["p50"])
    out.append("| answered by | req/s, 64 clients | vs miss | vs direct | p50, 1 client | p99, 1 client | p50 vs miss | answers that were hits |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, sys_, kind in rows:
        c64, c1 = f"{kind}-c64", f"{kind}-c1"
        if not s.runs(sys_, c64) and not s.runs(sys_, c1):
            continue
        t = tput(s, sys_, c64)
        p50 = s.med(sys_, c1, lambda r: r["latency_us"]["p50"])
        p99 = s.med(sys_, c1, lambda r: r["latency_us"]["p99"])
        mix = "–" if sys_ in ("direct", "tollgate") else f"{cache_mix(s, sys_, c64)} (64 clients); {cache_mix(s, sys_, c1)} (1 client)"
        out.append(
            f"| {label} | {fmt(t)} | {ratio(t, miss_t)} | {ratio(t, tput(s, 'direct', c64))} "
            f"| {us(p50)} | {us(p99)} | {us(diff(p50, miss_p50))} | {mix} |"
        )
    out.append("")


# === Targets ===

def targets_section(scenarios, out):
    """The issue's targets, each with the measured figure and whether it is met."""
    by = {s.name: s for s in scenarios}
    rows = []

    def add(target, value, ok, shown):
        status = "not measured" if value is None else ("met" if ok(value) else "**missed**")
        rows.append(f"| {target} | {shown if value is not None else '–'} | {status} |")

    a, b, c64, c256, d, e = (by.get(n) for n in ("a-max-rate", "b-added-latency", "c-stream-64", "c-stream-256", "d-many-streams", "e-features"))
    def r(x, y):
        return None if x is None or not y else x / y
    if e:
        v = r(tput(e, "tollgate", "h1-c64"), tput(e, "pingora", "h1-c64"))
        add("plain max throughput, every plugin on ≥ 0.85× bare Pingora", v, lambda x: x >= 0.85, f"{v:.2f}×" if v else "")
    if a:
        v = r(tput(a, "tollgate", "h1-c64"), tput(a, "nginx", "h1-c64"))
        add("stretch: ≥ 0.75× nginx", v, lambda x: x >= 0.75, f"{v:.2f}×" if v else "")
        v = r(tput(a, "tollgate", "h1-c64"), tput(a, "litellm", "h1-c64"))
        add("≥ 20× LiteLLM", v, lambda x: x >= 20, f"{v:.0f}×" if v else "")
        v = r(tput(a, "direct", "h1-c64"), tput(a, "tollgate", "h1-c64"))
        add("the mock (with the load generator) sustains ≥ 3× the gateway's rate", v, lambda x: x >= 3, f"{v:.1f}×" if v else "")
    if b:
        for load, limit in (("c1", 100), ("r5k", 300)):
            t = b.med("tollgate", load, lambda x: x["latency_us"]["p99"])
            base = b.med("direct", load, lambda x: x["latency_us"]["p99"])
            v = None if t is None or base is None else t - base
            label = "added p99 at concurrency 1 ≤ 100 µs" if load == "c1" else "added p99 at 5k req/s ≤ 300 µs"
            add(label, v, lambda x, limit=limit: x <= limit, us(v))
    for sc in (c64, c256):
        if not sc:
            continue
        load = sc.loads[0][0]
        st = lambda f: (lambda x: f(x["stream"]))
        t = sc.med("tollgate", load, st(lambda x: x["ttft_us"]["p99"]))
        base = sc.med("direct", load, st(lambda x: x["ttft_us"]["p99"]))
        v = None if t is None or base is None else t - base
        add(f"{sc.name}: added time-to-first-token p99 ≤ 200 µs", v, lambda x: x <= 200, us(v))
        t = sc.med("tollgate", load, st(lambda x: x["gap_us"]["p99"]))
        base = sc.med("direct", load, st(lambda x: x["gap_us"]["p99"]))
        v = None if t is None or base is None else t - base
        add(f"{sc.name}: added inter-chunk p99 ≤ 10 µs", v, lambda x: x <= 10, us(v))
        runs = sc.runs("tollgate", load)
        bad = sum(x["stream"]["lost_tokens"] + x["stream"]["merged_events"] for x in runs) if runs else None
        add(f"{sc.name}: 0 lost or merged chunks", bad, lambda x: x == 0, f"{bad} lost + merged" if bad is not None else "")
    if d:
        rows_d = [x for x in memory_rows(d) if x["system"] == "tollgate" and x["open"]]
        k = slope([(x["open"], x["peak"]) for x in rows_d])
        add("≤ 40 KiB resident per stream (stretch 20 KiB)", k, lambda x: x <= 40, f"{k:.1f} KiB" if k is not None else "")
        if rows_d:
            top = max(rows_d, key=lambda x: x["open"])
            v = top["after"] / top["idle"] - 1 if top["idle"] else None
            add(f"memory 3 s after {top['open']:,} streams within 20% of idle", v, lambda x: x <= 0.2, f"{v * 100:+.0f}%" if v is not None else "")
        bad = sum(x["streams"] - x["clean"] for x in rows_d) if rows_d else None
        add("many streams: every stream clean", bad, lambda x: x == 0, f"{bad} not clean" if bad is not None else "")
        rows_h2 = [x for x in memory_rows(d) if x["system"] == "tollgate-h2up" and x["open"]]
        if rows_h2:
            top = max(rows_h2, key=lambda x: x["open"])
            add(f"one process holds {top['target']:,} clean streams (HTTP/2 upstream)", top["clean"],
                lambda x: x == top["target"], f"{top['clean']:,} clean, {top['open']:,} open at once")
            k2 = slope([(x["open"], x["peak"]) for x in rows_h2])
            add("≤ 40 KiB resident per stream with an HTTP/2 upstream", k2, lambda x: x <= 40, f"{k2:.1f} KiB" if k2 is not None else "")
    soak = by.get("i-soak")
    if soak:
        rows_i = [x for x in soak_rows(soak) if x["system"].startswith("tollgate")]
        if rows_i:
            g = soak_growth(rows_i[0])
            add("soak: resident memory flat after warm-up (growth over the run ≤ 5%)", g, lambda x: x <= 0.05, f"{g * 100:+.1f}%" if g is not None else "")
            st = rows_i[0]["st"]
            left = st.get("held_to_timeout") if st.get("stalled") else None
            add("soak: every stalled stream closed at the write timeout", left, lambda x: x == 0,
                f"{st.get('closed_by_server', 0):,} of {st.get('stalled', 0):,} closed" if left is not None else "")
    if e:
        st_load = next((l for l, spec in e.loads if load_kind(spec) == "stream"), None)
        v = r(e.med("tollgate", st_load, cpu_per_token), e.med("pingora", st_load, cpu_per_token)) if st_load else None
        add("streaming CPU per token with metering on ≤ 1.10× pass-through", v, lambda x: x <= 1.10, f"{v:.2f}×" if v else "")
    if not rows:
        return
    out.append("## Targets")
    out.append("")
    out.append("| target | measured (median) | status |")
    out.append("|---|---:|---|")
    out.extend(rows)
    out.append("")


# === Plots ===

def plots(scenarios, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plots", file=sys.stderr)
        return []
    made = []
    for s in scenarios:
        for load, spec in s.loads:
            kind = load_kind(spec)
            if kind == "soak":
                made.extend(soak_plot(plt, s, load, spec, outdir))
                continue
            if kind == "memory":
                continue
            fig, ax = plt.subplots(figsize=(7, 4.2))
            for sys_ in s.systems:
                runs = s.runs(sys_, load)
                if not runs:
                    continue
                # The run with the median p99 stands for the system.
                key = (lambda r: r["stream"]["ttft_us"]["p99"]) if kind == "stream" else (lambda r: r["latency_us"]["p99"])
                run = sorted(runs, key=key)[len(runs) // 2]
                cdf = run["stream"]["ttft_us"]["cdf"] if kind == "stream" else run["latency_us"]["cdf"]
                xs = [1 / (1 - q) if q < 1 else 1e6 for q, _ in cdf]
                ys = [v / 1000 for _, v in cdf]
                ax.plot(xs, ys, marker=".", label=sys_)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ticks = [2, 10, 100, 1000, 10000, 100000]
            ax.set_xticks(ticks)
            ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
            ax.set_xlabel("percentile")
            ax.set_ylabel("time to first token (ms)" if kind == "stream" else "latency (ms)")
            ax.set_title(f"{s.name} / {load}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
            path = os.path.join(outdir, f"cdf-{s.name}-{load}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            made.append(path)
        if any(load_kind(spec) == "memory" for _, spec in s.loads):
            rows = memory_rows(s)
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
            for sys_ in s.systems:
                pts = sorted((r["open"], r["peak"] / 1024, (r["cpu"] or 0) * 100) for r in rows if r["system"] == sys_ and r["open"])
                if not pts:
                    continue
                ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sys_)
                ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=sys_)
            ax1.set_xlabel("concurrent streams")
            ax1.set_ylabel("resident memory (MiB)")
            ax1.set_title("RSS with every stream open")
            ax2.set_xlabel("concurrent streams")
            ax2.set_ylabel("CPU (% of one core)")
            ax2.set_title("CPU while every stream is open")
            for ax in (ax1, ax2):
                ax.grid(True, alpha=0.3)
                ax.legend()
            path = os.path.join(outdir, f"streams-rss-cpu-{s.name}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            made.append(path)
            # RSS over time at the highest level, per system.
            top = max((r["target"] or 0) for r in rows)
            fig, ax = plt.subplots(figsize=(7, 4.2))
            for r in rows:
                if r["target"] != top or not r["samples"]:
                    continue
                ax.plot([x["t_ms"] / 1000 for x in r["samples"]], [x["rss_kb"] / 1024 for x in r["samples"]], label=r["system"])
            ax.set_xlabel("seconds since the load started")
            ax.set_ylabel("resident memory (MiB)")
            ax.set_title(f"RSS over time, {top:,} streams")
            ax.grid(True, alpha=0.3)
            ax.legend()
            path = os.path.join(outdir, f"streams-rss-time-{s.name}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            made.append(path)
    return made


def soak_plot(plt, s, load, spec, outdir):
    """RSS and open streams over the soak, the warm-up shaded."""
    made = []
    for sys_ in s.systems:
        runs = s.runs(sys_, load)
        if not runs or not runs[0].get("samples"):
            continue
        samples = runs[0]["samples"]
        fig, ax = plt.subplots(figsize=(8, 4.2))
        t = [x["t_ms"] / 1000 for x in samples]
        ax.plot(t, [x["rss_kb"] / 1024 for x in samples], color="tab:blue", label="RSS")
        ax.set_xlabel("seconds since the load started")
        ax.set_ylabel("resident memory (MiB)", color="tab:blue")
        ax.set_ylim(bottom=0)
        warm = duration_s(spec["warmup"])
        ax.axvspan(0, warm, color="grey", alpha=0.15, label="warm-up")
        ax2 = ax.twinx()
        ax2.plot(t, [x["open"] for x in samples], color="tab:orange", alpha=0.7, label="open streams")
        ax2.set_ylabel("open streams (client side)", color="tab:orange")
        ax2.set_ylim(bottom=0)
        ax.set_title(f"{s.name} / {load} / {sys_}")
        ax.grid(True, alpha=0.3)
        path = os.path.join(outdir, f"soak-rss-{s.name}-{sys_}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    return made


# === Document ===

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--out", default="bench/RESULTS.md")
    ap.add_argument("--header", help="Markdown file put above the tables (written by run.sh)")
    ap.add_argument("--footer", help="Markdown file put below the tables")
    args = ap.parse_args()

    docs = []
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        if "scenario" in doc and "results" in doc:
            docs.append(doc)
    scenarios = [Scenario(d) for d in docs]
    out = []
    if args.header and os.path.exists(args.header):
        out.append(open(args.header).read().rstrip())
        out.append("")
    made = plots(scenarios, args.results)
    targets_section(scenarios, out)
    for s in scenarios:
        d = s.doc
        mb, ma = d["machine_before"], d.get("machine_after") or {}
        out.append(f"## {s.name}: {d['description']}")
        out.append("")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(d["started_unix"]))
        out.append(
            f"Ran {when}, {d['runs']} run(s){' (quick mode)' if d['quick'] else ''}; mock: {mock_tokens(d['mock'])}, "
            f"{d['mock']['token_delay']} between tokens; load average {mb['loadavg'].split(' ')[0]} before, "
            f"{(ma.get('loadavg') or '– ').split(' ')[0]} after."
        )
        out.append("")
        for sysd in d["systems"]:
            if sysd["status"] != "ok":
                out.append(f"- **{sysd['name']} not measured**: {sysd['status'].splitlines()[0]}")
        if d.get("redis"):
            out.append("- A `redis-server` ran on loopback for the scenario, on the load generator's CPU, without persistence")
        for sys_, load, why in d.get("skipped", []):
            out.append(f"- {sys_} / {load}: not run ({why})")
        out.append("")
        kinds = {load_kind(spec) for _, spec in s.loads}
        if s.name.startswith("e-"):
            features_table(s, out)
            out.append("")
        elif d.get("baseline") or any(r["result"].get("cache") for r in d["results"]):
            if s.name.startswith("h-"):
                cache_summary(s, out)
            compare_tables(s, out)
        elif "soak" in kinds:
            soak_table(s, out)
            out.append("")
        elif "memory" in kinds:
            memory_table(s, out)
            out.append("")
        else:
            for load, spec in s.loads:
                desc = f"{spec['mode']} loop, HTTP/{spec['http']}"
                if spec.get("rate"):
                    desc += f", {spec['rate']:,.0f}/s"
                if spec["mode"] == "closed":
                    desc += f", concurrency {spec['concurrency']}"
                out.append(f"### {load} ({desc}, {spec['duration']} measured)")
                out.append("")
                {"throughput": throughput_table, "latency": latency_table, "stream": stream_table}[load_kind(spec)](s, load, out)
                out.append("")
        if d.get("notes"):
            out.append(d["notes"])
            out.append("")
        pics = [p for p in made if f"-{s.name}" in os.path.basename(p)]
        for p in pics:
            out.append(f"![{os.path.basename(p)}](results/{os.path.basename(p)})")
        if pics:
            out.append("")
    if args.footer and os.path.exists(args.footer):
        out.append(open(args.footer).read().rstrip())
        out.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    print(f"wrote {args.out} and {len(made)} plot(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
