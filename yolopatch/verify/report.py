"""The result of `yolopatch verify`: one value, rendered as a table for people or as JSON (schema in
README.md, section "yolopatch verify"; bump SCHEMA on any incompatible change)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .protocol import FAILED, MODEL_STEPS, NOT_RUN, PASSED, SKIPPED, STEPS, TARGET_STEPS
from .runner.causes import ENVIRONMENT, PATCH, cause_record

__all__ = ["SCHEMA", "STEPS", "MODEL_STEPS", "VerifyReport"]

SCHEMA = "yolopatch-verify/1"
_CELL = {PASSED: "ok", FAILED: "FAIL", SKIPPED: "skip", NOT_RUN: "-"}
_TARGET_EVIDENCE = {"stock": "the stock models differ from the ones the pristine files build",
                    "runner": "the runner ended without a result"}


def _blame(cause: dict) -> str:
    """What the environment did and how to fix it (or, for a fault verify does not know, the evidence)."""
    if cause.get("name"):
        return f"{cause['what']} ({cause['evidence']}). Fix: {cause['fix']}"
    return f"{cause['evidence']}. Fix the environment (a package version the target does not support?), then run again"


@dataclass
class VerifyReport:
    target: dict                     # flavour, version, root, python, torch
    steps: list                      # the steps requested, in ladder order
    checks: dict                     # target-level steps: "import", "stock" (and "runner" if it crashed)
    models: list                     # one dict per (YAML, scale), see README.md, section "yolopatch verify"
    recipes: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0

    # verdict ---------------------------------------------------------------------------------------------
    @property
    def failures(self) -> list:
        """Every failed step, target-level first, each with its cause (environment or patch)."""
        found = [{"model": None, "step": step, "message": check["message"],
                  "cause": check.get("cause") or cause_record(PATCH, _TARGET_EVIDENCE.get(step, ""), check["message"])}
                 for step, check in self.checks.items() if check.get("status") == FAILED]
        for model in self.models:
            for step in MODEL_STEPS:
                entry = model["steps"].get(step, {})
                if entry.get("status") == FAILED:
                    found.append({"model": model["name"], "step": step, "message": entry["message"],
                                  "cause": entry.get("cause") or cause_record(PATCH, "", entry["message"])})
        return found

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def environment_only(self) -> bool:
        """Every failure is the environment's: the stock model fails the same step the same way."""
        failures = self.failures
        return bool(failures) and all(f["cause"]["origin"] == ENVIRONMENT for f in failures)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 5 if self.environment_only else 4

    def failure_summary(self) -> str:
        failures = self.failures
        if not failures:
            return ""
        first = next((f for f in failures if f["cause"]["origin"] != ENVIRONMENT), failures[0])
        where = f"{first['model']}: {first['step']}" if first["model"] else first["step"]
        more = f" (and {len(failures) - 1} more failure(s))" if len(failures) > 1 else ""
        if self.environment_only:
            return f"verify failed at {where} because of the environment, not the patch: {_blame(first['cause'])}{more}"
        return f"verify failed at {where}: {first['message']}{more}"

    # JSON ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "passed": self.passed, "exit_code": self.exit_code, "target": self.target,
                "recipes": self.recipes, "steps": self.steps, "checks": self.checks, "models": self.models,
                "failures": self.failures, "notes": self.notes, "seconds": round(self.seconds, 2)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # table -----------------------------------------------------------------------------------------------
    def table(self) -> str:
        t = self.target
        lines = [f"target  {t.get('flavour')} {t.get('version')} at {t.get('root')} "
                 f"(python {t.get('python_version') or '?'}, torch {t.get('torch') or '?'})"]
        for step in TARGET_STEPS:
            check = self.checks.get(step)
            if check:
                lines.append(f"{step:<7} {check['status']:<7} {check['message']}")
        if "runner" in self.checks:
            lines.append(f"runner  failed  {self.checks['runner']['message']}")
        lines.append("")
        lines.extend(self._model_table())
        for failure in self.failures:
            where = f"{failure['model']} · {failure['step']}" if failure["model"] else failure["step"]
            lines.append(f"FAIL {where}: {failure['message']}")
            cause = failure["cause"]
            if cause["origin"] == ENVIRONMENT:
                lines.append(f"     cause: the environment, not the patch: {_blame(cause)}")
            elif cause.get("evidence"):
                lines.append(f"     cause: the patch ({cause['evidence']})")
        lines.extend(f"note: {note}" for note in self.notes)
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures)} failure(s))"
        lines.append(f"verify {verdict}: {len(self.models)} model(s) in {self.seconds:.1f}s")
        return "\n".join(lines)

    def _model_table(self) -> list:
        head = ["model", "scale", "params", "GFLOPs", "strides", *MODEL_STEPS]
        rows = [head]
        for m in self.models:
            rows.append([m["name"], m.get("scale") or "-",
                         f"{m['params']:,}" if m.get("params") is not None else "-",
                         f"{m['gflops']:.1f}" if m.get("gflops") is not None else "-",
                         ",".join(str(s) for s in m["strides"]) if m.get("strides") else "-",
                         *(_CELL.get(m["steps"].get(s, {}).get("status"), "?") for s in MODEL_STEPS)])
        widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
        right = {2, 3}
        return ["  ".join(cell.rjust(w) if k in right else cell.ljust(w) for k, (cell, w) in
                          enumerate(zip(row, widths))).rstrip() for row in rows] + [""]
