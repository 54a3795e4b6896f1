"""Find and run the code blocks of README.md and docs/**/*.md.

Every fenced block is one test, identified by ``file:line`` of its opening fence.

- ``python`` blocks run in order in one namespace per Markdown file (a page reads like a
  notebook), with top-level ``await`` allowed, in a scratch directory, with
  ``OPENAI_BASE_URL``/``ANTHROPIC_BASE_URL`` and the keys pointing at a loopback
  ``plait.testing.LLMServer``. A block that raises fails its test. The namespace is a real
  module, so functions a page defines are importable by name (``@op``), and on pages that use
  Ray its classes ship to workers by value, as a notebook's would.
- ``bash`` blocks: each command is checked by kind. ``make T`` needs target ``T`` in the
  Makefile; ``pip install`` needs the named extras in pyproject.toml; ``plait-testing-server``
  needs every flag in its ``--help``; ``python FILE`` needs FILE to exist and compile;
  ``plait ...`` and ``python -m ...`` are executed. Any other command fails the test (teach the
  runner, never skip).
- A block right after ``<!-- file: NAME -->`` (any language) is written to NAME in the
  scratch directory before the page's later blocks run: docs show a file, then use it.
- Other blocks (output, YAML without a file marker, text) are not code and are not tests.

Run one page with ``pytest tests/docs -k README`` or one block with ``-k 'README.md:42'``.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shlex
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plait.testing import LLMServer
from plait.testing._thread import ThreadedServer

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
_FILE_MARK = re.compile(r"<!--\s*file:\s*(?P<name>[\w./-]+)\s*-->")
_RUN_LANGS = {"python", "py", "bash", "sh", "shell", "console"}


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    path: Path
    line: int
    lang: str
    code: str
    file: str | None  # the <!-- file: NAME --> marker before it

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in _RUN_LANGS


def markdown_files() -> list[Path]:
    """README.md and every page under docs/."""
    docs = sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    return [ROOT / "README.md", *docs]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang, indent = match["fence"], match["lang"].lower(), len(match["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1
        marker = _FILE_MARK.search(lines[start - 1]) if start > 0 else None
        if marker is None and start > 1 and not lines[start - 1].strip():
            marker = _FILE_MARK.search(lines[start - 2])
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n",
                         marker["name"] if marker else None))
    return out


def all_blocks() -> Iterator[Block]:
    """Every block that is a test: runnable code, or a file a page writes."""
    for path in markdown_files():
        for block in blocks_of(path):
            if block.runs or block.file:
                yield block


# --------------------------------------------------------------------------- python


def run_python(block: Block, namespace: dict[str, Any]) -> None:
    """Execute a python block in ``namespace`` (top-level ``await`` allowed)."""
    # Padded so tracebacks show the block's real line numbers in the Markdown file.
    source = "\n" * block.line + block.code
    code = compile(source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # our own documentation's code
    if asyncio.iscoroutine(result):
        asyncio.run(result)


# --------------------------------------------------------------------------- bash


def commands_of(code: str) -> list[list[str]]:
    """Shell commands of a bash block: comments dropped, continuations joined, ``&&`` split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands: list[list[str]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("$ ")
        for part in re.split(r"\s*&&\s*", line):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(words)
    return commands


def check_command(words: list[str], cwd: Path, env: dict[str, str]) -> Path:
    """Check or run one command; returns the working directory after it (``cd``)."""
    head = words[0]
    if head == "cd":
        target = (cwd / words[1]).resolve()
        if not target.is_dir():
            target = (ROOT / words[1]).resolve()
        assert target.is_dir(), f"cd {words[1]}: no such directory"
        return target
    if head == "make":
        _check_make(words[1:])
    elif head == "pip" or words[:3] == ["python", "-m", "pip"]:
        _check_pip(words)
    elif head == "plait-testing-server":
        _check_flags([sys.executable, "-m", "plait.testing.server_cli"], words[1:])
    elif head == "plait":
        _run([sys.executable, "-m", "plait", *words[1:]], cwd, env)
    elif head in ("python", "python3") and len(words) > 1 and words[1] == "-m":
        _run([sys.executable, *words[1:]], cwd, env)
    elif head in ("python", "python3") and len(words) > 1:
        script = cwd / words[1] if (cwd / words[1]).exists() else ROOT / words[1]
        assert script.is_file(), f"{words[1]} does not exist"
        compile(script.read_text(), str(script), "exec")
    else:
        raise AssertionError(
            f"The snippet runner does not know the command {head!r}; teach "
            "tests/docs/_snippets.py how to check it."
        )
    return cwd


def _check_make(targets: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    defined = set(re.findall(r"^([\w.-]+)\s*:", makefile, flags=re.MULTILINE))
    for target in [t for t in targets if not t.startswith("-") and "=" not in t]:
        assert target in defined, f"make {target}: no such target in the Makefile"


def _check_pip(words: list[str]) -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    for word in words:
        match = re.search(r"\[([\w,\s-]+)\]", word)
        if match and not word.startswith("-"):
            wanted = {e.strip() for e in match[1].split(",")}
            assert wanted <= extras, f"{word}: unknown extras {sorted(wanted - extras)}"


def _check_flags(command: list[str], args: list[str]) -> None:
    help_text = subprocess.run([*command, "--help"], capture_output=True, text=True,
                               timeout=60, check=True).stdout
    for flag in [a.split("=")[0] for a in args if a.startswith("--")]:
        assert flag in help_text, f"{flag} is not an option ({' '.join(command)} --help)"


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        # Like a shell on a cluster node: the command joins the running Ray (no second one).
        env = {**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=110)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-2000:]}\n"
        f"{done.stderr[-3000:]}"
    )


