import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snn.digits import load_digit
from snn.training import train
from tests.conftest import ROOT, train_tiny
from tests.test_digits import bomb_png


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mnist_root):
    run = train_tiny(
        tmp_path_factory.mktemp("run"), mnist_root, "T=4", "model.hidden_sizes=[32]", "trainer.max_epochs=2"
    )
    return run / "checkpoints" / "best.ckpt"


def evaluate(*args, cwd, data_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(data_root)}
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def newest_output_dir(checkpoint):
    """Evaluations are written beside the checkpoint's run: <run>/eval/<timestamp>_<overrides>/."""
    return max((checkpoint.parent.parent / "eval").iterdir(), key=lambda folder: folder.stat().st_mtime)


def light_digit_png(path, offset=(5, 40)):
    """Dark ink on light paper, off-centre in a 90x120 photo."""
    canvas = np.full((90, 120), 230, dtype=np.uint8)
    y, x = offset
    canvas[y : y + 40, x + 10 : x + 16] = 20  # a stroke of a "1"
    canvas[y : y + 6, x + 4 : x + 16] = 20
    Image.fromarray(canvas).save(path)
    return path


@pytest.mark.slow
def test_checkpoint_on_test_set(checkpoint, mnist_root, tmp_path):
    result = evaluate(f"ckpt={checkpoint}", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    out = newest_output_dir(checkpoint)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["T"] == 4 and metrics["model"] == "snn" and metrics["encoder"] == "rate"
    # rate coding is random: 5 passes by default, one per encoder seed, summarised as mean and sample std
    assert metrics["repeats"] == 5 and metrics["encoder_seeds"] == [0, 1, 2, 3, 4]
    per_repeat = metrics["test/acc_per_repeat"]
    assert metrics["test/acc"] == pytest.approx(statistics.mean(per_repeat))
    assert metrics["test/acc_std"] == pytest.approx(statistics.stdev(per_repeat))
    assert out.name.endswith("_test")  # named by what was evaluated, not "defaults"
    confusion = torch.tensor(metrics["confusion_matrix"])  # one pass's counts: they add up to the test set
    assert confusion.sum() == 32 and metrics["confusion_matrix_encoder_seed"] == 0
    assert len(metrics["per_class_acc"]) == 10
    assert confusion.diag().sum() / confusion.sum() == pytest.approx(per_repeat[0])  # torchmetrics agree
    assert metrics["test/synops"] > 0 and metrics["test/energy_nJ"] > 0
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert "test/acc" in result.stdout and "per-class acc" in result.stdout
    assert "test pass 5 of 5 (encoder seed 4)" in result.stdout + result.stderr


@pytest.mark.slow
def test_evaluation_repeats_training_s_test_loop(tmp_path, mnist_root, compose_cfg):
    """Deterministic input: evaluate.py's test accuracy is the one training measured on the same checkpoint."""
    cfg = compose_cfg("encoder=direct", "T=3", "model.hidden_sizes=[32]", "trainer.max_epochs=2")
    results = train(cfg, tmp_path / "run", {"model": "snn", "encoder": "direct"})
    result = evaluate(f"ckpt={results['best_checkpoint']}", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((newest_output_dir(Path(results["best_checkpoint"])) / "metrics.json").read_text())
    assert metrics["repeats"] == 1 and metrics["test/acc_std"] is None
    for key in ("test/acc", "test/loss", "test/synops", "test/firing_rate/layer1"):
        assert metrics[key] == pytest.approx(results[key], rel=1e-6), key


@pytest.mark.slow
def test_a_bf16_run_is_tested_in_its_precision_unless_told(tmp_path, mnist_root, compose_cfg):
    """A bf16-mixed run: evaluate.py repeats training's bf16 test exactly; precision=32-true overrides it."""
    overrides = ("baseline=csnn", "model.channels=[4,8]", "model.hidden_size=16", "trainer.max_epochs=1")
    results = train(compose_cfg(*overrides), tmp_path / "run", {"model": "csnn", "encoder": "direct"})
    assert results["trainer.precision"] == "bf16-mixed"
    runs = [
        evaluate(f"ckpt={results['best_checkpoint']}", *extra, cwd=tmp_path, data_root=mnist_root)
        for extra in ([], ["precision=32-true"])
    ]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    evaluations = sorted((Path(results["run_dir"]) / "eval").iterdir())
    as_trained, in_float = (json.loads((folder / "metrics.json").read_text()) for folder in evaluations)
    assert (as_trained["precision"], in_float["precision"]) == ("bf16-mixed", "32-true")
    assert as_trained["test/loss"] == pytest.approx(results["test/loss"], rel=1e-6)
    assert in_float["test/loss"] != as_trained["test/loss"]  # float32 logits differ from bf16 ones in the last bits


@pytest.mark.slow
def test_a_checkpoint_outside_a_run_is_evaluated_into_outputs_eval(checkpoint, mnist_root, tmp_path):
    copy = tmp_path / "model.ckpt"
    copy.write_bytes(checkpoint.read_bytes())
    result = evaluate(f"ckpt={copy}", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    (out,) = (tmp_path / "outputs" / "eval").iterdir()
    assert json.loads((out / "metrics.json").read_text())["checkpoint"] == str(copy)


@pytest.mark.slow
def test_time_steps_override_is_recorded(checkpoint, mnist_root, tmp_path):
    result = evaluate(f"ckpt={checkpoint}", "T=9", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    out = newest_output_dir(checkpoint)
    assert json.loads((out / "metrics.json").read_text())["T"] == 9
    assert out.name.endswith("_test,T=9")


def test_a_checkpoint_from_before_the_newer_keys_still_loads(checkpoint, tmp_path):
    """Run configs stored before data.max_rotation/max_scale and model.sparse_input existed."""
    from snn.evaluation import load_classifier

    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for group, key in (("data", "max_rotation"), ("data", "max_scale"), ("model", "sparse_input")):
        del stored["run_config"]["config"][group][key]
    old = tmp_path / "old.ckpt"
    torch.save(stored, old)
    module, cfg = load_classifier(old, T=6)
    assert cfg.T == 6 and module.net.stages[0][1].mode == "auto"


def test_a_prediction_line_says_what_its_score_is():
    """Spike counts [0, 0, 3, 24, 0, 4, 0, 0, 3, 8]: a softmax of the raw counts would print p=1.000."""
    from snn.evaluation import prediction_line, scores_of

    counts = scores_of(torch.tensor([0.0, 0, 3, 24, 0, 4, 0, 0, 3, 8]), counts=True)
    assert counts["spike_share"][3] == pytest.approx(24 / 42, abs=1e-4) and "softmax_probabilities" not in counts
    line = prediction_line({"image": "three.png", "prediction": 3, **counts})
    assert line == (
        "three.png: predicted 3  spike share 0.571 (24 of 42 output spikes)"
        "  spike counts [0, 0, 3, 24, 0, 4, 0, 0, 3, 8]"
    )
    assert scores_of(torch.zeros(10), counts=True)["spike_share"] == [0.0] * 10  # no output spikes: no share
    membrane = scores_of(torch.tensor([0.0, 2.0]), counts=False)
    assert (
        membrane == {"softmax_probabilities": [0.1192, 0.8808]}
        and prediction_line({"image": "x.png", "prediction": 1, "label": 1, **membrane})
        == "x.png: predicted 1 (true 1)  softmax probability 0.881"
    )
    named = {"image": "x.png", "prediction": 9, "class": "Ankle boot", "label": 7, "label_class": "Sneaker"}
    assert prediction_line({**named, "softmax_probabilities": [0.1] * 10}) == (
        'x.png: predicted 9 "Ankle boot" (true 7 "Sneaker")  softmax probability 0.100'
    )


def test_evaluation_folders_are_named_by_what_was_evaluated():
    from snn.run_setup import eval_name

    assert eval_name("", None, None) == "test" and eval_name("T=10", None, None) == "test,T=10"
    assert eval_name("", "photos/my_three.png", None) == "image=my_three.png"
    assert eval_name("", "photos/", None) == "image=photos" and eval_name("T=4", None, 7) == "sample=7,T=4"


def test_light_background_off_centre_digit_is_centred(tmp_path):
    digit = load_digit(light_digit_png(tmp_path / "one.png"))[0]
    assert digit.shape == (28, 28) and digit.max() == pytest.approx(1, abs=0.02)
    assert digit[:3].sum() == 0 and digit[:, :3].sum() == 0  # background black, margins as in MNIST
    rows, cols = torch.nonzero(digit > 0.2, as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    com = (torch.stack(torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")) * digit).flatten(1).sum(1)
    assert torch.allclose(com / digit.sum(), torch.tensor([14.0, 14.0]), atol=1.0)


@pytest.mark.slow
def test_classify_an_image_and_a_folder(checkpoint, mnist_root, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    light_digit_png(folder / "a.png")
    light_digit_png(folder / "a.jpg", offset=(40, 5))  # the same stem: each keeps its own figure
    ink = np.zeros((90, 120, 4), dtype=np.uint8)  # black ink on a transparent background: RGB all zero
    ink[..., 3] = 255 - np.asarray(Image.open(light_digit_png(tmp_path / "paper.png")))
    Image.fromarray(ink).save(folder / "transparent.png")
    result = evaluate(f"ckpt={checkpoint}", f"image={folder}", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    out = newest_output_dir(checkpoint)
    predictions = json.loads((out / "predictions.json").read_text())["predictions"]
    assert [p["image"].split("/")[-1] for p in predictions] == ["a.jpg", "a.png", "transparent.png"]
    assert out.name.endswith("_image=digits")
    for p in predictions:
        assert len(p["spike_counts"]) == 10 and p["prediction"] == int(np.argmax(p["spike_counts"]))  # the most spikes
        total = sum(p["spike_counts"])
        assert p["spike_share"] == [pytest.approx(c / total if total else 0, abs=1e-4) for c in p["spike_counts"]]
        assert "probabilities" not in p and "softmax_probabilities" not in p
    figures = [out / name for name in ("a_jpg.png", "a_png.png", "transparent_png.png")]
    assert [p["figure"] for p in predictions] == [str(f) for f in figures]
    assert all(f.exists() for f in figures) and figures[0].read_bytes() != figures[1].read_bytes()
    assert result.stdout.count("predicted") == 3


@pytest.mark.slow
def test_random_test_sample_has_its_label(checkpoint, mnist_root, tmp_path):
    result = evaluate(f"ckpt={checkpoint}", "sample=random", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    out = newest_output_dir(checkpoint)
    (prediction,) = json.loads((out / "predictions.json").read_text())["predictions"]
    assert "label" in prediction and "(true" in result.stdout and out.name.endswith("_sample=random")


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["corrupt_image", "empty_folder", "missing_ckpt", "corrupt_ckpt", "nan_tiff", "bomb", "fifo", "dev_null"]
)
def test_bad_input_is_one_clear_line(checkpoint, mnist_root, tmp_path, case):
    ckpt, image = checkpoint, None
    if case == "corrupt_image":
        image = tmp_path / "bad.png"
        image.write_bytes(b"this is not a png")
    elif case == "nan_tiff":
        image = tmp_path / "nan.tif"
        Image.fromarray(np.full((28, 28), np.nan, dtype=np.float32)).save(image)
    elif case == "bomb":
        image = bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    elif case == "fifo":
        image = tmp_path / "digit.png"
        os.mkfifo(image)  # reading it would wait for a writer for ever
    elif case == "dev_null":
        image = Path("/dev/null")
    elif case == "empty_folder":
        image = tmp_path / "empty"
        image.mkdir()
    elif case == "missing_ckpt":
        ckpt = tmp_path / "nope.ckpt"
    else:
        ckpt = tmp_path / "broken.ckpt"
        ckpt.write_bytes(checkpoint.read_bytes()[:1000])
    args = [f"ckpt={ckpt}"] + ([f"image={image}"] if image else [])
    result = evaluate(*args, cwd=tmp_path, data_root=mnist_root)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(image or ckpt) in last
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/eval/*/*.json"))  # nothing half-written
    if case in ("corrupt_image", "empty_folder"):
        assert not (newest_output_dir(checkpoint) / "predictions.json").exists()
