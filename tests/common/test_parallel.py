import os

import pytest

from kiln.components.common.parallel import OrderedPool, WorkerDied


def test_results_come_back_in_input_order():
    with OrderedPool(2) as pool:
        assert list(pool.map(abs, range(-20, 20), window=3)) == [abs(i) for i in range(-20, 20)]


def test_a_dead_worker_raises_instead_of_hanging():
    with OrderedPool(1) as pool, pytest.raises(WorkerDied, match="died"):
        list(pool.map(os._exit, [3]))  # the worker process exits mid-task
