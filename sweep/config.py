"""From the command line to a frozen, validated ``Sweep``: the only module that sees a DictConfig.

Job: compose (Hydra), check what Hydra cannot (values, keys appended with ``+``, the grid name),
and fold everything into frozen dataclasses. Every refusal is a ``ConfigError`` whose message is
one line naming the key and what is allowed. Nothing here starts Ray or touches the disk, so a
refused config never leaves anything behind.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core import program
from core.contention import Timing
from sweep import dims, schema, trace_program, trace_scenario
from sweep.dims import AXES, LIVE, TRACE  # noqa: F401 - AXES: the synthetic grids' axes
from sweep.live_walk import LiveSettings
from sweep.trace_scenario import TraceError, TraceInfo, TraceWorkload

#: Workload builders of core.program.SCENARIOS, by the name a grid's ``scenario`` gives, and
#: ``trace``, a recorded process tree (sweep.trace_scenario).
SCENARIOS = (*program.SCENARIOS, TRACE)
#: The grid keys a trace replaces: its processes, pages and COWs are its own.
TRACE_REPLACES = ("processes", "pages_per_vma", "cow_fraction")
_OWN = {"processes": "processes", "pages_per_vma": "pages", "cow_fraction": "COWs"}
PROGRESS_MODES = ("auto", "bar", "log")
# Seeds are stored as int64 coordinates; the derived per-point seed is a separate uint64.
SEED_LIMIT = 2**63


class ConfigError(ValueError):
    """A refused configuration; ``str()`` is the one-line message shown to the user."""


class NoGridError(ConfigError):
    """No ``+grid=NAME`` was given (the CLI exits 2 with the list of grids)."""


@dataclass(frozen=True)
class Grid:
    """A resolved grid: every axis a tuple of distinct, valid values.

    A trace grid (``scenario`` ``trace``) has no processes, pages_per_vma and cow_fraction
    (empty); its ``trace`` axis holds the traces' absolute paths and ``traces`` what each is.
    """

    scenario: str
    cow_model: str
    sample: int | None
    kernel: tuple[str, ...]
    processes: tuple[int, ...]
    pages_per_vma: tuple[int, ...]
    cow_fraction: tuple[float, ...]
    cpus: tuple[int, ...]
    seed: tuple[int, ...]
    #: the scenario's own builder parameters, (name, value) in core.program.PARAMS order
    params: tuple[tuple[str, int], ...] = ()
    timing: Timing = Timing()
    trace: tuple[str, ...] = ()
    traces: tuple[TraceInfo, ...] = ()
    accept_lost: bool = False
    scan_every: float | None = None

    def axes(self) -> dict[str, tuple]:
        """The axes in dimension order (``sweep.dims.axes`` of the scenario)."""
        return {name: getattr(self, name) for name in dims.axes(self.scenario)}

    def largest_workload(self) -> tuple:
        """(processes, pages_per_vma, cow_fraction) of the point needing the most memory and
        the longest program: every scenario's size formula grows with each coordinate. For
        traces, the ``TraceWorkload`` of the one whose program holds the most."""
        if self.scenario == TRACE:
            from core.runner import size_bytes

            info = max(self.traces, key=lambda t: size_bytes(t.size, trace=True, resident=True))
            return TraceWorkload(info.path)
        return (max(self.processes), max(self.pages_per_vma), max(self.cow_fraction))

    def label(self, workload: tuple) -> str:
        """A workload as the messages name it (``processes=10, pages_per_vma=16, ...``)."""
        if isinstance(workload, TraceWorkload):
            return f"trace={workload.trace}"
        n, v, f = workload
        return f"processes={n}, pages_per_vma={v}, cow_fraction={f:g}"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.axes().values())

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes results, JSON-ready: two stores mix only if these are equal."""
        return {
            "scenario": self.scenario,
            "cow_model": self.cow_model,
            "sample": self.sample,
            **{name: list(values) for name, values in self.axes().items()},
            **dict(self.params),
            "timing": list(self.timing.as_tuple()),
            # a trace grid's traces by content too: the same path holding another recording
            # is another grid
            **({"accept_lost": self.accept_lost, "trace_digest": [t.digest for t in self.traces]}
               if self.scenario == TRACE else {}),
            **({"scan_every": self.scan_every} if self.scan_every is not None else {}),
        }


