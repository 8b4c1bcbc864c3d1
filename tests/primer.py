"""Kernel facts the tests check against, each from ../shared/docs/kernel-primer.md (§2 sizes).

One place for the expected values, so the core's table, the reference's and the footprint tests
are all held to the same numbers.
"""

#: (anon_vma B, anon_vma_chain B, vm_area_struct B) on x86-64 with KSM, MIGRATION and NUMA on,
#: no lock debugging: primer §2 (the 6.0 VMA is its unverified ~200 B of 4.x-5.x).
SIZES = {
    "2.6.33": (24, 0, 176),
    "2.6.34": (24, 48, 176),
    "2.6.36": (40, 48, 184),
    "3.0": (64, 48, 184),
    "3.7": (56, 64, 184),
    "3.8": (56, 64, 184),
    "3.19": (72, 64, 184),
    "6.0": (96, 64, 200),
}
