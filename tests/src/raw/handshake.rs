//! The steps of opening a connection, each on its own so a test can stop after any of them
//! or do one differently.

use amq_protocol::protocol::{channel, connection, AMQPClass};
use lapin::types::FieldTable;

use super::codec::plain;
use super::{FrameStream, RawError};

/// Sends the 0-9-1 protocol header, waits for connection.start and answers it with PLAIN
/// credentials; returns connection.start.
pub async fn start(
    io: &mut FrameStream,
    user: &str,
    password: &str,
    client_properties: FieldTable,
) -> Result<connection::Start, RawError> {
    io.write_flush(b"AMQP\x00\x00\x09\x01").await?;
    let start = match io.next_method().await? {
        (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
        other => return Err(unexpected("connection.start", other)),
    };
    io.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: plain(user, password),
            locale: "en_US".into(),
        })),
    )
    .await?;
    Ok(start)
}

/// Waits for connection.tune and accepts the broker's channel-max and frame-max, without
/// heartbeats; returns connection.tune.
pub async fn tune(io: &mut FrameStream) -> Result<connection::Tune, RawError> {
    let tune = match io.next_method().await? {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
        other => return Err(unexpected("connection.tune", other)),
    };
    io.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await?;
    Ok(tune)
}

/// Sends connection.open for `vhost` and waits for open-ok.
pub async fn open(io: &mut FrameStream, vhost: &str) -> Result<(), RawError> {
    io.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: vhost.into(),
        })),
    )
    .await?;
    match io.next_method().await? {
        (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => Ok(()),
        other => Err(unexpected("connection.open-ok", other)),
    }
}

/// Opens a channel and waits for open-ok.
pub async fn open_channel(io: &mut FrameStream, channel_id: u16) -> Result<(), RawError> {
    io.send_method(
        channel_id,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await?;
    match io.next_method().await? {
        (ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if ch == channel_id => Ok(()),
        other => Err(unexpected("channel.open-ok", other)),
    }
}

/// The whole handshake (start, tune, open) as `user`; returns the tune the broker proposed.
pub async fn connect(
    io: &mut FrameStream,
    user: &str,
    password: &str,
    vhost: &str,
    client_properties: FieldTable,
) -> Result<connection::Tune, RawError> {
    start(io, user, password, client_properties).await?;
    let tune = tune(io).await?;
    open(io, vhost).await?;
    Ok(tune)
}

fn unexpected(expected: &'static str, (channel, got): (u16, AMQPClass)) -> RawError {
    RawError::Unexpected {
        expected,
        got: format!("{got:?} on channel {channel}"),
    }
}
