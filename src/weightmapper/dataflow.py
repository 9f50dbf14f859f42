"""Roles from dataflow: nn.Module + an input → parameter name → the role its tensor plays.

Names say what a library calls a tensor; the forward pass says what it does. A
``TorchFunctionMode`` records every torch function the forward pass calls, with the tensors
going in and out, so the flow is seen even through plain functions (``q @ k.T``, softmax,
RoPE's multiplies) that module hooks cannot see. Roles are then read off that graph in the
vocabulary of :mod:`weightmapper.conventions`:

- an attention is a softmax between two matmuls, or ``scaled_dot_product_attention``; the
  projections feeding its query, key and value (through views, splits and RoPE) are
  ``attn.q``/``attn.k``/``attn.v`` (``attn.qkv`` when one tensor feeds all three; ``xattn.*``
  when key and value come from another stream than the query), the projection its output
  feeds is ``attn.out``;
- in a gated MLP an activated projection is multiplied by another: ``mlp.gate`` and
  ``mlp.up``; the projection the product feeds is ``mlp.down``. A plain MLP is a projection,
  an activation and a projection that ends in a residual add: ``mlp.up`` then ``mlp.down``;
- a norm is ``norm.attn``/``norm.mlp`` by the sub-layer it belongs to: the one it feeds in a
  pre-norm block, the one whose residual sum it normalises in a post-norm block;
- embeddings by what indexes them (the input ids, positions, the rest), heads by what follows
  the last norm, convolutional blocks by where their branches rejoin.

Every role says why (``evidence``). A forward pass that fails gives an empty answer and a
warning: roles are evidence for the engine, never a requirement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from weightmapper.rope_style import RopeReading, read_rope_style

log = logging.getLogger(__name__)

_VIEWS = frozenset(
    {"t", "transpose", "view", "reshape", "permute", "unsqueeze", "squeeze", "expand",
     "contiguous", "to", "float", "half", "bfloat16", "type_as", "__getitem__", "split",
     "chunk", "narrow", "unbind", "flatten", "unflatten", "clone", "detach", "repeat",
     "repeat_interleave", "movedim", "swapaxes", "select", "view_as", "reshape_as", "tensor_split",
     "index_select", "type"}
)  # fmt: skip
_LINEAR = frozenset({"linear", "addmm", "matmul", "__matmul__", "mm", "bmm", "einsum"})
_MATMUL = frozenset({"matmul", "__matmul__", "bmm", "mm", "einsum", "baddbmm"})
_SOFTMAX = frozenset({"softmax", "_softmax", "log_softmax"})
_SDPA = frozenset({"scaled_dot_product_attention"})
_ACT = frozenset(
    {"silu", "gelu", "relu", "sigmoid", "tanh", "mish", "elu", "leaky_relu", "hardswish",
     "gelu_new", "quick_gelu", "softplus", "relu6", "hardsigmoid", "glu"}
)  # fmt: skip
_NORM = frozenset({"layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm"})
_ADD = frozenset({"add", "__add__", "__radd__", "__iadd__", "add_"})
_MUL = frozenset({"mul", "__mul__", "__rmul__", "mul_", "__imul__"})
_CONV = frozenset({"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"})
_CAT = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack"})
_USES = _LINEAR | _CONV | _NORM | frozenset({"embedding", "embedding_bag"})
"""Functions that *use* a parameter even when all their inputs are parameters or buffers."""
_LOOKUPS = frozenset({"__getitem__", "index_select", "take"})
_COMPOSITE = frozenset({"multi_head_attention_forward"})
_SPLITS = frozenset({"chunk", "split", "__getitem__", "narrow", "tensor_split", "unbind"})


@dataclass(frozen=True)
class FlowRole:
    """What the forward pass says one parameter does."""

    role: str
    """A role of :data:`weightmapper.conventions.ROLES`."""
    stack: str = "main"
    evidence: str = ""
    """Why, in a few words (``feeds the key operand of softmax(q @ k)``)."""
    head_dim: int | None = None
    """For attention projections: the size of one head, read at the attention itself (what
    RoPE and per-head row orders need, and what shapes alone cannot tell)."""
    rope: str | None = None
    """For query and key projections: ``rotate_half`` (row i turns with row i + n/2 of the n
    rows of its head RoPE turns), ``interleaved`` (rows 2i and 2i + 1), ``none`` (no two rows
    of a head mix on the way to the attention), or None when the forward pass could not tell
    (see ``rope_evidence``)."""
    rope_evidence: str = ""
    """For query and key projections: what showed the RoPE style, or why it could not be read."""
    rope_rows: int = 0
    """For query and key projections whose style was read: the rows of a head RoPE turns
    (fewer than ``head_dim`` for a partial rotary)."""


@dataclass
class _Call:
    name: str
    inputs: list[int]
    """Ids of the tensor arguments, in order (nested lists flattened)."""
    outputs: list[int]
    params: list[str]
    """Names of the parameters (or views of them) among the inputs."""
    module: str = ""
    """Path of the innermost module running when the call was made."""
    index: int = 0
    func: Any = None
    """The function called and its arguments, so a stretch of the graph can be run again on
    other values (:mod:`weightmapper.rope_style`)."""
    args: Any = ()
    kwargs: Any = None


@dataclass
class _Graph:
    calls: list[_Call] = field(default_factory=list)
    producer: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, list[int]] = field(default_factory=dict)
    param_of: dict[int, tuple[str, ...]] = field(default_factory=dict)
    inputs: set[int] = field(default_factory=set)
    live: set[int] = field(default_factory=set)
    """Tensors computed from the model's inputs (not from constants such as RoPE's tables)."""
    outputs: set[int] = field(default_factory=set)
    param_ops: dict[int, set[str]] = field(default_factory=dict)
    """For tensors computed from parameters alone: the functions that computed them."""
    param_dim: dict[str, int] = field(default_factory=dict)
    """Each parameter's own number of dimensions (a call may see a reshaped view)."""
    tensors: dict[int, torch.Tensor] = field(default_factory=dict)
    """Every tensor seen, by id, kept alive so that no id is reused during the trace."""
    modules: list[str] = field(default_factory=list)
    """The stack of modules running (paths), innermost last."""
    result: Any = None


