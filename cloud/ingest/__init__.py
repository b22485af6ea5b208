"""Where a frame goes: parsed once, stored, batched, decoded, inferred."""
