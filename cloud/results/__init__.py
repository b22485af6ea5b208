"""What comes out: the store, the hub that fans results out, the operator's frame viewer."""
