//! The TiKV server of one store (being completed).

use std::sync::Arc;

use tonic::service::Routes;

use crate::Shared;

/// The gRPC services one store serves.
pub(crate) fn routes(shared: Arc<Shared>, store_id: u64) -> Routes {
    let _ = (shared, store_id);
    Routes::default()
}
