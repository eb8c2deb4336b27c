"""The fine-tuning hook of compress_model, on pydnnz.compress.finetune's machinery."""
from __future__ import annotations

from ..errors import InvalidArgumentError


def run_finetune(model, layers, lossy, fn, options):
    """Call the user's `fn(model)` with the compression structure attached; return the tuned values.

    pydnnz.compress.finetune.attach loads the lossy results into the (still dense) layers and keeps
    their structure while `fn` trains: a quantized weight becomes `codebook[indices]` with the
    codebook as the trainable parameter (each shared value's gradient is the sum over its
    positions, and updates accumulate), a pruned weight keeps its zeros (masked gradient, mask
    re-applied before every forward). `fn` must build its optimizer from `model.parameters()`
    inside the call (the codebooks are new parameters). Afterwards the hooks are removed and the
    exported values (same indices and masks, tuned shared values) are what gets encoded.
    """
    from ..compress.finetune import attach

    allowed = {"masks", "freeze_zero"}
    unknown = set(options) - allowed
    if unknown:
        raise InvalidArgumentError(f"finetune_options: unknown key(s) {sorted(unknown)} (known: {sorted(allowed)})")
    keys = {name: f"{name}.weight" for name, *_ in layers}
    compressed = {keys[name]: lossy[name] for name in keys}
    was_training = model.training
    hooks = attach(model, compressed, **options)
    try:
        fn(model)
        tuned = hooks.export()
    finally:
        hooks.remove()
        model.train(was_training)
    return {name: tuned.get(key, lossy[name]) for name, key in keys.items()}
