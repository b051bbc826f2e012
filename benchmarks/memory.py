"""Memory under concurrent large uploads: ``make bench-memory``.

Starts ``provenance serve`` on the embedded stack in a temporary data dir (a real server process on
127.0.0.1), then sends ``--concurrency`` certifications at once of a ``--side`` x ``--side`` PNG of zeros
(6320 x 6320 = 39.9 MP by default, just under the 40 MP limit: the upload of issue #9), then as many
verifications at once of such an image that was never certified (the worst case for reading: every
rescaling is tried). For each phase it prints the server's resident memory before, its peak during the
phase (``VmHWM``, reset between phases through ``/proc/PID/clear_refs``), the status codes and the time.

The target: four concurrent 39.9 MP uploads keep the server under 2.5 GB.

Then the latency of a normal verification (a 512 x 512 image never certified) while ``--concurrency``
clients keep sending such 39.9 MP images to ``/v1/verify``, as a ratio to its latency on the idle server
(the target: under 1 s under that load). Every client of the benchmark is 127.0.0.1, so the server runs
without the per-address verify budget (``PROVENANCE_VERIFY_PIXELS_PER_MIN=0``) and each load client sends
a 'verify' key of its own: the load stands for as many addresses, each sending as fast as it can.

    python -m benchmarks.memory [--side 6320] [--concurrency 4] [--pixel-budget N] [--wait-s S]
                                      [--latency-only]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from provenance.chain.anvil import free_port

TARGET_MB = 2500
TARGET_LOADED_S = 1.0  # a normal verification while large images are verified


def normal_png(side: int = 512, seed: int = 3) -> bytes:
    """A photo-like image (smooth gradients and texture) that was never certified: a normal verification."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([x * 200, y * 180, (x + y) * 90], axis=-1) + rng.normal(0, 12, (side, side, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def zero_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(out, "PNG", compress_level=9)
    return out.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _small(fmt: str, **kwargs: object) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, fmt, **kwargs)
    return out.getvalue()


def _after_ihdr(png: bytes, extra: bytes) -> bytes:
    return png[:33] + extra + png[33:]  # signature (8) + IHDR chunk (25)


def pathological_files() -> dict[str, bytes]:
    """Uploads whose structure, not their pixels, is the attack; each is a valid file of its format.

    The first is the one of issue #9: 1.5 million empty tEXt chunks (21 MB) took 56 s to verify.
    """
    png, jpeg = _small("PNG"), _small("JPEG", quality=90)
    empty_text = _png_chunk(b"tEXt", b"")
    files = {
        "png-1.5M-empty-text-chunks": _after_ihdr(png, empty_text * 1_500_000),
        "png-100k-empty-idat-chunks": png[:-12] + _png_chunk(b"IDAT", b"") * 100_000 + png[-12:],
        "png-9MB-iccp": _after_ihdr(png, _png_chunk(b"iCCP", b"icc\x00\x00" + os.urandom(9 << 20))),
        "png-9MB-exif": _after_ihdr(png, _png_chunk(b"eXIf", b"MM\x00\x2a" + os.urandom(9 << 20))),
        "png-ztxt-bomb-64MB": _after_ihdr(png, _png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * (64 << 20), 1))),
        "png-header-50000x50000": _png_bomb(50_000, 50_000),
    }
    app1 = b"\xff\xe1" + struct.pack(">H", 65_535) + b"http://ns.adobe.com/xap/1.0/\x00" + b"x" * (65_533 - 29)
    files["jpeg-10MB-xmp"] = jpeg[:2] + app1 * 160 + jpeg[2:]
    files["jpeg-5000-comments"] = jpeg[:2] + (b"\xff\xfe" + struct.pack(">H", 3) + b"c") * 5_000 + jpeg[2:]
    files["jpeg-500-scans"] = _many_scans(_small("JPEG", quality=90, progressive=True), 500)
    webp = _small("WEBP", quality=80)
    body = webp[12:] + (b"JUNK" + struct.pack("<I", 0)) * 5_000
    files["webp-5000-chunks"] = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    return files


def _png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, all zero, compressed to a few hundred kB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(1)
    row = b"\x00" * (width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(min(height, 100))) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _many_scans(progressive: bytes, scans: int) -> bytes:
    """A progressive JPEG with its last scan repeated until it has ``scans`` scans."""
    last = progressive.rfind(b"\xff\xda")
    end = progressive.rfind(b"\xff\xd9")
    return progressive[:last] + progressive[last:end] * scans + progressive[end:]


