//! STOMP frames on the wire: a streaming decoder and the encoder, with RabbitMQ's reading of
//! the grammar (rabbit_stomp_frame.erl).
//!
//! Written here rather than taken from a crate: STOMP framing is small, and RabbitMQ reads it
//! in its own way that clients rely on: CR LF counts as LF everywhere, header escapes (`\n`,
//! `\c`, `\\`, `\r`) are decoded in every frame whatever the version, values may hold unescaped
//! colons, the first of repeated headers wins, `content-length` is honoured on SEND only, and
//! NULs and EOLs between frames (heart-beats) are skipped. Anything else that does not parse is
//! an error after which the connection is closed without an ERROR frame, as RabbitMQ does.

use bytes::{Buf, Bytes, BytesMut};

/// One frame: its command, its headers (decoded, first occurrence of each name only) and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The command, e.g. `SEND`.
    pub(crate) command: String,
    /// Headers in the order received.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: Bytes,
}

impl Frame {
    /// A frame with a command and headers and no body.
    pub(crate) fn new(command: &str, headers: Vec<(String, String)>) -> Self {
        Frame {
            command: command.to_string(),
            headers,
            body: Bytes::new(),
        }
    }

    /// The value of a header, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean header as RabbitMQ reads it (`true`/`True`, `false`/`False`), else None.
    pub(crate) fn bool_header(&self, name: &str) -> Option<bool> {
        match self.header(name)? {
            "true" | "True" => Some(true),
            "false" | "False" => Some(false),
            _ => None,
        }
    }

    /// An integer header: Ok(None) when absent, Err when present but not an integer.
    pub(crate) fn int_header(&self, name: &str) -> Result<Option<i64>, ()> {
        match self.header(name) {
            None => Ok(None),
            Some(v) => v.trim_matches(' ').parse().map(Some).map_err(|_| ()),
        }
    }
}

/// Why a byte stream is not STOMP: the connection is closed (RabbitMQ logs the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A CR not followed by LF outside a body.
    UnexpectedChars,
    /// A header line without a colon.
    HeaderNoValue(String),
    /// A backslash followed by something other than `n`, `c`, `\` or `r`.
    BadEscape,
    /// A `content-length` that is not a non-negative integer.
    BadContentLength,
    /// The byte after a `content-length` body is not NUL.
    MissingNul,
    /// The frame is larger than the limit in force.
    TooBig {
        /// Bytes of the frame seen so far (or announced).
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::UnexpectedChars => write!(f, "unexpected_chars"),
            FrameError::HeaderNoValue(h) => write!(f, "header_no_value: {h:?}"),
            FrameError::BadEscape => write!(f, "bad_escape"),
            FrameError::BadContentLength => write!(f, "bad content-length"),
            FrameError::MissingNul => write!(f, "frame body not terminated by NUL"),
            FrameError::TooBig { size, max } => write!(f, "frame_too_big: {size} > {max}"),
        }
    }
}

/// A frame whose command and headers are read, waiting for its body.
#[derive(Debug)]
struct Head {
    frame: Frame,
    /// Bytes of command and headers (consumed from the buffer already).
    len: usize,
    /// The body length announced by `content-length` (SEND only).
    content_length: Option<usize>,
}

/// A streaming decoder: feed it the connection's buffer after every read.
///
/// It remembers where it stopped (a parsed head, how far the search for the closing NUL got),
/// so a large body arriving in many reads is scanned once.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    head: Option<Head>,
    scanned: usize,
}

impl Decoder {
    /// The next complete frame in `buf` (consumed), None if more bytes are needed. `max` bounds
    /// a frame's size (command, headers and body).
    pub(crate) fn next(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Frame>, FrameError> {
        if self.head.is_none() {
            skip_noise(buf)?;
            let Some(end) = head_end(buf) else {
                if buf.len() > max {
                    return Err(FrameError::TooBig {
                        size: buf.len(),
                        max,
                    });
                }
                return Ok(None);
            };
            let frame = parse_head(&buf[..end])?;
            buf.advance(end);
            let content_length = if frame.command == "SEND" {
                match frame.int_header("content-length") {
                    Ok(Some(n)) if n >= 0 => Some(n as usize),
                    Ok(None) => None,
                    _ => return Err(FrameError::BadContentLength),
                }
            } else {
                None
            };
            if content_length.is_some_and(|n| n.saturating_add(end) > max) {
                return Err(FrameError::TooBig {
                    size: content_length.unwrap_or(0).saturating_add(end),
                    max,
                });
            }
            self.head = Some(Head {
                frame,
                len: end,
                content_length,
            });
            self.scanned = 0;
        }
        let head = self.head.as_ref().expect("set above");
        let body_len = match head.content_length {
            Some(n) => {
                if buf.len() <= n {
                    return Ok(None);
                }
                if buf[n] != 0 {
                    return Err(FrameError::MissingNul);
                }
                n
            }
            None => match buf[self.scanned..].iter().position(|&b| b == 0) {
                Some(i) => self.scanned + i,
                None => {
                    self.scanned = buf.len();
                    if head.len + buf.len() > max {
                        return Err(FrameError::TooBig {
                            size: head.len + buf.len(),
                            max,
                        });
                    }
                    return Ok(None);
                }
            },
        };
        let mut head = self.head.take().expect("set above");
        head.frame.body = buf.split_to(body_len).freeze();
        buf.advance(1);
        self.scanned = 0;
        Ok(Some(head.frame))
    }
}

/// Drops NULs and EOLs before a frame (heart-beats and RabbitMQ's trailing LFs).
fn skip_noise(buf: &mut BytesMut) -> Result<(), FrameError> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            0 | b'\n' => i += 1,
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return Err(FrameError::UnexpectedChars),
                None => break,
            },
            _ => break,
        }
    }
    buf.advance(i);
    Ok(())
}

