"""`scalenet demo`: the report's numbers come from the run, its plots are real images, bad options are refused."""

import json

import numpy as np
import pytest

from scalenet import cli, zoo
from scalenet.demo import DemoError, run_demo
from scalenet.quant import quantize
from scalenet.zoo import digits


@pytest.fixture(scope="module")
def image_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo("image", out_dir=out, backend="sim", frames=3, quiet=True)


def _is_png_with_content(path):
    import matplotlib.image as mpimg
    raw = path.read_bytes()
    if not raw.startswith(b"\x89PNG\r\n\x1a\n") or len(raw) < 2000:
        return False
    pixels = mpimg.imread(path)
    return pixels.ndim == 3 and pixels.shape[0] > 100 and float(pixels.std()) > 0.01


def test_image_demo_numbers_come_from_the_run(image_demo):
    s = image_demo.summary
    x, y = digits.test_set()
    net, graph = zoo.float_net("digits_cnn"), zoo.build("digits_cnn")
    float_acc = (net.run(x)[net.outputs[0]].argmax(axis=1) == y).mean()
    int8_acc = (graph.run(quantize(x, graph.input.q))[graph.outputs[0]].argmax(axis=1) == y).mean()
    assert s["accuracy"] == {"float": float_acc, "int8": int8_acc, "test_images": 360}
    assert s["bit_exact"] == {"scheduled_vs_reference": True, "software_vs_reference": True,
                              "accelerator_vs_software": True, "frames": 3}
    assert [r["layer"] for r in s["layers"]] == [l.name for l in graph.layers]
    assert s["measured_latency_ms"] > 0 and s["predicted_latency_ms"] > 0
    assert s["deadline_met"]["measured"] == (s["measured_latency_ms"] <= s["deadline_ms"])
    assert {r["schedule"] for r in s["comparison"]} >= {"ours", "all-accelerator", "all-software"}


def test_image_demo_report_and_plots(image_demo):
    text = image_demo.report.read_text()
    s = image_demo.summary
    assert f"float {s['accuracy']['float'] * 100:.2f} %" in text
    assert f"measured {s['measured_latency_ms']:.4f} ms" in text
    for row in s["layers"]:
        assert f"| {row['layer']} | {row['resource']} | {row['predicted_ms']:.4f} |" in text
    assert len(image_demo.images) == 3
    for png in image_demo.images:
        assert png.name in text and _is_png_with_content(png), png
    assert json.loads((image_demo.report.parent / "summary.json").read_text())["accuracy"] == s["accuracy"]


def test_demo_cli_json(tmp_path, capsys):
    assert cli.main(["demo", "--backend", "model", "--frames", "2", "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "model" and result["bit_exact"]["frames"] == 2
    assert result["report"] == str(tmp_path / "report.md")


@pytest.mark.parametrize("argv, message", [
    (["--frames", "0"], "--frames must be at least 1"),
    (["--backend", "hw"], "--backend hw needs --target"),
    (["--deadline-ms", "-1"], "deadline must be a positive"),
    (["--weights", "speed=1"], "speed"),
])
def test_demo_bad_options(tmp_path, capsys, argv, message):
    assert cli.main(["demo", "--backend", "model", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unknown_app():
    with pytest.raises(DemoError, match="unknown application"):
        run_demo("video", out_dir="unused")


def test_eeg_demo_reports_detection_on_synthetic_data(tmp_path):
    from scalenet.demo import EEG_DEMO_HOURS
    from scalenet.eeg import detect, synth
    result = run_demo("eeg", out_dir=tmp_path, backend="model", frames=2, quiet=True)
    s = result.summary
    expected = detect.evaluate(zoo.build("eeg_mpcnn"), synth.generate(EEG_DEMO_HOURS * 3600, seed=2026, n_seizures=10))
    d = s["detection"]
    assert d["synthetic"] is True and s["data"] == "synthetic"
    assert (d["seizures"], d["detected"], d["false_alarms"]) == (expected["seizures"], expected["detected"],
                                                                 expected["false_alarms"])
    assert all(v for k, v in s["bit_exact"].items() if k != "frames")
    text = result.report.read_text()
    assert "**Synthetic EEG data**" in text and f"sensitivity {d['sensitivity'] * 100:.1f} %" in text