def refusal_times(server: Server) -> list[tuple[str, int, int, float]]:
    """(name, bytes, status, seconds) of verifying each pathological file on the server."""
    rows = []
    for name, data in pathological_files().items():
        start = time.perf_counter()
        response = httpx.post(f"{server.url}/v1/verify", files={"file": (name, data)}, timeout=600)
        rows.append((name, len(data), response.status_code, time.perf_counter() - start))
    return rows


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) // 1024
    return values


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    key: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, timeout_s: float = 120.0) -> Server:
    """``provenance serve`` on a free port with its own data dir; returns once /healthz answers."""
    port = free_port()
    env = {**os.environ, "PROVENANCE_DATA_DIR": str(data_dir), "PROVENANCE_PORT": str(port), **(extra_env or {})}
    env.pop("DATABASE_URL", None)
    log = data_dir.parent / f"{data_dir.name}.server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "provenance.cli", "serve"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503):
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    key = (data_dir / "admin.key").read_text().strip()
    return Server(process, url, key, log)


@dataclass
class Phase:
    name: str
    rss_before_mb: int
    peak_mb: int
    statuses: Counter[int]
    seconds: float


def concurrent_posts(server: Server, path: str, data: bytes, concurrency: int, *, auth: bool) -> Phase:
    """``concurrency`` POSTs of ``data`` at once; the server's RSS before and its peak while they ran."""
    pid = server.process.pid
    reset_peak(pid)
    before = proc_status(pid)["VmRSS"]
    headers = {"Authorization": f"Bearer {server.key}"} if auth else {}

    def post(index: int) -> int:
        files = {"file": (f"zeros-{index}.png", data, "image/png")}
        return httpx.post(f"{server.url}{path}", files=files, headers=headers, timeout=600).status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = Counter(pool.map(post, range(concurrency)))
    seconds = time.perf_counter() - start
    return Phase(path, before, proc_status(pid)["VmHWM"], statuses, seconds)


@dataclass
class Latency:
    idle_s: list[float]
    loaded_s: list[float]
    load_statuses: Counter[int]

    @property
    def ratio(self) -> float:
        return statistics.median(self.loaded_s) / statistics.median(self.idle_s)


