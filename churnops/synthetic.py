"""Seeded generator of SYNTHETIC credit-card customers with the BankChurners raw schema.

Used when no `DATA` is given (a fresh clone has no real file). Marginals follow the public
data set's published shape; churn follows a plausible mechanism: customers who transact less
(count and amount), carry a small revolving balance, were inactive or contacted more, hold few
products, and whose activity fell from Q1 to Q4 churn more. About 16 % churn. Every frame it
makes is synthetic: callers tag runs and logs `data_source=synthetic`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEAK_1 = (
    "Naive_Bayes_Classifier_Attrition_Flag_Card_Category_Contacts_Count_12_mon_"
    "Dependent_count_Education_Level_Months_Inactive_12_mon_1"
)
LEAK_2 = LEAK_1[:-1] + "2"

EDUCATION = ["Graduate", "High School", "Unknown", "Uneducated", "College", "Post-Graduate", "Doctorate"]
EDUCATION_P = [0.309, 0.199, 0.150, 0.147, 0.100, 0.051, 0.044]
MARITAL = ["Married", "Single", "Unknown", "Divorced"]
MARITAL_P = [0.463, 0.389, 0.074, 0.074]
INCOME = ["Less than $40K", "$40K - $60K", "$80K - $120K", "$60K - $80K", "Unknown", "$120K +"]
INCOME_P = [0.352, 0.177, 0.152, 0.138, 0.110, 0.071]
CARD = ["Blue", "Silver", "Gold", "Platinum"]
CARD_P = [0.932, 0.055, 0.011, 0.002]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_customers(n: int = 10_127, seed: int = 42, churn_rate: float = 0.16, signal: float = 2.5) -> pd.DataFrame:
    """Return `n` synthetic customers as a raw BankChurners-shaped frame (same 23 columns).

    `signal` scales the churn mechanism's log-odds: higher makes churn easier to predict.
    """
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(46, 8, n).round(), 26, 73).astype(int)
    gender = rng.choice(["F", "M"], n, p=[0.53, 0.47])
    dependents = np.clip(rng.binomial(5, 0.47, n), 0, 5)
    education = rng.choice(EDUCATION, n, p=EDUCATION_P)
    marital = rng.choice(MARITAL, n, p=MARITAL_P)
    income = rng.choice(INCOME, n, p=INCOME_P)
    card = rng.choice(CARD, n, p=CARD_P)
    months_on_book = np.clip((age - 26) * 0.45 + rng.normal(24, 6, n), 13, 56).round().astype(int)
    relationships = rng.integers(1, 7, n)
    inactive = np.clip(rng.poisson(2.3, n), 0, 6)
    contacts = np.clip(rng.poisson(2.4, n), 0, 6)

    income_level = (
        pd.Series(income)
        .map({"Less than $40K": 0, "$40K - $60K": 1, "$60K - $80K": 2, "$80K - $120K": 3, "$120K +": 4, "Unknown": 1.5})
        .to_numpy()
    )
    card_boost = pd.Series(card).map({"Blue": 0.0, "Silver": 0.9, "Gold": 1.3, "Platinum": 1.6}).to_numpy()
    log_limit = 8.1 + 0.35 * income_level + card_boost + 0.25 * (gender == "M") + rng.normal(0, 0.55, n)
    credit_limit = np.clip(np.exp(log_limit), 1438.3, 34516.0).round(1)
    revolving = np.where(rng.random(n) < 0.24, 0.0, np.clip(rng.normal(1450, 600, n), 0, 2517)).round()
    revolving = np.minimum(revolving, credit_limit)
    open_to_buy = (credit_limit - revolving).round(1)
    utilization = np.round(revolving / credit_limit, 3)

    # latent engagement drives both behaviour and churn
    engagement = rng.normal(0, 1, n)
    trans_ct = np.clip(64 + 18 * engagement - 2.5 * relationships + rng.normal(0, 12, n), 10, 139).round().astype(int)
    trans_amt = np.clip(trans_ct**1.55 * np.exp(rng.normal(0.9, 0.35, n)), 510, 18484).round()
    ct_chng = np.clip(rng.gamma(9, 0.08, n) + 0.12 * engagement, 0.0, 3.714).round(3)
    amt_chng = np.clip(rng.gamma(12, 0.063, n) + 0.08 * engagement, 0.0, 3.397).round(3)

    logit = (
        -1.0
        - 0.055 * (trans_ct - 64)
        - 0.00022 * (trans_amt - 4400)
        - 0.0011 * (revolving - 1160)
        + 0.42 * (inactive - 2.3)
        + 0.45 * (contacts - 2.4)
        - 0.38 * (relationships - 3.8)
        - 2.6 * (ct_chng - 0.71)
        - 1.1 * (amt_chng - 0.76)
        + 0.15 * (gender == "F")
    )
    logit = signal * logit  # signal 2.5: untuned XGBoost reaches AUC about 0.96 (real data: 0.993)
    # shift the intercept so the expected churn rate matches `churn_rate`
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logit + mid).mean() > churn_rate:
            hi = mid
        else:
            lo = mid
    p_churn = _sigmoid(logit + lo)
    churn = rng.random(n) < p_churn
    leak = np.clip(np.where(churn, 0.995, 0.0002) + rng.normal(0, 1e-4, n), 0, 1)

    return pd.DataFrame(
        {
            "CLIENTNUM": rng.choice(np.arange(708_082_083, 828_343_083), n, replace=False),
            "Attrition_Flag": np.where(churn, "Attrited Customer", "Existing Customer"),
            "Customer_Age": age,
            "Gender": gender,
            "Dependent_count": dependents,
            "Education_Level": education,
            "Marital_Status": marital,
            "Income_Category": income,
            "Card_Category": card,
            "Months_on_book": months_on_book,
            "Total_Relationship_Count": relationships,
            "Months_Inactive_12_mon": inactive,
            "Contacts_Count_12_mon": contacts,
            "Credit_Limit": credit_limit,
            "Total_Revolving_Bal": revolving.astype(int),
            "Avg_Open_To_Buy": open_to_buy,
            "Total_Amt_Chng_Q4_Q1": amt_chng,
            "Total_Trans_Amt": trans_amt.astype(int),
            "Total_Trans_Ct": trans_ct,
            "Total_Ct_Chng_Q4_Q1": ct_chng,
            "Avg_Utilization_Ratio": utilization,
            LEAK_1: leak.round(6),
            LEAK_2: (1 - leak).round(6),
        }
    )
