"""The process pool kills an item at its deadline, survives worker crashes, and keeps results in order."""

from __future__ import annotations

import math
import os
import time

import pytest

from caopd_pl.verifiers.deadline_pool import DeadlinePool


def test_results_in_order_with_errors_reported_per_item():
    pool = DeadlinePool(math.sqrt, workers=2, timeout=5.0)
    try:
        results = pool.map([4.0, -1.0, 9.0] * 10)
    finally:
        pool.close()
    assert results[:3] == [("ok", 2.0), ("error", "ValueError: math domain error"), ("ok", 3.0)]
    assert results[3:] == results[:3] * 9


def test_stuck_item_costs_at_most_the_deadline_and_the_pool_recovers():
    pool = DeadlinePool(time.sleep, workers=2, timeout=0.5)
    try:
        start = time.monotonic()
        results = pool.map([30, 0, 30, 0, 0])
        elapsed = time.monotonic() - start
        assert [status for status, _ in results] == ["timeout", "ok", "timeout", "ok", "ok"]
        assert elapsed < 10  # two stuck items cost a deadline each plus a worker restart, not 30 s
        assert pool.timeouts == 2
        assert pool.map([0]) == [("ok", None)]
    finally:
        pool.close()


def test_worker_death_is_one_error_not_a_crash():
    from caopd_pl.verifiers.math import _verdict

    pool = DeadlinePool(os._exit, workers=1, timeout=5.0)
    try:
        status, message = pool.map([3])[0]
    finally:
        pool.close()
    assert status == "error" and message == "verifier worker died (exit code 3)"
    verdict = _verdict("42", status, message)  # the math verifier's verdict says "error" once
    assert verdict.status == "error" and verdict.detail == "error: verifier worker died (exit code 3)"


def test_workers_killed_while_idle_cost_no_item():
    # Something outside may kill an idle worker (an OOM killer; an engine's clean-up once reaped every process
    # started after it, the verifier's workers included): the next call must judge every item, none as an error.
    pool = DeadlinePool(math.sqrt, workers=2, timeout=5.0)
    try:
        assert pool.map([4.0]) == [("ok", 2.0)]
        for worker in pool._pool:
            worker.process.kill()
            worker.process.join(timeout=5)
        assert pool.map([4.0, 9.0, 16.0, 25.0]) == [("ok", 2.0), ("ok", 3.0), ("ok", 4.0), ("ok", 5.0)]
    finally:
        pool.close()


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="timeout > 0"):
        DeadlinePool(math.sqrt, workers=1, timeout=0)


def test_a_worker_killed_while_starting_is_started_again():
    # Under load a worker may still be starting when something outside kills it: the call judges every item.
    pool = DeadlinePool(math.sqrt, workers=2, timeout=5.0)
    try:
        pool._pool = [pool._start() for _ in range(2)]
        for worker in pool._pool:
            worker.process.kill()  # before it said "ready"
            worker.process.join(timeout=5)
        assert pool.map([4.0, 9.0]) == [("ok", 2.0), ("ok", 3.0)]
    finally:
        pool.close()
