"""The kernel registry: a backend's table is what it registered, checked against the catalogue."""

from __future__ import annotations

import numpy as np
import pytest

import mithril as ml
from mithril.backends.numpy import kernels as npk
from mithril.backends.registry import KernelRegistry, KernelRegistryError
from mithril.framework.ops import core_ops, tensor_ops


def _copy_of_numpy() -> KernelRegistry:
    reg = KernelRegistry("test")
    reg.kernels.update(npk.registry.kernels)
    reg.vjps.update(npk.registry.vjps)
    return reg


def test_a_misspelled_kernel_is_an_error_naming_it() -> None:
    reg = _copy_of_numpy()
    reg.kernel("sofplus")(np.exp)
    with pytest.raises(KernelRegistryError, match="'sofplus'.*not a catalogue primitive"):
        reg.table()


def test_a_missing_core_kernel_is_an_error_naming_it() -> None:
    reg = _copy_of_numpy()
    del reg.kernels[("exp", "default")]
    with pytest.raises(KernelRegistryError, match=r"no kernel for the core primitives \['exp'\]"):
        reg.table()


def test_a_missing_core_vjp_is_an_error_for_manual_gradients_only() -> None:
    reg = _copy_of_numpy()
    del reg.vjps["exp"]
    assert "exp" in reg.table(manual_gradients=False)
    with pytest.raises(KernelRegistryError, match=r"no VJP for the core primitives \['exp'\]"):
        reg.table(manual_gradients=True)


def test_inference_kernel_only_for_modal_primitives_and_no_duplicates() -> None:
    reg = _copy_of_numpy()
    reg.kernel("relu", mode="inference")(np.exp)
    with pytest.raises(KernelRegistryError, match="'relu', which has no modes"):
        reg.table()
    with pytest.raises(KernelRegistryError, match="two kernels for 'exp'"):
        npk.registry.kernel("exp")(np.exp)
    with pytest.raises(KernelRegistryError, match="unknown mode"):
        npk.registry.kernel("exp", mode="fast")


def test_every_backend_table_covers_every_tensor_primitive() -> None:
    for cls in (ml.NumpyBackend, ml.TorchBackend, ml.JaxBackend, ml.MlxBackend):
        table = cls().kernel_table()
        missing = [op.name for op in tensor_ops() if op.name not in table]
        assert not missing, (cls.__name__, missing)
        core_missing = [op.name for op in core_ops()
                        if (op.name, "default") not in cls.kernels.registry.kernels]
        assert not core_missing, (cls.__name__, core_missing)

