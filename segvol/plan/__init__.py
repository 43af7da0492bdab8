"""``segvol plan``: a fingerprint of a dataset, then nnU-Net's rules for its spacing, cropping, normalisation, patch
and network, written as a config to train with (docs/plan.md).

Stages: :mod:`~segvol.plan.fingerprint` (one pass over the cases, cached) -> :mod:`~segvol.plan.rules` (pure rules)
and :mod:`~segvol.plan.memory` (segvol's memory model) -> :mod:`~segvol.plan.planner` (the :class:`Plan`) ->
:mod:`~segvol.plan.outputs` (JSON, YAML, the printed table, the :class:`~segvol.config.Config`).
"""

from __future__ import annotations

from segvol.plan.fingerprint import Fingerprint, fingerprint_records
from segvol.plan.outputs import (plan_from_json, plan_overrides, plan_table, plan_to_config, plan_to_dict, run_plan,
                                 write_plan_json, write_plan_yaml)
from segvol.plan.planner import Plan, make_plan

__all__ = ["Fingerprint", "Plan", "fingerprint_records", "make_plan", "plan_from_json", "plan_overrides",
           "plan_table", "plan_to_config", "plan_to_dict", "run_plan", "write_plan_json", "write_plan_yaml"]
