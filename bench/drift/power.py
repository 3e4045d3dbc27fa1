"""The drops of the drift power study (issue 16): graded plants, clean reseeds and held-out nulls.

Per data group (a season of one year, `scenarios.DEFAULT_GROUPS`):

- **history**: `n_history` clean drops (another training seed and eval draw each), every one with
  `copies` reseeded copies (same data and eval sample, other training seeds);
- **clean**: `n_clean` more clean drops with their copies; with the history they form the group's
  clean pool, each of whose models is in turn a reseed-only test drop (`judging.py`);
- **null**: `n_null` single clean models never judged: the oracle's null distribution;
- **planted cells**: for the strong, medium and weak variable of the group (the largest, second and
  third share of the permutation importance over the history drops, chosen before any plant is
  built), the variable's series shuffled between a fraction 0.25, 0.5 and 1.0 of the training
  windows; and the variable's feed `lag_hours` late for `lag_strengths` (a spot check). A cell is
  `n_planted` drops of 1 + `copies` models: its 6 planted models are its single-model scenarios,
  its drops its 3-model scenarios, and their mean importance against the clean models' its true
  effect. Nothing is trained twice.

The drops, their audits and the cache are those of `bench.drift.drops`; history and clean drops
have the names and seeds of the issue-5 benchmark's history and reseed drops, so one cache serves
both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.drift.drops import (
    AuditedDrop,
    DropSpec,
    Group,
    ModelSettings,
    Plant,
    audit_drop,
    warm,
)
from bench.drift.scenarios import DEFAULT_GROUPS, FeatureProfile, feature_profiles, group_seed

STRENGTHS: tuple[str, ...] = ("strong", "medium", "weak")
FRACTIONS: tuple[float, ...] = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class PowerDesign:
    """Everything that fixes the power study's drops (chosen before any result was looked at)."""

    groups: tuple[Group, ...] = DEFAULT_GROUPS
    n_history: int = 6
    n_clean: int = 2
    n_null: int = 6
    n_planted: int = 2
    copies: int = 2
    fractions: tuple[float, ...] = FRACTIONS
    strengths: tuple[str, ...] = STRENGTHS
    #: Variables whose feed is also planted `lag_hours` late (at fraction 1.0): a spot check.
    lag_strengths: tuple[str, ...] = ("strong", "medium")
    lag_hours: int = 8
    settings: ModelSettings = field(default_factory=ModelSettings)
    workers: int = 2

    def with_copies(self, spec: DropSpec) -> list[DropSpec]:
        return [spec, *(spec.copy(index) for index in range(self.copies))]

    @property
    def n_models(self) -> int:
        """Models trained for the whole study."""
        per_drop = 1 + self.copies
        cells = len(self.strengths) * len(self.fractions) + len(self.lag_strengths)
        clean = (self.n_history + self.n_clean) * per_drop + self.n_null
        return len(self.groups) * (clean + cells * self.n_planted * per_drop)


@dataclass(frozen=True)
class Cell:
    """One planted cell of a group: a plant and its drops (each with its copies)."""

    kind: str
    strength: str
    fraction: float
    plant: Plant
    drops: tuple[AuditedDrop, ...]

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.kind, self.strength, self.fraction)


@dataclass(frozen=True)
class PowerGroup:
    """Every audited drop of one data group."""

    group: Group
    history: tuple[AuditedDrop, ...]
    clean: tuple[AuditedDrop, ...]
    null: tuple[AuditedDrop, ...]
    cells: tuple[Cell, ...]
    variables: dict[str, str]
    profiles: tuple[FeatureProfile, ...]

    @property
    def pool(self) -> tuple[AuditedDrop, ...]:
        """The clean drops that take turns as reseed-only test drops and as history."""
        return self.history + self.clean


def history_specs(group: Group, index: int, design: PowerDesign) -> list[DropSpec]:
    return [DropSpec(group, f"history{k}", group_seed(index) + k) for k in range(design.n_history)]


def clean_specs(group: Group, index: int, design: PowerDesign) -> list[DropSpec]:
    return [DropSpec(group, f"reseed{j}", group_seed(index) + 100 + j) for j in range(design.n_clean)]


def null_specs(group: Group, index: int, design: PowerDesign) -> list[DropSpec]:
    return [DropSpec(group, f"null{j}", group_seed(index) + 300 + j) for j in range(design.n_null)]


