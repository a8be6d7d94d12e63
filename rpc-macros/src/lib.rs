//! The `#[service]` attribute macro of warren-rpc. Use it through `warren_rpc::service`.
