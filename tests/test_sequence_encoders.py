"""encoder=sequential (pixels or rows, optionally in a fixed permuted order) and encoder=delta (saccade events):
their sequences against hand-made ones, the one-line refusal of a T that does not fit, and real runs through
train.py and evaluate.py."""

import json
import subprocess
import sys

import pytest
import torch

from snn.build import build_model, step_shape
from snn.checks import ConfigError
from snn.config import validate
from snn.delta import DeltaEncoder, dvs_events, saccade_offsets, shifted
from snn.encoders import SequentialEncoder, permutation
from tests.conftest import ROOT, train_tiny
from tests.test_evaluate import evaluate, newest_output_dir

PIXELS_T25 = (
    "T=25 is not allowed with encoder=sequential order=pixels: T must be 784 (one step per pixel of a 28x28 image); "
    "set T=784"
)
ROWS_T25 = (
    "T=25 is not allowed with encoder=sequential order=rows: T must be 28 (one step per row of a 28x28 image); set T=28"
)


def test_pixels_are_the_image_read_pixel_by_pixel():
    images = torch.rand(2, 3, 4, 5)
    steps = SequentialEncoder(20)(images)
    assert steps.shape == (20, 2, 3) and SequentialEncoder(20).output_shape((3, 4, 5)) == (3,)
    for t in range(20):  # step t: pixel (t // W, t % W) of every channel
        assert torch.equal(steps[t], images[:, :, t // 5, t % 5])


def test_rows_are_the_image_read_row_by_row():
    images = torch.rand(2, 3, 4, 5)
    steps = SequentialEncoder(4, order="rows")(images)
    assert steps.shape == (4, 2, 15) and SequentialEncoder(4, order="rows").output_shape((3, 4, 5)) == (15,)
    for t in range(4):  # step t: row t, channel after channel
        assert torch.equal(steps[t], images[:, :, t, :].reshape(2, 15))


def test_permuted_pixels_follow_one_fixed_permutation():
    order = permutation(784, 0)
    assert torch.equal(order.sort().values, torch.arange(784)) and not torch.equal(order, torch.arange(784))
    assert not torch.equal(order, permutation(784, 1))  # the seed chooses it
    images = torch.rand(2, 1, 28, 28)
    steps = SequentialEncoder(784, permute=True)(images)
    assert torch.equal(steps[:, :, 0].T, images.flatten(1)[:, order])
    rows = SequentialEncoder(28, order="rows", permute=True)(images)  # rows: the permuted pixels, 28 a step
    assert torch.equal(rows.permute(1, 0, 2).reshape(2, 784), images.flatten(1)[:, order])


def test_permutation_is_the_same_in_another_process():
    """Not the global RNG: a process that seeded torch differently, and drew first, gets the same order."""
    code = (
        "import torch; torch.manual_seed(123); torch.rand(5); from snn.encoders import permutation; "
        "print(permutation(784, 0).tolist())"
    )
    run = [sys.executable, "-c", code]
    other = subprocess.run(run, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr[-2000:]
    assert json.loads(other.stdout) == permutation(784, 0).tolist()
    # pinned: a torch whose randperm drew otherwise would scramble every PS-MNIST checkpoint's input
    assert permutation(784, 0)[:6].tolist() == [60, 361, 167, 578, 107, 772]


def test_a_t_that_does_not_fit_is_refused_with_one_line(compose_cfg):
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg("encoder=sequential", "T=25"))
    assert str(refused.value) == PIXELS_T25
    with pytest.raises(ConfigError, match=r"^T=784 is not allowed with encoder=sequential order=rows: T must be 28 "):
        validate(compose_cfg("encoder=sequential", "encoder.order=rows", "T=784"))
    validate(compose_cfg("model=ann", "encoder=sequential", "T=25"))  # the ANN baselines see no encoder
    with pytest.raises(ConfigError, match=r"^T=2 is not allowed with encoder=delta: T must be >= 3 "):
        validate(compose_cfg("encoder=delta", "T=2"))


@pytest.mark.slow
def test_train_py_refuses_a_wrong_t_before_making_a_run_folder(tmp_path, mnist_root):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "encoder=sequential", "T=25", f"data.root={mnist_root}"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {PIXELS_T25}"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_models_are_sized_by_the_step_shape(compose_cfg):
    rows = build_model(compose_cfg("encoder=sequential", "encoder.order=rows", "T=28", "model.hidden_sizes=[8]"))
    assert rows.stages[0][1].in_features == 28
    delta = build_model(compose_cfg("encoder=delta", "model=csnn", "model.channels=[4]", "model.hidden_size=8"))
    assert delta.stages[0][0].in_channels == 2
    assert build_model(compose_cfg("encoder=delta", "model=ann")).layers[1].in_features == 784  # the image
    assert step_shape(object(), (1, 28, 28)) == (1, 28, 28)  # an encoder of one's own without output_shape


def test_a_rising_and_falling_edge_gives_on_then_off_events():
    """A 1x4 image with a step edge [0 0 1 1] moving one pixel left, then back."""
    frames = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.float32).view(3, 1, 1, 4)
    events = dvs_events(frames, threshold=0.5)
    assert events.shape == (2, 1, 2, 1, 4)
    assert events[0, 0, :, 0].tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]  # pixel 1 brightened: ON (channel 0)
    assert events[1, 0, :, 0].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0]]  # and darkened again: OFF (channel 1)


