"""Specification of ``LLMConfig``: callback resolution and validation at config time."""

from __future__ import annotations

import pickle
import threading

import pytest

from llm_init import CallbackConfigError, LLMConfig
from tests.callbacks_for_tests import Importable


@pytest.mark.parametrize("path", ["tests.callbacks_for_tests:Importable",
                                  "tests.callbacks_for_tests.Importable"])
def test_callback_class_accepts_both_import_path_forms(path: str) -> None:
    """Both 'pkg.mod:Class' and 'pkg.mod.Class' resolve to the class."""
    assert LLMConfig(model_id="m", callback_class=path).callback_classes == (Importable,)


@pytest.mark.parametrize(("spec", "message"), [
    ("tests.no_such_module:Cb", r"cannot import module 'tests.no_such_module'"),
    ("tests.callbacks_for_tests:Missing", r"has no attribute 'Missing'"),
    ("tests.callbacks_for_tests:not_a_class", r"resolves to 42, not a class"),
    ("NoDots", r"is not an import path"),
    ("tests.callbacks for tests:Cb", r"'tests.callbacks for tests:Cb' is not an import path"),
])
def test_unresolvable_import_path_fails_at_config_time(spec: str, message: str) -> None:
    """A callback path that does not resolve is rejected when the config is built."""
    with pytest.raises(CallbackConfigError, match=message):
        LLMConfig(model_id="m", callback_class=spec)


def test_class_without_hooks_is_rejected_with_its_name() -> None:
    """A class that implements none of the hooks is a config error naming the class."""
    with pytest.raises(CallbackConfigError, match=r"NoHooks implements none of the hooks"):
        LLMConfig(model_id="m", callback_class="tests.callbacks_for_tests:NoHooks")


def test_misspelled_hook_is_rejected_with_a_suggestion() -> None:
    """A method that looks like a hook but isn't one gets a did-you-mean error."""
    with pytest.raises(CallbackConfigError, match=r"did you mean 'on_pre_download'"):
        LLMConfig(model_id="m", callback_class="tests.callbacks_for_tests:Misspelled")


def test_hook_with_wrong_signature_is_rejected() -> None:
    """A hook that cannot take the context is named in the error."""
    with pytest.raises(CallbackConfigError, match=r"WrongSignature: hook on_pre_download"):
        LLMConfig(model_id="m", callback_class="tests.callbacks_for_tests:WrongSignature")


def test_bad_callback_kwargs_are_rejected_before_any_phase() -> None:
    """kwargs the class's constructor does not accept fail at config time."""
    with pytest.raises(CallbackConfigError, match=r"Importable cannot be built .*'colour'"):
        LLMConfig(model_id="m", callback_class=Importable, callback_kwargs={"colour": "red"})


def test_one_kwargs_mapping_for_several_classes_is_ambiguous() -> None:
    """Several classes need one kwargs mapping each."""
    with pytest.raises(CallbackConfigError, match=r"one mapping per class"):
        LLMConfig(model_id="m", callback_class=[Importable, Importable],
                  callback_kwargs={"greeting": "x"})


def test_get_or_create_callback_returns_one_instance_across_threads() -> None:
    """Concurrent callers in one process all get the very same instance."""
    config = LLMConfig(model_id="m", callback_class=Importable, callback_kwargs={"greeting": "yo"})
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(config.get_or_create_callback()))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1
    assert isinstance(seen[0], Importable)
    assert seen[0].greeting == "yo"


def test_config_pickles_without_its_process_local_instances() -> None:
    """A config shipped to another process (as Ray does) builds its own callback there."""
    config = LLMConfig(model_id="m", callback_class=Importable)
    first = config.get_or_create_callback()
    copy = pickle.loads(pickle.dumps(config))
    assert copy.model_id == "m"
    assert copy.get_or_create_callback() is not first


def test_unknown_download_mode_is_rejected() -> None:
    """Download modes are Ray Serve LLM's three values."""
    with pytest.raises(CallbackConfigError, match=r"local_node_download_model must be one of"):
        LLMConfig(model_id="m", local_node_download_model="EVERYTHING")  # type: ignore[arg-type]  # an unknown mode on purpose
