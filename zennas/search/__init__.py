"""Search strategies: they receive the space, a score function and a cost model (zennas.search.interfaces)
and import none of zennas.proxies, zennas.latency, zennas.spaces or torch; zennas.wiring builds them."""
