"""Run logs: log.csv keeps every column, also those that appear after the first row."""

from __future__ import annotations

import csv

from mtlkit.engine._logging import RunLogger


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_gains_columns_that_appear_later(tmp_path):
    log = RunLogger(tmp_path)
    log.log({"iter": 1, "losses": {"a": 0.5}})
    log.log({"iter": 2, "losses": {"a": 0.4}, "weights": {"a": 2.0}})  # e.g. after warm-up / expansion
    log.log({"iter": 3, "losses": {"a": 0.3}})
    log.close()
    rows = _rows(tmp_path / "log.csv")
    assert [r["iter"] for r in rows] == ["1.0", "2.0", "3.0"]
    assert [r["weights/a"] for r in rows] == ["", "2.0", ""]
    assert [r["losses/a"] for r in rows] == ["0.5", "0.4", "0.3"]
    # a resumed run appends under the same (wide) header
    again = RunLogger(tmp_path, append=True)
    again.log({"iter": 4, "losses": {"a": 0.2}, "weights": {"a": 1.0}})
    again.close()
    rows = _rows(tmp_path / "log.csv")
    assert rows[-1]["weights/a"] == "1.0" and len(rows) == 4
    assert (tmp_path / "log.csv").read_text().count("iter") == 1
