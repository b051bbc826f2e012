"""``make bench-datasets``: hashing and registering a dataset of 1,000, 5,000 and 10,000 small PNGs.

Runs the real service on a temporary data dir (SQLite, the embedded blockstore, a private anvil). For each
size it generates distinct 64x64 PNGs in a folder, then times ``DatasetService.register_folder`` (read, SHA-256,
decode, ISCC code, hygiene incl. all-pairs near-duplicate search, Merkle tree, signed manifest stored by CID,
one DB transaction) and the root's registration on chain (``LineageAnchorer`` through the anchoring pass,
one transaction whatever the size). ``--pin`` also stores the metadata-stripped copies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from provenance.config import Settings
from provenance.lineage.datasets import DatasetService
from provenance.runtime.services import Services


def make_images(folder: Path, count: int, seed: int) -> None:
    """``count`` distinct 64x64 PNGs: smooth random fields (distinct fingerprints, like small photos)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for n in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC)
        image.save(folder / f"{n:05d}.png", compress_level=1)


def register_on_chain(services: Services, datasets: DatasetService, dataset_id: str, timeout_s: float = 120) -> None:
    """Run anchoring passes (the lineage anchorer follows each) until the dataset's root is registered."""
    lease = services.writing.lease
    assert lease.try_acquire(), "another process holds the writer lease"
    try:
        services.anchorer.on_leadership()
        deadline = time.monotonic() + timeout_s
        while datasets.get(dataset_id).status != "registered":
            if time.monotonic() > deadline:
                raise TimeoutError("the root was not registered in time")
            services.anchorer.run_once()
    finally:
        lease.release()


def run(sizes: list[int], pin: bool) -> list[tuple[int, float, float]]:
    """(size, seconds to register, seconds to get the root on chain) for each size."""
    results = []
    with tempfile.TemporaryDirectory(prefix="provenance-bench-datasets-") as tmp:
        services = Services.open(Settings(data_dir=Path(tmp) / "data"), start_worker=False, signing=False)
        try:
            datasets = DatasetService(services.sessions, services.store, services.keys, services.chain.registry)
            for index, size in enumerate(sizes):
                folder = Path(tmp) / f"set{size}"
                made = time.perf_counter()
                make_images(folder, size, seed=index)
                made = time.perf_counter() - made
                start = time.perf_counter()
                result = datasets.register_folder(folder, name=f"bench-{size}", pin=pin)
                registered = time.perf_counter() - start
                start = time.perf_counter()
                register_on_chain(services, datasets, result.dataset.id)
                on_chain = time.perf_counter() - start
                near = len(result.hygiene.near_duplicates)
                print(
                    f"{size:>7} images  register {registered:7.2f} s ({registered / size * 1000:5.2f} ms/image)  "
                    f"root on chain {on_chain:5.2f} s  (generating the PNGs took {made:.1f} s; {near} near pairs)",
                    flush=True,
                )
                results.append((size, registered, on_chain))
        finally:
            services.close()
    return results


def main() -> None:
    """Parse the sizes, run, print the growth between the smallest and the largest size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,5000,10000", help="comma list of dataset sizes")
    parser.add_argument("--pin", action="store_true", help="also store metadata-stripped copies")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = run(sizes, args.pin)
    (small, t_small, _), (large, t_large, _) = results[0], results[-1]
    if large > small:
        print(f"growth: {large / small:.0f}x the images took {t_large / t_small:.1f}x the time to register")


if __name__ == "__main__":
    main()
