"""Connections and their algebra, and :class:`IOKey`, which names a terminal.

A :class:`Connection` is a wire inside one composite model. Its operators and methods
(``a + b``, ``a[0]``, ``a.reshape(...)``) each add one catalogue primitive to the model that
owns the connection (``BaseModel.apply_op``) and return that primitive's output connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ...errors import ArgumentTypeError
from .. import types as T
from .meta import TBD, Meta
from .symbols import readable_in

if TYPE_CHECKING:
    from .base import BaseModel


class ConnectionAlgebra:
    """Python's operators and array methods on connections (``a + b``, ``a[0]``, ``a.shape``,
    ``a.reshape(...)``): each is one catalogue primitive, built by ``_op``. A
    :class:`Connection` builds it in its model at once; an :class:`IOKey` (or an expression of
    IOKeys, :class:`Expr`) records it, and the model it is connected to builds it then."""

    __slots__ = ()
    __hash__ = object.__hash__

    def _op(self, op: str, *args: Any, **kw: Any) -> Any:
        raise NotImplementedError

    def __add__(self, o: Any) -> Any:
        return self._op("add", self, o)

    def __radd__(self, o: Any) -> Any:
        return self._op("add", o, self)

    def __sub__(self, o: Any) -> Any:
        return self._op("subtract", self, o)

    def __rsub__(self, o: Any) -> Any:
        return self._op("subtract", o, self)

    def __mul__(self, o: Any) -> Any:
        return self._op("multiply", self, o)

    def __rmul__(self, o: Any) -> Any:
        return self._op("multiply", o, self)

    def __truediv__(self, o: Any) -> Any:
        return self._op("divide", self, o)

    def __rtruediv__(self, o: Any) -> Any:
        return self._op("divide", o, self)

    def __floordiv__(self, o: Any) -> Any:
        return self._op("floor_divide", self, o)

    def __rfloordiv__(self, o: Any) -> Any:
        return self._op("floor_divide", o, self)

    def __pow__(self, o: Any) -> Any:
        return self._op("power", self, o)

    def __rpow__(self, o: Any) -> Any:
        return self._op("power", o, self)

    def __matmul__(self, o: Any) -> Any:
        return self._op("matmul", self, o)

    def __rmatmul__(self, o: Any) -> Any:
        return self._op("matmul", o, self)

    def __neg__(self) -> Any:
        return self._op("negate", self)

    def __abs__(self) -> Any:
        return self._op("absolute", self)

    def __gt__(self, o: Any) -> Any:
        return self._op("greater", self, o)

    def __lt__(self, o: Any) -> Any:
        return self._op("less", self, o)

    def __ge__(self, o: Any) -> Any:
        return self._op("greater_equal", self, o)

    def __le__(self, o: Any) -> Any:
        return self._op("less_equal", self, o)

    def __eq__(self, o: Any) -> Any:
        return self._op("equal", self, o)

    def __ne__(self, o: Any) -> Any:
        return self._op("not_equal", self, o)

    def __and__(self, o: Any) -> Any:
        return self._op("logical_and", self, o)

    def __or__(self, o: Any) -> Any:
        return self._op("logical_or", self, o)

    def __xor__(self, o: Any) -> Any:
        return self._op("logical_xor", self, o)

    def __invert__(self) -> Any:
        return self._op("logical_not", self)

    def __lshift__(self, o: Any) -> Any:
        return self._op("shift_left", self, o)

    def __rshift__(self, o: Any) -> Any:
        return self._op("shift_right", self, o)

    def __getitem__(self, index: Any) -> Any:
        from .sequences import check_index

        check_index(self, index)
        return self._op("indexer", self, self._index(index))

    def _index(self, index: Any) -> Any:
        """An index holding connections (``x[:n]``, ``x[a, 1:n]``) as the primitives that
        build it (``to_slice``, ``to_tuple``); a constant index as it is."""
        if isinstance(index, slice) and any(isinstance(p, ConnectionAlgebra)
                                            for p in (index.start, index.stop, index.step)):
            return self._op("to_slice", index.start, index.stop, index.step)
        if isinstance(index, tuple) and any(isinstance(i, ConnectionAlgebra) for i in index):
            # a connection as an item may be a tensor (NumPy's advanced indexing,
            # ``x[:, :, rows[:, None], cols]``): the model decides when it builds the indexer
            # (``advanced_index``), where the item's kind is known
            return tuple(self._index(i) for i in index)
        if isinstance(index, tuple) and any(
                isinstance(i, slice) and any(
                    isinstance(p, ConnectionAlgebra) for p in (i.start, i.stop, i.step))
                for i in index):
            return self._op("to_tuple", *(self._index(i) for i in index))
        return index_value(index)

    def __call__(self) -> Any:
        """``x.shape()``: the reference's older spelling of ``x.shape`` (a connection called
        without arguments is itself)."""
        return self

    def set_shapes(self, shape: Any) -> None:
        """The reference's ``conn.set_shapes([1, 64, "H", "W"])``: the shape template of this
        terminal, as ``model.set_shapes({conn: shape})``.

        >>> from mithril.models import Relu
        >>> relu = Relu()
        >>> relu.input.set_shapes(["N", 3])
        >>> relu.shapes["output"]
        ['N', 3]
        """
        if isinstance(self, IOKey):
            self.shape_template = shape
            return
        if isinstance(self, Expr):  # applied where the expression is built (materialize)
            self.shape_template = shape
            return
        model = getattr(self, "model", None)
        if model is None:
            raise ArgumentTypeError("set_shapes needs a terminal (a connection or an IOKey), "
                                    "not an expression")
        model.set_shapes({self: shape})

    def set_differentiable(self, differentiable: bool = True) -> None:
        """The reference's ``conn.set_differentiable(False)``: mark this input as data
        (``False``) or as a trainable parameter (``True``), as ``set_differentiability``.

        >>> from mithril.models import Size
        >>> size = Size(dim=1)
        >>> size.input.set_differentiable(False)
        >>> size.input.meta.root().differentiable
        False
        """
        if isinstance(self, IOKey):
            self.differentiable = bool(differentiable)
            return
        meta = getattr(self, "meta", None)
        if meta is None:
            raise ArgumentTypeError("set_differentiable needs a terminal (a connection or an "
                                    "IOKey), not an expression")
        meta.root().differentiable = bool(differentiable)

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(f"a {type(self).__name__} cannot be iterated; index it (conn[0]) "
                        "instead")

    @property
    def shape(self) -> Any:
        return self._op("shape", self)

    @property
    def T(self) -> Any:
        return self._op("transpose", self, None)

    def reshape(self, shape: Any) -> Any:
        return self._op("reshape", self, tuple_value(self, shape))

    def transpose(self, axes: Any = None) -> Any:
        return self._op("transpose", self, tuple_value(self, axes) if axes is not None else None)

    def swapaxes(self, axis1: int, axis2: int) -> Any:
        return self._op("swap_axes", self, axis1, axis2)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Any:
        return self._op("flatten", self, start_dim, end_dim)

    def sum(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("sum", self, axis, keepdim)

    def mean(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("mean", self, axis, keepdim)

    def max(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("max", self, axis, keepdim)

    def min(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("min", self, axis, keepdim)

    def prod(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("prod", self, axis, keepdim)

    def var(self, axis: Any = None, keepdim: bool = False, correction: float = 0) -> Any:
        return self._op("variance", self, axis, keepdim, correction)

    def argmax(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("argmax", self, axis, keepdim)

    def argmin(self, axis: Any = None, keepdim: bool = False) -> Any:
        return self._op("argmin", self, axis, keepdim)

    def split(self, split_size: int, axis: int = 0) -> Any:
        """The reference's ``x.split(n, axis)``: ``n`` equal sections along ``axis``, section
        ``i`` is ``result[i]`` (as ``mithril.models.Split``)."""
        chunk = self.shape[axis] // split_size
        return self._op("split", self, chunk, axis)

    def dtype(self) -> Any:
        """The element type of this value when the code runs (``Cast(dtype=x.dtype())``)."""
        return self._op("dtype_of", self)

    def clamp(self, min: Any = None, max: Any = None) -> Any:
        """``min <= x <= max`` element-wise (either bound may be a connection or ``None``)."""
        return self._op("clamp", self, min, max)

    def floor(self) -> Any:
        return self._op("floor", self)

    def sqrt(self) -> Any:
        return self._op("sqrt", self)

    def exp(self) -> Any:
        return self._op("exp", self)

    def log(self) -> Any:
        return self._op("log", self)

    def abs(self) -> Any:
        return self._op("absolute", self)

    def sin(self) -> Any:
        return self._op("sin", self)

    def cos(self) -> Any:
        return self._op("cos", self)

    def tanh(self) -> Any:
        return self._op("tanh", self)

    def sigmoid(self) -> Any:
        return self._op("sigmoid", self)

    def relu(self) -> Any:
        return self._op("relu", self)

    def cast(self, dtype: Any) -> Any:
        """``x.cast(ml.float32)``; also to another connection's dtype, the reference's
        ``x.cast(y.dtype())`` (known when the code runs)."""
        if isinstance(dtype, ConnectionAlgebra):
            return self._op("cast", self, dtype)
        return self._op("cast", self, T.as_dtype(dtype))

    def item(self) -> Any:
        return self._op("item", self)

    def tensor(self) -> Any:
        return self._op("to_tensor", self)

    def size(self, dim: int | None = None) -> Any:
        return self._op("size", self, dim)


class Connection(ConnectionAlgebra):
    """A wire inside one composite model; also the handle of the connection algebra."""

    __slots__ = ("consumers", "expose", "key", "meta", "model", "producer")
    __hash__ = object.__hash__

    def __init__(self, model: BaseModel, key: str | None, meta: Meta) -> None:
        self.model = model
        self.key = key
        self.meta = meta
        self.producer: tuple[BaseModel, str] | None = None
        self.consumers: list[tuple[BaseModel, str]] = []
        self.expose = False

    def __repr__(self) -> str:
        name = self.key or self.model._conn_name(self)
        top = self.model
        while top.parent is not None:
            top = top.parent
        return readable_in(f"<Connection {name!r} of {self.model.path}: {self.meta.describe()}>",
                           (top, ""))

    def _op(self, op: str, *args: Any, **kw: Any) -> Connection:
        return self.model.algebra_home().apply_op(self, op, args, kw)


class IOKey(ConnectionAlgebra):
    """Names (and optionally constrains) a terminal: ``IOKey("x", shape=["N", 3])``.

    ``value`` fixes a constant, ``shape`` is a template (ints, symbol names, ``None``,
    ``("V", ...)``), ``type`` is ``float`` / ``int`` / ``bool`` / an ``ml`` dtype,
    ``differentiable=True`` makes an input a trainable parameter and ``expose=True`` keeps a
    consumed connection readable as an output.

    An IOKey is also usable as a connection before it is connected anywhere: algebra,
    indexing, ``.shape``, ``.cast(...)``, ``.exp()``, ... record an :class:`Expr`, which the
    model it is connected to builds (``model |= Relu()(input=IOKey("x").T)``). ``.shape`` is
    then the shape *connection*; the template given as ``shape=`` is ``shape_template``.

    >>> from mithril.models import Model, Relu
    >>> x = IOKey("x")
    >>> m = Model()
    >>> m |= Relu()(input=(x * 2.0).T, output="y")
    >>> m.input_terminals()
    ['x']
    """

    __hash__ = object.__hash__

    def __init__(self, name: str | None = None, value: Any = TBD, shape: Any = None,
                 type: Any = None, differentiable: bool | None = None,
                 expose: bool | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise ArgumentTypeError(f"IOKey name must be a string, got {name!r}")
        self.name = name
        self.value = value
        self.shape_template = shape
        self.type = type
        self.differentiable = differentiable
        self.expose = expose

    def __repr__(self) -> str:
        return f"IOKey({self.name!r})"

    def _op(self, op: str, *args: Any, **kw: Any) -> Expr:
        return Expr(op, args, kw)


class Expr(ConnectionAlgebra):
    """Connection algebra on IOKeys not yet connected: the primitive ``op`` reading ``args``
    (IOKeys, expressions, connections or constants), built when the expression is connected
    to a model (``Model.materialize``)."""

    __hash__ = object.__hash__

    def __init__(self, op: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self.op = op
        self.args = args
        self.kw = kw
        #: a shape given with ``set_shapes`` before the expression is built
        self.shape_template: Any = None

    def _op(self, op: str, *args: Any, **kw: Any) -> Expr:
        return Expr(op, args, kw)

    def __repr__(self) -> str:
        return f"Expr({self.op}, {', '.join(repr(a) for a in self.args)})"


def built_exprs(value: Any, materialize: Callable[[Expr], Any]) -> Any:
    """``value`` with its expressions of IOKeys (alone or inside a tuple or list) built by
    ``materialize`` (the model's), so the terminals they read exist before sibling values
    naming the same IOKey are resolved (``Reshape()(x, shape=(x.shape[0], -1))``)."""
    if isinstance(value, Expr):
        return materialize(value)
    if isinstance(value, tuple | list) and any(isinstance(v, Expr) for v in value):
        return type(value)(materialize(v) if isinstance(v, Expr) else v for v in value)
    return value


def index_value(index: Any) -> Any:
    if isinstance(index, ConnectionAlgebra):
        return index
    if isinstance(index, tuple) and any(isinstance(i, ConnectionAlgebra) for i in index):
        raise ArgumentTypeError(
            "indexing with connections inside a tuple is not supported; index with "
            "constants, or with one connection")
    return index


def tuple_value(conn: ConnectionAlgebra, value: Any) -> Any:
    """A tuple that may hold connections becomes a ``to_tuple`` primitive."""
    if isinstance(value, ConnectionAlgebra):
        return value
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and any(isinstance(v, ConnectionAlgebra) for v in value):
        return conn._op("to_tuple", *value)
    return value


def is_tensor_connection(item: Any) -> bool:
    """Whether ``item`` is a connection already known to carry a tensor."""
    return isinstance(item, Connection) and item.meta.is_tensor


def _known_rank(conn: Any) -> int | None:
    """The rank of a tensor connection when it is known already, else None."""
    if not isinstance(conn, Connection):
        return None
    frag = conn.meta.root().shape
    return len(frag.dims()) if frag is not None and frag.known_rank else None


def advanced_index(model: BaseModel, anchor: Connection | None, x: Any,
                   items: tuple[Any, ...]) -> Connection:
    """NumPy's advanced indexing ``x[:, :, rows[:, None], cols]`` built from primitives: one
    item per axis of ``x`` (fewer where ``x``'s rank is known: the rest are ``:``), each a full
    slice ``:`` or an integer tensor connection of non- negative indices (a connection known to
    be a tensor when the model is built: an operation's output, not a bare IOKey); the index
    tensors broadcast together to a shape ``B``. As in NumPy the ``B`` axes stand where the
    tensor items stand when these are adjacent, and first otherwise. The indexed axes are moved
    to the front and flattened into rows, which an embedding lookup (a gather, whose gradient
    adds back into the rows) picks at the flat index ``sum(index_k * stride_k)``; the result is
    reshaped and its axes moved into place. ``B``'s rank must be known when the model is built.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import Model
    >>> from mithril.types import Tensor
    >>> x = IOKey("x", type=Tensor[float])
    >>> m = Model.create(output=x[:, IOKey("i", shape=[2]).cast(ml.int64)])
    >>> pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"x": [2, 3], "i": [2]})
    >>> pm.evaluate({}, {"x": np.arange(6.0).reshape(2, 3), "i": np.array([2, 0])})[
    ...     "output"].tolist()
    [[2.0, 0.0], [5.0, 3.0]]
    """
    def conn(v: Any) -> Any:
        if isinstance(v, Expr):
            return model.materialize(v)  # type: ignore[attr-defined]
        if isinstance(v, IOKey):
            return model.apply_op(anchor, "buffer", (v,), {})  # type: ignore[attr-defined]
        if callable(getattr(v, "output_connection", None)):  # a functional call's output
            v = v.output_connection()
        return model.lift(v) if isinstance(v, Connection) else v  # type: ignore[attr-defined]

    items = tuple(conn(i) for i in items)
    if not any(is_tensor_connection(i) for i in items):
        # connections holding ints (``x[a, 1:n]``): the index is a tuple built by to_tuple
        index = model.apply_op(anchor, "to_tuple", items, {})  # type: ignore[attr-defined]
        return model.apply_op(anchor, "indexer", (x, index), {})  # type: ignore[attr-defined]
    x = conn(x)
    x_rank = _known_rank(x)
    if x_rank is not None and len(items) < x_rank:  # the axes not indexed: taken whole
        items = items + (slice(None),) * (x_rank - len(items))
    adv = [k for k, i in enumerate(items) if is_tensor_connection(i)]
    rest = [k for k in range(len(items)) if k not in adv]
    bad = [i for k, i in enumerate(items) if k in rest and i != slice(None)]
    if bad:
        raise ArgumentTypeError(
            f"{model.path}: indexing with tensors takes, besides the index tensors, only full "
            f"slices ':' (one item per axis), got {bad[0]!r}")
    dims = [x.shape[k] for k in range(len(items))]
    front = adv + rest
    xt = x.transpose(axes=tuple(front)) if front != list(range(len(items))) else x
    n_rows = dims[adv[0]]
    for k in adv[1:]:
        n_rows = n_rows * dims[k]
    flat: Any = None
    for j, k in enumerate(adv):
        stride: Any = None
        for m in adv[j + 1:]:
            stride = dims[m] if stride is None else stride * dims[m]
        term = items[k] if stride is None else items[k] * stride
        flat = term if flat is None else flat + term
    rank = _known_rank(flat)
    if rank is None:
        raise ArgumentTypeError(
            f"{model.path}: indexing with tensors needs the index tensors' ranks when the "
            "model is built; give them shapes (set_shapes) first")
    picked = model.apply_op(anchor, "embedding", (),  # type: ignore[attr-defined]
                            {"input": flat, "weight": xt.reshape((n_rows, -1))})
    out = picked.reshape(tuple([flat.shape[i] for i in range(rank)] + [dims[k] for k in rest]))
    lead = adv[0] if adv == list(range(adv[0], adv[-1] + 1)) else 0
    if lead:
        n_rest = len(rest)
        out = out.transpose(axes=tuple(list(range(rank, rank + lead)) + list(range(rank))
                                       + list(range(rank + lead, rank + n_rest))))
    return out  # type: ignore[no-any-return]
