"""The sweep against the tools a user would try first, on the same 200 points and the same core.

Run (offline: Ray Tune and the sweep start Ray; from the repository root):
    ../shared/bin/offline .venv/bin/python benchmarks/bench_peers.py [--out FILE]

Needs the `bench` extra (`pip install -e '.[bench]'`: hydra-joblib-launcher, ray[tune]).

The points: 4 generations x 5 process counts x 2 COW fractions x 5 seeds = 200 aim7 points
of 64 pages, full scans, one CPU count. Each point is the call the sweep's workers make
(sweep/simulate.py run_point): ``core.run(core.aim7(n, 64, f, "independent", None), kernel,
point_seed(seed, n, 64, f), cpus=[1])``. The five ways, each a fresh subprocess timed from
start to exit (interpreter start, imports and Ray start included, as a user waits), in
``--repeat`` rounds (3) of all five, interleaved; each way's median is compared:

- serial: a plain Python loop;
- hydra-joblib: Hydra multirun, ``hydra/launcher=joblib``, one job per point;
- ray-tune: ``tune.Tuner`` with ``tune.grid_search`` on every axis, on a local Ray, with
  ``reuse_actors=True`` (Tune's default, False, starts a worker process per trial: about 11
  minutes for these points on 2 cores; ``--tune-fresh-actors`` measures it);
- sweep: ``python -m sweep +grid=smoke`` with overrides giving exactly these points, as a
  user runs it: estimated at 0.18 core seconds, it runs on threads of the command without Ray
  (``ray.inline_below_seconds``, docs/sweep.md);
- sweep on Ray: the same with ``ray.inline_below_seconds=0`` (a local Ray started and
  stopped), shown for what Ray's start and stop cost; the targets compare with the default.

Every way ends with the same checksum (COW faults and rmap entries summed over the points), so
the table compares equal work. Issue 7's target: the sweep >= 10x faster than Hydra+joblib and
than Ray Tune.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from common import parser, publish

REPO = Path(__file__).resolve().parents[1]
KERNELS = ("2.6.33", "2.6.34", "3.7", "6.0")
PROCESSES = (1, 10, 30, 100, 300)
COW_FRACTIONS = (0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)
PAGES = 64
TARGET = 10.0

# The task every peer imports: one point = the sweep worker's core call. The derived seeds are
# a literal table (computed here with sweep.grid.point_seed) so that no peer pays for
# importing the sweep package (Hydra, OmegaConf) just to hash a seed.
TASK = '''\
import core

PAGES = {pages}
SEEDS = {seeds!r}


def run_point(kernel: str, processes: int, cow_fraction: float, seed: int) -> dict:
    prog = core.aim7(processes, PAGES, cow_fraction, "independent", None)
    r = core.run(prog, kernel, SEEDS[(processes, cow_fraction, seed)], cpus=[1])
    return {{"cows": int(r["cows"]), "entries_mean": float(r["entries_mean"])}}
'''

SERIAL = '''\
import itertools, json
from peer_task import run_point

total = {{"cows": 0, "entries_mean": 0.0, "points": 0}}
for k, n, f, s in itertools.product({kernels!r}, {processes!r}, {cows!r}, {seeds!r}):
    r = run_point(k, n, f, s)
    total["cows"] += r["cows"]
    total["entries_mean"] += r["entries_mean"]
    total["points"] += 1
print(json.dumps(total))
'''

# Hydra app: the config holds the four axes; multirun sweeps them from the command line. Each
# job writes its result where a Hydra user would: its own output directory.
HYDRA_APP = '''\
import json
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from peer_task import run_point

ConfigStore.instance().store(
    name="peer", node={{"kernel": "", "processes": 0, "cow_fraction": 0.0, "seed": 0}}
)


@hydra.main(version_base="1.3", config_path=None, config_name="peer")
def main(cfg) -> None:
    r = run_point(str(cfg.kernel), int(cfg.processes), float(cfg.cow_fraction), int(cfg.seed))
    out = Path(HydraConfig.get().runtime.output_dir) / "result.json"
    out.write_text(json.dumps(r))


if __name__ == "__main__":
    main()
'''

TUNE = '''\
import json, sys
import ray
from ray import tune
from peer_task import run_point


def trainable(config):
    tune.report(run_point(config["kernel"], config["processes"], config["cow_fraction"],
                          config["seed"]))


ray.init(num_cpus={cpus}, include_dashboard=False, _temp_dir=sys.argv[1])
space = {{
    "kernel": tune.grid_search({kernels!r}),
    "processes": tune.grid_search({processes!r}),
    "cow_fraction": tune.grid_search({cows!r}),
    "seed": tune.grid_search({seeds!r}),
}}
tuner = tune.Tuner(
    trainable, param_space=space, tune_config=tune.TuneConfig(reuse_actors={reuse}),
    run_config=tune.RunConfig(storage_path=sys.argv[2], name="peers", verbose=0),
)
results = tuner.fit()
df = results.get_dataframe()
print(json.dumps({{"cows": int(df["cows"].sum()), "entries_mean": float(df["entries_mean"].sum()),
                  "points": len(df), "errors": results.num_errors}}))
ray.shutdown()
'''


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: float
    points: int
    cows: int
    entries_mean: float
    runs: tuple[float, ...] = ()  # every round's wall time (``seconds`` is their median)


def derived_seeds() -> dict[tuple[int, float, int], int]:
    from sweep.grid import point_seed

    return {(n, f, s): point_seed(s, n, PAGES, f)
            for n in PROCESSES for f in COW_FRACTIONS for s in SEEDS}


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def _from_json_line(name: str, seconds: float, stdout: str) -> Outcome:
    total = json.loads(stdout.strip().splitlines()[-1])
    return Outcome(name, seconds, total["points"], total["cows"], total["entries_mean"])


def run_serial(work: Path, env: dict[str, str]) -> Outcome:
    script = work / "serial.py"
    script.write_text(SERIAL.format(kernels=KERNELS, processes=PROCESSES, cows=COW_FRACTIONS,
                                    seeds=SEEDS))
    seconds, out = _timed([sys.executable, str(script)], work, env)
    return _from_json_line("serial Python loop", seconds, out)


def run_hydra(work: Path, env: dict[str, str], cpus: int) -> Outcome:
    app = work / "hydra_app.py"
    app.write_text(HYDRA_APP.format())
    sweep_dir = work / "hydra-multirun"
    # Quoted values: Hydra's override grammar would read 6.0 as a float.
    kernels = ",".join(f"'{k}'" for k in KERNELS)
    cmd = [
        sys.executable, str(app), "-m", "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={cpus}", f"hydra.sweep.dir={sweep_dir}",
        f"kernel={kernels}", "processes=" + ",".join(map(str, PROCESSES)),
        "cow_fraction=" + ",".join(map(str, COW_FRACTIONS)),
        "seed=" + ",".join(map(str, SEEDS)),
    ]
    seconds, _ = _timed(cmd, work, env)
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    return Outcome("Hydra multirun + joblib", seconds, len(results),
                   sum(r["cows"] for r in results), sum(r["entries_mean"] for r in results))


def run_tune(work: Path, env: dict[str, str], cpus: int, reuse_actors: bool = True) -> Outcome:
    script = work / "tune_grid.py"
    script.write_text(TUNE.format(cpus=cpus, kernels=list(KERNELS), processes=list(PROCESSES),
                                  cows=list(COW_FRACTIONS), seeds=list(SEEDS),
                                  reuse=reuse_actors))
    # Ray's Unix sockets live under its temp dir: keep that path short.
    ray_tmp = Path(tempfile.mkdtemp(prefix="peer-ray-", dir="/tmp"))
    try:
        seconds, out = _timed([sys.executable, str(script), str(ray_tmp), str(work / "tune")],
                              work, env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    name = "Ray Tune grid search" + ("" if reuse_actors else " (fresh actor per trial)")
    return _from_json_line(name, seconds, out)


def run_sweep(work: Path, env: dict[str, str], cpus: int, on_ray: bool = False) -> Outcome:
    import xarray as xr

    run_dir = work / ("sweep-ray-run" if on_ray else "sweep-run")
    cmd = [
        sys.executable, "-m", "sweep", "+grid=smoke",
        "grid.kernel=[" + ",".join(f"'{k}'" for k in KERNELS) + "]",
        "grid.processes=[" + ",".join(map(str, PROCESSES)) + "]",
        "grid.cow_fraction=[" + ",".join(map(str, COW_FRACTIONS)) + "]",
        "grid.seed=[" + ",".join(map(str, SEEDS)) + "]",
        f"grid.pages_per_vma=[{PAGES}]", "grid.cpus=[1]", f"ray.num_cpus={cpus}",
        "report=false", "progress=log", f"hydra.run.dir={run_dir}",
        *(["ray.inline_below_seconds=0"] if on_ray else []),
    ]
    seconds, _ = _timed(cmd, REPO, env)
    ds = xr.open_zarr(run_dir / "results.zarr", consolidated=False)
    return Outcome("this project's sweep, on Ray (forced)" if on_ray else "this project's sweep",
                   seconds, int(ds.done.sum()),
                   int(ds.cows.sum()), float(ds.entries_mean.sum()))


def compare(cpus: int, reuse_actors: bool = True, repeat: int = 3) -> list[Outcome]:
    """Run the five ways on the same points, ``repeat`` rounds interleaved, each way's median
    wall time kept (this machine's timings drift between phases about 1.5x apart: rounds
    interleave so that no way is measured in one phase only); raise if any run did different
    work."""
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    rounds: list[list[Outcome]] = []
    try:
        (work / "peer_task.py").write_text(TASK.format(pages=PAGES, seeds=derived_seeds()))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": os.pathsep.join([str(work), str(REPO)])}
        for _ in range(repeat):
            rounds.append([run_serial(work, env), run_hydra(work, env, cpus),
                           run_tune(work, env, cpus, reuse_actors),
                           run_sweep(work, env, cpus, True), run_sweep(work, env, cpus)])
            for d in ("hydra-multirun", "tune", "sweep-run", "sweep-ray-run"):
                shutil.rmtree(work / d, ignore_errors=True)  # each round starts afresh
    finally:
        shutil.rmtree(work, ignore_errors=True)
    want = len(KERNELS) * len(PROCESSES) * len(COW_FRACTIONS) * len(SEEDS)
    first = rounds[0][0]
    for o in (o for r in rounds for o in r):
        same = (o.points == want and o.cows == first.cows
                and abs(o.entries_mean - first.entries_mean) <= 1e-6 * first.entries_mean)
        if not same:
            raise RuntimeError(f"{o.name} did different work: {o} vs {first}")
    return [
        replace(way[0], seconds=statistics.median(o.seconds for o in way),
                runs=tuple(o.seconds for o in way))
        for way in zip(*rounds, strict=True)
    ]


def table(outcomes: list[Outcome], cpus: int) -> str:
    sweep = outcomes[-1].seconds
    lines = [
        f"{outcomes[0].points} aim7 points ({len(KERNELS)} generations x {len(PROCESSES)} "
        f"process counts x {len(COW_FRACTIONS)} COW fractions x {len(SEEDS)} seeds, "
        f"{PAGES} pages, full scans) on {cpus} CPUs; wall time from process start to exit, "
        f"{len(outcomes[0].runs)} rounds of all five ways, interleaved. "
        f"All five did the same work: {first_checksum(outcomes)}.",
        "",
        "| way | wall (s), median | every run (s) | vs the sweep | target |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        ratio = o.seconds / sweep
        target = ""
        if o.name.startswith(("Hydra", "Ray Tune")):  # the two targets
            target = f">= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'missed'}"
        runs = ", ".join(f"{r:.1f}" for r in o.runs)
        lines.append(f"| {o.name} | {o.seconds:.1f} | {runs} | {ratio:.2f}x | {target} |")
    return "\n".join(lines)


def first_checksum(outcomes: list[Outcome]) -> str:
    o = outcomes[0]
    return f"{o.cows:,} COW faults, sum of entries_mean {o.entries_mean:,.1f}"


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                    help="CPUs for joblib, Ray Tune and the sweep (default: all)")
    ap.add_argument("--tune-fresh-actors", action="store_true",
                    help="Ray Tune with its default reuse_actors=False (slow)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of all five ways, interleaved; medians are reported (3)")
    args = ap.parse_args()
    outcomes = compare(args.cpus, reuse_actors=not args.tune_fresh_actors, repeat=args.repeat)
    return publish(table(outcomes, args.cpus), args.out)


if __name__ == "__main__":
    sys.exit(main())
