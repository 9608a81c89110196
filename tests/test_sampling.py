"""Depth sampling: stratified bins, intervals, inverse-CDF sampling and ray/box clipping."""

from __future__ import annotations

import pytest
import torch

from nerf.sampling import intervals, ray_box, sample_pdf, stratified_samples


def test_stratified_samples_lie_in_their_bins_and_are_sorted() -> None:
    gen = torch.Generator().manual_seed(0)
    t = stratified_samples(50, 8, 2.0, 6.0, randomized=True, generator=gen)
    assert t.shape == (50, 8)
    width = 4.0 / 8
    lo = 2.0 + width * torch.arange(8)
    assert torch.all(t >= lo) and torch.all(t < lo + width)
    assert torch.all(t[:, 1:] > t[:, :-1])
    # Jittered: not all rays share the same depths.
    assert t.std(dim=0).min() > 0


def test_stratified_samples_deterministic_are_bin_centres_the_mean_of_the_randomized() -> None:
    t = stratified_samples(3, 4, 2.0, 6.0, randomized=False)
    assert t.tolist() == [[2.5, 3.5, 4.5, 5.5]] * 3
    assert torch.equal(t, stratified_samples(3, 4, 2.0, 6.0, randomized=False))
    # What training sees on average is what rendering reads (bins 1 wide: the mean of 20,000
    # uniform draws is within 0.01 of the centre).
    drawn = stratified_samples(20_000, 4, 2.0, 6.0, True, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(drawn.mean(dim=0), t[0], atol=0.01)


def test_stratified_samples_per_ray_near_far() -> None:
    near, far = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 5.0])
    t = stratified_samples(2, 2, near, far, randomized=False)
    assert t.tolist() == [[0.25, 0.75], [2.0, 4.0]]
    gen = torch.Generator().manual_seed(1)
    t = stratified_samples(2, 2, near, far, randomized=True, generator=gen)
    assert 0.0 <= t[0, 0] < 0.5 <= t[0, 1] < 1.0
    assert 1.0 <= t[1, 0] < 3.0 <= t[1, 1] < 5.0


def test_stratified_samples_seeded_generator_reproducible() -> None:
    a = stratified_samples(4, 16, 2.0, 6.0, True, generator=torch.Generator().manual_seed(5))
    b = stratified_samples(4, 16, 2.0, 6.0, True, generator=torch.Generator().manual_seed(5))
    c = stratified_samples(4, 16, 2.0, 6.0, True, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_intervals_hand_case() -> None:
    t = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.5, 7.0]])
    starts, ends = intervals(t, 5.0)
    assert torch.equal(starts, t)
    # The last interval ends at far; one past far ends where it starts (zero length).
    assert ends.tolist() == [[2.0, 4.0, 5.0], [0.5, 7.0, 7.0]]
    _, ends = intervals(t, torch.tensor([6.0, 8.0]))
    assert ends[:, -1].tolist() == [6.0, 8.0]


EDGES = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])


def test_sample_pdf_one_hot_weights_put_every_sample_in_that_bin() -> None:
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    t = sample_pdf(EDGES, weights, 64, randomized=False)
    assert t.shape == (1, 64)
    assert torch.all((t >= 2.0) & (t <= 3.0))
    assert torch.all(t[:, 1:] >= t[:, :-1])
    # Evenly spaced CDF levels map linearly across the bin (up to the 1e-5 weight floor).
    u = torch.linspace(0, 1, 66)[1:-1]
    assert torch.allclose(t[0], 2.0 + u, atol=1e-4)
    assert torch.equal(t, sample_pdf(EDGES, weights, 64, randomized=False))


def test_sample_pdf_uniform_weights_invert_a_linear_cdf() -> None:
    t = sample_pdf(EDGES, torch.ones(1, 4), 9, randomized=False)
    u = torch.linspace(0, 1, 11)[1:-1]
    assert torch.allclose(t[0], 4.0 * u, atol=1e-5)


def test_sample_pdf_hand_computed_inverse_cdf() -> None:
    # Weights 3:0:1:0 -> CDF at the edges 0, .75, .75, 1, 1: u < .75 maps to u/.75 in bin 0,
    # u > .75 to 2 + (u - .75)/.25 in bin 2.
    weights = torch.tensor([[3.0, 0.0, 1.0, 0.0]])
    t = sample_pdf(EDGES, weights, 7, randomized=False)
    u = torch.linspace(0, 1, 9)[1:-1]
    expected = torch.where(u < 0.75, u / 0.75, 2.0 + (u - 0.75) / 0.25)
    assert torch.allclose(t[0], expected, atol=1e-4)


