"""Registry governance: promotion rules, the challenger's outcome, promote / rollback with an audit trail.

Rules live in one YAML file per task (`churnops/rules/<task>.yaml`). `evaluate_rules` returns each
rule's result; `decide_outcome` turns them into one outcome per challenger: `blocked` (every
failed rule listed), `awaiting approval`, `promoted`, `rejected` or `expired`, recorded as tags
on the MLflow model version (`outcome`, `rules`) and as an audit record in the prediction store.
`promote` and `rollback` move the `champion` alias (the one before stays addressable as
`previous`) and write audit records: rollback writes an intent record first, so an
interrupted rollback is visible.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from churnops.contract import load_any_contract
from churnops.model_line import resolved
from churnops.registry import alias_version, client
from churnops.settings import Settings, get_settings
from churnops.shadow_test import run_rule, shadow_pairs
from churnops.store.factory import open_store
from churnops.store.protocols import AuditStore

log = logging.getLogger(__name__)

RULES_DIR = Path(__file__).resolve().parent / "rules"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
BLOCKED, AWAITING, PROMOTED, REJECTED, EXPIRED = "blocked", "awaiting approval", "promoted", "rejected", "expired"
# the outcomes of a version that passed every rule: the only ones that hold `challenger` and that the
# servers may send canary traffic to (serving/model.py); blocked, rejected and expired never do
CANARY_OUTCOMES = (AWAITING, PROMOTED)
REFUSED_OUTCOMES = (BLOCKED, REJECTED, EXPIRED)
AWAITING_SINCE_TAG = "awaiting_since"  # epoch seconds a version began to await approval (churnops/approvals.py)
KNOWN_RULES = (
    "min_test_auc_roc",
    "max_calibration_error",
    "min_improvement_auc_roc",
    "require_onnx_parity",
    "require_contract",
    "max_latency_ms",
    # regression (churnops/rules/regression.yaml)
    "max_test_rmse",
    "min_test_r2",
    "max_share_off",
    "min_improvement_rmse",
    # image classification (churnops/rules/image_classification.yaml)
    "min_test_accuracy",
    "min_accuracy_under",
    "min_improvement_accuracy",
    "min_standard_accuracy",
    # promotion-stage (checked by `promote`, on labelled shadow traffic; churnops/shadow_test.py)
    "shadow_paired_test",
)
# rules a new version cannot be judged on at registration: it has no shadow traffic until it holds
# `challenger`. `evaluate_rules` checks them only when the evidence holds their numbers; `promote` does.
PROMOTION_RULES = ("shadow_paired_test",)
# improvement rules: (rule, compared metric, +1 when higher is better / -1 when lower is better)
IMPROVEMENT_RULES = (
    ("min_improvement_auc_roc", "auc_roc", 1.0),
    ("min_improvement_rmse", "rmse", -1.0),
    ("min_improvement_accuracy", "accuracy", 1.0),
)


@dataclass
class RuleResult:
    """One rule's verdict: the measured value against its limit."""

    name: str
    passed: bool
    value: float | bool | None
    limit: float | bool | None
    detail: str = ""


def load_rules(task: str = "binary_classification", path: str | Path | None = None) -> dict:
    """The rules of `task` (or of the YAML file `path`), checked for unknown names."""
    p = Path(path) if path else RULES_DIR / f"{task}.yaml"
    if not p.exists():
        raise FileNotFoundError(
            f"promotion rules {p} not found (tasks: {sorted(x.stem for x in RULES_DIR.glob('*.yaml'))})"
        )
    raw = yaml.safe_load(p.read_text()) or {}
    rules = raw.get("rules")
    if not isinstance(rules, dict):
        raise ValueError(f"promotion rules {p}: expected a mapping `rules:`")
    unknown = sorted(set(rules) - set(KNOWN_RULES))
    if unknown:
        raise ValueError(f"promotion rules {p}: unknown rule(s) {unknown}; known: {list(KNOWN_RULES)}")
    return rules


