"""Turns configured callbacks into bound hooks: resolves, validates and binds their classes."""

from __future__ import annotations

import difflib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llm_init.callbacks import NodeInitializationCallbackBase
from llm_init.errors import CallbackConfigError
from llm_init.phases import HOOK_NAMES


@dataclass(frozen=True, slots=True)
class BoundHook:
    """One hook of one callback instance, resolved once so dispatch does no lookups."""

    callback_name: str
    hook: str
    fn: Any
    is_async: bool
    # The name this call goes by in its callback's own framework (an adapted Ray Serve LLM
    # callback's Ray hook), recorded with it; None: the hook's own name says it all.
    alias: str | None = None
    # This callback's own error policy (``raise_error_on_callback``); None: the initialization's.
    raise_errors: bool | None = None
    # Asked when the hook is due: False, and this binding is neither called nor recorded then;
    # None: it always runs.
    when: Callable[[], bool] | None = None


class BindsOwnHooks(Protocol):
    """A callback that adjusts how its hooks are bound (the Ray callback adapter does)."""

    def llm_init_bound_hook(self, bound: BoundHook) -> BoundHook | Sequence[BoundHook] | None:
        """The binding to dispatch for ``bound``, several (in their order), or None to leave
        the hook out."""


def callback_name(obj: object) -> str:
    """``module.Qualname`` of a callback class or instance, as events and errors name it."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def resolve_class(spec: type | str) -> type:
    """Turn a class or an import path (``pkg.mod:Class`` or ``pkg.mod.Class``) into a class."""
    if isinstance(spec, type):
        return spec
    if not isinstance(spec, str) or not spec:
        raise CallbackConfigError(
            f"callback_class must be a class or an import path string, got {spec!r}"
        )
    module_name, sep, attr_path = spec.partition(":")
    if not sep:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise CallbackConfigError(
            f"callback_class {spec!r} is not an import path like 'pkg.module:Class'"
        )
    try:
        obj = pkgutil.resolve_name(spec)
    except ImportError as exc:
        raise CallbackConfigError(
            f"callback_class {spec!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    except AttributeError as exc:
        raise CallbackConfigError(f"callback_class {spec!r}: {exc}") from exc
    except ValueError as exc:
        raise CallbackConfigError(
            f"callback_class {spec!r} is not an import path like 'pkg.module:Class'"
        ) from exc
    if not isinstance(obj, type):
        raise CallbackConfigError(f"callback_class {spec!r} resolves to {obj!r}, not a class")
    return obj


def implemented_hooks(cls: type) -> tuple[str, ...]:
    """The hooks a class really implements; the base class's no-ops don't count."""
    found = []
    for name in HOOK_NAMES:
        impl = getattr(cls, name, None)
        if impl is None or impl is getattr(NodeInitializationCallbackBase, name):
            continue
        found.append(name)
    return tuple(found)


def validate_callback_class(cls: type, kwargs: Mapping[str, Any]) -> None:
    """Fail at config time, naming the class, for anything that would fail mid-initialization."""
    name = callback_name(cls)
    hooks = implemented_hooks(cls)
    for attr in dir(cls):
        if attr.startswith(("on_pre_", "on_post_")) and attr not in HOOK_NAMES:
            close = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CallbackConfigError(f"callback class {name} defines unknown hook {attr!r}{hint}")
    if not hooks and not callable(getattr(cls, "on_event", None)):
        raise CallbackConfigError(
            f"callback class {name} implements none of the hooks ({', '.join(HOOK_NAMES)})"
        )
    for hook in hooks:
        fn = getattr(cls, hook)
        if not callable(fn):
            raise CallbackConfigError(f"callback class {name}: {hook} is not callable")
        try:
            inspect.signature(fn).bind(object(), object())
        except TypeError as exc:
            raise CallbackConfigError(
                f"callback class {name}: hook {hook}{inspect.signature(fn)} must take exactly "
                "one argument besides self, the context"
            ) from exc
        except ValueError:
            continue  # builtins without a signature can't be checked; accept them
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise CallbackConfigError(
            f"callback class {name} cannot be built with callback_kwargs "
            f"{sorted(kwargs)}: {exc}"
        ) from exc
    except ValueError:
        pass


def bind_hooks(instances: Sequence[object]) -> dict[str, tuple[BoundHook, ...]]:
    """Resolve every implemented hook once, in callback order, so the dispatcher just calls.
    A callback with ``llm_init_bound_hook`` (``BindsOwnHooks``) adjusts, multiplies or drops
    each binding."""
    bound: dict[str, tuple[BoundHook, ...]] = {hook: () for hook in HOOK_NAMES}
    for instance in instances:
        name = callback_name(instance)
        refine = getattr(instance, "llm_init_bound_hook", None)
        for hook in implemented_hooks(type(instance)):
            fn = getattr(instance, hook)
            one = BoundHook(name, hook, fn, inspect.iscoroutinefunction(fn))
            refined = one if refine is None else refine(one)
            if isinstance(refined, BoundHook):
                bound[hook] += (refined,)
            elif refined is not None:
                bound[hook] += tuple(refined)
    return bound
