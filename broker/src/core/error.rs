//! Protocol errors as RabbitMQ reports them: a reply code, a text that starts with the code's
//! name, and whether the error closes the channel (soft) or the whole connection (hard).

use std::fmt;

/// The AMQP reply codes the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
#[allow(dead_code)] // the whole table of reply codes, as RabbitMQ names them
pub(crate) enum Code {
    ContentTooLarge = 311,
    NoRoute = 312,
    NoConsumers = 313,
    ConnectionForced = 320,
    InvalidPath = 402,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl Code {
    /// The upper-case name RabbitMQ puts in front of every error text.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Code::ContentTooLarge => "CONTENT_TOO_LARGE",
            Code::NoRoute => "NO_ROUTE",
            Code::NoConsumers => "NO_CONSUMERS",
            Code::ConnectionForced => "CONNECTION_FORCED",
            Code::InvalidPath => "INVALID_PATH",
            Code::AccessRefused => "ACCESS_REFUSED",
            Code::NotFound => "NOT_FOUND",
            Code::ResourceLocked => "RESOURCE_LOCKED",
            Code::PreconditionFailed => "PRECONDITION_FAILED",
            Code::FrameError => "FRAME_ERROR",
            Code::SyntaxError => "SYNTAX_ERROR",
            Code::CommandInvalid => "COMMAND_INVALID",
            Code::ChannelError => "CHANNEL_ERROR",
            Code::UnexpectedFrame => "UNEXPECTED_FRAME",
            Code::ResourceError => "RESOURCE_ERROR",
            Code::NotAllowed => "NOT_ALLOWED",
            Code::NotImplemented => "NOT_IMPLEMENTED",
            Code::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the connection; soft ones only the channel (AMQP 0-9-1 spec, 1.3).
    pub(crate) fn is_hard(self) -> bool {
        (self as u16) >= 500 || matches!(self, Code::ConnectionForced | Code::InvalidPath)
    }
}

/// Appends `text` with the escapes Erlang's `~p` uses inside a string or binary (`"`, `\\`
/// and the control characters it names), as RabbitMQ's texts print terms.
pub(crate) fn push_erlang_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{1b}' => out.push_str("\\e"),
            c => out.push(c),
        }
    }
}

/// A protocol error raised while handling a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AmqpError {
    /// The reply code.
    pub(crate) code: Code,
    /// The full reply text, e.g. "NOT_FOUND - no queue 'q' in vhost '/'".
    pub(crate) text: String,
    /// Class of the method that failed (0 when none).
    pub(crate) class_id: u16,
    /// Id of the method that failed (0 when none).
    pub(crate) method_id: u16,
}

impl AmqpError {
    /// An error with RabbitMQ's "NAME - explanation" text.
    pub(crate) fn new(code: Code, explanation: impl fmt::Display) -> Self {
        AmqpError {
            code,
            text: format!("{} - {}", code.name(), explanation),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Records which method failed, for the close method's class-id and method-id.
    pub(crate) fn on(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// 404 for a missing queue.
    pub(crate) fn no_queue(name: &str, vhost: &str) -> Self {
        Self::new(
            Code::NotFound,
            format!("no queue '{name}' in vhost '{vhost}'"),
        )
    }

    /// 404 for a missing exchange.
    pub(crate) fn no_exchange(name: &str, vhost: &str) -> Self {
        Self::new(
            Code::NotFound,
            format!("no exchange '{name}' in vhost '{vhost}'"),
        )
    }

    /// 406 with the given explanation.
    pub(crate) fn precondition(explanation: impl fmt::Display) -> Self {
        Self::new(Code::PreconditionFailed, explanation)
    }

    /// 405 for an exclusive queue owned by another connection.
    pub(crate) fn locked(name: &str, vhost: &str) -> Self {
        Self::new(
            Code::ResourceLocked,
            format!(
                "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. \
                 It could be originally declared on another connection or the exclusive \
                 property value does not match that of the original declaration."
            ),
        )
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code as u16, self.text)
    }
}

impl std::error::Error for AmqpError {}

/// Result of handling a method.
pub(crate) type AmqpResult<T> = Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_levels_match_rabbitmq() {
        let e = AmqpError::no_queue("q", "/");
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert!(!e.code.is_hard());
        assert!(Code::FrameError.is_hard());
        assert!(Code::NotAllowed.is_hard());
        assert!(!Code::PreconditionFailed.is_hard());
    }
}
