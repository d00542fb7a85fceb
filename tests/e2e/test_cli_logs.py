"""The log records of ``eventcenter run`` and ``eventcenter demo`` as a log collector reads them:
stderr, one JSON object per line, with the event's tenant, id and correlation id."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

SCRIPT = Path(sys.executable).parent / "eventcenter"
GUARD_S = 60.0  # only turns a hang into a failure

HANDLERS = """\
import logging

log = logging.getLogger("shop.payments")


async def charge(event, ctx):
    log.info("charging order %s", event.payload["order"])
    if event.payload.get("decline"):
        raise RuntimeError("card declined\\nby the bank")


def register(center):
    center.processor.subscribe("orders.*", charge, name="charge")
"""


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", **extra}


def records(stderr: str) -> list[dict[str, Any]]:
    """Every line of stderr as JSON: a line that is not one JSON object fails the test."""
    parsed = [json.loads(line) for line in stderr.splitlines()]
    assert all(isinstance(record, dict) for record in parsed)
    return parsed


def started_url(process: subprocess.Popen[bytes]) -> str:
    """The HTTP address from the line ``run`` prints once it serves (read with a deadline)."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + GUARD_S
    while b"HTTP on " not in seen or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise AssertionError(f"run did not start: {seen!r}")
        if select.select([process.stdout], [], [], left)[0]:
            seen += os.read(process.stdout.fileno(), 65536)
    line = next(line for line in seen.decode().splitlines() if "HTTP on " in line)
    return line.split("HTTP on ", 1)[1].split(";", 1)[0]


def test_run_writes_one_json_object_per_line_with_the_delivery_of_each_record(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop_handlers.py").write_text(HANDLERS)
    config = tmp_path / "center.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[http]\nport = 0\nauth = "none"\n'
        "[processor]\nmax_attempts = 2\nbackoff_base = 0.01\nbackoff_max = 0.02\n"
    )
    process = subprocess.Popen(
        [
            *(str(SCRIPT), "run", "--config", str(config), "--handlers", "shop_handlers:register"),
            *("--log-format", "json", "--log-level", "info"),
        ],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = started_url(process)
        with httpx.Client(base_url=url, timeout=GUARD_S) as client:
            answer = client.post(
                "/events",
                content=orjson.dumps(
                    [
                        {
                            "type": "orders.created",
                            "tenant": "acme",
                            "correlation_id": "checkout-7",
                            "payload": {"order": 7},
                        },
                        {
                            "type": "orders.created",
                            "tenant": "globex",
                            "payload": {"order": 8, "decline": True},
                        },
                    ]
                ),
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 202, answer.text
            ok_id, declined_id = answer.json()["ids"]
            deadline = time.monotonic() + GUARD_S
            while client.get("/metrics").text.count('dead_lettered_total{tenant="globex"} 1.0') < 1:
                assert time.monotonic() < deadline, "the declined order was never dead-lettered"
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=GUARD_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=GUARD_S)
    assert process.returncode == 0, err

    logged = records(err.decode())
    [charged] = [r for r in logged if r["message"] == "charging order 7"]
    assert charged["level"] == "info"
    assert charged["logger"] == "shop.payments"
    assert (charged["tenant"], charged["event_id"], charged["correlation_id"]) == (
        "acme",
        ok_id,
        "checkout-7",
    )
    assert (charged["event_type"], charged["subscription"]) == ("orders.created", "charge")
    assert charged["timestamp"].endswith("Z")
    # The processor's own records of the retry and of the dead letter name the delivery too,
    # and the error's two lines stay inside one JSON line.
    failures = [r for r in logged if r.get("event_id") == declined_id and r["level"] == "warning"]
    assert [r["message"].split(" ", 2)[:2] for r in failures] == [
        ["handler", "charge"],
        ["dead-lettering", "orders.created"],
    ]
    assert all(r["tenant"] == "globex" for r in failures)
    assert "card declined\\nby the bank" in failures[-1]["message"]
    assert any(r["logger"] == "eventcenter.lease" for r in logged)


def test_the_demo_takes_its_log_format_and_level_from_the_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SCRIPT), "demo", "--events", "60", "--rate", "3000", "--no-load-test"],
        cwd=tmp_path,
        env=environment(EVENTCENTER_LOG_FORMAT="json", EVENTCENTER_LOG_LEVEL="warning"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    logged = records(result.stderr)
    assert logged, "the demo's failing payments log warnings"
    assert {r["level"] for r in logged} <= {"warning", "error", "critical"}
    delivered = [r for r in logged if "event_id" in r]
    assert delivered
    assert all(r["tenant"] in {"acme", "globex", "initech"} for r in delivered), {
        r["tenant"] for r in delivered
    }
