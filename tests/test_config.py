import re
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from snn.build import build_model
from snn.checks import ConfigError
from snn.config import validate
from snn.neurons import LIF
from tests.conftest import CONF, ROOT

GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in ("model", "neuron", "encoder", "data")}
PRESETS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml")) for group in ("baseline", "experiment")}


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes_and_instantiates(compose_cfg, group, option):
    fitting = {("encoder", "sequential"): ["T=28", "encoder.order=rows"]}  # the T this order allows on 28x28 images
    cfg = compose_cfg(f"{group}={option}", *fitting.get((group, option), ["T=3"]))
    validate(cfg)
    built = build_model(cfg) if group == "model" else instantiate(cfg[group])
    if group == "data":  # what it yields is known without reading a file
        assert built.input_shape == (1, 28, 28) and built.num_classes == len(built.class_names) == 10
    elif group == "neuron":
        built = built(shape=(5,))  # a partial: the architecture builds one per layer, for its shape
        spikes = built(torch.randn(3, 2, 5))
        values = set(spikes.unique().tolist())
        binary = values <= {0.0, 1.0} or (option == "signed_if" and all(v == int(v) for v in values))  # bursts
        assert spikes.shape == (3, 2, 5) and binary
    elif group == "encoder":  # the steps and the step shape it says (the spiking nets are sized by it)
        assert built(torch.rand(2, 1, 28, 28)).shape == (cfg.T, 2, *built.output_shape((1, 28, 28)))
    else:
        x = torch.rand(3, 2, 1, 28, 28) if built.spiking else torch.rand(2, 1, 28, 28)
        assert built(x).shape == (2, 10)


