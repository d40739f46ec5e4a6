"""The promotion rule `shadow_paired_test`: a paired bootstrap of the AUC difference on labelled shadow pairs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from churnops.governance import evaluate_rules, shadow_rule
from churnops.shadow_test import PairedSample, paired_bootstrap_auc, run_rule, shadow_pairs

CFG = {"alpha": 0.05, "min_pairs": 200, "resamples": 500, "seed": 7}  # the rule's default is 2,000 resamples


def scores(n: int, noise_champion: float, noise_candidate: float, seed: int = 3):
    """Labels and two models' scores: y plus Gaussian noise (less noise: a better model)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    return y, y + rng.normal(0, noise_champion, n), y + rng.normal(0, noise_candidate, n)


def pairwise_auc(y, s) -> float:
    """AUC as the share of (positive, negative) pairs ranked right, ties one half (no ranks)."""
    x, z = s[y == 1][:, None], s[y == 0][None, :]
    return float(((x > z) + 0.5 * (x == z)).mean())


def plain_bootstrap(y, a, b, resamples, seed, alpha):
    """The same resampling written out with a pairwise AUC: (difference, low, high, p)."""
    n = len(y)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    diffs = []
    for ix in draws:
        if 0 < y[ix].sum() < n:
            diffs.append(pairwise_auc(y[ix], b[ix]) - pairwise_auc(y[ix], a[ix]))
    diffs = np.array(diffs)
    far = min((diffs <= 0).sum(), (diffs >= 0).sum())
    lo, hi = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return pairwise_auc(y, b) - pairwise_auc(y, a), lo, hi, min(1.0, 2 * (1 + far) / (1 + len(diffs)))


