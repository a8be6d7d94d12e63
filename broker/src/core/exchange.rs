//! Exchanges and routing: direct, fanout, topic and headers, exactly as RabbitMQ matches them.
//!
//! An exchange holds its bindings; routing a message yields the destinations whose binding
//! matches. Following exchange-to-exchange bindings and alternate exchanges is the vhost's job
//! (see `state.rs`), because it needs every exchange.

use super::fieldtable::{type_name, value_eq, value_int, value_str};
use super::topic::TopicTrie;
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
}

impl Binding {
    /// A binding of `destination` with `key` and `args`.
    pub fn new(destination: Destination, key: String, args: FieldTable) -> Self {
        Binding {
            destination,
            key,
            args,
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
    /// Bindings with this exchange as source (read-only outside: binding and unbinding keep
    /// the indexes below in step, each in time proportional to one binding).
    pub(crate) bindings: Vec<Binding>,
    /// Positions in `bindings` by destination and key: identity checks and unbinding without
    /// a scan.
    by_route: HashMap<(Destination, String), Vec<usize>>,
    /// Direct exchanges: positions by binding key.
    direct: HashMap<String, Vec<usize>>,
    /// Topic exchanges: positions by binding key's words.
    topic: TopicTrie,
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
            by_route: HashMap::new(),
            direct: HashMap::new(),
            topic: TopicTrie::default(),
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
        let route = (binding.destination.clone(), binding.key.clone());
        if let Some(ids) = self.by_route.get(&route) {
            if ids.iter().any(|&i| self.bindings[i].args == binding.args) {
                return false;
            }
        }
        let id = self.bindings.len();
        match self.kind {
            ExchangeKind::Direct => self.direct.entry(binding.key.clone()).or_default().push(id),
            ExchangeKind::Topic => self.topic.insert(&split_words(&binding.key), id),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.by_route.entry(route).or_default().push(id);
        self.bindings.push(binding);
        true
    }

    /// Removes a binding; returns whether it existed.
    pub(crate) fn unbind(
        &mut self,
        destination: &Destination,
        key: &str,
        args: &FieldTable,
    ) -> bool {
        let found = self
            .by_route
            .get(&(destination.clone(), key.to_string()))
            .and_then(|ids| {
                ids.iter()
                    .copied()
                    .find(|&i| &self.bindings[i].args == args)
            });
        match found {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Removes every binding to `destination`; returns how many were removed.
    pub(crate) fn unbind_destination(&mut self, destination: &Destination) -> usize {
        let doomed: Vec<usize> = (0..self.bindings.len())
            .rev()
            .filter(|&i| &self.bindings[i].destination == destination)
            .collect();
        // From the highest position down: the binding each removal moves into the hole comes
        // from past every position still to remove.
        for &i in &doomed {
            self.remove_at(i);
        }
        doomed.len()
    }

    /// Removes the binding at position `i`, moving the last binding into its place.
    fn remove_at(&mut self, i: usize) {
        let last = self.bindings.len() - 1;
        let b = &self.bindings[i];
        let route = (b.destination.clone(), b.key.clone());
        forget(&mut self.by_route, &route, i);
        match self.kind {
            ExchangeKind::Direct => forget(&mut self.direct, &b.key, i),
            ExchangeKind::Topic => self.topic.remove(&split_words(&b.key), i),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        if i != last {
            let moved = &self.bindings[last];
            let route = (moved.destination.clone(), moved.key.clone());
            rename(&mut self.by_route, &route, last, i);
            match self.kind {
                ExchangeKind::Direct => rename(&mut self.direct, &moved.key, last, i),
                ExchangeKind::Topic => self.topic.rename(&split_words(&moved.key), last, i),
                ExchangeKind::Fanout | ExchangeKind::Headers => {}
            }
        }
        self.bindings.swap_remove(i);
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
                if let Some(positions) = self.direct.get(routing_key) {
                    out.extend(positions.iter().map(|&i| &self.bindings[i].destination));
                }
            }
            ExchangeKind::Fanout => out.extend(self.bindings.iter().map(|b| &b.destination)),
            ExchangeKind::Topic => {
                let mut ids = Vec::new();
                self.topic.matches(&split_words(routing_key), &mut ids);
                out.extend(ids.iter().map(|&i| &self.bindings[i].destination));
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

/// Drops position `i` from an index entry (and the entry once empty).
fn forget<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Vec<usize>>, key: &K, i: usize) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|&x| x != i);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// Renames position `from` to `to` in an index entry.
fn rename<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, Vec<usize>>,
    key: &K,
    from: usize,
    to: usize,
) {
    if let Some(ids) = index.get_mut(key) {
        for x in ids.iter_mut().filter(|x| **x == from) {
            *x = to;
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

    fn routed(x: &Exchange, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        x.route(key, None, &mut out);
        let mut names: Vec<String> = out
            .into_iter()
            .map(|d| match d {
                Destination::Queue(q) | Destination::Exchange(q) => q.clone(),
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unbinding_moves_no_other_binding_off_its_route() {
        for kind in [ExchangeKind::Topic, ExchangeKind::Direct] {
            let mut x = Exchange::new("x".into(), kind, false, false, false, FieldTable::default());
            let q = |n: &str| Destination::Queue(n.into());
            let none = FieldTable::default();
            assert!(x.bind(Binding::new(q("q1"), "a.b".into(), none.clone())));
            assert!(x.bind(Binding::new(q("q2"), "a.b".into(), none.clone())));
            assert!(x.bind(Binding::new(q("q3"), "c".into(), none.clone())));
            assert!(
                !x.bind(Binding::new(q("q3"), "c".into(), none.clone())),
                "idempotent"
            );
            // Removing the first moves the last (q3 on "c") into its place.
            assert!(x.unbind(&q("q1"), "a.b", &none));
            assert!(!x.unbind(&q("q1"), "a.b", &none));
            assert_eq!(routed(&x, "a.b"), vec!["q2"]);
            assert_eq!(routed(&x, "c"), vec!["q3"]);
            assert_eq!(x.unbind_destination(&q("q2")), 1);
            assert_eq!(routed(&x, "a.b"), Vec::<String>::new());
            assert_eq!(routed(&x, "c"), vec!["q3"]);
        }
    }
}