def cell_plants(variables: dict[str, str], design: PowerDesign) -> list[tuple[str, str, float, Plant]]:
    """(kind, strength, fraction, plant) of every planted cell of a group."""
    cells = [
        ("shuffle", strength, fraction, Plant("shuffle", variables[strength], fraction=fraction))
        for strength in design.strengths
        for fraction in design.fractions
    ]
    cells += [
        ("lag", strength, 1.0, Plant("lag", variables[strength], design.lag_hours))
        for strength in design.lag_strengths
    ]
    return cells


def planted_specs(group: Group, index: int, design: PowerDesign, number: int, plant: Plant) -> list[DropSpec]:
    """The `n_planted` drops of the `number`-th cell of a group (seeds apart from every other drop)."""
    base = group_seed(index) + 400 + 10 * number
    return [
        DropSpec(group, f"planted-{plant.label}-{p + 1}", base + p, plant) for p in range(design.n_planted)
    ]


def choose_variables(profiles: Sequence[FeatureProfile], strengths: Sequence[str]) -> dict[str, str]:
    """The variables with the largest, second and third share of the permutation importance over
    the group's history drops: how much of the model's loss they account for."""
    ranked = sorted(profiles, key=lambda profile: profile.loss_share, reverse=True)
    return {strength: profile.feature for strength, profile in zip(strengths, ranked, strict=False)}


@dataclass
class PowerBuilt:
    groups: list[PowerGroup]
    seconds: float
    n_models: int


def build(
    design: PowerDesign, root: Path, *, fresh: bool = False, progress: Callable[[str], None] = print
) -> PowerBuilt:
    """Train and audit (or read from the cache) every drop of the study, in two passes: the history
    first (it decides the planted variables), then everything else."""
    started = time.perf_counter()

    def warm_all(specs: Sequence[DropSpec]) -> None:
        every = [one for spec in specs for one in design.with_copies(spec)]
        began = time.perf_counter()
        warm(every, design.settings, root, workers=design.workers, fresh=fresh)
        progress(f"built {len(every)} models in {time.perf_counter() - began:.0f} s")

    def audited(spec: DropSpec, copies: bool = True) -> AuditedDrop:
        again = fresh and design.workers <= 1
        drop = audit_drop(spec, design.settings, root, fresh=again)
        if not copies:
            return drop
        extra = tuple(audit_drop(c, design.settings, root, fresh=again) for c in design.with_copies(spec)[1:])
        return replace(drop, copies=extra)

    indexed = list(enumerate(design.groups))
    warm_all([spec for index, group in indexed for spec in history_specs(group, index, design)])
    histories = {
        group.name: tuple(audited(spec) for spec in history_specs(group, index, design))
        for index, group in indexed
    }
    profiles = {name: tuple(feature_profiles(history)) for name, history in histories.items()}
    variables = {name: choose_variables(found, design.strengths) for name, found in profiles.items()}
    planted = {
        group.name: [
            (cell, planted_specs(group, index, design, number, cell[3]))
            for number, cell in enumerate(cell_plants(variables[group.name], design))
        ]
        for index, group in indexed
    }
    rest = [
        spec
        for index, group in indexed
        for spec in clean_specs(group, index, design) + [s for _, specs in planted[group.name] for s in specs]
    ]
    warm_all(rest)
    nulls = [spec for index, group in indexed for spec in null_specs(group, index, design)]
    warm(nulls, design.settings, root, workers=design.workers, fresh=fresh)
    groups = []
    for index, group in indexed:
        cells = tuple(
            Cell(kind, strength, fraction, plant, tuple(audited(spec) for spec in specs))
            for (kind, strength, fraction, plant), specs in planted[group.name]
        )
        groups.append(
            PowerGroup(
                group=group,
                history=histories[group.name],
                clean=tuple(audited(spec) for spec in clean_specs(group, index, design)),
                null=tuple(audited(spec, copies=False) for spec in null_specs(group, index, design)),
                cells=cells,
                variables=variables[group.name],
                profiles=profiles[group.name],
            )
        )
        progress(f"{group.name}: {variables[group.name]}")
    return PowerBuilt(groups, time.perf_counter() - started, design.n_models)
