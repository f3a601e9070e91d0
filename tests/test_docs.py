"""The documentation runs: every code block of README.md and docs/*.md is executed here.

How blocks are found
    Fenced blocks (``` or ~~~, at any indentation) in README.md and every docs/*.md. A block
    must be tagged ``bash``, ``sh`` or ``python``; any other tag (``console``, ``text``,
    ``yaml``, none) fails :func:`test_every_block_is_runnable`, so there is no block CI does
    not run. Show YAML by writing it with a heredoc in a bash block.

How a document runs (:func:`run_document`)
    Per document, its blocks run in document order in a fresh temporary working directory
    that holds a copy of the repository's ``configs/`` (so ``--config configs/local.yaml``
    works as written, and that config's relative paths put ``data/`` inside the temporary
    directory). Nothing is written into the repository. Each block is its own process:

    * ``python`` blocks: ``python <block>.py`` (this interpreter), the repository first on
      ``PYTHONPATH``. Blocks hand state over through files in the working directory, so
      every python block is self-contained, as a reader would paste it.
    * ``bash`` / ``sh`` blocks: ``bash -euo pipefail <block>.sh``; ``PATH`` starts with this
      interpreter's ``bin`` folder (``python``, ``semq-index``, ``moto_server`` of the venv).
      Shell variables do not carry over between blocks: hand them over in a file.

    The environment has no ``AWS_*`` variables and no proxy for 127.0.0.1. Scripts are padded
    with blank lines, so a traceback's or bash's line numbers are the document's. A block
    that exits non-zero or runs over :data:`BLOCK_TIMEOUT` fails the document's test with
    ``<doc>:<line of the opening fence> (<lang> block) ...`` and the end of its output; later
    blocks do not run. Each block starts a new process group; anything a block leaves
    running (the moto server of docs/s3-local.md, when a later block fails before stopping
    it) is terminated by process group when the document ends.

Markers: an HTML comment right before a fence (blank lines allowed in between)
    ``<!-- docs-test: checked against .ci/run -->``: the block's install and test commands
    (venv creation and activation, ``pip install``, ``python -m pytest``) are not run but
    compared with what ``.ci/run`` runs (:func:`check_against_ci`); any other command of the
    block is run (README: the main job on the embedded default).
    ``<!-- docs-test: skip: <reason> -->``: not run; the reason must not be empty, and
    README.md may have no skip at all.

docs/config.md
    Its field table is generated from the pydantic models (``model_fields``, each field's
    ``Field(description=...)``, the section models' docstrings). Regenerate after changing
    ``semq_transforms/config.py``::

        python tests/test_docs.py --write-config-doc
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS_DIR = REPO / "docs"
CONFIG_DOC = DOCS_DIR / "config.md"
CI_RUN = REPO / ".ci" / "run"

#: Seconds one block may run.
BLOCK_TIMEOUT = 300
#: Lines of a failed block's output shown in the failure message.
OUTPUT_TAIL = 60
#: Languages blocks may be tagged with, and what runs them.
RUNNERS = {"bash": "bash", "sh": "bash", "python": "python"}
CHECKED = "checked against .ci/run"
README_MAX_LINES = 200

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")


def documents() -> list[Path]:
    """README.md and every docs/*.md."""
    return [README, *sorted(DOCS_DIR.glob("*.md"))]


def _rel(path: Path) -> str:
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return path.name


# ---------------------------------------------------------------------------------------------
# parsing


class DocsError(Exception):
    """A document breaks a rule of this test, or one of its blocks failed."""


@dataclass(frozen=True)
class Block:
    doc: str            # the document, relative to the repository
    line: int           # 1-based line of the opening fence
    lang: str           # the info string's first word ("" when untagged)
    code: str           # the block's text, its fence's indentation removed
    marker: str | None  # the text after "docs-test:" of the marker before it, if any

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_blocks(text: str, doc: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the marker comment before each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: tuple[str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            indent, ticks = len(fence["indent"]), fence["fence"]
            info = fence["info"].strip()
            closing = re.compile(rf"^\s*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
            body = []
            j = i + 1
            while j < len(lines) and not closing.match(lines[j]):
                text = lines[j]
                body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
                j += 1
            if j == len(lines):
                raise DocsError(f"{doc}:{i + 1}: code fence is never closed")
            blocks.append(Block(doc, i + 1, info.split()[0] if info else "",
                                "\n".join(body) + "\n", marker[0] if marker else None))
            marker = None
            i = j + 1
            continue
        found = _MARKER.match(line)
        if found:
            if marker is not None:
                raise DocsError(f"{doc}:{marker[1]}: docs-test marker is not right before a "
                                f"code block")
            marker = (found["body"].strip(), i + 1)
        elif line.strip() and marker is not None:
            raise DocsError(f"{doc}:{marker[1]}: docs-test marker is not right before a code "
                            f"block")
        i += 1
    if marker is not None:
        raise DocsError(f"{doc}:{marker[1]}: docs-test marker is not right before a code block")
    return blocks


def check_rules(blocks: list[Block], doc: str) -> None:
    """Tags, markers and the README's no-skip rule."""
    for block in blocks:
        if block.lang not in RUNNERS:
            tag = f"tagged {block.lang!r}" if block.lang else "untagged"
            raise DocsError(f"{block.where}: code block is {tag}; every block runs in CI, so "
                            f"tag it bash, sh or python (show YAML through a heredoc)")
        if block.marker is None or block.marker == CHECKED:
            continue
        if block.marker.startswith("skip"):
            reason = block.marker.removeprefix("skip").lstrip(":").strip()
            if not block.marker.startswith("skip:") or not reason:
                raise DocsError(f"{block.where}: a skipped block needs a reason: "
                                f"<!-- docs-test: skip: <reason> -->")
            if doc == "README.md":
                raise DocsError(f"{block.where}: README.md may not skip a block ({reason})")
            continue
        raise DocsError(f"{block.where}: unknown docs-test marker {block.marker!r}")


# ---------------------------------------------------------------------------------------------
# the block checked against .ci/run


def _normalize(command: str) -> str:
    """A shell command in one spelling: python3 -> python, source -> ., python -m pip ->
    pip, verbosity flags dropped."""
    words = shlex.split(command, comments=True)
    words = ["python" if w == "python3" else w for w in words]
    if words[:1] == ["source"]:
        words[0] = "."
    if words[:3] == ["python", "-m", "pip"]:
        words = ["pip", *words[3:]]
    return " ".join(w for w in words if w not in ("-q", "--quiet"))


def _commands(script: str) -> list[tuple[int, str]]:
    """(0-based line, normalized command) of every command in a script: one per line and
    per ``&&`` part, comments and blank lines left out."""
    found = []
    for number, line in enumerate(script.replace("\\\n", " ").splitlines()):
        for part in line.split("&&"):
            command = _normalize(part) if part.strip() else ""
            if command:
                found.append((number, command))
    return found


def _is_setup(command: str) -> bool:
    return (command.startswith(("python -m venv", ". .venv/bin/activate", "pip install",
                                "python -m pytest")))


def check_against_ci(block: Block, ci_script: str) -> str:
    """Compare a checked block's install and test commands with .ci/run; return the script
    of its other commands (on their own lines, the rest blank) to run instead."""
    ci = {command for _, command in _commands(ci_script)}
    mine = _commands(block.code)
    tests = [c for _, c in mine if c.startswith("python -m pytest")]
    ci_tests = sorted(c for c in ci if c.startswith("python -m pytest"))
    if len(tests) != 1 or ci_tests != tests:
        raise DocsError(f"{block.where}: the test command ({tests}) is not the one .ci/run "
                        f"runs ({ci_tests})")
    for _, command in mine:
        if not _is_setup(command) or command.startswith("python -m pytest"):
            continue
        if command == "pip install -e .":
            continue                     # the project alone: a subset of .ci/run's install
        if command not in ci:
            raise DocsError(f"{block.where}: {command!r} is not what .ci/run runs "
                            f"({sorted(c for c in ci if _is_setup(c))})")
    if 'pip install -e .[dev]' not in {c for _, c in mine}:
        raise DocsError(f"{block.where}: no pip install -e \".[dev]\" (what .ci/run installs)")
    lines = [""] * len(block.code.splitlines())
    for number, line in enumerate(block.code.splitlines()):
        parts = [p.strip() for p in line.split("&&")]
        keep = [p for p in parts if p and not p.startswith("#")
                and not _is_setup(_normalize(p))]
        lines[number] = " && ".join(keep)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# running


def block_env() -> dict[str, str]:
    """The environment blocks run in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    if (Path(bin_dir) / "activate").exists():
        env["VIRTUAL_ENV"] = str(Path(bin_dir).parent)
    return env


def _tail(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-OUTPUT_TAIL:])


def _stop_group(pgid: int) -> None:
    """Terminate what is left of a process group this test started (by its id)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


def prepare_workdir(path: Path) -> Path:
    """A fresh working directory with a copy of the repository's configs/."""
    path.mkdir(parents=True)
    shutil.copytree(REPO / "configs", path / "configs")
    return path


def run_document(doc: Path, workdir: Path, scripts: Path, *, timeout: float = BLOCK_TIMEOUT,
                 ci_script: str | None = None) -> list[Block]:
    """Run a document's blocks in order in ``workdir``; returns the blocks that ran. Raises
    DocsError naming the document and the failed block's first line."""
    name = _rel(doc)
    blocks = parse_blocks(doc.read_text(encoding="utf-8"), name)
    check_rules(blocks, name)
    scripts.mkdir(parents=True, exist_ok=True)
    env = block_env()
    groups: list[int] = []
    ran = []
    try:
        for block in blocks:
            if block.marker and block.marker.startswith("skip"):
                continue
            code = block.code
            if block.marker == CHECKED:
                code = check_against_ci(block, ci_script if ci_script is not None
                                        else CI_RUN.read_text(encoding="utf-8"))
            runner = RUNNERS[block.lang]
            stem = f"{re.sub(r'[^A-Za-z0-9]+', '-', name)}-L{block.line}"
            script = scripts / f"{stem}.{'py' if runner == 'python' else 'sh'}"
            # the code starts on the line after the fence: line numbers are the document's
            script.write_text("\n" * block.line + code, encoding="utf-8")
            command = ([sys.executable, str(script)] if runner == "python"
                       else ["bash", "-euo", "pipefail", str(script)])
            log = scripts / f"{stem}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                groups.append(proc.pid)
                try:
                    returncode = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _stop_group(proc.pid)
                    proc.wait()
                    raise DocsError(f"{block.where} ({block.lang} block) did not finish in "
                                    f"{timeout:g} s; output:\n{_tail(log)}") from None
            if returncode != 0:
                raise DocsError(f"{block.where} ({block.lang} block) failed with exit code "
                                f"{returncode}; output:\n{_tail(log)}")
            ran.append(block)
    finally:
        for pgid in groups:
            _stop_group(pgid)
    return ran


# ---------------------------------------------------------------------------------------------
# docs/config.md: the field table generated from the models

BEGIN = "<!-- BEGIN GENERATED: python tests/test_docs.py --write-config-doc -->"
END = "<!-- END GENERATED -->"
TOP = "top level"


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        name = " or ".join(_type_name(a) for a in rest)
        return f"{name} or null" if len(rest) < len(args) else name
    if origin is list:
        return f"list of {_type_name(args[0])}s"
    if origin is dict:
        return "mapping"
    if _is_model(annotation):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[annotation]


def _yaml(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "optional: all defaults" if _is_model(type(value)) else f"`{_yaml(value)}`"
    if field.is_required():
        return "required"
    return f"`{_yaml(field.default)}`"


def _number(value: Any) -> str:
    return "2^63 - 1" if value == 2**63 - 1 else str(value)


def _allowed(field: Any) -> str:
    parts = []
    for item in field.metadata:
        for attr, text in (("min_length", "length >= {}"), ("gt", "> {}"),
                           ("ge", ">= {}"), ("lt", "< {}"), ("le", "<= {}")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(text.format(_number(value)))
    return ", ".join(parts)


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


def config_fields() -> Iterator[tuple[str, str, Any]]:
    """(section, name, FieldInfo) of every field of the job config, depth first."""
    from semq_transforms.config import JobConfig

    def walk(model: Any, section: str) -> Iterator[tuple[str, str, Any]]:
        for name, field in model.model_fields.items():
            yield section, name, field
            if _is_model(field.annotation):
                inner = name if section == TOP else f"{section}.{name}"
                yield from walk(field.annotation, inner)

    yield from walk(JobConfig, TOP)


def _meaning(field: Any) -> str:
    if field.description:
        return field.description
    if _is_model(field.annotation):
        return (field.annotation.__doc__ or "").strip().splitlines()[0]
    raise AssertionError("a config field without Field(description=...)")


def config_table() -> str:
    """The generated Markdown table of every config field."""
    rows = ["| section | field | type | default | allowed | meaning |",
            "|---|---|---|---|---|---|"]
    for section, name, field in config_fields():
        where = section if section == TOP else f"`{section}`"
        rows.append(f"| {where} | `{name}` | {_type_name(field.annotation)} | "
                    f"{_default(field)} | {_allowed(field)} | {_cell(_meaning(field))} |")
    return "\n".join(rows)


def _generated_region(text: str) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise DocsError(f"docs/config.md: no {BEGIN} ... {END} region")
    return start + len(BEGIN), end


def write_config_doc() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    start, end = _generated_region(text)
    CONFIG_DOC.write_text(text[:start] + "\n" + config_table() + "\n" + text[end:],
                          encoding="utf-8")


def _table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """{(section, field): cells} of the committed table."""
    start, end = _generated_region(text)
    rows = {}
    for line in text[start:end].strip().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows[(cells[0].strip("`"), cells[1].strip("`"))] = cells
    return rows


# ---------------------------------------------------------------------------------------------
# tests: the documentation


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_block_is_runnable() -> None:
    for doc in documents():
        blocks = parse_blocks(doc.read_text(encoding="utf-8"), _rel(doc))
        check_rules(blocks, _rel(doc))


def test_readme_setup_commands_match_ci() -> None:
    """The README's install block holds the two set-up commands, and its test command is
    the one .ci/run runs."""
    blocks = parse_blocks(README.read_text(encoding="utf-8"), "README.md")
    checked = [b for b in blocks if b.marker == CHECKED]
    assert len(checked) == 1, "README.md needs exactly one block checked against .ci/run"
    code = checked[0].code
    assert "pip install -e . && python -m pipelines.ingest --config configs/local.yaml" in code
    assert 'pip install -e ".[dev]" && python -m pytest' in code
    runs = check_against_ci(checked[0], CI_RUN.read_text(encoding="utf-8"))
    assert runs.strip() == "python -m pipelines.ingest --config configs/local.yaml"


def test_recommended_codecs_are_the_configs() -> None:
    """README recommends one codec pair, the one every shipped config uses."""
    import yaml

    text = README.read_text(encoding="utf-8")
    found = re.findall(r"Recommended codecs: \*\*`(\w+)` scan \+ `(\w+)` rerank\*\*", text)
    assert len(found) == 1, "README.md states its recommended codec pair once"
    for config in sorted((REPO / "configs").glob("*.yaml")):
        codecs = yaml.safe_load(config.read_text(encoding="utf-8"))["encode"]["codecs"]
        assert tuple(codecs) == found[0], f"{config.name} uses {codecs}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    anchors = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_links_resolve() -> None:
    """Relative links of README.md and docs/*.md name files that exist, and anchors that
    the target's headings make; docs/README.md lists every page of docs/."""
    for doc in documents():
        text = doc.read_text(encoding="utf-8")
        prose = re.sub(r"^\s*(```|~~~).*?^\s*\1", "", text, flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), f"{_rel(doc)}: link to missing {target}"
            if anchor and file.suffix == ".md":
                assert anchor in _anchors(file), f"{_rel(doc)}: no heading for {target}"
    index = (DOCS_DIR / "README.md").read_text(encoding="utf-8")
    for page in DOCS_DIR.glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


@pytest.mark.parametrize("doc", [_rel(d) for d in documents()])
def test_document_runs(doc: str, tmp_path: Path) -> None:
    """Every block of the document runs (see the module docstring)."""
    failure = None
    try:
        run_document(REPO / doc, prepare_workdir(tmp_path / "work"), tmp_path / "scripts")
    except DocsError as exc:
        failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)


# -- docs/config.md


def test_config_doc_is_generated() -> None:
    """docs/config.md's table is what the models generate today (regenerate with
    ``python tests/test_docs.py --write-config-doc``)."""
    start, end = _generated_region(CONFIG_DOC.read_text(encoding="utf-8"))
    committed = CONFIG_DOC.read_text(encoding="utf-8")[start:end].strip()
    assert committed == config_table(), ("docs/config.md is out of date with "
                                         "semq_transforms/config.py: run python "
                                         "tests/test_docs.py --write-config-doc")


def test_config_doc_lists_every_field_with_its_default() -> None:
    rows = _table_rows(CONFIG_DOC.read_text(encoding="utf-8"))
    fields = {(section, name): field for section, name, field in config_fields()}
    for (section, name), field in fields.items():
        assert (section, name) in rows, f"docs/config.md: no row for {section} {name}"
        assert rows[(section, name)][3] == _default(field), (
            f"docs/config.md: {section} {name}: default {rows[(section, name)][3]}, the model "
            f"says {_default(field)}")
    for key in rows:
        assert key in fields, f"docs/config.md documents {key}, which no model has"


# ---------------------------------------------------------------------------------------------
# tests: the test itself can fail


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_broken_block_fails_naming_file_and_line(tmp_path: Path) -> None:
    doc = _write(tmp_path / "broken.md", "# t\n\n```bash\necho ok > ok.txt\n```\n\ntext\n\n"
                 "```python\nfrom pathlib import Path\nassert Path('ok.txt').exists()\n"
                 "raise SystemExit('boom')\n```\n\n```bash\necho never\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DocsError, match=r"broken\.md:9 \(python block\) failed") as info:
        run_document(doc, work, tmp_path / "scripts")
    assert "boom" in str(info.value)
    doc = _write(tmp_path / "bad-shell.md", "```sh\ntrue\nfalse\necho after\n```\n")
    with pytest.raises(DocsError, match=r"bad-shell\.md:1 \(sh block\) failed") as info:
        run_document(doc, work, tmp_path / "scripts")
    assert "after" not in str(info.value)


def test_python_traceback_shows_document_lines(tmp_path: Path) -> None:
    doc = _write(tmp_path / "lines.md", "a\n\n```python\nx = 1\n1 / 0\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DocsError, match=r"line 5") as info:
        run_document(doc, work, tmp_path / "scripts")
    assert "ZeroDivisionError" in str(info.value)


def test_block_left_running_is_stopped(tmp_path: Path) -> None:
    doc = _write(tmp_path / "bg.md", "```bash\nsleep 600 > /dev/null 2>&1 &\necho $! > pid\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    run_document(doc, work, tmp_path / "scripts")
    pid = int((work / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


@pytest.mark.parametrize(("text", "message"), [
    ("```console\n$ ls\n```\n", "tagged 'console'"),
    ("```\nls\n```\n", "untagged"),
    ("~~~yaml\na: 1\n~~~\n", "tagged 'yaml'"),
    ("<!-- docs-test: skip -->\n```bash\nls\n```\n", "needs a reason"),
    ("<!-- docs-test: skip:  -->\n```bash\nls\n```\n", "needs a reason"),
    ("<!-- docs-test: skip: no cloud here -->\ntext\n```bash\nls\n```\n", "not right before"),
    ("<!-- docs-test: whatever -->\n```bash\nls\n```\n", "unknown docs-test marker"),
    ("```bash\nls\n", "never closed"),
])
def test_rules_refuse(text: str, message: str) -> None:
    with pytest.raises(DocsError, match=re.escape(message)):
        check_rules(parse_blocks(text, "x.md"), "x.md")


def test_readme_may_not_skip() -> None:
    blocks = parse_blocks("<!-- docs-test: skip: needs Dataflow -->\n```bash\nls\n```\n",
                          "README.md")
    check_rules(blocks, "docs/x.md")
    with pytest.raises(DocsError, match="README.md may not skip"):
        check_rules(blocks, "README.md")


def test_checked_block_must_match_ci() -> None:
    ci = 'python3 -m venv .venv\nsource .venv/bin/activate\n' \
         'python -m pip install --quiet -e ".[dev]"\npython -m pytest -q\n'
    good = Block("README.md", 1, "bash", 'python -m venv .venv && . .venv/bin/activate\n'
                 'pip install -e . && python -m job\npip install -e ".[dev]" && python -m '
                 'pytest\n', CHECKED)
    assert check_against_ci(good, ci) == "\npython -m job\n\n"
    for changed in (good.code.replace("-m pytest", "-m pytest tests/test_docs.py"),
                    good.code.replace('".[dev]"', '".[dev,bench]"'),
                    good.code.replace("python -m venv .venv", "python -m venv env")):
        with pytest.raises(DocsError):
            check_against_ci(Block("README.md", 1, "bash", changed, CHECKED), ci)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-config-doc"]:
        sys.path.insert(0, str(REPO))
        write_config_doc()
        print(f"wrote {CONFIG_DOC}")
    else:
        sys.exit("usage: python tests/test_docs.py --write-config-doc")
