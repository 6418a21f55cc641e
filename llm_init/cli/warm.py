"""The ``llm-init warm`` commands: build, list, inspect and prune warm-start artifacts.

``llm-init warm``: build a warm-start artifact before a rollout, and list, inspect and prune
an artifact store. Commands parse options and print a view (``llm_init.cli.views``); the work
is in ``llm_init.artifacts``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from llm_init.artifacts.catalog import (
    DEFAULT_GRACE_S,
    inspect_artifact,
    list_artifacts,
    parse_age,
    prune,
)
from llm_init.artifacts.stores import ArtifactStore, open_artifact_store
from llm_init.cli import views
from llm_init.errors import LLMInitError
from llm_init.telemetry.redaction import exception_message, redact_text

app = typer.Typer(help="Warm starts: build an artifact before a rollout; list, inspect and "
                  "prune the artifact store.", no_args_is_help=True)
console = Console()

StoreUrl = Annotated[str, typer.Option(
    "--artifact-store", envvar="LLM_INIT_ARTIFACT_STORE",
    help="The artifact store: file:///dir or s3://bucket/prefix")]
EndpointUrl = Annotated[str | None, typer.Option(
    "--endpoint-url", help="An S3-compatible endpoint (default AWS_ENDPOINT_URL(_S3))")]
Model = Annotated[str | None, typer.Option(
    "--model", help="Only artifacts of this model source (as the key shows it) or weights digest")]
Vllm = Annotated[str | None, typer.Option("--vllm", help="Only artifacts made by this vLLM")]
OlderThan = Annotated[str | None, typer.Option(
    "--older-than", help="Only artifacts older than this (90s, 15m, 12h, 7d, 2w)")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _open(url: str, endpoint_url: str | None) -> ArtifactStore:
    try:
        return open_artifact_store(url, endpoint_url=endpoint_url)
    except LLMInitError as exc:
        raise _fail(str(exc)) from None


def _older(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_age(text)
    except LLMInitError as exc:
        raise _fail(str(exc)) from None


@app.command("build")
def build_cmd(
    config: Annotated[Path | None, typer.Argument(
        help="A Serve config (YAML/JSON): a serve deploy file or build_openai_app args")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model id (without a config)")
                     ] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Model source: a path, s3://, hf:// (default: the model id)")] = None,
    engine_kwargs: Annotated[str | None, typer.Option(
        "--engine-kwargs", help="vLLM engine arguments as a JSON object")] = None,
    store: Annotated[str | None, typer.Option(
        "--artifact-store", envvar="LLM_INIT_ARTIFACT_STORE",
        help="Artifact store URL (replaces the config's)")] = None,
    endpoint_url: EndpointUrl = None,
    event_store: Annotated[str | None, typer.Option(
        "--event-store", help="Where the build's initialization is recorded")] = None,
    on_ray: Annotated[bool, typer.Option("--on-ray", help="Run it as a Ray task")] = False,
    num_cpus: Annotated[float | None, typer.Option(help="The Ray task's CPUs")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="The Ray task's GPUs")] = None,
    accelerator_type: Annotated[str | None, typer.Option(
        help="Ray accelerator type of the node to build on (e.g. H100)")] = None,
    resource: Annotated[list[str] | None, typer.Option(
        "--resource", help="A Ray resource the task needs, name=amount; repeatable")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the engine once and publish its cache, so that the first replica restores."""
    from llm_init.artifacts.build import BuildOutcome, build, serve_targets

    try:
        if config is not None:
            targets = serve_targets(_load(config))
        elif model is not None:
            targets = [_plain_target(model, source, engine_kwargs, store)]
        else:
            raise _fail("name a Serve config, or --model with --artifact-store")
        targets = [_with_store(t, store, endpoint_url) for t in targets]
        resources = dict(_resource(r) for r in resource or ())
    except LLMInitError as exc:
        raise _fail(str(exc)) from None
    outcomes: list[BuildOutcome] = []
    failed = False
    for target in targets:
        try:
            outcome = build(target.llm_config, on_ray=on_ray, num_cpus=num_cpus,
                            num_gpus=num_gpus, resources=resources,
                            accelerator_type=accelerator_type, download=target.download,
                            event_store=event_store or target.event_store)
        except LLMInitError as exc:
            typer.echo(f"error: {redact_text(target.llm_config.model_id)}: {exc}", err=True)
            failed = True
            continue
        outcomes.append(outcome)
        failed = failed or not outcome.ok
        if not as_json:
            what = (f"published {outcome.bytes / 1e6:.1f} MB ({outcome.files} files)"
                    if outcome.result == "published" else
                    f"skipped ({outcome.reason}: {outcome.message})")
            typer.echo(f"{outcome.model_id}: artifact {outcome.key} in {outcome.store}: {what}; "
                       f"engine start {outcome.engine_s:.1f} s, publish {outcome.publish_s:.1f} "
                       f"s, total {outcome.seconds:.1f} s (init {outcome.init_id})")
    if as_json:
        typer.echo(json.dumps([o.to_dict() for o in outcomes], indent=1, default=str))
    if failed:
        raise typer.Exit(1)


