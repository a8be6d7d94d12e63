//! warren-rpc: typed RPC over AMQP 0-9-1 message queues.
#![deny(missing_docs)]