@dataclass(frozen=True)
class RaySettings:
    address: str | None
    num_cpus: int | None
    ship_core: bool
    max_retries: int
    inline_below_seconds: float = 0.0
    live_node: str | None = None


@dataclass(frozen=True)
class BatchSettings:
    target_seconds: float
    max_points: int
    big_bytes: int


@dataclass(frozen=True)
class ResumeSettings:
    path: str | None
    force: bool
    repair: bool = False


@dataclass(frozen=True)
class Sweep:
    """Everything a sweep needs, validated. ``config_yaml`` is recorded in the dataset."""

    grid: Grid
    ray: RaySettings
    batch: BatchSettings
    resume: ResumeSettings
    flush_seconds: float
    progress: str
    config_yaml: str
    report: bool = True
    dry_run: bool = False
    live: LiveSettings = LiveSettings()


def available_grids() -> list[str]:
    """Names of the grids shipped in conf/grid (found in the installed ``sweep.conf.grid``)."""
    root = resources.files("sweep.conf.grid")
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in root.iterdir()
        if entry.name.endswith(".yaml") and not entry.name.startswith("_")
    )


def no_grid_message() -> str:
    return (
        "no grid given: choose one with +grid=NAME; available grids: "
        + ", ".join(available_grids())
    )


_RESUME_SHORTHAND = re.compile(r"^(~|\+\+|\+)?resume=(.*)$")
_TIMING_OVERRIDE = re.compile(r"^(\+\+|\+)?timing=(.*)$")


def normalize_overrides(args: list[str]) -> list[str]:
    """Rewrite the shorthand ``resume=PATH`` to ``resume.path=PATH``; leave the rest alone.

    ``resume`` is a node with ``path`` and ``force``, so Hydra itself would refuse a string
    there; the shorthand is what users type (and what the failure message tells them to type).
    """
    out = []
    for arg in args:
        m = _RESUME_SHORTHAND.match(arg)
        out.append(f"resume.path={m.group(2)}" if m and m.group(1) is None else arg)
    # A timing config (conf/timing, @package grid.timing) must merge after the grid, whose
    # schema carries Timing's defaults and would overwrite it: +timing goes after +grid.
    timings = [a for a in out if _TIMING_OVERRIDE.match(a)]
    return [a for a in out if not _TIMING_OVERRIDE.match(a)] + timings


def _bool_keys(node: type = schema.SweepConf, prefix: str = "") -> set[str]:
    """Dotted names of the schema's bool keys (``resume.force``, ``ray.ship_core``, ...)."""
    keys = set()
    for f in dataclasses.fields(node):
        sub = getattr(schema, f.type, None) if isinstance(f.type, str) else f.type
        if f.type in (bool, "bool"):
            keys.add(prefix + f.name)
        elif dataclasses.is_dataclass(sub):
            keys |= _bool_keys(sub, f"{prefix}{f.name}.")
    return keys


def check_bool_overrides(overrides: list[str]) -> None:
    """Refuse ``resume.force=3``: OmegaConf would quietly turn the 3 into ``true``."""
    keys = _bool_keys()
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in keys and value.strip().lower() not in ("true", "false"):
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: true or false")


def check_grid_override(overrides: list[str]) -> None:
    """Refuse ``+grid=NAME`` for a NAME that is not shipped, listing those that are.

    Hydra would refuse it too, but with a multi-line message that also lists the schema.
    """
    grids = available_grids()
    for arg in overrides:
        m = re.match(r"^(\+\+|\+)?grid=(.*)$", arg)
        if m and m.group(2) not in grids:
            raise ConfigError(
                f"grid: unknown grid {m.group(2)!r}; available grids: {', '.join(grids)}"
            )


def available_timings() -> list[str]:
    """Names of the timing configs in conf/timing (``sweep.calibrate`` writes them)."""
    root = resources.files("sweep.conf.timing")
    return sorted(entry.name[: -len(".yaml")] for entry in root.iterdir()
                  if entry.name.endswith(".yaml") and not entry.name.startswith("_"))


