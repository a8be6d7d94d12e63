//! STOMP destinations and what they mean in AMQP terms, as RabbitMQ's STOMP plugin reads them
//! (rabbit_routing_util.erl, rabbit_stomp_util.erl): `/queue/NAME`, `/topic/KEY` (on
//! `amq.topic`), `/exchange/NAME[/KEY]`, `/amq/queue/NAME`, `/temp-queue/ID`,
//! `/reply-queue/NAME`, and a bare `NAME` (a queue); the destination header of a MESSAGE made
//! from an exchange and a routing key; the names of topic subscription queues.

use base64::Engine;
use md5::{Digest, Md5};

/// A parsed destination header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// `/queue/NAME` or a bare name: a queue the plugin declares (durable by default).
    Queue(String),
    /// `/topic/KEY`: routing key KEY on `amq.topic`.
    Topic(String),
    /// `/exchange/NAME` or `/exchange/NAME/KEY`.
    Exchange(String, Option<String>),
    /// `/amq/queue/NAME`: an existing queue, never declared.
    AmqQueue(String),
    /// `/temp-queue/ID`: only valid in `reply-to`.
    TempQueue(String),
    /// `/reply-queue/NAME`: a queue named in a reply-to, addressed as is.
    ReplyQueue(String),
}

/// The prefixes RabbitMQ lists in its "Unknown destination" error, in its order.
const ALL_PREFIXES: &str = "/temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/";

/// A reply-to starting with one of these is passed to STOMP clients as is; any other value
/// gets `/reply-queue/` in front (rabbit_routing_util:dest_prefixes/0).
const DEST_PREFIXES: [&str; 5] = [
    "/exchange",
    "/topic",
    "/queue",
    "/amq/queue",
    "/reply-queue/",
];

/// Why a destination header does not parse: the ERROR frame's message and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadDestination {
    /// `Invalid destination` or `Unknown destination`.
    pub(crate) message: &'static str,
    /// RabbitMQ's detail text.
    pub(crate) detail: String,
}

impl Destination {
    /// Parses a destination header as rabbit_routing_util:parse_endpoint/1 does.
    pub(crate) fn parse(dest: &str) -> Result<Destination, BadDestination> {
        let parts: Vec<&str> = dest.split('/').collect();
        let invalid = |kind: &str, rest: &[&str]| {
            let url = if rest.is_empty() {
                String::new()
            } else {
                format!("/{}", rest.join("/"))
            };
            BadDestination {
                message: "Invalid destination",
                detail: format!("'{url}' is not a valid {kind} destination\n"),
            }
        };
        let one = |kind: &str, rest: &[&str]| match rest {
            [name] if !name.is_empty() => Ok(unescape(name)),
            _ => Err(invalid(kind, rest)),
        };
        match parts.as_slice() {
            [name] => Ok(Destination::Queue(unescape(name))),
            ["", "exchange", rest @ ..] => match rest {
                [""] | ["", ..] => Err(invalid("exchange", rest)),
                [name] => Ok(Destination::Exchange(unescape(name), None)),
                [name, key] => Ok(Destination::Exchange(unescape(name), Some(unescape(key)))),
                _ => Err(invalid("exchange", rest)),
            },
            ["", "queue", rest @ ..] => one("queue", rest).map(Destination::Queue),
            ["", "topic", rest @ ..] => one("topic", rest).map(Destination::Topic),
            ["", "temp-queue", rest @ ..] => one("temp_queue", rest).map(Destination::TempQueue),
            ["", "amq", "queue", rest @ ..] => one("amqqueue", rest).map(Destination::AmqQueue),
            ["", "reply-queue", _, ..] => Ok(Destination::ReplyQueue(unescape(
                &dest["/reply-queue/".len()..],
            ))),
            _ => Err(BadDestination {
                message: "Unknown destination",
                detail: format!(
                    "'{dest}' is not a valid destination.\nValid destination types are: {ALL_PREFIXES}.\n"
                ),
            }),
        }
    }

    /// The exchange and routing key a SEND to this destination publishes with, and a
    /// subscription binds with (rabbit_routing_util:parse_routing/1).
    pub(crate) fn routing(&self) -> (&str, &str) {
        match self {
            Destination::Queue(n) | Destination::AmqQueue(n) | Destination::ReplyQueue(n) => {
                ("", n)
            }
            Destination::Topic(k) => ("amq.topic", k),
            Destination::Exchange(x, k) => (x, k.as_deref().unwrap_or("")),
            Destination::TempQueue(n) => ("", n),
        }
    }
}

/// `%2F` (upper case only) becomes `/`, as RabbitMQ unescapes destination parts.
fn unescape(s: &str) -> String {
    s.replace("%2F", "/")
}