BLOCKS = list(all_blocks())
KEY = "sk-docs-snippets"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with LLMServer().run_in_thread() as running:
        yield running


@pytest.fixture(scope="module")
def env(server: ThreadedServer) -> Iterator[dict[str, str]]:
    """The process environment while snippets run: every provider points at the server."""
    values = {"OPENAI_BASE_URL": server.openai_base_url,
              "ANTHROPIC_BASE_URL": server.anthropic_base_url,
              "OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY,
              "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                          os.environ.get("PYTHONPATH")]))}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield dict(os.environ)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class Page:
    """One Markdown file's scratch directory and python namespace, filled in order."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.blocks = blocks_of(path)
        self.workdir = workdir
        # A real module: functions a page defines (an @op) are importable by name, as in a
        # user's own file.
        name = "plait_docs_" + re.sub(r"\W", "_", str(path.relative_to(ROOT)))
        module = types.ModuleType(name)
        sys.modules[name] = module
        self.namespace: dict[str, Any] = module.__dict__
        if re.search(r"\bimport (ray|plait_ray)\b", path.read_text()):
            # As for a notebook's __main__: Ray ships the page's classes by value.
            from ray import cloudpickle

            cloudpickle.register_pickle_by_value(module)
        self.done: set[int] = set()
        (workdir / "examples").symlink_to(ROOT / "examples")

    def run_until(self, block: Block, env: dict[str, str]) -> None:
        """Run the blocks before ``block`` that have not run (a test picked with -k)."""
        for earlier in self.blocks:
            if earlier.line >= block.line:
                break
            if earlier.line not in self.done:
                try:
                    self.run(earlier, env)
                except Exception:  # its own test reports it
                    pass

    def run(self, block: Block, env: dict[str, str]) -> None:
        self.done.add(block.line)
        cwd = Path.cwd()
        os.chdir(self.workdir)
        try:
            if block.file:
                target = self.workdir / block.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code)
            elif block.lang in ("python", "py"):
                run_python(block, self.namespace)
            elif block.runs:
                where = self.workdir
                for words in commands_of(block.code):
                    where = check_command(words, where, env)
        finally:
            os.chdir(cwd)


@pytest.fixture(scope="module")
def pages() -> Iterator[dict[Path, Page]]:
    made: dict[Path, Page] = {}
    yield made
    for page in made.values():
        sys.modules.pop(page.namespace["__name__"], None)
    _stop_ray()  # later test modules start their own


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_snippet(block: Block, pages: dict[Path, Page], env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> None:
    page = pages.get(block.path)
    if page is None:
        page = pages[block.path] = Page(block.path, tmp_path_factory.mktemp(block.path.stem))
    page.run_until(block, env)
    page.run(block, env)


def test_every_guide_page_has_code_that_runs() -> None:
    docs = sorted((ROOT / "docs").rglob("*.md"))
    assert docs, "docs/ has no pages"
    for path in docs:
        if path.name in ("index.md",) or path.parent.name == "reference":
            continue
        assert any(b.runs for b in blocks_of(path)), f"{path.relative_to(ROOT)} shows no code"
