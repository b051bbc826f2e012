"""What one caller can cost the operator: verify pixels per minute, the shared pixel budget, certifications
per day, chain transactions per minute; and what a caller cannot choose: links (Host header), token owners
(EIP-55), the database files' modes."""

from __future__ import annotations

import secrets
import stat
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from benchmarks import memory as memory_bench
from provenance.api.app import create_app
from provenance.auth import Caller, Limits, RedisRateLimiter
from provenance.config import Settings
from provenance.db.models import RecordStatus
from provenance.db.session import make_engine, migrate
from provenance.errors import RateLimitedError, ServerBusyError
from provenance.media.budget import PixelBudget
from provenance.runtime.services import Services
from tests.conftest import wait_for
from tests.integration.test_auth import certify, new_key, small_png

SMALL = 64 * 64  # pixels of small_png()


def _address() -> tuple[str, int]:
    return (f"198.51.100.{secrets.randbelow(200) + 20}", 40000)


def _verify_until_429(client: TestClient, data: bytes, headers: dict[str, str] | None = None, most: int = 20) -> list:
    responses = []
    for _ in range(most):
        responses.append(client.post("/v1/verify", files={"file": ("v.png", data)}, headers=headers))
        if responses[-1].status_code == 429:
            return responses
    raise AssertionError(f"no 429 after {most} verifications")


