"""The NumPy backend's forward+backward on the guide's ConvNet against PyTorch eager."""

from __future__ import annotations

import numpy as np

from .timing import best_time, table


def run(batch: int = 32) -> str:
    import torch

    import mithril as ml
    from tests.guide_models import create_conv_net
    from tests.torch_reference import CONVNET_NAMES, TorchConvNet, load_into

    torch.set_num_threads(torch.get_num_threads())
    backend = ml.NumpyBackend(dtype=ml.float32)
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [batch, 3, 32, 32]})
    params = pm.randomize_params()
    x = backend.randn(batch, 3, 32, 32)
    grad = np.ones((batch, 10), dtype=np.float32)

    def mithril_step():
        return pm.evaluate(params, {"input": x}, output_gradients={"output": grad})

    net = TorchConvNet()
    load_into(net, params, CONVNET_NAMES, backend.to_numpy)
    xt = torch.from_numpy(x)
    gt = torch.from_numpy(grad)

    def torch_step():
        net.zero_grad(set_to_none=True)
        out = net(xt)
        out.backward(gt)
        return out

    t_ml = best_time(mithril_step, repeat=7, number=3)
    t_pt = best_time(torch_step, repeat=7, number=3)
    rows = [["model", "PyTorch eager ms", "Mithril NumPy ms", "ratio"],
            [f"ConvNet (batch {batch})", f"{t_pt * 1e3:.2f}", f"{t_ml * 1e3:.2f}",
             f"{t_ml / t_pt:.2f}x"]]
    return "NumPy backend forward+backward vs PyTorch eager (target <= 3x)\n" + table(rows)


if __name__ == "__main__":
    print(run())
