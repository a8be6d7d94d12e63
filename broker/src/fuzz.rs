//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and their regression tests: each
//! takes arbitrary bytes, feeds them to one decoder or state machine the way the broker does,
//! and must return without panicking, whatever the bytes. Not part of the API.

use crate::amqp::channel::{close_in_state, Channel, Ctx};
use crate::amqp::frame::{self, method_tables_within, next_frame};
use crate::amqp::outbox::Outbox;
use crate::core::access::seed::{self, Seed};
use crate::core::access::{Access, Registry};
use crate::core::fieldtable::{table_nesting_within, MAX_TABLE_DEPTH};
use crate::core::message::ChannelKey;
use crate::core::props::PropsView;
use crate::core::state::{State, StateLock};
use amq_protocol::protocol::{channel, parse_class, AMQPClass};
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Arc;

/// The frame_max the targets split with (RabbitMQ's default).
const FRAME_MAX: u32 = 131_072;

/// Splits `data` into frames and decodes each as the connection does: method frames (after the
/// nesting check) and content headers (properties, then the headers table).
pub fn frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = next_frame(&mut buf, FRAME_MAX) {
        match f.kind {
            frame::FRAME_METHOD if method_tables_within(&f.payload) => {
                let _ = parse_class(&f.payload[..]);
            }
            frame::FRAME_HEADER => content_header(&f.payload),
            _ => {}
        }
    }
}

/// Decodes a content header payload as a publish does: the zero-copy view, the headers table,
/// and (as a stored message does) the full properties.
pub fn content_header(payload: &[u8]) {
    if let Some(view) = PropsView::parse(payload) {
        let _ = view.headers_table(payload);
        let _ = PropsView::text(payload, &view.expiration);
        let _ = amq_protocol::frame::parsing::parse_content_header(payload);
    }
}

/// Decodes a field table (4-byte length first) after the nesting check, and validates it as
/// queue arguments.
pub fn field_table(data: &[u8]) {
    if !table_nesting_within(data, MAX_TABLE_DEPTH) {
        return;
    }
    if let Ok((_, table)) = amq_protocol::types::parsing::parse_field_table(data) {
        let _ = crate::core::args::validate_queue_args("q", "/", &table);
        for v in table.inner().values() {
            let _ = crate::core::fieldtable::value_string(v);
            let _ = crate::core::fieldtable::value_int(v);
        }
    }
}

/// A fresh access registry as a new broker has it: guest, vhost `/`, full permissions.
fn fresh_access() -> Access {
    let mut registry = Registry::default();
    seed::apply(&mut registry, &Seed::default(), true);
    Access::new(registry, None)
}

/// Takes `data` as a definitions file both ways the broker reads one: imported as RabbitMQ's
/// export (`--definitions`, users, vhosts, permissions, topology), then exported and imported
/// again; and restored as the data directory's `definitions.json`, snapshotted and restored
/// again.
pub fn definitions(data: &[u8]) {
    let Ok(defs) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let state = StateLock::new(State::new());
    let access = fresh_access();
    if crate::core::definitions::import(&state, &access, &defs).is_ok() {
        let exported = crate::core::definitions::export(&state.lock(), &access);
        let again = StateLock::new(State::new());
        let _ = crate::core::definitions::import(&again, &fresh_access(), &exported);
    }
    let mut state = State::new();
    state.restore_definitions(&defs);
    let again = crate::core::definitions::snapshot(state.vhosts_mut());
    State::new().restore_definitions(&again);
}

/// Feeds `data` as frames to channels of one connection against a fresh core, as the
/// connection's reader does after the handshake: channel.open opens, channel.close closes,
/// everything else goes to the channel's state machine; a channel error closes the channel.
pub fn channels(data: &[u8]) {
    let state = StateLock::new(State::new());
    let access = fresh_access();
    let (outbox, mut rx, _) = Outbox::new(true);
    const CONN: u64 = 1;
    state.lock().add_connection(CONN, Arc::new(outbox.clone()));
    let mut open: HashMap<u16, Channel> = HashMap::new();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = next_frame(&mut buf, FRAME_MAX) {
        let key = ChannelKey {
            conn: CONN,
            channel: f.channel,
        };
        let method = if f.kind == frame::FRAME_METHOD {
            if !method_tables_within(&f.payload) {
                break;
            }
            match parse_class(&f.payload[..]) {
                Ok((_, m)) => Some(m),
                Err(_) => break,
            }
        } else {
            None
        };
        if f.channel == 0
            || !matches!(
                f.kind,
                frame::FRAME_METHOD | frame::FRAME_HEADER | frame::FRAME_BODY
            )
        {
            continue;
        }
        match (&method, open.get_mut(&f.channel)) {
            (Some(AMQPClass::Channel(channel::AMQPMethod::Open(_))), None) => {
                state.lock().open_channel(key, "/");
                open.insert(f.channel, Channel::new(f.channel));
            }
            (_, None) => break,
            (Some(AMQPClass::Channel(channel::AMQPMethod::Close(_))), Some(ch)) => {
                close_in_state(ch, &mut state.lock(), key);
                open.remove(&f.channel);
            }
            (_, Some(ch)) => {
                let ctx = Ctx {
                    state: &state,
                    conn: CONN,
                    outbox: &outbox,
                    vhost: "/",
                    user: "guest",
                    access: &access,
                    max_message_size: 1 << 20,
                };
                if ch.on_frame(&ctx, f, method).is_err() {
                    close_in_state(ch, &mut state.lock(), key);
                    open.remove(&key.channel);
                }
            }
        }
        while rx.try_recv().is_ok() {}
    }
    let mut st = state.lock();
    for (id, ch) in open.iter_mut() {
        close_in_state(
            ch,
            &mut st,
            ChannelKey {
                conn: CONN,
                channel: *id,
            },
        );
    }
    st.remove_connection(CONN);
}

