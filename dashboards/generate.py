"""The "LLM replica initialization" Grafana dashboard, as code (``grafana-foundation-sdk`` 11.x).

    python dashboards/generate.py           # writes dashboards/llm-init-initialization.json
    python dashboards/generate.py --check   # exit 1 when the committed JSON is out of date

Every query reads llm-init's metrics as they are scraped, both from the standalone
``prometheus_client`` endpoint (``llm_init_...``) and from a Ray node's metrics endpoint under Ray
Serve (``ray_llm_init_...``, with Ray's per-worker labels): selectors match the name with
``{__name__=~"(ray_)?llm_init_..."}`` and every query aggregates (``sum by``/``max by``) so Ray's
extra labels never split a line. Counts of one-off events (initializations, phases, hooks) use
``counted`` rather than ``increase``: see there. Metric and label names come from
``llm_init.telemetry.names``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from llm_init.phases import Phase
from llm_init.telemetry import names as n

UID = "llm-init-initialization"
OUTPUT = Path(__file__).resolve().parent / "llm-init-initialization.json"
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Panels that read NVML's GPU memory gauge: empty (never zeros) on machines without a GPU.
GPU_ONLY_PANELS = frozenset({"GPU memory at the end of each phase", "GPU memory added by phase"})

PHASE_TITLES = {
    Phase.PRE_INITIALIZATION: "Pre-initialization",
    Phase.DOWNLOAD: "Download",
    Phase.PLACEMENT_GROUP: "Placement group",
    Phase.ENGINE_INIT: "Engine start",
    Phase.POST_INITIALIZATION: "Post-initialization",
}


# --- PromQL ------------------------------------------------------------------------------------

def sel(metric: str, *matchers: str, by_model: bool = True) -> str:
    """A selector of ``metric`` under either exporter's name, filtered by the dashboard's
    variables. ``by_model=False`` for metrics without a ``model`` label (hook durations)."""
    labels = [f'__name__=~"({n.RAY_METRIC_PREFIX})?{metric}"', *matchers]
    if by_model:
        labels.append(f'{n.LABEL_MODEL}=~"$model"')
    labels.append('application=~"$application"')
    return "{" + ", ".join(labels) + "}"


def counted(selector: str, window: str) -> str:
    """How much each counter series (or histogram bucket) grew over ``window``, counting a series
    first seen inside the window from zero.

    A replica process initializes once, so its phase, hook and outcome series usually appear
    already at their final value and never change: ``increase()`` and ``rate()`` see nothing
    there. The value at the window's end minus the value at its start, or the whole value for a
    series that did not exist at the start, counts them; ``clamp_min`` drops the negative delta
    of a counter reset (a process restarted under the same labels).
    """
    last = f"last_over_time({selector}[{window}])"
    return f"clamp_min(({last} - {selector} offset {window}) or {last}, 0)"


def quantile(q: float, metric: str, by: str, *matchers: str, window: str = "$__rate_interval",
             by_model: bool = True) -> str:
    """The ``q`` quantile of a histogram over ``window``, one series per ``by`` label set."""
    bucket = sel(f"{metric}_bucket", *matchers, by_model=by_model)
    return f"histogram_quantile({q}, sum by (le, {by}) ({counted(bucket, window)}))"


def total(metric: str, by: str | None, *matchers: str, window: str = "$__rate_interval",
          by_model: bool = True) -> str:
    """``counted`` summed (``by`` the given labels, or over everything)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({counted(sel(metric, *matchers, by_model=by_model), window)})"


def mean(metric: str, by: str, *matchers: str, window: str = "$__rate_interval") -> str:
    """A histogram's mean over ``window`` (``_sum`` over ``_count``), per ``by``."""
    return (f"{total(f'{metric}_sum', by, *matchers, window=window)}"
            f" / {total(f'{metric}_count', by, *matchers, window=window)}")


INITS = n.METRIC_INITIALIZATIONS
PHASE = n.METRIC_PHASE_DURATION
# An abandoned initialization (its process died mid-start) is a failed start, as in the alerts.
FAILURES = f'{n.LABEL_OUTCOME}=~"{n.OUTCOME_FAILED}|{n.OUTCOME_ABANDONED}"'


# --- building blocks ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES


def targets(queries: Sequence[Query]) -> list[Builder[variants.Dataquery]]:
    """Prometheus queries with explicit ref ids A, B, C... in order."""
    out: list[Builder[variants.Dataquery]] = []
    for i, q in enumerate(queries):
        t = (prometheus.Dataquery().ref_id(chr(ord("A") + i)).expr(q.expr)
             .datasource(DATASOURCE).format(q.fmt).legend_format(q.legend or "__auto"))
        out.append(t.instant() if q.instant else t.range())
    return out


