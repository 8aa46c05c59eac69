"""The paper's losses against an independent numpy computation (non-square, batch > 1)."""

import numpy as np
import pytest

from helpers import random_pixels
from kperceptual.losses import loss_network
from kperceptual.losses import objective as objectives
from kperceptual.losses import perceptual as losses


def np_gram(f):  # f: (B, H, W, C)
    b, h, w, c = f.shape
    out = np.zeros((b, c, c))
    for i in range(b):
        phi = f[i].reshape(h * w, c).astype(np.float64)
        out[i] = phi.T @ phi / (c * h * w)
    return out


def test_feature_reconstruction_loss_matches_numpy():
    a, b = random_pixels((3, 5, 7, 4), 1), random_pixels((3, 5, 7, 4), 2)
    expected = [np.sum((a[i] - b[i]).astype(np.float64) ** 2) / (5 * 7 * 4) for i in range(3)]
    np.testing.assert_allclose(losses.feature_reconstruction_loss(a, b), expected, rtol=1e-5)


def test_gram_matrix_matches_numpy_and_is_symmetric():
    f = random_pixels((2, 6, 9, 5), 3) / 255.0
    g = np.asarray(losses.gram_matrix(f))
    np.testing.assert_allclose(g, np_gram(f), rtol=1e-5)
    np.testing.assert_allclose(g, np.transpose(g, (0, 2, 1)), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_style_reconstruction_loss_matches_numpy(reduction):
    f, s = random_pixels((2, 6, 9, 5), 4) / 255, random_pixels((1, 11, 4, 5), 5) / 255
    diff = np_gram(f) - np_gram(s)  # the style target broadcasts over the batch
    expected = (diff ** 2).sum(axis=(1, 2))
    if reduction == "mean":
        expected = expected / 25
    got = losses.style_reconstruction_loss(losses.gram_matrix(f), losses.gram_matrix(s), reduction)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_style_loss_is_zero_for_the_style_image_itself():
    f = random_pixels((1, 8, 8, 3)) / 255
    assert float(losses.style_reconstruction_loss(losses.gram_matrix(f), losses.gram_matrix(f))[0]) == 0


def test_total_variation_matches_numpy():
    x = random_pixels((2, 5, 8, 3), 6)
    expected = [np.sum(np.diff(x[i].astype(np.float64), axis=0) ** 2)
                + np.sum(np.diff(x[i].astype(np.float64), axis=1) ** 2) for i in range(2)]
    np.testing.assert_allclose(losses.total_variation_loss(x), expected, rtol=1e-5)
    assert float(losses.total_variation_loss(np.full((1, 4, 4, 3), 7.0))[0]) == 0


def test_pixel_loss_matches_numpy():
    a, b = random_pixels((2, 3, 5, 3), 7), random_pixels((2, 3, 5, 3), 8)
    expected = ((a - b).astype(np.float64) ** 2).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(losses.pixel_loss(a, b), expected, rtol=1e-5)


def test_unknown_style_reduction_is_refused():
    g = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="style reduction"):
        losses.style_reconstruction_loss(g, g, "median")


def test_objective_is_the_weighted_sum_of_the_paper_terms(loss_net, photos):
    from kperceptual.imaging import images

    content = np.stack([images.resize_and_center_crop(photos[n], 48)
                        for n in ("astronaut", "chelsea")]).astype(np.float32)
    content = content[:, :, :40]  # non-square
    style = images.resize_long_side(photos["coffee"], 64).astype(np.float32)
    targets = objectives.style_targets_from_image(loss_net, style, loss_network.STYLE_LAYERS)
    objective = objectives.PerceptualObjective(loss_net, targets, ("relu2_2",),
                                           loss_network.STYLE_LAYERS, content_weight=2.0,
                                           style_weight=3.0, tv_weight=1e-4)
    stylised = np.clip(content + random_pixels(content.shape, 9) * 0.2 - 25, 0, 255)
    terms = objective(stylised, objective.content_targets(content))

    f_out, f_content = loss_net(stylised), loss_net(content)
    content_ref = [np.mean((np.asarray(f_out["relu2_2"][i]) - np.asarray(f_content["relu2_2"][i]))
                           .astype(np.float64) ** 2) for i in range(2)]
    style_ref = sum(((np_gram(np.asarray(f_out[l])) - targets[l]) ** 2).sum(axis=(1, 2))
                    for l in loss_network.STYLE_LAYERS)
    tv_ref = np.asarray(losses.total_variation_loss(stylised))
    np.testing.assert_allclose(terms["content"], 2.0 * np.array(content_ref), rtol=1e-4)
    np.testing.assert_allclose(terms["style"], 3.0 * style_ref, rtol=1e-3)
    np.testing.assert_allclose(terms["tv"], 1e-4 * tv_ref, rtol=1e-5)
    np.testing.assert_allclose(terms["total"], terms["content"] + terms["style"] + terms["tv"],
                               rtol=1e-6)
    # The content term vanishes when the output is the content image.
    same = objective(content, objective.content_targets(content))
    np.testing.assert_allclose(same["content"], 0.0, atol=1e-6)
