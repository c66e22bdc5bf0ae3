"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and their cells) from catalogue primitives.

Every layer is unrolled over time when it is built: the input projection of a whole layer is one
``linear``; each time step indexes it, adds the hidden projection (``linear``) and applies the
gates (``sigmoid``, ``tanh``, ``multiply``, ``add``); the hidden states of all steps are joined
with ``concat`` + ``reshape``. Gradients therefore come from the primitives' own VJPs on every
backend. Parameter names, layouts, gate orders and initialisers follow PyTorch, so a
``state_dict`` loads without renaming or transposing.

Unrolling needs the sequence length when the model is built: give ``seq_len=`` to the
constructor or to the call (``LSTM(4, 8)(input="x", seq_len=10)``), or connect ``input`` to a
connection whose time dimension is already known.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError, CompileError, TerminalError
from ..framework.logical.meta import SCALAR, TENSOR
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
                 bidirectional: bool = False, *, seq_len: int | None = None,
                 initial_state: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        _check_sizes(input_size, hidden_size)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ArgumentError(f"num_layers must be a positive int, got {num_layers!r}")
        if not 0 <= float(dropout) < 1:
            raise ArgumentError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.initial_state = bool(initial_state)
        self.seq_len: int | None = None
        if seq_len is not None:
            self._build(seq_len)

    @property
    def _state_names(self) -> tuple[str, ...]:
        return ("h0", "c0") if self.mode == "lstm" else ("h0",)

    def _needs_seq_len(self) -> CompileError:
        cls = type(self).__name__
        where = "(N, T, features)" if self.batch_first else "(T, N, features)"
        return CompileError(
            f"{cls} {self.path!r} is unrolled over time when it is built, so it needs the "
            f"sequence length T: pass {cls}(..., seq_len=T), call it with "
            f"{self.name or cls.lower()}(input=..., seq_len=T), or connect its input to a "
            f"connection whose shape {where} is already known")

    def _serial_kwargs(self) -> dict[str, Any]:
        """Constructor arguments ``to_dict`` must add (a sequence length given at call time)."""
        return {} if self.seq_len is None else {"seq_len": self.seq_len}

    def finalize(self) -> None:
        """Called by ``ml.compile``: an unbuilt layer (no sequence length) cannot compile."""
        if self.seq_len is None:
            raise self._needs_seq_len()

    def connect(self, *args: Any, seq_len: int | None = None, **kw: Any) -> ConnectSpec:
        for k in self._state_names:  # h0=None means zeros, as in PyTorch
            if k in kw and kw[k] is None:
                del kw[k]
        given = [k for k in self._state_names if k in kw]
        if given and not self.initial_state:
            raise TerminalError(
                f"{type(self).__name__} {self.path!r} was built without initial-state "
                f"terminals, so {', '.join(given)} cannot be connected: construct it with "
                "initial_state=True (without it, the initial state is zeros)")
        if seq_len is None and self.seq_len is None:
            seq_len = self._infer_seq_len(kw.get("input", args[0] if args else None))
        if seq_len is not None:
            if self.seq_len is None:
                self._build(seq_len)
            elif seq_len != self.seq_len:
                raise CompileError(f"{type(self).__name__} {self.path!r} was built for "
                                   f"seq_len={self.seq_len}, not {seq_len}")
        if self.seq_len is None:
            raise self._needs_seq_len()
        return super().connect(*args, **kw)

    __call__ = connect

    def _infer_seq_len(self, value: Any) -> int | None:
        axis = 1 if self.batch_first else 0
        if isinstance(value, IOKey):
            shape = value.shape
            if isinstance(shape, list | tuple) and len(shape) == 3 and \
                    isinstance(shape[axis], int) and ... not in shape:
                return shape[axis]
            return None
        if isinstance(value, Connection):
            meta = value.meta.root()
            if meta.kind != TENSOR or meta.shape is None:
                return None
            f = meta.shape.normal()
            if f.var is None and len(f.prefix) == 3:
                return f.prefix[axis].root().value
        return None

    def _build(self, seq_len: int) -> None:
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise ArgumentError(f"seq_len must be a positive int, got {seq_len!r}")
        self.seq_len = n_t = seq_len
        b = _Builder(self)
        mode, hs, n_l = self.mode, self.hidden_size, self.num_layers
        gs = _GATES[mode] * hs
        n_d = 2 if self.bidirectional else 1
        lstm = mode == "lstm"
        tax = 1 if self.batch_first else 0
        params: list[str] = []
        zeros: Connection | None = None
        layer_in: Ref = IOKey("input", type=float)
        finals_h: list[Connection] = []
        finals_c: list[Connection] = []
        for layer in range(n_l):
            in_size = self.input_size if layer == 0 else n_d * hs
            last = layer == n_l - 1
            per_dir: list[list[Connection]] = []
            for d in range(n_d):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                if self.bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                params += names
                w_ih = b.param(names[0], [gs, in_size])
                b_ih = b.param(names[2], [gs]) if self.bias else None
                xp = b.linear(layer_in, w_ih, b_ih)  # (T, N, gates) or (N, T, gates)
                if isinstance(layer_in, IOKey):
                    layer_in = "input"
                steps = range(n_t - 1, -1, -1) if d else range(n_t)
                first = xp[steps[0]] if tax == 0 else xp[:, steps[0]]
                k = layer * n_d + d
                if self.initial_state:
                    h: Ref = b.op("indexer", input=b.param("h0", [n_l * n_d, None, hs]), index=k)
                    c: Ref | None = None
                    if lstm:
                        c = b.op("indexer", input=b.param("c0", [n_l * n_d, None, hs]), index=k)
                else:
                    if zeros is None:
                        zeros = _zeros_like_hidden(first, hs)
                    h = zeros
                    c = zeros if lstm else None
                outs: dict[int, Connection] = {}
                for t in steps:
                    xt = first if t == steps[0] else (xp[t] if tax == 0 else xp[:, t])
                    w_hh = b.param(names[1], [gs, hs])
                    b_hh = b.param(names[3], [gs]) if self.bias else None
                    h, c = _step(b, mode, xt, h, c, hs, w_hh, b_hh)
                    outs[t] = h
                assert isinstance(h, Connection)
                finals_h.append(h)
                if lstm:
                    assert isinstance(c, Connection)
                    finals_c.append(c)
                per_dir.append([outs[t] for t in range(n_t)])
            layer_out = self._stack(b, per_dir, "output" if last else None)
            if not last and self.dropout > 0:
                layer_out = b.op("dropout", input=layer_out, p=self.dropout)
            layer_in = layer_out
        self._stack_state(b, finals_h, "h_n")
        if lstm:
            self._stack_state(b, finals_c, "c_n")
        _set_hidden_init(self, params, hs)
        # one batch symbol for every terminal (the reshapes above only know it as -1)
        tm = ["N", n_t] if self.batch_first else [n_t, "N"]
        state = [n_l * n_d, "N", hs]
        shapes: dict[str, Any] = {"input": [*tm, self.input_size], "output": [*tm, n_d * hs],
                                  "h_n": state}
        for name in (("h0", "c0", "c_n") if lstm else ("h0",)):
            if name.endswith("_n") or self.initial_state:
                shapes[name] = state
        self.set_shapes(shapes)
        self.set_cin("input")
        self.set_cout("output")

    def _stack(self, b: _Builder, per_dir: list[list[Connection]], out: str | None
               ) -> Connection:
        """Join per-step hidden states into ``(T, N, D*H)`` (or ``(N, T, D*H)``)."""
        n_t, hs, n_d = self.seq_len, self.hidden_size, len(per_dir)
        assert n_t is not None
        if not self.batch_first and n_d == 1:
            joined = b.concat(per_dir[0], axis=0)  # (T*N, H), step blocks in order
            return b.op("reshape", out=out, input=joined, shape=(n_t, -1, hs))
        items = [per_dir[d][t] for t in range(n_t) for d in range(n_d)]
        joined = b.concat(items, axis=-1)  # (N, T*D*H)
        if self.batch_first:
            return b.op("reshape", out=out, input=joined, shape=(-1, n_t, n_d * hs))
        batch_major = b.op("reshape", input=joined, shape=(-1, n_t, n_d * hs))
        return b.op("transpose", out=out, input=batch_major, axes=(1, 0, 2))

    def _stack_state(self, b: _Builder, finals: list[Connection], out: str) -> None:
        joined = b.concat(finals, axis=0)  # (L*D*N, H)
        b.op("reshape", out=out, input=joined, shape=(len(finals), -1, self.hidden_size))