def test_verify_pixels_per_minute_per_address(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.settings, "verify_pixels_per_min", 2 * SMALL + 100)
    app = create_app(services=services)
    data = small_png(1)
    with TestClient(app, client=_address()) as one, TestClient(app, client=_address()) as two:
        responses = _verify_until_429(one, data)
        # Two images fit in the minute (up to four when the minute turns during the loop).
        assert 2 <= len(responses) - 1 <= 4 and {r.status_code for r in responses[:-1]} == {200}
        refused = responses[-1]
        body = refused.json()
        assert body["error"] == "rate_limited" and body["budget"] == "verify_pixels_per_min"
        assert body["limit"] == 2 * SMALL + 100 and body["requested"] == SMALL
        assert "pixels per minute" in body["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert two.post("/v1/verify", files={"file": ("v.png", data)}).status_code == 200  # its own budget

        # A key with the 'verify' scope has a budget of its own; an admin key is not counted.
        verifier = new_key(services, "verify")
        monkeypatch.setattr(services.settings, "verify_key_pixels_per_min", SMALL)
        assert one.post("/v1/verify", files={"file": ("v.png", data)}, headers=verifier).status_code == 200
        assert one.post("/v1/verify", files={"file": ("v.png", data)}, headers=verifier).status_code in (200, 429)
        admin = {"Authorization": f"Bearer {(services.settings.resolved_data_dir / 'admin.key').read_text().strip()}"}
        for _ in range(4):
            assert one.post("/v1/verify", files={"file": ("v.png", data)}, headers=admin).status_code == 200


def test_verify_is_charged_from_the_header_before_decoding(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3000x3000 header over truncated data: the first upload pays 9 MP and fails to decode; the second is
    refused by the budget (429), not decoded (422)."""
    monkeypatch.setattr(services.settings, "verify_pixels_per_min", 10_000_000)
    truncated = memory_bench.zero_png(3000)[:10_000]
    with TestClient(create_app(services=services), client=_address()) as one:
        first = one.post("/v1/verify", files={"file": ("t.png", truncated)})
        assert first.status_code == 422 and first.json()["error"] == "corrupt_image", first.text
        second = one.post("/v1/verify", files={"file": ("t.png", truncated)})
        if second.status_code != 429:  # the minute turned between the two: the next one is refused
            second = one.post("/v1/verify", files={"file": ("t.png", truncated)})
        assert second.status_code == 429 and second.json()["requested"] == 9_000_000, second.text


def test_verify_budget_is_shared_through_redis(redis_url: str) -> None:
    settings = Settings(verify_pixels_per_min=1_000)
    limiters = [RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)]
    try:
        first, second = (Limits(settings, limiter) for limiter in limiters)
        client = f"203.0.113.{secrets.randbelow(250)}-{secrets.token_hex(4)}"
        with first.verify_cost(None, client, 600):
            pass
        with pytest.raises(RateLimitedError), second.verify_cost(None, client, 600):
            pass
        # Refused before decoding (busy): the pixels are given back.
        with pytest.raises(ServerBusyError), second.verify_cost(None, client, 400):
            raise ServerBusyError("full", retry_after_s=1)
        with second.verify_cost(None, client, 400):
            pass
        # An image larger than a whole minute's budget costs the whole budget: it is verified, alone.
        other = client + "-big"
        with first.verify_cost(None, other, 50_000):
            pass
        with pytest.raises(RateLimitedError), second.verify_cost(None, other, 1):
            pass
        admin = Caller("a" * 32, "admin", "0" * 12, frozenset({"admin"}), 0)
        for _ in range(5):
            with first.verify_cost(admin, client, 50_000):
                pass
    finally:
        for limiter in limiters:
            limiter.close()


def test_one_client_holds_at_most_its_share_and_does_not_block_others() -> None:
    budget = PixelBudget(100, wait_s=10, client_share=0.5)
    held = budget.acquire(50, client="a")
    order: list[str] = []
    second = threading.Thread(target=lambda: (budget.release(budget.acquire(40, client="a")), order.append("a")))
    second.start()
    time.sleep(0.1)
    assert order == []  # 'a' already holds its half: its second image waits...
    other = budget.acquire(40, client="b")  # ...without holding up another client behind it
    order.append("b")
    budget.release(other)
    budget.release(held)
    second.join(5)
    assert order == ["b", "a"] and budget.in_use == 0
    # A client holding nothing may always start one image, larger than its share.
    budget.release(budget.acquire(90, client="a", timeout_s=0))
    # Only a quarter of the line may be one client's.
    line = PixelBudget(10, wait_s=10, max_waiting=4, client_share=0.5)
    first = line.acquire(10, client="a")
    waiter = threading.Thread(target=lambda: line.release(line.acquire(5, client="a")))
    waiter.start()
    time.sleep(0.1)
    with pytest.raises(ServerBusyError, match="from this client"):
        line.acquire(5, client="a")
    line.release(first)
    waiter.join(5)
    assert line.in_use == 0


def test_small_images_have_a_reserved_lane() -> None:
    """A large image waiting for room does not hold up a small one; nor can small ones starve it."""
    budget = PixelBudget(100, wait_s=10, small_reserve=0.1)
    large = budget.acquire(60)
    order: list[str] = []
    waiting = threading.Thread(target=lambda: (budget.acquire(60), order.append("large")))
    waiting.start()
    time.sleep(0.1)
    small = budget.acquire(10, timeout_s=0)  # out of turn, in the reserved 10 pixels
    assert small.fast
    with pytest.raises(ServerBusyError):
        budget.acquire(10, timeout_s=0.1)  # the reserve is in use, and the line has a large image first
    budget.release(large)
    waiting.join(5)
    assert order == ["large"] and budget.in_use == 70
    assert budget.peak_in_use <= 100


def test_certify_quota_per_account(
    anonymous_client: TestClient, client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.settings, "quota_certify_per_day", 2)
    headers = new_key(services, "certify")
    bad = anonymous_client.post("/v1/certify", files={"file": ("x.png", b"not an image")}, headers=headers)
    assert bad.status_code in (400, 415, 422)  # a refused upload costs nothing
    certify(anonymous_client, headers)
    certify(anonymous_client, headers)
    over = anonymous_client.post("/v1/certify", files={"file": ("s.png", small_png())}, headers=headers)
    assert over.status_code == 429 and over.json()["error"] == "quota_exceeded", over.text
    assert over.json()["quota"] == "certify_per_day" and over.json()["limit"] == 2
    assert over.json()["resets_at"].endswith("T00:00:00Z") and 1 <= int(over.headers["Retry-After"]) <= 24 * 3600
    # Another account, and the operator's admin key, are not affected.
    certify(anonymous_client, new_key(services, "certify"))
    for _ in range(3):
        assert client.post("/v1/certify", files={"file": ("s.png", small_png())}).status_code == 201


def test_an_account_over_its_single_registrations_waits_for_a_batch(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        anchor_poll_interval_s=0.05,
        anchor_single_per_account_per_min=2,
        batch_max_seconds=0.5,
    )
    services = Services.open(settings)
    try:
        with TestClient(create_app(services=services)) as api:
            headers = new_key(services, "certify")
            ids = [certify(api, headers)["record_id"] for _ in range(5)]
            admin = {"Authorization": f"Bearer {(settings.resolved_data_dir / 'admin.key').read_text().strip()}"}
            admin_ids = [certify(api, admin)["record_id"] for _ in range(4)]

            def registered() -> bool:
                return all(services.repository.get(i).status == RecordStatus.REGISTERED for i in ids + admin_ids)

            wait_for(registered, timeout=60)
            records = [services.repository.get(i) for i in ids]
            assert [r.batch_root is not None for r in records] == [False, False, True, True, True]
            assert all(r.tx_hash for r in records[:2])
            roots = {r.batch_root for r in records[2:]}
            assert all(services.repository.get_batch(root).status == RecordStatus.REGISTERED for root in roots)
            assert all(services.repository.get(i).batch_root is None for i in admin_ids)  # the operator: exempt
            shown = api.get(f"/v1/records/{ids[-1]}").json()
            assert shown["status"] == "registered"
    finally:
        services.close()


def test_a_forged_host_header_never_appears_in_an_answer(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = {"Host": "attacker.example"}
    assert services.settings.public_url is None
    created = client.post("/v1/certify", files={"file": ("h.png", small_png())}, headers=forged)
    assert created.status_code == 201, created.text
    record_id = created.json()["record_id"]
    idempotent = {**forged, "Idempotency-Key": secrets.token_hex(8)}
    replayed = client.post("/v1/certify", files={"file": ("h.png", small_png(7))}, headers=idempotent)
    answers = [
        created,
        replayed,
        client.get(f"/v1/records/{record_id}", headers=forged),
        client.get("/v1/records?mine=true&limit=5", headers=forged),
        client.get("/v1/records?limit=5", headers=forged),
        client.post("/v1/verify", files={"file": ("h.png", small_png(7))}, headers=forged),
    ]
    for answer in answers:
        assert answer.status_code < 400, answer.text
        assert "attacker.example" not in answer.text and "testserver" not in answer.text
    record = answers[2].json()
    assert record["image_url"] == f"/v1/records/{record_id}/image"
    assert record["ipfs_url"] == f"/ipfs/{record['cid']}"
    assert client.get(record["image_url"]).status_code == 200  # a relative link that works

    monkeypatch.setattr(services.settings, "public_url", "https://provenance.example/")
    shown = client.get(f"/v1/records/{record_id}", headers=forged).json()
    assert shown["image_url"] == f"https://provenance.example/v1/records/{record_id}/image"
    assert shown["ipfs_url"].startswith("https://provenance.example/ipfs/")


def test_database_files_are_private(services: Services, tmp_path: Path) -> None:
    data_dir = services.settings.resolved_data_dir
    files = [data_dir / name for name in ("provenance.db", "provenance.db-wal", "provenance.db-shm")]
    for path in files:
        if path.exists():  # -wal/-shm exist while connections are open
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert files[0].exists()

    # A database left 0644 by an older version is tightened at the next start, -wal and -shm with it.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrate(engine)
    for path in tmp_path.glob("old.db*"):
        path.chmod(0o644)
    engine.dispose()
    again = make_engine(url)
    try:
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.glob("old.db*")}
        assert "old.db" in modes and set(modes.values()) == {0o600}, modes
    finally:
        again.dispose()