def check_timing_override(overrides: list[str]) -> None:
    """Refuse ``+timing=NAME`` for a NAME that conf/timing lacks, listing those it has."""
    for arg in overrides:
        m = _TIMING_OVERRIDE.match(arg)
        if m and m.group(2) not in available_timings():
            raise ConfigError(
                f"timing: unknown timing {m.group(2)!r}; available timings (conf/timing, "
                f"written by python -m sweep.calibrate): {', '.join(available_timings())}")


def _field_type(f: dataclasses.Field) -> Any:
    return getattr(schema, f.type, None) if isinstance(f.type, str) else f.type


def check_override_keys(overrides: list[str]) -> None:
    """Refuse ``grid.foo=1`` (a key the schema lacks) with the allowed keys, as ``+grid.foo=1``
    is refused after composing; Hydra's own message is two lines that do not list them."""
    for arg in overrides:
        key, sep, _ = arg.partition("=")
        if not sep or key.startswith(("+", "~", "hydra")) or "@" in key or key == "grid":
            continue
        node: Any = schema.SweepConf
        prefix = ""
        for part in key.split("."):
            if not dataclasses.is_dataclass(node):
                break  # a key below a value (grid.processes.x): Hydra's type error says so
            fields = {f.name: f for f in dataclasses.fields(node)}
            if part not in fields:
                raise ConfigError(
                    f"{prefix}{part}: unknown key; allowed keys of "
                    f"{prefix.rstrip('.') or 'config'}: " + ", ".join(fields)
                )
            node = _field_type(fields[part])
            prefix += part + "."


def compose(overrides: list[str]) -> DictConfig:
    """Compose the config as ``python -m sweep ARGS`` would (Hydra's compose API).

    Raises ``ConfigError`` with one line for every composition error (bad type, unknown key,
    unknown grid), naming the override.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException

    schema.register()
    overrides = normalize_overrides(overrides)
    check_grid_override(overrides)
    check_timing_override(overrides)
    check_bool_overrides(overrides)
    check_override_keys(overrides)
    try:
        with initialize_config_module(config_module="sweep.conf", version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except HydraException as exc:
        raise ConfigError(composition_message(exc)) from exc


def composition_message(exc: BaseException) -> str:
    """One line from a Hydra composition error: the override, then OmegaConf's reason."""
    head = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = exc.__cause__
    if cause is None:
        return head
    msg = getattr(cause, "msg", None) or str(cause)
    reason = msg.strip().splitlines()[0]
    key = getattr(cause, "full_key", None)
    where = f" (key {key})" if key else ""
    return f"{head}: {reason}{where}"


def _check_keys(node: Any, schema_type: type, prefix: str) -> None:
    """Refuse keys not in the schema (``+grid.foo=1`` gets past Hydra's struct check)."""
    allowed = {f.name: f for f in dataclasses.fields(schema_type)}
    for key in node.keys() if isinstance(node, DictConfig) else ():
        if key not in allowed:
            raise ConfigError(
                f"{prefix}{key}: unknown key; allowed keys of {prefix.rstrip('.') or 'config'}: "
                + ", ".join(allowed)
            )
        sub = allowed[key].type
        if isinstance(sub, str):  # postponed annotations
            sub = getattr(schema, sub, None)
        if dataclasses.is_dataclass(sub) and key in node and not OmegaConf.is_missing(node, key):
            _check_keys(node[key], sub, f"{prefix}{key}.")


def _axis(values: Any, key: str, kind: type, ok, allowed: str) -> tuple:
    if values is None or len(values) == 0:
        raise ConfigError(f"grid.{key}: empty axis; give at least one value ({allowed})")
    seen: set = set()
    out = []
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"grid.{key}: {v!r} is not an integer; allowed: {allowed}")
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"grid.{key}: {v!r} is not a number; allowed: {allowed}")
            v = float(v)
        if kind is str and not isinstance(v, str):
            raise ConfigError(f"grid.{key}: {v!r} is not a string; allowed: {allowed}")
        if not ok(v):
            raise ConfigError(f"grid.{key}: {v!r} is not allowed; allowed: {allowed}")
        if v in seen:
            raise ConfigError(f"grid.{key}: duplicate value {v!r}; each value may appear once")
        seen.add(v)
        out.append(v)
    return tuple(out)


