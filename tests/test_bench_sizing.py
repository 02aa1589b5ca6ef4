"""bench/sizing.py turns measured per-stream costs into what 10,000 and 100,000 streams need."""

import json

import pytest

from bench.sizing import Measured, human_bytes, markdown, measured_from_json, size

MEASURED = Measured(
    streams_per_core=125,
    redis_ops_per_token=0.08,
    redis_bytes_per_stream=10_000,
    db_writes_per_reply=6,
    tokens_per_second=50,
    tokens_per_reply=200,
    redis_bytes_per_finished_reply=20_000,
    stream_ttl_seconds=3600,
    db_transactions_per_reply=4,
    redis_cpu_us_per_op=5,
)


def test_ten_thousand_streams_are_sized_from_the_measured_costs():
    s = size(MEASURED, 10_000)
    assert s.web_processes == 80  # 10,000 / 125
    assert s.tokens_per_second == 500_000
    assert s.replies_per_second == 2_500  # 200-token replies at 50 tokens/s: one every 4 s per stream
    assert s.redis_ops_per_second == 40_000
    assert s.redis_cores == pytest.approx(0.2)  # 40,000 ops/s at 5 µs each
    assert s.redis_running_bytes == 100_000_000
    assert s.redis_finished_bytes == 2_500 * 3600 * 20_000  # an hour of finished replies' logs
    assert s.redis_bytes == 100_000_000 + 180_000_000_000
    assert s.db_writes_per_second == 15_000
    assert s.db_transactions_per_second == 10_000


def test_a_hundred_thousand_streams_scale_linearly_and_round_web_processes_up():
    small, large = size(MEASURED, 10_000), size(MEASURED, 100_000)
    assert large.redis_ops_per_second == 10 * small.redis_ops_per_second
    assert large.db_writes_per_second == 10 * small.db_writes_per_second
    assert large.redis_bytes == pytest.approx(10 * small.redis_bytes)
    assert size(MEASURED, 126).web_processes == 2  # one stream over a process's share needs another process


def test_figures_not_measured_stay_unknown():
    bare = Measured(streams_per_core=100, redis_ops_per_token=0.1, redis_bytes_per_stream=1000, db_writes_per_reply=5)
    s = size(bare, 10_000)
    assert s.redis_cores is None and s.db_transactions_per_second is None
    assert s.redis_finished_bytes == 0
    table = markdown(bare)
    assert "| 10,000 | 100 | 500,000 | 2,500 | 50,000 | – |" in table
    assert "| 100,000 | 1,000 |" in table


def test_bad_inputs_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="streams_per_core"):
        Measured(streams_per_core=0, redis_ops_per_token=0.1, redis_bytes_per_stream=1, db_writes_per_reply=1)
    with pytest.raises(ValueError, match="redis_ops_per_token"):
        Measured(streams_per_core=10, redis_ops_per_token=-1, redis_bytes_per_stream=1, db_writes_per_reply=1)
    with pytest.raises(ValueError, match="streams"):
        size(MEASURED, 0)


def test_bytes_read_in_binary_units():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(180_000_000_000) == "167.6 GiB"


def test_inputs_come_from_a_scale_run_and_default_to_the_most_web_processes(tmp_path):
    one = {"streams_per_core": 150, "redis_ops_per_token": 0.1, "redis_bytes_per_stream": 8000, "db_writes_per_reply": 5}
    two = {**one, "streams_per_core": 120}
    path = tmp_path / "scale.json"
    path.write_text(json.dumps({"sizing_inputs": {"1": one, "2": two}}))
    assert measured_from_json(path).streams_per_core == 120
    assert measured_from_json(path, webs=1).streams_per_core == 150
    with pytest.raises(ValueError, match="not 3"):
        measured_from_json(path, webs=3)
    path.write_text(json.dumps({"sizing_inputs": {}}))
    with pytest.raises(ValueError, match="no sizing_inputs"):
        measured_from_json(path)
