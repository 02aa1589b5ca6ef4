"""bench/scale.py's bookkeeping: which N counts as the largest within the targets, and its sizing inputs."""

from argparse import Namespace

from bench.scale import find_max, key_kind, sizing_inputs


def phase(webs, streams, met, transport="ws", **extra):
    return {"webs": webs, "streams": streams, "transport": transport, "targets": {"met": met},
            "tokens_per_s": streams * 50.0, **extra}


def test_the_largest_n_is_the_last_step_met_before_the_first_miss():
    phases = [phase(1, 50, True), phase(1, 100, True), phase(1, 200, False), phase(1, 300, True),
              phase(2, 50, True), phase(2, 100, True), phase(2, 200, True)]
    found = find_max(phases, [1, 2], ["ws"])
    assert found["1/ws"]["largest_streams"] == 100  # 300 met by chance after a miss does not count
    assert found["1/ws"]["first_miss"] == 200
    assert found["2/ws"]["largest_streams"] == 200 and found["2/ws"]["first_miss"] is None
    assert found["2/ws"]["tokens_per_s"] == 10_000


def test_no_step_met_means_no_largest_n_and_no_sizing_inputs():
    results = {"phases": [phase(1, 50, False)]}
    results["find_max"] = find_max(results["phases"], [1], ["ws"])
    assert results["find_max"]["1/ws"]["largest_streams"] is None
    args = Namespace(webs=[1], transports=["ws"], rate=50.0, tokens=200)
    assert sizing_inputs(results, args) == {}


def test_sizing_inputs_divide_streams_by_web_processes():
    measured = {"redis_ops_per_token": 0.2, "redis_bytes_per_running_stream": 9000.0, "redis_bytes_per_finished_reply": 18000.0,
                "db_rows_per_reply": 6.0, "db_transactions_per_reply": 5.0, "redis_cpu_us_per_op": 3.0}
    results = {"phases": [phase(2, 100, True, **measured), phase(2, 200, True, **measured), phase(2, 300, False, **measured)]}
    results["find_max"] = find_max(results["phases"], [2], ["ws"])
    inputs = sizing_inputs(results, Namespace(webs=[2], transports=["ws"], rate=50.0, tokens=200))["2"]
    assert inputs["streams_per_core"] == 100  # 200 streams over 2 processes
    assert inputs["redis_bytes_per_stream"] == 9000.0 and inputs["db_writes_per_reply"] == 6.0


def test_keys_group_by_kind_with_their_ids_hidden():
    assert key_kind(b"pfx:msg:123:events", "pfx") == ":msg:<n>:events"
    assert key_kind(b"pfx", "pfx") == "(the Celery queue)"
