"""docs/troubleshooting.md cannot rot: every log line it quotes is one the code under bridge/
still writes, at the level the page gives.

The code's lines are read with ``ast``, not imported: each logging call's format string, with
the arguments that are literals (or ``a if x else b`` of literals) filled in and every other
value a hole; and every other string literal (exception texts that follow "Startup failed:").
A quoted line matches when its words appear in one of them in order, ``…``, ``<name>`` and
``N`` standing for holes.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "troubleshooting.md"
HOLE = "\x00"
LEVELS = {
    "debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR",
    "exception": "ERROR", "critical": "CRITICAL",
}  # fmt: skip
HOLES = r"…|<[\w ]+>|(?<![\w.])N(?![\w])"
"""What stands for a value in a quoted line: an ellipsis, ``<name>``, or ``N`` for a number."""
PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrifgx%]")


@dataclass(frozen=True)
class Line:
    text: str  # the message with HOLE where a value goes
    level: str | None  # None: a string literal, not a logging call's message
    where: str


def _alternatives(node: ast.expr) -> list[str]:
    """What an argument can print: literal text, else a hole."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [
            "".join(
                _alternatives(v)[0] if isinstance(v, ast.Constant) else HOLE for v in node.values
            )
        ]
    if isinstance(node, ast.IfExp):
        return _alternatives(node.body) + _alternatives(node.orelse)
    return [HOLE]


def _render(fmt: str, args: list[ast.expr]) -> Iterator[str]:
    pieces = PERCENT.split(fmt)
    specs = PERCENT.findall(fmt)
    choices: list[list[str]] = []
    values = iter(args)
    for spec in specs:
        if spec == "%%":
            choices.append(["%"])
            continue
        arg = next(values, None)
        choices.append(_alternatives(arg) if arg is not None and spec.endswith("s") else [HOLE])
    for chosen in itertools.islice(itertools.product(*choices), 16):
        yield "".join(p + c for p, c in zip(pieces, [*chosen, ""], strict=True))


def _levels(node: ast.expr) -> list[str]:
    """The levels a logging method expression logs at: ``log.warning``, or
    ``log.info if ok else log.warning`` (then both)."""
    if isinstance(node, ast.Attribute) and node.attr in LEVELS:
        return [LEVELS[node.attr]]
    if isinstance(node, ast.IfExp):
        return _levels(node.body) + _levels(node.orelse)
    return []


def code_lines(root: Path = ROOT / "bridge") -> list[Line]:
    lines: list[Line] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # ``log = self._log.info if connected else self._log.warning``, then ``log(...)``
        aliases = {
            target.id: _levels(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and _levels(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                levels = aliases.get(func.id, []) if isinstance(func, ast.Name) else _levels(func)
                for level, fmt in itertools.product(levels, _alternatives(node.args[0])):
                    for text in _render(fmt, list(node.args[1:])):
                        lines.append(Line(text, level, where))
            if isinstance(node, ast.Constant | ast.JoinedStr):
                for text in _alternatives(node):
                    lines.append(Line(text, None, where))
    return lines


def pattern(quoted: str) -> re.Pattern[str]:
    """``quoted`` as a search pattern: ``…``, ``<name>`` and a lone ``N`` match anything."""
    pieces = re.split(HOLES, quoted)
    return re.compile(".*?".join(re.escape(piece) for piece in pieces), re.S)


def page_rows(text: str) -> list[tuple[str, str]]:
    """(quoted line, level cell) for every row of every table whose first column is 'log line';
    a cell can quote several lines, each in its own backticks."""
    rows: list[tuple[str, str]] = []
    in_table = False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif cells[0] == "log line":
            in_table = True
        elif in_table and not set(cells[0]) <= {"-", " "}:
            rows += [(quoted, cells[1]) for quoted in re.findall(r"`([^`]+)`", cells[0])]
    return rows


def _matches(quoted: str, lines: list[Line]) -> list[Line]:
    found = pattern(quoted)
    longest = max(re.split(HOLES, quoted), key=len)
    return [line for line in lines if longest in line.text and found.search(line.text)]


# --- The tools that check the page ---------------------------------------------------------------


def test_pattern_reads_holes() -> None:
    assert pattern("Queue for … is full (N jobs); waiting").search(
        f"Queue for {HOLE} is full ({HOLE} jobs); waiting"
    )
    assert not pattern("Queue for … is full (N jobs); waiting").search("Queue for x is empty")
    assert pattern("Client <network>/… disconnected").search(f"Client {HOLE}/{HOLE} disconnected")


def test_code_lines_fill_literal_arguments(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "log.warning('Client %s/%s %s%s', n, l, 'connected' if c else 'disconnected', "
        "f': {m}' if m else '')\n"
        "log.error('Gave up on %s (dead letter %d): %s', a, b, c)\n"
        "raise ValueError(f'schema is version {x} but this Pontis only knows up to {y}')\n"
    )
    lines = code_lines(tmp_path)
    assert Line(f"Client {HOLE}/{HOLE} disconnected: {HOLE}", "WARNING", "") in [
        Line(line.text, line.level, "") for line in lines
    ]
    assert _matches("Gave up on … (dead letter N): …", lines)[0].level == "ERROR"
    assert _matches("schema is version N but this Pontis only knows up to N", lines)
    assert not _matches("Gave up on … (dead letter N): … and more", lines)


def test_page_rows_read_every_table() -> None:
    text = (
        "| log line | level | what |\n| --- | --- | --- |\n| `A …` / `B` | WARNING | x |\n\n"
        "| other | level |\n| --- | --- |\n| `C` | ERROR |\n"
    )
    assert page_rows(text) == [("A …", "WARNING"), ("B", "WARNING")]


# --- The page ---------------------------------------------------------------------------------


ROWS = page_rows(PAGE.read_text(encoding="utf-8"))


def test_the_page_covers_what_an_operator_sees() -> None:
    assert len(ROWS) >= 20
    assert len({quoted for quoted, _ in ROWS}) == len(ROWS)


@pytest.fixture(scope="module")
def lines() -> list[Line]:
    return code_lines()


@pytest.mark.parametrize(("quoted", "level"), ROWS, ids=[quoted[:40] for quoted, _ in ROWS])
def test_each_quoted_line_is_in_the_code(quoted: str, level: str, lines: list[Line]) -> None:
    literal = re.sub(HOLES, "", quoted)
    assert len(literal.strip(" .:;()/")) >= 8, f"too little of the line is quoted: {quoted!r}"
    found = _matches(quoted, lines)
    assert found, f"no line in bridge/ reads {quoted!r}: update docs/troubleshooting.md"
    logged = {line.level for line in found if line.level is not None}
    if level in LEVELS.values():
        assert level in logged, f"{quoted!r} is logged at {sorted(logged)}, the page says {level}"
