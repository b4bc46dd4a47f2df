"""Turn the harness's results.json into the tables of bench/README.md (between the
`<!-- gateways:begin -->` and `<!-- gateways:end -->` markers). Run alone to redo the tables
from a saved results file: `python3 bench/gateways/report.py [results.json]`."""
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- gateways:begin -->", "<!-- gateways:end -->"
ORDER = ["direct", "nginx", "modelgate", "modelgate-all", "portkey", "litellm"]
GOALS = {
    "p99": 100,         # µs added at concurrency 1, every layer on
    "ttft": 200,        # µs added to time to first token
    "rss_idle": 50,     # MB
    "rss_streams": 200,  # MB with 1,000 streams
    "vs_litellm": 10,   # throughput ratio
    "vs_portkey": 3,
    "vs_nginx": 1.5,    # overhead ratio
}


def us(v):
    return "—" if v is None else f"{v:,.0f} µs"


def added(v):
    """An added time; below zero means inside the baseline's own noise."""
    return us(v) if v >= 0 else f"< 0 ({v:,.0f} µs, noise)"


def base(res, n, key):
    """The direct figures measured right before target `n` (or the direct run itself)."""
    r = res.get(n, {})
    return (r.get("baseline") or res.get("direct", {})).get(key)


def mb(kib):
    return "—" if kib is None else f"{kib / 1024:.1f} MB"


def ratio(a, b):
    return "—" if not a or not b else f"{a / b:.2f}×"


def verdict(ok):
    return "met" if ok else "missed"


