"""Project-wide pytest options, and the background bitstream build (tests/ci_bitstream.py)."""

import pytest

_BACKGROUND = {}


def pytest_addoption(parser):
    parser.addoption("--random-layers", type=int, default=200,
                     help="how many random layers the randomised-equivalence test draws (long profile: 10000)")
    parser.addoption("--random-layers-seed", type=int, default=None,
                     help="seed of the randomised-equivalence draw (default: derandomised, the same layers each run)")


def pytest_collection_modifyitems(config, items):
    """Tests that check the background bitstream run last but one, so the build overlaps everything else;
    tests that compare measured time with a model (marker ``timed``) run after them, once the build — a
    place and route thrashing the shared caches on the other core — has finished."""
    def rank(item):
        return 2 if item.get_closest_marker("timed") else 1 if item.get_closest_marker("bitstream") else 0
    items.sort(key=rank)            # stable: the order within each group is kept


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