def evaluate_rules(rules: dict, evidence: dict) -> list[RuleResult]:
    """Each configured rule's result on `evidence`.

    evidence keys: test_auc_roc, calibration_error (classifiers), test_rmse, test_r2, share_off
    (regressions), test_accuracy, `sensitivity` {variation: accuracy} and `standard` {style: accuracy}
    (image classifiers), onnx_parity_passed, contract_passed, latency_ms_p95, and for the improvement
    rules a list `comparisons` of {"on": "test split" | "fresh slice", "challenger_<metric>",
    "champion_<metric>"} (empty: no champion), or `champion_error` when the champion could not be
    re-scored. An improvement is challenger minus champion for AUC-ROC and champion minus
    challenger for RMSE (positive: the challenger is better).
    """
    out: list[RuleResult] = []

    def limit_rule(name, value, limit, ok, what):
        if limit is None:
            return
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(RuleResult(name, False, None, limit, f"{what} not measured"))
        else:
            out.append(RuleResult(name, bool(ok(value, limit)), float(value), limit, f"{what} {value:.4f} vs {limit}"))

    limit_rule(
        "min_test_auc_roc",
        evidence.get("test_auc_roc"),
        rules.get("min_test_auc_roc"),
        lambda v, lim: v >= lim,
        "test AUC-ROC",
    )
    limit_rule(
        "max_calibration_error",
        evidence.get("calibration_error"),
        rules.get("max_calibration_error"),
        lambda v, lim: v <= lim,
        "calibration error (ECE)",
    )
    limit_rule(
        "max_test_rmse", evidence.get("test_rmse"), rules.get("max_test_rmse"), lambda v, lim: v <= lim, "test RMSE"
    )
    limit_rule("min_test_r2", evidence.get("test_r2"), rules.get("min_test_r2"), lambda v, lim: v >= lim, "test R²")
    limit_rule(
        "max_share_off",
        evidence.get("share_off"),
        rules.get("max_share_off"),
        lambda v, lim: v <= lim,
        "share of test predictions off by more than the tolerance",
    )
    limit_rule(
        "min_test_accuracy",
        evidence.get("test_accuracy"),
        rules.get("min_test_accuracy"),
        lambda v, lim: v >= lim,
        "test accuracy",
    )
    floors = (  # rule, its evidence table, what a row measures
        ("min_accuracy_under", "sensitivity", "accuracy under ISP variation {}"),  # the ISP sensitivity table
        ("min_standard_accuracy", "standard", "accuracy on standard images ({})"),  # PNG/JPEG renders of the test split
    )
    for rule, table, what in floors:
        for key, floor in (rules.get(rule) or {}).items():
            limit_rule(
                f"{rule}.{key}", (evidence.get(table) or {}).get(key), floor, lambda v, lim: v >= lim, what.format(key)
            )
    for rule, metric, sign in IMPROVEMENT_RULES:
        min_gain = rules.get(rule)
        if min_gain is None:
            continue
        if evidence.get("champion_error"):
            out.append(
                RuleResult(
                    rule, False, None, min_gain, f"champion could not be re-scored: {evidence['champion_error']}"
                )
            )
        elif not evidence.get("comparisons"):
            out.append(RuleResult(rule, True, None, min_gain, "no champion to beat"))
        else:
            parts, worst = [], None
            for c in evidence["comparisons"]:
                ch, champ = c.get(f"challenger_{metric}"), c.get(f"champion_{metric}")
                if ch is None or champ is None:
                    worst = float("nan")
                    parts.append(f"{c['on']}: {metric} not measured")
                    continue
                gain = sign * (float(ch) - float(champ))
                worst = gain if worst is None else min(worst, gain)
                parts.append(f"{c['on']}: {float(ch):.4f} vs champion {float(champ):.4f} ({gain:+.4f})")
            out.append(
                RuleResult(
                    rule, bool(worst >= min_gain), worst, min_gain, "; ".join(parts) + f"; need >= {min_gain:+.4f}"
                )
            )
    for name, key, what in (
        ("require_onnx_parity", "onnx_parity_passed", "ONNX parity"),
        ("require_contract", "contract_passed", "data contract"),
    ):
        if rules.get(name):
            ok = bool(evidence.get(key))
            out.append(
                RuleResult(
                    name,
                    ok,
                    ok,
                    True,
                    f"{what} {'passed' if ok else 'failed'}"
                    + (f": {evidence.get(key + '_detail')}" if evidence.get(key + "_detail") else ""),
                )
            )
    shadow_cfg = rules.get("shadow_paired_test")
    if shadow_cfg and "shadow_test" in evidence:  # at registration there is none yet: `promote` checks it
        out.append(shadow_rule(shadow_cfg, evidence["shadow_test"]))
    limit_rule(
        "max_latency_ms",
        evidence.get("latency_ms_p95"),
        rules.get("max_latency_ms"),
        lambda v, lim: v <= lim,
        "p95 single-row latency ms",
    )
    return out


