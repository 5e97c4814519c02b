"""`scalenet schedule`: output, exit status and one-line errors."""

import json

import pytest

from scalenet import zoo
from scalenet.cli import main
from scalenet.scheduler import schedule as S
from scalenet.scheduler.metrics import build_cost_table


def _run(capsys, *argv):
    rc = main(["schedule", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def lenet_table():
    return build_cost_table(zoo.build("lenet5"), "zedboard")


def test_json_matches_the_library(capsys, lenet_table):
    fastest = S.schedule(lenet_table, 1.0, {"latency": 1}).latency_s
    deadline_ms = fastest * 1e3 * 1.2
    rc, out, err = _run(capsys, "lenet5", "--deadline-ms", str(deadline_ms), "--weights", "power=1,energy=0.5",
                        "--json")
    assert rc == 0 and err == ""
    data = json.loads(out)
    lib = S.schedule(lenet_table, deadline_ms / 1e3, {"power": 1, "energy": 0.5})
    assert data["feasible"] and data["schedule"]["deadline_met"]
    assert {r["layer"]: r["resource"] for r in data["schedule"]["layers"]} == lib.placement
    assert data["schedule"]["latency_s"] == lib.latency_s <= deadline_ms / 1e3
    assert [r["schedule"] for r in data["comparison"]] == ["ours", *S.BASELINES]
    assert data["weights"] == {"latency": 0.0, "power": 1.0, "energy": 0.5}
    assert data["power_modelled"] is True


def test_text_output_and_plot(capsys, tmp_path, lenet_table):
    png = tmp_path / "gantt.png"
    rc, out, _ = _run(capsys, "lenet5", "--deadline-ms", "1000", "--target", "zedboard", "--plot", str(png))
    assert rc == 0
    for name in ["ours", *S.BASELINES]:
        assert name in out
    assert "placement: c1=" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_infeasible_deadline_exits_3_with_the_best_latency(capsys, lenet_table):
    fastest = S.schedule(lenet_table, 1.0, {"latency": 1}).latency_s
    rc, out, err = _run(capsys, "lenet5", "--deadline-ms", str(fastest * 1e3 / 2), "--json")
    assert rc == 3
    data = json.loads(out)
    assert not data["feasible"] and data["schedule"]["latency_s"] == fastest
    assert "deadline infeasible" in err and f"{fastest * 1e3:.3f} ms" in err


@pytest.mark.parametrize("argv,message", [
    (["nonet", "--deadline-ms", "1"], "unknown model 'nonet'"),
    (["lenet5", "--deadline-ms", "1", "--target", "vax"], "unknown target 'vax'"),
    (["lenet5", "--deadline-ms", "1", "--weights", "power"], "malformed weights"),
    (["lenet5", "--deadline-ms", "1", "--weights", "speed=2"], "unknown objective 'speed'"),
    (["lenet5", "--deadline-ms", "-5"], "--deadline-ms must be a positive number"),
    (["lenet5", "--deadline-ms", "nan"], "--deadline-ms must be a positive number"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith("scalenet: error: ") and message in err and err.count("\n") == 1
