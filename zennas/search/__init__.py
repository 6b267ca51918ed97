"""Search strategies: they receive the space, a score function and a cost model, and import no torch."""
