"""anonvma-sweep: Hydra grids fanned out over Ray into one xarray/Zarr dataset per sweep."""
