"""The API against its own OpenAPI document: schemathesis generates requests for every
operation (valid and invalid ones) and sends them to ``eventcenter serve`` over real HTTP.

Whatever it sends, the answer is never a 5xx, and every 4xx is a JSON body that names the
problem (``error`` and ``reason``). The service runs as a child process with an admin key made
by ``eventcenter keys create --admin``; it is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis.generation import GenerationMode

from tests.e2e.test_http import GUARD_S, SCRIPT, Running

EXAMPLES = 15  # per operation: enough to reach every parameter's invalid values


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The base URL of a running ``eventcenter serve`` and an admin key for it."""
    home = tmp_path_factory.mktemp("fuzz")
    config = home / "center.toml"
    config.write_text(
        f'data_dir = "{home / "data"}"\n[http]\nport = 0\n[tuning]\ntester = "none"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCENTER_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    made = subprocess.run(
        [str(SCRIPT), "keys", "create", "--admin", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=GUARD_S,
        check=True,
    )
    key = json.loads(made.stdout.strip().splitlines()[-1])["key"]
    child = Running(config, env, home)
    try:
        started = child.line_with("running on")
        yield started.split("HTTP on ", 1)[1].split(";", 1)[0], key
    finally:
        child.kill()


def test_no_answer_is_a_server_error_and_every_refusal_names_its_problem(
    service: tuple[str, str],
) -> None:
    url, key = service
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    problems: list[tuple[str, str, int, str]] = []
    tried: set[str] = set()

    def check(case: Any) -> None:
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {key}"})
        tried.add(case.operation.label)
        status = response.status_code
        if status >= 500:
            problems.append((case.method, case.formatted_path, status, response.text[:300]))
        elif status >= 400:
            try:
                body = response.json()
            except ValueError:  # not JSON
                body = None
            if not (isinstance(body, dict) and body.get("error") and body.get("reason")):
                problems.append((case.method, case.formatted_path, status, response.text[:300]))

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = hypothesis.given(operation.as_strategy(generation_mode=mode))(check)
            try:
                hypothesis.settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    suppress_health_check=list(hypothesis.HealthCheck),
                    derandomize=True,
                    database=None,
                )(run)()
            except hypothesis.errors.Unsatisfiable:
                # Nothing of this operation can be made invalid (it takes no parameters).
                assert mode is GenerationMode.NEGATIVE, operation.label

    assert {operation.label for operation in operations} <= tried | {"GET /dashboard/state"}
    assert len(operations) >= 20, "every route of the API is in its document"
    shown = sorted({(m, p.split("?")[0], s, t[:120]) for m, p, s, t in problems})
    assert problems == [], shown[:12]
