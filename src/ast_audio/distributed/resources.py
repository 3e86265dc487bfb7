"""Does a pipeline fit the cluster? The CPUs and GPUs the model replicas reserve, checked against each node's,
so that a job never waits forever for decoding tasks that cannot be scheduled.

A pipeline needs `num_workers` replicas of `cpus_per_worker` CPUs (and `gpus_per_worker` GPUs), each placed
whole on one node, and CPUs left over for its decoding tasks (`DECODE_TASK_CPUS` each). Without them Ray
Data waits for ever: the replicas wait for decoded files, the decoding tasks for a free CPU.

Rule: an unset `cpus_per_worker` means "1 CPU per replica, less where the cluster needs it": it is lowered
until every decoding task fits beside the replicas (or half of them, ... or one, where the replicas would
otherwise reserve next to nothing), and a note says so. A value the user set is kept, and a
pipeline it cannot run (no CPU left to decode, replicas that fit no node) is refused with a message naming
the options to change. The check reads the resources present when the job starts (an autoscaling cluster
may grow later: set `cpus_per_worker` then, and the stall watch reports what the job waits for).
"""

from __future__ import annotations

import dataclasses
import math

from ast_audio.errors import UsageError

DECODE_TASK_CPUS = 0.25  # what one decoding+features task reserves (light beside the model)
DEFAULT_CPUS_PER_WORKER = 1.0
_SMALLEST_SHARE = 0.05  # below this a replica's reservation means nothing: refuse instead


@dataclasses.dataclass(frozen=True)
class Fit:
    """What the check decided: the CPUs each replica reserves and, where it lowered them, a one-line note."""

    cpus_per_worker: float
    note: str | None = None


def replicas_that_fit(nodes: list[dict[str, float]], cpus: float, gpus: float) -> int:
    """How many replicas of `cpus` CPUs and `gpus` GPUs the nodes (Ray resource dicts) can hold at once."""
    total = 0
    for node in nodes:
        counts = [math.floor(node.get("CPU", 0.0) / cpus + 1e-9) if cpus > 0 else math.inf]
        if gpus > 0:
            counts.append(math.floor(node.get("GPU", 0.0) / gpus + 1e-9))
        total += min(counts)
    return total


def _fits(nodes: list[dict[str, float]], workers: int, cpus: float, gpus: float, decode_cpus: float) -> bool:
    """Whether `workers` replicas, each placed on the node with the most CPUs free (Ray Data spreads its actors),
    leave room for `decode_cpus` of decoding tasks, counted whole per node."""
    free = [[node.get("CPU", 0.0), node.get("GPU", 0.0)] for node in nodes]
    for _ in range(workers):
        holding = [node for node in free if node[0] >= cpus - 1e-9 and node[1] >= gpus - 1e-9]
        if not holding:
            return False
        chosen = max(holding, key=lambda node: node[0])
        chosen[0] -= cpus
        chosen[1] -= gpus
    tasks = sum(math.floor(cpu / DECODE_TASK_CPUS + 1e-9) for cpu, _ in free)
    return tasks >= round(decode_cpus / DECODE_TASK_CPUS)


def _describe(nodes: list[dict[str, float]]) -> str:
    cpus = [f"{node.get('CPU', 0.0):g}" for node in nodes]
    gpus = sum(node.get("GPU", 0.0) for node in nodes)
    return (f"{sum(node.get('CPU', 0.0) for node in nodes):g} CPUs on {len(nodes)} node{'s' * (len(nodes) != 1)} "
            f"({', '.join(cpus)})" + (f", {gpus:g} GPUs" if gpus else ""))


