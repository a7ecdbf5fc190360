"""Reading another step's tables: a damaged, truncated or incomplete one names the file and the reason."""

import pandas as pd
import pytest

from brainfm.atomic import write_parquet
from brainfm.errors import BrainfmError, InputError
from brainfm.frames import read_frame, read_frames


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "comparison.parquet"
    write_parquet(path, pd.DataFrame({"task": ["a", "b"], "estimate": [0.5, 0.7]}))
    return path


def test_reads_and_concatenates_with_the_columns_checked(table):
    back = read_frames([table, table], "comparison table", ["task", "estimate"])
    assert back["task"].tolist() == ["a", "b", "a", "b"] and back.index.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.unlink(), "comparison table does not exist"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot read comparison table"),
    (lambda p: p.write_text("task,estimate\na,0.5\n"), "cannot read comparison table"),
    (lambda p: p.write_bytes(b""), "cannot read comparison table"),
])
def test_a_missing_truncated_or_foreign_file_is_named_with_the_reason(table, damage, reason):
    damage(table)
    with pytest.raises(InputError) as err:
        read_frame(table, "comparison table")
    assert err.value.path == str(table) and err.value.reason.startswith(reason)


def test_missing_columns_are_listed(table):
    with pytest.raises(InputError, match=r"comparison.parquet: comparison table lacks column\(s\) \['p_value'\]"):
        read_frames([table], "comparison table", ["task", "p_value"])


def test_no_files_is_an_error_not_an_empty_table():
    with pytest.raises(BrainfmError, match="no kNN results given"):
        read_frames([], "kNN results")
