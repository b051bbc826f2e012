"""``make bench-load``: the service under load, as a client sees it.

Starts ``provenance serve`` on the embedded stack (SQLite, anvil, blockstore, own CA) in a temporary
data dir, then for each concurrency (default 1, 4 and 16) certifies images with that many clients
at once, verifies the certified copies the same way, and waits until every record of the step is
registered on chain. One more step sends certifications open-loop at a fixed rate (default 8 a
second, the issue's target) for a while and measures how far registration lags behind.

Printed as one markdown table: certifications and verifications per second, registration lag
(``registered_at - created_at`` of each record) p50 and p95, the verdicts that were not
``authentic`` during the step (``pending`` means the chain had not caught up yet), and the server's
resident memory after the step and its peak. Targets (checked here, not in timed tests): lag p95 at
most 10 s at 8 certifications a second.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

LAG_TARGET_P95_S = 10.0


def synthetic_image(seed: int, size: int) -> bytes:
    """A photo-like PNG (smooth gradients, shapes and grain), unique per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(0.5, 4.0, 3)
        channels.append(127 + 60 * np.sin(a * np.pi * x + b) * np.cos(c * np.pi * y) + rng.normal(0, 12, (size, size)))
    rgb = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(np.floor(k)), int(np.ceil(k))
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Step:
    label: str
    certify_per_s: float = float("nan")
    verify_per_s: float = float("nan")
    lags: list[float] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    rss: tuple[float, float] = (float("nan"), float("nan"))


