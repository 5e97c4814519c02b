"""The trained demo network: shipped float weights, int8 accuracy, and the numpy trainer that made them."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scalenet import zoo  # noqa: E402
from scalenet.quant import quantize  # noqa: E402
from scalenet.zoo import digits, train_digits  # noqa: E402


@pytest.fixture(scope="module")
def split():
    return train_digits.load_split()


def test_split_is_fixed_and_stratified(split):
    x_train, y_train, x_test, y_test, raw_train = split
    assert len(x_train) == 1437 and len(x_test) == 360
    assert np.bincount(y_test, minlength=10).tolist() == [36] * 10
    assert x_train.shape[1:] == (1, 8, 8) and 0 <= x_train.min() and x_train.max() <= 1
    # the shipped calibration batch comes from the training images only
    calib = np.load(digits.WEIGHTS_PATH)["calibration"].reshape(-1, 64)
    train_rows = {r.tobytes() for r in raw_train.reshape(-1, 64)}
    assert len(calib) == 256 and all(r.tobytes() in train_rows for r in calib)


def test_shipped_weights_float_and_int8_accuracy(split):
    _, _, x_test, y_test, _ = split
    net = zoo.float_net("digits_cnn")
    float_acc = float((net.run(x_test)["fc"].argmax(axis=1) == y_test).mean())
    g = zoo.build("digits_cnn")
    assert g.params == 6_090 and g.input.shape == (1, 8, 8) and g.tensors[g.outputs[0]].shape == (10,)
    xq = quantize(x_test, g.input.q)
    assert xq.dtype == np.int8
    logits = g.run(xq)[g.outputs[0]]
    assert logits.dtype == np.int8
    int8_acc = float((logits.argmax(axis=1) == y_test).mean())
    print(f"digits_cnn: float {float_acc:.4f}, int8 {int8_acc:.4f}")
    assert float_acc >= 0.95
    assert abs(int8_acc - float_acc) <= 0.005


def test_training_runs_and_loss_decreases(split):
    x_train, y_train = split[0][:512], split[1][:512]
    w1, h1 = train_digits.train(3, seed=1, data=(x_train, y_train))
    assert h1[-1] < h1[0] * 0.6
    assert all(w1[k].shape == s and w1[k].dtype == np.float32 for k, s in digits.SHAPES.items())
    w2, h2 = train_digits.train(3, seed=1, data=(x_train, y_train))
    assert h1 == h2 and all(np.array_equal(w1[k], w2[k]) for k in w1)    # seeded: repeatable
    assert train_digits.accuracy(w1, split[2], split[3]) > 0.8            # already learning after 3 epochs


def test_training_reproduces_the_shipped_weights(split, tmp_path):
    """The script regenerates digits_cnn.npz: same seed, same data, same weights (on this numpy/BLAS;
    a different BLAS may differ in the last bits, hence the tolerance)."""
    out = tmp_path / "digits.npz"
    assert train_digits.main(["--output", str(out)]) == 0
    new, shipped = np.load(out), np.load(digits.WEIGHTS_PATH)
    assert np.array_equal(new["calibration"], shipped["calibration"])
    for k in digits.SHAPES:
        np.testing.assert_allclose(new[k], shipped[k], rtol=0, atol=1e-3)


def test_shipped_test_set_is_the_fixed_split(split):
    """The demo's test images (shipped, so it needs no scikit-learn) are exactly the held-out split."""
    _, _, x_test, y_test, _ = split
    images, labels = digits.test_set()
    np.testing.assert_array_equal(images, x_test)
    np.testing.assert_array_equal(labels, y_test)
