"""Project-wide pytest options, and the background bitstream build (tests/ci_bitstream.py)."""

import pytest

_BACKGROUND = {}


def pytest_addoption(parser):
    parser.addoption("--random-layers", type=int, default=200,
                     help="how many random layers the randomised-equivalence test draws (long profile: 10000)")
    parser.addoption("--random-layers-seed", type=int, default=None,
                     help="seed of the randomised-equivalence draw (default: derandomised, the same layers each run)")


def pytest_collection_modifyitems(config, items):
    """Tests that check the background bitstream run last, so the build overlaps everything else."""
    late = [item for item in items if item.get_closest_marker("bitstream")]
    items[:] = [item for item in items if not item.get_closest_marker("bitstream")] + late


def pytest_collection_finish(session):
    if any(item.get_closest_marker("bitstream") for item in session.items) and not session.config.option.collectonly:
        from ci_bitstream import BackgroundBuild
        _BACKGROUND["build"] = BackgroundBuild()


def pytest_sessionfinish(session, exitstatus):
    build = _BACKGROUND.pop("build", None)
    if build is not None:
        build.stop()


@pytest.fixture(scope="session")
def background_bitstream():
    """The build conftest started at collection (a test marked ``bitstream`` asks for it)."""
    if "build" not in _BACKGROUND:
        from ci_bitstream import BackgroundBuild
        _BACKGROUND["build"] = BackgroundBuild()
    return _BACKGROUND["build"]
