"""KAT's group-rational activation (Adamdad/rational_kat_cu, commit 181bae8, file
kat_rational/kat_1dgroup_torch.py: `KAT_Group_Torch` and `Rational_CUDA_A_1DGroup`) and
the GR-KAN blocks users build from it, for tests.

The upstream repository has no license file, so its code is not copied here: this is
its arithmetic, operation for operation (the powers of x stacked from x^0, numerator
and denominator as batched dot products, the shared numerator repeated per group), with
its parameter names and shapes. `abs_powers=True` is the CUDA / Triton kernel's
denominator, 1 + sum |b_j| |x|^j (KAT_Group, GPU only), instead of the fallback's
1 + sum |b_j| x^j.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# init.json of the same commit: the rational fits KAT starts from.
INIT = {
    "identity": ([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
    "gelu": (
        [-0.00153969, 0.51692871, 0.44075827, 0.0972553, -0.00884418, -0.00378675],
        [-0.14171056, -0.06481231, -0.0444695, 0.01283776],
    ),
}


def _get_xps(z: Tensor, len_numerator: int, len_denominator: int) -> Tensor:
    xps = [z]
    for _ in range(max(len_numerator, len_denominator) - 2):
        xps.append(xps[-1] * z)
    xps.insert(0, torch.ones_like(z))
    return torch.stack(xps, dim=1)


def rational_1dgroup(
    x: Tensor, weight_numerator: Tensor, weight_denominator: Tensor, group: int, abs_powers: bool
) -> Tensor:
    b, length, d = x.shape
    len_num, len_deno = weight_numerator.size(1), weight_denominator.size(1)
    z = x.view(b, length, group, d // group).permute(2, 0, 1, 3).contiguous()
    z = z.view(group, b * length * (d // group))
    xps = _get_xps(z, len_num, len_deno)
    numerator = torch.bmm(weight_numerator.unsqueeze(1), xps).squeeze(1)
    expanded_dw = torch.cat(
        [
            torch.ones(group, 1, dtype=x.dtype),
            weight_denominator,
            torch.zeros(group, max(0, len_num - len_deno - 1), dtype=x.dtype),
        ],
        dim=1,
    )
    powers = xps.abs() if abs_powers else xps
    denominator = torch.bmm(expanded_dw.abs().unsqueeze(1), powers).squeeze(1)
    result = numerator.div(denominator)
    result = result.view(group, b, length, d // group).permute(1, 2, 0, 3).contiguous()
    return result.view(b, length, d)


class KATGroup(nn.Module):
    """KAT_Group_Torch: `weight_numerator` (1, 6) shared, `weight_denominator` (G, 4)."""

    def __init__(self, num_groups: int = 8, mode: str = "gelu", abs_powers: bool = False) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.abs_powers = abs_powers
        num, den = INIT[mode]
        self.weight_numerator = nn.Parameter(torch.tensor(num).view(1, -1))
        self.weight_denominator = nn.Parameter(torch.tensor([den] * num_groups))

    def forward(self, x: Tensor) -> Tensor:
        assert x.dim() == 3, "Input tensor must be 3D. Of size (batch, length, channels)."
        weight_numerator = self.weight_numerator.repeat(self.num_groups, 1)
        return rational_1dgroup(
            x, weight_numerator, self.weight_denominator, self.num_groups, self.abs_powers
        )


class KATBlock(nn.Module):
    """KAT's `KAN` MLP block: act1 -> fc1 -> act2 -> fc2 (dropout 0), on (B, L, C)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, abs_powers: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.act1 = KATGroup(mode="identity", abs_powers=abs_powers)
        self.act2 = KATGroup(mode="gelu", abs_powers=abs_powers)
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.dim() == 2
        x = x.unsqueeze(1) if flat else x
        x = self.fc2(self.act2(self.fc1(self.act1(x))))
        return x.squeeze(1) if flat else x
