"""Project-wide pytest options."""


def pytest_addoption(parser):
    parser.addoption("--random-layers", type=int, default=200,
                     help="how many random layers the randomised-equivalence test draws (long profile: 10000)")
    parser.addoption("--random-layers-seed", type=int, default=None,
                     help="seed of the randomised-equivalence draw (default: derandomised, the same layers each run)")
