"""Where live sources are made: ``open_source`` in the node module, which uses them; the
source descriptions (``sources.py``) import none of the modules that read a source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llm_init.steps.download.sources as sources_module
from llm_init.steps.download import open_source, parse_source
from llm_init.steps.download.hf import HFSource
from llm_init.steps.download.s3 import S3Source
from llm_init.steps.download.sources import LocalDirSource


@pytest.mark.parametrize(("text", "kind"), [
    ("s3://models/tiny", S3Source), ("hf://org/tiny", HFSource), ("/models/tiny", LocalDirSource),
])
def test_open_source_opens_each_kind_as_its_source(text, kind) -> None:
    """An S3 URI opens as the S3 source, a Hub id as the Hub source, a directory as itself."""
    assert type(open_source(parse_source(text))) is kind


def test_a_local_source_is_opened_with_the_verification_asked_for() -> None:
    """``verify`` reaches the directory source."""
    opened = open_source(parse_source("/models/tiny"), verify="sha256")
    assert isinstance(opened, LocalDirSource)
    assert opened.verify == "sha256"


def test_source_descriptions_import_no_source_reader() -> None:
    """``sources.py`` imports neither the S3 nor the Hub source, at the top or inside a
    function: no import circle to break with a lazy import."""
    tree = ast.parse(Path(sources_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"llm_init.steps.download.s3", "llm_init.steps.download.hf"}
