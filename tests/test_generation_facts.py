"""Kernel facts come from the generation table's rows, never from a generation's name.

A table with two rows no code has heard of, each a copy of a real row under a new name at a new
place (a shared anon_vma list like 2.6.33's, and 6.0's reuse placed before 3.19), as a new row in
core/src/generation.c would be: the plan costs them, the claims sort them, the figures colour and
order them, and the results read their reuse, from their fields and their place alone.
"""

from __future__ import annotations

import core
from core import generation
from sweep import claims, config, figures, grid, plan, results
from tests.report_data import chain_dataset, core_dataset

SHARED_NEW, REUSE_NEW = "9.1-shared", "9.2-reuse"


def fake_table() -> list[dict]:
    """The installed table with the two new rows: one after 2.6.34, one before 3.19."""
    rows = {row["name"]: row for row in core.generation_table()}
    out = []
    for row in core.generation_table():
        if row["name"] == "3.19":
            out.append({**rows["6.0"], "name": REUSE_NEW})
        out.append(row)
        if row["name"] == "2.6.34":
            out.append({**rows["2.6.33"], "name": SHARED_NEW})
    return out


def relabel(ds, names: dict[str, str]):
    """``ds`` with kernels renamed and the fake table as the one it records."""
    kernel = [names.get(k, k) for k in results.kernels(ds)]
    out = ds.assign_coords(kernel=kernel)
    out.attrs = {**ds.attrs, "generations": fake_table()}
    return out


def test_the_row_readers_take_the_fields():
    table = fake_table()
    assert generation.shared_list_names(table) == {"2.6.33", SHARED_NEW}
    assert generation.first_reusing(table) == REUSE_NEW
    assert generation.names(table).index(SHARED_NEW) == 2
    # the C table names its fields as core.generation reads them
    assert {r["structure"] for r in core.generation_table()} == set(generation.STRUCTURES)
    assert [generation.reuses_anon_vma(r) for r in core.generation_table()] == [
        r["name"] in ("3.19", "6.0", "6.16") for r in core.generation_table()]


def test_the_plan_costs_a_new_row_by_its_structure_and_reuse():
    models = plan.kernel_models(fake_table())
    assert models[SHARED_NEW] == models["2.6.33"] and models[SHARED_NEW].shared_list
    assert models[REUSE_NEW].reuse
    points = config.resolve(config.compose([
        "+grid=aim7", "grid.processes=[3000]", "grid.pages_per_vma=[1000]",
        "grid.cow_fraction=[1.0]", "grid.seed=[0]", "grid.sample=null"])).grid
    by_kernel = {s.kernel: s for s in grid.sims(points)}

    def cost(kernel, as_kernel):  # as_kernel's simulation, named kernel
        sim = by_kernel[as_kernel]
        renamed = type(sim)(sim.index, kernel, sim.processes, sim.pages_per_vma,
                            sim.cow_fraction, sim.base_seed, sim.seed)
        return plan.estimate_seconds(points, renamed, models)

    # a shared list's walks search the family's list: far dearer than a chain's
    assert cost(SHARED_NEW, "2.6.33") == cost("2.6.33", "2.6.33") > 1.5 * cost("2.6.34", "2.6.34")
    chain = config.resolve(config.compose(["+grid=chain", "grid.processes=[10000]",
                                           "grid.kernel=[6.0]", "grid.seed=[0]"])).grid
    sim = grid.sims(chain)[0]
    renamed = type(sim)(sim.index, REUSE_NEW, *(getattr(sim, f) for f in (
        "processes", "pages_per_vma", "cow_fraction", "base_seed", "seed")))
    reused = plan.estimate_seconds(chain, renamed, models)
    # reuse keeps a fork-and-exit lineage short: no chain cloned again at every generation
    assert reused == plan.estimate_seconds(chain, sim, models)
    as_34 = plan.estimate_seconds(chain, sim, {"6.0": models["2.6.34"]})
    assert as_34 > 10 * reused


def test_results_and_figures_follow_the_tables_order():
    ds = relabel(core_dataset(kernel=("2.6.33", "2.6.34", "6.0"), processes=(1, 10),
                              cow_fraction=(1.0,), cpus=(1,), seed=(0,)),
                 {"2.6.33": SHARED_NEW, "6.0": REUSE_NEW})
    assert results.kernel_order(ds) == ["2.6.34", SHARED_NEW, REUSE_NEW]
    assert results.shared_list(ds, SHARED_NEW) and not results.shared_list(ds, "2.6.34")
    assert results.has_reuse(ds, REUSE_NEW) and not results.has_reuse(ds, SHARED_NEW)
    table = generation.names(fake_table())
    style = figures.kernel_style(results.kernels(ds), table)
    palette = figures.kernel_style(list(table), table)
    assert style[SHARED_NEW] == palette[SHARED_NEW]
    # the third row's slot: 2.6.36's in the installed table
    assert style[SHARED_NEW]["color"] == figures.kernel_style(["2.6.36"])["2.6.36"]["color"]
    # a store that records no table is read with the installed core's
    bare = core_dataset(kernel=("3.19",), processes=(1,), cow_fraction=(1.0,), cpus=(1,),
                        seed=(0,))
    del bare.attrs["generations"]
    assert results.has_reuse(bare, "3.19") and results.shared_list(bare, "3.19") is False


def test_the_claims_sort_new_rows_by_their_fields():
    ds = relabel(chain_dataset(kernel=("2.6.33", "2.6.34", "6.0")),
                 {"2.6.33": SHARED_NEW, "6.0": REUSE_NEW})
    c = {x.key: x for x in claims.check_claims(ds)}
    # the shared-list row grows no chain: c1 is the anon_vma_chain row's alone
    assert c["c1"].holds and c["c1"].measured.startswith("2.6.34: +1/generation")
    assert SHARED_NEW not in c["c1"].measured
    assert c["c2"].holds and c["c2"].measured.startswith(f"{REUSE_NEW}: k = 0.00")
    # reuse starts, in this table, with the new row
    assert c["c2"].claim == f"with reuse ({REUSE_NEW}+) the chain stays bounded"
