"""``eoslab batch``: many files in one process, each exactly as its single command writes it; bad input in any
item is one line naming the item, exit 2, before anything is computed or written."""

import io
import json
import re
import sys

import numpy as np
import pytest
from helpers import TINY_LIMIT, TINY_RUN

import eoslab.cli
from eoslab.cli import main
from eoslab.runfiles import Interrupted
from eoslab.store import open_run

RUN = TINY_RUN
LIMIT = TINY_LIMIT | {"search": {"eta0": 8.0, "beta": 2.0, "T": 10, "R": 1}}


def items(folder, *commands: str) -> list[dict]:
    configs = {"run": RUN, "limit": LIMIT}
    return [{"command": c, "config": configs[c], "out": str(folder / f"{c}.nc")} for c in commands]


def test_a_batch_writes_what_the_single_commands_write(tmp_path, capsys):
    batch = items(tmp_path / "batch", "run", "limit")
    assert main(["batch", "--json", json.dumps(batch), "--threads", "1", "--quiet"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"item 1/2 {re.escape(batch[0]['out'])}: complete after [\d.]+ s", lines[0]), lines
    assert re.fullmatch(rf"item 2/2 {re.escape(batch[1]['out'])}: max_lr [\d.]+ \(\d+ trials\)", lines[1]), lines
    reverse = tmp_path / "reverse.yaml"  # the other order, from a file: no item depends on the one before it
    reverse.write_text(json.dumps(items(tmp_path / "reverse", "limit", "run")))
    assert main(["batch", str(reverse), "--quiet"]) == 0
    assert capsys.readouterr().err.count("\n") == 2
    for item in batch:
        single = tmp_path / "single" / f"{item['command']}.nc"
        assert main([item["command"], "--json", json.dumps(item["config"]), "--out", str(single), "--quiet"]) == 0
        assert capsys.readouterr().err.startswith(f"{single}: ")
        expected = open_run(single)
        for made in (open_run(item["out"]), open_run(tmp_path / "reverse" / single.name)):
            assert set(made.data_vars) == set(expected.data_vars) and made.attrs["config"] == expected.attrs["config"]
            for name in expected.data_vars:
                np.testing.assert_array_equal(made[name].values, expected[name].values, err_msg=name)
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["limit.nc", "run.nc"]  # no lock, no partial


def second(tmp_path, **change) -> list[dict]:
    """Two good items, the second changed (a key set to None is removed)."""
    batch = items(tmp_path / "out", "limit", "run")
    batch[1] = {k: v for k, v in (batch[1] | change).items() if v is not None}
    return batch


BAD_SECOND = {
    "unknown config key": ({"config": {**RUN, "model": {"name": "mlp", "widht": 4}}}, "model: ", "widht"),
    "bad value": ({"config": {**RUN, "optimizer": {"lr": -1}}}, "optimizer.lr", ""),
    "unknown item key": ({"outt": "x.nc"}, "outt: unknown key", ""),
    "no out": ({"out": None}, "out: missing", ""),
    "unknown command": ({"command": "train"}, "command: 'train' is not one of", ""),
    "config not a mapping": ({"config": [1]}, "config: must be a mapping", ""),
}


@pytest.mark.parametrize("case", list(BAD_SECOND))
def test_bad_input_in_any_item_is_one_line_exit_2_and_nothing_is_made(case, tmp_path, capsys, monkeypatch):
    change, key, also = BAD_SECOND[case]
    monkeypatch.setitem(eoslab.cli.JOBS, "limit", lambda *a: pytest.fail("computed before every item was checked"))
    assert main(["batch", "--json", json.dumps(second(tmp_path, **change)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eoslab: error: item 2/2") and err.count("\n") == 1 and key in err and also in err, err
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_folder_or_written_twice_is_refused(tmp_path, capsys):
    (tmp_path / "out" / "run.nc").mkdir(parents=True)
    assert main(["batch", "--json", json.dumps(second(tmp_path)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eoslab: error: item 2/2 {tmp_path / 'out' / 'run.nc'}: out: ") and "is a folder" in err
    twice = second(tmp_path, out=str(tmp_path / "out" / "limit.nc"))
    assert main(["batch", "--json", json.dumps(twice), "--quiet"]) == 2
    assert "out: item 1 writes it too" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.nc"]


@pytest.mark.parametrize("text", ["{}", "[]", "[1]"])
def test_items_that_are_not_a_list_of_mappings(text, capsys, monkeypatch):
    assert main(["batch", "--json", text]) == 2
    assert capsys.readouterr().err.startswith("eoslab: error: item")
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["batch", "-"]) == 2
    assert capsys.readouterr().err.startswith("eoslab: error: item")
    assert main(["batch"]) == 2
    assert capsys.readouterr().err == "eoslab: error: give a file of items, '-' for standard input, or --json\n"


def test_the_first_failing_item_stops_the_batch_with_its_status(tmp_path, capsys, monkeypatch):
    """A failure found while computing (here 64 > 16 examples) is the item's exit status and message; the items
    after it are not made, those before it are kept."""
    batch = second(tmp_path, config={**RUN, "optimizer": {"rule": "sgd", "lr": 0.1, "batch_size": 64}})
    batch.append(items(tmp_path / "out", "run")[0] | {"out": str(tmp_path / "out" / "third.nc")})
    assert main(["batch", "--json", json.dumps(batch), "--quiet"]) == 2
    first, error = capsys.readouterr().err.splitlines()
    assert first.startswith(f"item 1/3 {batch[0]['out']}: max_lr")
    assert error.startswith(f"eoslab: error: item 2/3 {batch[1]['out']}: optimizer.batch_size: 64 exceeds")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["limit.nc"]

    def interrupted(*args):
        raise Interrupted(15, "SIGTERM at step 1: saved x.ckpt; the same command resumes the run")

    monkeypatch.setitem(eoslab.cli.JOBS, "run", interrupted)
    assert main(["batch", "--json", json.dumps(batch), "--quiet"]) == 143
    assert capsys.readouterr().err.splitlines()[1] == (
        f"eoslab: interrupted: item 2/3 {batch[1]['out']}: SIGTERM at step 1: saved x.ckpt; the same command "
        "resumes the run"
    )