def resolve_grid(node: Any, generations: tuple[str, ...]) -> Grid:
    """Validate a grid (a GridConf or plain mapping) against the known kernel generations."""
    g = node if isinstance(node, dict) else dataclasses.asdict(node)
    if g["scenario"] not in SCENARIOS:
        raise ConfigError(
            f"grid.scenario: {g['scenario']!r} is not known; allowed: {', '.join(SCENARIOS)}"
        )
    if g["cow_model"] not in program.COW_MODELS:
        raise ConfigError(f"grid.cow_model: {g['cow_model']!r} is not known; allowed: "
                          f"{', '.join(program.COW_MODELS)}")
    from core.program import ARENA_MAX, INT32_MAX, MAX_BATCH, MAX_CPUS

    sample = g["sample"]
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)
                               or not 1 <= sample <= INT32_MAX):
        raise ConfigError(
            f"grid.sample: {sample!r} is not allowed; allowed: null (walk every page) "
            f"or an integer from 1 to at most {INT32_MAX} (pages sampled per point; an int32 "
            "field of the core's program)"
        )
    params = {p.name: _param(g, p) for p in schema.GRID_PARAMS}
    try:
        timing_model = Timing(**dict(g.get("timing") or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"grid.{exc}") from None
    if timing_model.batch > MAX_BATCH:
        raise ConfigError(f"grid.timing.batch: {timing_model.batch} is not allowed; allowed: "
                          f"an integer from 1 to at most {MAX_BATCH}")
    timing = Timing(*timing_model.as_tuple())  # the core's types: floats, an int batch
    trace_keys = _trace_keys(g)
    known = ", ".join(generations)
    kernels = g["kernel"]
    if kernels is not None and "all" in list(kernels) and set(kernels) <= {"all", LIVE}:
        # Every generation of this build of the core, oldest first: grids that mean "all"
        # follow the core as generations are added ([live, all]: this kernel beside them).
        kernels = [g for k in kernels for g in (generations if k == "all" else [k])]
    if g["scenario"] == TRACE:
        return Grid(
            scenario=TRACE, cow_model=g["cow_model"], sample=sample,
            kernel=_axis(kernels, "kernel", str, lambda v: v in generations or v == LIVE,
                         f"known: {known} (or [all]), and {LIVE} (this machine's kernel)"),
            processes=(), pages_per_vma=(), cow_fraction=(),
            cpus=_axis(g["cpus"], "cpus", int, lambda v: 1 <= v <= MAX_CPUS,
                       f"1 <= cpus <= {MAX_CPUS}"),
            seed=_axis(g["seed"], "seed", int, lambda v: 0 <= v < SEED_LIMIT,
                       "0 <= seed < 2**63"),
            timing=timing, **trace_keys,
        )
    grid = Grid(
        scenario=g["scenario"],
        cow_model=g["cow_model"],
        sample=sample,
        # "live" (this machine's kernel, sweep.live_point) only when named: [all] stays the
        # simulated generations, since a live point needs root and runs real processes
        kernel=_axis(kernels, "kernel", str, lambda v: v in generations or v == LIVE,
                     f"known: {known} (or [all]), and {LIVE} (this machine's kernel)"),
        processes=_axis(g["processes"], "processes", int, lambda v: 1 <= v < ARENA_MAX,
                        f"1 <= processes <= {ARENA_MAX - 1} (the core's 32-bit indices)"),
        pages_per_vma=_axis(
            g["pages_per_vma"], "pages_per_vma", int, lambda v: 1 <= v <= INT32_MAX,
            f"1 <= pages_per_vma <= {INT32_MAX} (an int32 field of the core's program)"
        ),
        cow_fraction=_axis(
            g["cow_fraction"], "cow_fraction", float, lambda v: 0.0 <= v <= 1.0,
            "0 <= cow_fraction <= 1",
        ),
        cpus=_axis(g["cpus"], "cpus", int, lambda v: 1 <= v <= MAX_CPUS,
                   f"1 <= cpus <= {MAX_CPUS}"),
        seed=_axis(g["seed"], "seed", int, lambda v: 0 <= v < SEED_LIMIT, "0 <= seed < 2**63"),
        params=tuple((p.name, params[p.name]) for p in program.PARAMS[g["scenario"]]),
        timing=timing,
    )
    for p in program.PARAMS[grid.scenario]:
        if p.per_page and params[p.name] > max(grid.pages_per_vma):
            # a point takes min(value, pages_per_vma) pieces; a value that no point can have
            # is a mistake, not a request
            raise ConfigError(f"grid.{p.name}: {params[p.name]} is not allowed; allowed: "
                              f"{p.low} <= {p.name} <= {max(grid.pages_per_vma)} (the largest "
                              "grid.pages_per_vma)")
    check_program_size(grid)
    return grid


def _trace_keys(g: dict) -> dict[str, Any]:
    """A grid's ``trace``, ``traces`` and ``accept_lost``: each trace checked and described
    (sweep.trace_scenario.describe) for the scenario ``trace``, whose other keys must keep
    their defaults; refused for any other scenario."""
    paths, accept = g.get("trace"), g.get("accept_lost", False)
    every = g.get("scan_every")
    if g["scenario"] != TRACE:
        for key, value in (("trace", paths), ("accept_lost", accept), ("scan_every", every)):
            if value not in (None, False):
                raise ConfigError(f"grid.{key}: only with grid.scenario=trace; remove it or set "
                                  "grid.scenario=trace")
        return {}
    for p in schema.GRID_PARAMS:
        if g.get(p.name, p.default) != p.default:
            raise ConfigError(f"grid.{p.name}: not allowed with grid.scenario=trace (a trace "
                              "is its own program); remove it")
    if g["cow_model"] != "independent":
        raise ConfigError("grid.cow_model: not allowed with grid.scenario=trace (a trace's "
                          "writes are its own); remove it")
    if paths is None:
        raise ConfigError("grid.trace: missing value; give a trace store (grid.trace=t.zarr) "
                          "or a list of them (grid.trace=[a.zarr,b.zarr])")
    allowed = "trace stores made by python -m sweep.record"
    absolute = [os.path.abspath(v) if isinstance(v, str) and v else v
                for v in ([paths] if isinstance(paths, str) else paths)]
    trace = _axis(absolute, "trace", str, bool, allowed)
    if every is not None:
        tick = trace_program.TICK_SECONDS
        if (isinstance(every, bool) or not isinstance(every, (int, float))
                or not tick <= every < math.inf):
            raise ConfigError(f"grid.scan_every: {every!r} is not allowed; allowed: seconds "
                              f"from {tick} (the recorder's clock tick), or null for one scan "
                              "at the root's exit")
        every = float(every)
    try:
        traces = tuple(trace_scenario.describe(path, accept, every) for path in trace)
    except TraceError as exc:
        raise ConfigError(str(exc)) from None
    return {"trace": trace, "traces": traces, "accept_lost": accept, "scan_every": every}


def _param(g: dict, p: program.Param) -> int:
    """The grid's value of a scenario parameter (its builder's default when the grid has none),
    refused outside the builder's bounds whatever the grid's scenario."""
    value = g.get(p.name, p.default)
    if isinstance(value, bool) or not isinstance(value, int) or not p.low <= value <= p.high:
        why = f" ({p.why})" if p.why else ""
        raise ConfigError(f"grid.{p.name}: {value!r} is not allowed; allowed: an integer "
                          f"from {p.low} to at most {p.high}{why}")
    return value


def check_program_size(grid: Grid) -> None:
    """Refuse a grid whose largest program is over the core's limits, counted by formula
    before anything is built (core.program.program_size): its length, processes, objects."""
    from sweep import simulate

    workload = grid.largest_workload()
    try:
        simulate.checked_size(simulate.settings_of(grid), workload)
    except ValueError as exc:
        n, v, f = workload
        raise ConfigError(f"grid: the largest point (processes={n}, pages_per_vma={v}, "
                          f"cow_fraction={f:g}) is refused: {exc}") from None


def _trace_axes(cfg: DictConfig) -> None:
    """A trace grid sets none of the axes a trace replaces (``TRACE_REPLACES``); they are
    filled with empty lists here, so the schema's MISSING does not stop the fold."""
    if OmegaConf.is_missing(cfg.grid, "scenario") or cfg.grid.scenario != TRACE:
        return
    for key in TRACE_REPLACES:
        if not OmegaConf.is_missing(cfg.grid, key):
            raise ConfigError(f"grid.{key}: not allowed with grid.scenario=trace (the trace's "
                              f"{_OWN[key]} are its own: the dataset's trace_* "
                              "coordinates); remove it")
        cfg.grid[key] = []


def _positive(value: Any, key: str, kind: type = float) -> Any:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            or not math.isfinite(value)):
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed: a finite number > 0")
    return kind(value)


