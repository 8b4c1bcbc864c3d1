"""``python -m sweep +grid=NAME [KEY=VALUE ...]``: the command line.

Checks the whole config (Hydra's compose API plus sweep.config) before Hydra's own run starts,
so a refused config prints one line, exits 2 and creates nothing (not even a run directory).
Then the Hydra app runs the sweep; its summary and, last, the dataset path go to stdout.

SIGINT (Ctrl-C) and SIGTERM (batch schedulers, ``timeout``, Kubernetes, ``ray job stop``) both
stop the sweep the same way, wherever they land (``sweep.interrupts``): what finished is saved,
the workers stop, and the closing message, decided by what the store on disk holds, says how
to go on; the exit code is 130 or 143. SIGUSR1 prints the Python stack of every thread to
stderr and the sweep goes on (``kill -USR1 PID``: where is a sweep that seems stuck?).
"""

from __future__ import annotations

import faulthandler
import shlex
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep import config, interrupts, schema
from sweep.address import ray_address

schema.register()

_result: dict[str, object] = {}


def _fail(message: str, code: int = 2) -> int:
    print(f"sweep: error: {message}", file=sys.stderr)
    return code


@hydra.main(version_base="1.3", config_path="pkg://sweep.conf", config_name="config")
def _app(cfg: DictConfig) -> None:
    from sweep import app, live_point

    sweep = config.resolve(cfg)
    if sweep.dry_run:  # reached only with Hydra's flags (main() stops it earlier): run nothing
        from sweep import plan

        print(plan.dry_run(sweep))
        return
    run_dir = HydraConfig.get().runtime.output_dir
    args = [a for a in _result["overrides"] if not a.startswith("resume.path=")]  # type: ignore[union-attr]
    resume = shlex.join([sys.executable, "-m", "sweep", *args]) + " resume={path}"
    from sweep.store import StoreError

    _result["resume"], _result["report"] = resume, sweep.report
    _result["path"] = app.store_path(sweep, run_dir)
    try:
        _result["result"] = app.run(sweep, run_dir, resume)
    except config.ConfigError as exc:
        _result["error"], _result["code"] = str(exc), 2
    except StoreError as exc:  # the environment (locked, disk full, read-only): exit 1
        _result["error"], _result["code"] = str(exc), 1
    except live_point.LiveUnavailable as exc:  # the environment: no live kernel here
        _result["error"], _result["code"] = str(exc), 1


#: Hydra's options that only print (the config, help, completion); nothing runs.
_INFO_FLAGS = frozenset({"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve",
                         "--package", "-p", "--info", "-i", "--shell-completion", "-sc"})
#: Options that run the sweep as the plain command does (Hydra's default mode).
_RUN_FLAGS = frozenset({"--run", "-r"})
#: Options whose value is the next word (``--cfg job``): kept with the option.
_VALUE_FLAGS = frozenset({"--cfg", "-c", "--package", "-p"})


def main(argv: list[str] | None = None) -> int:
    interrupts.install()
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _interrupted()


def _interrupted() -> int:
    """A signal that reached the top (Hydra starting, Ray starting, the report starting, the
    summary): the message comes from what the store on disk holds, and, if it exists, its path
    is still the last line of stdout. Further signals are ignored now: nothing is left to
    save, only to say."""
    from sweep import app

    for sig in interrupts.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    path = _result.get("path")
    code, message = app.interrupted_message(
        str(path) if path else None, str(_result.get("resume", "")), bool(_result.get("report")))
    if message.startswith("interrupted before"):
        return _fail(message, code)
    print(f"sweep: {message}", file=sys.stderr)
    print(path, flush=True)
    return code


def _main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-m", "--multirun") or a.startswith("hydra/sweeper") for a in args):
        return _fail("--multirun is not supported: a grid's axes are the sweep "
                     "(e.g. grid.processes=[10,100])")
    flags: list[str] = []  # options, each followed by its value if it takes one (--cfg job)
    rest: list[str] = []
    words = iter(args)
    for arg in words:
        if not arg.startswith("-"):
            rest.append(arg)
            continue
        flags.append(arg)
        if arg in _VALUE_FLAGS:
            flags.extend(v for v in (next(words, None),) if v is not None)
    overrides = config.normalize_overrides(rest)
    names = [f.partition("=")[0] for f in flags if f.startswith("-")]
    for name in names:
        if name not in _INFO_FLAGS and name not in _RUN_FLAGS:
            return _fail(f"{name} is not supported; allowed options: "
                         + ", ".join(sorted(_INFO_FLAGS | _RUN_FLAGS)))
    # --help, --cfg, --info ...: Hydra's own, nothing runs; anything else (--run) runs the
    # sweep, so it is checked as the plain command is
    if not names or any(name not in _INFO_FLAGS for name in names):
        # imported before the checks: a signal during them (the live pre-flight runs a
        # program) passes the except clauses below, which must then name bound classes
        from sweep.store import StoreError, check_run_dir

        try:
            sweep = config.resolve(config.compose(overrides))
            if sweep.dry_run:  # before Hydra's run: no run directory, no Ray, no store
                from sweep import plan

                print(plan.dry_run(sweep))
                return 0
            from sweep import app, live_point

            try:
                app.refuse_live(sweep)
            except live_point.LiveUnavailable as exc:
                return _fail(str(exc), 1)
            if ray_address(sweep.ray.address) is None:
                app.check_local_memory(sweep)
            check_run_dir(_run_dir(overrides))
        except config.ConfigError as exc:
            return _fail(str(exc))
        except StoreError as exc:
            return _fail(str(exc), 1)
    _result["overrides"] = overrides
    sys.argv = [sys.argv[0], *flags, *overrides]
    _app()
    for sig in interrupts.SIGNALS:  # the sweep is over: nothing left for a signal to stop
        signal.signal(sig, signal.SIG_IGN)
    if "error" in _result:
        return _fail(str(_result["error"]), int(_result.get("code", 2)))  # type: ignore[call-overload]
    result = _result.get("result")
    if interrupts.received() is not None and (result is None or result.code == 0):
        # The signal's KeyboardInterrupt was swallowed on its way (raised inside a weakref
        # callback or a __del__, "Exception ignored"), yet the signal came: say so, from what
        # the store on disk holds, as for any other interruption.
        return _interrupted()
    if result is None:
        return 0
    print(result.summary)
    if result.message:
        print(f"sweep: {result.message}", file=sys.stderr)
    sys.stdout.flush()
    print(result.path)
    return result.code


def _run_dir(overrides: list[str]) -> str:
    """The run directory Hydra will make: ``hydra.run.dir=``, or the default's fixed part."""
    for arg in reversed(overrides):
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "hydra.run.dir" and "${" not in value:
            return value
    return "outputs"


if __name__ == "__main__":
    sys.exit(main())
