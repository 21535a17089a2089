"""verify's cost per model and how it grows: `verify --quick --one-scale` over 1, 10 and all YAMLs derived
for one recipe (mobilenetv4 on every base of the newest ultralytics release, `apply mobilenetv4 --base all`).

The YAMLs are the ones `apply` wrote into ultralytics/cfg/models/yolopatch/, sorted by name: "1" is
yolov8-mobilenetv4.yaml, "10" is every k-th of the sorted list (10 spread over all model families and
tasks), "all" is every one. Each set is verified by one run of the real console entry
(`python -m yolopatch verify --quick --one-scale --json --yaml ...`: import, names, build, shapes and
figures at each YAML's first scale; verify's runner on one torch thread, as it sets itself), after one
untimed warm-up run of the 1-model set (page cache, bytecode). Figures:

  * seconds per model once warm: the slope of a least-squares line through the three (models, wall
    seconds) points - the marginal cost of one more YAML;
  * the fixed part: that line's intercept - interpreter and torch start-up, importing the checkout;
  * the same line over the CPU seconds of all processes (what the figure would be with a core always free);
  * from the JSON report, each model's own step seconds (build, shapes, figures): their median and the
    slowest models, which tell where the marginal cost goes (counting FLOPs of the large models).

If the yolopatch under test has no `apply --base` (the derivation work not merged), the figures say so.

usage: python tests/benchmarks/bench_verify_scale.py [--json OUT] [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GROUP = "verify"
TARGET = 2.0
RECIPE = "mobilenetv4"
FIRST = f"yolov8-{RECIPE}.yaml"
TIMEOUT = 3600


def subsets(yamls: list[Path], quick: bool) -> dict[str, list[Path]]:
    first = [y for y in yamls if y.name == FIRST] or yamls[:1]
    step = max(1, len(yamls) // 10)
    ten = yamls[::step][:10]
    if quick:
        return {"1": first, "10": ten[:3]}
    return {"1": first, "10": ten, "all": yamls}


def timed_verify(copy: Path, yamls: list[Path], work: Path) -> dict:
    args = ["verify", "--repo", copy, "--quick", "--one-scale", "--json"] + [a for y in yamls for a in ("--yaml", y)]
    wall, cpu, done = C.run_timed(C.yolopatch_cmd(*args), dict(os.environ), work)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"verify exited {done.returncode} without a JSON report: "
                           f"{done.stderr.decode()[-2000:]}") from None
    per_model = {m["name"]: sum(float(s.get("seconds") or 0) for s in m["steps"].values()) for m in report["models"]}
    failed = [f"{f.get('model')}: {f.get('step')}" for f in report.get("failures", [])]
    return {"n": len(yamls), "wall": wall, "cpu": cpu, "exit": done.returncode, "models": len(report["models"]),
            "per_model": per_model, "failed": failed, "load": C.loadavg(),
            "import": report.get("checks", {}).get("import", {}).get("seconds")}


def line_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


def run(quick: bool = False) -> tuple[list[dict], dict]:
    details: dict = {"load_before": C.loadavg()}
    label = f"`verify --quick --one-scale`: seconds per model once warm ({RECIPE} derived onto every base)"
    if not C.cli_supports("apply", "--base"):
        return [C.row(GROUP, label, f"< {TARGET:.0f} s", "not measured", "MISS",
                      "this yolopatch has no `apply --base` (the derivation work is not merged)")], details
    runs = {}
    with tempfile.TemporaryDirectory(prefix="yolopatch-bench-verify-scale-") as tmp:
        work = Path(tmp)
        copy = C.fresh_ultralytics(work / "ultralytics")
        done = subprocess.run(C.yolopatch_cmd("apply", RECIPE, "--base", "all", "--repo", copy), cwd=work,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"apply --base all exited {done.returncode}: {done.stderr[-2000:]}")
        yamls = sorted((copy / "ultralytics" / "cfg" / "models" / "yolopatch").glob("*.yaml"))
        sets = subsets(yamls, quick)
        timed_verify(copy, sets["1"], work)  # warm-up
        for key, chosen in sets.items():
            runs[key] = timed_verify(copy, chosen, work)
            print(f"  {key}: {runs[key]['wall']:.1f} s for {runs[key]['models']} models", file=sys.stderr, flush=True)
    details["runs"] = runs
    points = [(r["models"], r["wall"]) for r in runs.values()]
    slope, intercept = line_fit(points)
    cpu_slope, cpu_intercept = line_fit([(r["models"], r["cpu"]) for r in runs.values()])
    every = {}
    for r in runs.values():
        every.update(r["per_model"])
    steps = sorted(every.items(), key=lambda kv: -kv[1])
    over = [f"{name} {s:.1f} s" for name, s in steps if s >= TARGET]
    failed = sorted({f for r in runs.values() for f in r["failed"]})
    exits = {k: r["exit"] for k, r in runs.items()}
    ok = slope < TARGET and not failed
    walls = ", ".join(f"{r['models']} models {C.fmt_s(r['wall'])} (CPU {C.fmt_s(r['cpu'])})" for r in runs.values())
    rows = [
        C.row(GROUP, label, f"< {TARGET:.0f} s", C.fmt_s(slope), C.judge(ok),
              f"least-squares slope over {walls}; the same line over CPU seconds (all processes): "
              f"{C.fmt_s(cpu_slope)} per model, {C.fmt_s(cpu_intercept)} fixed; exits {exits}" + (f"; failed: {', '.join(failed)[:300]}" if failed else "")
              + f"; load average {details['load_before'][0]:.2f} -> {C.loadavg()[0]:.2f}"),
        C.row(GROUP, "`verify --quick --one-scale`: the fixed part (start-up, import of the checkout)", "-",
              C.fmt_s(intercept), "info",
              f"the line's intercept; verify's own `import` step {runs['1']['import']} s in the 1-model run"),
        C.row(GROUP, "`verify --quick --one-scale`: each model's own steps (build, shapes, figures)", "-",
              f"median {C.fmt_s(C.median(every.values()))} over {len(every)} models", "info",
              f"{len(over)} at or above {TARGET:.0f} s" + (": " + ", ".join(over[:8]) if over else "")
              + "; summed step seconds from the JSON report"),
    ]
    details["load_after"] = C.loadavg()
    return rows, details


def main() -> None:
    C.script_main(__doc__, run)


if __name__ == "__main__":
    main()
