"""Step 5, the comparison: stock model fingerprints of the patched checkout against the pristine copy."""

from __future__ import annotations

from .runner.causes import ENVIRONMENT, cause_record, same_failure


def _row(item: dict, patched: dict, pristine: dict) -> dict:
    name = item.name
    p, q = patched.get(name) or {}, pristine.get(name) or {}
    row = {"name": name, "yaml": item.yaml, "params": p.get("params"), "pristine_params": q.get("params"),
           "status": "failed", "message": ""}
    if "error" in p and "error" in q and same_failure(p["error"], q["error"]):
        row["message"] = f"{name}: neither the patched checkout nor the pristine files can build it: {p['error']}"
        row["environment"] = True
    elif "error" in p or not p:
        row["message"] = f"{name}: the patched checkout cannot build it: {p.get('error', 'no result')}"
    elif "error" in q or not q:
        row["message"] = f"{name}: the pristine copy cannot build it either: {q.get('error', 'no result')}"
    elif p["params"] != q["params"]:
        row["message"] = f"{name}: {p['params']:,} parameters in the patched checkout, {q['params']:,} in the pristine files"
    elif p["output_shape"] != q["output_shape"]:
        row["message"] = f"{name}: output shape {p['output_shape']} in the patched checkout, {q['output_shape']} in the pristine files"
    elif p["digest"] != q["digest"]:
        row["message"] = (f"{name}: outputs differ from the pristine files for the same seed and input "
                          f"(sum |y| {p['checksum']:.6g} vs {q['checksum']:.6g})")
    else:
        row["status"] = "passed"
        row["message"] = f"{name}: {p['params']:,} parameters and bit-identical outputs, as in the pristine files"
    return row


def compare(items: list, patched: dict, pristine: dict, pristine_problem: str = "") -> dict:
    """The `stock` check record: status, message and one row per stock model."""
    if pristine_problem:
        return {"status": "failed", "message": f"the pristine copy could not be checked: {pristine_problem}", "models": []}
    rows = [_row(item, patched, pristine) for item in items]
    failed = [r for r in rows if r["status"] == "failed"]
    if not rows:
        return {"status": "passed", "message": "no stock model YAML found in this release", "models": []}
    if failed:
        message = "; ".join(r["message"] for r in failed)
        check = {"status": "failed", "message": message, "models": rows}
        if all(r.pop("environment", False) for r in list(failed)):
            check["cause"] = cause_record(ENVIRONMENT, "the pristine files fail to build the stock models the same "
                                                       "way", message)
        for row in rows:
            row.pop("environment", None)   # internal: not part of the report
        return check
    names = ", ".join(r["name"] for r in rows)
    return {"status": "passed", "message": f"{names}: same parameters and bit-identical outputs as the pristine files",
            "models": rows}
