"""Permutation importance and decision rules, against known truths and scikit-learn."""

import keras
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.inspection import permutation_importance as sk_permutation_importance

from sklearn.tree import DecisionTreeClassifier

import tb_explain as tbx


def _two_feature_models():
    """A regressor and a classifier whose output depends on features 2 and 7 only."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10)).astype("float32")
    w = np.zeros((10, 1), "float32")
    w[2], w[7] = 2.0, -1.0
    regressor = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    regressor.layers[0].set_weights([w, np.zeros(1, "float32")])
    regressor.compile(loss="mse")
    classifier = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, activation="sigmoid")])
    classifier.layers[0].set_weights([4 * w, np.zeros(1, "float32")])
    classifier.compile(loss="binary_crossentropy")
    return x, (x @ w)[:, 0], regressor, classifier


def test_the_two_features_the_output_depends_on_rank_first():
    x, target, regressor, classifier = _two_feature_models()
    for model, y in ((regressor, target), (classifier, (target > 0).astype("float32"))):
        result = tbx.permutation_importance(model, x, y, repeats=4, seed=1)
        assert result.importances.shape == (10, 4)
        assert set(result.ranking()[:2]) == {2, 7}
        others = [i for i in range(10) if i not in (2, 7)]
        np.testing.assert_array_equal(result.importances[others], 0.0)  # never changes output
        assert result.importances_mean[2] > result.importances_mean[7] > 0.05
        np.testing.assert_allclose(result.importances_mean, result.importances.mean(1))
        np.testing.assert_allclose(result.importances_std, result.importances.std(1))
    # R2: the baseline is exact, and permuting feature 2 costs about 2 * var share
    r2 = tbx.permutation_importance(regressor, x, target, repeats=20)
    assert r2.baseline_score == pytest.approx(1.0)
    share = 4 * x[:, 2].var() / target.var()
    assert r2.importances_mean[2] == pytest.approx(2 * share, rel=0.15)


class _Wrapped(ClassifierMixin, BaseEstimator):
    """A fitted Keras classifier as a scikit-learn estimator (for its permutation_importance)."""

    def __init__(self, model=None):
        self.model = model

    def fit(self, x, y):
        self.classes_ = np.arange(3)
        return self

    def predict(self, x):
        return np.argmax(self.model.predict(x, verbose=0, batch_size=4096), axis=1)


def test_agrees_with_scikit_learn_within_noise():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)).astype("float32")
    y = np.argmax(x[:, :3] * [1.5, 1.0, 0.5], axis=1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, verbose=0, batch_size=32)
    ours = tbx.permutation_importance(model, x, y, repeats=30, seed=0)
    theirs = sk_permutation_importance(_Wrapped(model).fit(x, y), x, y, n_repeats=30,
                                       random_state=0)
    assert ours.baseline_score == pytest.approx(_Wrapped(model).fit(x, y).score(x, y))
    # two independent estimates of one mean: within 4 standard errors of their difference
    se = np.sqrt((ours.importances_std ** 2 + theirs.importances_std ** 2) / 30) + 1e-3
    assert np.all(np.abs(ours.importances_mean - theirs.importances_mean) < 4 * se)
    assert list(ours.ranking()[:3]) == list(np.argsort(-theirs.importances_mean)[:3])


def test_loss_metric_callable_and_groups():
    x, target, regressor, _ = _two_feature_models()
    loss = tbx.permutation_importance(regressor, x, target, metric="loss", repeats=3)
    assert loss.baseline_score == pytest.approx(0.0, abs=1e-10)
    # MSE after permuting feature 2: E[(2 (x2' - x2))^2] = 8 var(x2), averaged over permutations
    assert loss.importances_mean[2] == pytest.approx(8 * x[:, 2].var(), rel=0.2)
    mae = tbx.permutation_importance(regressor, x, target, repeats=3,
                                     metric=lambda t, p: -np.mean(np.abs(t - p[:, 0])))
    assert set(mae.ranking()[:2]) == {2, 7}
    grouped = tbx.permutation_importance(regressor, x, target, repeats=3,
                                         groups={"pair": [2, 7]},
                                         feature_names=[f"f{i}" for i in range(10)])
    assert grouped.names[0] == "pair" and len(grouped.names) == 9 and "f2" not in grouped.names
    single = tbx.permutation_importance(regressor, x, target, repeats=3)
    assert grouped.importances_mean[0] > single.importances_mean[2]  # both at once cost more


def test_rules_recover_a_known_rule_and_reproduce_fidelity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 10)).astype("float32")
    model = keras.Sequential([keras.Input((10,)), keras.layers.Lambda(
        lambda t: keras.ops.sigmoid(80 * (t[:, 2:3] - 0.5)) * keras.ops.sigmoid(-80 * t[:, 7:8]))])
    model.compile(loss="binary_crossentropy")
    names = [f"f{i}" for i in range(10)]
    result = tbx.extract_rules(model, x, feature_names=names, class_names=["no", "yes"],
                               max_depth=2)
    yes = [r for r in result.rules if r.prediction == "yes"]
    assert len(yes) == 1
    conditions = {(c.feature, c.operator): c.threshold for c in yes[0].conditions}
    assert conditions[("f2", ">")] == pytest.approx(0.5, abs=0.1)
    assert conditions[("f7", "<=")] == pytest.approx(0.0, abs=0.1)
    truth = (x[:, 2] > 0.5) & (x[:, 7] <= 0)
    assert yes[0].support == pytest.approx(truth.mean(), abs=0.03)
    assert sum(r.support for r in result.rules) == pytest.approx(1.0)
    model_says = (model.predict(x, verbose=0)[:, 0] >= 0.5).astype(int)
    held = result.holdout
    rest = np.setdiff1d(np.arange(len(x)), held)
    check = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x[rest], model_says[rest])
    assert result.fidelity == pytest.approx(np.mean(check.predict(x[held]) == model_says[held]))
    np.testing.assert_array_equal(result.predict(x), DecisionTreeClassifier(
        max_depth=2, random_state=0).fit(x, model_says).predict(x))
    assert result.fidelity > 0.95
    line = next(line for line in result.text.splitlines() if "THEN yes" in line)
    assert line.startswith(f"{result.rules.index(yes[0]) + 1}. IF f2 > ") and " AND f7 <= " in line


def test_tabular_callbacks_log_what_the_functions_compute(tmp_path, read_run):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4)).astype("float32")
    y = (x[:, 0] - x[:, 1] > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    names = ["alpha", "beta", "gamma", "delta"]
    callbacks = tbx.explain(tmp_path, data=(x, y), feature_names=names, repeats=3, steps=16,
                            class_names=["neg", "pos"])
    kinds = [type(c).__name__ for c in callbacks]
    assert kinds.index("IntegratedGradients") < kinds.index("FeatureImportance")
    assert "DecisionRules" in kinds
    model.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
    run = read_run(tmp_path)
    expected = tbx.permutation_importance(model, x, y, repeats=3, feature_names=names)
    for name, value in zip(expected.names, expected.importances_mean):
        assert run.value(f"importance/{name}") == pytest.approx(value, abs=1e-6)
    ranking = run.text("importance/ranking")
    assert "IG rank" in ranking
    top = expected.names[expected.ranking()[0]]
    assert f"| 1 | {top} |" in ranking
    rules = tbx.extract_rules(model, x, feature_names=names, class_names=["neg", "pos"])
    assert run.value("rules/fidelity") == pytest.approx(rules.fidelity)
    assert run.value("rules/leaves") == len(rules.rules)
    assert rules.text in run.text("rules/text")


def test_bad_tabular_input_is_refused_before_training(tmp_path):
    images = np.zeros((8, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match=r"2-D float tables.*not 4-D inputs"):
        tbx.FeatureImportance(tmp_path, (images, np.zeros(8)))
    with pytest.raises(ValueError, match=r"token ids"):
        tbx.DecisionRules(tmp_path, np.zeros((8, 5), "int32"))
    with pytest.raises(ValueError, match=r"FeatureImportance: `data` has no labels"):
        tbx.FeatureImportance(tmp_path, np.zeros((8, 5), "float32"))
    with pytest.raises(ValueError, match=r"`feature_names` has 2 names but input 'input' has 5"):
        tbx.FeatureImportance(tmp_path, (np.zeros((8, 5), "float32"), np.zeros(8)),
                              feature_names=["a", "b"])
    x, target, regressor, _ = _two_feature_models()
    with pytest.raises(ValueError, match=r"`groups\['g'\]` must list column indices in \[0, 10\)"):
        tbx.permutation_importance(regressor, x, target, groups={"g": [3, 12]})


def test_tabular_callbacks_explain_every_output_of_a_multi_output_model(tmp_path, read_run):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(160, 5)).astype("float32")
    labels = {"flag": (x[:, 1] > 0).astype("float32"), "amount": (3 * x[:, 4]).astype("float32")}
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,))
    h = keras.layers.Dense(8, activation="tanh")(inp)
    model = keras.Model(inp, {"flag": keras.layers.Dense(1, activation="sigmoid", name="flag")(h),
                              "amount": keras.layers.Dense(1, name="amount")(h)})
    model.compile("adam", {"flag": "binary_crossentropy", "amount": "mse"})
    model.fit(x, labels, epochs=2, verbose=0, callbacks=[
        tbx.FeatureImportance(tmp_path, (x, labels), repeats=2),
        tbx.DecisionRules(tmp_path, x, class_names={"flag": ["no", "yes"]})])
    run = read_run(tmp_path)
    for key in ("flag", "amount"):
        expected = tbx.permutation_importance(model, x, labels[key], repeats=2, output=key)
        for name, value in zip(expected.names, expected.importances_mean):
            assert run.value(f"importance/{key}/{name}") == pytest.approx(value, abs=1e-6)
        rules = tbx.extract_rules(model, x, output=key,
                                  class_names=["no", "yes"] if key == "flag" else None)
        assert run.value(f"rules/{key}/fidelity") == pytest.approx(rules.fidelity)
    assert "THEN yes" in run.text("rules/flag/text") or "THEN no" in run.text("rules/flag/text")


class _Scored(BaseEstimator):
    """A fitted Keras model as a scikit-learn estimator, for its scorers:
    `predict` is the decision (class index, or the value), `predict_proba`
    the probabilities (binary sigmoid outputs as two columns)."""

    def __init__(self, model=None, classes=None):
        self.model = model
        self.classes = classes

    def fit(self, x, y):
        if self.classes is not None:
            self.classes_ = np.arange(self.classes)
        return self

    @property
    def _estimator_type(self):
        return "classifier" if self.classes is not None else "regressor"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = self._estimator_type
        return tags

    def _outputs(self, x):  # a direct call: scikit-learn calls it once per permutation
        return keras.ops.convert_to_numpy(self.model(np.asarray(x, np.float32), training=False))

    def predict_proba(self, x):
        p = self._outputs(x)
        return np.concatenate([1 - p, p], axis=1) if p.shape[1] == 1 else p

    def predict(self, x):
        if self.classes is None:
            return self._outputs(x)[:, 0]
        return np.argmax(self.predict_proba(x), axis=1)


@pytest.fixture(scope="module")
def cancer_split():
    """Breast cancer, standardized, 455 rows to fit and 114 held out, and an MLP."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    x_fit, x_out, y_fit, y_out = train_test_split(x, y, test_size=114, random_state=0,
                                                  stratify=y)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_fit, y_fit, epochs=20, verbose=0, batch_size=32)
    return model, x_fit, x_out, y_fit, y_out


