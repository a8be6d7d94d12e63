//! MQTT 3.1 / 3.1.1 packets on the wire: splitting a byte stream into packets with
//! `mqttbytes` (its `v4` codec) plus the checks RabbitMQ makes that it leaves out, and
//! encoding the packets the broker sends.
//!
//! What is added to `mqttbytes`: the protocol name and level of CONNECT are checked first
//! (RabbitMQ accepts `MQTT` level 4 and `MQIsdp` level 3, MQTT 3.1, whose CONNECT differs only
//! in its name, so it is rewritten to the 3.1.1 form for the decoder); SUBSCRIBE and
//! UNSUBSCRIBE must carry their reserved flags (0b0010); a packet longer than the largest
//! message plus the largest topic is refused from its fixed header, before its body is read.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;

/// Why a byte stream cannot be read further: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodecError {
    /// A CONNECT with a protocol name and level RabbitMQ does not accept.
    Protocol(String, u8),
    /// A packet longer than allowed.
    TooLarge(usize),
    /// A malformed packet (what the decoder said).
    Malformed(String),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Protocol(name, level) => {
                write!(f, "unsupported protocol {name:?} level {level}")
            }
            CodecError::TooLarge(n) => write!(f, "packet of {n} bytes is too large"),
            CodecError::Malformed(why) => write!(f, "malformed packet: {why}"),
        }
    }
}

/// Room a PUBLISH needs besides its payload: the longest topic and the packet id.
const PUBLISH_OVERHEAD: usize = 2 + 65_535 + 2;

/// Takes the next whole packet off the front of `buf`: `Ok(None)` when more bytes are needed.
/// `max_payload` is the largest message body accepted (RabbitMQ's `max_message_size`).
pub(crate) fn next_packet(
    buf: &mut BytesMut,
    max_payload: usize,
) -> Result<Option<Packet>, CodecError> {
    let Some((header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let limit = max_payload.saturating_add(PUBLISH_OVERHEAD);
    if remaining > limit {
        return Err(CodecError::TooLarge(remaining));
    }
    if buf.len() < header_len + remaining {
        return Ok(None);
    }
    let kind = buf[0] >> 4;
    if matches!(kind, 8 | 10) && buf[0] & 0x0f != 0b0010 {
        return Err(CodecError::Malformed(format!(
            "reserved flags {:#06b} of packet type {kind}",
            buf[0] & 0x0f
        )));
    }
    if kind == 1 {
        rewrite_connect(buf, header_len, remaining)?;
    }
    match v4::read(buf, limit) {
        Ok(Packet::Publish(p)) if p.payload.len() > max_payload => {
            Err(CodecError::TooLarge(p.payload.len()))
        }
        Ok(p) => Ok(Some(p)),
        Err(e) => Err(CodecError::Malformed(format!("{e:?}"))),
    }
}

/// The fixed header's length and the remaining length, once enough bytes are there.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(CodecError::Malformed(
        "remaining length longer than 4 bytes".into(),
    ))
}