class Server:
    """``provenance serve`` in a child process of its own (stopped by its pid)."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provenance.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not start; see {self.log}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        self.key = (data_dir / "admin.key").read_text().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Load:
    def __init__(self, server: Server, size: int) -> None:
        self.server = server
        self.size = size
        self.client = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.key}"},
            timeout=120,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._seed = 0
        self._seed_lock = threading.Lock()

    def image(self) -> bytes:
        with self._seed_lock:
            self._seed += 1
            seed = self._seed
        return synthetic_image(seed, self.size)

    def certify(self, data: bytes) -> tuple[str, bytes] | None:
        reply = self.client.post("/v1/certify", files={"file": ("load.png", data, "image/png")})
        if reply.status_code != 201:
            return None
        record_id = str(reply.json()["record_id"])
        certified = self.client.get(f"/v1/records/{record_id}/image")
        return record_id, certified.content

    def verify(self, data: bytes) -> str:
        reply = self.client.post("/v1/verify", files={"file": ("load.png", data, "image/png")})
        return str(reply.json().get("verdict", f"http {reply.status_code}")) if reply.status_code == 200 else "error"

    def lags(self, record_ids: list[str], timeout_s: float = 300.0) -> list[float]:
        """Wait until every record is registered; the lag of each from certification to registration."""
        deadline = time.monotonic() + timeout_s
        lags: dict[str, float] = {}
        while len(lags) < len(record_ids) and time.monotonic() < deadline:
            for record_id in record_ids:
                if record_id in lags:
                    continue
                record = self.client.get(f"/v1/records/{record_id}").json()
                if record.get("registered_at"):
                    lags[record_id] = (
                        parse_time(record["registered_at"]) - parse_time(record["created_at"])
                    ).total_seconds()
            if len(lags) < len(record_ids):
                time.sleep(0.5)
        return list(lags.values())

    def closed_loop(self, concurrency: int, count: int) -> Step:
        step = Step(f"{concurrency} concurrent")
        images = [self.image() for _ in range(count)]
        results: list[tuple[str, bytes]] = []
        with ThreadPoolExecutor(concurrency) as pool:
            started = time.perf_counter()
            for outcome in pool.map(self.certify, images):
                if outcome is None:
                    step.errors += 1
                else:
                    results.append(outcome)
            step.certify_per_s = len(results) / (time.perf_counter() - started)
            started = time.perf_counter()
            verdicts = list(pool.map(self.verify, [data for _, data in results]))
            step.verify_per_s = len(verdicts) / (time.perf_counter() - started)
        step.verdicts.update(verdicts)
        step.lags = self.lags([record_id for record_id, _ in results])
        step.rss = rss_mb(self.server.process.pid)
        return step

    def open_loop(self, rate: float, seconds: float, verify_share: int = 1) -> Step:
        """Certifications sent at a fixed rate whatever the answers' latency; each certified copy is
        then verified once, at the same time, as a newsroom would check what it just published."""
        step = Step(f"{rate:g}/s for {seconds:g}s")
        count = int(rate * seconds)
        images = [self.image() for _ in range(count)]
        results: list[tuple[str, bytes]] = []
        verdicts: list[str] = []
        lock = threading.Lock()

        def one(data: bytes) -> None:
            outcome = self.certify(data)
            if outcome is None:
                with lock:
                    step.errors += 1
                return
            verdict = self.verify(outcome[1]) if verify_share else "skipped"
            with lock:
                results.append(outcome)
                verdicts.append(verdict)

        with ThreadPoolExecutor(64) as pool:
            started = time.perf_counter()
            futures = []
            for i, data in enumerate(images):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(one, data))
            for future in futures:
                future.result()
            elapsed = time.perf_counter() - started
        step.certify_per_s = len(results) / elapsed
        step.verify_per_s = len(verdicts) / elapsed
        step.verdicts.update(verdicts)
        step.lags = self.lags([record_id for record_id, _ in results])
        step.rss = rss_mb(self.server.process.pid)
        return step


def table(steps: list[Step], size: int) -> str:
    lines = [
        f"| load ({size}x{size} PNG) | certify/s | verify/s | lag p50 s | lag p95 s | not authentic at verify "
        "| errors | server RSS MB (peak) |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for step in steps:
        others = {k: v for k, v in step.verdicts.items() if k != "authentic"}
        lines.append(
            f"| {step.label} | {step.certify_per_s:.1f} | {step.verify_per_s:.1f} | "
            f"{percentile(step.lags, 0.5):.2f} | {percentile(step.lags, 0.95):.2f} | "
            f"{', '.join(f'{v} {k}' for k, v in sorted(others.items())) or '-'} | {step.errors} | "
            f"{step.rss[0]:.0f} ({step.rss[1]:.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--per-client", type=int, default=12, help="certifications per client at each concurrency")
    parser.add_argument("--min-count", type=int, default=40, help="at least this many certifications per step")
    parser.add_argument("--rate", type=float, default=8.0, help="open-loop certifications per second (0: skip)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the open-loop step")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="provenance-load-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        env = {**os.environ, "PROVENANCE_RATE_LIMIT_PUBLIC_PER_MIN": "0"}
        started = time.perf_counter()
        server = Server(data_dir, port, env)
        print(f"service started in {time.perf_counter() - started:.1f}s ({server.url}, data in {data_dir})", flush=True)
        load = Load(server, args.size)
        steps: list[Step] = []
        try:
            load.closed_loop(2, 4)  # warm-up: first requests load models and caches

            def closed(concurrency: int) -> Callable[[], Step]:
                return lambda: load.closed_loop(concurrency, max(args.min_count, concurrency * args.per_client))

            runs = [closed(c) for c in args.concurrency]
            if args.rate > 0:
                runs.append(lambda: load.open_loop(args.rate, args.seconds))
            for run in runs:
                step = run()
                steps.append(step)
                print(
                    f"  {step.label}: {step.certify_per_s:.1f} certify/s, {step.verify_per_s:.1f} verify/s, "
                    f"lag p95 {percentile(step.lags, 0.95):.2f}s",
                    flush=True,
                )
        finally:
            load.client.close()
            server.stop()
    print()
    print(table(steps, args.size))
    if args.rate > 0 and steps:
        p95 = percentile(steps[-1].lags, 0.95)
        verdict = "met" if p95 <= LAG_TARGET_P95_S else "MISSED"
        print(
            f"\nregistration lag p95 at {args.rate:g} certifications/s: {p95:.2f}s "
            f"(target <= {LAG_TARGET_P95_S:.0f}s: {verdict})"
        )
    if statistics.mean([s.errors for s in steps] or [0]) > 0:
        print("some requests failed: see the errors column")


if __name__ == "__main__":
    main()
