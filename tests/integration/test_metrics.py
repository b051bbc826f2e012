"""GET /metrics, request ids and JSON logs: the counters move with real requests on the embedded stack, a
multiprocess directory sums several processes, and the dashboard only asks for metrics the app exports."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from provenance.observability.http import exported_names
from provenance.runtime.services import Services
from tests.conftest import _free_port, encode, photo, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "provenance-dashboard.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    """Every sample of ``/metrics``, parsed with the Prometheus client's own parser: (name, labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))


def new_key(services: Services, *scopes: str, rate: int | None = None) -> dict[str, str]:
    account = services.accounts.ensure_account(f"metrics-{secrets.token_hex(4)}")
    _, key = services.accounts.create_key(account.id, list(scopes), name=account.name, rate_per_min=rate)
    return {"Authorization": f"Bearer {key}"}


def test_counters_move_with_certify_verify_and_a_refusal(client: TestClient, services: Services) -> None:
    before = scrape(client)
    image = encode(photo("coffee.png")[:300, :300])
    certified = client.post("/v1/certify", files={"file": ("coffee.png", image)})
    assert certified.status_code == 201, certified.text
    record = certified.json()
    wait_for(lambda: client.get(f"/v1/records/{record['record_id']}").json()["status"] == "registered")
    marked = client.get(record["image_url"]).content
    verified = client.post("/v1/verify", files={"file": ("marked.png", marked)})
    assert verified.status_code == 200 and verified.json()["verdict"] == "authentic", verified.text
    limited = new_key(services, "certify", rate=1)
    answers = [client.get("/v1/keys", headers=limited).status_code for _ in range(3)]
    assert answers[-1] == 429, answers
    assert client.get("/no/such/path/" + secrets.token_hex(8)).status_code == 404

    after = scrape(client)
    grew = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert grew("provenance_certifications_total", kind="upload") == 1
    assert grew("provenance_verifications_total", verdict="authentic") == 1
    assert grew("provenance_refusals_total", reason="rate_limited") >= 1
    assert grew("provenance_api_errors_total", code="rate_limited") >= 1
    assert grew("provenance_registration_lag_seconds_count", anchoring="single") >= 1
    # Requests by route template and status; the record id never becomes a label value.
    assert grew("provenance_http_requests_total", method="POST", route="/v1/certify", status="201") == 1
    assert grew("provenance_http_requests_total", method="POST", route="/v1/verify", status="200") == 1
    assert grew("provenance_http_requests_total", route="/v1/keys", status="429") >= 1
    assert grew("provenance_http_requests_total", route="/v1/records/{record_id}", status="200") >= 1
    assert grew("provenance_http_requests_total", route="unmatched", status="404") == 1
    assert grew("provenance_http_request_duration_seconds_count", method="POST", route="/v1/certify") == 1
    routes = {dict(labels).get("route", "") for (_, labels) in after}
    assert not any(record["record_id"] in route for route in routes)
    # Read at scrape time from the database and the pixel budget.
    assert ("provenance_anchoring_backlog", (("status", "pending"),)) in after
    assert ("provenance_anchoring_backlog", (("status", "submitted"),)) in after
    assert ("provenance_job_queue_depth", (("status", "queued"),)) in after
    assert value(after, "provenance_pixel_budget_capacity_pixels") >= services.settings.pixel_budget
    assert value(after, "provenance_pixel_budget_in_use_pixels") == 0  # nothing in flight between requests
    # No secret and no caller in any label: keys, accounts and addresses are never label values.
    text = client.get("/metrics").text
    assert "Bearer" not in text and "pvk_" not in text and "testclient" not in text
    # Everything the app exports under its prefix is in the list the dashboard test checks against.
    assert {name for name, _ in after if name.startswith("provenance_")} <= exported_names()