def _load(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"cannot read the Serve config {path}: {exception_message(exc)}") from None


def _plain_target(model: str, source: str | None, engine_kwargs: str | None,
                  store: str | None) -> Any:
    from llm_init.artifacts.build import BuildTarget
    from llm_init.config import LLMConfig
    from llm_init.steps.ray_vllm import DefaultDownload

    if store is None:
        raise _fail("--model needs --artifact-store (or LLM_INIT_ARTIFACT_STORE)")
    try:
        kwargs = json.loads(engine_kwargs) if engine_kwargs else {}
    except ValueError as exc:
        raise _fail(f"--engine-kwargs is not JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise _fail("--engine-kwargs must be a JSON object")
    config = LLMConfig(model_id=model, model_source=source, engine_kwargs=kwargs,
                       artifact_store=store)
    return BuildTarget(config, DefaultDownload(), None)


def _with_store(target: Any, url: str | None, endpoint_url: str | None) -> Any:
    """The target with ``--artifact-store``/``--endpoint-url`` over its own settings."""
    import dataclasses

    from llm_init.artifacts.settings import artifact_settings

    current = target.llm_config.artifact_store
    if url is None and endpoint_url is None:
        return target
    settings = artifact_settings(current) if current is not None else None
    fields: dict[str, Any] = {f.name: getattr(settings, f.name)
                              for f in dataclasses.fields(settings)} if settings else {}
    if url is not None:
        fields["url"] = url
    if endpoint_url is not None:
        fields["endpoint_url"] = endpoint_url
    if "url" not in fields:
        raise _fail(f"{redact_text(target.llm_config.model_id)} has no artifact_store; "
                    "name one with --artifact-store")
    config = dataclasses.replace(target.llm_config, artifact_store=fields)
    return dataclasses.replace(target, llm_config=config)


def _resource(text: str) -> tuple[str, float]:
    name, sep, amount = text.partition("=")
    try:
        return name, float(amount) if sep else 1.0
    except ValueError:
        raise _fail(f"--resource {text!r} must be name=amount") from None


@app.command("list")
def list_cmd(store: StoreUrl, endpoint_url: EndpointUrl = None, model: Model = None,
             vllm: Vllm = None, older_than: OlderThan = None, as_json: JsonOption = False
             ) -> None:
    """The artifacts in the store, newest first."""
    artifact_store = _open(store, endpoint_url)
    now = time.time()
    try:
        found = list_artifacts(artifact_store, model=model, vllm=vllm,
                               older_than_s=_older(older_than), now=now)
    except typer.Exit:
        raise
    except Exception as exc:
        raise _fail(f"cannot list {artifact_store.location}: {exception_message(exc)}") from None
    if as_json:
        typer.echo(json.dumps([e.to_dict(now) for e in found], indent=1))
        return
    console.print(views.artifacts_table(found, now, artifact_store.location))


@app.command("inspect")
def inspect_cmd(key: str, store: StoreUrl, endpoint_url: EndpointUrl = None,
                as_json: JsonOption = False) -> None:
    """One artifact's manifest: its key's parts, archive, files, when and where it was made."""
    artifact_store = _open(store, endpoint_url)
    try:
        manifest = inspect_artifact(artifact_store, key)
    except LLMInitError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f"cannot read {artifact_store.location}: {exception_message(exc)}") from None
    if as_json:
        typer.echo(json.dumps(views.artifact_dict(manifest), indent=1))
        return
    typer.echo(views.artifact_text(manifest, artifact_store.location))


@app.command("prune")
def prune_cmd(store: StoreUrl, endpoint_url: EndpointUrl = None, model: Model = None,
              vllm: Vllm = None, older_than: OlderThan = None,
              everything: Annotated[bool, typer.Option(
                  "--all", help="Every artifact (without a filter, prune refuses)")] = False,
              grace: Annotated[str, typer.Option(
                  help="Keep a retired artifact's archive this long, for restores already "
                  "under way; longer than any restore's timeout_s")] = f"{DEFAULT_GRACE_S:.0f}s",
              dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what it would do")
                                 ] = False,
              as_json: JsonOption = False) -> None:
    """Retire the matching artifacts (no new restore starts from them) and delete what earlier
    prunes retired once their grace period is over."""
    if not everything and model is None and vllm is None and older_than is None:
        raise _fail("name --model, --vllm or --older-than, or --all for every artifact")
    artifact_store = _open(store, endpoint_url)
    grace_s = _older(grace)
    try:
        report = prune(artifact_store, model=model, vllm=vllm, older_than_s=_older(older_than),
                       grace_s=DEFAULT_GRACE_S if grace_s is None else grace_s, dry_run=dry_run)
    except LLMInitError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f"cannot prune {artifact_store.location}: {exception_message(exc)}"
                    ) from None
    now = time.time()
    if as_json:
        typer.echo(json.dumps(views.prune_dict(report, now, dry_run=dry_run), indent=1))
        return
    for line in views.prune_lines(report, now, dry_run=dry_run):
        typer.echo(line)
