"""hegui's API (group hegui.io): pydantic models from which the CRDs in crds/ are generated."""
