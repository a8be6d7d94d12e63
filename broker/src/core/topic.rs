//! A trie of topic binding keys, so routing one message costs what its words reach, not the
//! number of bindings (RabbitMQ's topic exchange keeps the same kind of trie).
//!
//! Each node is one word of a binding key, with a child per literal word, one for `*` and one
//! for `#`; a binding sits at the node its last word leads to. Matching walks the routing
//! key's words: a literal child takes the same word, `*` takes any one word, `#` takes zero
//! or more. Bindings are named by the caller's ids (positions in the exchange's binding list).

use std::collections::HashMap;

/// Which edge leads from a node to its child.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Edge {
    Word(Box<str>),
    Star,
    Hash,
}

impl Edge {
    fn of(word: &str) -> Edge {
        match word {
            "*" => Edge::Star,
            "#" => Edge::Hash,
            w => Edge::Word(w.into()),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    words: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Ids of the bindings whose key ends here.
    bindings: Vec<usize>,
    /// The parent and the edge from it, to prune emptied branches.
    parent: Option<(usize, Edge)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.bindings.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

/// The trie. Node 0 is the root (the empty key).
#[derive(Debug, Clone)]
pub(crate) struct TopicTrie {
    nodes: Vec<Node>,
    free: Vec<usize>,
}

impl Default for TopicTrie {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::default()],
            free: Vec::new(),
        }
    }
}

impl TopicTrie {
    fn child(&self, node: usize, edge: &Edge) -> Option<usize> {
        let n = &self.nodes[node];
        match edge {
            Edge::Word(w) => n.words.get(w).copied(),
            Edge::Star => n.star,
            Edge::Hash => n.hash,
        }
    }

    /// The node a binding key leads to, if it exists.
    fn find(&self, words: &[&str]) -> Option<usize> {
        words
            .iter()
            .try_fold(0, |node, w| self.child(node, &Edge::of(w)))
    }

    /// Adds binding `id` under `words` (the binding key split as `split_words` does).
    pub(crate) fn insert(&mut self, words: &[&str], id: usize) {
        let mut node = 0;
        for w in words {
            let edge = Edge::of(w);
            node = match self.child(node, &edge) {
                Some(c) => c,
                None => {
                    let c = self.alloc(Node {
                        parent: Some((node, edge.clone())),
                        ..Node::default()
                    });
                    let n = &mut self.nodes[node];
                    match edge {
                        Edge::Word(w) => {
                            n.words.insert(w, c);
                        }
                        Edge::Star => n.star = Some(c),
                        Edge::Hash => n.hash = Some(c),
                    }
                    c
                }
            };
        }
        self.nodes[node].bindings.push(id);
    }

    /// Removes binding `id` from under `words`, pruning nodes nothing uses any more.
    pub(crate) fn remove(&mut self, words: &[&str], id: usize) {
        let Some(mut node) = self.find(words) else {
            return;
        };
        self.nodes[node].bindings.retain(|b| *b != id);
        while node != 0 && self.nodes[node].is_empty() {
            let Some((parent, edge)) = self.nodes[node].parent.take() else {
                break;
            };
            let p = &mut self.nodes[parent];
            match edge {
                Edge::Word(w) => {
                    p.words.remove(&w);
                }
                Edge::Star => p.star = None,
                Edge::Hash => p.hash = None,
            }
            self.free.push(node);
            node = parent;
        }
    }

    /// Renames binding `from` to `to` under `words` (the caller moved it in its list).
    pub(crate) fn rename(&mut self, words: &[&str], from: usize, to: usize) {
        if let Some(node) = self.find(words) {
            for b in &mut self.nodes[node].bindings {
                if *b == from {
                    *b = to;
                }
            }
        }
    }

    /// Appends the ids of the bindings that match a routing key (split into words), each once.
    pub(crate) fn matches(&self, words: &[&str], out: &mut Vec<usize>) {
        let start = out.len();
        self.walk(0, words, out);
        if out.len() - start > 1 {
            // `#` can reach one node along several paths ("#.#", "a.#.#").
            out[start..].sort_unstable();
            let mut kept = start;
            for i in start..out.len() {
                if i == start || out[i] != out[kept - 1] {
                    out[kept] = out[i];
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
    }

    fn walk(&self, node: usize, words: &[&str], out: &mut Vec<usize>) {
        let n = &self.nodes[node];
        if let Some(h) = n.hash {
            // `#` takes zero or more words.
            for skip in 0..=words.len() {
                self.walk(h, &words[skip..], out);
            }
        }
        let Some((first, rest)) = words.split_first() else {
            out.extend_from_slice(&n.bindings);
            return;
        };
        if let Some(&c) = n.words.get(*first) {
            self.walk(c, rest, out);
        }
        if let Some(s) = n.star {
            self.walk(s, rest, out);
        }
    }

    fn alloc(&mut self, node: Node) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Nodes in use (for tests: pruning leaves only the root once every binding is gone).
    #[cfg(test)]
    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::exchange::{split_words, topic_match};

    const PATTERNS: &[&str] = &[
        "", "#", "*", "a", "a.b", "a.*", "a.#", "#.a", "a.#.b", "*.#.*", "#.#", "a..b", "a.*.b",
        "*.*", "#.b.#", "b.#.#", "a.b.c", "*.b.*", "#.c", "a.#.c.#",
    ];
    const KEYS: &[&str] = &[
        "", "a", "b", "a.b", "a.b.c", "a..b", "x.a", "a.x.y.b", ".", "a.b.b", "b.b", "c", "a.c.c",
        "x.b.y",
    ];

    fn trie_of(patterns: &[&str]) -> TopicTrie {
        let mut t = TopicTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(&split_words(p), i);
        }
        t
    }

    #[test]
    fn matches_exactly_what_the_matcher_matches() {
        let t = trie_of(PATTERNS);
        for key in KEYS {
            let words = split_words(key);
            let mut got = Vec::new();
            t.matches(&words, &mut got);
            let want: Vec<usize> = PATTERNS
                .iter()
                .enumerate()
                .filter(|(_, p)| topic_match(&split_words(p), &words))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, want, "routing key {key:?}");
        }
    }

    #[test]
    fn removing_and_renaming_keep_the_rest_and_prune_the_trie() {
        let mut t = trie_of(PATTERNS);
        for (i, p) in PATTERNS.iter().enumerate().skip(1) {
            t.remove(&split_words(p), i);
        }
        let mut got = Vec::new();
        t.matches(&[], &mut got);
        assert_eq!(got, vec![0]);
        assert_eq!(t.live_nodes(), 1, "only the root is left");
        t.rename(&[], 0, 7);
        got.clear();
        t.matches(&[], &mut got);
        assert_eq!(got, vec![7]);
    }
}
