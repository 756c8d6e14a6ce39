"""A1111's sampler and scheduler names, resolved onto this server's samplers and sigma schedules.

A1111 (1.9 and later) names an algorithm (`sampler_name`, `Euler a`) and a noise schedule (`scheduler`,
`Automatic` or `Karras`, by name or label) apart; an older client appends the schedule's label to the
sampler's name (`DPM++ 2M Karras`), which A1111 still reads and so do we (`resolve`). `Automatic` is the
sampler's own schedule as A1111 has it: Karras for DPM++ 2M, DPM++ 2S a, DPM2 and DPM2 a, the model's own
spacing for the others.

DDIM is one of A1111's timestep samplers (modules/sd_samplers_timesteps.py), which walk their own
timesteps: any of A1111's schedules is taken with it and has no effect, as in A1111.

Our rules where A1111 differs: a sampler or scheduler this server does not run is a 422 naming the field
(A1111 1.10 falls back to its default sampler and schedule without a word); Karras with a sampler whose
scheduler has no Karras schedule (Euler a, DDPM) is a 422 too. `DDPM` is ours (A1111 has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdxl_bedrock.api.validation import malformed, shown
from sdxl_bedrock.errors import MalformedBody, ProblemKind
from sdxl_bedrock.schema import SAMPLERS_WITH_KARRAS_SIGMAS, Sampler, SigmaSchedule


@dataclass(frozen=True)
class A1111Sampler:
    """A sampler as A1111's API lists it: `options` holds only what is true of ours (its automatic
    schedule, `scheduler`, and whether it calls the model twice a step, `second_order`), as text."""

    name: str
    sampler: Sampler
    aliases: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)

    @property
    def automatic_schedule(self) -> SigmaSchedule:
        return SigmaSchedule.KARRAS if self.options.get("scheduler") == "karras" else SigmaSchedule.DEFAULT


@dataclass(frozen=True)
class A1111Scheduler:
    """A schedule as A1111's API lists it (`/sdapi/v1/schedulers`)."""

    name: str
    label: str
    schedule: SigmaSchedule | None  # None: the sampler's automatic schedule
    default_rho: float = -1.0
    aliases: tuple[str, ...] | None = None
    need_inner_model: bool = False


KARRAS = {"scheduler": "karras"}
SECOND_ORDER = {"second_order": "True"}

# A1111's names and aliases (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py), in its order.
SAMPLERS: tuple[A1111Sampler, ...] = (
    A1111Sampler("DPM++ 2M", Sampler.DPMPP_2M, ("k_dpmpp_2m",), KARRAS),
    A1111Sampler("DPM++ 2S a", Sampler.DPMPP_2S_ANCESTRAL, ("k_dpmpp_2s_a",), {**KARRAS, **SECOND_ORDER}),
    A1111Sampler("Euler a", Sampler.EULER_ANCESTRAL, ("k_euler_a", "k_euler_ancestral")),
    A1111Sampler("Euler", Sampler.EULER, ("k_euler",)),
    A1111Sampler("LMS", Sampler.LMS, ("k_lms",)),
    A1111Sampler("Heun", Sampler.HEUN, ("k_heun",), SECOND_ORDER),
    A1111Sampler("DPM2", Sampler.DPM_2, ("k_dpm_2",), {**KARRAS, **SECOND_ORDER}),
    A1111Sampler("DPM2 a", Sampler.DPM_2_ANCESTRAL, ("k_dpm_2_a",), {**KARRAS, **SECOND_ORDER}),
    A1111Sampler("DDIM", Sampler.DDIM, ("ddim",)),
    A1111Sampler("DDPM", Sampler.DDPM, ("ddpm",)),
)
SAMPLERS_BY_NAME = {sampler.name: sampler for sampler in SAMPLERS}
# Those A1111 runs as timestep samplers, which take no schedule.
TIMESTEP_SAMPLERS = frozenset({Sampler.DDIM})
SAMPLER_NAMES = {sampler.sampler: sampler.name for sampler in SAMPLERS}
# A1111's samplers.py: `samplers[0]` is its default; the API model's `sampler_index` defaults to "Euler".
DEFAULT_SAMPLER_INDEX = "Euler"