def test_rules_predict_labels_and_fidelity_matches_scikit_learn(cancer_split):
    model, x_fit, x_out, _, _ = cancer_split
    label_fit = model.predict(x_fit, verbose=0).argmax(1)
    label_out = model.predict(x_out, verbose=0).argmax(1)
    rules = tbx.extract_rules(model, x_fit, max_depth=3)
    predicted = rules.predict(x_out)
    assert predicted.dtype.kind == "i"  # labels as the model's are, not strings
    ours = np.mean(predicted == label_out)
    # scikit-learn's CART with the same seed (ties between splits are broken
    # at random: an unseeded tree can differ from run to run)
    plain = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x_fit, label_fit)
    theirs = np.mean(plain.predict(x_out) == label_out)
    assert ours == theirs > 0.8
    # class names show in the rules, never in predict
    named = tbx.extract_rules(model, x_fit, max_depth=3, class_names=["malignant", "benign"])
    np.testing.assert_array_equal(named.predict(x_out), predicted)
    assert {r.prediction for r in named.rules} <= {"malignant", "benign"}
    # a regressor's rules predict values
    regressor = keras.Sequential([keras.Input((30,)), keras.layers.Dense(1)])
    regressor.compile(loss="mse")
    values = tbx.extract_rules(regressor, x_fit, max_depth=2).predict(x_out)
    from sklearn.tree import DecisionTreeRegressor

    target = regressor.predict(x_fit, verbose=0)[:, 0]
    np.testing.assert_allclose(values, DecisionTreeRegressor(max_depth=2, random_state=0).fit(
        x_fit, target).predict(x_out), rtol=1e-6)