def delong(y, a, b):
    """DeLong's test of AUC(b) - AUC(a) (two-sided): (difference, standard error, p)."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in (a, b):
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum() + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    diff = roc_auc_score(y, b) - roc_auc_score(y, a)
    se = float(np.sqrt(var))
    return diff, se, float(2 * norm.sf(abs(diff) / se))


@pytest.mark.parametrize(
    "noise_candidate, passes",
    [(0.45, True), (0.9, False), (1.8, False)],
    ids=["clearly-better", "equal", "worse"],
)
def test_known_answers_both_ways_against_independent_computations(noise_candidate, passes):
    y, a, b = scores(600, 0.9, noise_candidate)
    t = paired_bootstrap_auc(y, a, b, resamples=500, seed=7, alpha=0.05)
    # the same bootstrap written out with a pairwise AUC: identical numbers; sklearn's AUC on all pairs
    diff, lo, hi, p = plain_bootstrap(y, a, b, 500, 7, 0.05)
    assert t.difference == pytest.approx(diff, abs=1e-12)
    assert t.difference == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a), abs=1e-12)
    assert (t.ci_low, t.ci_high, t.p_value) == pytest.approx((lo, hi, p), abs=1e-9)
    # DeLong (an independent method): the interval and the verdict agree
    d_diff, se, d_p = delong(y, a, b)
    assert t.ci_low == pytest.approx(d_diff - 1.96 * se, abs=0.02)
    assert t.ci_high == pytest.approx(d_diff + 1.96 * se, abs=0.02)
    assert (d_p < 0.05 and d_diff > 0) == passes
    assert t.significant is passes
    result = evaluate_rules({"shadow_paired_test": CFG}, {"shadow_test": run_rule(CFG, PairedSample([], y, a, b))})
    assert [r.name for r in result] == ["shadow_paired_test"] and result[0].passed is passes
    if passes:
        assert t.p_value < 0.01 and t.ci_low > 0
    else:
        assert t.p_value >= 0.05 or t.difference <= 0


def test_the_request_ids_are_paired_sample_of_enough_size():
    y, a, b = scores(150, 0.9, 0.3)
    ev = run_rule(CFG, PairedSample([f"r{i}" for i in range(150)], y, a, b))
    r = shadow_rule(CFG, ev)
    assert not r.passed and "not enough paired labels (150 of 200)" in r.detail
    one_class = run_rule({"min_pairs": 3}, PairedSample(["a", "b", "c"], np.zeros(3), np.ones(3), np.ones(3)))
    assert not shadow_rule(CFG, one_class).passed and "one class" in shadow_rule(CFG, one_class).detail


def test_the_rule_is_left_to_promotion_when_there_is_no_shadow_evidence():
    assert evaluate_rules({"shadow_paired_test": CFG}, {}) == []


def test_shipped_rules_files_name_the_rule(tmp_path):
    from churnops.governance import load_rules

    p = tmp_path / "rules.yaml"
    p.write_text(yaml.safe_dump({"rules": {"shadow_paired_test": CFG}}))
    assert load_rules(path=p)["shadow_paired_test"]["min_pairs"] == 200
    assert "shadow_paired_test" in load_rules("binary_classification")  # shipped, off (null) by default


def test_pairs_join_champion_and_shadow_by_request_id_with_labels(tmp_path):
    from churnops.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "p.db")

    def rec(i, rid, route, version, p, ts=100.0):
        return {"_id": f"e{i}", "ts": ts, "request_id": rid, "route": route, "model_version": version, "probability": p}

    store.insert_predictions(
        [
            rec(1, "a", "champion", "1", 0.1),
            rec(2, "a", "shadow", "2", 0.2),
            rec(3, "b", "champion", "1", 0.3),
            rec(4, "b", "shadow", "2", 0.4),
            rec(5, "c", "champion", "1", 0.5),  # no shadow: unpaired
            rec(6, "d", "shadow", "2", 0.6),  # no champion: unpaired
            rec(7, "e", "champion", "1", 0.7),
            rec(8, "e", "shadow", "3", 0.8),  # another candidate version
            rec(9, "f", "champion", "1", 0.9),
            rec(10, "f", "shadow", "2", 0.95),  # paired, but no label yet
        ]
    )
    for rid, y in (("a", 1), ("b", 0), ("c", 1), ("d", 1), ("e", 0)):
        store.add_feedback(rid, y, 200.0)
    s = shadow_pairs(store, "2")
    assert s.request_ids == ["a", "b"]
    assert s.y.tolist() == [1.0, 0.0] and s.champion.tolist() == [0.1, 0.3] and s.candidate.tolist() == [0.2, 0.4]
    assert shadow_pairs(store, "3").request_ids == ["e"]
    store.close()


@pytest.mark.integration
def test_promote_checks_the_rule_and_audits_its_evidence(mlflow_uri, tmp_path):
    """On a real registry: too few pairs -> refused and audited; a clearly better candidate -> promoted,
    the evidence (n, difference, interval, p) in the audit record."""
    from mlflow import MlflowClient

    from churnops.governance import PromotionRefused, promote
    from churnops.settings import Settings
    from churnops.store.sqlite import SQLiteStore

    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"task": "binary_classification", "rules": {"shadow_paired_test": CFG}}))
    s = Settings(
        _env_file=None,
        state_dir=tmp_path / "state",
        mlflow_tracking_uri=mlflow_uri,
        model_name="shadow-rule-test",
        experiment_name="shadow-rule-test",
        training_deployment="x/y",
        rules_file=rules,
    )
    c = MlflowClient(mlflow_uri, mlflow_uri)
    c.create_registered_model(s.model_name)
    run = c.create_run(c.create_experiment("shadow-rule-test"))
    for _ in range(2):
        c.create_model_version(s.model_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    c.set_registered_model_alias(s.model_name, "champion", "1")

    y, a, b = scores(400, 0.9, 0.45, seed=11)
    now = time.time()  # within the rule's window (window_days, default 30)
    store = SQLiteStore(s.state_dir / "predictions.db")

    def log(rows):
        store.insert_predictions(
            [
                {
                    "_id": f"{route}{i}",
                    "ts": now - 60.0,
                    "request_id": f"r{i}",
                    "route": route,
                    "model_version": v,
                    "probability": p,
                }
                for i in rows
                for route, v, p in (("champion", "1", float(a[i])), ("shadow", "2", float(b[i])))
            ]
        )
        store.add_feedback_many([{"request_id": f"r{i}", "outcome": int(y[i]), "ts": now - 30.0} for i in rows])

    log(range(50))
    with pytest.raises(PromotionRefused, match=r"not enough paired labels \(50 of 200\)"):
        promote("2", "try early", s)
    assert c.get_model_version_by_alias(s.model_name, "champion").version == "1"
    log(range(50, 400))
    promote("2", "significantly better on shadow traffic", s)
    assert c.get_model_version_by_alias(s.model_name, "champion").version == "2"
    audit = store.find_audit(10, model=s.model_name)
    done, refused = audit[0], audit[1]
    assert refused["action"] == "promotion refused" and refused["shadow_test"]["n"] == 50
    ev = done["shadow_test"]
    assert done["action"] == "promote" and ev["n"] == 400 and ev["significant"] is True
    order = np.argsort([f"r{i}" for i in range(400)])  # the pairs come joined in request id order
    expected = plain_bootstrap(y[order], a[order], b[order], 500, 7, 0.05)
    assert (ev["difference"], ev["ci_low"], ev["ci_high"], ev["p_value"]) == pytest.approx(expected, abs=1e-9)
    assert any(r["name"] == "shadow_paired_test" and r["passed"] for r in done["rules"])
    store.close()


def test_the_approval_form_shows_the_evidence():
    from churnops.governance import shadow_form_section

    y, a, b = scores(600, 0.9, 0.45)
    ev = run_rule(CFG, PairedSample([], y, a, b))
    text = "\n".join(shadow_form_section({"shadow_paired_test": CFG}, ev))
    assert (
        f"| 600 | {ev['difference']:+.4f} | [{ev['ci_low']:+.4f}, {ev['ci_high']:+.4f}] | {ev['p_value']:.4g} | pass |"
        in text
    )
    few = "\n".join(shadow_form_section({"shadow_paired_test": CFG}, {"n": 12, "min_pairs": 200, "enough": False}))
    assert "not enough paired labels (12 of 200)" in few
    assert shadow_form_section({"shadow_paired_test": None}, ev) == []


def test_monitoring_windows_leave_shadow_mirrors_out(tmp_path):
    from churnops.contract import load_contract
    from churnops.monitoring.window import load_window
    from churnops.store.sqlite import SQLiteStore

    contract = load_contract("bank_churners")
    store = SQLiteStore(tmp_path / "w.db")
    store.insert_predictions(
        [
            {
                "_id": f"{route}{i}",
                "ts": 50.0 + i,
                "request_id": f"r{i}",
                "route": route,
                "model_version": "1",
                "probability": 0.5,
                "decision": 1,
                "features": contract.example,
            }
            for i in range(5)
            for route in ("champion", "shadow")
        ]
    )
    df = load_window(store, contract, 0.0, 100.0)
    assert len(df) == 5 and set(df["route"]) == {"champion"}
    store.close()
