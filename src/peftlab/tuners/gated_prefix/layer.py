"""The gated prefix uses the prefix layer itself (gates live in ``PrefixLayer.gate``): one code path for plain,
residual-only, gate-only and residual+gate prefixes."""
from ..prefix.layer import PrefixLayer

__all__ = ["PrefixLayer"]