AUTOMATIC = A1111Scheduler("automatic", "Automatic", None)
SCHEDULERS: tuple[A1111Scheduler, ...] = (
    AUTOMATIC,
    A1111Scheduler("karras", "Karras", SigmaSchedule.KARRAS, default_rho=7.0),
)
SCHEDULERS_BY_NAME = {key: scheduler for scheduler in SCHEDULERS for key in (scheduler.name, scheduler.label)}
# A1111's other samplers and schedules (modules/sd_samplers_*.py, sd_schedulers.py): refused by name, so
# the message says they exist but are not run here.
SAMPLERS_NOT_RUN_HERE = frozenset(
    {
        "DPM++ SDE",
        "DPM++ 2M SDE",
        "DPM++ 2M SDE Heun",
        "DPM++ 3M SDE",
        "DPM fast",
        "DPM adaptive",
        "Restart",
        "DDIM CFG++",
        "PLMS",
        "UniPC",
        "LCM",
    }
)
SCHEDULERS_NOT_RUN_HERE = frozenset(
    {
        "Uniform",
        "Exponential",
        "Polyexponential",
        "SGM Uniform",
        "KL Optimal",
        "Align Your Steps",
        "Simple",
        "Normal",
        "DDIM",
        "Beta",
        "uniform",
        "exponential",
        "polyexponential",
        "sgm_uniform",
        "kl_optimal",
        "align_your_steps",
        "simple",
        "normal",
        "ddim",
        "beta",
    }
)


@dataclass(frozen=True)
class Resolved:
    """A request's sampler and schedule: `scheduler` is the label A1111 reports (`Schedule type`)."""

    sampler: A1111Sampler
    schedule: SigmaSchedule
    scheduler: str


def resolve(
    sampler_name: str | None,
    sampler_index: str | None,
    scheduler: str | None,
    *,
    fields: tuple[str, str] = ("sampler_name", "scheduler"),
) -> Resolved:
    """A1111's `get_sampler_and_scheduler`: the sampler named by `sampler_name` (else `sampler_index`), a
    schedule label appended to it taking the place of `scheduler`. `fields` name the sampler's and the
    scheduler's field in refusals (the hires fix has its own). Raises MalformedBody (422)."""
    field_name = fields[0] if sampler_name else "sampler_index"
    name = sampler_name or sampler_index or DEFAULT_SAMPLER_INDEX
    suffixed = None
    for candidate in SCHEDULERS:
        suffix = " " + candidate.label
        if name.endswith(suffix):
            suffixed, name = candidate, name[: -len(suffix)]
            break
    found = SAMPLERS_BY_NAME.get(name)
    if found is None:
        names = [sampler.name for sampler in SAMPLERS]
        raise unknown(field_name, name, "sampler", names, SAMPLERS_NOT_RUN_HERE)
    if found.sampler in TIMESTEP_SAMPLERS and suffixed is None and known_scheduler(scheduler):
        # A1111's timestep samplers (sd_samplers_timesteps.py) walk their own timesteps, whatever the
        # schedule (SillyTavern sends `normal` by default); the infotext names the one sent.
        return Resolved(found, SigmaSchedule.DEFAULT, scheduler_label(scheduler))
    chosen = suffixed or scheduler_named(scheduler, fields[1])
    schedule = found.automatic_schedule if chosen.schedule is None else chosen.schedule
    if schedule is SigmaSchedule.KARRAS and found.sampler not in SAMPLERS_WITH_KARRAS_SIGMAS:
        raise malformed(
            ("scheduler",),
            f"the Karras schedule is not available with the {found.name} sampler here (its scheduler has "
            "none); use Automatic, or one of "
            + ", ".join(s.name for s in SAMPLERS if s.sampler in SAMPLERS_WITH_KARRAS_SIGMAS),
            kind=ProblemKind.NOT_ALLOWED,
            value=scheduler,
        )
    label = "Karras" if schedule is SigmaSchedule.KARRAS else "Automatic"
    return Resolved(found, schedule, label)


def scheduler_named(name: str | None, field_name: str = "scheduler") -> A1111Scheduler:
    if not name:
        return AUTOMATIC
    found = SCHEDULERS_BY_NAME.get(name)
    if found is None:
        labels = [scheduler.label for scheduler in SCHEDULERS]
        raise unknown(field_name, name, "scheduler", labels, SCHEDULERS_NOT_RUN_HERE)
    return found


def known_scheduler(name: str | None) -> bool:
    return not name or name in SCHEDULERS_BY_NAME or name in SCHEDULERS_NOT_RUN_HERE


def scheduler_label(name: str | None) -> str:
    if not name:
        return AUTOMATIC.label
    found = SCHEDULERS_BY_NAME.get(name)
    return found.label if found is not None else name


def unknown(
    field_name: str, name: str, noun: str, available: list[str], not_run_here: frozenset[str]
) -> MalformedBody:
    what = f"an A1111 {noun} this server does not run" if name in not_run_here else f"not a {noun}"
    return malformed(
        (field_name,),
        f"{shown(name)} is {what}; this server runs: {', '.join(available)}",
        kind=ProblemKind.NOT_ALLOWED,
        value=name,
    )
