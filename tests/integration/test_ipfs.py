"""Stage 5: CIDs equal Kubo's, the blockstore round-trips, and the Kubo RPC client speaks the protocol."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from provenance.errors import IpfsError, NotFoundError
from provenance.ipfs.blockstore import LocalBlockstore
from provenance.ipfs.kubo import KuboClient
from provenance.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, build_dag, compute_cid

ROOT = Path(__file__).resolve().parents[2]

# Known vectors: what `ipfs add --cid-version=1` prints (the empty file is the well-known raw CID of
# sha256(""); "hello world\n" is the raw leaf Kubo gives for that 12-byte file).
KNOWN = {
    b"": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    b"hello world\n": "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
}

JS_HASH = """
const Hash = require('ipfs-only-hash'); const fs = require('fs');
(async () => { for (const p of process.argv.slice(1)) {
  console.log(await Hash.of(fs.readFileSync(p), { cidVersion: 1, rawLeaves: true })) } })()
"""


@pytest.mark.parametrize("data,cid", KNOWN.items())
def test_known_vectors(data: bytes, cid: str) -> None:
    assert compute_cid(data) == cid


def test_cids_match_an_independent_unixfs_importer(tmp_path: Path) -> None:
    """ipfs-only-hash (js-ipfs-unixfs-importer) with Kubo's CIDv1 settings, on files of 1 to 351 chunks."""
    sizes = [
        1,
        12,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        1_000_000,
        MAX_LINKS * CHUNK_SIZE,
        MAX_LINKS * CHUNK_SIZE + 1,
        (2 * MAX_LINKS + 3) * CHUNK_SIZE + 12345,
    ]
    paths = []
    for size in sizes:
        path = tmp_path / f"f{size}"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    out = subprocess.run(
        ["node", "-e", JS_HASH, *map(str, paths)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    expected = out.stdout.split()
    assert len(expected) == len(sizes)
    for path, cid in zip(paths, expected, strict=True):
        assert compute_cid(path.read_bytes()) == cid, path.name


def test_dag_shape_is_balanced_with_174_links() -> None:
    root, blocks = build_dag(b"x" * ((MAX_LINKS + 1) * CHUNK_SIZE))
    leaves = [b for b in blocks if b.cid[1] == 0x55]
    parents = [b for b in blocks if b.cid[1] == 0x70]
    assert len(leaves) == MAX_LINKS + 1
    assert len(parents) == 3  # a full node, a node with one leaf, and the root over both
    assert root.file_size == (MAX_LINKS + 1) * CHUNK_SIZE


def test_blockstore_round_trip_and_remove(tmp_path: Path) -> None:
    store = LocalBlockstore(tmp_path)
    big, small = os.urandom(3 * CHUNK_SIZE + 7), b"small file"
    added = store.add(big)
    assert added.created and added.cid == compute_cid(big)
    assert store.add(big).created is False
    assert store.cat(added.cid) == big and store.has(added.cid)
    other = store.add(small)
    store.remove(added.cid)
    assert not store.has(added.cid)
    with pytest.raises(NotFoundError):
        store.cat(added.cid)
    assert store.cat(other.cid) == small
    assert not store.has("not-a-cid")


class FakeKubo(BaseHTTPRequestHandler):
    """Kubo's documented RPC (docs.ipfs.tech/reference/kubo/rpc): POST-only /api/v0 endpoints,
    JSON answers, errors as HTTP 500 with {"Message", "Code", "Type"}. A remote Kubo node cannot run
    here, so the client is tested against this protocol double backed by a real blockstore."""

    store: LocalBlockstore
    calls: ClassVar[list[tuple[str, dict]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, message: str) -> None:
        self._reply(500, json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode())

    def do_GET(self) -> None:
        self._reply(405, b"405 - Method Not Allowed", "text/plain")

    def do_POST(self) -> None:
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).calls.append((url.path, params))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if url.path == "/api/v0/add":
            assert params == {
                "cid-version": "1",
                "raw-leaves": "true",
                "chunker": "size-262144",
                "hash": "sha2-256",
                "pin": "true",
            }
            boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
            part = body.split(b"--" + boundary)[1]
            data = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
            added = self.store.add(data)
            self._reply(200, json.dumps({"Name": "file", "Hash": added.cid, "Size": str(len(data))}).encode() + b"\n")
        elif url.path == "/api/v0/pin/ls":
            if self.store.has(params["arg"]):
                self._reply(200, json.dumps({"Keys": {params["arg"]: {"Type": "recursive"}}}).encode())
            else:
                self._error(f"path '{params['arg']}' is not pinned")
        elif url.path == "/api/v0/cat":
            try:
                self._reply(200, self.store.cat(params["arg"]), "text/plain")
            except NotFoundError:
                self._error("block was not found locally (offline): ipld: could not find " + params["arg"])
        elif url.path == "/api/v0/pin/rm":
            if not self.store.has(params["arg"]):
                self._error("not pinned or pinned indirectly")
            else:
                self.store.remove(params["arg"])
                self._reply(200, json.dumps({"Pins": [params["arg"]]}).encode())
        else:
            self._reply(404, b"404 page not found", "text/plain")


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[str]:
    FakeKubo.store = LocalBlockstore(tmp_path)
    FakeKubo.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKubo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_kubo_client_add_has_cat_remove(kubo: str) -> None:
    client = KuboClient(kubo)
    data = os.urandom(2 * CHUNK_SIZE + 1)
    added = client.add(data)
    assert added.cid == compute_cid(data) and added.created
    assert client.has(added.cid) and client.cat(added.cid) == data
    client.remove(added.cid)
    assert not client.has(added.cid)
    with pytest.raises(NotFoundError):
        client.cat(added.cid)
    assert {path for path, _ in FakeKubo.calls} == {"/api/v0/add", "/api/v0/pin/ls", "/api/v0/cat", "/api/v0/pin/rm"}


def test_kubo_client_refuses_a_node_with_other_cid_settings(kubo: str) -> None:
    client = KuboClient(kubo)
    original = FakeKubo.store.add

    def wrong_cid(data: bytes):  # a node configured for CIDv0 / other chunking returns another CID
        result = original(data + b"!")
        return result

    FakeKubo.store.add = wrong_cid  # type: ignore[method-assign]
    with pytest.raises(IpfsError, match="check the node's add settings"):
        client.add(b"some bytes")


def test_kubo_client_unreachable_node_is_a_clear_error() -> None:
    with pytest.raises(IpfsError, match="unreachable"):
        KuboClient("http://127.0.0.1:9", timeout_s=2).has("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
