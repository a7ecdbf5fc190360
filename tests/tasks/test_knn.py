"""kNN probing against scikit-learn and the paper's tie rule."""

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from brainfm.analysis.knn import knn_predict


def test_matches_sklearn_cosine_knn_for_odd_k_binary():
    rng = np.random.default_rng(0)
    xtr, xte = rng.normal(size=(80, 6)), rng.normal(size=(30, 6))
    ytr = (xtr[:, 0] > 0).astype(int)
    ours = knn_predict(xtr, ytr, xte, ks=[1, 3, 5, 11])
    for k, pred in ours.items():
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(xtr, ytr).predict(xte)
        np.testing.assert_array_equal(pred, ref)


def test_ties_broken_by_summed_similarity():
    # query at angle 0; class 0 neighbours at similarities 0.99 and 0.2, class 1 at 0.9 and 0.8
    angles = np.arccos([0.99, 0.2, 0.9, 0.8])
    train = np.stack([np.cos(angles), np.sin(angles)], 1)
    y = np.array([0, 0, 1, 1])
    pred = knn_predict(train, y, np.array([[1.0, 0.0]]), ks=[4, 1])
    assert pred[4][0] == 1  # 2 vs 2 votes; summed similarity 1.7 > 1.19
    assert pred[1][0] == 0


def test_k_larger_than_bank_is_clipped():
    pred = knn_predict(np.eye(3), np.array([0, 1, 1]), np.eye(3), ks=[50])
    assert pred[50].tolist() == [1, 1, 1]
