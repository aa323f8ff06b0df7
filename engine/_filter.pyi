"""Type stubs for the compiled filter of the scan kernels (ext/_filter.pyx); its C interface is for
engine._query and engine._aggregate (ext/engine._filter.pxd)."""

ZONE_ROWS: int
PAR_ROWS: int

def default_threads() -> int:
    """Threads a scan may use when not told: ENGINE_THREADS, else 1."""
