"""The code in README.md and docs/*.md runs as written, and the commands it names exist.

Every ```python block runs, each in a fresh namespace and a temporary directory, unless the line
before it says why it cannot: ``<!-- not run: REASON -->``. Every ``llm-init`` command in a
```bash block names a real command and real options. Every relative link leads to a file, and
to a heading of it where it names one.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from llm_init import (
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    initialize_node_sync,
    read_events,
    replay,
)
from llm_init.cli import app
from llm_init.telemetry import names
from tests.support.cli import invoke
from tests.support.steps import SettingStep

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>\S.*?) -->")
FENCE = re.compile(r"^```(?P<lang>\w*)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, each with the reason it is not run, if one is given."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        marker = NOT_RUN.fullmatch(lines[i - 1].strip()) if i else None
        found.append(Block(page, i + 1, opening["lang"], "\n".join(lines[i + 1:end]) + "\n",
                           marker["reason"] if marker else None))
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


def run_block(block: Block) -> dict[str, Any]:
    """Execute ``block`` as a module would run it (top-level ``await`` allowed); its names."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    code = compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return namespace


@pytest.fixture(autouse=True)
def quiet_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example runs in an empty directory and serves no metrics port."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(names.ENV_METRICS_PORT, "off")


@pytest.mark.parametrize("block", [b for b in PYTHON if b.not_run is None],
                         ids=lambda b: b.where)
def test_python_block_runs(block: Block) -> None:
    """The block runs without raising."""
    run_block(block)


def test_a_not_run_marker_stands_only_before_a_block() -> None:
    """Every ``not run`` marker is followed by a code block, so none is left behind by an edit."""
    for page in PAGES:
        lines = page.read_text().splitlines()
        stray = [n for n, line in enumerate(lines, 1) if line.startswith("<!-- not run")
                 and not (NOT_RUN.fullmatch(line.strip()) and n < len(lines)
                          and FENCE.match(lines[n]))]
        assert stray == [], page


def _named(page: str, name: str) -> Any:
    """``name`` as the python block of ``page`` that defines it makes it."""
    (block,) = [b for b in PYTHON if b.page == ROOT / page
                and re.search(rf"^class {name}\b", b.code, re.M)]
    return run_block(block)[name]


def _steps() -> DefaultSteps:
    return DefaultSteps(
        download=SettingStep("download_result", {"path": "/models/tiny", "bytes": 1234}),
        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
        engine=SettingStep("engine", "engine-handle"))


def _normalized(text: str) -> list[str]:
    """Waterfall lines without what differs between two runs: ids, times, bar lengths."""
    text = re.sub(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}\b", "ID", text)
    text = re.sub(r"\d+(\.\d+)? (ms|s|min)\b", "T", text)
    return [" ".join(line.replace("█", " ").replace("▒", " ").split())
            for line in text.strip().splitlines()]


def test_the_readme_example_prints_the_timeline_the_readme_shows(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]
                                                                  ) -> None:
    """The README's example records an initialization whose ``llm-init timeline`` is the
    README's output block, but for ids and times."""
    readme = blocks(ROOT / "README.md")
    example = next(i for i, b in enumerate(readme) if b.lang == "python" and b.not_run is None)
    command, output = readme[example + 1], readme[example + 2]
    run_block(readme[example])
    init_id = capsys.readouterr().out.split()[-1]
    args = shlex.split(command.code, comments=True)
    assert args[:2] == ["llm-init", "timeline"]
    assert output.lang == "text"
    shown = invoke("timeline", init_id[:8], *args[3:], width=90)
    assert shown.exit_code == 0, shown.output
    assert _normalized(shown.output) == _normalized(output.code)