class _Recorder(TorchFunctionMode):
    """Records each torch function call as (name, tensor ids in, tensor ids out, params)."""

    def __init__(self, graph: _Graph) -> None:
        super().__init__()
        self.g = graph

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _COMPOSITE:
            return self._inside(func, args, kwargs)
        out = func(*args, **kwargs)
        flat_out = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if not flat_out or not name:
            return out
        flat_in = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        g = self.g
        for t in flat_in + flat_out:
            g.tensors.setdefault(id(t), t)
        params = sorted({p for t in flat_in for p in g.param_of.get(id(t), ())})
        if name in _LOOKUPS and params and id(flat_in[0]) in g.param_of:
            # W[ids] with a tensor of several integer ids is an embedding lookup, not a view
            ids = [t for t in flat_in[1:] if _is_index(t)]  # an index buffer is still an index
            if ids:
                name, flat_in = "embedding", [*ids, flat_in[0]]
        # a view of a parameter is the parameter (W.T, W.t() inside F.linear, one expert), and
        # so is arithmetic on parameters alone (Gemma's 1 + w, a float() cast)
        only_params = all(id(t) in g.param_of for t in flat_in)
        if params and (
            ((name in _VIEWS or name == "__get__") and g.param_of.get(id(flat_in[0])))
            or (only_params and name not in _USES)
        ):
            made = {name}.union(*(g.param_ops.get(id(t), set()) for t in flat_in))
            for o in flat_out:
                g.param_of[id(o)] = tuple(params)
                g.param_ops[id(o)] = made
            return out
        module = g.modules[-1] if g.modules else ""
        call = _Call(name, [id(t) for t in flat_in], [id(t) for t in flat_out], params, module)
        call.index, call.func, call.args, call.kwargs = len(g.calls), func, args, kwargs
        g.calls.append(call)
        if any(t in g.live for t in call.inputs):
            g.live.update(call.outputs)
        for t in call.inputs:
            g.consumers.setdefault(t, []).append(call.index)
        for t in call.outputs:
            g.producer.setdefault(t, call.index)
        return out

    def _inside(self, func: Any, args: Any, kwargs: Any) -> Any:
        """Run a composite function (``F.multi_head_attention_forward``) with the recorder on.

        Its projections, split and softmax are recorded instead of one opaque call. It
        checks ``has_torch_function`` itself and would hand the call straight back to this
        mode; that one check is answered "no" for the duration.
        """
        functional = torch.nn.functional
        check = functional.has_torch_function
        functional.has_torch_function = lambda *_: False  # type: ignore[assignment]
        try:
            with self:
                return func(*args, **kwargs)
        finally:
            functional.has_torch_function = check  # type: ignore[assignment]


