"""`patch(model, fuse=True)`: fold a BatchNorm that follows a conv into its weights, and run the
activation that follows (ReLU, SiLU, GELU, LeakyReLU) in the conv's epilogue: a Conv2d or
ConvTranspose2d with a BatchNorm2d, a Conv3d or ConvTranspose3d with a BatchNorm3d (a transposed
convolution's fused tail is its input-gradient kernel's: `frontend/transposed.py`).

A norm-act module counts as a BatchNorm with its activation: a `BatchNorm2d` subclass with an `act`
module it applies after normalizing (timm's `BatchNormAct2d`, inside its `ConvNormAct`/`ConvBnAct`
wrappers). Its BatchNorm is folded; its activation runs in the epilogue when the epilogue has it, and
after the conv as usual when not (hard-swish, say).

Chains are found in `nn.Sequential`s (a conv, then a BatchNorm and/or an activation, adjacent)
and in `torch.fx` graphs (a conv whose only user is the BatchNorm, whose only user is the
activation): the whole model's where it traces, else each module that holds a conv (a wrapper such
as `ConvNormAct`), traced on its own. Each module in a chain must be called from that one place only.

Nothing is rewritten: the conv (already patched) remembers its BatchNorm and activation, and those
modules' classes are swapped in place for ones that pass their input through while the conv does
their work. Folding happens at call time from the BatchNorm's current statistics, and only while it
is in eval mode: a BatchNorm in training mode (at patch time or later, after `model.train()`) is
never folded, and then it and its activation run as usual. `unpatch` restores every class and
removes every attribute fusion set.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from .swap import Swapped, derived_class, restore

FOLDED_BN = "_tritonconv_fused_bn"
FUSED_ACTIVATION = "_tritonconv_fused_activation"
AFTER_BN = "_tritonconv_after_bn"


def activation_of(module: nn.Module) -> tuple[str, float] | None:
    """(activation name, negative slope) the epilogue computes for an activation module, or None."""
    if type(module) in (nn.ReLU,):
        return "relu", 0.01
    if type(module) is nn.SiLU:
        return "silu", 0.01
    if type(module) is nn.GELU:
        return ("gelu" if module.approximate == "none" else "gelu_tanh"), 0.01
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", module.negative_slope
    return None


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: _BatchNorm, transposed_groups: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """conv(x, w, b) followed by bn in eval mode == conv(x, w * s, (b - mean) * s + beta), s = gamma / sqrt(var + eps).
    Computed in fp32 (fp64 for fp64 weights), returned in the weight's dtype and memory format.

    A conv's output channels are its weight's dim 0; a transposed convolution's (`transposed_groups`
    = its groups) are dim 1 within each group: output channel g * (C_out/g) + j is weight[g-th block
    of C_in/g rows, j]."""
    wide = torch.float64 if weight.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(bn.running_var.to(wide) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(wide)
    shift = -bn.running_mean.to(wide) if bias is None else bias.to(wide) - bn.running_mean.to(wide)
    folded_bias = shift * scale + (0 if bn.bias is None else bn.bias.to(wide))
    taps = [1] * (weight.dim() - 2)
    if transposed_groups:
        in_channels, out_per_group = weight.shape[:2]
        per_group = scale.view(transposed_groups, 1, out_per_group)
        scale = per_group.expand(-1, in_channels // transposed_groups, -1).reshape(in_channels, out_per_group)
        folded_weight = weight.to(wide) * scale.view(in_channels, out_per_group, *taps)
    else:
        folded_weight = weight.to(wide) * scale.view(-1, 1, *taps)
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)


def is_fused(conv: nn.Module) -> bool:
    """Whether `fuse_chain` fused this conv with a BatchNorm or an activation (until `unfuse`)."""
    return FUSED_ACTIVATION in vars(conv) or FOLDED_BN in vars(conv)


def fused_keywords(conv: nn.Module) -> dict | None:
    """The epilogue keywords of a fused conv while its chain is fused (its BatchNorm, if any, in eval
    mode), else None."""
    fused = conv.__dict__.get(FUSED_ACTIVATION)
    bn = conv.__dict__.get(FOLDED_BN)
    if fused is None or (bn is not None and bn.training):
        return None
    return {"activation": fused[0], "negative_slope": fused[1]}


def folded_parameters(conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """(weight, bias) with the conv's BatchNorm folded in while that is in eval mode."""
    bn = conv.__dict__.get(FOLDED_BN)
    if bn is None or bn.training:
        return weight, bias
    return fold_batchnorm(weight, bias, bn, conv.groups if isinstance(conv, _ConvTransposeNd) else 0)


