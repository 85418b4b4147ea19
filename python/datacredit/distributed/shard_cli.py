"""``datacredit shard run`` / ``datacredit shard status``: one shard from the command line.

    datacredit shard run --store DIR --stage S --shard I    compute shard I (a SLURM array task)
    datacredit shard status DIR                             progress of DIR's store(s)

``run`` imports the worker function named in the store's manifest (written by your driver
with ``ShardStore.create(..., worker="pkg.mod:fn")``, as config files name factories): run
it only on stores you created. It writes that shard's files and nothing else; the driver
folds them into the manifest on its next ``run_stage``. ``status`` only reads JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from datacredit.store import MANIFEST, ShardStore, compute_shard, write_shard


def _stages_under(path: Path) -> list[str]:
    """The stages of the stores directly under ``path`` (a method's root directory)."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if (p / MANIFEST).is_file())


def _open_stage(path: Path, stage: str) -> ShardStore:
    if not (path / MANIFEST).is_file():
        if (path / stage / MANIFEST).is_file():
            path = path / stage  # a method's root directory holding one store per stage
        else:
            # name the real problem: a wrong --stage, a wrong --store, or no store at all
            stages = _stages_under(path)
            if stages:
                raise ValueError(
                    f"{path} has no store for --stage {stage!r}; its stages are: "
                    f"{', '.join(stages)}"
                )
            if not path.exists():
                raise FileNotFoundError(f"--store {path} does not exist")
            raise FileNotFoundError(
                f"--store {path} is not a shard store: no {MANIFEST} in it, nor in "
                f"{path / stage} (--stage {stage!r})"
            )
    store = ShardStore(path)
    if store.manifest["stage"] != stage:
        raise ValueError(f"{path} holds stage {store.manifest['stage']!r}, not {stage!r}")
    return store


# Workers that moved: stores created by an earlier release name the old path in their
# manifest (a string, so this table imports nothing).
MOVED_WORKERS = {
    "datacredit.distributed.gmvaluator_stages:embed_worker": (
        "datacredit.gmvaluator.stages:embed_worker"
    ),
}


def run_shard(path: str | Path, stage: str, shard: int, *, force: bool = False) -> str:
    """Compute ``shard`` of the store at ``path`` with its manifest's worker; a message."""
    from datacredit.config import load_object

    store = _open_stage(Path(path), stage)
    store._check_shard(shard)
    marker = store._marker(shard)
    if not force and marker is not None and store._file_problem(shard, marker) is None:
        return f"shard {shard} of {store.path} is already done (use --force to recompute)"
    spec = store.manifest.get("worker")
    if spec is None:
        raise ValueError(
            f"{store.path}: the store names no worker (it was created from Python objects); "
            "run its stage from Python (run_stage / the method's executor=)"
        )
    fn = load_object(MOVED_WORKERS.get(spec, spec), "worker")
    rows = store.rows(shard)
    chash = store.manifest["config_hash"]
    if force:
        write_shard(store.path, shard, rows, fn(store.config, shard, rows), chash)
    else:  # under the shard's claim: a task running the same shard at once computes it once
        compute_shard(store.path, shard, rows, lambda s, r: fn(store.config, s, r), chash)
    return f"shard {shard} of {store.path} done (rows {rows[0]}:{rows[1]})"


def status_lines(path: str | Path, *, verify: bool = False) -> list[str]:
    """One line per store at ``path`` (or in its sub-directories): stage, done/total, pending.

    ``verify``: also hash every done shard against its marker (O(store bytes)); a shard that
    fails is listed as corrupt (the next ``run_stage`` recomputes it). Nothing is written."""
    path = Path(path)
    dirs = (
        [path]
        if (path / MANIFEST).is_file()
        else sorted(p for p in path.iterdir() if (p / MANIFEST).is_file())
        if path.is_dir()
        else []
    )
    if not dirs:
        raise FileNotFoundError(f"no shard store at {path} ({MANIFEST} missing)")
    lines = []
    for d in dirs:
        st = ShardStore(d)
        missing = st.missing()
        corrupt = []
        if verify:
            for i in range(st.n_shards):
                marker = None if i in missing else st._marker(i)
                if marker is not None and st._file_problem(i, marker) is not None:
                    corrupt.append(i)
            missing = sorted(set(missing) | set(corrupt))
        m = st.manifest
        line = (
            f"{d}: {m['method']}/{m['stage']}  {st.n_shards - len(missing)}/{st.n_shards} "
            f"shards done, {m['n_rows']} rows"
        )
        if missing:
            shown = ",".join(map(str, missing[:20])) + (",..." if len(missing) > 20 else "")
            line += f"; pending: {shown}"
        if corrupt:
            line += f"; corrupt (recomputed by the next run): {','.join(map(str, corrupt[:20]))}"
        lines.append(line)
    return lines


def _run(args: argparse.Namespace) -> Any:
    try:
        if args.shard_command == "run":
            print(run_shard(args.store, args.stage, args.shard, force=args.force))
        else:
            print("\n".join(status_lines(args.dir, verify=args.verify)))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"datacredit shard {args.shard_command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(0)


def add_shard_parser(sub: Any) -> None:
    """Register ``datacredit shard {run,status}`` on the main parser's sub-parsers."""
    p = sub.add_parser(
        "shard",
        help="run one shard of a stage, or show a shard store's progress",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ss = p.add_subparsers(dest="shard_command", required=True)
    run = ss.add_parser("run", help="compute one shard (e.g. one SLURM array task)")
    run.add_argument("--store", required=True, help="the store directory (or its parent)")
    run.add_argument("--stage", required=True, help="the stage (as in the manifest)")
    run.add_argument("--shard", required=True, type=int, help="shard id, from 0")
    run.add_argument("--force", action="store_true", help="recompute a shard already done")
    status = ss.add_parser("status", help="done / pending shards of DIR's store(s)")
    status.add_argument("dir", help="a store directory, or a directory of stores")
    status.add_argument(
        "--verify", action="store_true", help="also check every done shard's SHA-256"
    )
    p.set_defaults(handler=_run)
