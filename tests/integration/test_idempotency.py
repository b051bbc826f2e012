"""Idempotency-Key on POST /v1/certify and /v1/generations: a retry gets the first answer, never a second record."""

from __future__ import annotations

import datetime as dt
import secrets
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import update

from provenance.db.models import GenerationJob, IdempotencyKey
from provenance.runtime.services import Services
from tests.conftest import encode, photo

JOB = {"prompt": "a lighthouse at dawn", "seed": 7, "steps": 2, "width": 64, "height": 64}


def record_count(services: Services) -> int:
    return sum(services.repository.counts().values())


def job_count(services: Services) -> int:
    with services.sessions() as session:
        return session.query(GenerationJob).count()


def post_certify(client: TestClient, data: bytes, key: str | None, **headers: str):  # type: ignore[no-untyped-def]
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/certify", files={"file": ("a.png", data)}, headers=headers)


def test_certify_retry_with_the_same_key_returns_the_first_record(client: TestClient, services: Services) -> None:
    data, key = encode(photo("coffee.png")), secrets.token_hex(8)
    before = record_count(services)
    first = post_certify(client, data, key)
    assert first.status_code == 201, first.text
    assert first.headers["Idempotent-Replayed"] == "false"
    again = post_certify(client, data, key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # same record id, sha256, status...
    assert record_count(services) == before + 1
    # Without a key the same upload is certified again: a new record with its own mark.
    other = post_certify(client, data, None)
    assert other.status_code == 201 and other.json()["record_id"] != first.json()["record_id"]
    assert record_count(services) == before + 2


def test_same_key_with_another_body_is_422(client: TestClient, services: Services) -> None:
    key = secrets.token_hex(8)
    assert post_certify(client, encode(photo("chelsea.png")), key).status_code == 201
    before = record_count(services)
    reused = post_certify(client, encode(photo("rocket.jpg")), key)
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
    assert "different request" in reused.json()["detail"]
    # The source type is part of the request too.
    changed = client.post(
        "/v1/certify",
        files={"file": ("a.png", encode(photo("chelsea.png")))},
        data={"source_type": "digitalArt"},
        headers={"Idempotency-Key": key},
    )
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
    assert record_count(services) == before


def test_keys_belong_to_one_account(client: TestClient, anonymous_client: TestClient, services: Services) -> None:
    account = services.accounts.ensure_account(f"newsroom-{secrets.token_hex(4)}")
    _, other_key = services.accounts.create_key(account.id, ["certify"], name="idem")
    data, key = encode(photo("astronaut.png")), secrets.token_hex(8)
    mine = post_certify(client, data, key)
    theirs = post_certify(anonymous_client, data, key, Authorization=f"Bearer {other_key}")
    assert mine.status_code == theirs.status_code == 201, theirs.text
    assert theirs.headers["Idempotent-Replayed"] == "false"
    assert mine.json()["record_id"] != theirs.json()["record_id"]


def test_concurrent_retries_make_one_record(client: TestClient, services: Services) -> None:
    data, key = encode(photo("motorcycle_left.png")), secrets.token_hex(8)
    before = record_count(services)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post_certify(client, data, key), range(6)))
    assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
    assert len({r.json()["record_id"] for r in responses}) == 1
    assert sorted(r.headers["Idempotent-Replayed"] for r in responses) == ["false"] + ["true"] * 5
    assert record_count(services) == before + 1


def test_a_failed_request_stores_nothing_and_can_be_retried(client: TestClient, services: Services) -> None:
    key = secrets.token_hex(8)
    broken = post_certify(client, b"this is not an image", key)
    assert broken.status_code == 415 and broken.json()["error"] == "unsupported_media_type"
    again = post_certify(client, b"this is not an image", key)  # not replayed: run again, refused again
    assert again.status_code == 415 and "Idempotent-Replayed" not in again.headers
    fixed = post_certify(client, encode(photo("coffee.png")), key)  # the same key, now with a good file
    assert fixed.status_code == 201 and fixed.headers["Idempotent-Replayed"] == "false"


def test_a_key_expires_after_24_hours(client: TestClient, services: Services) -> None:
    data, key = encode(photo("chelsea.png")), secrets.token_hex(8)
    first = post_certify(client, data, key).json()
    with services.sessions.begin() as session:  # a day goes by
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    later = post_certify(client, data, key)
    assert later.status_code == 201 and later.headers["Idempotent-Replayed"] == "false"
    assert later.json()["record_id"] != first["record_id"]


def test_malformed_key_is_refused(client: TestClient, services: Services) -> None:
    before = record_count(services)
    spaced = post_certify(client, encode(photo("coffee.png")), "has a space")
    assert spaced.status_code == 400 and spaced.json()["error"] == "bad_request"
    too_long = post_certify(client, encode(photo("coffee.png")), "k" * 256)
    assert too_long.status_code == 422 and too_long.json()["error"] == "validation_error"
    assert record_count(services) == before


def test_generation_retry_returns_the_same_job(client: TestClient, services: Services) -> None:
    key = secrets.token_hex(8)
    before = job_count(services)
    first = client.post("/v1/generations", json=JOB, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    with ThreadPoolExecutor(3) as pool:
        again = list(
            pool.map(lambda _: client.post("/v1/generations", json=JOB, headers={"Idempotency-Key": key}), range(3))
        )
    assert all(r.status_code == 202 and r.json()["job_id"] == first.json()["job_id"] for r in again)
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in again)
    assert job_count(services) == before + 1
    other = client.post("/v1/generations", json={**JOB, "seed": 8}, headers={"Idempotency-Key": key})
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert job_count(services) == before + 1
    client.delete(f"/v1/generations/{first.json()['job_id']}")  # leave the queue to the other tests
