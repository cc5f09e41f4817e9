#!/usr/bin/env python3
"""Draws a trace from Jaeger's JSON as an SVG waterfall.

    python3 scripts/trace-svg.py TRACE.json [-o OUT.svg] [--title TEXT] [--service PREFIX=NAME ...]

TRACE.json is what Jaeger's HTTP API returns for one trace
(GET /api/traces/{traceId}), e.g. the file tests/jaeger.rs saves with
KAFKA_GATEWAY_TEST_TRACE_OUT. One row per span, in parent-to-child order
(children by start time), indented by depth: the service, the span name
(with its messaging destination, when it has one) and its duration, beside a
bar on the trace's time axis. A span with an error has a red bar and a red
mark; its span events are ticks on its bar (a failed record's in red); a span
that links to another (a FOLLOWS_FROM reference) says so with an arrow. The
output depends on the JSON only, so a regenerated picture changes only when
the trace does. --service shows a service whose name starts with PREFIX as
NAME (the Jaeger test's service names end in a unique suffix). Python's
standard library only.
"""

import argparse
import json
import sys
from xml.sax.saxutils import escape

ROW = 24
LABEL_WIDTH = 520
BAR_WIDTH = 560
INDENT = 16
TOP = 64
MARGIN = 16
FONT = "font-family=\"DejaVu Sans, Verdana, sans-serif\""
# Colour-blind-safe palette (Okabe-Ito), one per service in order of appearance.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]
ERROR = "#C0392B"


def tag(tags, key):
    for item in tags or []:
        if item.get("key") == key:
            return item.get("value")
    return None


def is_error(span):
    return tag(span.get("tags"), "error") in (True, "true") or tag(span.get("tags"), "otel.status_code") == "ERROR"


def load(path):
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    traces = document.get("data") if isinstance(document, dict) and "data" in document else [document]
    if not traces:
        sys.exit(f"trace-svg.py: {path} holds no trace (is it a /api/traces/{{id}} response?)")
    return traces[0]


def order(trace):
    """The spans, parents before children, children by start time; each with its depth."""
    spans = {s["spanID"]: s for s in trace["spans"]}
    children = {}
    roots = []
    for span in trace["spans"]:
        parent = next(
            (r["spanID"] for r in span.get("references") or [] if r.get("refType") == "CHILD_OF"),
            None,
        )
        if parent in spans:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    key = lambda s: (s["startTime"], s["operationName"], s["spanID"])
    out = []

    def visit(span, depth):
        out.append((span, depth))
        for child in sorted(children.get(span["spanID"], []), key=key):
            visit(child, depth + 1)

    for root in sorted(roots, key=key):
        visit(root, 0)
    return out


def duration_text(micros):
    if micros == 0:
        return "0"
    if micros >= 1_000_000:
        return f"{micros / 1_000_000:.2f} s"
    if micros >= 1000:
        return f"{micros / 1000:.2f} ms"
    return f"{micros} µs"


