"""MAP-Elites fooling images (Nguyen et al. 2015): operators, archive, and the effect on the MNIST zoo CNN."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from attacks.base import AttackError
from attacks.black_box import ProbabilityOracle
from attacks.fooling.cppn import ACTIVATIONS, NUM_INPUTS, CPPNEncoding, hls_to_rgb
from attacks.fooling.direct_encoding import DirectEncoding, polynomial_mutation, sbx_crossover
from attacks.fooling.map_elites import ClassArchive, MapElitesConfig, map_elites_fooling
from attacks.fooling.result import nearest_same_class_distance, real_nearest_neighbour_distance
from robustbench_local.data import load_dataset


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist", "test")


def test_polynomial_mutation_touches_about_rate_of_genes_and_stays_in_range():
    rng = np.random.default_rng(0)
    x = rng.random((200, 784))
    y = polynomial_mutation(x, 0.1, 15.0, rng)
    changed = (y != x).mean()
    assert 0.09 < changed < 0.11
    assert y.min() >= 0.0 and y.max() <= 1.0
    # eta = 15 keeps most perturbations small: the median |delta| of mutated genes is well below 0.1.
    delta = np.abs(y - x)[y != x]
    assert np.median(delta) < 0.06


def test_sbx_children_keep_the_parents_mean_and_range():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.2, 0.8, (50, 100)), rng.uniform(0.2, 0.8, (50, 100))
    c1, c2 = sbx_crossover(a, b, 10.0, rng)
    inside = (c1 > 0) & (c1 < 1) & (c2 > 0) & (c2 < 1)
    np.testing.assert_allclose((c1 + c2)[inside], (a + b)[inside], atol=1e-12)
    assert 0.3 < ((c1 != a) & (c1 != b)).mean() < 0.7   # each gene recombined with probability 0.5


def test_one_child_takes_every_cell_it_beats():
    archive = ClassArchive(3)
    imgs = torch.zeros(2, 1, 2, 2)
    archive.add(["a", "b"], imgs, np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]))
    assert archive.genomes == ["a", "b", "a"]          # tie on class 2: the first one stays
    improved = archive.add(["c"], imgs[:1], np.array([[0.6, 0.05, 0.35]]))
    assert improved == 2 and archive.genomes == ["c", "b", "c"]
    np.testing.assert_allclose(archive.fitness, [0.6, 0.6, 0.35])


def test_class_archive_matches_a_pyribs_grid_archive_with_one_cell_per_class():
    """Our archive equals pyribs' GridArchive fed every child once per class (measure = class)."""
    from ribs.archives import GridArchive

    c, dim = 10, 6
    ours = ClassArchive(c)
    ribs = GridArchive(solution_dim=dim, dims=[c], ranges=[(-0.5, c - 0.5)])
    rng = np.random.default_rng(4)
    for _ in range(20):
        sols = rng.random((16, dim))
        probs = rng.dirichlet(np.full(c, 0.3), 16)
        ours.add(list(sols), torch.from_numpy(sols).view(16, 1, 1, dim), probs)
        ribs.add(np.repeat(sols, c, axis=0), probs.reshape(-1), np.tile(np.arange(c), 16)[:, None].astype(float))
    data = ribs.data()
    order = np.argsort(data["index"])
    np.testing.assert_allclose(ours.fitness, data["objective"][order])
    np.testing.assert_allclose(np.stack(ours.genomes), data["solution"][order])


def test_cppn_mutations_keep_a_valid_feed_forward_graph():
    enc = CPPNEncoding((1, 12, 12))
    rng = np.random.default_rng(2)
    pop = enc.random(20, rng)
    grew = 0
    for _ in range(40):
        pop = enc.mutate(pop, rng)
        for g in pop:
            for (s, d), gene in g.connections.items():
                assert s in g.depth and d in g.depth and d >= NUM_INPUTS
                assert g.depth[s] < g.depth[d] and 0.0 <= gene <= 1.0
            assert set(g.activation) == set(g.depth) - set(range(NUM_INPUTS))
            assert all(0 <= a < len(ACTIVATIONS) for a in g.activation.values())
            grew += len(g.hidden) > 0
    assert grew > 0                                      # topology actually grows
    images = enc.render(pop)
    assert images.shape == (20, 1, 12, 12) and images.min() >= 0 and images.max() <= 1
    assert images.flatten(1).std(dim=1).gt(0.01).any()  # patterns, not flat images