def test_sample_pdf_concentrates_where_the_weights_are() -> None:
    weights = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
    n = 4000
    generator = torch.Generator().manual_seed(0)
    t = sample_pdf(EDGES.expand(2, 5), weights, n, randomized=True, generator=generator)
    assert t.shape == (2, n)
    assert torch.all(t[:, 1:] >= t[:, :-1])
    assert torch.all((t >= 0.0) & (t <= 4.0))
    bins = t.floor().clamp(max=3).long()
    counts = torch.stack([torch.bincount(b, minlength=4) for b in bins]).float()
    # Empty bins hold only the 1e-5 floor: expected 0.05 samples each.
    assert counts[0, 1] + counts[0, 3] <= 2 and counts[1, 0] + counts[1, 2] <= 2
    # 3:1 of 4000 samples: 3000 +- 27 (binomial sd); 0.03 of 4000 is > 4 sd.
    assert float(counts[0, 0] / n) == pytest.approx(0.75, abs=0.03)
    assert float(counts[1, 3] / n) == pytest.approx(0.75, abs=0.03)
    # Deterministic levels split exactly 3:1 (to one sample).
    t = sample_pdf(EDGES, weights[:1], 400, randomized=False)
    assert abs(int((t < 1.0).sum()) - 300) <= 1


def test_sample_pdf_of_all_zero_weights_spreads_evenly() -> None:
    # A ray through empty space (every coarse weight 0) must still get finite, evenly spread
    # samples, not the 0/0 of an unnormalisable pdf.
    t = sample_pdf(EDGES, torch.zeros(1, 4), 9, randomized=False)
    assert torch.isfinite(t).all()
    assert torch.allclose(t[0], 4.0 * torch.linspace(0, 1, 11)[1:-1], atol=1e-5)


def test_sample_pdf_seeded_and_deterministic() -> None:
    weights = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    edges = EDGES.expand(3, 5)
    a = sample_pdf(edges, weights, 10, True, torch.Generator().manual_seed(9))
    b = sample_pdf(edges, weights, 10, True, torch.Generator().manual_seed(9))
    c = sample_pdf(edges, weights, 10, True, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(sample_pdf(edges, weights, 10, False), sample_pdf(edges, weights, 10, False))


def test_sample_pdf_respects_uneven_edges() -> None:
    edges = torch.tensor([[2.0, 2.5, 4.0, 6.0]])
    t = sample_pdf(edges, torch.tensor([[0.0, 1.0, 0.0]]), 20, randomized=True,
                   generator=torch.Generator().manual_seed(0))
    assert torch.all((t >= 2.5) & (t <= 4.0))


def test_ray_box_hand_cases() -> None:
    origins = torch.tensor([
        [0.0, 0.0, 5.0],  # down the z axis
        [0.0, 0.0, 5.0],  # same, direction twice as long: t halves
        [3.0, 0.0, 5.0],  # parallel to z, beside the cube: miss
        [0.0, 0.0, 0.0],  # from the centre
        [-2.0, -2.0, -2.0],  # along the diagonal
        [0.0, 5.0, 0.0],  # pointing away
    ])
    directions = torch.tensor([
        [0.0, 0.0, -1.0],
        [0.0, 0.0, -2.0],
        [0.0, 0.0, -1.0],
        [1.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.0, 1.0, 0.0],
    ])
    t_enter, t_exit = ray_box(origins, directions, 1.0)
    assert t_enter[[0, 1, 3, 4]].tolist() == pytest.approx([4.0, 2.0, -1.0, 1.0])
    assert t_exit[[0, 1, 3, 4]].tolist() == pytest.approx([6.0, 3.0, 1.0, 3.0])
    assert t_enter[2] > t_exit[2]
    # Pointing away: the slab intersection lies behind the origin (t_exit < 0).
    assert t_exit[5] < 0
    # The entry point lies on the cube's surface.
    hit = origins[0] + t_enter[0] * directions[0]
    assert hit.tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_ray_box_on_a_face_and_parallel_to_it_is_finite() -> None:
    # Zero direction components on the plane of a face: (bound - x) / 0 would be 0/0 (NaN).
    # The ray grazes the face; either answer is fine, as long as it is a number.
    origins = torch.tensor([[1.0, 0.0, 5.0], [0.0, -1.0, 5.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    t_enter, t_exit = ray_box(origins, directions, 1.0)
    assert torch.isfinite(t_enter).all() and torch.isfinite(t_exit).all()