def tables(out):
    res = out["results"]
    names = [n for n in ORDER if n in res]
    lines = []
    m = out["machine"]
    lines.append(f"Run of {m['date']} on {m['cores']} cores ({m['cpu']}); gateway pinned to "
                 f"CPU {m['gateway_cpu']}, load generator and mock to CPU {m['client_cpu']}. "
                 f"LiteLLM {m['litellm']}, Portkey {m['portkey']}, {m['versions'].get('nginx')}, "
                 f"{m['versions'].get('wrk')}, node {m['versions'].get('node')}."
                 + (" **Quick run (short durations): not for quoting.**" if m.get("quick") else ""))
    lines.append("")
    failed = [(n, res[n]) for n in names if "error" in res[n]]
    for n, r in failed:
        lines.append(f"- **{r['label']} could not run**: {r['error']}")
    if failed:
        lines.append("")

    for title, key, note in (
            ("### Added latency, concurrency 1", "latency",
             "Target on CPU 0, load generator and mock on CPU 1: every request crosses cores "
             "twice each way, and on this VM a wake-up across cores costs far more than the "
             "proxying itself (nginx shows it)."),
            ("### Added latency, concurrency 1, everything on one core", "latency_one_core",
             "Target, load generator and mock all on CPU 1: no cross-core wake-ups, so the "
             "added time is the target's own work (and its share of one core's switching).")):
        lines += [title, "", note + " \"Added\" subtracts the direct run measured right "
                  "before each target (its p50 / p99 in the last column).", "",
                  "| target | requests | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | direct p50 / p99 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in names:
            lat, b = res[n].get(key), base(res, n, key)
            if not lat:
                continue
            add = lambda k: added(lat[k] - b[k]) if b and n != "direct" else "—"
            pair = f"{us(b['p50'])} / {us(b['p99'])}" if b and n != "direct" else "—"
            lines.append(f"| {res[n]['label']} | {lat['requests']:,} | {us(lat['p50'])} | "
                         f"{us(lat['p99'])} | {us(lat['p999'])} | {add('p50')} | {add('p99')} | "
                         f"{add('p999')} | {pair} |")
        lines.append("")

    lines += ["### Throughput: best rate with p99 under 50 ms and no errors", "",
              "Each step is the better of two 8 s runs.", "",
              "| target | requests/s | at connections | p99 there | sweep (connections: req/s, p99) |",
              "|---|---:|---:|---:|---|"]
    for n in names:
        t = res[n].get("throughput")
        if not t:
            continue
        b = t["best"] or {}
        sweep = "; ".join(f"{s['connections']}: {s['rps']:,}, {s['p99_us'] / 1000:.1f} ms"
                          + (f", {s['errors']} errors" if s["errors"] else "") for s in t["steps"])
        lines.append(f"| {res[n]['label']} | {b.get('rps', 0):,} | {b.get('connections', '—')} | "
                     f"{us(b.get('p99_us'))} | {sweep} |")
    lines.append("")

    lines += ["### Streaming: 100 concurrent streams (20 chunks, 20 ms apart, 3 rounds)", "",
              "| target | completed | failed | TTFT p50 | TTFT p99 | added TTFT p50 | gap p50 | gap p99 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        dstream = (base(res, n, "streaming") or {}).get("ttft_us")
        s = res[n].get("streaming")
        if not s:
            continue
        if not s.get("ttft_us"):
            lines.append(f"| {res[n]['label']} | {s['completed']} | {s['failed']} | "
                         f"failed: {'; '.join(s['errors'])} | | | | |")
            continue
        t, g = s["ttft_us"], s["gap_us"] or {}
        more = added(t["p50"] - dstream["p50"]) if dstream and n != "direct" else "—"
        lines.append(f"| {res[n]['label']} | {s['completed']} | {s['failed']} | {us(t['p50'])} | "
                     f"{us(t['p99'])} | {more} | {us(g.get('p50'))} | {us(g.get('p99'))} |")
    lines.append("")

    lines += ["### Memory (resident set, process and children)", "",
              "| target | idle | with open streams | streams open / completed / failed |",
              "|---|---:|---:|---|"]
    for n in names:
        r = res[n]
        if "rss_idle_kib" not in r:
            continue
        h = r.get("hold") or {}
        lines.append(f"| {r['label']} | {mb(r.get('rss_idle_kib'))} | {mb(r.get('rss_streams_kib'))} | "
                     f"{h.get('streams', '—')} / {h.get('completed', '—')} / {h.get('failed', '—')} |")
    lines.append("")

    lines += ["### Against the goals", "", "| goal | measured | |", "|---|---|---|"]
    mga = res.get("modelgate-all", {})
    for key, where in (("latency", "across cores"), ("latency_one_core", "one core")):
        b = base(res, "modelgate-all", key)
        if b and mga.get(key):
            more = mga[key]["p99"] - b["p99"]
            lines.append(f"| added p99 at concurrency 1, every layer on ≤ {GOALS['p99']} µs "
                         f"({where}) | {added(more)} | {verdict(more <= GOALS['p99'])} |")
    best = lambda n: ((res.get(n, {}).get("throughput") or {}).get("best") or {}).get("rps")
    for peer, goal in (("litellm", GOALS["vs_litellm"]), ("portkey", GOALS["vs_portkey"])):
        a, b = best("modelgate-all"), best(peer)
        if a and b:
            lines.append(f"| throughput ≥ {goal}× {res[peer]['label']} | {ratio(a, b)} "
                         f"({a:,} vs {b:,} req/s) | {verdict(a / b >= goal)} |")
    dstream = (base(res, "modelgate-all", "streaming") or {}).get("ttft_us")
    if dstream and mga.get("streaming", {}).get("ttft_us"):
        for q in ("p50", "p99"):
            more = mga["streaming"]["ttft_us"][q] - dstream[q]
            lines.append(f"| added TTFT ≤ {GOALS['ttft']} µs ({q}, 100 streams) | {added(more)} | "
                         f"{verdict(more <= GOALS['ttft'])} |")
    if "rss_idle_kib" in mga:
        v = mga["rss_idle_kib"] / 1024
        lines.append(f"| RSS idle ≤ {GOALS['rss_idle']} MB | {v:.1f} MB | {verdict(v <= GOALS['rss_idle'])} |")
    if mga.get("rss_streams_kib"):
        v = mga["rss_streams_kib"] / 1024
        n = mga["hold"]["streams"]
        lines.append(f"| RSS with 1,000 streams ≤ {GOALS['rss_streams']} MB | {v:.1f} MB ({n} streams) | "
                     f"{verdict(v <= GOALS['rss_streams'] and n >= 1000)} |")
    for key, where in (("latency", "across cores"), ("latency_one_core", "one core")):
        ng, bm, bn = res.get("nginx", {}).get(key), base(res, "modelgate-all", key), base(res, "nginx", key)
        if not (bm and bn and ng and mga.get(key)):
            continue
        for q in ("p50", "p99"):
            a, b = mga[key][q] - bm[q], ng[q] - bn[q]
            lines.append(f"| overhead within {GOALS['vs_nginx']}× nginx (added {q}, {where}) | "
                         f"{ratio(a, b)} ({us(a)} vs {us(b)}) | "
                         f"{verdict(b > 0 and a / b <= GOALS['vs_nginx'])} |")
    if res.get("nginx", {}).get("throughput"):
        a, b = best("modelgate-all"), best("nginx")
        if a and b:
            lines.append(f"| throughput relative to nginx | {ratio(a, b)} ({a:,} vs {b:,} req/s) | — |")
    lines.append("")
    lines.append("Layers on in \"every policy layer\": " + "; ".join(m["layers"]) +
                 ". Request timeouts (first token, idle, total) are always on.")
    return "\n".join(lines)


def update_readme(out, readme):
    text = readme.read_text()
    body = f"{BEGIN}\n{tables(out)}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + body + tail
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    readme.write_text(text)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results.json"
    update_readme(json.loads(path.read_text()), here.parent / "README.md")
