//! The PD server (being completed).

use std::sync::Arc;

use tonic::service::Routes;

use crate::Shared;

/// The gRPC services and HTTP routes served on the PD address.
pub(crate) fn routes(shared: Arc<Shared>) -> Routes {
    let _ = shared;
    Routes::default()
}
