//! Messages and the ids that name who holds them: a published message (routing information,
//! its encoded properties and its body, immutable once published and shared by every queue it
//! reaches), connection and channel ids.
//!
//! Properties are kept in AMQP 0-9-1's encoding (as RabbitMQ keeps them); other protocols map
//! their headers onto these properties, as RabbitMQ's plugins do.

use super::props::{encode_header_payload, PropsView};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use bytes::Bytes;
use std::time::Duration;

/// A connection's id, unique for the broker's lifetime.
pub(crate) type ConnId = u64;

/// Identifies a channel across the broker: its connection and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChannelKey {
    /// The connection.
    pub(crate) conn: ConnId,
    /// The channel number within the connection.
    pub(crate) channel: u16,
}

/// A published message: routing information, the encoded content header and the body,
/// immutable once published. Properties stay encoded (see `props.rs`); the few the broker acts
/// on are read once at publish time.
#[derive(Debug)]
pub(crate) struct Message {
    /// The exchange it was published to.
    pub(crate) exchange: String,
    /// The routing key it was published with.
    pub(crate) routing_key: String,
    /// The encoded content header payload, re-sent verbatim on delivery.
    pub(crate) header: Bytes,
    /// The body.
    pub(crate) body: Bytes,
    /// delivery-mode 2.
    pub(crate) persistent: bool,
    /// The priority property.
    pub(crate) priority: Option<u8>,
    /// The expiration property in milliseconds, when valid.
    pub(crate) expiration_ms: Option<u64>,
    /// Extra routing keys from the CC and BCC headers.
    pub(crate) cc: Vec<String>,
}

impl Message {
    /// A message from an encoded header; None if the header's properties are malformed.
    pub(crate) fn new(
        exchange: String,
        routing_key: String,
        header: Bytes,
        body: Bytes,
    ) -> Option<Self> {
        let v = PropsView::parse(&header)?;
        let expiration_ms =
            PropsView::text(&header, &v.expiration).and_then(|e| parse_expiration(e).ok());
        Some(Message {
            exchange,
            routing_key,
            persistent: v.delivery_mode == Some(2),
            priority: v.priority,
            expiration_ms,
            header,
            body,
            cc: Vec::new(),
        })
    }

    /// A message with the given properties (encoded here).
    pub(crate) fn with_properties(
        exchange: String,
        routing_key: String,
        properties: &AMQPProperties,
        body: Bytes,
    ) -> Self {
        let header = encode_header_payload(body.len() as u64, properties);
        let expiration_ms = properties
            .expiration()
            .as_ref()
            .and_then(|e| parse_expiration(e.as_str()).ok());
        Message {
            exchange,
            routing_key,
            persistent: *properties.delivery_mode() == Some(2),
            priority: *properties.priority(),
            expiration_ms,
            header,
            body,
            cc: Vec::new(),
        }
    }

    /// Bytes a delivery of this message holds until its connection writes it (the body, the
    /// encoded header and the method around them), for back-pressure accounting.
    pub(crate) fn outbound_weight(&self) -> usize {
        self.body.len() + self.header.len() + 64
    }

    /// Bytes counted against queue length limits: the body size, as RabbitMQ counts it.
    pub(crate) fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The per-message TTL from the `expiration` property, if valid.
    pub(crate) fn expiration(&self) -> Option<Duration> {
        self.expiration_ms.map(Duration::from_millis)
    }

    /// The headers table, decoded (for headers exchanges and dead-lettering).
    pub(crate) fn headers(&self) -> Option<FieldTable> {
        PropsView::parse(&self.header)?.headers_table(&self.header)
    }

    /// All properties, decoded.
    pub(crate) fn properties(&self) -> AMQPProperties {
        amq_protocol::frame::parsing::parse_content_header(&self.header[..])
            .map(|(_, h)| h.properties)
            .unwrap_or_default()
    }
}

/// Parses an `expiration` property like RabbitMQ: a non-negative integer of milliseconds.
pub(crate) fn parse_expiration(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid");
    }
    s.parse::<u64>().map_err(|_| "invalid")
}

/// RabbitMQ's reason for refusing an `expiration` property, formatted as it prints it.
pub(crate) fn expiration_error(s: &str) -> Result<(), String> {
    if parse_expiration(s).is_ok() {
        return Ok(());
    }
    let digits_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && (*c == '-' || *c == '+'))))
        .map_or(s.len(), |(i, _)| i);
    let number = &s[..digits_end];
    match number.parse::<i64>() {
        Err(_) => Err("no_integer".to_string()),
        Ok(_) if digits_end < s.len() => {
            Err(format!("{{leftover_string,\"{}\"}}", &s[digits_end..]))
        }
        Ok(n) if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Ok(_) => Err("no_integer".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_parsing() {
        assert_eq!(parse_expiration("1500"), Ok(1500));
        assert!(parse_expiration("-1").is_err());
        assert!(parse_expiration("").is_err());
        assert!(parse_expiration("1.5").is_err());
    }

    #[test]
    fn expiration_errors_read_like_rabbitmq() {
        assert!(expiration_error("100").is_ok());
        assert_eq!(expiration_error("abc").unwrap_err(), "no_integer");
        assert_eq!(expiration_error("-5").unwrap_err(), "{value_negative,-5}");
        assert_eq!(
            expiration_error("10x").unwrap_err(),
            "{leftover_string,\"x\"}"
        );
    }
}