def client_keys(data_dir: Path, count: int) -> list[str]:
    """``count`` keys with the 'verify' scope, each for an account of its own (``provenance apikey create``)."""
    keys = []
    for index in range(count):
        out = subprocess.run(
            [sys.executable, "-m", "provenance.cli", "apikey", "create", "--name", f"load-{index}",
             "--scopes", "verify", "--data-dir", str(data_dir)],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        keys.append(out.stdout.strip().splitlines()[-1])
    return keys


def latency_under_load(server: Server, normal: bytes, load: bytes, load_keys: list[str], samples: int = 5) -> Latency:
    """Median latency of ``samples`` verifications of ``normal``, alone and while one client per key in
    ``load_keys`` keeps verifying ``load`` (one request after another, no pause). Each load client sends its own
    'verify' key: four clients, not one, as four addresses would be."""

    # The normal caller is another client than the load (its own key here, its own address in real life): the
    # pixel budget's per-client share would otherwise hold it behind the load's images.
    other = {"Authorization": f"Bearer {server.key}"}

    def verify(data: bytes, name: str, headers: dict[str, str] | None = None) -> tuple[int, float]:
        start = time.perf_counter()
        files = {"file": (name, data)}
        status = httpx.post(f"{server.url}/v1/verify", files=files, headers=headers, timeout=600).status_code
        return status, time.perf_counter() - start

    verify(normal, "warm.png", other)  # first-use allocations and imports
    idle = [verify(normal, "normal.png", other)[1] for _ in range(samples)]
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def keep_sending(index: int) -> None:
        while not stop.is_set():
            status, _ = verify(load, f"large-{index}.png", {"Authorization": f"Bearer {load_keys[index]}"})
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=keep_sending, args=(i,), daemon=True) for i in range(len(load_keys))]
    for thread in threads:
        thread.start()
    time.sleep(3.0)  # the large uploads are in and being decoded
    loaded = []
    for _ in range(samples):
        status, seconds = verify(normal, "normal.png", other)
        if status != 200:
            raise RuntimeError(f"a normal verification under load answered {status}")
        loaded.append(seconds)
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=600)
    return Latency(idle, loaded, statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=6320, help="image side in pixels (6320: 39.9 MP)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pixel-budget", type=int, default=None, help="PROVENANCE_PIXEL_BUDGET for the server")
    parser.add_argument("--wait-s", type=float, default=None, help="PROVENANCE_PIXEL_BUDGET_WAIT_S for the server")
    parser.add_argument("--latency-only", action="store_true", help="only the latency of a verify under load")
    args = parser.parse_args(argv)

    # One client address (127.0.0.1) stands for many here: no per-address verify budget (see the docstring).
    env: dict[str, str] = {"PROVENANCE_VERIFY_PIXELS_PER_MIN": "0"}
    if args.pixel_budget is not None:
        env["PROVENANCE_PIXEL_BUDGET"] = str(args.pixel_budget)
    if args.wait_s is not None:
        env["PROVENANCE_PIXEL_BUDGET_WAIT_S"] = str(args.wait_s)
    data = zero_png(args.side)
    megapixels = args.side * args.side / 1e6
    print(
        f"{args.concurrency} concurrent uploads of a {args.side}x{args.side} PNG of zeros ({megapixels:.1f} MP, "
        f"{len(data) / 1e3:.0f} kB); server env {env or 'defaults'}"
    )
    with tempfile.TemporaryDirectory(prefix="provenance-memory-") as tmp:
        data_dir = Path(tmp) / "data"
        server = start_server(data_dir, env)
        try:
            idle = proc_status(server.process.pid)["VmRSS"]
            print(f"server idle: {idle} MB RSS")
            phases, refusals = [], []
            if not args.latency_only:
                phases = [
                    concurrent_posts(server, "/v1/certify", data, args.concurrency, auth=True),
                    concurrent_posts(server, "/v1/verify", data, args.concurrency, auth=False),
                ]
                refusals = refusal_times(server)
            latency = latency_under_load(server, normal_png(), data, client_keys(data_dir, args.concurrency))
        finally:
            server.stop()
    loaded = statistics.median(latency.loaded_s)
    load_codes = ", ".join(f"{code} x{count}" for code, count in sorted(latency.load_statuses.items()))
    print(
        f"verify of a 512x512 image: {statistics.median(latency.idle_s):.2f} s idle, {loaded:.2f} s (median; "
        f"max {max(latency.loaded_s):.2f} s) while {args.concurrency} clients verify {megapixels:.1f} MP images "
        f"({load_codes}): {latency.ratio:.1f}x; target under {TARGET_LOADED_S:g} s: "
        f"{'met' if loaded < TARGET_LOADED_S else 'NOT met'}"
    )
    if args.latency_only:
        return 0 if loaded < TARGET_LOADED_S else 1
    print(f"{'phase':<12} {'RSS before':>11} {'peak RSS':>9} {'seconds':>8}  statuses")
    worst = 0
    for phase in phases:
        codes = ", ".join(f"{code} x{count}" for code, count in sorted(phase.statuses.items()))
        print(f"{phase.name:<12} {phase.rss_before_mb:>8} MB {phase.peak_mb:>6} MB {phase.seconds:>8.1f}  {codes}")
        worst = max(worst, phase.peak_mb)
    verdict = "within" if worst < TARGET_MB else "OVER"
    print(f"peak {worst} MB: {verdict} the {TARGET_MB} MB target")
    print(f"\n{'pathological upload (POST /v1/verify)':<40} {'bytes':>11} {'status':>6} {'seconds':>8}")
    slowest = 0.0
    for name, size, status, seconds in refusals:
        print(f"{name:<40} {size:>11,} {status:>6} {seconds:>8.3f}")
        slowest = max(slowest, seconds)
    refused = all(400 <= status < 500 for _, _, status, _ in refusals)
    print(f"every one refused with a 4xx: {refused}; slowest {slowest:.3f} s (target: at most 1 s, upload included)")
    return 0 if worst < TARGET_MB and refused and slowest <= 1.0 and loaded < TARGET_LOADED_S else 1


if __name__ == "__main__":
    sys.exit(main())