def fit(nodes: list[dict[str, float]], workers: int, cpus_per_worker: float | None, gpus_per_worker: float,
        decode_tasks: int) -> Fit:
    """The CPUs per replica for a pipeline of `workers` replicas and `decode_tasks` decoding tasks at once on
    `nodes` (one `ray.nodes()` "Resources" dict per live node). Raises UsageError, naming the options to
    change, where the pipeline cannot run (UsageError: the command exits 2)."""
    wanted = decode_tasks * DECODE_TASK_CPUS
    if replicas_that_fit(nodes, _SMALLEST_SHARE if cpus_per_worker is None else cpus_per_worker,
                         gpus_per_worker) < workers:
        need = f"{cpus_per_worker:g} CPUs" if cpus_per_worker is not None else "a CPU share"
        need += f" and {gpus_per_worker:g} GPUs" if gpus_per_worker else ""
        raise UsageError(
            f"the cluster ({_describe(nodes)}) cannot hold --num-workers {workers} model replicas of {need} each: "
            "use fewer --num-workers" + (", a smaller --gpus-per-worker" if gpus_per_worker else "")
            + (", or a smaller --cpus-per-worker" if cpus_per_worker is not None else ""))
    if cpus_per_worker is not None:
        if _fits(nodes, workers, cpus_per_worker, gpus_per_worker, DECODE_TASK_CPUS):
            return Fit(cpus_per_worker)
        most = _largest_share(nodes, workers, gpus_per_worker, DECODE_TASK_CPUS)
        hint = f"a --cpus-per-worker of at most {most:g}" if most else "a smaller --cpus-per-worker"
        raise UsageError(
            f"--num-workers {workers} x --cpus-per-worker {cpus_per_worker:g} leave no CPU of the cluster "
            f"({_describe(nodes)}) for decoding ({DECODE_TASK_CPUS:g} CPU a task), so the job would never "
            f"progress: use fewer --num-workers, {hint}, or leave --cpus-per-worker unset to fit it automatically")
    # Room for every decoding task if the replicas can leave it, else for half of them, ... down to one.
    reserves = [wanted / 2**i for i in range(8) if wanted / 2**i > DECODE_TASK_CPUS] + [DECODE_TASK_CPUS]
    for decode_cpus in reserves:
        share = _largest_share(nodes, workers, gpus_per_worker, decode_cpus)
        if share:
            break
    else:
        raise UsageError(
            f"the cluster ({_describe(nodes)}) is too small for --num-workers {workers} model replicas and their "
            "decoding tasks: use fewer --num-workers")
    if share >= DEFAULT_CPUS_PER_WORKER:
        return Fit(DEFAULT_CPUS_PER_WORKER)
    return Fit(share, f"each model replica reserves {share:g} CPU (not {DEFAULT_CPUS_PER_WORKER:g}), so that "
                      f"decoding fits beside {workers} replica{'s' * (workers != 1)} on the cluster's "
                      f"{sum(node.get('CPU', 0.0) for node in nodes):g} CPUs (set --cpus-per-worker to choose)")


def _largest_share(nodes: list[dict[str, float]], workers: int, gpus: float, decode_cpus: float) -> float:
    """The largest CPUs per replica, at most the default and in hundredths, that fits with `decode_cpus` to
    spare (0 if none does)."""
    for hundredths in range(round(DEFAULT_CPUS_PER_WORKER * 100), round(_SMALLEST_SHARE * 100) - 1, -1):
        if _fits(nodes, workers, hundredths / 100, gpus, decode_cpus):
            return hundredths / 100
    return 0.0


def live_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the connected Ray cluster."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def waiting_for(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> str:
    """What a stalled pipeline may be waiting for: the cluster's free resources against the pipeline's needs."""
    import ray

    free, total = ray.available_resources(), ray.cluster_resources()
    have = ", ".join(f"{free.get(name, 0.0):g} of {total.get(name, 0.0):g} {name}s free" for name in ("CPU", "GPU")
                     if total.get(name) or name == "CPU")
    gpus = f" + {gpus_per_worker:g} GPU" if gpus_per_worker else ""
    return (f"{have}; the job needs {workers} model replica{'s' * (workers != 1)} of {cpus_per_worker:g} CPU{gpus} "
            f"and decoding tasks of {DECODE_TASK_CPUS:g} CPU (replicas not started, or tasks pending for "
            "resources, show as nothing free)")
