"""Ray Estate batch jobs: ingest, clean, drift, tune, register, and the pipeline that runs them."""