def _persistent_buffers(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Module → its buffers that a state dict holds (a RoPE cache or ``inv_freq`` is not
    one: such constant tables are inputs of the computation, not weights with a role)."""
    out = []
    for path, sub in module.named_modules(remove_duplicate=False):
        skip = getattr(sub, "_non_persistent_buffers_set", set())
        for local, buf in sub.named_buffers(recurse=False):
            if local not in skip and buf is not None:
                out.append((f"{path}.{local}" if path else local, buf))
    return out


def _is_index(t: torch.Tensor) -> bool:
    """Several integer ids (a lookup), as opposed to one expert number or a boolean mask."""
    return not t.is_floating_point() and t.dtype is not torch.bool and t.numel() > 1


def _record(module: nn.Module, example: Any) -> _Graph:
    g = _Graph()
    for name, p in list(module.named_parameters(remove_duplicate=False)) + _persistent_buffers(
        module
    ):
        g.param_of[id(p)] = (*g.param_of.get(id(p), ()), name)
        g.param_dim[name] = p.dim()
        g.tensors[id(p)] = p
    args, kwargs = (
        ((), dict(example))
        if isinstance(example, Mapping)
        else (tuple(example), {})
        if isinstance(example, (tuple, list))
        else ((example,), {})
    )
    g.inputs = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
    g.live = set(g.inputs)

    def enter(path: str) -> Any:
        return lambda *_: g.modules.append(path)

    def leave(*_: Any) -> None:
        g.modules.pop()

    handles = []
    for path, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(enter(path)))
        handles.append(sub.register_forward_hook(leave))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # fused kernels hide q/k/v from the trace
    try:
        with torch.no_grad(), _Recorder(g):
            out = module(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
    g.result = out
    g.outputs = {id(t) for t in tree_flatten(_plain(out))[0] if isinstance(t, torch.Tensor)}
    return g


def _plain(out: Any) -> Any:
    """A ModelOutput (a dict subclass) or tuple → something tree_flatten walks."""
    if isinstance(out, Mapping):
        return dict(out)
    return out


class _Flow:
    """Queries over a recorded graph: which parameter uses feed which operand of which op."""

    def __init__(self, g: _Graph) -> None:
        self.g = g
        self.role: dict[int, tuple[str, str]] = {}  # call index → (role, evidence)
        self.stack: dict[int, str] = {}
        self.head_dim: dict[int, int] = {}
        self.rope: dict[int, RopeReading] = {}
        """Call index → what its forward pass shows of RoPE."""
        self.rope_read: dict[tuple[Any, ...], RopeReading] = {}
        """Stretches already read (calls' names, shapes, head size) → their answer."""

    # -- graph walking ----------------------------------------------------------------------
    def param_use(self, c: _Call) -> bool:
        return bool(c.params)

    def data_inputs(self, c: _Call) -> list[int]:
        return [t for t in c.inputs if t not in self.g.param_of]

    def downstream(
        self,
        starts: Iterable[int],
        follow: Callable[[_Call], bool],
        limit: int | None,
        breadth_first: bool = False,
        seen: set[int] | None = None,
    ) -> Iterator[_Call]:
        """Tensors → every call consuming them, and on through the outputs of those ``follow``
        accepts; each tensor visited once, at most ``limit`` of them (added to ``seen``).

        Depth first unless ``breadth_first``; a caller may stop at the call it looks for.
        """
        consumers = self.g.consumers

        def onward(c: _Call) -> list[int]:
            return c.outputs if follow(c) else []

        return self._walk(
            starts, lambda t: consumers.get(t, ()), onward, limit, breadth_first, seen
        )

    def upstream(
        self,
        starts: Iterable[int],
        onward: Callable[[_Call], Iterable[int]],
        limit: int | None,
        breadth_first: bool = False,
        seen: set[int] | None = None,
    ) -> Iterator[_Call]:
        """Tensors → the call producing each, and on through the inputs ``onward`` picks of it;
        each tensor visited once, at most ``limit`` of them (added to ``seen``).

        Depth first unless ``breadth_first``; a caller may stop at the call it looks for.
        """
        producer = self.g.producer

        def made(t: int) -> list[int]:
            return [producer[t]] if t in producer else []

        return self._walk(starts, made, onward, limit, breadth_first, seen)

    def _walk(
        self,
        starts: Iterable[int],
        calls_at: Callable[[int], Iterable[int]],
        onward: Callable[[_Call], Iterable[int]],
        limit: int | None,
        breadth_first: bool,
        seen: set[int] | None,
    ) -> Iterator[_Call]:
        """The one graph walk: tensors → the calls ``calls_at`` each, then the tensors
        ``onward`` picks of each call, every tensor once; see :meth:`downstream`."""
        todo, seen = list(starts), set() if seen is None else seen
        while todo and (limit is None or len(seen) < limit):
            t = todo.pop(0) if breadth_first else todo.pop()
            if t in seen:
                continue
            seen.add(t)
            for ci in calls_at(t):
                c = self.g.calls[ci]
                yield c
                todo += onward(c)

    def back(self, tensor: int) -> set[int]:
        """Tensor → indexes of the parameter-using calls it derives from, nearest ones only."""
        live = self.g.live

        def onward(c: _Call) -> list[int]:
            # another attention's output is not this projection's input
            stop = c.params or c.name in _SOFTMAX or c.name in _SDPA
            return [] if stop else [u for u in self.data_inputs(c) if u in live]

        return {
            c.index
            for c in self.upstream([tensor], onward, limit=400)
            # a projection of the data, not of a constant table
            if c.params and any(u in live for u in self.data_inputs(c))
        }

    def forward(self, tensor: int) -> list[int]:
        """Tensor → calls that consume it, through views and elementwise ops, in call order.

        Stops at parameter uses, matmuls, attentions, norms, activations and adds.
        """

        def stops(c: _Call) -> bool:
            return bool(c.params) or c.name in _MATMUL | _SOFTMAX | _SDPA | _NORM | _ACT | _ADD

        walk = self.downstream([tensor], lambda c: not stops(c), limit=400)
        return sorted({c.index for c in walk if stops(c)})

    def label(self, ci: int, role: str, evidence: str) -> None:
        self.role.setdefault(ci, (role, evidence))


def _operand_of_matmul(flow: _Flow, mm: _Call, position: int) -> set[int]:
    ins = flow.data_inputs(mm)
    return flow.back(ins[position]) if len(ins) > position else set()


@dataclass(frozen=True)
class _Attention:
    """One attention found in the graph: the parameter uses feeding each operand."""

    q: set[int]
    k: set[int]
    v: set[int]
    result: int
    """Index of the call whose output is the attention's result."""
    head: int
    q_operand: int
    """Id of the tensor the query arrives as (after RoPE)."""
    k_operand: int


def _attentions(flow: _Flow) -> list[_Attention]:
    """→ every attention: its query, key and value uses, result, head size and operands."""
    g = flow.g
    found = []
    for c in g.calls:
        if c.name in _SDPA:
            ins = flow.data_inputs(c)
            if len(ins) >= 3:
                head = int(g.tensors[ins[0]].shape[-1])
                q, k, v = (flow.back(t) for t in ins[:3])
                found.append(_Attention(q, k, v, c.index, head, ins[0], ins[1]))
        elif c.name in _SOFTMAX:
            # scores = q @ k^T (scaled, masked) → softmax → @ v
            scores = _nearest(flow, flow.data_inputs(c)[0], _MATMUL)
            after = [g.calls[i] for i in flow.forward(c.outputs[0]) if g.calls[i].name in _MATMUL]
            if scores is None or not after:
                continue
            qk = g.calls[scores]
            q, k = _operand_of_matmul(flow, qk, 0), _operand_of_matmul(flow, qk, 1)
            v = _operand_of_matmul(flow, after[0], 1)
            if q and k:
                ins = flow.data_inputs(qk)
                head = int(g.tensors[ins[0]].shape[-1])
                found.append(_Attention(q, k, v, after[0].index, head, ins[0], ins[1]))
    return found


def _rope_style(flow: _Flow, ci: int, operand: int, head: int) -> RopeReading:
    """A query/key projection + the attention operand it reaches + the head size → (how RoPE
    turns its rows: ``rotate_half``, ``interleaved``, ``none``, or None; what showed it).

    The calls between the projection's output and the operand are run again on probes
    (:func:`weightmapper.rope_style.read_rope_style`); stretches made of the same calls on
    the same shapes (every layer of a stack) are read once.
    """
    g = flow.g
    start = g.calls[ci].outputs[0]
    if start == operand:
        return RopeReading("none", "the projection is the attention's operand as it is", head)

    def follow(c: _Call) -> bool:
        return c.name not in _MATMUL | _SDPA | _SOFTMAX

    reached: set[int] = set()
    down = {c.index for c in flow.downstream([start], follow, limit=400, seen=reached)}
    if operand not in reached:
        return RopeReading(
            None, "RoPE style not read: the operand is not computed from the projection alone"
        )
    # back from the operand through the calls the projection reaches only: the walk never
    # leaves the stretch (into the residual stream, the angle tables)
    inside = flow.upstream([operand], lambda c: c.inputs if c.index in down else [], None)
    chain = sorted({c.index for c in inside if c.index in down})
    calls = [g.calls[i] for i in chain]
    key = (tuple(c.name for c in calls), tuple(g.tensors[start].shape), head)
    if key not in flow.rope_read:
        flow.rope_read[key] = read_rope_style(calls, g.tensors[start], operand, head)
    return flow.rope_read[key]


def _nearest(flow: _Flow, tensor: int, names: frozenset[str], limit: int = 50) -> int | None:
    """Tensor → index of the nearest producing call named in ``names`` (through any op)."""
    walk = flow.upstream([tensor], _unless_params(flow), limit, breadth_first=True)
    return next((c.index for c in walk if c.name in names), None)


def _unless_params(flow: _Flow) -> Callable[[_Call], list[int]]:
    """→ an upstream rule: on through a call's data inputs, unless it uses parameters."""
    return lambda c: [] if c.params else flow.data_inputs(c)


def _label_attention(flow: _Flow) -> None:
    g = flow.g
    for att in _attentions(flow):
        q, k, v, result, head = att.q, att.k, att.v, att.result, att.head
        for ci in q | k | v:
            flow.head_dim.setdefault(ci, head)
        for ci in q | k:
            if ci not in flow.rope:
                operand = att.q_operand if ci in q else att.k_operand
                flow.rope[ci] = _rope_style(flow, ci, operand, head)
        fused = q & k
        q_in = {t for ci in q for t in flow.data_inputs(g.calls[ci])}
        k_in = {t for ci in k for t in flow.data_inputs(g.calls[ci])}
        cross = bool(q_in and k_in and not (q_in & k_in))
        prefix = "xattn" if cross else "attn"
        for ci in q | k | v:
            c = g.calls[ci]
            if _is_norm_use(flow, c):  # q_norm / k_norm sit between projection and attention
                role = "q_norm" if ci in q else "k_norm"
                flow.label(ci, f"{prefix}.{role}", "normalises the query/key before attention")
                for inner in flow.back(flow.data_inputs(c)[0]):
                    part = "q" if ci in q else "k"
                    flow.label(inner, f"{prefix}.{part}", f"feeds the {part} side of attention")
                continue
            parts = [p for p, s in (("q", q), ("k", k), ("v", v)) if ci in s]
            if len(parts) == 3 or (ci in fused and len(parts) >= 2 and "q" in parts):
                flow.label(ci, f"{prefix}.qkv", "one projection feeds query, key and value")
            elif parts == ["k", "v"]:
                flow.label(ci, f"{prefix}.kv", "one projection feeds key and value")
            else:
                what = {"q": "query", "k": "key", "v": "value"}[parts[0]]
                flow.label(ci, f"{prefix}.{parts[0]}", f"feeds the {what} of softmax(q @ k) @ v")
        out_uses = [i for i in flow.forward(g.calls[result].outputs[0]) if g.calls[i].params]
        for ci in out_uses[:1]:
            if not _is_norm_use(flow, g.calls[ci]):
                flow.label(ci, f"{prefix}.out", "projects the attention's output")


_STATISTICS = frozenset({"rsqrt", "sqrt", "std", "var", "var_mean", "std_mean", "norm"})


def _is_norm_use(flow: _Flow, c: _Call) -> bool:
    """A norm layer, or the multiply (and add) by 1-D weights that end a hand-written norm.

    The data operand must come from normalising statistics (``rsqrt``, ``std``, …) a few ops
    back, or from the norm's own multiply: a plain ``x @ W + b`` is a bias, not a norm.
    """
    if c.name in _NORM:
        return True
    if c.name not in _MUL | _ADD or not c.params:
        return False
    if not all(_ndim(flow, c, p) == 1 for p in c.params):
        return False
    data = flow.data_inputs(c)
    if not data:
        return False
    # a frozen batch norm folds its statistics into the parameters: w * rsqrt(var + eps)
    if any(_STATISTICS & flow.g.param_ops.get(t, set()) for t in c.inputs):
        return True
    prev = flow.g.producer.get(data[0])
    if prev is not None and flow.g.calls[prev].params and flow.g.calls[prev].name in _MUL:
        return True
    return _nearest(flow, data[0], _STATISTICS, limit=8) is not None


def _ndim(flow: _Flow, c: _Call, name: str) -> int:
    """A parameter's own number of dimensions, whatever view of it the call sees."""
    return flow.g.param_dim.get(name, -1)


def _label_mlp(flow: _Flow) -> None:
    g = flow.g
    for c in g.calls:
        if c.name not in _MUL or c.params:
            continue
        ins = flow.data_inputs(c)
        if len(ins) != 2:
            continue
        act = [_nearest(flow, t, _ACT, limit=6) for t in ins]
        sources = [flow.back(t) for t in ins]
        if not all(sources) or sum(a is not None for a in act) != 1:
            continue
        gated, plain = (0, 1) if act[0] is not None else (1, 0)
        # a gated MLP's activation sits right after the gate projection
        act_call = g.calls[act[gated]]  # type: ignore[index]
        if not (flow.back(act_call.inputs[0]) & sources[gated]):
            continue
        if sources[gated] & sources[plain]:
            # one projection on both sides: a fused gate/up only if it was cut in two; else
            # this multiply is inside an activation (GPT-2's 0.5 * x * (1 + tanh(...)))
            if not all(_nearest(flow, t, _SPLITS, limit=8) is not None for t in ins):
                continue
            for ci in sources[gated]:
                flow.label(ci, "mlp.gate_up", "one projection is split into gate and up")
        else:
            for ci in sources[gated]:
                flow.label(ci, "mlp.gate", "activated, then multiplies the up projection")
            for ci in sources[plain]:
                flow.label(ci, "mlp.up", "multiplies the activated gate projection")
        for ci in flow.forward(c.outputs[0]):
            if g.calls[ci].params and not _is_norm_use(flow, g.calls[ci]):
                flow.label(ci, "mlp.down", "projects the gated product back")
    # plain MLP: projection → activation → projection
    for c in g.calls:
        if c.name not in _ACT:
            continue
        before = flow.back(c.inputs[0])
        after = [i for i in _next_params(flow, c.outputs[0]) if not _is_norm_use(flow, g.calls[i])]
        if len(before) == 1 and len(after) == 1:
            up, down = next(iter(before)), after[0]
            if up in flow.role or down in flow.role:
                continue
            if _reaches_residual(flow, g.calls[down]):
                flow.label(up, "mlp.up", "activated, then projected back into the stream")
                flow.label(down, "mlp.down", "projects the activated hidden state back")


def _next_params(flow: _Flow, tensor: int, limit: int = 100) -> list[int]:
    """Tensor → the parameter uses it reaches first, through any op but attention and norms."""

    def follow(c: _Call) -> bool:
        return not c.params and c.name not in _MATMUL | _SOFTMAX | _SDPA | _NORM

    return sorted({c.index for c in flow.downstream([tensor], follow, limit) if c.params})


def _reaches_call(flow: _Flow, tensor: int, names: frozenset[str], limit: int = 30) -> bool:
    """Tensor → whether a call named in ``names`` consumes it within a few ops."""
    walk = flow.downstream([tensor], lambda c: not c.params, limit, breadth_first=True)
    return any(c.name in names for c in walk)


def _reaches_residual(flow: _Flow, c: _Call) -> bool:
    """A projection's output is added to another stream (not merely given a bias)."""
    return any(
        flow.g.calls[i].name in _ADD
        and not flow.g.calls[i].params
        and len(flow.data_inputs(flow.g.calls[i])) >= 2
        for i in flow.forward(c.outputs[0])
    )


def _label_norms(flow: _Flow, roles_by_call: Mapping[int, str]) -> None:
    g = flow.g
    norms = [c for c in g.calls if _is_norm_use(flow, c) and c.index not in flow.role]
    # post-norm: a normalised sum is the residual stream (it meets a later residual add); a
    # property of the whole model, so the last block's norms count as post-norm too
    attention_inputs = {"attn.q", "attn.k", "attn.v", "attn.qkv"}
    post = any(
        any(
            x.name in _ADD and any(t in roles_by_call for t in _adders(flow, x))
            for x in (g.calls[i] for i in flow.forward(c.outputs[0]))
        )
        and any(roles_by_call.get(i) in attention_inputs for i in _next_params(flow, c.outputs[0]))
        for c in norms
    )
    for c in norms:
        out = c.outputs[0]
        source = flow.data_inputs(c)[0] if flow.data_inputs(c) else None
        if post and source is not None:
            role = _norm_from_input(flow, source, roles_by_call)
            if role:
                flow.label(c.index, role, "normalises the residual sum of that sub-layer")
                continue
        role = _norm_from_consumers(flow, out, roles_by_call)
        if role:
            flow.label(c.index, role, "normalises the input of that sub-layer")


def _adders(flow: _Flow, add: _Call) -> set[int]:
    return {ci for t in flow.data_inputs(add) for ci in flow.back(t)}


def _norm_from_input(flow: _Flow, tensor: int, roles: Mapping[int, str]) -> str | None:
    ci = flow.g.producer.get(tensor)
    if ci is not None and flow.g.calls[ci].params and ci in roles:
        # a sandwich norm right on the sub-layer's output, before the residual add
        return {"attn.out": "norm.attn_out", "mlp.down": "norm.mlp_out"}.get(roles[ci])
    found = {roles[ci] for ci in flow.back(tensor) if ci in roles}
    if found & {"attn.out"}:
        return "norm.attn"
    if found & {"xattn.out"}:
        return "norm.xattn"
    if found & {"mlp.down"}:
        return "norm.mlp"
    if found & {"embed.tokens", "embed.positions", "embed.types"}:
        return "embed.norm"
    return None


def _norm_from_consumers(flow: _Flow, tensor: int, roles: Mapping[int, str]) -> str | None:
    g = flow.g
    seen: set[int] = set()
    walk = flow.downstream([tensor], lambda c: not c.params and c.name not in _ADD, 200, seen=seen)
    reached = {roles[c.index] for c in walk if c.params and c.index in roles}
    for want, role in (
        ({"attn.q", "attn.k", "attn.v", "attn.qkv"}, "norm.attn"),
        ({"xattn.q"}, "norm.xattn"),
        ({"mlp.gate", "mlp.up", "mlp.gate_up", "moe.router"}, "norm.mlp"),
        ({"head.lm", "head.cls", "head.pooler", "head.proj"}, "norm.final"),
    ):
        if reached & want:
            return role
    if any(t in g.outputs for t in seen):
        return "norm.final"
    return None


def _label_embeddings(flow: _Flow) -> None:
    g = flow.g
    uses = [c for c in g.calls if c.name == "embedding" and c.params]
    tokens_found = False
    for c in uses:
        index = g.tensors[c.inputs[0]]
        if _feeds_scores(flow, c.outputs[0]):
            flow.label(c.index, "attn.relbias", "added to the attention scores")
        elif _derives_from(flow, c.inputs[0], g.inputs) and not tokens_found:
            tokens_found = True
            flow.label(c.index, "embed.tokens", "indexed by the input ids")
        elif not index.is_floating_point() and _counts_up(index):
            flow.label(c.index, "embed.positions", "indexed by positions 0, 1, 2, …")
        else:
            flow.label(c.index, "embed.types", "indexed by neither the ids nor positions")
    attention = any(c.name in _SOFTMAX | _SDPA for c in g.calls)
    for c in g.calls:
        if not c.params or c.index in flow.role:
            continue
        if c.name in _CAT:
            flow.label(c.index, "embed.cls", "a learned token put before the sequence")
        elif c.name in _ADD and all(_ndim(flow, c, p) >= 2 for p in c.params):
            if _feeds_scores(flow, c.outputs[0]):
                flow.label(c.index, "attn.relbias", "added to the attention scores")
            else:
                flow.label(c.index, "embed.positions", "a learned table added to the tokens")
        elif c.name in _CONV and any(t in g.inputs for t in flow.data_inputs(c)):
            role = "embed.patch" if attention else "stem.conv"
            flow.label(c.index, role, "the first layer applied to the input image")


def _feeds_scores(flow: _Flow, tensor: int, limit: int = 40) -> bool:
    """Tensor → whether it reaches a softmax (or an attention's mask) before any matmul:
    a bias on the attention scores, not something added to the tokens."""

    def follow(c: _Call) -> bool:
        return not c.params and c.name not in _MATMUL

    walk = flow.downstream([tensor], follow, limit, breadth_first=True)
    return any(c.name in _SOFTMAX | _SDPA for c in walk)


def _counts_up(index: torch.Tensor) -> bool:
    """Integer indices that increase by one along the last axis (positions, maybe offset)."""
    if index.dim() == 0 or index.shape[-1] < 2 or index.device.type == "meta":
        return False
    steps = index.diff(dim=-1)
    return bool((steps == 1).all())


def _derives_from(flow: _Flow, tensor: int, targets: set[int], limit: int = 50) -> bool:
    """Tensor → whether it is computed from one of ``targets`` without a parameter use."""
    seen: set[int] = set()
    for _ in flow.upstream([tensor], _unless_params(flow), limit, seen=seen):
        pass
    return not seen.isdisjoint(targets)


def _derives_from_call(flow: _Flow, tensor: int, names: set[str]) -> bool:
    return _nearest(flow, tensor, frozenset(names), limit=20) is not None


def _label_bias_adds(flow: _Flow) -> None:
    """``x @ W + b`` written out: the add of ``b`` takes the role of the product with ``W``."""
    for c in flow.g.calls:
        if c.name in _ADD and c.params and c.index not in flow.role:
            for t in flow.data_inputs(c):
                prev = flow.g.producer.get(t)
                if prev is not None and prev in flow.role and flow.g.calls[prev].params:
                    role, _ = flow.role[prev]
                    flow.label(c.index, role, "the bias added to that projection")
                    break


def _ancestors(flow: _Flow, tensor: int, limit: int = 400) -> dict[int, None]:
    """Tensor → its ancestor tensors, nearest first, through every call (parameter uses
    included); the walk ends once ``limit`` of them are known."""
    found = {tensor: None}
    for c in flow.upstream([tensor], flow.data_inputs, None, breadth_first=True):
        found.update(dict.fromkeys(flow.data_inputs(c)))
        if len(found) >= limit:
            break
    return found


def _path_uses(flow: _Flow, tensor: int, stop: int) -> list[int]:
    """Parameter uses between ``stop`` and ``tensor`` (walking back), in execution order."""

    def onward(c: _Call) -> list[int]:
        return [u for u in flow.data_inputs(c) if u != stop]

    starts = [] if tensor == stop else [tensor]
    return sorted({c.index for c in flow.upstream(starts, onward, limit=400) if c.params})


def _label_conv_blocks(flow: _Flow) -> None:
    """Residual blocks of a CNN: convs by their place on the main branch, the shortcut's own.

    A block is found at the add where its branches rejoin; its input is the nearest tensor
    both branches come from. The shortcut projection reads that input and reaches the add
    through one conv; the main branch's convs are numbered in the order they run.
    """
    g = flow.g
    convs = [c for c in g.calls if c.name in _CONV and c.params]
    if not convs:
        return
    first_block_input: int | None = None
    inside: set[int] = set()
    for add in g.calls:
        ins = flow.data_inputs(add)
        if add.name not in _ADD or add.params or len(ins) != 2:
            continue
        a, b = ins
        common = _ancestors(flow, b)
        block_input = next((t for t in _ancestors(flow, a) if t in common and t != a), None)
        if block_input is None:
            continue
        main = [ci for ci in _path_uses(flow, a, block_input) if g.calls[ci].name in _CONV]
        short = [ci for ci in _path_uses(flow, b, block_input) if g.calls[ci].name in _CONV]
        if len(short) > len(main):
            main, short = short, main
        if not main or len(short) > 1:
            continue
        if first_block_input is None or g.producer.get(block_input, -1) < g.producer.get(
            first_block_input, -1
        ):
            first_block_input = block_input
        for n, ci in enumerate(main[:3], start=1):
            flow.label(ci, f"block.conv{n}", f"convolution {n} of the block's main branch")
        for ci in main[3:]:
            flow.label(ci, "block.conv3", "a later convolution of the block's main branch")
        for ci in short:
            flow.label(ci, "block.shortcut.conv", "projects the block's input onto its output")
        inside |= set(main) | set(short)
    if first_block_input is None:
        return
    start = g.producer.get(first_block_input, len(g.calls))
    end = max(inside)
    for c in convs:
        if c.index in flow.role or c.index in inside:
            continue
        if c.index <= start:
            flow.label(c.index, "stem.conv", "a convolution before the first residual block")
        elif c.index > end:
            flow.label(c.index, "head.conv", "a convolution after the last residual block")
        else:
            flow.label(c.index, "downsample.conv", "a convolution between residual blocks")
    # a batch norm takes the role of the convolution it normalises
    norm_of = {
        "stem.conv": "stem.norm", "embed.patch": "embed.norm", "downsample.conv": "downsample.norm",
        "block.conv1": "block.norm1", "block.conv2": "block.norm2", "block.conv3": "block.norm3",
        "block.shortcut.conv": "block.shortcut.norm", "head.conv": "head.norm",
    }  # fmt: skip
    for c in g.calls:
        if c.index in flow.role or not _is_norm_use(flow, c):
            continue
        ins = flow.data_inputs(c)
        prev = g.producer.get(ins[0]) if ins else None
        if prev is not None and flow.role.get(prev, ("",))[0] in norm_of:
            flow.label(c.index, norm_of[flow.role[prev][0]], "normalises that convolution")


def _label_router(flow: _Flow) -> None:
    for c in flow.g.calls:
        if (
            c.params
            and c.index not in flow.role
            and c.name in _LINEAR
            and _reaches_call(flow, c.outputs[0], frozenset({"topk"}))
        ):
            flow.label(c.index, "moe.router", "its scores pick the top experts")


def _label_head_transform(flow: _Flow) -> None:
    """An MLM head: dense → activation → norm → the vocabulary projection."""
    g = flow.g
    for c in g.calls:
        if flow.role.get(c.index, ("",))[0] != "head.lm":
            continue
        ins = flow.data_inputs(c)
        norm = g.producer.get(ins[0]) if ins else None
        while norm is not None and not g.calls[norm].params:
            prev = flow.data_inputs(g.calls[norm])
            norm = g.producer.get(prev[0]) if prev else None
        if norm is None or not _is_norm_use(flow, g.calls[norm]) or norm in flow.role:
            continue
        dense = flow.back(flow.data_inputs(g.calls[norm])[0])
        if len(dense) == 1 and next(iter(dense)) not in flow.role:
            flow.label(norm, "head.transform_norm", "normalises the head's hidden state")
            flow.label(next(iter(dense)), "head.transform", "transforms the hidden state")


def _label_heads(flow: _Flow, vocab: int | None) -> None:
    g = flow.g
    for c in g.calls:
        if not c.params or c.index in flow.role or _is_norm_use(flow, c):
            continue
        if c.name not in _LINEAR | _CONV:
            continue
        after = flow.forward(c.outputs[0])
        ends = not after and _reaches_output(flow, c.outputs[0])
        if ends:
            rows = _out_features(flow, c)
            if vocab is not None and rows == vocab:
                flow.label(c.index, "head.lm", "produces the output over the vocabulary")
            else:
                flow.label(c.index, "head.cls", "produces the model's output")
        elif any(g.calls[i].name == "tanh" for i in after):
            flow.label(c.index, "head.pooler", "dense then tanh on a pooled token")


def _reaches_output(flow: _Flow, tensor: int) -> bool:
    """Tensor → whether the model's output is computed from it (within 100 tensors)."""
    seen: set[int] = set()
    for _ in flow.downstream([tensor], lambda c: True, limit=100, seen=seen):
        pass
    return not seen.isdisjoint(flow.g.outputs)


def _out_features(flow: _Flow, c: _Call) -> int | None:
    shape = flow.g.tensors[c.outputs[0]].shape
    return int(shape[-1]) if len(shape) else None


def _vocab(module: nn.Module) -> int | None:
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            return int(m.num_embeddings)
    return None


def dataflow_roles(module: nn.Module, example: Any) -> dict[str, FlowRole]:
    """Module + example input → {parameter or buffer name: FlowRole}; {} if forward fails.

    ``example`` is a tensor, a tuple of positional arguments or a dict of keyword arguments.
    Runs once under ``torch.no_grad`` in eval mode (restored afterwards).
    """
    was_training = module.training
    module.eval()
    try:
        graph = _record(module, example)
    except Exception as e:  # a user model's failure: no roles, never an error
        log.warning(
            "reading roles from the forward pass of %s failed (%s: %s); roles come from names",
            type(module).__name__,
            type(e).__name__,
            e,
        )
        return {}
    finally:
        module.train(was_training)
    flow = _Flow(graph)
    _label_embeddings(flow)
    _label_attention(flow)
    _label_router(flow)
    _label_mlp(flow)
    _label_conv_blocks(flow)
    _label_heads(flow, _vocab(module))
    _label_head_transform(flow)
    roles_by_call = {ci: r for ci, (r, _) in flow.role.items()}
    _label_norms(flow, roles_by_call)
    _label_bias_adds(flow)
    out: dict[str, FlowRole] = {}
    for ci, (role, why) in sorted(flow.role.items()):
        for name in _names_of_call(flow, graph.calls[ci]):
            role = _moe(flow, graph.calls[ci], role)
            head = flow.head_dim.get(ci) if role.startswith(("attn.", "xattn.")) else None
            rope = flow.rope.get(ci, RopeReading(None, ""))
            out.setdefault(name, FlowRole(role, "main", why, head, *rope))
    return out


def _names_of_call(flow: _Flow, c: _Call) -> list[str]:
    """A call → the floating-point parameters it uses, named under the module running it.

    A tied tensor has several names (``embed_tokens.weight`` and ``lm_head.weight``); the
    call made inside ``lm_head`` gives its role to ``lm_head.weight`` only.
    """
    names: list[str] = []
    for t in c.inputs:
        tensor = flow.g.tensors.get(t)
        if tensor is None or not tensor.is_floating_point():
            continue
        own = flow.g.param_of.get(t, ())
        inside = [n for n in own if c.module and n.startswith(c.module + ".")]
        names += inside or list(own)
    return names


def _moe(flow: _Flow, c: _Call, role: str) -> str:
    """Stacked (3-d) expert weights take the ``moe.*`` form of an MLP role."""
    if role.startswith("mlp.") and any(
        flow.g.tensors[t].dim() == 3 for t in c.inputs if t in flow.g.param_of
    ):
        return "moe." + role.removeprefix("mlp.")
    return role
