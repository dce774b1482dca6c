"""Infrastructure beyond what Chalice declares, and the local stack."""