/// Escapes a name for a destination header: `/`, `%`, and bytes outside 32..=127 as `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'/' => out.push_str("%2F"),
            b'%' => out.push_str("%25"),
            32..=127 => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The destination header of a MESSAGE delivered from `exchange` with `routing_key`.
pub(crate) fn format(exchange: &str, routing_key: &str) -> String {
    match (exchange, routing_key) {
        ("", k) => format!("/queue/{}", escape(k)),
        ("amq.topic", k) => format!("/topic/{}", escape(k)),
        (x, "") => format!("/exchange/{}", escape(x)),
        (x, k) => format!("/exchange/{}/{}", escape(x), escape(k)),
    }
}

/// The reply-to header a STOMP client sees for an AMQP reply-to property.
pub(crate) fn reply_to_header(reply_to: &str) -> String {
    if DEST_PREFIXES.iter().any(|p| reply_to.starts_with(p)) {
        reply_to.to_string()
    } else {
        format!("/reply-queue/{reply_to}")
    }
}

/// The name of the queue behind a topic or exchange subscription: `stomp-subscription-` and
/// the MD5 of the Erlang term `{Name, Id}` (both as byte strings), base64url without padding,
/// exactly as RabbitMQ names it, so a durable subscription made on RabbitMQ finds the same
/// queue on Warren and the reverse. `name` is the routing key part of the destination.
pub(crate) fn subscription_queue_name(name: &str, id: &str) -> String {
    // term_to_binary({Name, Id}) with both as lists of bytes: version 131, SMALL_TUPLE_EXT of
    // arity 2, then each a STRING_EXT (or NIL_EXT when empty, or LIST_EXT of small integers
    // beyond 65535 bytes).
    let mut term = vec![131u8, 104, 2];
    for s in [name.as_bytes(), id.as_bytes()] {
        if s.is_empty() {
            term.push(106);
        } else if s.len() < 65536 {
            term.push(107);
            term.extend_from_slice(&(s.len() as u16).to_be_bytes());
            term.extend_from_slice(s);
        } else {
            term.push(108);
            term.extend_from_slice(&(s.len() as u32).to_be_bytes());
            for &b in s {
                term.extend_from_slice(&[97, b]);
            }
            term.push(106);
        }
    }
    let digest = Md5::digest(&term);
    format!(
        "stomp-subscription-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_like_rabbitmq() {
        use Destination::*;
        assert_eq!(Destination::parse("/queue/a%2Fb"), Ok(Queue("a/b".into())));
        assert_eq!(Destination::parse("plain"), Ok(Queue("plain".into())));
        assert_eq!(Destination::parse("/topic/a.b"), Ok(Topic("a.b".into())));
        assert_eq!(
            Destination::parse("/exchange/x/k"),
            Ok(Exchange("x".into(), Some("k".into())))
        );
        assert_eq!(
            Destination::parse("/exchange/x"),
            Ok(Exchange("x".into(), None))
        );
        assert_eq!(Destination::parse("/amq/queue/q"), Ok(AmqQueue("q".into())));
        assert_eq!(
            Destination::parse("/temp-queue/t"),
            Ok(TempQueue("t".into()))
        );
        assert_eq!(
            Destination::parse("/reply-queue/a/b"),
            Ok(ReplyQueue("a/b".into()))
        );
        let e = Destination::parse("/queue/").unwrap_err();
        assert_eq!(e.detail, "'/' is not a valid queue destination\n");
        let e = Destination::parse("/topic/a/b").unwrap_err();
        assert_eq!(e.detail, "'/a/b' is not a valid topic destination\n");
        let e = Destination::parse("/exchange//k").unwrap_err();
        assert_eq!(e.detail, "'//k' is not a valid exchange destination\n");
        let e = Destination::parse("/foo/bar").unwrap_err();
        assert_eq!(e.message, "Unknown destination");
    }

    #[test]
    fn formats_and_names_queues_like_rabbitmq() {
        assert_eq!(format("", "q"), "/queue/q");
        assert_eq!(format("amq.topic", "a/b"), "/topic/a%2Fb");
        assert_eq!(format("x", ""), "/exchange/x");
        assert_eq!(format("x", "été"), "/exchange/x/%C3%A9t%C3%A9");
        assert_eq!(reply_to_header("q"), "/reply-queue/q");
        assert_eq!(reply_to_header("/queue/q"), "/queue/q");
        // Names RabbitMQ 3.10 gave these durable subscriptions.
        assert_eq!(
            subscription_queue_name("probe.dur", "probe-abc"),
            "stomp-subscription-lnRbz4WKEtu57lObusMHIg"
        );
        assert_eq!(
            subscription_queue_name("été", "probe-u"),
            "stomp-subscription-YGEUzLRn9aLFHHZ8dHpy7w"
        );
    }
}