@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "f1", "roc_auc",
                                  "neg_log_loss"])
def test_scoring_names_classifier_match_scikit_learn(cancer_split, name):
    from sklearn.metrics import get_scorer

    model, _, x_out, _, y_out = cancer_split
    ours = tbx.permutation_importance(model, x_out, y_out, metric=name, repeats=20, seed=0)
    estimator = _Scored(model, classes=2).fit(x_out, y_out)
    assert ours.baseline_score == pytest.approx(get_scorer(name)(estimator, x_out, y_out),
                                                rel=1e-5)
    theirs = sk_permutation_importance(estimator, x_out, y_out, scoring=name, n_repeats=20,
                                       random_state=0)
    se = np.sqrt((ours.importances_std ** 2 + theirs.importances_std ** 2) / 20) + 2e-3
    assert np.all(np.abs(ours.importances_mean - theirs.importances_mean) < 4 * se)


@pytest.mark.parametrize("name", ["r2", "neg_mean_squared_error", "neg_mean_absolute_error"])
def test_scoring_names_regressor_match_scikit_learn(name):
    from sklearn.metrics import get_scorer

    x, target, regressor, _ = _two_feature_models()
    y = target + np.random.default_rng(3).normal(scale=0.5, size=len(target))
    ours = tbx.permutation_importance(regressor, x, y, metric=name, repeats=10, seed=0)
    estimator = _Scored(regressor).fit(x, y)
    expected = get_scorer(name)(estimator, x, y)
    assert ours.baseline_score == pytest.approx(expected, rel=1e-5)
    assert (expected < 0) == name.startswith("neg_")  # scikit-learn's signs
    theirs = sk_permutation_importance(estimator, x, y, scoring=name, n_repeats=10,
                                       random_state=0)
    se = np.sqrt((ours.importances_std ** 2 + theirs.importances_std ** 2) / 10) + 1e-3
    assert np.all(np.abs(ours.importances_mean - theirs.importances_mean) < 4 * se)
    assert set(ours.ranking()[:2]) == {2, 7}


def test_scoring_names_are_validated(cancer_split):
    model, _, x_out, _, y_out = cancer_split
    with pytest.raises(ValueError, match="`metric` must be .* scoring names"):
        tbx.permutation_importance(model, x_out, y_out, metric="precision_macro")
    with pytest.raises(ValueError, match="`metric='r2'` scores a regressor"):
        tbx.permutation_importance(model, x_out, y_out, metric="r2")
    with pytest.raises(ValueError, match="`metric` must be"):
        tbx.FeatureImportance("unused", data=(x_out, y_out), metric="auc")
