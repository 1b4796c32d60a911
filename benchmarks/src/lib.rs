//! End-to-end benchmarks. Each binary under `src/bin/` measures one thing against a `tikv-mock`
//! running in another process; `docs/benchmarks.md` records the numbers and the commands.
