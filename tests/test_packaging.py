"""The package installs as one `scalenet` from a built wheel, with every folder mapped in."""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_installs_and_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("scalenet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in ("rtl", "cosim", "driver", "scheduler", "boards", "zoo"):
        assert f"scalenet/{sub}/__init__.py" in names
    assert "scalenet/zoo/digits_cnn.npz" in names
    assert not any(n.startswith("tests/") for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    out = subprocess.run([str(py), "-c", "import scalenet, scalenet.rtl; print(scalenet.__file__); "
                                         "print(scalenet.rtl.__file__)"],
                         check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert all(str(env_dir) in p for p in out), out
    run = subprocess.run([str(env_dir / "bin" / "scalenet"), "zoo", "--json"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr
    assert "lenet5" in run.stdout