def legend_table(*calcs: str) -> cb.VizLegendOptions:
    return (cb.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM).calcs(list(calcs) or ["mean", "max"]))


def graph(title: str, description: str, unit: str, queries: Sequence[Query], *, width: int = 12,
          height: int = 8, stacked: bool = False, bars: bool = False,
          min_value: float | None = 0, max_value: float | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).targets(targets(queries)).span(width).height(height)
             .legend(legend_table("mean", "max", "lastNotNull"))
             .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING))
             .fill_opacity(35 if stacked else 10).line_width(1).span_nulls(True))
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def stat_panel(title: str, description: str, unit: str, query: Query, *, width: int = 6,
               thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),)
               ) -> stat.Panel:
    steps = [dashboard.Threshold(value=v, color=c) for v, c in thresholds]
    return (stat.Panel().title(title).description(description).unit(unit)
            .datasource(DATASOURCE).targets(targets([query])).span(width).height(4)
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.VALUE)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .thresholds(db.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE)
                        .steps(steps)))


def latency_heatmap(phase: Phase) -> heatmap.Panel:
    return (heatmap.Panel().title(f"{PHASE_TITLES[phase]} latency distribution")
            .description(f"How many {phase.value} phases ended in each duration bucket per "
                         "interval (all outcomes). Bands that creep upward show the phase "
                         "slowing down; the histogram's buckets run from 0.1 s to 1 h.")
            .datasource(DATASOURCE).span(8).height(8)
            .targets(targets([Query(total(f"{PHASE}_bucket", "le",
                                          f'{n.LABEL_PHASE}="{phase.value}"'),
                                    "{{le}}", fmt=PromQueryFormat.HEATMAP)]))
            .calculate(False)
            .y_axis(heatmap.YAxisConfig().unit("s").decimals(1))
            .cell_values(heatmap.CellValues().unit("short").decimals(0))
            .color(heatmap.HeatmapColorOptions().mode(heatmap_models.HeatmapColorMode.SCHEME)
                   .scheme("Oranges").scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
                   .exponent(0.5).steps(64).fill("dark-orange"))
            .show_legend().mode(common.TooltipDisplayMode.SINGLE).show_y_histogram())


def phase_quantiles(phase: Phase, width: int) -> timeseries.Panel:
    match = f'{n.LABEL_PHASE}="{phase.value}"'
    return graph(
        f"{PHASE_TITLES[phase]}: p50 / p95 / p99",
        f"Quantiles of the {phase.value} phase's duration over the interval, per model, "
        "estimated from the phase duration histogram (all outcomes; a failed phase counts "
        "until it failed).", "s",
        [Query(quantile(q, PHASE, n.LABEL_MODEL, match), f"p{round(q * 100)} {{{{model}}}}")
         for q in (0.5, 0.95, 0.99)], width=width)


def var_over_label(name: str, label: str, description: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(label).description(description)
            .datasource(DATASOURCE)
            .query(f'label_values({{__name__=~"({n.RAY_METRIC_PREFIX})?{INITS}"}}, {name})')
            .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(dashboard.VariableOption(selected=True, text="All", value="$__all")))


# --- the dashboard -----------------------------------------------------------------------------

def overview_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Overview"))
    d.with_panel(stat_panel(
        "Initializations in range", "Initializations that finished in the selected time "
        "range, by outcome.", "short",
        Query(total(INITS, n.LABEL_OUTCOME, window="$__range"), "{{outcome}}",
              instant=True)))
    d.with_panel(stat_panel(
        "Failure ratio in range", "Share of the initializations finished in the range that "
        "failed or were abandoned (their process died). See the event log (llm-init list "
        "--outcome failed, --outcome abandoned) for the errors.",
        "percentunit",
        Query(f"{total(INITS, None, FAILURES, window='$__range')} / "
              f"{total(INITS, None, window='$__range')}", "failed", instant=True),
        thresholds=((None, "green"), (0.05, "orange"), (0.25, "red"))))
    d.with_panel(stat_panel(
        "Mean initialization time", "Time spent in all phases per finished initialization "
        "in the range (sum of phase durations over the number of initializations). Under Ray "
        "the histogram sums are approximations from bucket midpoints.", "s",
        Query(f"{total(PHASE + '_sum', None, window='$__range')} / "
              f"{total(INITS, None, window='$__range')}", "mean", instant=True)))
    d.with_panel(stat_panel(
        "Initializations in progress", "Initializations running right now, in any phase, "
        "summed over every replica process that exports llm-init's metrics.", "short",
        Query(f"sum({sel(n.METRIC_IN_PROGRESS)})", "in progress", instant=True)))


