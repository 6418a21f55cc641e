"""The callback protocol, a no-op base class, and validation of callback classes."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llm_init.errors import CallbackConfigError
from llm_init.phases import HOOK_NAMES

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext
    from llm_init.events import Event


@runtime_checkable
class NodeInitializationCallback(Protocol):
    """Hooks around each phase of a node's initialization; implement only the ones you need.

    Hooks may be plain or ``async def``. A pre-hook that returns ``False`` skips that phase's
    default step (``on_pre_initialization`` returning ``False`` skips every default step).
    """

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires first, before any phase; may set any writable field, ``False`` skips all steps."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the model download; may set the download fields, ``False`` skips it."""

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        """Fires after the download (or its skip); may read or replace ``download_result``."""

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the placement group is obtained; may set it, ``False`` skips the step."""

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        """Fires once the placement group is ready; may inspect it or adjust ``runtime_env``."""

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the engine starts; may set ``extra_init_kwargs``, ``False`` skips it."""

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        """Fires after the engine started; may read ``engine`` and record ``custom_data``."""

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        """Fires last, after every phase succeeded; may read the final context."""


class NodeInitializationCallbackBase:
    """Convenience base class: every hook is a no-op, so subclasses override only what they use."""

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires first, before any phase; may set any writable field, ``False`` skips all steps."""
        return None

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the model download; may set the download fields, ``False`` skips it."""
        return None

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        """Fires after the download (or its skip); may read or replace ``download_result``."""

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the placement group is obtained; may set it, ``False`` skips the step."""
        return None

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        """Fires once the placement group is ready; may inspect it or adjust ``runtime_env``."""

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the engine starts; may set ``extra_init_kwargs``, ``False`` skips it."""
        return None

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        """Fires after the engine started; may read ``engine`` and record ``custom_data``."""

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        """Fires last, after every phase succeeded; may read the final context."""


class EventObserver(Protocol):
    """Anything that wants every recorded event (metrics, logs, status); must not raise."""

    def on_event(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class BoundHook:
    """One hook of one callback instance, resolved once so dispatch does no lookups."""

    callback_name: str
    hook: str
    fn: Any
    is_async: bool
    # An adapted Ray Serve LLM callback's: the Ray hook this call runs, recorded with it.
    ray_hook: str | None = None
    # This callback's own ``raise_error_on_callback``; None: the initialization's.
    raise_errors: bool | None = None
    # Called when the hook is due, to choose the binding that runs then (returning None: none
    # runs and nothing is recorded); None: this binding runs.
    pick: Callable[[], BoundHook | None] | None = None


class BindsOwnHooks(Protocol):
    """A callback that adjusts how its hooks are bound (the Ray callback adapter does)."""

    def llm_init_bound_hook(self, bound: BoundHook) -> BoundHook | None:
        """The binding to dispatch for ``bound``, or None to leave the hook out."""


def callback_name(obj: object) -> str:
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
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
    else:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise CallbackConfigError(
            f"callback_class {spec!r} is not an import path like 'pkg.module:Class'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CallbackConfigError(
            f"callback_class {spec!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise CallbackConfigError(
                f"callback_class {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
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
    A callback with ``llm_init_bound_hook`` (``BindsOwnHooks``) adjusts or drops each binding."""
    bound: dict[str, tuple[BoundHook, ...]] = {hook: () for hook in HOOK_NAMES}
    for instance in instances:
        name = callback_name(instance)
        refine = getattr(instance, "llm_init_bound_hook", None)
        for hook in implemented_hooks(type(instance)):
            fn = getattr(instance, hook)
            one: BoundHook | None = BoundHook(name, hook, fn, inspect.iscoroutinefunction(fn))
            if refine is not None:
                one = refine(one)
            if one is not None:
                bound[hook] += (one,)
    return bound
