"""Built-in recipes: plain and PGD-adversarially trained MLPs and CNNs for every data set."""
from __future__ import annotations

from robustbench_local.zoo.recipes import Recipe, register_recipe

_DIGITS = dict(epochs=40, lr=3e-3, batch_size=64)
_MNIST = dict(epochs=6, lr=3e-3, batch_size=128)
_CIFAR = dict(epochs=30, lr=0.05, batch_size=128, optimizer="sgd", weight_decay=5e-4, augment=True)
_GTSRB = dict(epochs=8, lr=3e-3, batch_size=128)

_RECIPES = [
    # digits (8x8): the default data set of the quick start.
    Recipe("standard_cnn", "digits", "cnn_small", _DIGITS, description="plain CNN, the quick-start default"),
    Recipe("standard_mlp", "digits", "mlp", _DIGITS, description="plain 64-128-64-10 MLP"),
    Recipe("standard_mlp_tiny", "digits", "mlp_tiny", dict(_DIGITS, epochs=60),
           description="64-16-10 ReLU MLP small enough for exact verification"),
    Recipe("pgd_linf_cnn", "digits", "cnn_small", dict(_DIGITS, adversarial="Linf", eps=0.1, steps=7),
           threat_models=("Linf",), defense="pgd_at", description="PGD-7 Linf adversarial training, eps 0.1"),
    Recipe("pgd_l2_cnn", "digits", "cnn_small", dict(_DIGITS, adversarial="L2", eps=0.5, steps=7),
           threat_models=("L2",), defense="pgd_at", description="PGD-7 L2 adversarial training, eps 0.5"),
    # MNIST (28x28), trained on the 8,000-image train split of the test set.
    Recipe("standard_cnn", "mnist", "cnn_small", _MNIST, description="plain CNN"),
    Recipe("standard_mlp", "mnist", "mlp", _MNIST, description="plain MLP"),
    Recipe("pgd_linf_cnn", "mnist", "cnn_small", dict(_MNIST, epochs=8, adversarial="Linf", eps=0.2, steps=7),
           threat_models=("Linf",), defense="pgd_at", description="PGD-7 Linf adversarial training, eps 0.2"),
    Recipe("pgd_l2_cnn", "mnist", "cnn_small", dict(_MNIST, epochs=8, adversarial="L2", eps=1.5, steps=7),
           threat_models=("L2",), defense="pgd_at", description="PGD-7 L2 adversarial training, eps 1.5"),
    # CIFAR-10 (32x32x3), trained on the exact 4,660-image train subset.
    Recipe("standard_cnn", "cifar10", "cnn_bn", _CIFAR, description="BatchNorm CNN, SGD + one-cycle"),
    Recipe("pgd_linf_cnn", "cifar10", "cnn_bn", dict(_CIFAR, adversarial="Linf", eps=8 / 255, steps=5),
           threat_models=("Linf",), defense="pgd_at", description="PGD-5 Linf adversarial training, eps 8/255"),
    Recipe("pgd_l2_cnn", "cifar10", "cnn_bn", dict(_CIFAR, adversarial="L2", eps=0.5, steps=5),
           threat_models=("L2",), defense="pgd_at", description="PGD-5 L2 adversarial training, eps 0.5"),
    # GTSRB (32x32x3, 43 classes), trained on the 10,000-image train split of the test set.
    Recipe("standard_cnn", "gtsrb", "cnn_small", _GTSRB, description="plain CNN"),
    Recipe("pgd_linf_cnn", "gtsrb", "cnn_small", dict(_GTSRB, adversarial="Linf", eps=8 / 255, steps=5),
           threat_models=("Linf",), defense="pgd_at", description="PGD-5 Linf adversarial training, eps 8/255"),
]

for _recipe in _RECIPES:
    register_recipe(_recipe)