def test_the_threshold_is_a_change_since_the_last_event():
    # +0.3 (no event, below 0.5), +0.3 more (0.6 since the reference: ON), +0.5 (exactly the threshold: none)
    frames = torch.tensor([0.0, 0.3, 0.6, 1.1]).view(4, 1, 1, 1)
    assert dvs_events(frames, threshold=0.5)[:, 0, :, 0, 0].tolist() == [[0, 0], [1, 0], [0, 0]]


def test_a_pixel_moving_around_the_triangle():
    """Amplitude 1 and T=3: the offsets are the triangle's corners (-1, 0), (1, 1), (1, -1) and back; a lit pixel
    in the middle of a 3x3 image, at (2, 2) of the 5x5 padded frame, jumps between (1, 2), (3, 3) and (3, 1)."""
    assert saccade_offsets(3, 1.0) == [(-1.0, 0.0), (1.0, 1.0), (1.0, -1.0), (-1.0, 0.0)]
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 1, 1] = 1
    encoder = DeltaEncoder(3, amplitude=1, threshold=0.5)
    events = encoder(image)
    assert events.shape == (3, 1, 2, 5, 5) and encoder.output_shape((1, 3, 3)) == (2, 5, 5)
    expected = [([3, 3], [1, 2]), ([3, 1], [3, 3]), ([1, 2], [3, 1])]  # (ON at, OFF at) per step
    for t, (on, off) in enumerate(expected):
        assert events[t, 0, 0].nonzero().tolist() == [on] and events[t, 0, 1].nonzero().tolist() == [off]


def test_sub_pixel_motion_is_bilinear():
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 1, 1] = 1
    half = shifted(image, 0.5, -0.25, pad=1)[0, 0]
    assert half[2, 2] == pytest.approx(0.5 * 0.75) and half[3, 2] == pytest.approx(0.5 * 0.75)
    assert half[2, 1] == pytest.approx(0.5 * 0.25) and half[3, 1] == pytest.approx(0.5 * 0.25)
    assert half.sum() == pytest.approx(1.0)


def test_events_are_binary_and_none_for_a_blank_image():
    encoder = DeltaEncoder(12, amplitude=1.5, threshold=0.1)
    assert not encoder(torch.zeros(2, 1, 28, 28)).any()
    events = encoder(torch.rand(2, 1, 28, 28))
    assert events.shape == (12, 2, 2, 32, 32) and set(events.unique().tolist()) == {0.0, 1.0}
    assert not (events[:, :, 0] * events[:, :, 1]).any()  # a pixel rises or falls, never both at once


