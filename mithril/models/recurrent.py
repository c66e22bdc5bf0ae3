"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and their cells) from catalogue primitives.

Each layer of ``RNN`` / ``LSTM`` / ``GRU`` is one loop primitive of the catalogue (``lstm``,
``gru``, ``rnn_tanh``, ``rnn_relu``: ``mithril/framework/loops.py``) run over a time axis whose
length stays a symbol: nothing is unrolled when the model is built and one compiled model serves
any sequence length. Layers are stacked with ``dropout`` between them; ``lengths`` gives
PyTorch's packed-sequence semantics. The cells are one step built from catalogue primitives.
Parameter names, layouts, gate orders and initialisers follow PyTorch, so a ``state_dict``
loads without renaming or transposing.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError, TerminalError
from ..framework.logical.meta import SCALAR
from ..framework.logical.model import Connection, ConnectSpec, IOKey, Model, Operator
from ..framework.ops import CATALOGUE

_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
Ref = Connection | IOKey | str


class _Builder:
    """Adds primitives to ``model`` and hands back their output connections."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.declared: set[str] = set()

    def op(self, name: str, out: str | IOKey | None = None, n: int | None = None, **terms: Any
           ) -> Connection:
        """Add primitive ``name``; scalar terminals in ``terms`` become constants."""
        opdef = CATALOGUE[name]
        scalars = {t.name for t in opdef.inputs if t.kind == SCALAR}
        values = {k: v for k, v in terms.items() if k in scalars}
        wires = {k: v for k, v in terms.items() if k not in scalars}
        prim = Operator(opdef, n_inputs=n, **values)
        out_name = opdef.output_names[0]
        if out is not None:
            wires[out_name] = out
        self.model |= prim(**wires)
        return self.model.bindings[id(prim)][out_name]

    def param(self, name: str, shape: list[Any]) -> Ref:
        """A trainable terminal: declared (shape, type, initialiser) on first use."""
        if name in self.declared:
            return name
        self.declared.add(name)
        return IOKey(name, shape=shape, type=float, differentiable=True)

    def linear(self, x: Ref, weight: Ref, bias: Ref | None) -> Connection:
        return self.op("linear", input=x, weight=weight, bias=bias)

    def concat(self, items: list[Connection], axis: int) -> Connection:
        if len(items) == 1:
            return items[0]
        return self.op("concat", n=len(items), axis=axis,
                       **{f"input{i + 1}": c for i, c in enumerate(items)})


def _zeros_like_hidden(xp: Connection, hidden: int) -> Connection:
    """Zeros shaped like a hidden state, taken from a projection ``(..., gates * hidden)``."""
    return xp[..., 0:hidden] * 0.0


def _step(b: _Builder, mode: str, xp: Connection, h: Ref, c: Ref | None, hidden: int,
          w_hh: Ref, b_hh: Ref | None, h_out: str | None = None,
          c_out: str | IOKey | None = None
          ) -> tuple[Connection, Connection | None]:
    """One time step from the input projection ``xp`` (bias ``b_ih`` included) and state."""
    hs = hidden
    hp = b.linear(h, w_hh, b_hh)
    if mode in ("rnn_tanh", "rnn_relu"):
        pre = xp + hp
        return b.op("tanh" if mode == "rnn_tanh" else "relu", out=h_out, input=pre), None
    if mode == "lstm":
        gates = xp + hp
        sig = gates.sigmoid()  # i, f, _, o (the g block is recomputed with tanh below)
        g = gates[..., 2 * hs:3 * hs].tanh()
        assert c is not None
        c_new = b.op("add", out=c_out, left=sig[..., hs:2 * hs] * c, right=sig[..., 0:hs] * g)
        h_new = b.op("multiply", out=h_out, left=sig[..., 3 * hs:4 * hs], right=c_new.tanh())
        return h_new, c_new
    # gru: r, z, n
    rz = (xp[..., 0:2 * hs] + hp[..., 0:2 * hs]).sigmoid()
    n = (xp[..., 2 * hs:3 * hs] + rz[..., 0:hs] * hp[..., 2 * hs:3 * hs]).tanh()
    h_conn = h if isinstance(h, Connection) else b.model.named[h if isinstance(h, str)
                                                                else str(h.name)]
    h_new = b.op("add", out=h_out, left=n, right=rz[..., hs:2 * hs] * (h_conn - n))
    return h_new, None


def _set_hidden_init(model: Model, names: list[str], hidden: int) -> None:
    for name in names:
        model.set_initializer(name, "uniform_hidden", [hidden])


def _check_sizes(input_size: int | None, hidden_size: int) -> None:
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise ArgumentError(f"input_size must be a positive int, got {input_size!r}")
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ArgumentError(f"hidden_size must be a positive int, got {hidden_size!r}")


# ==============================================================================================
# Sequence layers
# ==============================================================================================
class _Recurrent(Model):
    mode = "lstm"

    def __init__(self, input_size: int | None, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, *,
                 lengths: bool = False, initial_state: bool = False,
                 seq_len: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        _check_sizes(input_size, hidden_size)
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ArgumentError(f"num_layers must be a positive int, got {num_layers!r}")
        if not 0 <= float(dropout) < 1:
            raise ArgumentError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 0:
            raise ArgumentError(f"proj_size must be a non-negative int, got {proj_size!r}")
        if proj_size and self.mode != "lstm":
            raise ArgumentError(f"proj_size is an LSTM argument; {type(self).__name__} has no "
                                "projection")
        if proj_size >= hidden_size:
            raise ArgumentError(f"proj_size ({proj_size}) must be smaller than hidden_size "
                                f"({hidden_size}), as in PyTorch")
        if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool)
                                    or seq_len < 1):
            raise ArgumentError(f"seq_len must be a positive int, got {seq_len!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = proj_size
        self.lengths = bool(lengths)
        self.initial_state = bool(initial_state)
        self.seq_len = seq_len
        self._build()

    @property
    def _state_names(self) -> tuple[str, ...]:
        return ("h_0", "c_0") if self.mode == "lstm" else ("h_0",)

    def connect(self, *args: Any, seq_len: int | None = None, **kw: Any) -> ConnectSpec:
        """Connect terminals as any model; ``h_0``/``c_0`` (also spelled ``h0``/``c0``) need
        ``initial_state=True`` and ``lengths`` needs ``lengths=True`` at construction.
        ``seq_len`` (optional) fixes the length of the time axis."""
        for old in ("h0", "c0"):
            if old in kw:
                kw[old[0] + "_0"] = kw.pop(old)
        for k in self._state_names:  # h_0=None means zeros, as in PyTorch
            if k in kw and kw[k] is None:
                del kw[k]
        if "lengths" in kw and kw["lengths"] is None:
            del kw["lengths"]
        cls = type(self).__name__
        given = [k for k in self._state_names if k in kw]
        if given and not self.initial_state:
            raise TerminalError(
                f"{cls} {self.path!r} was built without initial-state terminals, so "
                f"{', '.join(given)} cannot be connected: construct it with initial_state=True "
                "(without it, the initial state is zeros)")
        if "lengths" in kw and not self.lengths:
            raise TerminalError(
                f"{cls} {self.path!r} was built without a lengths terminal, so lengths cannot "
                f"be connected: construct it with {cls}(..., lengths=True)")
        if seq_len is not None:
            if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
                raise ArgumentError(f"seq_len must be a positive int, got {seq_len!r}")
            self.seq_len = seq_len
            self.set_shapes({"input": self._input_shape()})
        return super().connect(*args, **kw)

    __call__ = connect

    def _serial_kwargs(self) -> dict[str, Any]:
        """Constructor arguments ``to_dict`` must add (a sequence length given at call time)."""
        return {} if self.seq_len is None else {"seq_len": self.seq_len}

    def _input_shape(self) -> list[Any]:
        t = self.seq_len if self.seq_len is not None else "T"
        return [*(["N", t] if self.batch_first else [t, "N"]), self.input_size]

    def _build(self) -> None:
        b = _Builder(self)
        mode, hs, n_l = self.mode, self.hidden_size, self.num_layers
        gs = _GATES[mode] * hs
        n_d = 2 if self.bidirectional else 1
        lstm = mode == "lstm"
        out_size = self.proj_size or hs
        params: list[str] = []
        layer_in: Ref = IOKey("input", type=float)
        lengths: Ref | None = IOKey("lengths", type=int) if self.lengths else None
        finals: dict[str, list[Connection]] = {"h_n": [], "c_n": []}
        state_in: dict[str, Ref] = {}
        if self.initial_state:
            state_in = {k: IOKey(k, type=float) for k in self._state_names}
        for layer in range(n_l):
            in_size = self.input_size if layer == 0 else n_d * out_size
            last = layer == n_l - 1
            wires: dict[str, Any] = {"input": layer_in}
            for d in range(n_d):
                sfx = "_reverse" if d else ""
                key = f"_l{layer}{sfx}"
                shapes = {"weight_ih": [gs, in_size], "weight_hh": [gs, out_size]}
                if self.bias:
                    shapes |= {"bias_ih": [gs], "bias_hh": [gs]}
                if self.proj_size:
                    shapes["weight_hr"] = [self.proj_size, hs]
                for w, shape in shapes.items():
                    params.append(w + key)
                    wires[w + sfx] = b.param(w + key, shape)
            if lengths is not None:
                wires["lengths"] = lengths
                if isinstance(lengths, IOKey):
                    lengths = "lengths"
            for k, ref in list(state_in.items()):
                part = slice(layer * n_d, (layer + 1) * n_d)
                wires[k] = b.op("indexer", input=ref, index=part) if n_l > 1 else ref
                if isinstance(ref, IOKey):
                    state_in[k] = k
            op = Operator(CATALOGUE[mode], batch_first=self.batch_first,
                          bidirectional=self.bidirectional)
            if last:
                wires["output"] = "output"
            if n_l == 1:
                wires["h_n"] = "h_n"
                if lstm:
                    wires["c_n"] = "c_n"
            self |= op(**wires)
            conns = self.bindings[id(op)]
            if isinstance(layer_in, IOKey):
                layer_in = "input"
            finals["h_n"].append(conns["h_n"])
            if lstm:
                finals["c_n"].append(conns["c_n"])
            layer_in = conns["output"]
            if not last and self.dropout > 0:
                layer_in = b.op("dropout", input=layer_in, p=self.dropout)
        if n_l > 1:
            for key in ("h_n", "c_n") if lstm else ("h_n",):
                b.op("concat", out=key, n=n_l, axis=0,
                     **{f"input{i + 1}": c for i, c in enumerate(finals[key])})
        _set_hidden_init(self, params, hs)
        # one batch symbol and one time symbol for every terminal
        state_p, state_h = [n_l * n_d, "N", out_size], [n_l * n_d, "N", hs]
        shapes: dict[str, Any] = {
            "input": self._input_shape(),
            "output": [*(["N", "T"] if self.batch_first else ["T", "N"]), n_d * out_size],
            "h_n": state_p}
        if self.seq_len is not None:
            shapes["output"][1 if self.batch_first else 0] = self.seq_len
        if lstm:
            shapes["c_n"] = state_h
        if self.initial_state:
            shapes["h_0"] = state_p
            if lstm:
                shapes["c_0"] = state_h
        if self.lengths:
            shapes["lengths"] = ["N"]
        self.set_shapes(shapes)
        self.set_cin("input")
        self.set_cout("output")


_SEQ_DOC = """

    Terminals: ``input`` ``(T, N, input_size)`` (``(N, T, input_size)`` with
    ``batch_first=True``); the sequence length T stays a symbol, so one compiled model serves
    any length. With ``initial_state=True`` also {state_in} ``(num_layers * D, N, {hout})``
    (D = 2 if bidirectional else 1), otherwise the initial state is zeros (``h_0=None`` in a
    call means the same). With ``lengths=True`` also ``lengths`` ``(N,)`` (integers, each in
    ``1..T``): PyTorch's ``pack_padded_sequence`` semantics, steps at or past a sequence's
    length give zeros in ``output`` and {state_out} hold the state at each sequence's last
    valid step. Outputs: ``output`` ``(T, N, D * {hout})`` (last layer, both directions
    concatenated, time-major unless ``batch_first``) and {state_out}
    ``(num_layers * D, N, {hout})``{c_n}, as in PyTorch.

    Parameters are named and laid out as PyTorch's: ``weight_ih_l{{k}}`` ``({g} * hidden,
    in)``, ``weight_hh_l{{k}}`` ``({g} * hidden, {hout})``, ``bias_ih_l{{k}}``,
    ``bias_hh_l{{k}}``{proj} and the ``_reverse`` variants; gate order {order}; all
    initialised uniform in ``(-1/sqrt(hidden), 1/sqrt(hidden))``, so a ``state_dict`` loads
    as it is.

    Each layer is one loop primitive (``{mode}`` in the catalogue): PyTorch runs its fused
    ``torch._VF`` kernel, JAX a ``lax.scan``, NumPy a loop with its own backward through time,
    MLX the loop of core kernels. ``dropout`` (between layers) follows ``nn.Dropout``: on in
    training, off with ``compile(..., inference=True)``. ``seq_len=`` (optional) fixes T.
    Inputs must be batched (3-D).
