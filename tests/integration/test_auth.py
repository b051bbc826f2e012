"""API keys, scopes, ownership, rate limits and quotas: real database, real Redis, real CLI."""

from __future__ import annotations

import secrets
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from provenance.api.app import create_app
from provenance.auth import (
    IMAGES_PER_DAY,
    AccountRepository,
    Limits,
    MemoryRateLimiter,
    RedisRateLimiter,
    bootstrap_admin,
)
from provenance.auth.keys import hash_key
from provenance.config import Settings
from provenance.db.session import make_engine, migrate, session_factory
from provenance.errors import QuotaExceededError
from provenance.runtime.services import Services
from tests.conftest import encode, wait_for

CLI = [sys.executable, "-m", "provenance.cli"]
SMALL = {"steps": 3, "width": 256, "height": 256}


def new_key(services: Services, *scopes: str, rate: int | None = None) -> dict[str, str]:
    """A key for a fresh account; returns the request headers that send it."""
    account = services.accounts.ensure_account(f"test-{secrets.token_hex(4)}")
    _, key = services.accounts.create_key(account.id, list(scopes), name=account.name, rate_per_min=rate)
    return {"Authorization": f"Bearer {key}"}


def small_png(seed: int | None = None) -> bytes:
    """A never-seen 64x64 image: certifies fast (too small to watermark)."""
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def certify(client: TestClient, headers: dict[str, str]) -> dict:
    response = client.post("/v1/certify", files={"file": ("s.png", small_png())}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def hit_until_429(client: TestClient, path: str, headers: dict[str, str] | None = None, most: int = 100) -> list:
    responses = []
    for _ in range(most):
        responses.append(client.get(path, headers=headers))
        if responses[-1].status_code == 429:
            return responses
    raise AssertionError(f"no 429 after {most} requests")


def test_openapi_declares_the_bearer_scheme(anonymous_client: TestClient) -> None:
    spec = anonymous_client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert {"ApiKey": []} in spec["paths"]["/v1/certify"]["post"]["security"]
    assert "/v1/records" in spec["paths"] and "/v1/account" in spec["paths"]


@pytest.mark.parametrize(
    "method,path,kwargs",
    [
        ("post", "/v1/certify", {"files": {"file": ("a.png", b"x")}}),
        ("post", "/v1/generations", {"json": {"prompt": "x", **SMALL}}),
        ("delete", "/v1/generations/nope", {}),
        ("post", "/v1/nft/mint", {"json": {"record_id": "nope", "to": "0x" + "11" * 20}}),
        ("post", "/v1/nft/vouchers", {"json": {"record_id": "nope", "to": "0x" + "11" * 20}}),
        ("get", "/v1/records?mine=true", {}),
        ("get", "/v1/account", {}),
    ],
)
def test_anonymous_writes_are_401(anonymous_client: TestClient, method: str, path: str, kwargs: dict) -> None:
    response = getattr(anonymous_client, method)(path, **kwargs)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized" and "Authorization: Bearer" in response.json()["detail"]


def test_reads_stay_public(anonymous_client: TestClient, client: TestClient) -> None:
    record = certify(client, {})
    for path in ("/v1/keys", "/v1/chain", "/healthz", f"/v1/records/{record['record_id']}", f"/ipfs/{record['cid']}"):
        assert anonymous_client.get(path).status_code == 200, path
    assert (
        anonymous_client.get(f"/v1/records/{record['record_id']}/image").content
        == anonymous_client.get(f"/ipfs/{record['cid']}").content
    )
    verified = anonymous_client.post("/v1/verify", files={"file": ("s.png", small_png(1))})
    assert verified.status_code == 200 and verified.json()["verdict"] == "unknown"


@pytest.mark.parametrize(
    "header",
    ["Bearer pvk_000000000000_" + "A" * 43, "Bearer not-a-key", "Basic dXNlcjpwYXNz", "pvk_plain"],
)
def test_a_bad_key_is_401_even_on_reads(anonymous_client: TestClient, header: str) -> None:
    response = anonymous_client.get("/v1/keys", headers={"Authorization": header})
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_key_without_the_scope_is_403(anonymous_client: TestClient, services: Services) -> None:
    headers = new_key(services, "verify")
    for method, path, kwargs in (
        ("post", "/v1/certify", {"files": {"file": ("a.png", small_png())}}),
        ("post", "/v1/generations", {"json": {"prompt": "x", **SMALL}}),
        ("post", "/v1/nft/mint", {"json": {"record_id": "nope", "to": "0x" + "11" * 20}}),
        ("post", "/v1/nft/vouchers", {"json": {"record_id": "nope", "to": "0x" + "11" * 20}}),
        ("get", "/v1/records", {}),
    ):
        response = getattr(anonymous_client, method)(path, headers=headers, **kwargs)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "forbidden"
    account = anonymous_client.get("/v1/account", headers=headers).json()
    assert account["scopes"] == ["verify"] and account["rate_per_min"] == services.settings.rate_limit_per_key_per_min


def test_a_key_over_its_rate_gets_429_with_retry_after(anonymous_client: TestClient, services: Services) -> None:
    headers = new_key(services, "certify", rate=3)
    responses = hit_until_429(anonymous_client, "/v1/keys", headers)
    # A fixed window: 3 per minute, or up to 6 when the minute turns during the loop.
    assert 3 <= len(responses) - 1 <= 6
    assert responses[0].headers["X-RateLimit-Limit"] == "3"
    refused = responses[-1]
    assert refused.json()["error"] == "rate_limited" and refused.json()["limit"] == 3
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Other callers are not affected.
    assert anonymous_client.get("/v1/keys", headers=new_key(services, "certify", rate=3)).status_code == 200


def test_public_per_address_limit(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.settings, "rate_limit_public_per_min", 4)
    app = create_app(services=services)
    with TestClient(app, client=("198.51.100.7", 40000)) as one, TestClient(app, client=("198.51.100.8", 40000)) as two:
        responses = hit_until_429(one, "/v1/records/nope")
        assert 4 <= len(responses) - 1 <= 8 and responses[0].status_code == 404
        assert responses[-1].json()["error"] == "rate_limited" and int(responses[-1].headers["Retry-After"]) >= 1
        assert two.get("/v1/records/nope").status_code == 404  # another address has its own count
    with TestClient(app, client=("198.51.100.9", 40000)) as guesser:
        wrong = {"Authorization": "Bearer pvk_000000000000_" + "B" * 43}
        responses = hit_until_429(guesser, "/v1/keys", wrong)  # guessing keys uses the address's budget
        assert {r.status_code for r in responses[:-1]} == {401}


def test_mint_is_for_the_records_own_account_and_counts_against_the_quota(
    anonymous_client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, other = new_key(services, "certify", "mint"), new_key(services, "certify", "mint")
    record = certify(anonymous_client, owner)
    holder = "0x" + "22" * 20
    for path in ("/v1/nft/mint", "/v1/nft/vouchers"):
        response = anonymous_client.post(path, json={"record_id": record["record_id"], "to": holder}, headers=other)
        assert response.status_code == 403 and "another account" in response.json()["detail"]

    monkeypatch.setattr(services.settings, "quota_mints_per_day", 1)
    wait_for(lambda: anonymous_client.get(f"/v1/records/{record['record_id']}").json()["status"] == "registered")
    missing = anonymous_client.post("/v1/nft/vouchers", json={"record_id": "nope", "to": holder}, headers=owner)
    assert missing.status_code == 404  # refused requests cost nothing
    body = {"record_id": record["record_id"], "to": holder}
    assert anonymous_client.post("/v1/nft/vouchers", json=body, headers=owner).status_code == 201
    over = anonymous_client.post("/v1/nft/vouchers", json=body, headers=owner)
    assert over.status_code == 429 and over.json()["error"] == "quota_exceeded"
    assert over.json()["quota"] == "mints_per_day" and over.json()["resets_at"].endswith("T00:00:00Z")
    assert "mints_per_day" in over.json()["detail"] and int(over.headers["Retry-After"]) <= 24 * 3600


def test_generated_images_quota_and_job_ownership(
    anonymous_client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.settings, "quota_images_per_day", 2)
    headers = new_key(services, "generate")
    too_many = anonymous_client.post("/v1/generations", json={"prompt": "x", "num_images": 3, **SMALL}, headers=headers)
    assert too_many.status_code == 429 and too_many.json()["error"] == "quota_exceeded"
    assert too_many.json()["quota"] == "images_per_day" and too_many.headers["Retry-After"]
    bad = {"prompt": "x", "num_images": 2, **SMALL, "width": 260}
    assert anonymous_client.post("/v1/generations", json=bad, headers=headers).status_code == 422  # not charged
    accepted = anonymous_client.post(
        "/v1/generations", json={"prompt": "a kite", "seed": 3, "num_images": 2, **SMALL}, headers=headers
    )
    assert accepted.status_code == 202, accepted.text
    again = anonymous_client.post("/v1/generations", json={"prompt": "x", **SMALL}, headers=headers)
    assert again.status_code == 429 and again.json()["used"] == 2

    job_id = accepted.json()["job_id"]
    stranger = anonymous_client.delete(f"/v1/generations/{job_id}", headers=new_key(services, "generate"))
    assert stranger.status_code == 403
    job = wait_for(
        lambda: (j := anonymous_client.get(f"/v1/generations/{job_id}").json())["status"] == "succeeded" and j,
        timeout=120,
    )
    mine = anonymous_client.get("/v1/records?mine=true", headers=headers).json()["items"]
    assert sorted(r["record_id"] for r in mine) == sorted(r["record_id"] for r in job["records"])
    assert services.jobs.get(job_id).account_id == services.repository.get(mine[0]["record_id"]).account_id


def test_records_mine_pages_through_only_the_callers_records(
    anonymous_client: TestClient, client: TestClient, services: Services
) -> None:
    headers = new_key(services, "certify")
    own = [certify(anonymous_client, headers)["record_id"] for _ in range(5)]
    someone_elses = certify(client, {})["record_id"]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"mine": "true", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = anonymous_client.get("/v1/records", params=params, headers=headers)
        assert page.status_code == 200, page.text
        seen += [r["record_id"] for r in page.json()["items"]]
        pages, cursor = pages + 1, page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == own[::-1] and pages == 3  # newest first, 2 + 2 + 1
    assert someone_elses not in seen
    assert anonymous_client.get("/v1/records?mine=true").status_code == 401
    assert anonymous_client.get("/v1/records", headers=headers).status_code == 403  # everyone's: admin only
    everyone = client.get("/v1/records", params={"limit": 10}).json()["items"]
    assert [r["record_id"] for r in everyone[:2]] == [someone_elses, own[-1]]
    bad = anonymous_client.get("/v1/records?mine=true&cursor=garbage", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"


def test_verify_can_require_a_key(
    anonymous_client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.settings, "verify_requires_key", True)
    upload = {"file": ("s.png", small_png(2))}
    assert anonymous_client.post("/v1/verify", files=upload).status_code == 401
    assert anonymous_client.post("/v1/verify", files=upload, headers=new_key(services, "certify")).status_code == 403
    assert anonymous_client.post("/v1/verify", files=upload, headers=new_key(services, "verify")).status_code == 200


def test_admin_key_file_on_first_start(anonymous_client: TestClient, services: Services, admin_key: str) -> None:
    path = services.settings.resolved_data_dir / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and admin_key.startswith("pvk_")
    account = anonymous_client.get("/v1/account", headers={"Authorization": f"Bearer {admin_key}"}).json()
    assert account["account_id"] == services.admin_account_id and account["account_name"] == "admin"
    assert set(account["scopes"]) == {"admin", "certify", "generate", "mint", "verify", "train"}
    assert account["rate_per_min"] == 0  # the operator's own key is not rate limited


def test_bootstrap_reuses_the_key_and_replaces_a_revoked_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    accounts = AccountRepository(session_factory(engine))
    with caplog.at_level("INFO"):
        first = bootstrap_admin(accounts, tmp_path)
    key = (tmp_path / "admin.key").read_text().strip()
    assert key not in caplog.text and str(tmp_path / "admin.key") in caplog.text  # where, never what
    assert bootstrap_admin(accounts, tmp_path) == first and (tmp_path / "admin.key").read_text().strip() == key
    accounts.revoke(accounts.authenticate(key).key_id)
    assert bootstrap_admin(accounts, tmp_path) == first  # same account, new key
    replaced = (tmp_path / "admin.key").read_text().strip()
    assert replaced != key and accounts.authenticate(replaced).account_id == first
    assert stat.S_IMODE((tmp_path / "admin.key").stat().st_mode) == 0o600
    engine.dispose()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_apikey_cli_create_list_revoke(anonymous_client: TestClient, services: Services, tmp_path: Path) -> None:
    data_dir = str(services.settings.resolved_data_dir)
    created = run_cli(
        "apikey", "create", "--name", "cli-user", "--scopes", "certify,verify", "--rate", "100/min",
        "--data-dir", data_dir, cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("pvk_") and created.stdout.count(key) == 1
    headers = {"Authorization": f"Bearer {key}"}
    account = anonymous_client.get("/v1/account", headers=headers).json()
    assert account["account_name"] == "cli-user" and account["rate_per_min"] == 100
    assert account["scopes"] == ["certify", "verify"]

    # Only the hash is stored: the key is nowhere in the database files (WAL included). They are read by another
    # process: opening and closing them here would drop this process's SQLite file locks (POSIX fcntl semantics)
    # and break the session's database for every later test.
    db = services.settings.resolved_data_dir / "provenance.db"
    files = [str(f) for f in db.parent.glob("provenance.db*")]
    found = subprocess.run(["grep", "-F", "-l", key, *files], capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout  # grep: 1 = no file contains it
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key_hash FROM api_keys WHERE id = ?", (account["key_id"],)).fetchall()
    assert rows == [(hash_key(key),)]

    listed = run_cli("apikey", "list", "--data-dir", data_dir, cwd=tmp_path)
    assert listed.returncode == 0 and account["key_id"] in listed.stdout and key not in listed.stdout

    revoked = run_cli("apikey", "revoke", account["key_id"], "--data-dir", data_dir, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    gone = anonymous_client.get("/v1/account", headers=headers)
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"]

    for bad in (("create", "--name", "x", "--scopes", "certify,root"), ("revoke", "000000000000")):
        result = run_cli("apikey", *bad, "--data-dir", data_dir, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.startswith("error:")
        assert result.stderr.strip().count("\n") == 0


def test_cli_acts_as_the_admin_account(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(small_png(7))
    result = run_cli("certify", "a.png", "--data-dir", "d", "--no-wait", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record_id = result.stdout.split('"record_id": "')[1].split('"')[0]
    engine = make_engine(f"sqlite:///{tmp_path / 'd' / 'provenance.db'}")
    try:
        admin = AccountRepository(session_factory(engine)).authenticate((tmp_path / "d" / "admin.key").read_text())
        with engine.connect() as conn:
            owner = conn.exec_driver_sql("SELECT account_id FROM records WHERE id = ?", (record_id,)).scalar()
        assert owner == admin.account_id and admin.account_name == "admin"
    finally:
        engine.dispose()


# --- the limiters themselves -------------------------------------------------------------------


def test_redis_limiter_shares_counts_between_instances(redis_url: str) -> None:
    first, second = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    bucket = f"test:{secrets.token_hex(4)}"
    try:
        decisions = [(first if i % 2 else second).hit(bucket, 5, 3600) for i in range(7)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
        assert decisions[4].remaining == 0 and decisions[-1].used == 5
        ttl = redis.Redis.from_url(redis_url).ttl(decisions[0].window_key)
        assert 0 < ttl <= 3601  # the counter expires with its window
        second.refund(decisions[0])
        assert first.hit(bucket, 5, 3600).allowed and not second.hit(bucket, 5, 3600).allowed

        # A daily quota through two service instances' Limits: one account, one budget.
        settings = Settings(quota_images_per_day=3)
        limits = [Limits(settings, first), Limits(settings, second)]
        caller = _caller()
        with limits[0].quota(caller, IMAGES_PER_DAY, 2):
            pass
        with pytest.raises(QuotaExceededError), limits[1].quota(caller, IMAGES_PER_DAY, 2):
            pass
        with pytest.raises(RuntimeError), limits[1].quota(caller, IMAGES_PER_DAY, 1):
            raise RuntimeError("the job could not be queued")  # refunded
        with limits[1].quota(caller, IMAGES_PER_DAY, 1):
            pass
    finally:
        first.close()
        second.close()


def test_memory_limiter_is_thread_safe() -> None:
    limiter = MemoryRateLimiter()
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            result = limiter.hit("bucket", 500, 3600).allowed
            with lock:
                allowed.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 500 and len(allowed) == 1600


def _caller():  # type: ignore[no-untyped-def]
    from provenance.auth import Caller

    return Caller(
        account_id=secrets.token_hex(16),
        account_name="quota-test",
        key_id="000000000000",
        scopes=frozenset({"generate"}),
        rate_per_min=None,
    )


def test_redis_outage_lets_rate_limits_pass_but_fails_quotas_closed() -> None:
    from provenance.chain.anvil import free_port
    from provenance.errors import DependencyUnavailableError

    dead = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        assert dead.hit("rate:someone", 5, 60).allowed  # verification stays up
        with pytest.raises(DependencyUnavailableError, match="Quotas cannot be checked"):
            dead.hit("quota:images_per_day:acct", 5, 86400)
    finally:
        dead.close()
