"""Shared test settings: hypothesis without deadlines (torch warm-up makes first calls slow); the one-thread fixture;
xdist workers with the terminal variables of the command that started them."""

import os

import pytest
from hypothesis import settings

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment whatever the parent's (measured:
# unset in the parent); the CLI wraps its messages at COLUMNS, and the tests read messages at the width a plain
# pytest run gives them.
_TERMINAL_VARIABLES = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """In the xdist controller: hand each worker this process's terminal variables."""
    node.workerinput["terminal_variables"] = {name: os.environ.get(name) for name in _TERMINAL_VARIABLES}


def pytest_configure(config):
    """In an xdist worker: the controller's terminal variables, so messages wrap as in a serial run."""
    for name, value in getattr(config, "workerinput", {}).get("terminal_variables", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


settings.register_profile("optbench", deadline=None, max_examples=100)
settings.load_profile("optbench")


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-waits that make them 10× slower on a busy 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network_data(tmp_path_factory):
    """Small synthetic MNIST and CIFAR-10 in the official formats, as the data directory of the module's tests
    (one thread: tiny models)."""
    import torch

    from optbench.data import store
    from optbench.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("data")
    write_dataset("mnist", root / "mnist", n_train=200, n_test=50)
    write_dataset("cifar10", root / "cifar10", n_train=40, n_test=20)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.DATA_ENV, str(root))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield root
        torch.set_num_threads(threads)
