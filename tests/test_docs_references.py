"""The README and docs/ name only `reca` subcommands, flags and params.yaml keys that exist.

The checker reads the code of every page (fenced blocks, one command line at a
time with ``\\`` continuations joined, and inline code spans, which may wrap
over lines) and reports, as ``file:line: ...``:

* ``reca <subcommand>`` where the subcommand is not in the parser of ``reca.cli``;
* a ``--flag`` after ``reca <subcommand>`` (or after ``scripts/<name>.py`` for a
  script with a ``build_parser``) on the same command line that the subcommand's
  parser does not take; flags of other tools (dvc, make, pytest) are not read;
* a dotted key that starts with a ``params.yaml`` section (``train.lambda_reca``,
  ``model.tiny.hidden_size``) and is not in that section's schema; ``model.tiny.*``
  keys exist if any registered adapter's ``tiny_params`` has them.

The parser and the schema come from the code, so the docs follow the code.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import re
import shlex
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 400

#: Dotted names the docs show that are MLflow values of a run, not params.yaml keys: a pipeline run's
#: ``<stage>.<metric>`` (``evaluate.reca.overall``, ``train.loss_reca``) and the params `train` logs itself.
MLFLOW_NAMES = re.compile(r"(evaluate\.(sft|reca|delta)\.\w+|(sft|train|post_sft)\.loss_\w+|train\.h_v_source)")
#: ``degrade.json``, ``model.safetensors``, ``train.log``: file names, not keys
FILE_SUFFIXES = {"json", "jsonl", "safetensors", "log", "yaml", "yml", "md", "png", "py", "csv", "txt", "lock",
                 "dvc", "html", "tar", "db"}
FENCE = re.compile(r"^\s*(```|~~~)")
SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.S)  # an inline code span; never across a blank line
COMMAND_BREAKS = {"|", "||", "&&", ";", "&"}


def doc_files() -> list[Path]:
    """The README and every markdown page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Snippet:
    """A piece of code in a page: one command line of a fenced block, or one inline code span."""

    line: int
    text: str


