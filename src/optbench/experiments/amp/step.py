"""The timed training step, eager or captured as one CUDA graph, and the TF32 switch around it.

The step of one configuration ::

    x (batch, width) -> [Linear(width, width) -> ReLU] x (depth - 1) -> Linear(width, width) -> MSE(., y)
    step = zero_grad; forward under autocast; backward (scaled for fp16); optimizer.step (via the scaler)

On CUDA the optimizer is built with ``fused=True`` (AdamW also with ``capturable=True``): one kernel updates
every parameter, GradScaler hands it the scale and the inf flag instead of syncing the host
(``_step_supports_amp_scaling``), and the whole step, scaler included, can be captured and replayed.
On CPU the optimizer is torch's default implementation.

``TrainingStep.capture`` follows the CUDA-graph recipe of the torch docs ("whole network capture"):
warm-up steps on a side stream, gradients set to None before capture so that backward allocates them
from the graph's pool, static input and target tensors, autocast with ``cache_enabled=False``.
"""

from __future__ import annotations

import contextlib
import warnings

from optbench.registry.precision import AUTOCAST_DTYPES, check_precision, device_type, make_scaler

CAPTURE_WARMUP_STEPS = 3  # on the side stream, as the torch docs do before capture


@contextlib.contextmanager
def tf32_matmuls(allow: bool, device: str):
    """Allow (or forbid) TF32 for fp32 matmuls inside the block; restores the previous setting.

    Forbidding uses ``torch.set_float32_matmul_precision("highest")``, which also keeps oneDNN on CPU
    from using reduced precision for fp32 matmuls. Allowing only flips
    ``torch.backends.cuda.matmul.allow_tf32`` ("high" would switch CPU matmuls to TF32 as well).
    """
    import torch

    before_precision = torch.get_float32_matmul_precision()
    before_cuda = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        if allow:
            torch.backends.cuda.matmul.allow_tf32 = True
        yield
    finally:
        torch.set_float32_matmul_precision(before_precision)
        torch.backends.cuda.matmul.allow_tf32 = before_cuda


class TrainingStep:
    """Model, optimizer, scaler and static data of one configuration.

    ``eager()`` runs one step and returns the model output's dtype (the precision that really ran);
    ``capture()`` returns a ``torch.cuda.CUDAGraph`` whose ``replay()`` is one step. ``loss`` is the last
    step's loss (a device tensor; a captured graph rewrites it on every replay).
    """

    def __init__(self, device: str, width: int, depth: int, batch: int, precision: str, optimizer: str):
        import torch

        check_precision(precision, device)
        self.device = device
        self.kind = device_type(device)
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for i in range(depth):
            layers.append(torch.nn.Linear(width, width, device=device))  # initialised on the device
            if i < depth - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.opt = make_optimizer(self.model.parameters(), optimizer, self.kind == "cuda")
        self.scaler = make_scaler(precision, device)
        name = AUTOCAST_DTYPES[precision]
        self.autocast_dtype = getattr(torch, name) if name else None
        self.x = torch.randn(batch, width, device=device)
        self.y = torch.randn(batch, width, device=device)
        self.loss = None

    def eager(self):
        self.opt.zero_grad(set_to_none=True)
        return self._body(cache_enabled=True)

    def _body(self, cache_enabled: bool):
        import torch
        import torch.nn.functional as F

        if self.autocast_dtype is None:
            context = contextlib.nullcontext()
        else:
            context = torch.autocast(self.kind, dtype=self.autocast_dtype, cache_enabled=cache_enabled)
        with context:
            out = self.model(self.x)
            loss = F.mse_loss(out, self.y)  # autocast runs mse_loss in fp32
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.loss = loss.detach()
        return out.dtype

    def warm_up(self, steps: int) -> set:
        """``steps`` eager steps (optimizer state, the scaler's scale, library handles); their dtypes."""
        with warnings.catch_warnings():
            # capturable=True is on for the capture; in eager steps fused AdamW ignores it.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            return {self.eager() for _ in range(steps)}

    def capture(self):
        """Capture one whole step (forward, backward, scaler, optimizer) as a CUDA graph."""
        import torch

        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(CAPTURE_WARMUP_STEPS):
                    self.opt.zero_grad(set_to_none=True)
                    self._body(cache_enabled=False)
            torch.cuda.current_stream().wait_stream(side)
            self.opt.zero_grad(set_to_none=True)  # backward allocates the gradients inside the graph
            graph = torch.cuda.CUDAGraph()
            # The outer stream context restores the caller's stream even if capture_end raises.
            with torch.cuda.stream(side), torch.cuda.graph(graph, stream=side):
                self._body(cache_enabled=False)
            torch.cuda.synchronize()
        return graph

    def parameters(self) -> list:
        return list(self.model.parameters())


def make_optimizer(params, optimizer: str, on_cuda: bool):
    """AdamW (lr 1e-4) or SGD (lr 1e-3, momentum 0.9); fused (and capturable) on CUDA."""
    import torch

    if optimizer == "adamw":
        extra = {"fused": True, "capturable": True} if on_cuda else {}
        return torch.optim.AdamW(params, lr=1e-4, **extra)
    extra = {"fused": True} if on_cuda else {}
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, **extra)
