"""``index.html``: one self-contained page (figures inline as base64 PNG), readable offline."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;"
    "line-height:1.45}img{max-width:100%;height:auto}figure{margin:1.5em 0}"
    "figcaption{font-size:.92em;color:#444;max-width:60em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}thead tr:last-child th{border-bottom:1px solid #222}"
    "table.metrics{border-top:2px solid #222;border-bottom:2px solid #222}"
    "table.kv td{border-bottom:1px solid #ddd}.note{font-size:.92em;color:#444;max-width:60em}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}code{font-size:.92em}"
)


def figure_tag(png: Path, caption: str) -> str:
    """``<figure>`` with the PNG inline as a data URI, so the page needs no other file."""
    payload = base64.b64encode(png.read_bytes()).decode("ascii")
    alt = html.escape(caption.split(". ")[0])
    return (
        f'<figure id="{html.escape(png.stem)}"><img alt="{alt}" src="data:image/png;base64,{payload}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _key_values(rows: Mapping[str, object]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in rows.items()
    )
    return f'<table class="kv">{body}</table>'


def _wall_times(jobs: Mapping[str, Mapping[str, float]]) -> str:
    if not jobs:
        return "<p class=note>No Snakemake benchmark files were found.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(job)}</td><td>{t['s']:.1f}</td>"
        f"<td>{t.get('max_rss_mb', float('nan')):.0f}</td></tr>"
        for job, t in jobs.items()
    )
    head = "<tr><th>job</th><th>wall time (s)</th><th>peak RSS (MB)</th></tr>"
    return f'<table class="kv"><thead>{head}</thead>{rows}</table>'


def provenance_section(record: Mapping) -> str:
    """Summary of ``provenance.json``: code version, config, seeds, machine, timings, inputs."""
    git = record["git"]
    commit = git["commit"] or f"unknown ({git['error']})"
    code = {"git commit": commit, "uncommitted changes": git["dirty"], "untracked files": git["untracked"]}
    hardware = record["hardware"]
    ram = hardware["ram_bytes"]
    machine = {
        "CPU": hardware["cpu_model"],
        "cores (usable / logical)": f"{hardware['cpu_usable']} / {hardware['cpu_count']}",
        "RAM": "unknown" if ram is None else f"{ram / 2**30:.1f} GiB",
        "GPUs": ", ".join(hardware["gpus"] or []) or "none",
        "system": hardware["system"],
    }
    inputs = {name: f"{v['sha256'][:16]}… ({v.get('mode', 'file')})" for name, v in record["inputs"].items()}
    config = json.dumps(record["config"], indent=2, sort_keys=True)
    return "\n".join(
        [
            "<h2>Provenance</h2>",
            "<p class=note>Everything below is in <code>provenance.json</code>, with full checksums.</p>",
            "<h3>Code and configuration</h3>",
            _key_values({**code, "config sha256": record["config_sha256"], **record["config_files"]}),
            "<h3>Seeds</h3>",
            _key_values(record["seeds"]) if record["seeds"] else "<p class=note>No seeds in the config.</p>",
            "<h3>Packages</h3>",
            _key_values({k: v or "not installed" for k, v in record["packages"].items()}),
            "<h3>Machine that built this report</h3>",
            _key_values(machine),
            "<h3>Wall time (Snakemake benchmarks)</h3>",
            _key_values(
                {f"{rule} (s, all jobs)": f"{s:.1f}" for rule, s in record["wall_time_per_rule_s"].items()}
            ),
            _wall_times(record["wall_time_per_job"]),
            "<h3>Inputs (SHA-256)</h3>",
            _key_values(inputs),
            f"<details><summary>Configuration</summary><pre>{html.escape(config)}</pre></details>",
        ]
    )


def render_page(
    title: str,
    *,
    table_html: str,
    notes: Sequence[str],
    figures: Sequence[tuple[Path, str]],
    record: Mapping,
    files: Sequence[str],
    heading: str = "Errors on held-out slices",
    sections: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The whole page as text: table (under ``heading``), notes, further ``sections`` (heading, HTML
    table, note), figures with captions, provenance, list of files."""
    links = "".join(f'<li><a href="{html.escape(quote(f))}">{html.escape(f)}</a></li>' for f in files)
    git = record["git"]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=note>Built {html.escape(record['created_utc'])} from git commit "
        f"<code>{html.escape(git['commit'] or 'unknown')}</code>.</p>",
        f"<h2>{html.escape(heading)}</h2>",
        table_html,
        *(f"<p class=note>{html.escape(note)}</p>" for note in notes),
        *(
            f"<h2>{html.escape(section)}</h2>{table}<p class=note>{html.escape(note)}</p>"
            for section, table, note in sections
        ),
        "<h2>Figures</h2>",
        *(figure_tag(png, caption) for png, caption in figures),
        provenance_section(record),
        "<h2>Files in this folder</h2>",
        f"<ul>{links}</ul>",
    ]
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