/// Where the command and headers end (after the empty line), if they are all in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut first = true;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && !first {
            return Some(i + 1);
        }
        first = false;
        line_start = i + 1;
    }
    None
}

/// Parses the command line and the header lines (the whole head, ending with an empty line).
fn parse_head(head: &[u8]) -> Result<Frame, FrameError> {
    let mut lines = head.split(|&b| b == b'\n');
    let command = line(lines.next().unwrap_or_default())?;
    let mut frame = Frame {
        command: String::from_utf8_lossy(command).into_owned(),
        ..Frame::default()
    };
    for raw in lines {
        let raw = line(raw)?;
        if raw.is_empty() {
            break;
        }
        let Some(colon) = raw.iter().position(|&b| b == b':') else {
            return Err(FrameError::HeaderNoValue(
                String::from_utf8_lossy(&unescape(raw)?).into_owned(),
            ));
        };
        let name = String::from_utf8_lossy(&unescape(&raw[..colon])?).into_owned();
        let value = String::from_utf8_lossy(&unescape(&raw[colon + 1..])?).into_owned();
        if frame.header(&name).is_none() {
            frame.headers.push((name, value));
        }
    }
    Ok(frame)
}

/// One line without its EOL; a CR anywhere else is an error.
fn line(raw: &[u8]) -> Result<&[u8], FrameError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.contains(&b'\r') {
        return Err(FrameError::UnexpectedChars);
    }
    Ok(raw)
}

fn unescape(raw: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match it.next() {
            Some(b'n') => b'\n',
            Some(b'c') => b':',
            Some(b'\\') => b'\\',
            Some(b'r') => b'\r',
            _ => return Err(FrameError::BadEscape),
        });
    }
    Ok(out)
}

fn escape_into(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b':' => out.extend_from_slice(b"\\c"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Encodes a frame as RabbitMQ does: headers escaped, `content-length` set when there is a
/// body (any other `content-length` dropped), then NUL and a trailing LF.
pub(crate) fn encode(frame: &Frame, out: &mut Vec<u8>) {
    out.extend_from_slice(frame.command.as_bytes());
    out.push(b'\n');
    for (k, v) in &frame.headers {
        if k == "content-length" {
            continue;
        }
        escape_into(out, k);
        out.push(b':');
        escape_into(out, v);
        out.push(b'\n');
    }
    if !frame.body.is_empty() {
        out.extend_from_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(&frame.body);
    out.extend_from_slice(b"\0\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], chunk: usize) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(part);
            while let Some(f) = d.next(&mut buf, 1 << 20)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let input = b"\n\r\nSEND\r\ndestination:/queue/a\\cb\nx:y:z\nx:second\ncontent-length:3\n\na\0b\0\n\
                      MESSAGE\nk:v\n\nhello\0";
        for chunk in [1, 2, 3, 7, 1000] {
            let frames = decode_all(input, chunk).unwrap();
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(frames[0].command, "SEND");
            assert_eq!(frames[0].header("destination"), Some("/queue/a:b"));
            assert_eq!(frames[0].header("x"), Some("y:z"));
            assert_eq!(&frames[0].body[..], b"a\0b");
            assert_eq!(&frames[1].body[..], b"hello");
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(
            decode_all(b"SEND\nnocolon\n\n\0", 100),
            Err(FrameError::HeaderNoValue("nocolon".into()))
        );
        assert_eq!(
            decode_all(b"SEND\na:\\t\n\n\0", 100),
            Err(FrameError::BadEscape)
        );
        assert_eq!(
            decode_all(b"SEND\rx\n\n\0", 100),
            Err(FrameError::UnexpectedChars)
        );
        assert_eq!(
            decode_all(b"SEND\ncontent-length:x\n\n\0", 100),
            Err(FrameError::BadContentLength)
        );
        assert_eq!(
            decode_all(b"SEND\ncontent-length:1\n\nab\0", 100),
            Err(FrameError::MissingNul)
        );
    }

    #[test]
    fn frames_over_the_limit_are_refused_early() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"SEND\ncontent-length:100\n\n"[..]);
        assert!(matches!(
            d.next(&mut buf, 64),
            Err(FrameError::TooBig { .. })
        ));
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&[b'x'; 100][..]);
        assert!(matches!(
            d.next(&mut buf, 64),
            Err(FrameError::TooBig { .. })
        ));
    }

    #[test]
    fn encoding_escapes_and_round_trips() {
        let mut f = Frame::new(
            "MESSAGE",
            vec![
                ("a:b".into(), "c\nd\\e\r".into()),
                ("content-length".into(), "9".into()),
            ],
        );
        f.body = Bytes::from_static(b"x\0y");
        let mut out = Vec::new();
        encode(&f, &mut out);
        assert_eq!(
            out,
            b"MESSAGE\na\\cb:c\\nd\\\\e\\r\ncontent-length:3\n\nx\0y\0\n".to_vec()
        );
        let back = decode_all(&out, 1000).unwrap();
        assert_eq!(back[0].header("a:b"), Some("c\nd\\e\r"));
        // content-length is honoured on SEND only: MESSAGE reads up to the first NUL.
        assert_eq!(&back[0].body[..], b"x");
    }
}
