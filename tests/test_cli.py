"""The command line: demo, stats, tail, get, export/import; clear errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import engine
from engine.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "cli-store"
    with engine.open(path, auto_migrate=False) as e:
        for i in range(20):
            e.append("events", {"i": i})
        e.put("config:x", {"a": 1})
    return path


def test_demo_writes_and_summarises(tmp_path, capsys):
    path = tmp_path / "demo"
    code = main(
        [
            "--path",
            str(path),
            "demo",
            "--fresh",
            "--fast",
            "--actions",
            "3000",
            "--logs",
            "1000",
            "--embeddings",
            "50",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "records/s" in out and "Newest 5 actions" in out and "Top 5 signatures" in out
    with engine.open(path, auto_migrate=False) as e:
        counts = e.stream_counts()
        assert counts["rl_actions"] == 3000
        assert counts["system_logs"] == 1000
        assert e.get_embedding("chunk-49") is not None


def test_tail_and_get(store, capsys):
    assert main(["--path", str(store), "tail", "events", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ['17\t{"i":17}', '18\t{"i":18}', '19\t{"i":19}']
    assert main(["--path", str(store), "get", "config:x"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"a": 1}


def test_missing_things_exit_non_zero_with_a_message(store, capsys):
    assert main(["--path", str(store), "get", "nope"]) == 1
    assert "no key 'nope'" in capsys.readouterr().err
    assert main(["--path", str(store), "tail", "nothing"]) == 1
    assert "empty or does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--path", str(store), "frobnicate"])
    assert info.value.code == 2


def test_export_import_round_trip(store, tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    assert main(["--path", str(store), "export", "events", "--format", "jsonl", "-o", str(out)]) == 0
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(x) for x in lines] == [{"i": i} for i in range(20)]
    target = tmp_path / "other"
    assert main(["--path", str(target), "import", "copied", str(out)]) == 0
    with engine.open(target, auto_migrate=False) as e:
        assert e.read("copied", 0, 100) == [(i, {"i": i}) for i in range(20)]


def test_import_of_a_bad_file_imports_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ok": 1}\n{not json\n')
    target = tmp_path / "t"
    assert main(["--path", str(target), "import", "s", str(bad)]) == 1
    assert "line 2 is not JSON" in capsys.readouterr().err
    with engine.open(target, auto_migrate=False) as e:
        assert e.store.stream_length("s") == 0


def test_stats_json(store, capsys):
    assert main(["--path", str(store), "stats", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["streams"]["events"]["rows"] == 20
    assert report["streams"]["events"]["bytes"] == sum(len(f'{{"i":{i}}}') for i in range(20))
    assert report["key_spaces"]["config"] == {"keys": 1, "bytes": len(b'{"a":1}')}
    assert report["lmdb"]["map_size"] >= 1 << 30
    assert main(["--path", str(store), "stats"]) == 0
    assert "events" in capsys.readouterr().out


def test_python_dash_m_engine_runs(store):
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "--path", str(store), "tail", "events", "-n", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '19\t{"i":19}\n'