_SEQ_DOC = """

    Terminals: ``input`` ``(T, N, input_size)`` (``(N, T, input_size)`` with
    ``batch_first=True``); with ``initial_state=True`` also {state_in}
    ``(num_layers * D, N, hidden_size)`` (D = 2 if bidirectional else 1), otherwise the initial
    state is zeros (``h0=None`` in a call means the same). Outputs: ``output``
    ``(T, N, D * hidden_size)`` (last layer, both directions concatenated, time-major unless
    ``batch_first``) and {state_out} ``(num_layers * D, N, hidden_size)``, as in PyTorch.

    Parameters are named and laid out as PyTorch's: ``weight_ih_l{{k}}`` ``({g} * hidden,
    in)``, ``weight_hh_l{{k}}`` ``({g} * hidden, hidden)``, ``bias_ih_l{{k}}``,
    ``bias_hh_l{{k}}`` and the ``_reverse`` variants; gate order {order}; all initialised
    uniform in ``(-1/sqrt(hidden), 1/sqrt(hidden))``.

    Limitations: the layer is unrolled over time when it is built, so the sequence length is
    fixed: give ``seq_len=`` here or in the call, or connect ``input`` to a connection whose
    time dimension is known (otherwise a ``CompileError`` says how). The batch size stays
    symbolic. Inputs must be batched (3-D); packed sequences and ``proj_size`` are not
    supported. ``dropout`` (between layers) follows ``nn.Dropout``: on in training, off with
    ``compile(..., inference=True)``.
"""