def is_norm_act(module: nn.Module) -> bool:
    """A BatchNorm2d subclass that applies an `act` module of its own after normalizing (timm's
    `BatchNormAct2d`; its `drop`, if any, runs before the activation)."""
    return (
        isinstance(module, nn.BatchNorm2d)
        and type(module) is not nn.BatchNorm2d
        and isinstance(getattr(module, "act", None), nn.Module)
    )


class _PassedThrough(Swapped):
    """Mixin of a BatchNorm's or activation's class while its conv does its work. A folded norm-act
    still applies its own activation (a passed-through one when the epilogue took it over)."""

    def forward(self, input):
        bn = self if isinstance(self, _BatchNorm) else self.__dict__.get(AFTER_BN)
        if bn is not None and bn.training:
            return super().forward(input)
        if bn is self and is_norm_act(self):
            drop = getattr(self, "drop", None)
            return self.act(input if drop is None else drop(input))
        return input


def passed_through_class(original: type) -> type:
    return derived_class(passed_through_class, (_PassedThrough,), original)


class _LeafTracer(fx.Tracer):
    """Keeps every conv, BatchNorm and activation a leaf (patched convs are tritonconv layers, whose
    forward would otherwise be traced into)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (
            isinstance(module, (_ConvNd, _BatchNorm))
            or activation_of(module) is not None
            or super().is_leaf_module(module, qualified_name)
        )


Chain = tuple[str, str | None, str | None]  # names of (conv, batchnorm, activation)


def find_chains(model: nn.Module, convs: list[str]) -> tuple[list[Chain], str | None]:
    """(conv -> [BatchNorm] -> [activation] chains starting at the named convs, in their order,
    why fx tracing failed or None). Sequential adjacency always counts; the fx graph adds what it
    can see."""
    chains: dict[str, Chain] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for index, (child_name, _) in enumerate(children):
                conv = _join(name, child_name)
                if conv in convs:
                    following = [_join(name, n) for n, _ in children[index + 1 : index + 3]]
                    chains[conv] = _chain(model, conv, following)
    trace_error = _graph_chains(model, "", model, convs, chains)
    if trace_error is not None:  # trace each module that holds a conv (a ConvNormAct, say) on its own
        for name, module in model.named_modules():
            if name and any(_join(name, child) in convs for child, _ in module.named_children()):
                _graph_chains(model, name, module, convs, chains)
    found = [chains[conv] for conv in convs if conv in chains]
    return [chain for chain in found if chain[1] or chain[2]], trace_error


def _graph_chains(model: nn.Module, prefix: str, root: nn.Module, convs: list[str], chains: dict) -> str | None:
    """Add the chains `root`'s fx graph shows (module names prefixed to be `model`'s) to `chains`,
    where they are longer than what is there; return why `root` did not trace, or None."""
    try:
        graph = _LeafTracer().trace(root)
    except Exception as error:  # models with data-dependent control flow do not trace
        return f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(_join(prefix, node.target), []).append(node)
    for conv in convs:
        nodes = calls.get(conv, [])
        if len(nodes) != 1:
            continue
        following, node = [], nodes[0]
        while len(following) < 2 and len(node.users) == 1:
            (node,) = node.users
            if node.op != "call_module" or len(calls.get(_join(prefix, node.target), [])) != 1:
                break
            following.append(_join(prefix, node.target))
        found = _chain(model, conv, following)
        if sum(part is not None for part in found) > sum(part is not None for part in chains.get(conv, (conv,))):
            chains[conv] = found
    return None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _chain(model: nn.Module, conv_name: str, following: list[str]) -> Chain:
    """conv, then a BatchNorm of its channels and rank, then an activation, each used from one place only."""
    conv = model.get_submodule(conv_name)
    bn_name = activation_name = None
    rest = list(following)
    if rest and _used_once(model, rest[0]):
        candidate = model.get_submodule(rest[0])
        if _folds_into(conv, candidate):
            bn_name = rest.pop(0)
            if is_norm_act(candidate):  # its own activation, if the epilogue has it; nothing after it is adjacent
                return conv_name, bn_name, f"{bn_name}.act" if activation_of(candidate.act) is not None else None
        elif isinstance(candidate, _BatchNorm):
            return conv_name, None, None  # another normalization in between: nothing after it is adjacent
    if rest and _used_once(model, rest[0]) and activation_of(model.get_submodule(rest[0])) is not None:
        activation_name = rest[0]
    return conv_name, bn_name, activation_name


def _folds_into(conv: nn.Module, norm: nn.Module) -> bool:
    """A BatchNorm of the conv's channels and rank: BatchNorm2d (or a norm-act) after a Conv2d or a
    ConvTranspose2d (decoders' ConvTranspose-BN-ReLU), BatchNorm3d after a Conv3d (video nets'
    conv-BN-ReLU) or a ConvTranspose3d."""
    if not isinstance(norm, _BatchNorm) or norm.num_features != conv.out_channels:
        return False
    if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
        return type(norm) is nn.BatchNorm2d or is_norm_act(norm)
    return isinstance(conv, (nn.Conv3d, nn.ConvTranspose3d)) and type(norm) is nn.BatchNorm3d


def _used_once(model: nn.Module, name: str) -> bool:
    target = model.get_submodule(name)
    return sum(module is target for _, module in model.named_modules(remove_duplicate=False)) == 1


def why_not_foldable(bn: nn.Module) -> str | None:
    if bn.training:
        return "BatchNorm in training mode (never folded)"
    if not bn.track_running_stats or bn.running_mean is None:
        return "BatchNorm without running statistics"
    return None


def fuse_chain(model: nn.Module, chain: Chain) -> tuple[str | None, str | None]:
    """Fuse one chain in place; return (description of what was fused, or None; why not, or None)."""
    conv_name, bn_name, activation_name = chain
    conv = model.get_submodule(conv_name)
    bn = model.get_submodule(bn_name) if bn_name else None
    if bn is not None and (reason := why_not_foldable(bn)) is not None:
        return None, f"{conv_name} + {bn_name}: {reason}"
    parts = [conv_name]
    if bn is not None:
        object.__setattr__(conv, FOLDED_BN, bn)  # not nn.Module.__setattr__: no new submodule, no new state
        bn.__class__ = passed_through_class(type(bn))
        parts.append(f"{bn_name} (BatchNorm folded)")
    if activation_name:
        activation = model.get_submodule(activation_name)
        object.__setattr__(conv, FUSED_ACTIVATION, activation_of(activation))
        object.__setattr__(activation, AFTER_BN, bn)
        activation.__class__ = passed_through_class(type(activation))
        parts.append(f"{activation_name} ({type(activation).__name__} in the epilogue)")
    return " + ".join(parts), None


def unfuse(model: nn.Module) -> None:
    """Undo every fusion: original classes back, fusion's attributes gone."""
    for module in model.modules():
        if isinstance(module, _PassedThrough):
            restore(module)
        for attribute in (FOLDED_BN, FUSED_ACTIVATION, AFTER_BN):
            module.__dict__.pop(attribute, None)