def activity_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Rate, failures and work in progress"))
    d.with_panel(graph(
        "Initializations by outcome", "Initializations finished per interval (the query's "
        "rate interval), by outcome (completed or failed), over all selected models.", "short",
        [Query(total(INITS, n.LABEL_OUTCOME), "{{outcome}}")], width=8, stacked=True,
        bars=True))
    d.with_panel(graph(
        "Failure ratio by model", "Failed or abandoned initializations over all finished "
        "ones, per model, over the interval. The alert LLMInitInitializationsFailing fires "
        "above 25 % over 30 minutes.", "percentunit",
        [Query(f"{total(INITS, n.LABEL_MODEL, FAILURES)} / {total(INITS, n.LABEL_MODEL)}",
               "{{model}}")], width=8, max_value=1))
    d.with_panel(graph(
        "Initializations in progress by phase", "How many initializations are in each phase "
        "now. A phase that stays non-zero for long is an initialization stuck there (alerts "
        "LLMInitPhaseStuck, LLMInitDownloadStuck, LLMInitPlacementGroupPending).", "short",
        [Query(f"sum by ({n.LABEL_PHASE}) ({sel(n.METRIC_IN_PROGRESS)})", "{{phase}}")],
        width=8, stacked=True))


def latency_rows(d: db.Dashboard) -> None:
    d.with_row(db.Row("Phase latency"))
    widths = (8, 8, 8, 12, 12)
    for phase, width in zip(Phase, widths, strict=True):
        d.with_panel(phase_quantiles(phase, width))
    d.with_row(db.Row("Latency distributions"))
    for phase in (Phase.DOWNLOAD, Phase.PLACEMENT_GROUP, Phase.ENGINE_INIT):
        d.with_panel(latency_heatmap(phase))


def download_engine_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Download and engine start"))
    d.with_panel(graph(
        "Download throughput", "Bytes per second the download step fetched, per model (from "
        "its progress reports), while downloads run: a download shorter than a scrape "
        "interval does not register. Near zero while a download is in progress fires "
        "LLMInitDownloadThroughputCollapsed.", "Bps",
        [Query(f"sum by ({n.LABEL_MODEL}) (rate({sel(n.METRIC_DOWNLOAD_BYTES)}"
               "[$__rate_interval]))", "{{model}}")], width=8))
    sub = n.METRIC_ENGINE_SUBPHASE_DURATION
    d.with_panel(graph(
        "Engine sub-phases (mean per engine start, stacked)", "Mean duration of each engine "
        "start-up sub-phase (weight loading, KV cache profiling and allocation, torch.compile, "
        "CUDA graph capture), stacked: the bar height is the engine's measured start-up work. "
        "Present only where the engine step reports sub-phases.", "s",
        [Query(mean(sub, n.LABEL_SUBPHASE), "{{subphase}}")], width=8, stacked=True,
        bars=True))
    d.with_panel(graph(
        "Engine sub-phase p95", "95th percentile of each engine sub-phase's duration over the "
        "interval, from the sub-phase histogram.", "s",
        [Query(quantile(0.95, sub, n.LABEL_SUBPHASE), "{{subphase}}")], width=8))
    d.with_panel(graph(
        "Replica start-up around the initialization (mean, stacked)", "What a Serve replica "
        "spends outside llm-init's phases, per start: scheduling (deploy request to the "
        "replica's process start), boot (process start, imports of Ray Serve LLM and vLLM, the "
        "replica's constructor) and readiness (the initialization's end to Serve's first passed "
        "health check). With the phases above it accounts for the whole start-up. Present only "
        "for Serve replicas.", "s",
        [Query(mean(n.METRIC_REPLICA_STARTUP, n.LABEL_SEGMENT), "{{segment}}")], width=24,
        stacked=True, bars=True))
    gpu = n.METRIC_GPU_MEMORY_USED
    end = sel(gpu, f'{n.LABEL_BOUNDARY}="{n.BOUNDARY_END}"')
    start = sel(gpu, f'{n.LABEL_BOUNDARY}="{n.BOUNDARY_START}"')
    by = f"{n.LABEL_PHASE}, {n.LABEL_GPU}"
    d.with_panel(graph(
        "GPU memory at the end of each phase", "GPU memory used (NVML) when each phase ended, "
        "per GPU index. GPU only: without a GPU, NVML or nvidia-ml-py the series is absent "
        "and this panel stays empty.", "bytes",
        [Query(f"max by ({by}) ({end})", "{{phase}} gpu {{gpu}}")]))
    d.with_panel(graph(
        "GPU memory added by phase", "GPU memory used at each phase's end minus at its start, "
        "per GPU: what weights, KV cache and CUDA graphs took. GPU only: empty without a "
        "GPU.", "bytes",
        [Query(f"max by ({by}) ({end}) - max by ({by}) ({start})", "{{phase}} gpu {{gpu}}")],
        min_value=None))


