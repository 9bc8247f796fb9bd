"""Fixtures shared by the test modules."""
import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture
def one_thread():
    """torch and BLAS on one thread, as in the worker pool: tiny tensors on a busy 2-core machine
    run many times slower with two spinning threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        yield
    torch.set_num_threads(threads)
