"""Named simulation scenarios and the policies compared in them.

A :class:`Scenario` fixes the deployment (models, replica model, replica bounds, the gateway's
per-engine concurrency), the tasks, the mix and the arrival process; a
:class:`~cato.sim.policies.PolicySpec` fixes the routing and scaling policies. :func:`build_run`
turns (scenario, policy, rate, seed) into a :class:`~cato.sim.config.SimConfig` and the request
stream; the stream depends only on (scenario, rate, seed), never on the policy (common random
numbers).

Every scenario states its knee (``knee_rps``: the rate at which the best SLA-blind baseline
holds 90 % attainment, found with ``cato simulate --scenario NAME --find-knee``) so that loads
are reported as a fraction of it beside the absolute rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B, slowed, starcoder2_7b
from cato.core.task import TaskType
from cato.sim import arrivals as arr
from cato.sim.azure_trace import load_azure_code_trace, trace_window_start
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.drift import Drift, draft_refine_task
from cato.sim.lever_policies import class_lever_policies
from cato.sim.policies import PolicySpec, autoscaled_policies, fixed_policies, prefix_policies
from cato.sim.prefix_workloads import (IdeSessions, RepoShared, ide_session_stream,
                                       repo_shared_stream, with_task_mix)
from cato.sim.workload import MIX_A, MIX_B, TaskArrival, build_stream, build_trace_stream

AUTOSCALED_DEFAULTS = ("cato", "cato-plus", "cato-plus-proactive", "ray", "ray-tuned",
                       "pow2+cato", "round_robin+ray", "oracle+cato")

ArrivalFn = Callable[[float, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    deployments: tuple[ModelDeployment, ...]
    tasks: Mapping[str, TaskType]
    mix: Mapping[str, float]
    arrival: str
    duration_s: float
    rates_rps: tuple[float, ...]
    policies: Mapping[str, PolicySpec]
    default_policies: tuple[str, ...]
    engine_concurrency: int
    knee_rps: float | None = None
    cold_start_median_s: float = 45.0
    cold_start_p90_s: float = 90.0
    jitter_sigma: float = 0.0
    sweep: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    trace_start_s: float | None = None
    """azure: start every seed's window this many (scaled) seconds into the trace; ``None``:
    each seed its own window (:func:`cato.sim.azure_trace.trace_window_start`)."""
    drift: Drift | None = None
    """A scheduled slow-down of engines / drift of output lengths (:mod:`cato.sim.drift`)."""

    def arrivals(self, rate_rps: float, rng: np.random.Generator) -> np.ndarray:
        return ARRIVALS[self.arrival](rate_rps, self.duration_s, rng)


def _surge(factor: float) -> ArrivalFn:
    def fn(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
        f = arr.step_surge(rate, factor, duration / 3.0, 2.0 * duration / 3.0)
        return arr.inhomogeneous_poisson(f, f.max_rate_rps, duration, rng)
    return fn


def _diurnal(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    f = arr.diurnal_sine(rate, 0.8, duration / 2.0)
    return arr.inhomogeneous_poisson(f, f.max_rate_rps, duration, rng)


def _burst_from_idle(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    f = arr.step_surge(rate * 0.05, 20.0, duration / 6.0, duration)
    return arr.inhomogeneous_poisson(f, f.max_rate_rps, duration, rng)


ARRIVALS: dict[str, ArrivalFn] = {
    "poisson": arr.poisson,
    "gamma2": lambda r, d, g: arr.gamma_renewal(r, 2.0, d, g),
    "gamma4": lambda r, d, g: arr.gamma_renewal(r, 4.0, d, g),
    "onoff": arr.on_off,
    "surge2": _surge(2.0),
    "surge4": _surge(4.0),
    "diurnal": _diurnal,
    "burst": _burst_from_idle,
}


# ---- deployments ------------------------------------------------------------------------------
def _paper_deployments(replicas: int, lo: int, hi: int, max_num_seqs: int
                       ) -> tuple[ModelDeployment, ...]:
    # The paper's replicas were saturated at 0.67-3.33 req/s: an engine of that time with little
    # batching. We keep its rates and 6 replicas per model and cap each engine's batch.
    slow = slowed(A100_LLAMA7B, PAPER_SLOWDOWN, "paper-accelerator-llama7b")
    cl = slow.with_overrides(name="paper-codellama-7b", max_num_seqs=max_num_seqs)
    sc = starcoder2_7b(slow).with_overrides(name="paper-starcoder2-7b",
                                            max_num_seqs=max_num_seqs)
    return (ModelDeployment("codellama-7b", cl, replicas, lo, hi),
            ModelDeployment("starcoder2-7b", sc, replicas, lo, hi))


# Each model serves one TTFT-critical and one E2E-critical task, so that the paper's RQ1 pair
# (generation + translation) and its mix B both load the two models evenly.
PAPER_MODELS = {"completion": "starcoder2-7b", "generation": "codellama-7b",
                "summarization": "codellama-7b", "translation": "starcoder2-7b"}
ONE_MODEL = {t: "llama-7b" for t in PAPER_MODELS}
PAPER_RATES = (0.67, 1.33, 2.0, 2.67, 3.33)
PAPER_MAX_NUM_SEQS = 1
#: Step-time multiplier of the paper's accelerators relative to the A100 set (an assumption:
#: it places the knee of the best SLA-blind baseline near 3.33 req/s, as the protocol asks).
PAPER_SLOWDOWN = 2.5
RQ1_MIX = {"generation": 0.5, "translation": 0.5}
#: Knees of the heterogeneous pools (best of round robin, least outstanding and llmd at 90 %
#: attainment; seeds 0-1, 120 s; :func:`cato.sim.runner.find_knee`).
HETERO_KNEE_RPS = 137.6
HETERO_SEQS_KNEE_RPS = 72.4
#: Arrival kinds whose stream is a shared-prefix workload (:mod:`cato.sim.prefix_workloads`).
PREFIX_ARRIVALS = ("ide", "repo", "ide-mixed")
#: Knees of the shared-prefix scenarios: about where the best prefix-blind policy (CATO+,
#: round robin, least outstanding) falls below 90 % (a scan of seed 0, 120 s).
PREFIX_KNEES = {"ide": 33.0, "repo": 14.0}
#: Repository scenario: more repositories' contexts (48 x 4000 tokens, Zipf 1) than one
#: replica's KV cache holds (115k tokens), fewer than the pool's: where placement decides hits.
REPO_PARAMS: dict[str, int] = {"repos": 48, "repo_context_tokens": 4000}
#: IDE scenario: seconds a session lasts and between a user's requests.
IDE_SESSION_S, IDE_INTERVAL_S = 60.0, 3.0
#: Mixed-SLA shared-prefix pool (``ide-mixed``; BENCHMARKS.md section 12.1): the share of the
#: rate that is IDE completion (TTFT 250 ms); the rest is E2E-critical summarisation (3 s) and
#: translation (5 s) with long outputs (medians below) over repository contexts that both share.
MIXED_IDE_SHARE = 0.7
MIXED_REPO_MIX: dict[str, float] = {"summarization": 0.5, "translation": 0.5}
MIXED_OUTPUT_TOKENS: dict[str, int] = {"summarization": 64, "translation": 96}
MIXED_REPO_PARAMS: dict[str, int] = {"repos": 16, "repo_context_tokens": 3000,
                                     "question_tokens": 200}
MIXED_KNEE_RPS = 24.0


def mixed_prefix_variants() -> dict[str, PolicySpec]:
    """``cato-prefix``'s ablation on ``ide-mixed`` (BENCHMARKS.md section 12.1): early rejection
    of calls no replica is predicted to serve in time (``refuse="infeasible"``, CATO+'s), and
    lax calls held only while more than ``lax_uncached_tokens`` uncached prompt tokens await
    prefill (:class:`~cato.core.routing.cato_prefix.CatoPrefixPolicy`), alone and together."""
    out: dict[str, PolicySpec] = {}
    for label, params in (("cato-prefix-refuse", {"refuse": "infeasible"}),
                          ("cato-prefix-lax512", {"lax_uncached_tokens": 512}),
                          ("cato-prefix-lax2048", {"lax_uncached_tokens": 2048}),
                          ("cato-prefix-refuse-lax512",
                           {"refuse": "infeasible", "lax_uncached_tokens": 512}),
                          ("cato-prefix-refuse-lax2048",
                           {"refuse": "infeasible", "lax_uncached_tokens": 2048})):
        out[label] = PolicySpec(label, "cato-prefix", routing_params=dict(params))
    return out


def _scenarios() -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    # SLAs scaled with the step times: the same share of requests is feasible in isolation as
    # on an A100 with the protocol's SLAs.
    paper_tasks = single_step_tasks(PAPER_MODELS, sla_scale=PAPER_SLOWDOWN)
    conc = PAPER_MAX_NUM_SEQS
    out["paper"] = Scenario(
        "paper", "The paper's setting: CodeLlama-7B and StarCoder2-7B, 6 fixed replicas each "
        "(engines batching at most 1 sequence), mix B, Poisson 0.67-3.33 req/s, 120 s runs.",
        _paper_deployments(6, 6, 6, PAPER_MAX_NUM_SEQS), paper_tasks, MIX_B, "poisson", 120.0,
        PAPER_RATES, fixed_policies(conc),
        ("cato", "cato-plus", "round_robin", "ray", "least_outstanding", "edf", "oracle"), conc,
        knee_rps=3.3)
    out["paper-autoscaled"] = replace(
        out["paper"], name="paper-autoscaled",
        description="The paper's setting, autoscaled between 1 and 6 replicas per model "
                    "(cold start lognormal, median 45 s, p90 90 s), 600 s runs.",
        deployments=_paper_deployments(1, 1, 6, PAPER_MAX_NUM_SEQS), duration_s=600.0,
        policies=autoscaled_policies(conc),
        default_policies=AUTOSCALED_DEFAULTS)
    out["reproduction"] = replace(
        out["paper"], name="reproduction",
        description="Seed experiment 1 (RQ1, long-output tasks): generation + translation on 6 "
                    "fixed replicas per model, Poisson 2.0-3.33 req/s.",
        mix=RQ1_MIX, rates_rps=(2.0, 2.67, 3.33),
        default_policies=("cato", "round_robin", "ray"))
    out["ablation"] = replace(
        out["paper-autoscaled"], name="ablation",
        description="Seed experiment 2: power-of-two routing with CATO scaling, against CATO "
                    "routing with CATO scaling and Ray Serve-like routing and scaling.",
        rates_rps=(2.0, 2.67, 3.33), default_policies=("cato", "pow2+cato", "ray"))
    out["cold-start"] = replace(
        out["paper-autoscaled"], name="cold-start",
        description="Seed experiment 3: a burst from 1 replica per model (5 % of the rate for "
                    "100 s, then the full rate); sweep of max_exceeded_times.",
        arrival="burst", rates_rps=(3.33,), default_policies=("cato",),
        sweep={"max_exceeded_times": (1, 2, 3, 4, 6)})
    # ---- beyond the paper: plain A100 replicas with full batching --------------------------------
    one = single_step_tasks(ONE_MODEL)
    a100 = (ModelDeployment("llama-7b", A100_LLAMA7B, 4, 4, 4),)
    # The gateway lets each engine run as many calls as it batches (max_num_seqs): a lower cap
    # throttles every gateway-queue policy (32 cost CATO 15 % of its capacity on mix B); the
    # baselines are swept at 32 too (gateway_sweep). The autoscaled scenarios keep 32, which
    # their Ray-like targets are derived from.
    conc_a100 = A100_LLAMA7B.max_num_seqs
    for mix_name, mix, knee in (("A", MIX_A, 50.0), ("B", MIX_B, 62.0)):
        base = Scenario(
            f"mix{mix_name}-poisson",
            f"Mix {mix_name} on 4 fixed A100 Llama-7B replicas (full batching, gateway "
            f"concurrency {conc_a100} per engine = max_num_seqs), Poisson, 300 s.",
            a100, one, mix, "poisson", 300.0,
            tuple(round(knee * f, 2) for f in (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3)),
            fixed_policies(conc_a100), ("cato", "cato-plus", "round_robin", "least_outstanding",
                                        "ray", "ray-tuned", "edf", "oracle"), conc_a100,
            knee_rps=knee)
        out[base.name] = base
        out[f"mix{mix_name}-bursty"] = replace(
            base, name=f"mix{mix_name}-bursty", arrival="gamma4",
            description=base.description.replace("Poisson", "gamma arrivals with CV 4"))
        out[f"mix{mix_name}-onoff"] = replace(
            base, name=f"mix{mix_name}-onoff", arrival="onoff",
            description=base.description.replace("Poisson", "on/off bursts (Azure-like)"))
        out[f"mix{mix_name}-autoscaled"] = replace(
            base, name=f"mix{mix_name}-autoscaled", arrival="surge4",
            description=f"Mix {mix_name}, A100 Llama-7B replicas autoscaled 1-16, x4 step surge "
                        f"in the middle third of 900 s.",
            deployments=(ModelDeployment("llama-7b", A100_LLAMA7B, 2, 1, 16),), duration_s=900.0,
            rates_rps=tuple(round(knee * f, 2) for f in (0.25, 0.5)),
            policies=autoscaled_policies(32), engine_concurrency=32,
            default_policies=AUTOSCALED_DEFAULTS)
    out["multistep"] = replace(
        out["mixB-poisson"], name="multistep",
        description="Mix B with the multi-step variants (retrieve -> LLM summarisation; "
                    "LLM -> validate -> repair generation) on 4 fixed A100 replicas.",
        tasks=multi_step_tasks(ONE_MODEL))
    out["azure"] = replace(
        out["mixA-poisson"], name="azure", arrival="azure",
        description="Replay of the Azure LLM inference trace 2023, code service (first 30 min; "
                    "Microsoft, CC-BY 4.0), time-scaled to the given mean rate, on 4 fixed A100 "
                    "replicas.", duration_s=1800.0)
    out["mixB-diurnal"] = replace(
        out["mixB-autoscaled"], name="mixB-diurnal", arrival="diurnal",
        description="Mix B, A100 Llama-7B replicas autoscaled 1-16 over one hour of a "
                    "compressed diurnal sine (period 30 min, +-80 % around the mean rate).",
        duration_s=3600.0, rates_rps=(15.5, 31.0))
    h100 = (ModelDeployment("llama-7b", H100_LLAMA7B, 4, 4, 4),)
    out["h100-mixA"] = replace(
        out["mixA-poisson"], name="h100-mixA", deployments=h100,
        tasks=single_step_tasks(ONE_MODEL, completion_sla_s=0.150),
        description="Mix A on 4 fixed H100 replicas, completion SLA 150 ms.", knee_rps=130.0,
        rates_rps=(65.0, 117.0, 130.0, 143.0))
    # ---- heterogeneous pools (issue 14, lever 6): one model, replicas of different speed ----
    # Several deployments of "llama-7b", fixed replicas; each replica's engine runs its own
    # deployment's coefficients and the gateway knows them. The A100 deployment comes first: it
    # is the model's profile (slack-plan baselines); isolated/floor estimates and `feasible`
    # take the fastest set. Same SLAs, mix, policies and gateway concurrency as mixB-poisson.
    hetero_knee = HETERO_KNEE_RPS
    out["hetero"] = replace(
        out["mixB-poisson"], name="hetero",
        description=f"Mix B on a mixed pool: 2 A100 + 2 H100 fixed Llama-7B replicas (gateway "
                    f"concurrency {conc_a100} per engine), Poisson, 300 s.",
        deployments=(ModelDeployment("llama-7b", A100_LLAMA7B, 2, 2, 2),
                     ModelDeployment("llama-7b", H100_LLAMA7B, 2, 2, 2)),
        rates_rps=tuple(round(hetero_knee * f, 2)
                        for f in (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3)),
        knee_rps=hetero_knee)
    seqs_knee = HETERO_SEQS_KNEE_RPS
    out["hetero-seqs"] = replace(
        out["hetero"], name="hetero-seqs",
        description=f"Mix B on 4 fixed A100 Llama-7B replicas, two batching up to 256 "
                    f"sequences and two up to 32 (max_num_seqs; gateway concurrency "
                    f"{conc_a100} per engine), Poisson, 300 s.",
        deployments=(ModelDeployment("llama-7b", A100_LLAMA7B, 2, 2, 2),
                     ModelDeployment("llama-7b", A100_LLAMA7B.with_overrides(
                         name="a100-llama7b-seqs32", max_num_seqs=32), 2, 2, 2)),
        rates_rps=tuple(round(seqs_knee * f, 2)
                        for f in (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3)),
        knee_rps=seqs_knee)
    # ---- shared prefixes (issue 17): the engines' prefix caches decide TTFT ------------------
    # Rates: requests/s of the whole stream (IDE: users = rate x 3 s between a user's requests).
    for name, kind, knee, what in (
            ("ide-sessions", "ide", PREFIX_KNEES["ide"],
             "IDE sessions (completion, 250 ms TTFT SLA; "
             "1500-token files growing 12 tokens a request, 20 % edits, 60 s sessions, a request "
             "every 3 s per user)"),
            ("repo-shared", "repo", PREFIX_KNEES["repo"], "repository-shared contexts (generation, "
             "500 ms TTFT SLA; 48 repositories, Zipf 1, 4000-token contexts, Poisson)")):
        out[name] = Scenario(
            name, f"{what} on 4 fixed A100 Llama-7B replicas with automatic prefix caching "
            f"(gateway concurrency {conc_a100} per engine), 120 s.",
            a100, one, {"completion" if kind == "ide" else "generation": 1.0}, kind, 120.0,
            tuple(round(knee * f, 2) for f in (0.5, 0.75, 1.0, 1.25)),
            {**prefix_policies(), **class_lever_policies()},
            ("cato", "cato-plus", "cato-prefix", "round_robin", "least_outstanding",
             "session_affinity", "prefix_aware", "llmd_prefix"), conc_a100, knee_rps=knee)
    out["ide-mixed"] = Scenario(
        "ide-mixed", "Mixed SLAs on a shared-prefix pool: IDE sessions (completion, 250 ms "
        f"TTFT SLA; {MIXED_IDE_SHARE:.0%} of the rate, as ide-sessions) plus E2E-critical "
        "summarisation (3 s) and translation (5 s) with long outputs over 16 repositories' "
        "3000-token contexts (Zipf 1, Poisson), on 4 fixed A100 Llama-7B replicas with automatic "
        f"prefix caching (gateway concurrency {conc_a100} per engine), 120 s.",
        a100, one, {"completion": MIXED_IDE_SHARE,
                    **{t: (1.0 - MIXED_IDE_SHARE) * w for t, w in MIXED_REPO_MIX.items()}},
        "ide-mixed", 120.0, tuple(round(MIXED_KNEE_RPS * f, 2) for f in (0.5, 0.75, 1.0, 1.25)),
        {**prefix_policies(), **mixed_prefix_variants(), **class_lever_policies()},
        ("cato", "cato-plus", "cato-prefix", "round_robin", "least_outstanding",
         "session_affinity", "prefix_aware", "llmd_prefix"), conc_a100, knee_rps=MIXED_KNEE_RPS)
    out["scale"] = Scenario(
        "scale", "Scale check: 1,000 A100 replicas, Poisson 100 req/s for one hour, mix A.",
        (ModelDeployment("llama-7b", A100_LLAMA7B, 1000, 1000, 1000),), one, MIX_A, "poisson",
        3600.0, (100.0,), fixed_policies(32), ("cato",), 32)
    # ---- re-profiling under drift (issue 16, part 5): cato.sim.drift, docs/BENCHMARKS.md 13 ----
    out["drift"] = Scenario(
        "drift", "A draft -> refine chain on two models (2 fixed A100 replicas each), Poisson, "
        "300 s; at 100 s the drafter's engines slow 2x and the task's outputs grow 1.3x.",
        (ModelDeployment("drafter", A100_LLAMA7B, 2, 2, 2),
         ModelDeployment("refiner", A100_LLAMA7B, 2, 2, 2)),
        {"draft-refine": draft_refine_task(14.0)}, {"draft-refine": 1.0}, "poisson", 300.0, (4.0,),
        fixed_policies(A100_LLAMA7B.max_num_seqs), ("cato-plus-refuse", "cato"),
        A100_LLAMA7B.max_num_seqs,
        drift=Drift(100.0, {"drafter": 2.0}, {"draft-refine": 1.3}))
    return out


SCENARIOS: dict[str, Scenario] = _scenarios()


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None


def with_sla_scale(sc: Scenario, factor: float) -> Scenario:
    """The scenario with every task's SLA and secondary bound multiplied by ``factor`` (the
    protocol's SLA sweep)."""
    if not factor > 0:
        raise ValueError(f"SLA scale must be > 0, got {factor}")
    tasks = {k: t.scaled(factor) for k, t in sc.tasks.items()}
    return replace(sc, name=f"{sc.name}@sla{factor:g}", tasks=tasks)


def build_stream_for(sc: Scenario, rate_rps: float, seed: int) -> list[TaskArrival]:
    """The request stream of (scenario, rate, seed): identical for every policy, independent
    across seeds. A replayed trace (``azure``) is time-scaled to ``rate_rps`` as a whole; each
    seed then replays its own window of ``duration_s`` of it (looped end to end;
    :func:`cato.sim.azure_trace.trace_window_start`: disjoint windows for seeds ``0..m-1``), unless
    ``trace_start_s`` pins one window for every seed."""
    if rate_rps <= 0:
        raise ValueError(f"rate must be > 0 req/s, got {rate_rps}")
    ss = np.random.SeedSequence([seed, int(round(rate_rps * 1000))])
    arr_rng, stream_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    if sc.arrival in PREFIX_ARRIVALS:
        return prefix_stream(sc.arrival, rate_rps, sc.duration_s, stream_rng)
    if sc.arrival == "azure":
        full = load_azure_code_trace()
        if sc.trace_start_s is not None:   # an explicit start: the same window for every seed
            trace = full.time_scaled(target_rate_rps=rate_rps, duration_s=sc.duration_s,
                                     start_s=sc.trace_start_s)
        else:                              # each seed its own window of the looped trace
            scaled = full.time_scaled(target_rate_rps=rate_rps)
            start = trace_window_start(seed, sc.duration_s, scaled.period_s)
            trace = scaled.window(start, sc.duration_s)
        return build_trace_stream(trace, sc.tasks, stream_rng)
    times = sc.arrivals(rate_rps, arr_rng)
    return build_stream(times, sc.tasks, sc.mix, stream_rng)


def prefix_stream(kind: str, rate_rps: float, duration_s: float,
                  rng: np.random.Generator) -> list[TaskArrival]:
    """A shared-prefix stream of ``duration_s`` at ``rate_rps`` on average.

    ``repo``: :func:`~cato.sim.prefix_workloads.repo_shared_stream` at the rate. ``ide``: IDE
    sessions at a steady rate: the generator starts its sessions uniformly over one session
    length ``S``, so its load ramps up then down (a triangle over ``2S``); ``k + 1`` independent
    generations offset by ``S`` sum to a flat load on ``[S, (k + 1) S]``, which is kept and
    shifted to start at 0 (``k = ceil(duration / S)``; users per generation ``rate x
    interval``). Requests continuing sessions begun before the window find cold caches, as in
    any run that starts with empty engines. Ids are renumbered 0..n-1 in arrival order."""
    if kind == "repo":
        return repo_shared_stream(RepoShared(rate_rps=rate_rps, duration_s=duration_s,
                                             **REPO_PARAMS), rng)
    if kind == "ide-mixed":
        return _mixed_stream(rate_rps, duration_s, rng)
    if kind != "ide":
        raise ValueError(f"unknown shared-prefix workload {kind!r}; known: {PREFIX_ARRIVALS}")
    users = max(1, round(rate_rps * IDE_INTERVAL_S))
    p = IdeSessions(users=users, session_s=IDE_SESSION_S, interval_s=IDE_INTERVAL_S)
    k = max(1, int(np.ceil(duration_s / IDE_SESSION_S)))
    merged: list[TaskArrival] = []
    for g in range(k + 1):
        for a in ide_session_stream(p, rng, stream_base=1 + g * 10_000_000):
            t = a.arrival_s + (g - 1) * IDE_SESSION_S
            if 0.0 <= t < duration_s:
                merged.append(replace(a, arrival_s=t))
    merged.sort(key=lambda a: a.arrival_s)
    return [replace(a, id=i) for i, a in enumerate(merged)]


def _mixed_stream(rate_rps: float, duration_s: float,
                  rng: np.random.Generator) -> list[TaskArrival]:
    """``ide-mixed``: the ``ide`` stream at :data:`MIXED_IDE_SHARE` of the rate merged with a
    repository-shared stream at the rest, its requests split into summarisation and translation
    (:func:`~cato.sim.prefix_workloads.with_task_mix`); ids 0..n-1 in arrival order."""
    ide = prefix_stream("ide", rate_rps * MIXED_IDE_SHARE, duration_s, rng)
    repo = repo_shared_stream(RepoShared(rate_rps=rate_rps * (1.0 - MIXED_IDE_SHARE),
                                         duration_s=duration_s, **MIXED_REPO_PARAMS),
                              rng, task="summarization", stream_base=500_000_000)
    merged = sorted([*ide, *with_task_mix(repo, MIXED_REPO_MIX, MIXED_OUTPUT_TOKENS, rng)],
                    key=lambda a: a.arrival_s)
    return [replace(a, id=i) for i, a in enumerate(merged)]


def build_config(sc: Scenario, policy: PolicySpec, *,
                 overrides: Mapping[str, Any] | None = None) -> SimConfig:
    scaling_params = dict(policy.scaling_params)
    if overrides:
        scaling_params.update(overrides)
    return SimConfig(
        deployments=sc.deployments, tasks=sc.tasks, routing=policy.routing,
        routing_params=dict(policy.routing_params), scaling=policy.scaling,
        scaling_params=scaling_params,
        engine_concurrency=policy.engine_concurrency or sc.engine_concurrency,
        engine_scheduling=policy.engine_scheduling,
        cold_start_median_s=sc.cold_start_median_s, cold_start_p90_s=sc.cold_start_p90_s,
        jitter_sigma=sc.jitter_sigma, label=policy.label, drift=sc.drift,
    )


def user_scenario(name: str, tasks: Mapping[str, TaskType],
                  deployments: tuple[ModelDeployment, ...], *, mix: Mapping[str, float],
                  arrival: str = "poisson", duration_s: float = 60.0,
                  rates_rps: tuple[float, ...] = (1.0,), engine_concurrency: int = 32
                  ) -> Scenario:
    """A scenario of a team's own deployment (``cato simulate --config``): its declared tasks
    (SLAs already scaled), its models, a mix over its tasks and an arrival process of
    :data:`ARRIVALS`; fixed replicas, the fixed-replica policies."""
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival process {arrival!r}; known: "
                         f"{', '.join(sorted(ARRIVALS))}")
    return Scenario(name, f"{name}: the tasks and models of a config", deployments, dict(tasks),
                    dict(mix), arrival, duration_s, rates_rps,
                    fixed_policies(engine_concurrency),
                    ("cato", "least_outstanding", "round_robin"), engine_concurrency)
