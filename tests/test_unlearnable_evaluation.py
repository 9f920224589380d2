"""CUDA's published effect on real CIFAR-10 at CI scale: a victim that fits the CUDA-poisoned training
set fails on clean test images; the one-kernel control does not; the class-kernel oracle restores it."""
from __future__ import annotations

import pytest

from attacks.unlearnable.evaluation import VictimConfig, clean_baseline, evaluate_cuda
from attacks.unlearnable.unlearnable import CudaConfig
from robustbench_local.data import load_dataset

# 2,000 exact CIFAR-10 training images, the 846 exact test images; the zoo's small BatchNorm CNN,
# SGD + one-cycle for 15 epochs fits both the clean and the poisoned set (~20 s per victim on one core).
N_TRAIN = 2000
VICTIM = VictimConfig(architecture="cnn_bn_small", epochs=15, lr=0.05, batch_size=128, optimizer="sgd",
                      weight_decay=5e-4, seed=0)


@pytest.fixture(scope="module")
def cifar():
    return load_dataset("cifar10", "train", n=N_TRAIN), load_dataset("cifar10", "test")


def test_cuda_makes_cifar10_unlearnable_and_controls_behave(cifar):
    train, test = cifar
    baseline = clean_baseline(train, test, VICTIM)
    assert baseline.train_acc >= 0.95, f"clean victim does not fit its training set ({baseline.train_acc:.3f})"
    assert baseline.test_acc >= 0.40, f"clean victim learned too little to compare against ({baseline.test_acc:.3f})"

    cuda = evaluate_cuda(train, test, CudaConfig(kernel_size=3, blur=0.3, key=0), VICTIM, baseline=baseline)
    # the shortcut is learned only when the victim fits the poisoned set: check that it does
    assert cuda.poisoned_train_acc >= 0.95, f"CUDA victim does not fit the poisoned set ({cuda.poisoned_train_acc:.3f})"
    assert cuda.poisoned_trained_acc <= 0.6 * cuda.clean_trained_acc, cuda.metrics()
    # oracle: test images blurred with their own class kernel are classified by the shortcut
    assert cuda.oracle_acc is not None and cuda.oracle_acc >= 0.6, cuda.metrics()
    assert cuda.oracle_acc > cuda.clean_trained_acc

    same = evaluate_cuda(train, test, CudaConfig(kernel_size=3, blur=0.3, key=0, same=True), VICTIM,
                         baseline=baseline, oracle=False)
    # one kernel for every class carries no label information: accuracy must not collapse
    assert same.poisoned_train_acc >= 0.95
    assert abs(same.poisoned_trained_acc - same.clean_trained_acc) <= 0.10, same.metrics()
    assert same.poisoned_trained_acc > cuda.poisoned_trained_acc + 0.15
