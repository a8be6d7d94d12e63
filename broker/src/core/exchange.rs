//! Exchanges and routing: direct, fanout, topic and headers, exactly as RabbitMQ matches them.
//!
//! An exchange holds its bindings; routing a message yields the destinations whose binding
//! matches. Following exchange-to-exchange bindings and alternate exchanges is the vhost's job
//! (see `state.rs`), because it needs every exchange.

use super::fieldtable::{type_name, value_eq, value_int, value_str};
use amq_protocol::types::{AMQPValue, FieldTable};
use std::collections::HashMap;

/// The routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Dot-separated words with `*` and `#` wildcards.
    Topic,
    /// Message headers against binding arguments (x-match).
    Headers,
}

impl ExchangeKind {
    /// Parses the type name a client declares.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    /// The type name, as declared.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// Another exchange, by name (exchange-to-exchange binding).
    Exchange(String),
}

/// One binding of an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Where matching messages go.
    pub(crate) destination: Destination,
    /// The binding key.
    pub(crate) key: String,
    /// The binding arguments (used by headers exchanges, and for binding identity).
    pub(crate) args: FieldTable,
    /// The binding key split into topic words, for topic exchanges.
    words: Vec<String>,
}

impl Binding {
    /// A binding of `destination` with `key` and `args`.
    pub fn new(destination: Destination, key: String, args: FieldTable) -> Self {
        let words = split_words(&key).into_iter().map(str::to_owned).collect();
        Binding {
            destination,
            key,
            args,
            words,
        }
    }
}

/// An exchange and its bindings.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The exchange name.
    pub(crate) name: String,
    /// How it routes.
    pub(crate) kind: ExchangeKind,
    /// Survives a broker restart.
    pub(crate) durable: bool,
    /// Deleted when its last binding (as source) is removed.
    pub(crate) auto_delete: bool,
    /// Clients may not publish to it directly.
    pub(crate) internal: bool,
    /// Declaration arguments.
    pub(crate) args: FieldTable,
    /// Bindings with this exchange as source.
    pub(crate) bindings: Vec<Binding>,
    /// Index for direct exchanges: binding key -> positions in `bindings`.
    direct_index: HashMap<String, Vec<usize>>,
}

impl Exchange {
    /// A new exchange without bindings.
    pub fn new(
        name: String,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        args: FieldTable,
    ) -> Self {
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            args,
            bindings: Vec::new(),
            direct_index: HashMap::new(),
        }
    }

    /// The alternate exchange configured by the `alternate-exchange` argument.
    pub(crate) fn alternate_exchange(&self) -> Option<&str> {
        match self.args.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Adds a binding; returns false if an identical one exists (binding is idempotent).
    pub fn bind(&mut self, binding: Binding) -> bool {
        if self.bindings.iter().any(|b| {
            b.destination == binding.destination && b.key == binding.key && b.args == binding.args
        }) {
            return false;
        }
        self.bindings.push(binding);
        self.reindex();
        true
    }

    /// Removes a binding; returns whether it existed.
    pub(crate) fn unbind(
        &mut self,
        destination: &Destination,
        key: &str,
        args: &FieldTable,
    ) -> bool {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !(&b.destination == destination && b.key == key && &b.args == args));
        let removed = self.bindings.len() != before;
        if removed {
            self.reindex();
        }
        removed
    }

    /// Removes every binding to `destination`; returns how many were removed.
    pub(crate) fn unbind_destination(&mut self, destination: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|b| &b.destination != destination);
        let removed = before - self.bindings.len();
        if removed > 0 {
            self.reindex();
        }
        removed
    }

    fn reindex(&mut self) {
        self.direct_index.clear();
        if self.kind == ExchangeKind::Direct {
            for (i, b) in self.bindings.iter().enumerate() {
                self.direct_index.entry(b.key.clone()).or_default().push(i);
            }
        }
    }

    /// Appends the destinations whose bindings match the message to `out`.
    pub fn route<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(positions) = self.direct_index.get(routing_key) {
                    out.extend(positions.iter().map(|&i| &self.bindings[i].destination));
                }
            }
            ExchangeKind::Fanout => out.extend(self.bindings.iter().map(|b| &b.destination)),
            ExchangeKind::Topic => {
                let words = split_words(routing_key);
                out.extend(
                    self.bindings
                        .iter()
                        .filter(|b| topic_match(&b.words, &words))
                        .map(|b| &b.destination),
                );
            }
            ExchangeKind::Headers => out.extend(
                self.bindings
                    .iter()
                    .filter(|b| headers_match(&b.args, headers))
                    .map(|b| &b.destination),
            ),
        }
    }
}