def shadow_rule(config: dict, ev: dict) -> RuleResult:
    """Rule `shadow_paired_test` on its evidence (`churnops.shadow_test.run_rule`): passes only when the
    candidate's AUC is significantly higher than the champion's on the same labelled shadow requests."""
    alpha = float(config.get("alpha", 0.05))
    limit = f"alpha {alpha}, min_pairs {ev.get('min_pairs')}"
    if not ev.get("enough"):
        why = f": {ev['why']}" if ev.get("why") else ""
        return RuleResult(
            "shadow_paired_test",
            False,
            ev.get("n"),
            limit,
            f"not enough paired labels ({ev.get('n')} of {ev.get('min_pairs')}){why}",
        )
    ok = bool(ev.get("significant"))
    detail = (
        f"{ev['method']} of AUC-ROC on {ev['n']} labelled shadow pairs ({ev['n_positive']} positive): "
        f"candidate {ev['candidate']:.4f} vs champion {ev['champion']:.4f}, difference {ev['difference']:+.4f}, "
        f"{1 - alpha:.0%} interval [{ev['ci_low']:+.4f}, {ev['ci_high']:+.4f}], p = {ev['p_value']:.4g} "
        f"({'significant' if ok else 'not significant'} at alpha {alpha})"
    )
    return RuleResult("shadow_paired_test", ok, ev.get("difference"), limit, detail)


def shadow_evidence(s: Settings, version: str, config: dict, champion_version: str | None = None) -> dict:
    """Run the paired test for candidate `version` on the line's prediction log (shadow + champion
    predictions joined with feedback by request id); the rule's evidence."""
    days = config.get("window_days", 30)  # the pairs of the last `window_days` days (null: all of the log)
    start = None if days is None else time.time() - float(days) * 86400.0
    store = open_store(resolved(s))
    try:
        sample = shadow_pairs(store, str(version), start=start, champion_version=champion_version)
    finally:
        store.close()
    return run_rule(config, sample) | {"candidate_version": str(version), "champion_version": champion_version}


class PromotionRefused(RuntimeError):
    """A promotion-stage rule failed; `results` holds every promotion rule's result, `evidence` their numbers."""

    def __init__(self, version: str, results: list[RuleResult], evidence: dict):
        bad = "; ".join(f"{r.name}: {r.detail}" for r in failed(results))
        super().__init__(f"v{version} may not be promoted: {bad}")
        self.version, self.results, self.evidence = version, results, evidence


def promotion_check(s: Settings, version: str, rules: dict | None = None) -> tuple[list[RuleResult], dict]:
    """(results, evidence) of the promotion-stage rules (`PROMOTION_RULES`) for `version`; ([], {}) when
    none is configured. The champion compared is the one holding the alias now."""
    s = resolved(s)
    if rules is None:
        rules = load_rules(load_any_contract(s.dataset).task, path=s.rules_file)
    cfg = rules.get("shadow_paired_test")
    if not cfg:
        return [], {}
    champ = alias_version(s.model_name, CHAMPION, s)
    ev = {"shadow_test": shadow_evidence(s, version, cfg, champ.version if champ else None)}
    return evaluate_rules({k: rules.get(k) for k in PROMOTION_RULES}, ev), ev


