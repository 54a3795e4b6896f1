"""Shared helpers of the issue-2 benchmarks: workloads, measurement, and bench/RESULTS.md.

Every benchmark is a script (never a test): it spawns the loopback server in a child process
(so the server has its own core and GIL), measures the driver process only, prints a table and
replaces its own section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait import LLMInference, Module

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
FAST_MODEL = "model-fast"
SMART_MODEL = "model-smart"

# The order of sections in RESULTS.md (and of its index); others may be added after these.
SECTIONS = [
    ("headline", "Headline: one extract-and-compare row"),
    ("fanout", "Fan-out: 4 fast + 1 smart per row, 1,000 rows"),
    ("ratelimited", "Rate-limited: extract-and-compare under a 100 req/s server cap"),
    ("memory", "Memory: peak RSS of the driver"),
    ("cache", "Response cache: the fan-out rerun (issue 12)"),
]


# --- workloads ------------------------------------------------------------------------------

class FanOut(Module):
    """4 independent ``fast`` calls, then one ``smart`` call aggregating their answers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = LLMInference(alias="fast", system_prompt="Angle A.", max_tokens=16)
        self.b = LLMInference(alias="fast", system_prompt="Angle B.", max_tokens=16)
        self.c = LLMInference(alias="fast", system_prompt="Angle C.", max_tokens=16)
        self.d = LLMInference(alias="fast", system_prompt="Angle D.", max_tokens=16)
        self.agg = LLMInference(alias="smart", system_prompt="Aggregate.", max_tokens=16)

    def forward(self, text: str) -> str:
        a, b, c, d = self.a(text), self.b(text), self.c(text), self.d(text)
        return self.agg(f"1: {a}\n2: {b}\n3: {c}\n4: {d}")


class ExtractAndCompare(Module):
    """The seed workload: extract from two documents on ``fast``, compare on ``smart``."""

    def __init__(self) -> None:
        super().__init__()
        self.extract_a = LLMInference(alias="fast", system_prompt="Extract the key facts.",
                                      max_tokens=32)
        self.extract_b = LLMInference(alias="fast", system_prompt="Extract the key facts.",
                                      max_tokens=32)
        self.compare = LLMInference(alias="smart", system_prompt="Compare the two fact lists.",
                                    max_tokens=32)

    def forward(self, doc_a: str, doc_b: str) -> str:
        facts_a = self.extract_a(doc_a)
        facts_b = self.extract_b(doc_b)
        return self.compare(f"A:\n{facts_a}\n\nB:\n{facts_b}")


def fanout_prompt(i: int) -> str:
    """Row ``i`` of the fan-out workload."""
    return f"row {i}: the quick brown fox jumps over the lazy dog"


def aggregate_prompt(answers: Sequence[str]) -> str:
    """The aggregate prompt of the fan-out workload, as the plait pipeline formats it."""
    return "\n".join(f"{n}: {a}" for n, a in enumerate(answers, start=1))


# --- measurement ----------------------------------------------------------------------------

@dataclass
class Timed:
    """Wall and driver-CPU seconds of one measured block."""

    wall: float = 0.0
    cpu: float = 0.0


class measure:
    """``with measure() as t:`` fills ``t.wall`` and ``t.cpu`` (user + sys of THIS process)."""

    def __enter__(self) -> Timed:
        self.timed = Timed()
        self._wall = time.perf_counter()
        self._cpu = _cpu()
        return self.timed

    def __exit__(self, *exc: object) -> None:
        self.timed.wall = time.perf_counter() - self._wall
        self.timed.cpu = _cpu() - self._cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, mode: str, url: str, rows: int) -> dict[str, Any]:
    """Run ``script --child mode`` in a fresh interpreter; return the JSON line it prints."""
    out = subprocess.run(
        [sys.executable, script, "--child", mode, "--url", url, "--rows", str(rows)],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. ``"1.02, 0.98, 0.80"``."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """nproc, CPU model, RAM and Python version, on one line."""
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return (f"nproc={os.cpu_count()}, {model}, RAM {ram}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def command() -> str:
    """The command line that ran this script, relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(BENCH_DIR.parent))
    except ValueError:
        shown = str(script)
    return " ".join([".venv/bin/python", shown, *sys.argv[1:]])


def server_settings(latency: float, **extra: Any) -> dict[str, Any]:
    """Loopback-server settings of the benchmarks (request recording off: it costs memory)."""
    return {"latency": latency, "record_requests": 0, **extra}


# --- reporting -------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header_lines(extra: Sequence[str] = ()) -> list[str]:
    """The date/machine/command/load bullet list that heads every section."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    return [
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{command()}`",
        f"- load average at the end of the run: {load_average()} (1/5/15 min)",
        *extra,
    ]


def write_section(key: str, body: str) -> None:
    """Replace (or add) section ``key`` of bench/RESULTS.md and refresh the index."""
    title = dict(SECTIONS).get(key, key)
    text = RESULTS.read_text() if RESULTS.exists() else ""
    sections = _parse_sections(text)
    sections[key] = f"## {title}\n<!-- section:{key} -->\n\n{body.strip()}\n"
    order = [k for k, _ in SECTIONS] + sorted(k for k in sections if k not in dict(SECTIONS))
    present = [k for k in order if k in sections]
    # Keep a hand-written preamble (the at-a-glance table) above the index as it is.
    preamble = text[:text.index("## Sections")] if "## Sections" in text else ""
    index = ([preamble.rstrip("\n"), ""] if preamble else [
        "# plait benchmarks (issue 2: performance)", "",
        "Written by `bench/run_all.py` (each bench script replaces its own section). The",
        "box these were measured on is shared: every section records its load average; the",
        "figures to trust are from a quiet machine.", "",
        "Other result files: `bench/results_*.md` (merged by the lead).", ""])
    index += ["## Sections", ""]
    index += [f"- [{_title_of(sections[k])}](#{_anchor(_title_of(sections[k]))})"
              for k in present]
    out = "\n".join(index) + "\n\n" + "\n".join(sections[k] for k in present)
    RESULTS.write_text(out)
    print(f"\nwrote section '{key}' of {RESULTS}")


def _parse_sections(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    parts = re.split(r"(?m)^(?=## )", text)
    for part in parts:
        m = re.search(r"<!-- section:(\w+) -->", part)
        if part.startswith("## ") and m:
            found[m.group(1)] = part.rstrip() + "\n"
    return found


def _title_of(section: str) -> str:
    return section.splitlines()[0][3:].strip()


def _anchor(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip()
    return slug.replace(" ", "-")


def fmt_s(seconds: float) -> str:
    """Seconds with 3 decimals."""
    return f"{seconds:.3f}"


def fmt_ratio(x: float) -> str:
    """A ratio as ``1.023x``."""
    return f"{x:.3f}x"