def test_custom_download_sets_the_worker_download_mode() -> None:
    """docs/callbacks.md's CustomDownload: its assignment lands in the context and in the log."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", worker_node_download_model="TOKENIZER_ONLY",
                                         callback_class=_named("docs/callbacks.md",
                                                               "CustomDownload")),
                               event_store=store, steps=_steps())
    assert ctx.worker_node_download_model == "MODEL_AND_TOKENIZER"
    changes = [(e.field, e.old, e.new) for e in read_events(store, ctx.init_id)  # type: ignore[attr-defined]  # a field of the Event subclass read
               if e.TYPE == "ContextChanged" and e.field == "worker_node_download_model"]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert changes == [("worker_node_download_model", "TOKENIZER_ONLY", "MODEL_AND_TOKENIZER")]


def test_metrics_prints_the_duration(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/callbacks.md's Metrics keeps state on self between hooks and prints the time."""
    initialize_node_sync(LLMConfig(model_id="m",
                                   callback_class=_named("docs/callbacks.md", "Metrics")),
                         event_store=InMemoryEventStore(), steps=_steps())
    assert capsys.readouterr().out.startswith("Took ")


def test_full_custom_skips_every_default_step() -> None:
    """docs/callbacks.md's FullCustom supplies placement group and runtime env, and no default
    step runs."""
    steps = _steps()
    ctx = initialize_node_sync(LLMConfig(model_id="llama-2-7b",
                                         callback_class=_named("docs/callbacks.md", "FullCustom")),
                               event_store=InMemoryEventStore(), steps=steps)
    assert ctx.placement_group == {"bundles": [{"CPU": 1}], "strategy": "PACK"}
    assert ctx.runtime_env == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}}
    assert [steps.for_name(n).calls for n in ("download", "placement_group", "engine")] == [  # type: ignore[attr-defined]  # SettingStep counts its calls
        0, 0, 0]


def test_custom_data_carries_state_from_one_hook_to_a_later_one() -> None:
    """docs/callbacks.md's RemembersAcrossHooks: a value one hook stores on ctx.custom_data is
    there in a later hook, and replays."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=_named(
        "docs/callbacks.md", "RemembersAcrossHooks")), event_store=store, steps=_steps())
    assert ctx.custom_data["download_to_engine_s"] >= 0
    assert replay(read_events(store, ctx.init_id)).state["custom_data"] == ctx.custom_data


def commands_written() -> list[tuple[str, list[str]]]:
    """Each ``llm-init`` command line in a bash block: (where, its words)."""
    found = []
    for block in ALL_BLOCKS:
        if block.lang != "bash":
            continue
        for number, line in enumerate(block.code.splitlines(), block.line + 1):
            for part in re.split(r"\||;|&&|>", line.split("  #")[0]):
                words = part.replace("[", " ").replace("]", " ").split()
                if words and words[0].endswith("llm-init"):
                    found.append((f"{block.page.relative_to(ROOT)}:{number}", words[1:]))
    return found


@functools.cache
def _cli() -> Any:
    return typer.main.get_command(app)


def unknown_words(words: list[str]) -> list[str]:
    """The options of ``llm-init WORDS`` that its command does not have, and an unknown
    command as itself."""
    # Typer's own copy of click: groups are told by their ``commands``.
    command: Any = _cli()
    rest = list(words)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        found = command.commands.get(rest[0])
        if found is None:
            return [rest[0]]
        command, rest = found, rest[1:]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    return [w.split("=")[0] for w in rest if w.startswith("--") and w.split("=")[0] not in options]


def test_every_llm_init_command_in_the_docs_exists() -> None:
    """Each ``llm-init`` line of a bash block names a command the CLI has, with its options."""
    written = commands_written()
    assert len(written) > 20
    assert [(where, unknown) for where, words in written
            if (unknown := unknown_words(words))] == []


def test_the_command_check_sees_a_misspelled_option() -> None:
    """A renamed option or command written in the docs is reported."""
    assert unknown_words(["events", "ID", "--jsn"]) == ["--jsn"]
    assert unknown_words(["warm", "biuld"]) == ["biuld"]
    assert unknown_words(["warm", "list", "--artifact-store", "s3://b/w", "--json"]) == []


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_leads_somewhere() -> None:
    """Each relative link in the README and docs names a file that exists, and a heading of it
    where it names one."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            headings = ({_anchor(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(), re.M)}
                        if linked.suffix == ".md" and linked.exists() else set())
            if not linked.exists() or (anchor and linked.suffix == ".md"
                                       and anchor not in headings):
                broken.append(f"{page.name}: {target}")
    assert broken == []