def test_request_id_is_echoed_when_sane_and_made_otherwise(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-Id": "req-42.a:b"})
    assert given.headers["X-Request-Id"] == "req-42.a:b"
    for bad in ("x" * 129, "two words", 'quote"d', "-starts-with-dash", ""):
        made = client.get("/healthz", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert made != bad and re.fullmatch(r"[0-9a-f]{32}", made), (bad, made)
    first, second = (client.get("/healthz").headers["X-Request-Id"] for _ in range(2))
    assert first != second
    assert client.get("/no/such/path").headers["X-Request-Id"]  # error answers carry it too


def test_metrics_is_not_in_the_openapi_document(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


COUNT_IN_A_PROCESS = """
from provenance.observability import metrics
metrics.VERDICTS.labels(verdict="authentic").inc()
metrics.CERTIFICATIONS.labels("upload").inc(2)
metrics.PIXELS_IN_USE.inc(1000)
"""

SCRAPE_IN_A_PROCESS = """
from provenance.observability.http import scrape
print(scrape(None).decode())
"""


def test_multiprocess_directory_sums_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS], env=env, check=True, cwd=ROOT, timeout=120)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
    out = subprocess.run(
        [sys.executable, "-c", SCRAPE_IN_A_PROCESS], env=env, check=True, cwd=ROOT, timeout=120, capture_output=True
    ).stdout.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    assert value(samples, "provenance_verifications_total", verdict="authentic") == 2
    assert value(samples, "provenance_certifications_total", kind="upload") == 4
    # A live-sum gauge counts live processes only: both writers have exited.
    assert value(samples, "provenance_pixel_budget_in_use_pixels") == 0


def _exprs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "expr" and isinstance(item, str):
                yield item
            else:
                yield from _exprs(item)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def test_dashboard_asks_only_for_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) >= 6
    exported = exported_names()
    used: set[str] = set()
    for panel in panels:
        exprs = list(_exprs(panel))
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = set(re.findall(r"\bprovenance_[a-z0-9_]+", expr))
            assert names, f"panel {panel['title']!r} queries no provenance metric: {expr}"
            assert names <= exported, f"{panel['title']!r} asks for {sorted(names - exported)}"
            used |= names
    # The dashboard shows what the issue asks an operator to see.
    for wanted in (
        "provenance_http_requests_total",
        "provenance_http_request_duration_seconds_bucket",
        "provenance_verifications_total",
        "provenance_registration_lag_seconds_bucket",
        "provenance_anchoring_backlog",
        "provenance_job_queue_depth",
        "provenance_dependency_errors_total",
        "provenance_refusals_total",
    ):
        assert wanted in used, wanted
    # The data source is a variable, so the dashboard imports into any Grafana.
    assert any(v.get("type") == "datasource" for v in dashboard["templating"]["list"])


def test_scrape_config_targets_the_metrics_path() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["provenance"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["provenance"]["static_configs"][0]["targets"]


def test_json_logs_carry_the_request_id_the_answer_echoes(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PROVENANCE_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "provenance.cli", "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code in (200, 503)
            except httpx.HTTPError:
                assert process.poll() is None, log.read_text()[-3000:]
                return False

        wait_for(answers, timeout=120, interval=0.2)
        sent = "trace-" + secrets.token_hex(6)
        answer = httpx.get(url + "/v1/records/" + "0" * 32, headers={"X-Request-Id": sent}, timeout=10)
        assert answer.status_code == 404 and answer.headers["X-Request-Id"] == sent
        made = httpx.get(url + "/healthz", timeout=10).headers["X-Request-Id"]
        wait_for(lambda: made in log.read_text(), timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    banner = [line for line in lines if line.startswith("provenance ")]  # the start banner, not a log line
    logged = [json.loads(line) for line in lines if line not in banner]
    assert logged and all({"time", "level", "logger", "message", "request_id"} <= set(entry) for entry in logged)
    mine = [entry for entry in logged if entry["request_id"] == sent]
    assert mine and any("/v1/records/" in entry["message"] and "404" in entry["message"] for entry in mine)
    assert any(entry["request_id"] == made for entry in logged)


def test_a_bad_log_format_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PROVENANCE_LOG_FORMAT": "xml"}
    result = subprocess.run(
        [sys.executable, "-m", "provenance.cli", "serve", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    message = result.stderr.decode().strip()
    assert "PROVENANCE_LOG_FORMAT" in message and "Traceback" not in message and len(message.splitlines()) == 1


def test_json_formatter_keeps_exceptions_on_one_line() -> None:
    import logging

    from provenance.observability.logs import JsonFormatter, request_id_var

    token = request_id_var.set("abc")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed here" and entry["request_id"] == "abc"
    assert "ValueError: boom" in entry["exception"]
