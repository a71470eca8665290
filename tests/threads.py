"""A fixture that runs a test on one torch thread: on 2 cores shared with other jobs, two
OpenMP threads that wait for each other made the loop's tests 20x slower."""

import pytest
import torch


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