def shadow_form_section(rules: dict, shadow: dict | None) -> list[str]:
    """Markdown lines for the approval form: the paired shadow test's evidence now (n, difference,
    interval, p) and that `promote` checks it again; [] when the rule is off."""
    cfg = rules.get("shadow_paired_test")
    if not cfg:
        return []
    lines = ["", f"**Promotion rule `shadow_paired_test`** (checked again when approved): {json.dumps(cfg)}", ""]
    if shadow is None:
        return lines + ["no shadow evidence yet"]
    r = shadow_rule(cfg, shadow)
    lines += ["| n pairs | difference | interval | p | result |", "|---|---|---|---|---|"]
    fmt = "{:+.4f}".format
    if shadow.get("enough"):
        lines.append(
            f"| {shadow['n']} | {fmt(shadow['difference'])} | [{fmt(shadow['ci_low'])}, {fmt(shadow['ci_high'])}] "
            f"| {shadow['p_value']:.4g} | {'pass' if r.passed else 'FAIL'} |"
        )
    else:
        lines.append(f"| {shadow.get('n')} | – | – | – | FAIL: {r.detail} |")
    return lines


def failed(results: list[RuleResult]) -> list[RuleResult]:
    return [r for r in results if not r.passed]


def results_json(results: list[RuleResult]) -> list[dict]:
    return [asdict(r) for r in results]


def actor() -> str:
    """Who acts: CHURNOPS_ACTOR, else the login name."""
    try:
        return os.environ.get("CHURNOPS_ACTOR") or getpass.getuser()
    except Exception:
        return "unknown"


# ---- audit ------------------------------------------------------------------------------------------


def record_audit(
    s: Settings,
    action: str,
    model: str,
    from_version: str | None,
    to_version: str | None,
    reason: str = "",
    rules: list[dict] | None = None,
    who: str | None = None,
    **extra,
) -> dict:
    """Append an audit record to the prediction store and tag the model version(s) it names."""
    s = resolved(s)  # the data set's own store
    rec = {
        "ts": time.time(),
        "actor": who or actor(),
        "action": action,
        "model": model,
        "from_version": from_version,
        "to_version": to_version,
        "reason": reason or "",
        "rules": rules or [],
        **extra,
    }
    store: AuditStore = open_store(s)
    try:
        rec = store.add_audit(rec)
    finally:
        store.close()
    tag = json.dumps(
        {k: rec[k] for k in ("ts", "actor", "action", "from_version", "to_version", "reason")}, default=str
    )
    for v in {x for x in (to_version, from_version) if x}:
        try:
            client(s).set_model_version_tag(model, str(v), f"audit.{rec['_id']}", tag[:5000])
        except Exception as exc:  # the store record is the trail; the tag is a convenience
            log.warning("could not tag %s v%s with the audit record: %s", model, v, exc)
    return rec


def set_outcome(
    s: Settings, version: str, outcome: str, results: list[RuleResult] | None = None, reason: str = ""
) -> None:
    """A new version's outcome (and its rule results) as tags on its model version; the alias
    `challenger` follows it: set for `awaiting approval` (every rule passed), removed from the version
    when it is blocked, rejected or expired."""
    s = resolved(s)
    c = client(s)
    c.set_model_version_tag(s.model_name, str(version), "outcome", outcome)
    if outcome == AWAITING:
        c.set_model_version_tag(s.model_name, str(version), AWAITING_SINCE_TAG, f"{time.time():.3f}")
        c.set_registered_model_alias(s.model_name, CHALLENGER, str(version))
    elif outcome in REFUSED_OUTCOMES:
        held = alias_version(s.model_name, CHALLENGER, s)
        if held is not None and str(held.version) == str(version):
            c.delete_registered_model_alias(s.model_name, CHALLENGER)
    if results is not None:
        c.set_model_version_tag(s.model_name, str(version), "rules", json.dumps(results_json(results))[:5000])
        bad = failed(results)
        if bad:
            c.set_model_version_tag(s.model_name, str(version), "failed_rules", ", ".join(r.name for r in bad))
    if reason:
        c.set_model_version_tag(s.model_name, str(version), "outcome_reason", reason[:500])


