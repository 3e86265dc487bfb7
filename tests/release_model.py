"""A model built as the research release's `ast_models.ASTModel` is (timm 0.4.5 DeiT blocks), from torch layers:
its module names, a DataParallel wrapper, packed qkv, the unused DeiT heads and the release's epsilons (1e-6
in the encoder, 1e-5 in the head). Its state dict is what the release's .pth files hold."""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, fstride: int, tstride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=(16, 16), stride=(fstride, tstride))


class DistilledViT(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, hidden: int, fstride: int, tstride: int, num_patches: int):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, fstride, tstride)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 2, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head, self.head_dist = nn.Linear(dim, 1000), nn.Linear(dim, 1000)  # DeiT's, unused by AST


class ReleaseAST(nn.Module):
    """`ast_models.ASTModel.forward`: x (batch, frames, mel bins) -> logits."""

    def __init__(self, labels: int, frames: int, fstride: int = 10, tstride: int = 10, dim: int = 128,
                 depth: int = 2, heads: int = 2, hidden: int = 256, mel_bins: int = 128) -> None:
        super().__init__()
        patches = ((mel_bins - 16) // fstride + 1) * ((frames - 16) // tstride + 1)
        self.v = DistilledViT(dim, depth, heads, hidden, fstride, tstride, patches)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, labels))  # LayerNorm eps 1e-5
        generator = torch.Generator().manual_seed(frames + fstride * 7 + tstride)
        with torch.no_grad():  # non-trivial values everywhere, norms included
            for name, parameter in self.named_parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.05 * noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1).transpose(2, 3)
        batch = x.shape[0]
        x = self.v.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.v.cls_token.expand(batch, -1, -1), self.v.dist_token.expand(batch, -1, -1), x), dim=1)
        x = x + self.v.pos_embed
        for block in self.v.blocks:
            x = block(x)
        x = self.v.norm(x)
        return self.mlp_head((x[:, 0] + x[:, 1]) / 2)


def release_checkpoint(model: ReleaseAST) -> dict[str, torch.Tensor]:
    """The state dict as the release saved it: through a DataParallel wrapper (names start with module.)."""
    return nn.DataParallel(model).state_dict()
