"""Synthetic chip features with known classes, for tests and benchmarks of the segmenters."""

from __future__ import annotations

import numpy as np


def make_multimodal_blobs(
    n_chips: int = 400,
    n_classes: int = 4,
    image_dim: int = 512,
    comp_dim: int = 12,
    image_confused: tuple[int, int] | None = (0, 2),
    comp_confused: tuple[int, int] | None = (1, 2),
    image_noise: float = 1.0,
    comp_noise: float = 1.5,
    random_state: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Clustered chip features in a VGG-like image space and an at.%-like composition space.

    - ``"haadf"``: ``(n_chips, image_dim)`` float32, non-negative like ReLU features:
      ``relu(shared + centre_k + image_noise * N(0, 1))``;
    - ``"eds"``: ``(n_chips, comp_dim)`` float32 compositions in at.% (class compositions summing to
      100, plus ``comp_noise`` at.% Gaussian noise, clipped at 0). With 4 classes and
      ``comp_dim >= 6`` the classes mimic the preprint's sample (columns O, Sr, Ti, La, Fe, Cr, then
      trace elements at 0.5 at.%): 0 substrate SrTiO3, 1 film_ordered LaFeO3, 2 film_disordered
      LaFeO3, 3 Cr cap; otherwise Dirichlet compositions.

    ``image_confused`` / ``comp_confused`` name a pair of classes that share the same centre in that
    modality (so the modality alone cannot tell them apart). The defaults follow the preprint's
    irradiated pristine sample: HAADF confuses disordered film with the substrate (0, 2), EDS
    confuses ordered with disordered film (1, 2); only the combination separates all 4 classes.
    Truth labels are balanced and shuffled in chip order. Returns ``(features, truth)``.
    """
    rng = np.random.default_rng(random_state)
    truth = rng.permutation(np.arange(n_chips) % n_classes)

    shared = np.abs(rng.normal(0.0, 1.0, image_dim))
    centres = rng.normal(0.0, 1.5, (n_classes, image_dim))
    if n_classes == 4 and comp_dim >= 6:
        comps = np.full((4, comp_dim), 0.5)
        comps[:, :6] = [[60, 20, 20, 0, 0, 0], [60, 0, 0, 20, 20, 0], [60, 0, 0, 20, 20, 0], [20, 0, 0, 0, 0, 80]]
        comps *= 100.0 / comps.sum(axis=1, keepdims=True)
    else:
        comps = rng.dirichlet(np.full(comp_dim, 0.3), n_classes) * 100.0
    if image_confused is not None:
        centres[image_confused[1]] = centres[image_confused[0]]
    if comp_confused is not None:
        comps[comp_confused[1]] = comps[comp_confused[0]]

    image = shared + centres[truth] + image_noise * rng.normal(0.0, 1.0, (n_chips, image_dim))
    image = np.maximum(image, 0.0).astype(np.float32)
    eds = comps[truth] + comp_noise * rng.normal(0.0, 1.0, (n_chips, comp_dim))
    eds = np.maximum(eds, 0.0).astype(np.float32)
    return {"haadf": image, "eds": eds}, truth.astype(np.int64)