"""


class RNN(_Recurrent):
    """``nn.RNN``: ``h_t = act(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)``, ``act`` ``tanh`` or
    ``relu`` (``nonlinearity=``), stacked and optionally bidirectional.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import RNN
    >>> pm = ml.compile(RNN(3, 5, num_layers=2), ml.NumpyBackend())
    >>> out = pm.evaluate(pm.randomize_params(), {"input": ml.NumpyBackend().randn(4, 2, 3)})
    >>> [list(out[k].shape) for k in ("output", "h_n")]
    [[4, 2, 5], [2, 2, 5]]
    """

    def __init__(self, input_size: int | None, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *,
                 lengths: bool = False, initial_state: bool = False,
                 seq_len: int | None = None, name: str | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ArgumentError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.mode = f"rnn_{nonlinearity}"
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, lengths=lengths, initial_state=initial_state,
                         seq_len=seq_len, name=name)


class LSTM(_Recurrent):
    """``nn.LSTM``: ``i, f, g, o`` gates, ``c_t = f * c_(t-1) + i * g``,
    ``h_t = o * tanh(c_t)`` (times ``weight_hr`` with ``proj_size``), stacked and optionally
    bidirectional.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import LSTM
    >>> pm = ml.compile(LSTM(3, 5, bidirectional=True), ml.NumpyBackend())
    >>> out = pm.evaluate(pm.randomize_params(), {"input": ml.NumpyBackend().randn(4, 2, 3)})
    >>> [list(out[k].shape) for k in ("output", "h_n", "c_n")]
    [[4, 2, 10], [2, 2, 5], [2, 2, 5]]
    """

    mode = "lstm"


class GRU(_Recurrent):
    """``nn.GRU``: ``r, z`` gates, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h_t = (1 - z) * n + z * h_(t-1)``, stacked and optionally bidirectional.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import GRU
    >>> pm = ml.compile(GRU(3, 5, batch_first=True), ml.NumpyBackend())
    >>> out = pm.evaluate(pm.randomize_params(), {"input": ml.NumpyBackend().randn(2, 4, 3)})
    >>> [list(out[k].shape) for k in ("output", "h_n")]
    [[2, 4, 5], [1, 2, 5]]
    """

    mode = "gru"

    def __init__(self, input_size: int | None, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, *, lengths: bool = False,
                 initial_state: bool = False, seq_len: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, lengths=lengths, initial_state=initial_state,
                         seq_len=seq_len, name=name)


RNN.__doc__ = (RNN.__doc__ or "") + _SEQ_DOC.format(
    state_in="``h_0``", state_out="``h_n``", g="1", order="(one gate)", hout="hidden_size",
    c_n="", proj="", mode="rnn_tanh / rnn_relu")
LSTM.__doc__ = (LSTM.__doc__ or "") + _SEQ_DOC.format(
    state_in="``h_0`` and ``c_0`` (``c_0``: hidden_size)", state_out="``h_n`` and ``c_n``",
    g="4", order="i, f, g, o", hout="proj_size or hidden_size",
    c_n=" (``c_n``: hidden_size)", proj=", ``weight_hr_l{k}`` ``(proj_size, hidden)``",
    mode="lstm")
GRU.__doc__ = (GRU.__doc__ or "") + _SEQ_DOC.format(
    state_in="``h_0``", state_out="``h_n``", g="3", order="r, z, n", hout="hidden_size",
    c_n="", proj="", mode="gru")


# ==============================================================================================
# Cells
# ==============================================================================================
class _Cell(Model):
    mode = "lstm"

    def __init__(self, input_size: int | None, hidden_size: int, bias: bool = True, *,
                 initial_state: bool = True, name: str | None = None) -> None:
        super().__init__(name)
        _check_sizes(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bool(bias)
        self.initial_state = bool(initial_state)
        b = _Builder(self)
        hs = hidden_size
        gs = _GATES[self.mode] * hs
        lstm = self.mode == "lstm"
        names = ["weight_ih", "weight_hh", *(["bias_ih", "bias_hh"] if self.bias else [])]
        xp = b.linear(IOKey("input", type=float), b.param("weight_ih", [gs, input_size]),
                      b.param("bias_ih", [gs]) if self.bias else None)
        if initial_state:
            h: Ref = IOKey("hx", type=float)
            c: Ref | None = IOKey("cx", type=float) if lstm else None
        else:
            h = _zeros_like_hidden(xp, hs)
            c = h if lstm else None
        _step(b, self.mode, xp, h, c, hs, b.param("weight_hh", [gs, hs]),
              b.param("bias_hh", [gs]) if self.bias else None, h_out="output",
              c_out=IOKey("c_out", expose=True) if lstm else None)
        _set_hidden_init(self, names, hs)
        self.set_cin("input")
        self.set_cout("output")
        if initial_state:
            shapes: dict[str, Any] = {"input": [("B", ...), input_size], "hx": [("B", ...), hs]}
            if lstm:
                shapes["cx"] = [("B", ...), hs]
            self.set_shapes(shapes)


_CELL_DOC = """

    Terminals: ``input`` ``(N, input_size)`` or ``(input_size)``; with ``initial_state=True``
    (the default) the previous state {state_in} ``(N, hidden_size)`` (or ``(hidden_size)``),
    otherwise zeros. Outputs: {state_out}. Parameters as PyTorch's: ``weight_ih``
    ``({g} * hidden, in)``, ``weight_hh`` ``({g} * hidden, hidden)``, ``bias_ih``, ``bias_hh``
    (gate order {order}), initialised uniform in ``(-1/sqrt(hidden), 1/sqrt(hidden))``.