# ---- promote / rollback -------------------------------------------------------------------------------


def promote(
    version: str,
    reason: str,
    s: Settings | None = None,
    who: str | None = None,
    rules: list[dict] | None = None,
    action: str = "promote",
    check: bool = True,
) -> str | None:
    """Make `version` the champion (the old one becomes `previous`); audited. Returns the old version.

    With `check`, the promotion-stage rules (`shadow_paired_test`) are evaluated first: a failure
    raises `PromotionRefused` (audited as `promotion refused`, nothing moved); their results and
    evidence join the promotion's audit record."""
    s = resolved(s or get_settings())
    c = client(s)
    c.get_model_version(s.model_name, str(version))  # fails clearly when the version does not exist
    gate, gate_evidence = promotion_check(s, str(version)) if check else ([], {})
    if failed(gate):
        champ = alias_version(s.model_name, CHAMPION, s)
        refusal = PromotionRefused(str(version), gate, gate_evidence)
        record_audit(
            s,
            "promotion refused",
            s.model_name,
            champ.version if champ else None,
            str(version),
            str(refusal),
            (rules or []) + results_json(gate),
            who,
            **gate_evidence,
        )
        raise refusal
    if gate:
        rules = [r for r in (rules or []) if r.get("name") not in PROMOTION_RULES] + results_json(gate)
    current = alias_version(s.model_name, CHAMPION, s)
    old = current.version if current else None
    if old == str(version):
        raise ValueError(f"{s.model_name} v{version} is already the champion")
    if old is not None:
        c.set_registered_model_alias(s.model_name, PREVIOUS, old)
        c.set_model_version_tag(s.model_name, str(version), "previous_champion", old)
    c.set_registered_model_alias(s.model_name, CHAMPION, str(version))
    c.set_model_version_tag(s.model_name, str(version), "outcome", PROMOTED)
    held = alias_version(s.model_name, CHALLENGER, s)
    if held is not None and str(held.version) == str(version):  # the challenger became the champion
        c.delete_registered_model_alias(s.model_name, CHALLENGER)
    record_audit(s, action, s.model_name, old, str(version), reason, rules, who, **gate_evidence)
    log.info("%s v%s is champion (was v%s): %s", s.model_name, version, old, reason)
    return old


def rollback(
    reason: str, version: str | None = None, s: Settings | None = None, who: str | None = None
) -> tuple[str, str]:
    """Move `champion` to `version` (default: alias `previous`, else the version the champion
    replaced); an intent record is written before and an audit record after. Returns (from, to).
    """
    s = resolved(s or get_settings())
    c = client(s)
    current = alias_version(s.model_name, CHAMPION, s)
    if current is None:
        raise LookupError(f"{s.model_name} has no {CHAMPION}: nothing to roll back")
    target = str(version) if version else None
    if target is None:
        prev = alias_version(s.model_name, PREVIOUS, s)
        target = (
            prev.version
            if prev is not None and prev.version != current.version
            else current.tags.get("previous_champion")
        )
    if not target:
        older = sorted(
            (
                int(v.version)
                for v in c.search_model_versions(f"name='{s.model_name}'")
                if int(v.version) < int(current.version)
            )
        )
        if not older:
            raise LookupError(f"{s.model_name} v{current.version} is the only candidate: nothing to roll back to")
        target = str(older[-1])
    if target == current.version:
        raise ValueError(f"{s.model_name} v{target} is already the champion")
    c.get_model_version(s.model_name, target)  # fails clearly when the version does not exist
    who = who or actor()
    record_audit(s, "rollback-intent", s.model_name, current.version, target, reason, who=who)
    c.set_registered_model_alias(s.model_name, PREVIOUS, current.version)
    c.set_registered_model_alias(s.model_name, CHAMPION, target)
    c.set_model_version_tag(s.model_name, target, "rolled_back_from", current.version)
    c.set_model_version_tag(s.model_name, current.version, "outcome", "rolled back")
    record_audit(s, "rollback", s.model_name, current.version, target, reason, who=who)
    return current.version, target
