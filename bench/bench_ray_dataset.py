"""run_dataset throughput and driver memory: 100,000 rows x 1 call at 0 ms latency.

Each size runs in a fresh driver process (so peak RSS is that run's own) on a private local
Ray, against a loopback server in another process; the input is a Parquet file the driver
scans lazily. Reports rows/s, the driver's peak RSS at 10,000 and 100,000 rows (flat
within 10% when the driver streams), and checks the output has every row exactly once.

    .venv/bin/python bench/bench_ray_dataset.py            # 10k and 100k
    .venv/bin/python bench/bench_ray_dataset.py --sizes 2000 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from plait import LLMInference, Module


class OneCall(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(text)


def child(rows: int, src: Path, out: Path, base_url: str, workers: int) -> None:
    import ray

    from plait.io import read_output
    from plait.resources import ResourceConfig
    from plait_ray.dataset import run_dataset

    ray.init(address="local", num_cpus=max(2, workers), include_dashboard=False)
    resources = ResourceConfig.from_dict({"endpoints": {"fast": {
        "provider_api": "openai", "model": "m", "base_url": base_url,
        "api_key_env": "PLAIT_TESTING_API_KEY", "max_concurrent": 256}}})
    started = time.perf_counter()
    summary = run_dataset(OneCall(), src, out, resources=resources, rows_per_chunk=2000,
                          workers=workers, progress=False, executor_options={"metrics": False})
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ids = read_output(out).column("row_id").to_pylist()
    print(json.dumps({"rows": rows, "rows_per_s": rows / elapsed, "wall_s": elapsed,
                      "driver_peak_rss_mb": peak_mb, "errors": summary.errors,
                      "exactly_once": ids == list(range(rows))}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs=4, metavar=("ROWS", "SRC", "OUT", "URL"))
    args = parser.parse_args()
    if args.child:
        rows, src, out, url = args.child
        child(int(rows), Path(src), Path(out), url, args.workers)
        return
    from plait.testing import LLMServer

    results = []
    with tempfile.TemporaryDirectory() as tmp, LLMServer.spawn(latency=0.0) as server:
        server.resource_config({"fast": "m"})  # exports PLAIT_TESTING_API_KEY to children
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        for rows in args.sizes:
            src = Path(tmp) / f"in-{rows}.parquet"
            pq.write_table(pa.table({"text": [f"row {i}" for i in range(rows)]}), src)
            cmd = [sys.executable, __file__, "--workers", str(args.workers), "--child",
                   str(rows), str(src), str(Path(tmp) / f"out-{rows}"), server.openai_base_url]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                sys.exit(f"run of {rows} rows failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(json.dumps(result))
    small, large = results[0], results[-1]
    growth = large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"] - 1
    print(f"\n{large['rows']:,} rows: {large['rows_per_s']:,.0f} rows/s; driver peak RSS "
          f"{small['driver_peak_rss_mb']:.0f} MB at {small['rows']:,} rows vs "
          f"{large['driver_peak_rss_mb']:.0f} MB at {large['rows']:,} ({growth:+.1%}, "
          f"{'flat' if abs(growth) <= 0.10 else 'NOT flat'} within 10%); exactly once: "
          f"{all(r['exactly_once'] for r in results)}")


if __name__ == "__main__":
    main()