@pytest.mark.parametrize("group,option", [(g, o) for g, options in PRESETS.items() for o in options])
def test_every_preset_composes_and_builds(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    validate(cfg)
    net = build_model(cfg)
    images = torch.rand(2, 1, 28, 28)
    x = instantiate(cfg.encoder)(images) if net.spiking else images  # sequence presets: a pixel or a row a step
    assert net(x).shape == (2, 10)


def test_single_step_experiment_is_one_step_on_the_analog_image(compose_cfg):
    cfg = compose_cfg("experiment=single_step", hydra=True)
    choices = cfg.hydra.runtime.choices
    assert (cfg.T, choices.model, choices.encoder, cfg.model.readout) == (1, "snn", "direct", "membrane")


def test_optuna_search_composes(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg("hparams_search=optuna", hydra=True)
    assert cfg.hydra.sweeper.direction == "maximize" and "optimizer.lr" in cfg.hydra.sweeper.params


@pytest.mark.parametrize(
    "override,key",
    [
        ("T=0", "T"),
        ("neuron.threshold=0", "neuron.threshold"),
        ("neuron.beta=1.5", "neuron.beta"),
        ("neuron.beta=0", "neuron.beta"),
        ("data.batch_size=0", "data.batch_size"),
        ("neuron.surrogate=bogus", "neuron.surrogate"),
        ("neuron.reset=never", "neuron.reset"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.ema_decay=1", "optimizer.ema_decay"),
        ("loss.label_smoothing=-0.1", "loss.label_smoothing"),
        ("model.hidden_sizes=[0]", "model.hidden_sizes"),
        ("model=csnn model.channels=[]", "model.channels"),
        ("model.sparse_input=yes", "model.sparse_input"),
        ("model=csnn model.pool=min", "model.pool"),
        ("data.max_rotation=-5", "data.max_rotation"),
        ("data.max_scale=1.5", "data.max_scale"),
    ],
)
def test_invalid_values_name_the_key(compose_cfg, override, key):
    with pytest.raises(ConfigError, match=rf"^{key}=.*allowed"):
        validate(compose_cfg(*override.split()))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (  # a preset's keys for ALIF reach the neuron swapped in for a comparison
            ("experiment=smnist", "neuron=lif"),
            "neuron.adaptation, neuron.tau_adaptation, neuron.learnable are not allowed: snn.neurons.LIF takes no "
            "adaptation, tau_adaptation, learnable (a preset may set them for another neuron: drop them with "
            "'~neuron.adaptation' '~neuron.tau_adaptation' '~neuron.learnable')",
        ),
        (("+model.depth=3",), "model.depth is not allowed: snn.architectures.SpikingMLP takes no depth"),
    ],
)
def test_a_key_the_class_does_not_take_is_named(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}"):
        validate(compose_cfg(*overrides))


class PassesAWrongKeyOn(LIF):
    """A user's neuron whose own constructor has a bug: a keyword that LIF does not take."""

    def __init__(self, **options):
        super().__init__(**options, nonsense=1)


def test_a_wrong_key_inside_a_constructor_is_not_blamed_on_the_config(compose_cfg):
    """Keys are checked against the target's signature: a TypeError raised deeper is the class's own bug and stays
    a traceback, not 'neuron.nonsense is not allowed' (no such key is in the config)."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        validate(compose_cfg(f"neuron._target_={__name__}.PassesAWrongKeyOn"))


def test_plif_rejects_beta_one(compose_cfg):
    with pytest.raises(ConfigError, match=r"neuron.beta=1.0 .*\(0, 1\)"):
        validate(compose_cfg("neuron=plif", "neuron.beta=1.0"))


def _train(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_invalid_value_is_one_line_and_nonzero(tmp_path, mnist_root):
    result = _train("T=0", f"data.root={mnist_root}", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: T=0 is not allowed: an integer >= 1"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # stopped before Hydra made a run folder


@pytest.mark.slow
def test_cli_unknown_group_option_lists_the_valid_ones(tmp_path):
    result = _train("neuron=bogus", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'neuron/bogus'" in result.stderr
    for option in GROUPS["neuron"]:
        assert option in result.stderr


@pytest.mark.slow
def test_cli_missing_data_says_where_it_is_expected(tmp_path):
    empty = tmp_path / "nodata"
    result = _train(f"data.root={empty}", "data.download=false", "trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MNIST is not in") and str(empty / "MNIST" / "raw") in last


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupt_idx_file_is_named(tmp_path, damage):
    from snn.data import DataError, load_mnist
    from tests.conftest import make_tiny_mnist

    root = make_tiny_mnist(tmp_path)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[:-100] if damage == "truncate" else b"GIF89a" + data[6:])
    with pytest.raises(DataError, match=rf"^{images}: (truncated or corrupt|not an MNIST IDX)"):
        load_mnist(root, train=True, download=False)


def test_random_rotation_and_zoom():
    from snn.data import random_rotate_scale

    torch.manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    assert torch.allclose(random_rotate_scale(images, 0, 0), images, atol=1e-6)  # nothing asked, nothing moved
    moved = random_rotate_scale(images, 15, 0.1)
    assert moved.shape == images.shape and not torch.allclose(moved, images, atol=0.1)
    area = moved.sum((1, 2, 3)) / images.sum((1, 2, 3))  # a zoom by s scales the area by s^2
    assert ((area > 0.9**2 - 0.05) & (area < 1.1**2 + 0.05)).all()


def test_random_shift_moves_each_image_by_whole_pixels():
    from snn.data import random_shift

    torch.manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    images[:, 0, 14, 14] = 1
    shifted = random_shift(images, 2)
    assert shifted.shape == images.shape and torch.equal(shifted.sum((1, 2, 3)), torch.ones(64))
    where = shifted[:, 0].flatten(1).argmax(1)
    offsets = {(int(i) // 28 - 14, int(i) % 28 - 14) for i in where}
    assert offsets <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(offsets) > 10


@pytest.mark.slow
def test_unwritable_outputs_is_one_clear_line(tmp_path, mnist_root):
    (tmp_path / "outputs").write_text("a file where the outputs folder should be")
    result = _train(f"data.root={mnist_root}", "trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write outputs: ") and "not writable" in last
    assert "Traceback" not in result.stderr
    assert (tmp_path / "outputs").read_text().startswith("a file")  # nothing the user had is touched


def test_the_leaf_modules_import_neither_lightning_nor_hydra():
    """Neurons, encoders, surrogates, layers and architectures (and the checks they use) are plain torch modules."""
    leaves = ", ".join(
        f"snn.{m}"
        for m in ("checks", "neurons", "encoders", "surrogates", "spiking_layer", "recurrent", "alif", "synaptic")
    )
    leaves += ", snn.architectures"
    frameworks = ("pytorch_lightning", "lightning", "lightning_fabric", "hydra", "omegaconf")
    code = f"import sys, {leaves}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({frameworks!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