def weights_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Weights"))
    moved, by = n.METRIC_WEIGHT_THROUGHPUT, n.LABEL_PHASE
    d.with_panel(graph(
        "weights: bytes/s by phase", "How fast the model's weights moved, one sample per node "
        "(phase download: bytes the download step fetched over its time) or per engine worker "
        "(phase engine: the weight files vLLM loaded, or streamed from the bucket with a "
        "streaming load format, over the time its own log line gave). p50 and p95 over the "
        "interval.", "Bps",
        [Query(quantile(0.5, moved, by), "{{phase}} p50"),
         Query(quantile(0.95, moved, by), "{{phase}} p95")], width=8))
    d.with_panel(graph(
        "weights: bytes by phase", "Bytes of model weights moved per phase: fetched by the "
        "download step (download; a node with every file cached adds none) and loaded by each "
        "engine worker (engine).", "bytes",
        [Query(total(n.METRIC_WEIGHT_BYTES, by), "{{phase}}")], width=8, stacked=True,
        bars=True))
    d.with_panel(graph(
        "weights: seconds by phase (p95)", "95th percentile of the time a node's download or "
        "an engine worker's weight load took.", "s",
        [Query(quantile(0.95, n.METRIC_WEIGHT_SECONDS, by), "{{phase}}")], width=8))


def warm_start_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Warm starts"))
    cache = n.METRIC_ARTIFACT_CACHE
    hit = total(cache, n.LABEL_MODEL, f'{n.LABEL_RESULT}="{n.RESULT_HIT}"')
    unused = total(cache, n.LABEL_MODEL, f'{n.LABEL_RESULT}="{n.RESULT_UNUSED}"')
    restores = total(cache, n.LABEL_MODEL, f'{n.LABEL_RESULT}!="{n.RESULT_UNUSED}"')
    d.with_panel(graph(
        "Warm-start hit ratio", "Effective share of warm-start restores (one per node and "
        "start) that found an artifact vLLM then used: a restored artifact that vLLM ignored "
        "(result unused: it compiled anyway) counts as a miss. Empty where no artifact_store "
        "is configured.", "percentunit",
        # Without any unused restore the unused series is absent: subtract zero then.
        [Query(f"({hit} - ({unused} or {hit} * 0)) / {restores}", "{{model}}")], width=8,
        max_value=1))
    d.with_panel(graph(
        "Warm-start restores by result", "Restores per interval: hit, miss (nothing "
        "published yet for the key) and error (a corrupt artifact, an unreachable store, a "
        "timeout); the log's ArtifactMissed events say why. unused: hits whose artifact vLLM "
        "did not use (counted in hit too); the log's ArtifactUseObserved events say what "
        "vLLM compiled.", "short",
        [Query(total(cache, n.LABEL_RESULT), "{{result}}")], width=8, stacked=True,
        bars=True))
    sub = n.METRIC_WARM_START_SUBPHASE
    d.with_panel(graph(
        "Engine sub-phases, warm-start hits against misses", "Mean duration of each engine "
        "sub-phase (and the whole engine_init phase) in starts whose restore hit and in "
        "starts that missed, side by side: the gap between a sub-phase's miss and hit lines "
        "is the compilation and inspection time a restored artifact gives back per start.",
        "s", [Query(mean(sub, f"{n.LABEL_SUBPHASE}, {n.LABEL_RESULT}"),
                    "{{subphase}} {{result}}")], width=8))
    artifact_bytes, seconds = n.METRIC_ARTIFACT_BYTES, n.METRIC_ARTIFACT_SECONDS
    d.with_panel(graph(
        "Artifact bytes by direction", "Bytes of warm-start artifacts restored (unpacked on "
        "a node) and published (uploaded after a replica was ready), per interval.", "bytes",
        [Query(total(artifact_bytes, n.LABEL_DIRECTION), "{{direction}}")]))
    d.with_panel(graph(
        "Artifact transfer time by direction", "Mean seconds to restore (fetch, verify, "
        "unpack) and to publish (pack, upload) an artifact.", "s",
        [Query(mean(seconds, n.LABEL_DIRECTION), "{{direction}}")]))


