import pytest
import torch

from snn import kernels
from snn.encoders import DirectEncoder, LatencyEncoder, RateEncoder, splitmix64_words


def test_rate_spike_probability_is_intensity():
    torch.manual_seed(0)
    images = torch.linspace(0, 1, 11).view(11, 1, 1, 1).expand(11, 1, 28, 28)
    spikes = RateEncoder(T=200)(images)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.mean(dim=(0, 2, 3, 4))
    assert torch.allclose(rate, torch.linspace(0, 1, 11), atol=0.02)


def test_rate_spikes_are_independent_and_exact_at_the_ends():
    torch.manual_seed(0)
    spikes = RateEncoder(T=50)(torch.full((64, 1, 28, 28), 0.5)).flatten()
    # neighbours share a 64-bit random word: each lane must still be its own coin
    assert abs(spikes.mean() - 0.5) < 0.005
    assert abs((spikes[:-1] * spikes[1:]).mean() - 0.25) < 0.005
    assert abs((spikes[:-4] * spikes[4:]).mean() - 0.25) < 0.005
    ends = RateEncoder(T=1000)(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    assert ends[:, 0].sum() == 0 and ends[:, 1].sum() == 1000


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rate_kernel_draws_the_tensor_codes_spikes(dtype, monkeypatch):
    """The C++ pass (csrc/rate.cpp) gives the tensor code's spikes for the same seed, ends included, over sizes that
    are not a multiple of its blocks or of four uniforms a word."""
    if kernels.load() is None:
        pytest.skip("the C++ kernels could not be built here")
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1  # below 0, above 1
    images[:, :, :3] = torch.tensor([0.0, 1.0, 2**-17]).view(3, 1)
    for batch in (images, images[:5, :, :3, :5]):  # 7 * 5 * 15 uniforms: not a whole number of words
        runs = []
        for enabled in (True, False):
            monkeypatch.setattr(kernels, "enabled", enabled)
            torch.manual_seed(1)
            runs.append(RateEncoder(T=7)(batch.to(dtype)))
        assert runs[0].dtype == runs[1].dtype == dtype and runs[0].shape == (7, *batch.shape)
        assert torch.equal(runs[0], runs[1]) and 0 < runs[0].mean() < 1


def test_rate_uniforms_are_splitmix64():
    """The tensor code's generator is SplitMix64: its published first outputs from seed 0 (Vigna's splitmix64.c)."""
    words = splitmix64_words(0, 3, "cpu").tolist()
    assert [w % 2**64 for w in words] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_rate_gain_scales_and_saturates():
    spikes = RateEncoder(T=100, gain=4.0)(torch.full((2, 1, 28, 28), 0.5))
    assert spikes.mean() == 1.0


def test_latency_one_spike_per_nonzero_pixel_brighter_earlier():
    images = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).view(1, 1, 1, 5)
    spikes = LatencyEncoder(T=10)(images)
    counts = spikes.sum(0).flatten()
    assert counts.tolist() == [0, 1, 1, 1, 1]
    first = spikes.flatten(1).argmax(0)[1:]
    assert first.tolist() == sorted(first.tolist(), reverse=True)
    assert first[-1] == 0 and first[0] == 8  # intensity 1 fires at once, 0.1 near the end


def test_direct_repeats_the_input():
    images = torch.rand(3, 1, 28, 28)
    sequence = DirectEncoder(T=4)(images)
    assert sequence.shape == (4, 3, 1, 28, 28)
    assert all(torch.equal(step, images) for step in sequence)