def resolve(cfg: DictConfig, generations: tuple[str, ...] | None = None) -> Sweep:
    """Check a composed config and fold it into a frozen ``Sweep``.

    Parameters
    ----------
    cfg : the composed config (without the ``hydra`` node)
    generations : known kernel generation names; default ``core.GENERATIONS``

    Raises
    ------
    NoGridError : no grid was chosen
    ConfigError : anything else refused, with a one-line message naming the key
    """
    if "grid" not in cfg or OmegaConf.is_missing(cfg, "grid"):
        raise NoGridError(no_grid_message())
    cfg = cfg.copy()
    if "hydra" in cfg:
        with _open_struct(cfg):
            del cfg["hydra"]
    _check_keys(cfg, schema.SweepConf, "")
    _trace_axes(cfg)
    try:
        obj: schema.SweepConf = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except Exception as exc:  # MISSING mandatory values surface here
        key = getattr(exc, "full_key", None) or ""
        reason = (getattr(exc, "msg", None) or str(exc)).strip().splitlines()[0]
        if "Missing mandatory value" in reason:
            raise ConfigError(f"{key}: missing value; the grid must set it") from exc
        raise ConfigError(f"{key}: {reason}") from exc
    if generations is None:
        import core

        generations = core.GENERATIONS
    grid = resolve_grid(obj.grid, tuple(generations))
    r, b = obj.ray, obj.batch
    if r.num_cpus is not None and r.num_cpus < 1:
        raise ConfigError(f"ray.num_cpus: {r.num_cpus} is not allowed; allowed: null or >= 1")
    if r.max_retries < 0:
        raise ConfigError(f"ray.max_retries: {r.max_retries} is not allowed; allowed: >= 0")
    if r.inline_below_seconds < 0 or not math.isfinite(r.inline_below_seconds):
        raise ConfigError(f"ray.inline_below_seconds: {r.inline_below_seconds} is not allowed; "
                          "allowed: a number of seconds >= 0 (0: always Ray)")
    if r.address is not None and not r.address.strip():
        raise ConfigError("ray.address: empty; allowed: null (local Ray) or a cluster address")
    if b.max_points < 1:
        raise ConfigError(f"batch.max_points: {b.max_points} is not allowed; allowed: >= 1")
    from sweep import live_walk

    try:
        live = live_walk.resolve(obj.live, grid.kernel)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if obj.progress not in PROGRESS_MODES:
        raise ConfigError(
            f"progress: {obj.progress!r} is not allowed; allowed: {', '.join(PROGRESS_MODES)}"
        )
    return Sweep(
        grid=grid,
        ray=RaySettings(r.address, r.num_cpus, r.ship_core, r.max_retries,
                        float(r.inline_below_seconds), r.live_node),
        batch=BatchSettings(
            _positive(b.target_seconds, "batch.target_seconds"),
            b.max_points,
            _positive(b.big_bytes, "batch.big_bytes", int),
        ),
        resume=ResumeSettings(obj.resume.path, obj.resume.force, obj.resume.repair),
        flush_seconds=_positive(obj.flush_seconds, "flush_seconds"),
        progress=obj.progress,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        report=bool(obj.report),
        dry_run=bool(obj.dry_run),
        live=live,
    )


class _open_struct:
    """Temporarily lift struct mode (to drop the ``hydra`` node from a copy)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def __enter__(self) -> None:
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc: object) -> None:
        OmegaConf.set_struct(self.cfg, True)