def code_snippets(markdown: str) -> list[Snippet]:
    """Every fenced command line (continuations joined) and every inline code span, with its first line."""
    snippets, prose, pending, in_fence = [], [], None, False
    for number, line in enumerate(markdown.split("\n"), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            prose.append("")
            continue
        if not in_fence:
            prose.append(line)
            continue
        prose.append("")
        start, text = pending or (number, "")
        text = f"{text} {line.strip()}".strip()
        if text.endswith("\\"):
            pending = (start, text[:-1])
        else:
            snippets.append(Snippet(start, text))
            pending = None
    text = "\n".join(prose)
    for match in SPAN.finditer(text):
        snippets.append(Snippet(text.count("\n", 0, match.start()) + 1, " ".join(match.group(2).split())))
    return snippets


def command_lines(text: str) -> list[list[str]]:
    """The shell words of ``text``, one list per command (split at ``|``, ``&&``, ``;``), comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unbalanced quote in prose: plain words will do
        words = text.split("#", 1)[0].split()
    commands: list[list[str]] = [[]]
    for word in words:
        if word in COMMAND_BREAKS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@cache
def reca_parser() -> argparse.ArgumentParser:
    from reca.cli import build_parser

    return build_parser()


@cache
def script_parser(path: str) -> argparse.ArgumentParser | None:
    """The parser of ``scripts/<name>.py`` if that script builds one with ``build_parser()``."""
    file = REPO / path
    if file.parent != REPO / "scripts" or not file.is_file() or "def build_parser(" not in file.read_text():
        return None
    spec = importlib.util.spec_from_file_location(f"_docs_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _is_flag(word: str) -> bool:
    return word.startswith("-") and word not in ("-", "--") and not re.match(r"-\d", word)


def _unknown_flags(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    known = parser._option_string_actions
    return [w for w in words if _is_flag(w) and w.split("=", 1)[0] not in known]


def command_problems(words: list[str]) -> list[str]:
    """What is wrong with one command's words: an unknown ``reca`` subcommand, or flags its parser lacks."""
    problems = []
    for i, word in enumerate(words):
        script = script_parser(word.removeprefix("./")) if word.endswith(".py") else None
        if script is not None:
            problems += [f"`{word}` has no flag {flag}" for flag in _unknown_flags(script, words[i + 1:])]
            break
        if Path(word).name != "reca" or not all("=" in w for w in words[:i]):
            continue
        rest = words[i + 1:]
        if not rest or rest[0].startswith("<"):  # `reca`, `reca <stage> --help`
            break
        if _is_flag(rest[0]):
            problems += [f"`reca` has no flag {flag}" for flag in _unknown_flags(reca_parser(), rest)]
            break
        commands = _subparsers(reca_parser())
        if rest[0] not in commands:
            problems.append(f"`reca {rest[0]}` is not a reca subcommand (known: {', '.join(sorted(commands))})")
        else:
            problems += [f"`reca {rest[0]}` has no flag {flag}" for flag in _unknown_flags(commands[rest[0]], rest[1:])]
        break
    return problems


@cache
def params_sections() -> dict[str, type[BaseModel]]:
    from reca.params import SECTIONS

    return dict(SECTIONS)


@cache
def tiny_keys() -> frozenset[str]:
    """Every ``model.tiny`` key some registered adapter accepts."""
    from reca.models import registry

    return frozenset(key for name in registry.available() for key in registry.get(name).tiny_params.model_fields)


def _model_type(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: object) -> bool:
    return annotation is dict or typing.get_origin(annotation) is dict or any(
        typing.get_origin(a) is dict or a is dict for a in typing.get_args(annotation))


def params_key_exists(key: str) -> bool:
    """Whether a dotted ``section.field[.field...]`` key is in the params schema; ``*`` matches as a glob."""
    section, *path = key.split(".")
    model: type[BaseModel] | None = params_sections()[section]
    for depth, part in enumerate(path):
        if section == "model" and depth == 1 and path[0] == "tiny":
            return len(path) == 2 and any(fnmatch.fnmatchcase(k, part) for k in tiny_keys())
        fields = model.model_fields
        names = [name for name in fields if fnmatch.fnmatchcase(name, part)]
        if not names:
            return False
        if depth == len(path) - 1:
            return True
        if section == "model" and names == ["tiny"]:
            continue
        annotation = fields[names[0]].annotation
        if _is_mapping(annotation):
            return True
        model = _model_type(annotation)
        if model is None:
            return False
    return True


@cache
def _key_pattern() -> re.Pattern[str]:
    sections = "|".join(sorted(map(re.escape, params_sections()), key=len, reverse=True))
    return re.compile(rf"(?<![\w./<-])(?:{sections})(?:\.[A-Za-z_*][\w*]*)+(?![\w/-])")


def key_problems(text: str) -> list[str]:
    """Dotted params keys in ``text`` that the schema does not have."""
    problems = []
    for match in _key_pattern().finditer(text):
        key = match.group(0)
        if key.split(".")[1] in FILE_SUFFIXES or MLFLOW_NAMES.fullmatch(key):
            continue
        if not params_key_exists(key):
            problems.append(f"`{key}` is not a params.yaml key")
    return problems


def problems_in(markdown: str, name: str) -> list[str]:
    """Every bad subcommand, flag and params key named in the code of one page, as ``name:line: problem``."""
    problems = []
    for snippet in code_snippets(markdown):
        found = key_problems(snippet.text)
        for words in command_lines(snippet.text):
            found += command_problems(words)
        problems += [f"{name}:{snippet.line}: {problem}" for problem in found]
    return problems


# ----------------------------------------------------------------------------------------------- tests


def test_docs_name_only_subcommands_flags_and_params_keys_that_exist() -> None:
    problems = []
    for path in doc_files():
        problems += problems_in(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "the docs name things that do not exist:\n" + "\n".join(problems)


def test_the_checker_catches_a_made_up_subcommand_flag_and_key() -> None:
    page = """# A page

Run `reca frobnicate --fast` first, then

```bash
reca train --params params.yaml \\
  --no-such-flag 3 && dvc repro --force   # dvc's flags are dvc's business
python scripts/run_arms.py --seeds 0 --bogus-option
```

Set `train.no_such_key: 1`, `model.tiny.no_such_size: 2` and `evaluate.guidance_scale.deeper`; the
`make-world` generator runs as `reca
make-world --bias 0.9 --made-up`.
"""
    problems = problems_in(page, "page.md")
    assert problems == [
        "page.md:6: `reca train` has no flag --no-such-flag",
        "page.md:8: `scripts/run_arms.py` has no flag --bogus-option",
        "page.md:3: `reca frobnicate` is not a reca subcommand (known: " + ", ".join(sorted(
            _subparsers(reca_parser()))) + ")",
        "page.md:11: `train.no_such_key` is not a params.yaml key",
        "page.md:11: `model.tiny.no_such_size` is not a params.yaml key",
        "page.md:11: `evaluate.guidance_scale.deeper` is not a params.yaml key",
        "page.md:12: `reca make-world` has no flag --made-up",
    ]


def test_the_checker_accepts_what_exists() -> None:
    page = """`reca train --params p.yaml`, `reca <stage> --help`, `reca --help`, `reca make-world --seed 7`,
`reca generate "a red square" -n 4 --seed=1`, `dvc exp run -S model.adapter=harmon_mar -S train.lambda_i2t=0`,
`model.tiny.hidden_size`, `model.tiny.num_queries` (flow_matching's), `train.lambda_*`, `sft.*`,
`evaluate.usual_colours`, `degrade.json`, `model.safetensors`, `models/sft`, `evaluate.reca.overall`,
`python scripts/run_arms.py --summarise docs/results/x_seeds.csv --embed README.md`.
"""
    assert problems_in(page, "page.md") == []


def test_readme_is_a_users_document_of_at_most_400_lines() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"
    assert "SCIENCE.md" not in "\n".join(lines)


def test_every_docs_page_says_what_it_covers_and_links_back() -> None:
    for path in sorted((REPO / "docs").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# "), f"{path.relative_to(REPO)} does not start with a title"
        first_paragraph = text.split("\n\n")[1]
        links_back = "README.md" in first_paragraph or "research-log.md" in first_paragraph
        assert "](" in first_paragraph and links_back, (
            f"{path.relative_to(REPO)}: the first paragraph should say what the page covers and link back")
        assert "SCIENCE.md" not in text, f"{path.relative_to(REPO)} cites SCIENCE.md, which is not in the repository"


def test_the_research_log_keeps_items_1_to_21_in_order() -> None:
    log = (REPO / "docs" / "research-log.md").read_text(encoding="utf-8")
    numbers = [int(m) for m in re.findall(r"^ ?(\d+)\. \*", log, flags=re.M)]
    assert numbers == list(range(1, 22))


@pytest.mark.parametrize("name", ["README.md", "docs/research-log.md"])
def test_pages_with_result_tables_exist(name: str) -> None:
    assert "<!-- results " in (REPO / name).read_text(encoding="utf-8")
