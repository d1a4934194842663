"""``mtlkit data check``: validate a dataset tree before training and list every problem at once.

Each real dataset registers a checker ``fn(root: Path, max_files: int | None) -> list[Problem]``. The checks
use the loaders' own readers and label checks (:mod:`mtlkit.data._validate`), so what passes here loads during
training: missing folders and files, unreadable files and split lists, label values outside the dataset's
range, colour images where class indices belong, depth of the wrong dtype, shape or unit (millimetres),
non-unit normals, and label maps whose size differs from the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mtlkit._registry import Registry
from mtlkit.data._io import REFETCH, read_lines
from mtlkit.data._validate import Issue
from mtlkit.errors import MtlkitError


@dataclass(frozen=True)
class Problem:
    """One problem in a dataset tree: where, what is wrong, and what was expected there."""

    path: str
    problem: str
    expected: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} (expected {self.expected})" + (f"; {self.fix}" if self.fix else "")


Checker = Callable[[Path, "int | None"], list[Problem]]
CHECKERS: Registry[Checker] = Registry("dataset checker")


class ProblemList(list):
    """A list of :class:`Problem` with helpers the checkers share."""

    def add(self, path: Path | str, problem: str, expected: str) -> None:
        self.append(Problem(str(path), problem, expected))

    def add_issue(self, path: Path | str, issue: Issue | None) -> bool:
        """Record ``issue`` (a loader check's result) if there is one; whether there was."""
        if issue is None:
            return False
        self.append(Problem(str(path), issue.problem, issue.expected, issue.fix))
        return True

    def try_lines(self, path: Path) -> list[str] | None:
        """The ids of a split list, or None after recording a missing / unreadable one."""
        if not path.exists():
            self.add(path, "missing split list", "one image id per line")
            return None
        try:
            return read_lines(path)
        except MtlkitError as e:
            self.add(path, _without_path(str(e), path).split("; expected")[0], "a text file with one id per line")
            return None

    def try_read(self, path: Path, reader: Callable, expected: str):
        """``reader(path)``, or None after recording a missing / unreadable file."""
        if not path.is_file():
            self.add(path, "missing file", expected)
            return None
        try:
            return reader(path)
        except MtlkitError as e:
            message = _without_path(str(e), path)
            fix = "re-extract or re-download this file" if REFETCH in message else ""
            self.append(Problem(str(path), message.replace(f"; {REFETCH}", ""), expected, fix))
            return None


def _without_path(message: str, path: Path) -> str:
    """A reader's error message without the file name (a problem line names the file first)."""
    return message.removeprefix(f"{path}: ").replace(f" {path}", "")


def check_dataset(name: str, root: str | Path | None, max_files: int | None = None) -> list[Problem]:
    """Every problem found in the tree of dataset ``name`` at ``root`` (an empty list when it is fine).

    ``max_files`` caps how many samples per split are decoded (all are always checked for existence).
    """
    checker = CHECKERS.get(name)
    if root is None:
        return [Problem("<none>", "no --data-root given", f"the folder holding the {name} dataset")]
    path = Path(root).expanduser()
    if not path.is_dir():
        return [Problem(str(path), "data root is not a folder", f"the folder holding the {name} dataset")]
    return list(checker(path, max_files))


def format_problems(name: str, root: str | Path | None, problems: Iterable[Problem], limit: int = 200) -> str:
    """Human-readable report: one line per problem (the first ``limit``), then a summary line."""
    problems = list(problems)
    if not problems:
        return f"{name} at {root}: no problems found"
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    lines.append(f"{name} at {root}: {len(problems)} problem(s); see docs/datasets.md for the expected layout")
    return "\n".join(lines)