/// Splits a topic routing or binding key into words as RabbitMQ does: "" has no words, and
/// empty words between dots are kept ("a..b" is three words).
pub fn split_words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Whether a topic binding (as words) matches a routing key (as words).
pub fn topic_match<P: AsRef<str>>(pattern: &[P], words: &[&str]) -> bool {
    // Iterative matcher with backtracking over the last '#', linear in practice.
    let (mut p, mut w) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while w < words.len() || p < pattern.len() {
        if p < pattern.len() {
            match pattern[p].as_ref() {
                "#" => {
                    star = Some((p, w));
                    p += 1;
                    continue;
                }
                "*" if w < words.len() => {
                    p += 1;
                    w += 1;
                    continue;
                }
                lit if w < words.len() && lit == words[w] => {
                    p += 1;
                    w += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sw)) if sw < words.len() => {
                star = Some((sp, sw + 1));
                p = sp + 1;
                w = sw + 1;
            }
            _ => return false,
        }
    }
    true
}

/// Validates a headers-exchange binding's `x-match` argument like RabbitMQ.
pub(crate) fn validate_headers_binding(args: &FieldTable) -> Result<(), String> {
    match args.inner().get("x-match") {
        None => Ok(()),
        Some(v) => match value_str(v) {
            Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
            Some(other) => Err(format!(
                "Invalid x-match field value <<\"{other}\">>; expected all, any, all-with-x, or any-with-x"
            )),
            None => {
                let value = match value_int(v) {
                    Some(n) => n.to_string(),
                    None => format!("{v:?}"),
                };
                Err(format!(
                    "Invalid x-match field type {} (value {value}); expected longstr",
                    type_name(v)
                ))
            }
        },
    }
}

fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = args
        .inner()
        .get("x-match")
        .and_then(value_str)
        .unwrap_or("all");
    let (any, with_x) = match mode {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = args.inner().iter().filter(|(k, _)| {
        let k = k.as_str();
        k != "x-match" && (with_x || !k.starts_with("x-"))
    });
    let matches = |(k, v): (&amq_protocol::types::ShortString, &AMQPValue)| match v {
        AMQPValue::Void => headers.contains_key(k.as_str()),
        v => headers.get(k.as_str()).is_some_and(|h| value_eq(h, v)),
    };
    if any {
        considered.any(matches)
    } else {
        considered.all(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        topic_match(&split_words(pattern), &split_words(key))
    }

    #[test]
    fn topic_matching_like_rabbitmq() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.#", "a"));
        assert!(m("a.#", "a.b.c"));
        assert!(m("#", ""));
        assert!(m("#", "a.b"));
        assert!(!m("*", ""));
        assert!(m("*", "a"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a.#.b", "a.b"));
        assert!(m("a.#.b", "a.x.y.b"));
        assert!(!m("a.#.b", "a.x.y.c"));
        assert!(m("#.a", "a"));
        assert!(m("#.a", "x.a"));
        assert!(m("a..b", "a..b"));
        assert!(m("a.*.b", "a..b"));
        assert!(m("*.*", "."));
        assert!(m("#.#", "a"));
        assert!(m("*.#.*", "a.b"));
        assert!(!m("*.#.*", "a"));
        assert!(m("a.", "a."));
        assert!(!m("a.", "a"));
    }

    #[test]
    fn headers_matching() {
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("any".into()));
        args.insert("a".into(), AMQPValue::LongString("1".into()));
        args.insert("b".into(), AMQPValue::Void);
        let mut h = FieldTable::default();
        h.insert("b".into(), AMQPValue::LongInt(7));
        assert!(headers_match(&args, Some(&h)));
        args.insert("x-match".into(), AMQPValue::LongString("all".into()));
        assert!(!headers_match(&args, Some(&h)));
        h.insert("a".into(), AMQPValue::ShortString("1".into()));
        assert!(headers_match(&args, Some(&h)));
    }
}
