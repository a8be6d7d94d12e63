//! The generated code relies on nothing the user imported: it compiles in a module without the
//! prelude, next to user items named like the things it uses.
#![no_implicit_prelude]
// The items stand for a user's public API: `pub` on purpose, though a test crate exports nothing.
#![allow(unreachable_pub)]

mod user {
    // Names that would capture unqualified paths in generated code.
    #[allow(dead_code)]
    pub struct Result;
    #[allow(dead_code)]
    pub struct Option;
    #[allow(dead_code)]
    pub struct Vec;
    #[allow(dead_code)]
    pub struct Arc;
    #[allow(dead_code)]
    pub struct Send;
    #[allow(dead_code)]
    pub struct Error;
    #[allow(dead_code)]
    pub struct Stream;
    #[allow(dead_code)]
    pub struct ReplyStream;

    /// A service with every kind of method.
    #[::warren_rpc::service(name = "hygienic")]
    pub trait Hygienic {
        /// Plain value.
        async fn value(&self, text: ::std::string::String) -> ::std::string::String;
        /// Application error.
        async fn fallible(&self, x: u8) -> ::core::result::Result<u8, ::std::string::String>;
        /// No arguments, no result.
        async fn nothing(&self);
        /// One-way, with a timeout.
        #[warren(oneway, timeout_ms = 250)]
        async fn fire(&self, r#type: u32);
        /// Streamed reply.
        async fn count(&self, n: u32) -> ::warren_rpc::Stream<u32>;
    }

    pub struct Impl;

    impl Hygienic for Impl {
        async fn value(&self, text: ::std::string::String) -> ::std::string::String {
            text
        }
        async fn fallible(&self, x: u8) -> ::core::result::Result<u8, ::std::string::String> {
            ::core::result::Result::Ok(x)
        }
        async fn nothing(&self) {}
        async fn fire(&self, _type: u32) {}
        async fn count(&self, n: u32) -> ::warren_rpc::Stream<u32> {
            ::warren_rpc::Stream::iter(0..n)
        }
    }
}

#[test]
fn generated_code_is_hygienic() {
    use ::warren_rpc::Service as _;
    let server = user::HygienicServer::new(user::Impl);
    ::std::assert_eq!(server.name(), "hygienic");
    let names: ::std::vec::Vec<&str> = ::core::iter::Iterator::collect(
        ::core::iter::Iterator::map(server.methods().iter(), |m| m.name),
    );
    ::std::assert_eq!(names, ["value", "fallible", "nothing", "fire", "count"]);
    let fire = &user::HygienicClient::METHODS[3];
    ::std::assert!(fire.oneway);
    ::std::assert_eq!(
        fire.timeout,
        ::core::option::Option::Some(::std::time::Duration::from_millis(250))
    );
}

#[test]
fn raw_identifiers_keep_their_wire_name() {
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let server = user::HygienicServer::new(user::Impl);
    let request = ::warren_rpc::Request::new(
        "fire",
        ::warren_rpc::Codec::Json,
        <[u8]>::to_vec(br#"{"type": 7}"#),
    );
    let outcome = runtime.block_on(::warren_rpc::Service::dispatch(&server, request));
    ::std::assert_eq!(
        outcome,
        ::warren_rpc::Outcome::Ok(<[u8]>::to_vec(br#"{"ok":null}"#))
    );
}

#[test]
fn a_stream_awaited_as_one_reply_collects_its_items() {
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let server = user::HygienicServer::new(user::Impl);
    ::std::assert!(user::HygienicClient::METHODS[4].streaming);
    ::std::assert!(!user::HygienicClient::METHODS[0].streaming);
    let request = ::warren_rpc::Request::new(
        "count",
        ::warren_rpc::Codec::Json,
        <[u8]>::to_vec(br#"{"n": 3}"#),
    );
    let dispatch = ::warren_rpc::Service::dispatch(&server, request);
    ::std::assert!(dispatch.is_stream());
    ::std::assert_eq!(
        runtime.block_on(dispatch),
        ::warren_rpc::Outcome::Ok(<[u8]>::to_vec(br#"{"ok":[0,1,2]}"#))
    );
}

/// Generated clients and servers can move between threads, and so can the futures of their
/// calls: users spawn them on a multi-threaded runtime.
#[allow(dead_code)]
fn generated_types_are_thread_safe(client: user::HygienicClient) {
    fn send_sync<T: ::core::marker::Send + ::core::marker::Sync>(_: &T) {}
    fn send<T: ::core::marker::Send>(_: T) {}
    send_sync(&client);
    send_sync(&user::HygienicServer::new(user::Impl));
    send(async move {
        let _ = client.value(::std::string::String::new()).await;
        let _ = client.fallible(1).await;
        let _ = client.fire(2).await;
        let _ = ::futures::StreamExt::next(&mut client.count(3)).await;
    });
}