/// The protocol level of the CONNECT at the front of `buf` (3 for MQTT 3.1, 4 for 3.1.1),
/// once its name and level arrived; None for anything else. Read before [`next_packet`],
/// which rewrites 3.1's CONNECT to the 3.1.1 form.
pub(crate) fn connect_level(buf: &[u8]) -> Option<u8> {
    let (header_len, _) = fixed_header(buf).ok()??;
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let body = buf.get(header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// Checks a CONNECT's protocol name and level; rewrites MQTT 3.1's (`MQIsdp`, 3) to 3.1.1's
/// (`MQTT`, 4) in place, since the rest of the packet is the same.
fn rewrite_connect(
    buf: &mut BytesMut,
    header_len: usize,
    remaining: usize,
) -> Result<(), CodecError> {
    let body = &buf[header_len..header_len + remaining];
    let bad = || CodecError::Malformed("truncated CONNECT".into());
    let name_len = usize::from(u16::from_be_bytes([
        *body.first().ok_or_else(bad)?,
        *body.get(1).ok_or_else(bad)?,
    ]));
    let name = body.get(2..2 + name_len).ok_or_else(bad)?;
    let level = *body.get(2 + name_len).ok_or_else(bad)?;
    match (name, level) {
        (b"MQTT", 4) => Ok(()),
        (b"MQIsdp", 3) => {
            let rest = Bytes::copy_from_slice(&body[2 + name_len + 1..]);
            let new_remaining = remaining - 2; // "MQIsdp" -> "MQTT"
            let mut out = BytesMut::with_capacity(buf.len());
            out.put_u8(buf[0]);
            put_remaining_length(&mut out, new_remaining);
            out.put_slice(b"\x00\x04MQTT\x04");
            out.put_slice(&rest);
            buf.advance(header_len + remaining);
            out.put_slice(buf);
            *buf = out;
            Ok(())
        }
        _ => Err(CodecError::Protocol(
            String::from_utf8_lossy(name).into_owned(),
            level,
        )),
    }
}

fn put_remaining_length(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if n == 0 {
            return;
        }
    }
}

/// The QoS with this number (0, 1 or 2; higher is treated as 2, never produced here).
pub(crate) fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Encodes a packet the broker sends (CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK, PINGRESP).
pub(crate) fn encode(packet: &Packet, out: &mut BytesMut) {
    let written = match packet {
        Packet::ConnAck(p) => p.write(out),
        Packet::Publish(p) => p.write(out),
        Packet::PubAck(p) => p.write(out),
        Packet::SubAck(p) => p.write(out),
        Packet::UnsubAck(p) => p.write(out),
        Packet::PingResp => v4::PingResp.write(out),
        other => {
            tracing::error!(?other, "the broker never sends this packet");
            return;
        }
    };
    if let Err(e) = written {
        tracing::error!(error = ?e, "cannot encode an MQTT packet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn connect(name: &[u8], level: u8) -> BytesMut {
        let mut body = Vec::new();
        body.extend_from_slice(&(name.len() as u16).to_be_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, 0b0000_0010, 0, 60, 0, 2, b'i', b'd']);
        let mut b = BytesMut::new();
        b.put_u8(0x10);
        put_remaining_length(&mut b, body.len());
        b.put_slice(&body);
        b
    }

    #[test]
    fn reads_mqtt_3_1_and_3_1_1_connects_and_refuses_other_levels() {
        for (name, level) in [(&b"MQTT"[..], 4), (&b"MQIsdp"[..], 3)] {
            let mut b = connect(name, level);
            assert_eq!(connect_level(&b), Some(level));
            assert_eq!(connect_level(&b[..4]), None);
            b.put_slice(&[0xc0, 0]); // PINGREQ right behind it
            match next_packet(&mut b, 1024) {
                Ok(Some(Packet::Connect(c))) => {
                    assert_eq!(c.client_id, "id");
                    assert!(c.clean_session);
                    assert_eq!(c.keep_alive, 60);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(next_packet(&mut b, 1024), Ok(Some(Packet::PingReq)));
            assert!(b.is_empty());
        }
        assert!(matches!(
            next_packet(&mut connect(b"MQTT", 5), 1024),
            Err(CodecError::Protocol(_, 5))
        ));
        assert!(matches!(
            next_packet(&mut connect(b"MQTT", 3), 1024),
            Err(CodecError::Protocol(_, 3))
        ));
    }

    #[test]
    fn waits_for_whole_packets_and_refuses_oversized_ones_from_the_header() {
        let mut whole = connect(b"MQTT", 4);
        let mut part = whole.split_to(5);
        assert_eq!(next_packet(&mut part, 1024), Ok(None));
        // A PUBLISH announcing 10 MB with a 1 MB limit: refused before the body arrives.
        let mut big = BytesMut::from(&[0x30, 0x80, 0xad, 0xe2, 0x04][..]);
        assert!(matches!(
            next_packet(&mut big, 1 << 20),
            Err(CodecError::TooLarge(_))
        ));
        let mut five = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(
            next_packet(&mut five, 1 << 20),
            Err(CodecError::Malformed(_))
        ));
        let mut sub = BytesMut::from(&[0x80, 0x06, 0, 1, 0, 1, b'a', 0][..]);
        assert!(matches!(
            next_packet(&mut sub, 1024),
            Err(CodecError::Malformed(_))
        ));
    }

    /// Random bytes (and random mutations of valid packets) through the decoder: it returns
    /// a packet, asks for more, or refuses, and never panics.
    #[test]
    fn random_input_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d717474);
        let valid: Vec<BytesMut> = vec![
            connect(b"MQTT", 4),
            connect(b"MQIsdp", 3),
            BytesMut::from(&[0x32, 0x08, 0, 3, b'a', b'/', b'b', 0, 1, b'x'][..]),
            BytesMut::from(&[0x82, 0x06, 0, 1, 0, 1, b'a', 1][..]),
            BytesMut::from(&[0xa2, 0x05, 0, 1, 0, 1, b'a'][..]),
            BytesMut::from(&[0x40, 0x02, 0, 1][..]),
        ];
        for i in 0..200_000 {
            let mut b = if i % 2 == 0 {
                let n = rng.gen_range(0..64);
                BytesMut::from(&(0..n).map(|_| rng.gen::<u8>()).collect::<Vec<_>>()[..])
            } else {
                let mut b = valid[rng.gen_range(0..valid.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..b.len());
                    b[at] = rng.gen();
                }
                b
            };
            while let Ok(Some(_)) = next_packet(&mut b, 1024) {}
        }
    }
}