/// The largest MQTT payload the `mqtt_packet` target accepts: small, so that inputs reach the
/// size checks.
const MQTT_MAX_PAYLOAD: usize = 4096;

/// Splits `data` into MQTT packets as the connection does (the protocol checks, then the
/// decoder) until more bytes are needed or the stream is refused, and encodes each packet
/// again as a delivery would.
pub fn mqtt_packet(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = crate::mqtt::codec::next_packet(&mut buf, MQTT_MAX_PAYLOAD) {
        crate::mqtt::codec::encode(&packet, &mut BytesMut::new());
    }
}

/// Feeds `data[1..]` to one STOMP streaming decoder in two reads, split where the first byte
/// says (0 = all in the second read, 255 = all in the first), as the connection does after
/// each read before CONNECT; reads each frame's headers as the session does.
pub fn stomp_frame(data: &[u8]) {
    let Some((&at, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(rest.len() * usize::from(at) / 255);
    let mut decoder = crate::stomp::frame::Decoder::default();
    let mut buf = BytesMut::new();
    for part in [first, second] {
        buf.extend_from_slice(part);
        loop {
            match decoder.next(
                &mut buf,
                crate::stomp::connection::MAX_FRAME_UNAUTHENTICATED,
            ) {
                Ok(Some(frame)) => {
                    let _ = frame.int_header("content-length");
                    let _ = frame.bool_header("persistent");
                    let mut out = Vec::new();
                    crate::stomp::frame::encode(&frame, &mut out);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Takes `data[1..]` as the JSON body of one management API PUT/POST, chosen by the first byte
/// (`'0'` queue, `'1'` exchange, `'2'` binding, `'3'` publish, `'4'` get, `'5'` vhost, `'6'`
/// user, `'7'` permission, `'8'` topic permission, `'9'` limit, `':'` definitions import),
/// parsed and validated by the handler's own function and, where that succeeds, applied to a
/// fresh broker as the handler does.
pub fn management_json(data: &[u8]) {
    use crate::http::{admin, definitions, ops};
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let bytes = bytes::Bytes::copy_from_slice(body);
    let state = StateLock::new(State::new());
    let access = fresh_access();
    match which.wrapping_sub(b'0') % 11 {
        0 => {
            if let Ok(d) = ops::queue_request("q", &bytes) {
                let _ = state.lock().queue_declare("/", 0, d);
            }
        }
        1 => {
            if let Ok(d) = ops::exchange_request("x", &bytes) {
                let _ = state.lock().exchange_declare("/", d);
            }
        }
        2 => management_binding(&state, &bytes),
        3 => {
            if let Ok((key, payload, props)) = ops::publish_request(&bytes) {
                let msg = crate::core::message::Message::with_properties(
                    "amq.direct".into(),
                    key,
                    &props,
                    payload.into(),
                );
                let _ = state.lock().publish("/", Arc::new(msg));
            }
        }
        4 => {
            let _ = ops::get_request(&bytes);
        }
        5 => {
            if let Ok(info) = admin::vhost_request("v", &bytes) {
                let _ = access.put_vhost(&state, info);
            }
        }
        6 => {
            if let Ok(spec) = admin::user_request("u".into(), false, &bytes) {
                let _ = access.put_user(spec);
            }
        }
        7 => {
            if let Ok([c, w, r]) = admin::patterns(&bytes, ["configure", "write", "read"]) {
                let _ = access.set_permission("guest", "/", &c, &w, &r);
            }
        }
        8 => {
            if let Ok([x, w, r]) = admin::patterns(&bytes, ["exchange", "write", "read"]) {
                let _ = access.set_topic_permission("guest", "/", &x, &w, &r);
            }
        }
        9 => {
            let _ = admin::limit_value(&bytes);
        }
        _ => {
            if let Ok(defs) = definitions::parse(&bytes) {
                let _ = crate::core::definitions::import(&state, &access, &defs);
            }
        }
    }
}

/// A binding POST's body applied as the handler does, from `amq.direct` to a queue `q`.
fn management_binding(state: &StateLock, bytes: &bytes::Bytes) {
    use crate::core::exchange::Destination;
    use crate::core::topology::QueueDeclare;
    if let Ok((key, args)) = crate::http::ops::binding_request(bytes) {
        let mut st = state.lock();
        let q = QueueDeclare {
            name: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args: Default::default(),
        };
        let _ = st.queue_declare("/", 0, q);
        let _ = st.bind(
            "/",
            0,
            "amq.direct",
            Destination::Queue("q".into()),
            &key,
            args,
        );
    }
}
