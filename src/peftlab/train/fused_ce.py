"""LM-head projection + (label-smoothed) cross-entropy, fused and chunked over target positions.

``F.cross_entropy(hidden @ W.T, targets)`` builds the [N, vocab] logits, keeps them (and their fp32 copy) for
backward, and builds a [N, vocab] gradient there: on a CPU each of those ~40 MB buffers is fresh memory, and filling
it costs as much as the matrix products. Here the logits exist one chunk of rows at a time, and the gradients with
respect to the hidden states (and to W when it trains, as in full fine-tuning) are computed in the forward pass,
chunk by chunk, while the chunk's logits are in cache. Backward only scales the saved gradients.

The math is F.cross_entropy's mean reduction with ``label_smoothing=eps``:
``loss_i = (1 - eps) * (lse_i - z_i[t_i]) + eps * (lse_i - mean_j z_ij)`` and
``d loss_i / d z_i = softmax(z_i) - (1 - eps) * onehot(t_i) - eps / V``.
Logits are computed in the autocast dtype when autocast is on (else in the inputs' dtype) and reduced in fp32.
"""
from __future__ import annotations

import torch

DEFAULT_CHUNK_ELEMENTS = 2**22
"""Logit elements per chunk (rows = this // vocab; 85 for a 49k vocabulary). Fewer rows re-read the LM head more
often (each chunk reads it twice), more rows hold more memory; 2**22 measured best here (`benchmarks/`)."""


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing, chunk_rows, compute_dtype, grad_enabled):
        n_rows, vocab = hidden.shape[0], weight.shape[0]
        need_hidden_grad = grad_enabled and ctx.needs_input_grad[0]
        need_weight_grad = grad_enabled and ctx.needs_input_grad[1]
        need_bias_grad = grad_enabled and bias is not None and ctx.needs_input_grad[2]
        acc_dtype = torch.promote_types(compute_dtype, torch.float32)  # reductions: fp32 (fp64 stays fp64)
        eps = float(label_smoothing)
        scale = 1.0 / max(n_rows, 1)  # the mean over all target rows
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        # d loss / d logits = (softmax - (1 - eps) * onehot(t) - eps / V) * scale. Only the softmax goes through the
        # big products; the one-hot and uniform terms are applied to their (small) results below.
        grad_hidden = torch.empty_like(hidden) if need_hidden_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_weight_grad else None
        grad_bias = torch.zeros(vocab, dtype=acc_dtype, device=weight.device) if need_bias_grad else None
        w_colsum = w.sum(dim=0, dtype=acc_dtype) if (need_hidden_grad and eps) else None  # (d,), no fp32 copy of W
        total = torch.zeros((), dtype=acc_dtype, device=hidden.device)
        for start in range(0, n_rows, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n_rows))
            h = hidden[rows].to(compute_dtype)  # (n, d)
            t = targets[rows]  # (n,)
            logits = h @ w.T if b is None else torch.addmm(b, h, w.T)  # (n, V), compute dtype
            log_probs = torch.log_softmax(logits, dim=-1, dtype=acc_dtype)  # (n, V), fp32
            loss = -log_probs.gather(1, t[:, None]).squeeze(1)  # NLL, (n,)
            if eps:
                loss = (1 - eps) * loss - eps * log_probs.mean(dim=-1)
            total += loss.sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            probs = torch.exp(log_probs, out=logits)  # softmax, written over the logits: (n, V)
            if grad_hidden is not None:
                g = (probs @ w).to(acc_dtype) - (1 - eps) * w[t].to(acc_dtype)  # (n, d)
                if eps:
                    g -= (eps / vocab) * w_colsum
                grad_hidden[rows] = (g * scale).to(hidden.dtype)
            if grad_weight is not None:
                h_acc = h.to(acc_dtype)
                grad_weight += (probs.T @ h).to(acc_dtype) * scale
                grad_weight.index_add_(0, t, h_acc, alpha=-(1 - eps) * scale)
                if eps:
                    grad_weight -= (eps / vocab) * scale * h_acc.sum(dim=0)
            if grad_bias is not None:
                grad_bias += probs.sum(dim=0, dtype=acc_dtype) * scale
                grad_bias.index_add_(0, t, torch.full(t.shape, -(1 - eps) * scale, dtype=acc_dtype,
                                                      device=t.device))
                if eps:
                    grad_bias -= eps / vocab * scale * h.shape[0]
        ctx.grads = (grad_hidden,
                     grad_weight.to(weight.dtype) if grad_weight is not None else None,
                     grad_bias.to(bias.dtype) if grad_bias is not None else None)
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss):
        grads = tuple(None if g is None else g * grad_loss.to(g.dtype) for g in ctx.grads)
        ctx.grads = None
        return (*grads, None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, label_smoothing: float = 0.0,
                         chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets``, never holding all logits.

    ``hidden``: (N, d) states at target positions; ``weight``: (V, d), the LM head; ``targets``: (N,) token ids
    (no ignored entries: select the target rows first). Equals ``F.cross_entropy(F.linear(hidden, weight, bias),
    targets, label_smoothing=label_smoothing)`` and its gradients (tested), in less time and memory.
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, d) and targets (N,); got {tuple(hidden.shape)} and "
                         f"{tuple(targets.shape)}")
    chunk_rows = max(1, chunk_elements // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, label_smoothing, chunk_rows,
                                     _compute_dtype(hidden), torch.is_grad_enabled())
