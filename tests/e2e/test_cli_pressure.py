"""`eventcenter pressure run` and `eventcenter sample-target` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli import run
from tests.sample_targets import CLI, gone, sample_target
from tests.servers import closed_port

QUICK = ("--start-rate", "50", "--warmup", "1s", "--hold", "3s", "--resolution", "0.1")


def test_pressure_run_finds_the_capacity_of_a_sample_target(tmp_path: Path) -> None:
    with sample_target(2, 20, command=CLI) as target:
        assert "capacity 100 req/s" in target.first_line
        result = run(
            "pressure", "run", "--target", target.url, "--slo-p95", "200ms",
            "--max-duration", "1m", *QUICK, "--json", "--report", "curve.png",
            cwd=tmp_path,
        )  # fmt: skip
    assert gone(target.pid)
    answer = json.loads(result.stdout)
    measurement = answer["measurement"]
    assert measurement["verdict"] == "capacity"
    assert 80 <= measurement["max_rps"] <= 120, measurement["curve"]
    assert answer["knee"]["verdict"] == "capacity"
    assert answer["explanation"][-1] == answer["knee"]["summary"]
    assert len(measurement["curve"]) == len(answer["knee"]["steps"]) >= 3
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_an_unreachable_target_is_one_line_and_a_failure(tmp_path: Path) -> None:
    target = f"http://127.0.0.1:{closed_port()}/"
    result = run("pressure", "run", "--target", target, "--slo-p95", "200ms", cwd=tmp_path,
                 check=False)  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: load-test target")
    assert target in lines[0]


def test_wrong_options_are_usage_errors(tmp_path: Path) -> None:
    slo = run("pressure", "run", "--target", "http://x", "--slo-p95", "fast", cwd=tmp_path,
              check=False)  # fmt: skip
    report = run("pressure", "run", "--target", "http://x", "--slo-p95", "1s", "--report",
                 "out.pdf", cwd=tmp_path, check=False)  # fmt: skip
    for result, says in ((slo, "slo-p95"), (report, ".png or .html")):
        assert result.returncode == 2
        assert result.stderr.startswith("error: "), result.stderr
        assert says in result.stderr