class RNN(_Recurrent):
    """``nn.RNN``: ``h_t = act(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)``, ``act`` ``tanh`` or
    ``relu`` (``nonlinearity=``), stacked and optionally bidirectional.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import RNN
    >>> pm = ml.compile(RNN(3, 5, num_layers=2, seq_len=4), ml.NumpyBackend())
    >>> out = pm.evaluate(pm.randomize_params(), {"input": ml.NumpyBackend().randn(4, 2, 3)})
    >>> [list(out[k].shape) for k in ("output", "h_n")]
    [[4, 2, 5], [2, 2, 5]]
    """

    def __init__(self, input_size: int | None, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *,
                 seq_len: int | None = None, initial_state: bool = False,
                 name: str | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ArgumentError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.mode = f"rnn_{nonlinearity}"
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, seq_len=seq_len, initial_state=initial_state, name=name)


class LSTM(_Recurrent):
    """``nn.LSTM``: ``i, f, g, o`` gates, ``c_t = f * c_(t-1) + i * g``,
    ``h_t = o * tanh(c_t)``, stacked and optionally bidirectional.

    >>> import mithril as ml
    >>> from mithril.models.recurrent import LSTM
    >>> pm = ml.compile(LSTM(3, 5, bidirectional=True, seq_len=4), ml.NumpyBackend())
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
    >>> pm = ml.compile(GRU(3, 5, batch_first=True, seq_len=4), ml.NumpyBackend())
    >>> out = pm.evaluate(pm.randomize_params(), {"input": ml.NumpyBackend().randn(2, 4, 3)})
    >>> [list(out[k].shape) for k in ("output", "h_n")]
    [[2, 4, 5], [1, 2, 5]]
    """

    mode = "gru"


RNN.__doc__ = (RNN.__doc__ or "") + _SEQ_DOC.format(
    state_in="``h0``", state_out="``h_n``", g="1", order="(one gate)")
LSTM.__doc__ = (LSTM.__doc__ or "") + _SEQ_DOC.format(
    state_in="``h0`` and ``c0``", state_out="``h_n`` and ``c_n``", g="4", order="i, f, g, o")
GRU.__doc__ = (GRU.__doc__ or "") + _SEQ_DOC.format(
    state_in="``h0``", state_out="``h_n``", g="3", order="r, z, n")


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