"""


class RNNCell(_Cell):
    """``nn.RNNCell``: ``output = act(W_ih input + b_ih + W_hh hx + b_hh)``.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import RNNCell
    >>> pm = ml.compile(RNNCell(3, 5), ml.NumpyBackend(), shapes={"input": [2, 3]})
    >>> bk = ml.NumpyBackend()
    >>> out = pm.evaluate(pm.randomize_params(), {"input": bk.randn(2, 3), "hx": bk.randn(2, 5)})
    >>> list(out["output"].shape)
    [2, 5]
    """

    def __init__(self, input_size: int | None, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", *, initial_state: bool = True,
                 name: str | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ArgumentError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.mode = f"rnn_{nonlinearity}"
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, initial_state=initial_state, name=name)


class LSTMCell(_Cell):
    """``nn.LSTMCell``: one LSTM step; ``output`` is ``h_1`` and ``c_out`` is ``c_1``.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import LSTMCell
    >>> pm = ml.compile(LSTMCell(3, 5), ml.NumpyBackend(), shapes={"input": [2, 3]})
    >>> bk = ml.NumpyBackend()
    >>> out = pm.evaluate(pm.randomize_params(), {"input": bk.randn(2, 3),
    ...                                           "hx": bk.randn(2, 5), "cx": bk.randn(2, 5)})
    >>> [list(out[k].shape) for k in ("output", "c_out")]
    [[2, 5], [2, 5]]
    """

    mode = "lstm"


class GRUCell(_Cell):
    """``nn.GRUCell``: one GRU step (gates r, z, n as in ``GRU``).

    >>> import mithril as ml
    >>> from mithril.models.recurrent import GRUCell
    >>> pm = ml.compile(GRUCell(3, 5, initial_state=False), ml.NumpyBackend(),
    ...                 shapes={"input": [2, 3]})
    >>> out = pm.evaluate(pm.randomize_params(), {"input": ml.NumpyBackend().randn(2, 3)})
    >>> list(out["output"].shape)
    [2, 5]
    """

    mode = "gru"


RNNCell.__doc__ = (RNNCell.__doc__ or "") + _CELL_DOC.format(
    state_in="``hx``", state_out="``output`` (the new hidden state)", g="1", order="(one)")
LSTMCell.__doc__ = (LSTMCell.__doc__ or "") + _CELL_DOC.format(
    state_in="``hx`` and ``cx``", state_out="``output`` (``h_1``) and ``c_out`` (``c_1``)",
    g="4", order="i, f, g, o")
GRUCell.__doc__ = (GRUCell.__doc__ or "") + _CELL_DOC.format(
    state_in="``hx``", state_out="``output`` (the new hidden state)", g="3", order="r, z, n")

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell"]
