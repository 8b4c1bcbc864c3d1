"""What the tests hold both implementations to: the primer's numbers and docs/core.md's keys.

One place for them, so the core's table, the reference's and the footprint, lineage and
differential tests all use the same values.
"""

#: (anon_vma B, anon_vma_chain B, vm_area_struct B) on x86-64 with KSM, MIGRATION and NUMA on,
#: no lock debugging: primer §2 (the 6.0 VMA is its unverified ~200 B of 4.x-5.x; 6.16's is
#: the 192 B of 6.15's repacking).
SIZES = {
    "2.6.33": (24, 0, 176),
    "2.6.34": (24, 48, 176),
    "2.6.36": (40, 48, 184),
    "3.0": (64, 48, 184),
    "3.7": (56, 64, 184),
    "3.8": (56, 64, 184),
    "3.19": (72, 64, 184),
    "6.0": (96, 64, 200),
    "6.16": (96, 64, 192),
}


#: Live objects at the last scan and the bytes they take (docs/core.md "Results"): all 0 once
#: every process has exited.
FOOTPRINT_KEYS = (
    "processes", "vmas", "anon_vmas", "avcs", "pages", "max_chain", "chain_mismatches",
    "rmap_bytes", "vma_bytes",
)
#: Counts over the whole run.
COUNTER_KEYS = ("faults", "cows", "reuses", "forks", "exits")
#: Walk sums and statistics.
WALK_KEYS = (
    "walks", "entries_total", "calls_total", "hits_total", "entries_mean", "calls_mean",
    "hits_mean", "entries_p50", "entries_p99", "entries_max", "entries_hist",
)
#: ENOMEM injection: failures injected and what failed cleanly (0 without injection).
INJECTION_KEYS = ("injected", "faults_failed", "forks_failed", "ops_failed", "ops_skipped")
#: Every key of the results contract (docs/core.md), the two wall times included.
RESULT_KEYS = {
    *WALK_KEYS, *FOOTPRINT_KEYS, *COUNTER_KEYS, *INJECTION_KEYS, "sim_seconds", "scan_seconds",
}
