//! Generated protobuf and gRPC types for the TiKV and PD wire protocol.
//!
//! Everything under `src/generated/` is produced by `cargo xtask codegen` from the `.proto` files
//! in the workspace's `proto/` directory and is never edited by hand; CI regenerates it and fails
//! on any difference. The `.proto` files are written in this project and are wire-identical to
//! pingcap/kvproto at the commit recorded in `proto/VERSION` (package, message, field and enum
//! names, field numbers and types); `tests/wire.rs` pins a sample of encodings byte for byte.
//!
//! Who uses it: `tikv-client` (internally; proto types are not part of its public API) and
//! `tikv-mock` (which serves the same services).
//!
//! # `bytes` fields are `bytes::Bytes`
//!
//! Every protobuf `bytes` field is generated as [`bytes::Bytes`], not `Vec<u8>`:
//!
//! - Decoding is zero-copy. tonic hands prost a buffer backed by `BytesMut`, and prost decodes a
//!   `Bytes` field by splitting that buffer, so values returned by gets and scans reach the caller
//!   without a copy.
//! - Requests share instead of copy. A key or value the caller gave once can be placed into the
//!   requests of every region shard and every retry by bumping a reference count.
//! - One rule for every field keeps the generated API predictable; there is no per-field list to
//!   maintain as the protocol grows.
//!
//! The cost to keep in mind: a `Bytes` sliced out of a response keeps the whole response buffer
//! alive. Long-lived holders of small slices of large responses (the region cache keeping region
//! boundaries, for example) should copy what they keep with `Bytes::copy_from_slice`.
//!
//! # Services
//!
//! Each service module has a tonic client (`*_client`) and server (`*_server`):
//! `tikvpb::tikv_client::TikvClient`, `pdpb::pd_client::PdClient`,
//! `keyspacepb::keyspace_client::KeyspaceClient`,
//! `resource_manager::resource_manager_client::ResourceManagerClient`,
//! `deadlock::deadlock_client::DeadlockClient`, `tsopb::tso_client::TsoClient`,
//! `routerpb::router_client::RouterClient` and `meta_storagepb::meta_storage_client::MetaStorageClient`. The gRPC health
//! service comes from `tonic-health`.

macro_rules! generated {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$meta])*
            #[allow(
                missing_docs,
                unreachable_pub,
                missing_debug_implementations,
                rustdoc::broken_intra_doc_links,
                rustdoc::invalid_html_tags,
                rustdoc::bare_urls,
                clippy::all,
                clippy::pedantic
            )]
            pub mod $name {
                include!(concat!("generated/", stringify!($name), ".rs"));
            }
        )*
    };
}

generated! {
    /// Keyspace identity used by API V3 contexts.
    apipb,
    /// Coprocessor requests (TiDB push-down; kept for BatchCommands completeness).
    coprocessor,
    /// The deadlock detector service that TiKV leaders run.
    deadlock,
    /// Region errors returned by TiKV (`errorpb.Error` and its variants).
    errorpb,
    /// PD's keyspace service.
    keyspacepb,
    /// PD's meta storage service (`meta_storagepb.MetaStorage`, `Get` only): where the router
    /// servers of PD's microservice mode are registered.
    meta_storagepb,
    /// TiKV's request and response messages and `Context`.
    kvrpcpb,
    /// Cluster metadata: stores, regions, peers and epochs.
    metapb,
    /// PD's main service: members, TSO, regions, stores, GC state.
    pdpb,
    /// PD's resource manager service (request-unit token buckets).
    resource_manager,
    /// The router microservice (`routerpb.Router`): region and store reads in PD's
    /// microservice mode.
    routerpb,
    /// The `tikvpb.Tikv` service and BatchCommands.
    tikvpb,
    /// Trace context propagated to TiKV.
    tracepb,
    /// The TSO microservice (`tsopb.TSO`): keyspace-group timestamps in PD's microservice mode.
    tsopb,
}