def nice_step(span_micros, ticks=6):
    raw = max(span_micros / ticks, 1)
    magnitude = 10 ** (len(str(int(raw))) - 1)
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def render(trace, title, renames=()):
    rows = order(trace)
    by_id = {s["spanID"]: s for s in trace["spans"]}
    processes = {}
    for pid, process in trace.get("processes", {}).items():
        name = process.get("serviceName", pid)
        for prefix, shown in renames:
            if name.startswith(prefix):
                name = shown
                break
        processes[pid] = {"serviceName": name}
    services = []
    for span, _ in rows:
        name = processes.get(span["processID"], {}).get("serviceName", span["processID"])
        if name not in services:
            services.append(name)
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(services)}
    start = min(s["startTime"] for s, _ in rows)
    end = max(s["startTime"] + s["duration"] for s, _ in rows)
    total = max(end - start, 1)
    x0 = MARGIN + LABEL_WIDTH
    scale = BAR_WIDTH / total
    height = TOP + ROW * len(rows) + 28 + 22 * len(services) + MARGIN
    width = x0 + BAR_WIDTH + 190
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT} font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{MARGIN}" y="40" fill="#555">trace {escape(trace["traceID"])}: '
        f"{len(rows)} spans, {duration_text(total)}</text>",
    ]
    # Time axis.
    step = nice_step(total)
    tick = 0
    while tick <= total:
        x = x0 + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{TOP + ROW * len(rows)}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP - 12}" text-anchor="middle" fill="#777" font-size="10">{duration_text(tick)}</text>')
        tick += step
    for i, (span, depth) in enumerate(rows):
        y = TOP + i * ROW
        service = processes.get(span["processID"], {}).get("serviceName", span["processID"])
        tags = span.get("tags")
        if i % 2:
            out.append(f'<rect x="{MARGIN}" y="{y}" width="{width - 2 * MARGIN}" height="{ROW}" fill="#f7f7f7"/>')
        name = span["operationName"]
        destination = tag(tags, "messaging.destination.name")
        label = name if destination is None else f"{name} {destination}"
        partition = tag(tags, "messaging.destination.partition.id")
        if partition is not None:
            label += f" [{partition}]"
        count = tag(tags, "messaging.batch.message_count")
        if count is not None:
            label += f" ({count} records)"
        lx = MARGIN + 6 + depth * INDENT
        out.append(f'<circle cx="{lx + 4}" cy="{y + ROW / 2}" r="4" fill="{colour[service]}"/>')
        marker = " \u26a0" if is_error(span) else ""
        out.append(
            f'<text x="{lx + 13}" y="{y + ROW / 2 + 4}"><tspan fill="#777">{escape(service)}</tspan> '
            f'<tspan font-weight="bold">{escape(label)}</tspan><tspan fill="{ERROR}">{marker}</tspan></text>'
        )
        bx = x0 + (span["startTime"] - start) * scale
        bw = max(span["duration"] * scale, 1.5)
        fill = ERROR if is_error(span) else colour[service]
        out.append(f'<rect x="{bx:.1f}" y="{y + 5}" width="{bw:.1f}" height="{ROW - 10}" rx="2" fill="{fill}"/>')
        for log in span.get("logs") or []:
            lx_ = x0 + (log["timestamp"] - start) * scale
            event = tag(log.get("fields"), "event")
            stroke = ERROR if event == "record failed" else "#222"
            out.append(f'<line x1="{lx_:.1f}" y1="{y + 3}" x2="{lx_:.1f}" y2="{y + ROW - 3}" stroke="{stroke}" stroke-width="1"/>')
        text = duration_text(span["duration"])
        links = [r for r in span.get("references") or [] if r.get("refType") != "CHILD_OF"]
        if links:
            names = sorted({by_id[r["spanID"]]["operationName"] for r in links if r["spanID"] in by_id})
            text += f"  \u2192 links to {len(links)}" + (f": {', '.join(names)}" if names else "")
        out.append(f'<text x="{bx + bw + 4:.1f}" y="{y + ROW / 2 + 4}" fill="#444" font-size="11">{escape(text)}</text>')
    # Legend.
    y = TOP + ROW * len(rows) + 24
    out.append(
        f'<text x="{MARGIN}" y="{y}" fill="#555" font-size="11">bars: each span on the trace\'s time axis; '
        f"ticks: span events (red: a failed record); red: a span with an error</text>"
    )
    for i, service in enumerate(services):
        yy = y + 18 + 22 * i
        out.append(f'<rect x="{MARGIN}" y="{yy - 10}" width="14" height="12" fill="{colour[service]}"/>')
        out.append(f'<text x="{MARGIN + 20}" y="{yy}">{escape(service)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="Jaeger's /api/traces/{traceId} response, saved to a file")
    parser.add_argument("-o", "--output", help="the SVG file (default: standard output)")
    parser.add_argument("--title", default="A Produce call, traced from the client to Kafka")
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="PREFIX=NAME",
        help="show services whose name starts with PREFIX as NAME (repeatable)",
    )
    args = parser.parse_args()
    renames = []
    for item in args.service:
        prefix, sep, shown = item.partition("=")
        if not sep or not prefix:
            parser.error(f"--service {item!r}: expected PREFIX=NAME")
        renames.append((prefix, shown))
    svg = render(load(args.trace), args.title, renames)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        sys.stdout.write(svg)


if __name__ == "__main__":
    main()