def test_cppn_colour_output_is_hls_converted_rgb():
    h, l, s = np.random.default_rng(3).random((3, 50))
    rgb = hls_to_rgb(h, l, s)
    expected = np.array([colorsys.hls_to_rgb(*v) for v in zip(h, l, s)]).T
    np.testing.assert_allclose(rgb, expected, atol=1e-12)
    enc = CPPNEncoding((3, 16, 16))
    images = enc.render(enc.mutate(enc.random(4, np.random.default_rng(0)), np.random.default_rng(1)))
    assert images.shape == (4, 3, 16, 16) and 0 <= images.min() and images.max() <= 1


def test_bad_settings_are_rejected():
    with pytest.raises(AttackError, match="image_shape"):
        CPPNEncoding((2, 8, 8))
    with pytest.raises(AttackError, match="mutation_rate"):
        DirectEncoding((1, 8, 8), mutation_rate=0.0)
    with pytest.raises(AttackError, match="cross_rate"):
        MapElitesConfig(cross_rate=1.5)
    with pytest.raises(AttackError, match="oracle returned"):
        map_elites_fooling(lambda x: torch.ones(len(x), 3) / 3, DirectEncoding((1, 4, 4)), 10,
                           MapElitesConfig(init_size=4, batch_size=4, generations=1))


def _check_fools_every_class(result, oracle, threshold, mnist_cnn, mnist_test):
    assert result.confidence.min() >= threshold, result.confidence
    assert result.predicted.tolist() == list(range(10))
    assert oracle.queries == result.evaluations                   # black-box: every image is a counted query
    # The harness does not trust the search: re-measure the confidences on the model.
    with torch.no_grad():
        probs = mnist_cnn(result.images).softmax(1)
    assert probs[torch.arange(10), torch.arange(10)].min() >= threshold
    # Unrecognisable: farther from every test image of its class than a typical test image is from
    # its nearest same-class neighbour.
    fool = np.array(nearest_same_class_distance(result.images, result.classes, mnist_test.x, mnist_test.y))
    real = np.array(real_nearest_neighbour_distance(mnist_test.x, mnist_test.y, 10))
    assert (fool > real).all(), (fool, real)
    first = result.first_evaluation[:, 0]
    assert (first > 0).all() and (first <= result.evaluations).all()


def test_direct_encoding_fools_mnist_cnn_on_every_class(mnist_cnn, mnist_test):
    oracle = ProbabilityOracle(mnist_cnn)
    cfg = MapElitesConfig(generations=150, stop_confidence=0.99)
    result = map_elites_fooling(oracle, DirectEncoding((1, 28, 28)), 10, cfg, seed=0)
    _check_fools_every_class(result, oracle, 0.99, mnist_cnn, mnist_test)
    assert result.evaluations <= 200 * 151
    # Selection does the work: as many uniform-noise images (the initial population's law) stay far
    # below 0.99 on several classes.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        noise = torch.rand((result.evaluations, 1, 28, 28), generator=gen)
        best_random = torch.cat([mnist_cnn(x).softmax(1) for x in noise.split(2000)]).max(0).values
    assert (best_random < 0.5).sum() >= 3, best_random


def test_cppn_encoding_fools_mnist_cnn_on_every_class(mnist_cnn, mnist_test):
    oracle = ProbabilityOracle(mnist_cnn)
    cfg = MapElitesConfig(generations=100, cross_rate=0.0, stop_confidence=0.99)
    result = map_elites_fooling(oracle, CPPNEncoding((1, 28, 28)), 10, cfg, seed=0)
    _check_fools_every_class(result, oracle, 0.99, mnist_cnn, mnist_test)
    assert all(g.num_nodes() >= NUM_INPUTS + 1 for g in result.genomes)


@pytest.mark.parametrize("encoding", [DirectEncoding((1, 28, 28)), CPPNEncoding((1, 28, 28))], ids=["direct", "cppn"])
def test_seed_makes_evolution_reproducible(encoding, mnist_cnn):
    cfg = MapElitesConfig(init_size=40, batch_size=40, generations=4, stop_confidence=None)
    runs = [map_elites_fooling(ProbabilityOracle(mnist_cnn), encoding, 10, cfg, seed=s) for s in (5, 5, 6)]
    assert torch.equal(runs[0].images, runs[1].images)
    assert torch.equal(runs[0].confidence, runs[1].confidence)
    assert not torch.equal(runs[0].images, runs[2].images)
