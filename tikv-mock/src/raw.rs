//! Raw KV storage (interface; being completed).

/// Raw key-value data of the cluster.
#[derive(Debug, Default)]
pub(crate) struct RawStore {}