@pytest.fixture(scope="module")
def rows_checkpoint(tmp_path_factory, mnist_root):
    overrides = ("encoder=sequential", "encoder.order=rows", "T=28", "model.hidden_sizes=[16]", "trainer.max_epochs=1")
    return train_tiny(tmp_path_factory.mktemp("rows"), mnist_root, *overrides) / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def delta_checkpoint(tmp_path_factory, mnist_root):
    overrides = ("encoder=delta", "T=6", "model=csnn", "model.channels=[4]", "model.hidden_size=8")
    run = train_tiny(tmp_path_factory.mktemp("delta"), mnist_root, *overrides, "trainer.max_epochs=1")
    return run / "checkpoints" / "best.ckpt"


@pytest.mark.slow
def test_delta_trains_the_mlp(tmp_path, mnist_root):
    run = train_tiny(tmp_path, mnist_root, "encoder=delta", "T=6", "model.hidden_sizes=[16]", "trainer.max_epochs=1")
    assert (run / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_a_sequential_checkpoint_is_evaluated_and_keeps_its_t(rows_checkpoint, mnist_root, tmp_path):
    result = evaluate(f"ckpt={rows_checkpoint}", "sample=0", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads((newest_output_dir(rows_checkpoint) / "predictions.json").read_text())
    assert predictions["encoder"] == "sequential" and predictions["T"] == 28
    assert (newest_output_dir(rows_checkpoint) / "test_0.png").stat().st_size > 0  # the figure of a [28, 1, 28] input
    wrong = evaluate(f"ckpt={rows_checkpoint}", "T=25", cwd=tmp_path, data_root=mnist_root)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    last = wrong.stderr.strip().splitlines()[-1]
    assert last == f"error: {ROWS_T25}"


@pytest.mark.slow
def test_a_delta_checkpoint_is_evaluated_on_the_test_set(delta_checkpoint, mnist_root, tmp_path):
    result = evaluate(f"ckpt={delta_checkpoint}", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((newest_output_dir(delta_checkpoint) / "metrics.json").read_text())
    assert (metrics["encoder"], metrics["model"], metrics["T"], metrics["repeats"]) == ("delta", "csnn", 6, 1)
    assert sum(map(sum, metrics["confusion_matrix"])) == 32


def test_the_events_figure_draws_polarities(tmp_path):
    from snn.plots import events_figure, inference_figure, save
    from snn.spike_stats import Trace

    image = torch.zeros(1, 28, 28)
    image[0, 10:18, 12:16] = 1
    events = DeltaEncoder(6)(image.unsqueeze(0))
    save(events_figure(image, events[:, 0]), tmp_path / "events.png")
    trace = Trace(inputs=events)
    trace.spikes, trace.membrane = [torch.zeros(6, 1, 5)], torch.zeros(6, 1, 10)
    save(inference_figure(image, torch.zeros(10), 0, "scores", trace, 1.0, classes="0123456789"), tmp_path / "i.png")
    assert (tmp_path / "events.png").stat().st_size > 0 and (tmp_path / "i.png").stat().st_size > 0


@pytest.mark.slow
def test_a_delta_run_exports_to_nir_with_its_step_shape(tmp_path, mnist_root):
    """The graph's input is one step of events, [2, 32, 32]; read back with the encoder its metadata names, it
    computes what the checkpoint does."""
    from snn.evaluation import load_classifier, load_model
    from snn.export import export

    overrides = ("encoder=delta", "T=6", "neuron.reset=zero", "model.hidden_sizes=[16]", "trainer.max_epochs=1")
    ckpt = train_tiny(tmp_path / "run", mnist_root, *overrides) / "checkpoints" / "best.ckpt"
    graph, _ = load_model(export(ckpt, tmp_path / "delta.nir"), None, None)
    trained, _ = load_classifier(ckpt)
    assert type(graph.encoder) is DeltaEncoder and graph.encoder.amplitude == 2.0
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(graph(images), trained(images), atol=1e-5)
