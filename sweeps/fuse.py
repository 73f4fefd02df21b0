"""`costlaw sweep submit --fuse`: a submission's runs grouped for fused training (runs/fusion.py).

Runs of one stage whose configs differ only in their seed form a group that trains as one job on one GPU slot:
each member keeps its run id, run directory and record (every member's record names the group's job). A run that
cannot fuse (alone in its group, a later stage that starts from a parent, a long-context stage, a KV-policy
task) is submitted as it would be without `--fuse`. Without the flag nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from costlaw.costmodel.core.errors import ConfigError


@dataclass
class FusedGroup:
    """Quacks like a PlannedRun where the executors need one: id, stage, label, resources, config."""

    members: list

    @property
    def run_id(self) -> str:  # the group's key in an executor's bookkeeping, never a run directory
        return f"{self.members[0].run_id}+{len(self.members) - 1}"

    @property
    def stage(self) -> str:
        return self.members[0].stage

    @property
    def label(self) -> str:
        seeds = ",".join(str(m.config.seed) for m in self.members)
        return f"{self.members[0].label or ''} seeds {seeds} fused".strip()

    @property
    def parent_id(self):
        return None

    @property
    def resources(self):
        return self.members[0].resources

    @property
    def config(self):
        return self.members[0].config


def members(unit) -> list:
    """The runs a unit of submission trains: a group's members, or the run itself."""
    return unit.members if isinstance(unit, FusedGroup) else [unit]


def fuse(runs) -> tuple[list, list[str]]:
    """(units, notes): `runs` with each fusable set of seeds replaced by one FusedGroup at its first member's
    place; notes say, once per reason, why runs that share a config with others stay unfused."""
    from costlaw.runs.fusion import check_fusable, fuse_key

    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r.stage, fuse_key(r.config)), []).append(r)
    units, notes, placed = [], [], set()
    for r in runs:
        key = (r.stage, fuse_key(r.config))
        if key in placed:
            continue
        placed.add(key)
        g = groups[key]
        if len(g) == 1:
            units.append(r)
            continue
        try:
            if any(m.parent_id is not None for m in g):
                raise ConfigError("fuse", f"stage {r.stage!r} starts from parent runs; it trains unfused")
            check_fusable([m.config for m in g])
        except ConfigError as e:
            units.extend(g)
            if str(e) not in notes:
                notes.append(str(e))
            continue
        units.append(FusedGroup(g))
    return units, notes