def hooks_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Callback hooks"))
    hook = n.METRIC_HOOK_DURATION
    d.with_panel(graph(
        "Hook time by callback class", "Seconds spent in user callback hooks per interval, by "
        "callback class (module.Class). Hook metrics carry no model label, so the model "
        "filter does not apply here.", "s",
        [Query(total(f"{hook}_sum", n.LABEL_CALLBACK, by_model=False), "{{callback}}")],
        stacked=True, bars=True))
    d.with_panel(graph(
        "Hook p95 by callback and hook", "95th percentile of each hook's duration, per "
        "callback class and hook name. The model filter does not apply here.", "s",
        [Query(quantile(0.95, hook, f"{n.LABEL_CALLBACK}, {n.LABEL_HOOK}", by_model=False),
               "{{callback}} {{hook}}")]))


def slowest_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Slowest"))
    by = f"{n.LABEL_MODEL}, {n.LABEL_PHASE}"
    queries = [
        Query(f"topk(10, {mean(PHASE, by, window='$__range')})", instant=True,
              fmt=PromQueryFormat.TABLE),
        Query(quantile(0.99, PHASE, n.LABEL_MODEL + ", " + n.LABEL_PHASE, window="$__range"),
              instant=True, fmt=PromQueryFormat.TABLE),
        Query(total(f"{PHASE}_count", by, window="$__range"), instant=True,
              fmt=PromQueryFormat.TABLE),
    ]
    rename = {"Value #A": "mean (s)", "Value #B": "p99 (s)", "Value #C": "phases"}
    d.with_panel(
        table.Panel().title("Slowest phases in range")
        .description("The ten slowest model and phase pairs of the selected range, by mean "
                     "duration, with the p99 estimated from the histogram buckets and how many "
                     "phases ended. Metrics carry no initialization id; for single slow "
                     "initializations use the event log: llm-init list --slowest 10 --since 1h.")
        .datasource(DATASOURCE).targets(targets(queries)).span(24).height(9).unit("s")
        .decimals(2)
        .with_transformation(dashboard.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(dashboard.DataTransformerConfig(
            id_val="filterByValue", options={
                "type": "include", "match": "all",
                "filters": [{"fieldName": "Value #A", "config": {"id": "isNotNull"}}]}))
        .with_transformation(dashboard.DataTransformerConfig(
            id_val="organize", options={"excludeByName": {"Time": True},
                                        "indexByName": {"model": 0, "phase": 1, "Value #A": 2,
                                                        "Value #B": 3, "Value #C": 4},
                                        "renameByName": rename}))
        .with_transformation(dashboard.DataTransformerConfig(
            id_val="sortBy", options={"sort": [{"field": "mean (s)", "desc": True}]}))
        .override_by_name("phases", [dashboard.DynamicConfigValue(id_val="unit",
                                                                 value="short"),
                                     dashboard.DynamicConfigValue(id_val="decimals",
                                                                 value=0)]))


def build() -> db.Dashboard:
    d = (db.Dashboard("LLM replica initialization").uid(UID)
         .description("Start-up of LLM replicas under llm-init: phase latency, failures, work "
                      "in progress, download throughput, engine sub-phases, GPU memory and "
                      "callback hooks. Generated by dashboards/generate.py; do not edit.")
         .tags(["llm-init", "ray-serve", "vllm"]).editable().refresh("30s")
         .time("now-6h", "now").timezone("browser")
         .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
         .with_variable(db.DatasourceVariable("datasource").label("Data source").type(
             "prometheus").description("The Prometheus that scrapes llm-init's metrics."))
         .with_variable(var_over_label("model", "Model", "Model ids (redacted) to show."))
         .with_variable(var_over_label(
             "application", "Application",
             "Ray Serve application. Filters on an 'application' metric label; llm-init's "
             "metrics do not carry one yet, so only 'All' is offered until they do.")))
    for row in (overview_row, activity_row, latency_rows, download_engine_row, weights_row,
                warm_start_row, hooks_row, slowest_row):
        row(d)
    return d


def model() -> dashboard.Dashboard:
    """The dashboard, its panels numbered 1, 2, 3... in layout order (rows included)."""
    built = build().build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built


def render() -> str:
    """The dashboard's JSON, as committed."""
    return json.dumps(model(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the committed JSON differs from the generator's")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python dashboards/generate.py",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
